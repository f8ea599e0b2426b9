//! `pagoda bench serve` flags, named and defaulted as `vllm bench serve`'s.

use std::path::PathBuf;

/// Load-test a running OpenAI-compatible server (Pagoda, vLLM, llama.cpp's
/// llama-server) and print vLLM's serving benchmark table.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// `openai` (completions) or `openai-chat`; default: from --endpoint.
    #[arg(long, value_parser = ["openai", "openai-chat", "vllm", "vllm-chat"])]
    pub backend: Option<String>,
    /// Server base URL, e.g. http://127.0.0.1:8000 (instead of --host/--port).
    #[arg(long)]
    pub base_url: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// API path: /v1/completions or /v1/chat/completions.
    #[arg(long, default_value = "/v1/completions")]
    pub endpoint: String,
    /// Model id; default: the first model of the server's /v1/models.
    #[arg(long)]
    pub model: Option<String>,
    /// Model name sent in requests, when it differs from --model.
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Count tokens with this tokenizer (HF folder, tokenizer.json or .gguf)
    /// instead of the server's /tokenize.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,

    /// Dataset: random (synthetic prompts of exact token lengths) or sharegpt.
    #[arg(long, default_value = "random", value_parser = ["random", "sharegpt"])]
    pub dataset_name: String,
    /// ShareGPT-format JSON file (with --dataset-name sharegpt).
    #[arg(long)]
    pub dataset_path: Option<PathBuf>,
    /// Input length for every dataset (overrides --random-input-len).
    #[arg(long)]
    pub input_len: Option<usize>,
    /// Output length for every dataset (overrides --random-output-len, --sharegpt-output-len).
    #[arg(long)]
    pub output_len: Option<usize>,
    #[arg(long, default_value_t = 1024)]
    pub random_input_len: usize,
    #[arg(long, default_value_t = 128)]
    pub random_output_len: usize,
    /// Lengths are uniform in [len * (1 - r), len * (1 + r)]; r in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    pub random_range_ratio: f64,
    /// Tokens of a random prefix shared by every prompt.
    #[arg(long, default_value_t = 0)]
    pub random_prefix_len: usize,
    /// Output length for ShareGPT requests; default: each reply's length.
    #[arg(long)]
    pub sharegpt_output_len: Option<usize>,
    #[arg(long, default_value_t = 1000)]
    pub num_prompts: usize,

    /// Requests per second; inf sends them all at once, otherwise arrivals
    /// follow a Poisson process (or gamma, see --burstiness).
    #[arg(long, default_value_t = f64::INFINITY)]
    pub request_rate: f64,
    /// Gamma shape of the arrival gaps: 1 is Poisson, < 1 burstier, > 1 more even.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Most requests in flight at once.
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Ask the server to ignore EOS (always on with the random dataset, as in vLLM).
    #[arg(long)]
    pub ignore_eos: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Save the results to a JSON file.
    #[arg(long)]
    pub save_result: bool,
    #[arg(long)]
    pub result_dir: Option<PathBuf>,
    // clap reads a literal `{n}` in help text as a line break: the
    // placeholder is spelled out.
    /// Result file name; default:
    /// {label}-{request_rate}qps[-concurrency{max_concurrency}]-{model}-{date}.json
    #[arg(long)]
    pub result_filename: Option<String>,
    /// Prefix of the result file name; default: the backend.
    #[arg(long)]
    pub label: Option<String>,
    /// KEY=VALUE pairs recorded in the result JSON.
    #[arg(long, num_args = 1..)]
    pub metadata: Vec<String>,
    /// Metrics whose percentiles are printed: any of ttft,tpot,itl,e2el.
    #[arg(long, default_value = "ttft,tpot,itl")]
    pub percentile_metrics: String,
    /// Percentiles to report, e.g. 25,50,99.
    #[arg(long, default_value = "99")]
    pub metric_percentiles: String,
    /// Service-level objectives for goodput, KEY:VALUE in ms (ttft, tpot, e2el).
    #[arg(long, num_args = 1..)]
    pub goodput: Vec<String>,
    /// No progress bar.
    #[arg(long)]
    pub disable_tqdm: bool,
    /// Request ids are this prefix plus the request's index.
    #[arg(long, default_value = "bench-")]
    pub request_id_prefix: String,
    /// HTTP headers for every request, KEY=VALUE.
    #[arg(long, num_args = 1..)]
    pub header: Vec<String>,
    /// JSON object merged into every request body.
    #[arg(long)]
    pub extra_body: Option<String>,

    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub top_k: Option<i64>,
    #[arg(long)]
    pub min_p: Option<f64>,
    #[arg(long)]
    pub frequency_penalty: Option<f64>,
    #[arg(long)]
    pub presence_penalty: Option<f64>,
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
}

