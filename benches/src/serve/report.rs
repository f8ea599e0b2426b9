//! What a run prints and saves: vLLM's "Serving Benchmark Result" table, row
//! for row, and the JSON of `vllm bench serve --save-result` (with the
//! per-request lists that vLLM writes under `--save-detailed`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::metrics::{BenchmarkMetrics, MetricSummary, RequestFuncOutput};

/// One finished run, everything the table and the JSON are made of.
#[derive(Debug, Clone)]
pub struct BenchmarkResult {
    pub metrics: BenchmarkMetrics,
    pub actual_output_lens: Vec<usize>,
    pub outputs: Vec<RequestFuncOutput>,
    pub duration: f64,
    pub max_concurrency: Option<usize>,
    pub request_rate: f64,
    pub goodput_enabled: bool,
    /// The metrics whose statistics are printed (--percentile-metrics).
    pub selected_metrics: Vec<String>,
}

/// The run's setup, recorded at the top of the JSON.
#[derive(Debug, Clone)]
pub struct ResultHeader {
    /// `%Y%m%d-%H%M%S`, local time.
    pub date: String,
    pub backend: String,
    pub label: Option<String>,
    pub model_id: String,
    pub tokenizer_id: String,
    pub num_prompts: usize,
    pub request_rate: f64,
    pub burstiness: f64,
    pub max_concurrency: Option<usize>,
    /// --metadata KEY=VALUE pairs.
    pub metadata: Vec<(String, String)>,
}

/// The metrics a table can show: (key, short name, section header).
const METRICS: [(&str, &str, &str); 4] = [
    ("ttft", "TTFT", "Time to First Token"),
    ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
    ("itl", "ITL", "Inter-token Latency"),
    ("e2el", "E2EL", "End-to-end Latency"),
];

impl BenchmarkResult {
    fn summary(&self, key: &str) -> &MetricSummary {
        match key {
            "ttft" => &self.metrics.ttft,
            "tpot" => &self.metrics.tpot,
            "itl" => &self.metrics.itl,
            _ => &self.metrics.e2el,
        }
    }

    /// vLLM's printed result table.
    pub fn format_table(&self) -> String {
        let m = &self.metrics;
        let mut s = String::new();
        let int_row = |s: &mut String, label: &str, v: usize| {
            let _ = writeln!(s, "{label:<40} {v:<10}");
        };
        let float_row = |s: &mut String, label: &str, v: f64| {
            let _ = writeln!(s, "{label:<40} {v:<10.2}");
        };
        let _ = writeln!(s, "{:=^50}", " Serving Benchmark Result ");
        int_row(&mut s, "Successful requests:", m.completed);
        int_row(&mut s, "Failed requests:", m.failed);
        if let Some(c) = self.max_concurrency {
            int_row(&mut s, "Maximum request concurrency:", c);
        }
        if self.request_rate.is_finite() {
            float_row(&mut s, "Request rate configured (RPS):", self.request_rate);
        }
        float_row(&mut s, "Benchmark duration (s):", self.duration);
        int_row(&mut s, "Total input tokens:", m.total_input);
        int_row(&mut s, "Total generated tokens:", m.total_output);
        float_row(&mut s, "Request throughput (req/s):", m.request_throughput);
        if self.goodput_enabled {
            float_row(&mut s, "Request goodput (req/s):", m.request_goodput);
        }
        float_row(
            &mut s,
            "Output token throughput (tok/s):",
            m.output_throughput,
        );
        float_row(
            &mut s,
            "Peak output token throughput (tok/s):",
            m.max_output_tokens_per_s,
        );
        float_row(
            &mut s,
            "Peak concurrent requests:",
            m.max_concurrent_requests as f64,
        );
        float_row(
            &mut s,
            "Total token throughput (tok/s):",
            m.total_token_throughput,
        );
        for (key, name, header) in METRICS {
            if !self.selected_metrics.iter().any(|k| k == key) {
                continue;
            }
            let summary = self.summary(key);
            let _ = writeln!(s, "{header:-^50}");
            float_row(&mut s, &format!("Mean {name} (ms):"), summary.mean_ms);
            float_row(&mut s, &format!("Median {name} (ms):"), summary.median_ms);
            for &(p, v) in &summary.percentiles_ms {
                float_row(&mut s, &format!("P{} {name} (ms):", percentile_word(p)), v);
            }
        }
        let _ = writeln!(s, "{}", "=".repeat(50));
        s
    }

