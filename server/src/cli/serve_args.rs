//! `pagoda serve` flags (vLLM's names where vLLM has the flag).

use std::net::IpAddr;

use clap::Args;

use pagoda_engine::byte_size::parse_byte_size;
use pagoda_engine::EngineArgs;

use crate::tool_parsers::ToolParserKind;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,

    /// The model name clients use in `model` and see in /v1/models.
    /// [default: SmolLM2-135M-Instruct for the default model, else the
    /// model's folder name or file stem]
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,

    /// Require `Authorization: Bearer <KEY>` on every route but /health and
    /// /metrics.
    #[arg(
        long,
        env = "PAGODA_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// Largest request body accepted; larger ones get 413 (units as for
    /// --kv-cache-memory: 4MiB = 4M = 4194304, 4m = 4000000).
    #[arg(long, value_name = "BYTES", default_value = "4MiB", value_parser = parse_byte_size)]
    pub max_body_bytes: u64,

    /// On SIGINT/SIGTERM, seconds to let in-flight requests finish before
    /// they are aborted.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub shutdown_timeout: f64,

    /// Do not log a line per finished request.
    #[arg(long)]
    pub disable_log_requests: bool,

    /// Publish KV-cache events for KV-aware routers, configured with vLLM's
    /// KVEventsConfig JSON, e.g. '{"enable_kv_cache_events": true,
    /// "publisher": "zmq", "endpoint": "tcp://*:5557", "replay_endpoint":
    /// "tcp://*:5558", "topic": "kv-events"}'. ZMQ over tcp only. Off by default.
    #[arg(long, value_name = "JSON")]
    pub kv_events_config: Option<String>,

    /// Let the model decide when to call tools (`tool_choice: "auto"`, the
    /// default when a request has tools): its output is read for calls with
    /// --tool-call-parser. Without it such requests get a 400, as in vLLM;
    /// `tool_choice` "required" and a named function work either way
    /// (constrained to the tools' schemas).
    #[arg(long, requires = "tool_call_parser")]
    pub enable_auto_tool_choice: bool,

    /// The model's tool-call format, for --enable-auto-tool-choice:
    /// hermes (`<tool_call>{json}</tool_call>`: Qwen2.5, Qwen3, Hermes),
    /// llama3_json (JSON objects, optionally after `<|python_tag|>`: Llama
    /// 3.1-3.3), mistral (`[TOOL_CALLS]`: Mistral 7B v0.3, Nemo, Small).
    #[arg(long, value_name = "NAME")]
    pub tool_call_parser: Option<ToolParserKind>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn defaults() {
        let c = Cli::try_parse_from(["pagoda"]).unwrap().serve;
        assert_eq!(c.host.to_string(), "127.0.0.1");
        assert_eq!(c.port, 8000);
        assert_eq!(c.max_body_bytes, 4 << 20);
        assert_eq!(c.shutdown_timeout, 30.0);
        assert!(c.engine.model.is_none());
    }

    #[test]
    fn flags_parse() {
        let c = Cli::try_parse_from([
            "pagoda",
            "--model",
            "/m.gguf",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--served-model-name",
            "smol",
            "--api-key",
            "k",
            "--max-body-bytes",
            "1MiB",
            "--shutdown-timeout",
            "2.5",
            "--max-num-seqs",
            "8",
        ])
        .unwrap()
        .serve;
        assert_eq!(c.port, 9000);
        assert_eq!(c.api_key.as_deref(), Some("k"));
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.shutdown_timeout, 2.5);
        assert_eq!(c.engine.max_num_seqs, Some(8));
        assert!(Cli::try_parse_from(["pagoda", "--port", "70000"]).is_err());
        assert!(!c.enable_auto_tool_choice && c.tool_call_parser.is_none());
    }

    #[test]
    fn tool_flags_parse_as_vllm_names_them() {
        for (name, kind) in [
            ("hermes", ToolParserKind::Hermes),
            ("llama3_json", ToolParserKind::Llama3Json),
            ("mistral", ToolParserKind::Mistral),
        ] {
            let c = Cli::try_parse_from([
                "pagoda",
                "--enable-auto-tool-choice",
                "--tool-call-parser",
                name,
            ])
            .unwrap()
            .serve;
            assert!(c.enable_auto_tool_choice);
            assert_eq!(c.tool_call_parser, Some(kind));
        }
        // The parser alone is allowed (no auto); auto alone is not.
        assert!(Cli::try_parse_from(["pagoda", "--tool-call-parser", "hermes"]).is_ok());
        assert!(Cli::try_parse_from(["pagoda", "--enable-auto-tool-choice"]).is_err());
        assert!(Cli::try_parse_from(["pagoda", "--tool-call-parser", "pythonic"]).is_err());
        assert!(Cli::try_parse_from(["pagoda", "--host", "nowhere"]).is_err());
    }
}
