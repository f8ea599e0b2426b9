//! `--kv-events-config`: vLLM's `KVEventsConfig`, as the same JSON.

use serde::Deserialize;

/// What and where to publish. Field names and defaults are vLLM's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvEventsConfig {
    /// Record events at all.
    #[serde(default)]
    pub enable_kv_cache_events: bool,
    /// "zmq" or "null"; unset means "zmq" when events are enabled.
    #[serde(default)]
    pub publisher: Option<String>,
    /// The PUB socket: bound when it holds `*` (any interface), `::` or
    /// is `ipc://`, else connected to.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// A ROUTER socket that replays buffered batches from a sequence number.
    #[serde(default)]
    pub replay_endpoint: Option<String>,
    /// Batches kept for replay.
    #[serde(default = "default_buffer_steps")]
    pub buffer_steps: usize,
    /// Accepted for vLLM compatibility; the zeromq crate fixes each
    /// subscriber's queue at 100,000 messages (the same as vLLM's default).
    #[serde(default = "default_hwm")]
    pub hwm: usize,
    /// Batches waiting between the engine and the publisher; beyond it a
    /// batch is dropped rather than the engine blocked.
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// The first frame of every message.
    #[serde(default)]
    pub topic: String,
}

fn default_endpoint() -> String {
    "tcp://*:5557".to_string()
}
fn default_buffer_steps() -> usize {
    10_000
}
fn default_hwm() -> usize {
    100_000
}
fn default_max_queue_size() -> usize {
    100_000
}

/// A publisher this build cannot start, or a config it cannot read.
#[derive(Debug, thiserror::Error)]
pub enum KvEventsConfigError {
    #[error("--kv-events-config is not valid JSON for KVEventsConfig: {0}")]
    Json(#[from] serde_json::Error),
    #[error("--kv-events-config: publisher {0:?} is not supported (\"zmq\" or \"null\")")]
    Publisher(String),
    #[error("--kv-events-config: endpoint {0:?} must start with tcp://")]
    Endpoint(String),
}

impl KvEventsConfig {
    /// Parses the flag's JSON; `None` when nothing is to be published.
    pub fn parse(json: &str) -> Result<Option<Self>, KvEventsConfigError> {
        let config: Self = serde_json::from_str(json)?;
        if !config.enable_kv_cache_events {
            return Ok(None);
        }
        match config.publisher.as_deref() {
            None | Some("zmq") => {}
            Some("null") => return Ok(None),
            Some(other) => return Err(KvEventsConfigError::Publisher(other.to_string())),
        }
        for endpoint in std::iter::once(&config.endpoint).chain(&config.replay_endpoint) {
            if !endpoint.starts_with("tcp://") {
                return Err(KvEventsConfigError::Endpoint(endpoint.clone()));
            }
        }
        Ok(Some(config))
    }

    /// Whether the PUB socket binds (vLLM's rule) rather than connects.
    pub fn binds(&self) -> bool {
        self.endpoint.contains('*') || self.endpoint.contains("::")
    }
}

/// The zeromq crate resolves `*` as a host name: any interface is 0.0.0.0.
pub fn bind_address(endpoint: &str) -> String {
    endpoint.replacen("//*:", "//0.0.0.0:", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_json_parses_with_vllm_defaults() {
        let c = KvEventsConfig::parse(
            r#"{"enable_kv_cache_events": true, "publisher": "zmq", "topic": "kv"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "tcp://*:5557");
        assert!(c.binds());
        assert_eq!(bind_address(&c.endpoint), "tcp://0.0.0.0:5557");
        assert_eq!(
            (c.buffer_steps, c.hwm, c.topic.as_str()),
            (10_000, 100_000, "kv")
        );
        assert_eq!(c.replay_endpoint, None);
        let connect = KvEventsConfig::parse(
            r#"{"enable_kv_cache_events": true, "endpoint": "tcp://127.0.0.1:6000"}"#,
        )
        .unwrap()
        .unwrap();
        assert!(!connect.binds(), "no wildcard: connect, as vLLM");
    }

    #[test]
    fn disabled_or_null_publishes_nothing_and_bad_input_says_why() {
        assert_eq!(KvEventsConfig::parse("{}").unwrap(), None);
        assert_eq!(
            KvEventsConfig::parse(r#"{"enable_kv_cache_events": true, "publisher": "null"}"#)
                .unwrap(),
            None
        );
        let e = KvEventsConfig::parse(r#"{"enable_kv_cache_events": true, "publisher": "nats"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nats"), "{e}");
        let e = KvEventsConfig::parse(r#"{"enable_kv_cache_event": true}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("enable_kv_cache_event"), "{e}");
        let e = KvEventsConfig::parse(
            r#"{"enable_kv_cache_events": true, "endpoint": "ipc:///tmp/kv"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tcp://"), "{e}");
    }
}