    /// The saved JSON: the header's fields, then the run's.
    pub fn to_json(&self, header: &ResultHeader) -> Map<String, Value> {
        let m = &self.metrics;
        let mut r = Map::new();
        r.insert("date".into(), json!(header.date));
        r.insert("endpoint_type".into(), json!(header.backend));
        r.insert("backend".into(), json!(header.backend));
        r.insert("label".into(), json!(header.label));
        r.insert("model_id".into(), json!(header.model_id));
        r.insert("tokenizer_id".into(), json!(header.tokenizer_id));
        r.insert("num_prompts".into(), json!(header.num_prompts));
        for (k, v) in &header.metadata {
            r.insert(k.clone(), json!(v));
        }
        let rate = if header.request_rate.is_finite() {
            json!(header.request_rate)
        } else {
            json!("inf")
        };
        r.insert("request_rate".into(), rate);
        r.insert("burstiness".into(), json!(header.burstiness));
        r.insert("max_concurrency".into(), json!(header.max_concurrency));
        r.insert("duration".into(), json!(self.duration));
        r.insert("completed".into(), json!(m.completed));
        r.insert("failed".into(), json!(m.failed));
        r.insert("total_input_tokens".into(), json!(m.total_input));
        r.insert("total_output_tokens".into(), json!(m.total_output));
        r.insert("request_throughput".into(), json!(m.request_throughput));
        let goodput = self.goodput_enabled.then_some(m.request_goodput);
        r.insert("request_goodput".into(), json!(goodput));
        r.insert("output_throughput".into(), json!(m.output_throughput));
        r.insert(
            "total_token_throughput".into(),
            json!(m.total_token_throughput),
        );
        let per_request = |f: &dyn Fn(&RequestFuncOutput) -> Value| -> Value {
            Value::Array(self.outputs.iter().map(f).collect())
        };
        r.insert("input_lens".into(), per_request(&|o| json!(o.prompt_len)));
        r.insert("output_lens".into(), json!(self.actual_output_lens));
        r.insert("ttfts".into(), per_request(&|o| json!(o.ttft)));
        r.insert("itls".into(), per_request(&|o| json!(o.itl)));
        r.insert("latencies".into(), per_request(&|o| json!(o.latency)));
        r.insert("start_times".into(), per_request(&|o| json!(o.start_time)));
        r.insert(
            "queue_times".into(),
            per_request(&|o| json!(o.client_queue_time)),
        );
        r.insert(
            "generated_texts".into(),
            per_request(&|o| json!(o.generated_text)),
        );
        r.insert("errors".into(), per_request(&|o| json!(o.error)));
        r.insert(
            "max_output_tokens_per_s".into(),
            json!(m.max_output_tokens_per_s),
        );
        r.insert(
            "max_concurrent_requests".into(),
            json!(m.max_concurrent_requests),
        );
        // Every metric's statistics are saved, printed or not.
        for (key, _, _) in METRICS {
            let summary = self.summary(key);
            r.insert(format!("mean_{key}_ms"), json!(summary.mean_ms));
            r.insert(format!("median_{key}_ms"), json!(summary.median_ms));
            r.insert(format!("std_{key}_ms"), json!(summary.std_ms));
            for &(p, v) in &summary.percentiles_ms {
                r.insert(format!("p{}_{key}_ms", percentile_word(p)), json!(v));
            }
        }
        r
    }
}

