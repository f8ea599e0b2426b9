//! Prometheus metrics named as vLLM's, with the prefix `pagoda:` and a
//! `model_name` label.
//!
//! Gauges and engine counters are read from the engine's stats at scrape
//! time (the engine owns those numbers); the latency histograms and the
//! finished-request counter are fed by the server as requests end.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::gpu_metrics::{GpuLabels, GpuReading};

mod vllm_names;
pub use vllm_names::CacheConfigInfo;

/// The content type of the exposition (`encode` writes OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// vLLM's buckets for time to first token (seconds).
const TTFT_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's buckets for inter-token latency (seconds).
const ITL_BUCKETS: [f64; 19] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's buckets for request-level latencies (seconds).
const REQUEST_LATENCY_BUCKETS: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// The engine's numbers at one instant (a copy of `EngineStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatsSnapshot {
    pub num_running: usize,
    pub num_waiting: usize,
    /// 0..=1: the fraction of KV blocks held by requests.
    pub kv_cache_usage: f64,
    pub num_preemptions_total: u64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
}

type FinishedLabels = Vec<(&'static str, &'static str)>;

/// Every metric the server exposes.
pub struct Metrics {
    registry: Registry,
    num_requests_running: Gauge,
    num_requests_waiting: Gauge,
    kv_cache_usage_perc: Gauge<f64, AtomicU64>,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    num_preemptions: Counter,
    prefix_cache_queries: Counter,
    prefix_cache_hits: Counter,
    request_success: Family<FinishedLabels, Counter>,
    time_to_first_token: Histogram,
    inter_token_latency: Histogram,
    e2e_request_latency: Histogram,
    request_queue_time: Histogram,
    /// hits / queries since start (vLLM v0's legacy gauge, routers read it).
    prefix_cache_hit_rate: Gauge<f64, AtomicU64>,
    /// vLLM's `cache_config_info`: one sample, value 1, the config as labels.
    cache_config_info: Family<Vec<(&'static str, String)>, Gauge>,
    /// Serializes scrape-time updates so two scrapes never add a delta twice.
    update_lock: Mutex<()>,
    /// Present when the engine runs on a GPU that NVML can read.
    gpu: Option<GpuGauges>,
}

/// The GPU's gauges, in Prometheus base units: bytes, and utilization as a
/// ratio in 0..=1 (not percent). Each is a family holding the one
/// `gpu`/`gpu_name` label set, so that a gauge NVML failed to read is left
/// out of that scrape (removed) rather than showing a stale value; it comes
/// back with the next good reading. f64: bytes are exact below 2^53.
struct GpuGauges {
    labels: GpuLabelSet,
    memory_used_bytes: GpuGauge,
    memory_total_bytes: GpuGauge,
    utilization_ratio: GpuGauge,
}

type GpuLabelSet = Vec<(&'static str, String)>;
type GpuGauge = Family<GpuLabelSet, Gauge<f64, AtomicU64>>;

impl GpuGauges {
    fn new(labels: &GpuLabels) -> Self {
        Self {
            labels: vec![
                ("gpu", labels.gpu.clone()),
                ("gpu_name", labels.gpu_name.clone()),
            ],
            memory_used_bytes: Family::default(),
            memory_total_bytes: Family::default(),
            utilization_ratio: Family::default(),
        }
    }

    /// Sets the gauge to `value`, or leaves it out of the exposition.
    fn set(&self, gauge: &GpuGauge, value: Option<f64>) {
        match value {
            Some(v) => {
                gauge.get_or_create(&self.labels).set(v);
            }
            None => {
                gauge.remove(&self.labels);
            }
        }
    }
}

impl Metrics {
    pub fn new(model_name: &str) -> Self {
        Self::with_gpu(model_name, None)
    }

    /// The metrics, with GPU gauges labelled `gpu` and `gpu_name` when
    /// `gpu` is given (see `crate::gpu_metrics`).
    pub fn with_gpu(model_name: &str, gpu: Option<GpuLabels>) -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            num_requests_running: Gauge::default(),
            num_requests_waiting: Gauge::default(),
            kv_cache_usage_perc: Gauge::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            num_preemptions: Counter::default(),
            prefix_cache_queries: Counter::default(),
            prefix_cache_hits: Counter::default(),
            request_success: Family::default(),
            time_to_first_token: Histogram::new(TTFT_BUCKETS),
            inter_token_latency: Histogram::new(ITL_BUCKETS),
            e2e_request_latency: Histogram::new(REQUEST_LATENCY_BUCKETS),
            request_queue_time: Histogram::new(REQUEST_LATENCY_BUCKETS),
            prefix_cache_hit_rate: Gauge::default(),
            cache_config_info: Family::default(),
            update_lock: Mutex::new(()),
            gpu: gpu.as_ref().map(GpuGauges::new),
        };
        {
            // The label goes on every metric; the `:` names are registered
            // without a registry prefix, which would join with `_`. Help
            // strings have no final period: `register` appends one.
            let r = registry.sub_registry_with_label((
                Cow::Borrowed("model_name"),
                Cow::Owned(model_name.to_string()),
            ));
            r.register(
                "pagoda:num_requests_running",
                "Number of requests in model execution batches",
                m.num_requests_running.clone(),
            );
            r.register(
                "pagoda:num_requests_waiting",
                "Number of requests waiting to be processed",
                m.num_requests_waiting.clone(),
            );
            r.register(
                "pagoda:kv_cache_usage_perc",
                "KV-cache usage. 1 means 100 percent usage",
                m.kv_cache_usage_perc.clone(),
            );
            // Counters: the encoder appends `_total`.
            r.register(
                "pagoda:prompt_tokens",
                "Number of prefill tokens processed",
                m.prompt_tokens.clone(),
            );
            r.register(
                "pagoda:generation_tokens",
                "Number of generation tokens processed",
                m.generation_tokens.clone(),
            );
            r.register(
                "pagoda:request_success",
                "Count of successfully processed requests",
                m.request_success.clone(),
            );
            r.register(
                "pagoda:num_preemptions",
                "Cumulative number of preemptions from the engine",
                m.num_preemptions.clone(),
            );
            r.register(
                "pagoda:prefix_cache_queries",
                "Prefix cache queries, in terms of number of queried tokens",
                m.prefix_cache_queries.clone(),
            );
            r.register(
                "pagoda:prefix_cache_hits",
                "Prefix cache hits, in terms of number of cached tokens",
                m.prefix_cache_hits.clone(),
            );
            r.register(
                "pagoda:time_to_first_token_seconds",
                "Histogram of time to first token in seconds",
                m.time_to_first_token.clone(),
            );
            r.register(
                "pagoda:inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds",
                m.inter_token_latency.clone(),
            );
            r.register(
                "pagoda:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds",
                m.e2e_request_latency.clone(),
            );
            r.register(
                "pagoda:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request",
                m.request_queue_time.clone(),
            );
            if let Some(g) = m.gpu.as_ref() {
                r.register(
                    "pagoda:gpu_memory_used_bytes",
                    "GPU memory in use on the engine's GPU (all processes), in bytes, from NVML",
                    g.memory_used_bytes.clone(),
                );
                r.register(
                    "pagoda:gpu_memory_total_bytes",
                    "GPU memory installed on the engine's GPU, in bytes, from NVML",
                    g.memory_total_bytes.clone(),
                );
                r.register(
                    "pagoda:gpu_utilization_ratio",
                    "Share of NVML's last sample period in which a kernel ran on the engine's GPU (0..1)",
                    g.utilization_ratio.clone(),
                );
            }
            vllm_names::register(r, &m);
        }
        Self { registry, ..m }
    }

