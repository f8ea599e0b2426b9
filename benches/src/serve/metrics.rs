//! vLLM's `calculate_metrics`: per-request timings in, the benchmark's
//! aggregate figures out. Times are seconds in, milliseconds out, as vLLM's.

use crate::stats;

/// What one request measured (vLLM's `RequestFuncOutput`). Times are seconds;
/// `start_time` counts from the start of the benchmark.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFuncOutput {
    pub generated_text: String,
    pub success: bool,
    /// From sending the request to its last token chunk.
    pub latency: f64,
    /// `usage.completion_tokens` when the server reported it.
    pub output_tokens: Option<usize>,
    /// Time to first token.
    pub ttft: f64,
    /// Inter-token latencies: the gaps between consecutive token chunks.
    pub itl: Vec<f64>,
    /// Prompt tokens: the dataset's count, replaced by `usage.prompt_tokens`.
    pub prompt_len: usize,
    pub error: String,
    pub start_time: f64,
    /// Time spent waiting for a `--max-concurrency` slot before sending.
    pub client_queue_time: f64,
}

/// Service-level objectives in milliseconds (vLLM's `--goodput ttft:.. tpot:.. e2el:..`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GoodputConfig {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

impl GoodputConfig {
    /// Parses `KEY:VALUE` pairs; keys are ttft, tpot and e2el, values non-negative ms.
    pub fn parse(pairs: &[String]) -> anyhow::Result<Self> {
        let mut config = Self::default();
        for pair in pairs {
            let (name, value) = pair.split_once(':').ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid --goodput entry {pair:?}: expected KEY:VALUE, the value in milliseconds"
                )
            })?;
            let value: f64 = value
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid --goodput value in {pair:?}"))?;
            if value.is_nan() || value < 0.0 {
                anyhow::bail!("invalid --goodput value in {pair:?}: must be non-negative");
            }
            match name.trim() {
                "ttft" => config.ttft_ms = Some(value),
                "tpot" => config.tpot_ms = Some(value),
                "e2el" => config.e2el_ms = Some(value),
                other => anyhow::bail!(
                    "invalid --goodput metric {other:?}: expected one of ttft, tpot, e2el"
                ),
            }
        }
        Ok(config)
    }

    pub fn is_empty(&self) -> bool {
        self.ttft_ms.is_none() && self.tpot_ms.is_none() && self.e2el_ms.is_none()
    }

    /// A request is good when it meets every objective that was set.
    fn is_good(&self, ttft: f64, tpot: f64, e2el: f64) -> bool {
        let meets =
            |slo_ms: Option<f64>, value_s: f64| slo_ms.is_none_or(|ms| ms / 1000.0 >= value_s);
        meets(self.ttft_ms, ttft) && meets(self.tpot_ms, tpot) && meets(self.e2el_ms, e2el)
    }
}

/// Mean, median, std and selected percentiles of one metric, in ms.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSummary {
    pub mean_ms: f64,
    pub median_ms: f64,
    pub std_ms: f64,
    /// `(percentile, value_ms)` for each selected percentile.
    pub percentiles_ms: Vec<(f64, f64)>,
}

impl MetricSummary {
    /// Summarizes values in seconds.
    pub fn from_seconds(values: &[f64], selected_percentiles: &[f64]) -> Self {
        Self {
            mean_ms: stats::mean(values) * 1000.0,
            median_ms: stats::median(values) * 1000.0,
            std_ms: stats::std(values) * 1000.0,
            percentiles_ms: selected_percentiles
                .iter()
                .map(|&p| (p, stats::percentile(values, p) * 1000.0))
                .collect(),
        }
    }
}

/// vLLM's `BenchmarkMetrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkMetrics {
    pub completed: usize,
    pub failed: usize,
    pub total_input: usize,
    pub total_output: usize,
    pub request_throughput: f64,
    pub request_goodput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub ttft: MetricSummary,
    pub tpot: MetricSummary,
    pub itl: MetricSummary,
    /// End-to-end latency of each request, from sending to the last token.
    pub e2el: MetricSummary,
    /// The most tokens that arrived within one second of the run.
    pub max_output_tokens_per_s: f64,
    /// The most requests active within one second of the run (vLLM's
    /// per-second count, see `peak_figures`), not at one instant.
    pub max_concurrent_requests: usize,
}