/// vLLM's result file name:
/// `{label}-{request_rate}qps[-concurrency{max_concurrency}]-{model basename}-{date}.json`,
/// or `result_filename`, under `result_dir` when given.
pub fn result_path(
    header: &ResultHeader,
    result_filename: Option<&str>,
    result_dir: Option<&Path>,
) -> PathBuf {
    let base_model_id = header
        .model_id
        .rsplit('/')
        .next()
        .unwrap_or(&header.model_id);
    let concurrency = header
        .max_concurrency
        .map(|c| format!("-concurrency{c}"))
        .unwrap_or_default();
    let label = header.label.as_deref().unwrap_or(&header.backend);
    let name = match result_filename {
        Some(name) => name.to_string(),
        None => format!(
            "{label}-{}qps{concurrency}-{base_model_id}-{}.json",
            python_float(header.request_rate),
            header.date
        ),
    };
    match result_dir {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// How Python's `str(float)` writes a number: `10.0`, `0.5`, `inf`.
pub fn python_float(x: f64) -> String {
    if x.is_infinite() {
        if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// `99` for 99.0, `99.9` for 99.9 (vLLM's `p_word`).
pub fn percentile_word(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::metrics::{calculate_metrics, GoodputConfig};

    fn result() -> BenchmarkResult {
        let outputs = vec![
            RequestFuncOutput {
                success: true,
                prompt_len: 10,
                output_tokens: Some(3),
                ttft: 0.1,
                itl: vec![0.05, 0.05],
                latency: 0.2,
                generated_text: "abc".into(),
                ..Default::default()
            },
            RequestFuncOutput {
                prompt_len: 10,
                error: "HTTP 500".into(),
                ..Default::default()
            },
        ];
        let (metrics, actual_output_lens) =
            calculate_metrics(&outputs, 2.0, &[99.0], &GoodputConfig::default());
        BenchmarkResult {
            metrics,
            actual_output_lens,
            outputs,
            duration: 2.0,
            max_concurrency: Some(4),
            request_rate: f64::INFINITY,
            goodput_enabled: false,
            selected_metrics: vec!["ttft".into(), "tpot".into(), "itl".into()],
        }
    }

    fn header() -> ResultHeader {
        ResultHeader {
            date: "20250101-120000".into(),
            backend: "openai".into(),
            label: None,
            model_id: "org/SmolLM2".into(),
            tokenizer_id: "org/SmolLM2".into(),
            num_prompts: 2,
            request_rate: f64::INFINITY,
            burstiness: 1.0,
            max_concurrency: Some(4),
            metadata: vec![("run".into(), "a".into())],
        }
    }

    #[test]
    fn table_has_vllms_rows() {
        let t = result().format_table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "============ Serving Benchmark Result ============"
        );
        assert_eq!(
            lines[1],
            format!("{:<40} {:<10}", "Successful requests:", 1)
        );
        assert!(t.contains("Failed requests:                         1"));
        assert!(t.contains("Maximum request concurrency:             4"));
        assert!(!t.contains("Request rate configured"));
        assert!(t.contains("Benchmark duration (s):                  2.00"));
        assert!(t.contains("Total generated tokens:                  3"));
        assert!(t.contains("Request throughput (req/s):              0.50"));
        assert!(t.contains("Output token throughput (tok/s):         1.50"));
        assert!(t.contains("Total token throughput (tok/s):          6.50"));
        assert!(t.contains("---------------Time to First Token----------------"));
        assert!(t.contains("-----Time per Output Token (excl. 1st token)------"));
        assert!(t.contains("---------------Inter-token Latency----------------"));
        assert!(t.contains("Mean TTFT (ms):                          100.00"));
        assert!(t.contains("Median TPOT (ms):                        50.00"));
        assert!(t.contains("P99 ITL (ms):                            50.00"));
        assert!(!t.contains("E2EL"));
        assert_eq!(*lines.last().unwrap(), "=".repeat(50));
        assert!(lines.iter().all(|l| l.chars().count() <= 51), "{t}");
    }

    #[test]
    fn json_has_vllms_fields() {
        let j = result().to_json(&header());
        for field in [
            "date",
            "backend",
            "model_id",
            "tokenizer_id",
            "num_prompts",
            "request_rate",
            "burstiness",
            "max_concurrency",
            "duration",
            "completed",
            "total_input_tokens",
            "total_output_tokens",
            "request_throughput",
            "output_throughput",
            "total_token_throughput",
            "input_lens",
            "output_lens",
            "ttfts",
            "itls",
            "generated_texts",
            "errors",
            "mean_ttft_ms",
            "median_ttft_ms",
            "std_ttft_ms",
            "p99_ttft_ms",
            "mean_tpot_ms",
            "median_tpot_ms",
            "std_tpot_ms",
            "p99_tpot_ms",
            "mean_itl_ms",
            "median_itl_ms",
            "std_itl_ms",
            "p99_itl_ms",
            "mean_e2el_ms",
            "median_e2el_ms",
            "std_e2el_ms",
            "p99_e2el_ms",
            "run",
        ] {
            assert!(j.contains_key(field), "missing {field}");
        }
        assert_eq!(j["request_rate"], "inf");
        assert_eq!(j["request_goodput"], Value::Null);
        assert_eq!(j["output_lens"], json!([3, 0]));
        assert_eq!(j["errors"], json!(["", "HTTP 500"]));
        assert_eq!(j["itls"][0], json!([0.05, 0.05]));
        assert!((j["mean_e2el_ms"].as_f64().unwrap() - 200.0).abs() < 1e-9);
    }

    #[test]
    fn file_name_is_vllms() {
        let h = header();
        assert_eq!(
            result_path(&h, None, None),
            PathBuf::from("openai-infqps-concurrency4-SmolLM2-20250101-120000.json")
        );
        let h = ResultHeader {
            request_rate: 10.0,
            max_concurrency: None,
            label: Some("pagoda".into()),
            ..h
        };
        assert_eq!(
            result_path(&h, None, Some(Path::new("/tmp/r"))),
            PathBuf::from("/tmp/r/pagoda-10.0qps-SmolLM2-20250101-120000.json")
        );
        assert_eq!(
            result_path(&h, Some("x.json"), None),
            PathBuf::from("x.json")
        );
        assert_eq!(
            (
                python_float(0.5),
                percentile_word(99.9),
                percentile_word(50.0)
            ),
            ("0.5".into(), "99.9".into(), "50".into())
        );
    }
}