    /// Copies the engine's numbers into the gauges and counters.
    pub fn update_from_stats(&self, s: &StatsSnapshot) {
        let _guard = self.update_lock.lock();
        self.num_requests_running.set(s.num_running as i64);
        self.num_requests_waiting.set(s.num_waiting as i64);
        self.kv_cache_usage_perc
            .set(s.kv_cache_usage.clamp(0.0, 1.0));
        for (counter, total) in [
            (&self.prompt_tokens, s.prompt_tokens_total),
            (&self.generation_tokens, s.generation_tokens_total),
            (&self.num_preemptions, s.num_preemptions_total),
            (&self.prefix_cache_queries, s.prefix_cache_queries),
            (&self.prefix_cache_hits, s.prefix_cache_hits),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let rate = match s.prefix_cache_queries {
            0 => 0.0,
            q => s.prefix_cache_hits as f64 / q as f64,
        };
        self.prefix_cache_hit_rate.set(rate.clamp(0.0, 1.0));
    }

    /// Publishes the KV-cache layout as `vllm:cache_config_info` (routers
    /// read the block size and block count from it).
    pub fn with_cache_config(self, info: CacheConfigInfo) -> Self {
        self.cache_config_info.get_or_create(&info.labels()).set(1);
        self
    }

    /// Whether GPU gauges are exported.
    pub fn has_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    /// Sets the GPU gauges from a reading. A gauge whose value is missing
    /// (`None` reading: nothing could be read) is left out of the exposition
    /// until a reading has it again: no stale values, no NaN.
    pub fn update_gpu(&self, reading: Option<&GpuReading>) {
        let Some(g) = &self.gpu else {
            return;
        };
        let r = reading.copied().unwrap_or_default();
        let _guard = self.update_lock.lock();
        g.set(&g.memory_used_bytes, r.memory_used_bytes.map(|b| b as f64));
        g.set(
            &g.memory_total_bytes,
            r.memory_total_bytes.map(|b| b as f64),
        );
        g.set(
            &g.utilization_ratio,
            r.utilization_ratio.map(|u| u.clamp(0.0, 1.0)),
        );
    }

    /// Counts one finished request by finish reason ("stop", "length", "abort").
    pub fn record_finished(&self, finished_reason: &'static str) {
        self.request_success
            .get_or_create(&vec![("finished_reason", finished_reason)])
            .inc();
    }

    pub fn observe_time_to_first_token(&self, secs: f64) {
        self.time_to_first_token.observe(secs);
    }

    pub fn observe_inter_token_latency(&self, secs: f64) {
        self.inter_token_latency.observe(secs);
    }

    pub fn observe_e2e_request_latency(&self, secs: f64) {
        self.e2e_request_latency.observe(secs);
    }

    pub fn observe_request_queue_time(&self, secs: f64) {
        self.request_queue_time.observe(secs);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line starting with `prefix`.
    fn sample(text: &str, prefix: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn help_lines_end_in_one_period() {
        let gpu = GpuLabels {
            gpu: "0".into(),
            gpu_name: "H200".into(),
        };
        let t = Metrics::with_gpu("smol", Some(gpu)).render();
        let help: Vec<&str> = t.lines().filter(|l| l.starts_with("# HELP")).collect();
        assert!(help.len() >= 16, "{t}");
        for line in help {
            assert!(line.ends_with('.') && !line.ends_with(".."), "{line}");
        }
    }

    #[test]
    fn exposition_uses_colon_names_and_model_label() {
        let m = Metrics::new("smol");
        m.update_from_stats(&StatsSnapshot {
            num_running: 3,
            num_waiting: 2,
            kv_cache_usage: 0.25,
            num_preemptions_total: 1,
            prefix_cache_queries: 64,
            prefix_cache_hits: 32,
            prompt_tokens_total: 100,
            generation_tokens_total: 50,
        });
        m.record_finished("length");
        m.record_finished("length");
        m.record_finished("stop");
        m.observe_time_to_first_token(0.05);
        m.observe_inter_token_latency(0.02);
        m.observe_e2e_request_latency(1.2);
        m.observe_request_queue_time(0.001);
        let t = m.render();
        let l = r#"{model_name="smol"}"#;
        assert_eq!(sample(&t, &format!("pagoda:num_requests_running{l}")), 3.0);
        assert_eq!(sample(&t, &format!("pagoda:num_requests_waiting{l}")), 2.0);
        assert_eq!(sample(&t, &format!("pagoda:kv_cache_usage_perc{l}")), 0.25);
        assert_eq!(sample(&t, &format!("pagoda:prompt_tokens_total{l}")), 100.0);
        assert_eq!(
            sample(&t, &format!("pagoda:generation_tokens_total{l}")),
            50.0
        );
        assert_eq!(sample(&t, &format!("pagoda:num_preemptions_total{l}")), 1.0);
        assert_eq!(
            sample(&t, &format!("pagoda:prefix_cache_queries_total{l}")),
            64.0
        );
        assert_eq!(
            sample(&t, &format!("pagoda:prefix_cache_hits_total{l}")),
            32.0
        );
        assert_eq!(
            sample(
                &t,
                r#"pagoda:request_success_total{model_name="smol",finished_reason="length"}"#
            ),
            2.0
        );
        for h in [
            "time_to_first_token_seconds",
            "inter_token_latency_seconds",
            "e2e_request_latency_seconds",
            "request_queue_time_seconds",
        ] {
            assert_eq!(sample(&t, &format!("pagoda:{h}_count{l}")), 1.0, "{h}");
        }
    }

    #[test]
    fn routers_find_the_vllm_names() {
        let m = Metrics::new("smol").with_cache_config(CacheConfigInfo {
            block_size: 16,
            num_gpu_blocks: 1024,
            enable_prefix_caching: true,
            cache_dtype: "bfloat16",
        });
        m.update_from_stats(&StatsSnapshot {
            num_running: 3,
            num_waiting: 2,
            kv_cache_usage: 0.25,
            prefix_cache_queries: 64,
            prefix_cache_hits: 16,
            prompt_tokens_total: 100,
            ..Default::default()
        });
        m.record_finished("stop");
        m.observe_time_to_first_token(0.05);
        let t = m.render();
        let l = r#"{model_name="smol"}"#;
        for (name, value) in [
            ("vllm:num_requests_running", 3.0),
            ("vllm:num_requests_waiting", 2.0),
            ("vllm:kv_cache_usage_perc", 0.25),
            ("vllm:gpu_cache_usage_perc", 0.25),
            ("vllm:prompt_tokens_total", 100.0),
            ("vllm:prefix_cache_queries_total", 64.0),
            ("vllm:prefix_cache_hits_total", 16.0),
            ("vllm:gpu_prefix_cache_queries_total", 64.0),
            ("vllm:gpu_prefix_cache_hits_total", 16.0),
            ("vllm:gpu_prefix_cache_hit_rate", 0.25),
            ("vllm:time_to_first_token_seconds_count", 1.0),
        ] {
            assert_eq!(sample(&t, &format!("{name}{l}")), value, "{name}");
        }
        assert_eq!(
            sample(
                &t,
                r#"vllm:request_success_total{model_name="smol",finished_reason="stop"}"#
            ),
            1.0
        );
        let info = t
            .lines()
            .find(|l| l.starts_with("vllm:cache_config_info{"))
            .unwrap_or_else(|| panic!("no cache_config_info in\n{t}"));
        for label in [
            r#"model_name="smol""#,
            r#"block_size="16""#,
            r#"num_gpu_blocks="1024""#,
            r#"enable_prefix_caching="True""#,
            r#"cache_dtype="bfloat16""#,
        ] {
            assert!(info.contains(label), "{label} not in {info}");
        }
        assert!(info.ends_with(" 1"), "{info}");
        // The pagoda: names are still served, from the same metrics.
        assert_eq!(sample(&t, &format!("pagoda:num_requests_running{l}")), 3.0);
    }

    #[test]
    fn counters_follow_engine_totals_without_double_counting() {
        let m = Metrics::new("m");
        let mut s = StatsSnapshot {
            prompt_tokens_total: 10,
            ..Default::default()
        };
        m.update_from_stats(&s);
        m.update_from_stats(&s);
        s.prompt_tokens_total = 15;
        m.update_from_stats(&s);
        let t = m.render();
        assert_eq!(
            sample(&t, r#"pagoda:prompt_tokens_total{model_name="m"}"#),
            15.0
        );
        // Gauges go down as well as up.
        s.num_running = 4;
        m.update_from_stats(&s);
        s.num_running = 0;
        m.update_from_stats(&s);
        let t = m.render();
        assert_eq!(
            sample(&t, r#"pagoda:num_requests_running{model_name="m"}"#),
            0.0
        );
    }

    #[test]
    fn gpu_gauges_carry_gpu_labels_and_drop_unread_values() {
        let m = Metrics::new("smol");
        m.update_gpu(Some(&GpuReading::default()));
        assert!(!m.has_gpu() && !m.render().contains("pagoda:gpu"));
        let m = Metrics::with_gpu(
            "smol",
            Some(GpuLabels {
                gpu: "0".into(),
                gpu_name: "NVIDIA H200".into(),
            }),
        );
        let full = GpuReading {
            memory_used_bytes: Some(3 << 30),
            memory_total_bytes: Some(141 << 30),
            utilization_ratio: Some(0.87),
        };
        m.update_gpu(Some(&full));
        let text = m.render();
        let labels = r#"{model_name="smol",gpu="0",gpu_name="NVIDIA H200"}"#;
        let used = format!("pagoda:gpu_memory_used_bytes{labels}");
        assert_eq!(sample(&text, &used), (3u64 << 30) as f64, "{text}");
        let total = format!("pagoda:gpu_memory_total_bytes{labels}");
        assert_eq!(sample(&text, &total), (141u64 << 30) as f64);
        let util = format!("pagoda:gpu_utilization_ratio{labels}");
        assert_eq!(sample(&text, &util), 0.87);
        assert!(text.contains("# TYPE pagoda:gpu_utilization_ratio gauge"));

        // Utilization unreadable (e.g. a MIG instance): only it is left out.
        m.update_gpu(Some(&GpuReading {
            utilization_ratio: None,
            ..full
        }));
        let text = m.render();
        assert!(!text.contains(&util), "{text}");
        assert_eq!(sample(&text, &used), (3u64 << 30) as f64);
        assert_eq!(sample(&text, &total), (141u64 << 30) as f64);

        // Nothing readable: no GPU samples, none stale, none NaN.
        m.update_gpu(None);
        let text = m.render();
        for g in [&used, &total, &util] {
            assert!(!text.contains(g.as_str()), "{g} in\n{text}");
        }
        assert!(!text.contains("NaN"), "{text}");

        // A good reading brings them back, with the new values.
        m.update_gpu(Some(&GpuReading {
            memory_used_bytes: Some(5 << 30),
            utilization_ratio: Some(1.5),
            ..full
        }));
        let text = m.render();
        assert_eq!(sample(&text, &used), (5u64 << 30) as f64);
        assert_eq!(sample(&text, &util), 1.0, "clamped to 0..=1");
    }
}