/// Aggregates request outputs over a run of `dur_s` seconds. Returns the
/// metrics and each request's output length (0 for a failed request).
///
/// TPOT of a request is `(latency - ttft) / (output_len - 1)`, counted only
/// when `output_len > 1`; a request whose server sent no usage counts 1
/// token (count its text with a tokenizer before calling this to do better).
pub fn calculate_metrics(
    outputs: &[RequestFuncOutput],
    dur_s: f64,
    selected_percentiles: &[f64],
    goodput: &GoodputConfig,
) -> (BenchmarkMetrics, Vec<usize>) {
    let mut actual_output_lens = Vec::with_capacity(outputs.len());
    let (mut total_input, mut completed, mut good_completed) = (0usize, 0usize, 0usize);
    let (mut itls, mut tpots, mut ttfts, mut e2els) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for output in outputs {
        if !output.success {
            actual_output_lens.push(0);
            continue;
        }
        let output_len = output.output_tokens.filter(|&n| n > 0).unwrap_or(1);
        actual_output_lens.push(output_len);
        total_input += output.prompt_len;
        let mut tpot = 0.0;
        if output_len > 1 {
            tpot = (output.latency - output.ttft) / (output_len - 1) as f64;
            tpots.push(tpot);
        }
        // A request of one token counts as TPOT 0 for goodput, as vLLM's.
        if goodput.is_good(output.ttft, tpot, output.latency) {
            good_completed += 1;
        }
        itls.extend_from_slice(&output.itl);
        ttfts.push(output.ttft);
        e2els.push(output.latency);
        completed += 1;
    }
    if goodput.is_empty() {
        good_completed = 0;
    }
    let total_output: usize = actual_output_lens.iter().sum();
    let (max_output_tokens_per_s, max_concurrent_requests) = peak_figures(outputs);
    let metrics = BenchmarkMetrics {
        completed,
        failed: outputs.len() - completed,
        total_input,
        total_output,
        request_throughput: completed as f64 / dur_s,
        request_goodput: good_completed as f64 / dur_s,
        output_throughput: total_output as f64 / dur_s,
        total_token_throughput: (total_input + total_output) as f64 / dur_s,
        ttft: MetricSummary::from_seconds(&ttfts, selected_percentiles),
        tpot: MetricSummary::from_seconds(&tpots, selected_percentiles),
        itl: MetricSummary::from_seconds(&itls, selected_percentiles),
        e2el: MetricSummary::from_seconds(&e2els, selected_percentiles),
        max_output_tokens_per_s,
        max_concurrent_requests,
    };
    (metrics, actual_output_lens)
}