impl ServeArgs {
    /// `(base_url, api_url)`: --base-url wins over --host/--port.
    pub fn urls(&self) -> (String, String) {
        let base = match &self.base_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None if self.host.contains(':') => format!("http://[{}]:{}", self.host, self.port),
            None => format!("http://{}:{}", self.host, self.port),
        };
        let endpoint = if self.endpoint.starts_with('/') {
            self.endpoint.clone()
        } else {
            format!("/{}", self.endpoint)
        };
        (base.clone(), format!("{base}{endpoint}"))
    }

    /// The input and output lengths of the random dataset after --input-len / --output-len.
    pub fn random_lens(&self) -> (usize, usize) {
        (
            self.input_len.unwrap_or(self.random_input_len),
            self.output_len.unwrap_or(self.random_output_len),
        )
    }

    /// The percentiles of --metric-percentiles.
    pub fn selected_percentiles(&self) -> anyhow::Result<Vec<f64>> {
        self.metric_percentiles
            .split(',')
            .map(|p| {
                let v: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("invalid --metric-percentiles entry {p:?}"))?;
                if !(0.0..=100.0).contains(&v) {
                    anyhow::bail!("--metric-percentiles entries must be in [0, 100], got {v}");
                }
                Ok(v)
            })
            .collect()
    }

    /// The metrics of --percentile-metrics.
    pub fn selected_metrics(&self) -> anyhow::Result<Vec<String>> {
        self.percentile_metrics
            .split(',')
            .map(|m| {
                let m = m.trim();
                match m {
                    "ttft" | "tpot" | "itl" | "e2el" => Ok(m.to_string()),
                    other => anyhow::bail!(
                        "unknown --percentile-metrics entry {other:?}: use ttft, tpot, itl, e2el"
                    ),
                }
            })
            .collect()
    }

    /// The sampling flags that were given, as body fields.
    pub fn sampling_params(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        let mut put = |k: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                map.insert(k.to_string(), v);
            }
        };
        put("top_p", self.top_p.map(Into::into));
        put("top_k", self.top_k.map(Into::into));
        put("min_p", self.min_p.map(Into::into));
        put("temperature", self.temperature.map(Into::into));
        put("frequency_penalty", self.frequency_penalty.map(Into::into));
        put("presence_penalty", self.presence_penalty.map(Into::into));
        put(
            "repetition_penalty",
            self.repetition_penalty.map(Into::into),
        );
        map
    }
}

/// Splits `KEY=VALUE` entries (of --header, --metadata).
pub fn parse_key_values(entries: &[String], flag: &str) -> anyhow::Result<Vec<(String, String)>> {
    entries
        .iter()
        .map(|e| {
            let (k, v) = e
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("invalid {flag} entry {e:?}: use KEY=VALUE"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(argv: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn defaults_are_vllms() {
        let a = parse(&[]);
        assert_eq!(a.request_rate, f64::INFINITY);
        assert_eq!(
            (a.num_prompts, a.random_input_len, a.random_output_len),
            (1000, 1024, 128)
        );
        assert_eq!(
            a.urls(),
            (
                "http://127.0.0.1:8000".into(),
                "http://127.0.0.1:8000/v1/completions".into()
            )
        );
        assert_eq!(a.selected_percentiles().unwrap(), vec![99.0]);
    }

    #[test]
    fn flags_parse() {
        let a = parse(&[
            "--base-url",
            "http://h:1/",
            "--endpoint",
            "/v1/chat/completions",
            "--request-rate",
            "2.5",
            "--input-len",
            "64",
            "--metric-percentiles",
            "50,90",
            "--temperature",
            "0",
            "--goodput",
            "ttft:100",
            "tpot:20",
            "--max-concurrency",
            "8",
        ]);
        assert_eq!(a.urls().1, "http://h:1/v1/chat/completions");
        assert_eq!(a.request_rate, 2.5);
        assert_eq!(a.random_lens(), (64, 128));
        assert_eq!(a.selected_percentiles().unwrap(), vec![50.0, 90.0]);
        assert_eq!(a.goodput.len(), 2);
        assert_eq!(a.sampling_params()["temperature"], 0.0);
        assert_eq!(
            parse(&["--request-rate", "inf"]).request_rate,
            f64::INFINITY
        );
        let bad = parse(&["--metric-percentiles", "101"]);
        assert!(bad.selected_percentiles().is_err());
        assert!(parse(&["--percentile-metrics", "ttft,foo"])
            .selected_metrics()
            .is_err());
        assert!(parse_key_values(&["a=b=c".into()], "--header").unwrap()[0].1 == "b=c");
        assert!(parse_key_values(&["nokey".into()], "--header").is_err());
    }

    #[test]
    fn result_filename_help_reads_whole() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains(
                "{label}-{request_rate}qps[-concurrency{max_concurrency}]-{model}-{date}.json"
            ),
            "{help}"
        );
    }
}