/// vLLM's peak figures over the successful requests, both from one timeline
/// of one-second buckets counted from the first request's start (`t0`), with
/// `ceil(last end - t0) + 1` buckets:
///
/// - peak output tokens/s: each token chunk (at `start + ttft`, then each
///   ITL after it) counts in bucket `floor(t - t0)`; the fullest bucket wins;
/// - peak concurrent requests: each request counts once in every bucket from
///   `floor(start - t0)` to `floor(end - t0)`, both included, where
///   `end = start + latency`; the fullest bucket wins.
///
/// This is what `vllm bench serve` reports (`calculate_metrics` in
/// `vllm/benchmarks/serve.py`), not the instantaneous peak: requests that
/// only share a second (one ends at 0.2 s, the next starts at 0.8 s) count
/// as concurrent. Matching vLLM keeps the figure comparable across the two
/// tools; vLLM's issue #56653 tracks the overcount.
fn peak_figures(outputs: &[RequestFuncOutput]) -> (f64, usize) {
    let ok: Vec<&RequestFuncOutput> = outputs.iter().filter(|o| o.success).collect();
    if ok.is_empty() {
        return (0.0, 0);
    }
    let t0 = ok
        .iter()
        .map(|o| o.start_time)
        .fold(f64::INFINITY, f64::min);
    let last_end = ok
        .iter()
        .map(|o| o.start_time + o.latency)
        .fold(f64::NEG_INFINITY, f64::max);
    let num_buckets = (last_end - t0).ceil().max(0.0) as usize + 1;
    // Python's int() of a non-negative float; None outside the timeline.
    let bucket = |t: f64| {
        let b = (t - t0).floor();
        (b >= 0.0 && (b as usize) < num_buckets).then_some(b as usize)
    };
    let mut tokens_per_second = vec![0usize; num_buckets];
    let mut requests_per_second = vec![0usize; num_buckets];
    for o in &ok {
        let mut t = o.start_time + o.ttft;
        let token_times = std::iter::once(t).chain(o.itl.iter().map(|gap| {
            t += gap;
            t
        }));
        for b in token_times.filter_map(bucket) {
            tokens_per_second[b] += 1;
        }
        if let (Some(first), Some(last)) = (bucket(o.start_time), bucket(o.start_time + o.latency))
        {
            for count in &mut requests_per_second[first..=last] {
                *count += 1;
            }
        }
    }
    let max_tokens = tokens_per_second.into_iter().max().unwrap_or(0);
    let max_requests = requests_per_second.into_iter().max().unwrap_or(0);
    (max_tokens as f64, max_requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(
        prompt_len: usize,
        output_tokens: usize,
        ttft: f64,
        itl: Vec<f64>,
        start: f64,
    ) -> RequestFuncOutput {
        let latency = ttft + itl.iter().sum::<f64>();
        RequestFuncOutput {
            success: true,
            prompt_len,
            output_tokens: Some(output_tokens),
            ttft,
            itl,
            latency,
            start_time: start,
            ..Default::default()
        }
    }

    #[test]
    fn tpot_throughput_and_percentiles_by_hand() {
        // A: ttft 0.1, 4 tokens, gaps 0.02 0.03 0.05 -> latency 0.2, tpot 0.1/3.
        // B: ttft 0.3, 2 tokens, gap 0.1 -> latency 0.4, tpot 0.1.
        // C: one token -> no tpot. D: failed.
        let outputs = vec![
            ok(10, 4, 0.1, vec![0.02, 0.03, 0.05], 0.0),
            ok(20, 2, 0.3, vec![0.1], 0.5),
            ok(5, 1, 0.2, vec![], 1.0),
            RequestFuncOutput {
                prompt_len: 7,
                error: "boom".into(),
                ..Default::default()
            },
        ];
        let (m, lens) = calculate_metrics(&outputs, 2.0, &[99.0], &GoodputConfig::default());
        assert_eq!(lens, vec![4, 2, 1, 0]);
        assert_eq!((m.completed, m.failed), (3, 1));
        assert_eq!((m.total_input, m.total_output), (35, 7));
        assert_eq!(m.request_throughput, 1.5);
        assert_eq!(m.output_throughput, 3.5);
        assert_eq!(m.total_token_throughput, 21.0);
        assert_eq!(m.request_goodput, 0.0);
        // TPOTs [1/30, 0.1] s: mean 200/3 ms, std 100/3 ms, p99 = 1/30 + 0.99 * (0.1 - 1/30).
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(m.tpot.mean_ms, 200.0 / 3.0), "{}", m.tpot.mean_ms);
        assert!(close(m.tpot.std_ms, 100.0 / 3.0));
        assert!(close(
            m.tpot.percentiles_ms[0].1,
            (1.0 / 30.0 + 0.99 * (0.1 - 1.0 / 30.0)) * 1000.0
        ));
        // TTFTs [0.1, 0.3, 0.2]: median 200 ms; p99 = 0.2 + 0.98 * 0.1.
        assert!(close(m.ttft.median_ms, 200.0));
        assert!(close(m.ttft.percentiles_ms[0].1, 298.0));
        // ITLs [0.02, 0.03, 0.05, 0.1]: mean 50 ms, median 40 ms.
        assert!(close(m.itl.mean_ms, 50.0));
        assert!(close(m.itl.median_ms, 40.0));
        // E2ELs [0.2, 0.4, 0.2]: mean 800/3 ms.
        assert!(close(m.e2el.mean_ms, 800.0 / 3.0));
    }

    #[test]
    fn missing_usage_counts_one_token() {
        let mut o = ok(3, 0, 0.1, vec![0.1, 0.1], 0.0);
        o.output_tokens = None;
        let (m, lens) = calculate_metrics(&[o], 1.0, &[99.0], &GoodputConfig::default());
        assert_eq!(lens, vec![1]);
        assert_eq!(m.tpot.mean_ms, 0.0);
    }

    #[test]
    fn goodput_counts_requests_meeting_every_slo() {
        let outputs = vec![
            ok(1, 3, 0.1, vec![0.05, 0.05], 0.0), // tpot 50 ms, e2el 200 ms
            ok(1, 3, 0.5, vec![0.05, 0.05], 0.0), // ttft too slow
            ok(1, 3, 0.1, vec![0.2, 0.2], 0.0),   // tpot 200 ms too slow
        ];
        let slo = GoodputConfig::parse(&["ttft:200".into(), "tpot:100".into()]).unwrap();
        let (m, _) = calculate_metrics(&outputs, 2.0, &[99.0], &slo);
        assert_eq!(m.request_goodput, 0.5);
    }

    #[test]
    fn goodput_parse_refuses_bad_pairs() {
        assert!(GoodputConfig::parse(&["ttft".into()]).is_err());
        assert!(GoodputConfig::parse(&["latency:5".into()]).is_err());
        assert!(GoodputConfig::parse(&["tpot:-1".into()]).is_err());
        assert!(GoodputConfig::parse(&["tpot:x".into()]).is_err());
        let c = GoodputConfig::parse(&["e2el:1500".into()]).unwrap();
        assert_eq!(c.e2el_ms, Some(1500.0));
    }

    #[test]
    fn peak_tokens_and_concurrency() {
        // A: [0, 1.5), tokens at 0.2, 0.7, 1.2, 1.5.  B: [1.5, 2.5), tokens at 2.0, 2.5.
        // C: [0.1, 0.3), token at 0.3.  Bucket 0 holds 0.2, 0.7, 0.3 -> 3 tokens.
        let outputs = vec![
            ok(1, 4, 0.2, vec![0.5, 0.5, 0.3], 0.0),
            ok(1, 2, 0.5, vec![0.5], 1.5),
            ok(1, 1, 0.2, vec![], 0.1),
        ];
        let (m, _) = calculate_metrics(&outputs, 3.0, &[99.0], &GoodputConfig::default());
        assert_eq!(m.max_output_tokens_per_s, 3.0);
        // Seconds: A in 0 and 1, B in 1 and 2, C in 0: two in each of 0 and 1.
        assert_eq!(m.max_concurrent_requests, 2);
    }

    /// One request `[start, end)` with a single token at its end.
    fn interval(start: f64, end: f64) -> RequestFuncOutput {
        ok(1, 1, end - start, vec![], start)
    }

    fn peak_requests(intervals: &[(f64, f64)]) -> usize {
        let outputs: Vec<_> = intervals.iter().map(|&(s, e)| interval(s, e)).collect();
        peak_figures(&outputs).1
    }

    #[test]
    fn peak_concurrency_counts_requests_per_second_as_vllm() {
        // Three requests one after another inside second 0: never two at
        // once, but all three are active in second 0.
        assert_eq!(peak_requests(&[(0.0, 0.2), (0.3, 0.5), (0.6, 0.9)]), 3);
        // Touching at 1.0: the first ends in second 1 (floor(1.0) = 1).
        assert_eq!(peak_requests(&[(0.0, 1.0), (1.0, 1.5)]), 2);
        // A long request [0, 2.5) meets [1.2, 1.4) in second 1 and [2.1, 2.2)
        // in second 2: two per second, never three.
        assert_eq!(peak_requests(&[(0.0, 2.5), (1.2, 1.4), (2.1, 2.2)]), 2);
        // Seconds count from the first start, not from zero: starts at 10.5
        // and 11.4 share bucket 0 ([10.5, 11.5)); 11.6 is in bucket 1.
        assert_eq!(
            peak_requests(&[(10.5, 10.6), (11.4, 11.45), (11.6, 11.7)]),
            2
        );
        // Failed requests take no part.
        let mut failed = interval(0.0, 0.5);
        failed.success = false;
        assert_eq!(peak_figures(&[interval(0.0, 0.5), failed]).1, 1);
        assert_eq!(peak_figures(&[]), (0.0, 0));
    }
}
