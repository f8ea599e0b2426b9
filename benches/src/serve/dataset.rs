//! The prompts of a run: vLLM's `random` dataset (synthetic prompts of exact
//! token lengths) and `sharegpt` (the first two turns of real conversations).

use std::path::Path;

use anyhow::Context;
use futures::{stream, StreamExt, TryStreamExt};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde_json::Value;

use super::tokenizer::TextTokenizer;

/// One request of the dataset (vLLM's `SampleRequest`).
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRequest {
    pub prompt: String,
    pub prompt_len: usize,
    pub expected_output_len: usize,
    pub request_id: String,
}

/// How many tokenizer round trips run at once when tokenizing over HTTP.
const TOKENIZE_CONCURRENCY: usize = 32;

/// The `random` dataset's knobs (vLLM's `--random-*` flags).
#[derive(Debug, Clone, PartialEq)]
pub struct RandomDatasetConfig {
    pub input_len: usize,
    pub output_len: usize,
    /// Lengths are uniform in `[floor(len * (1 - r)), ceil(len * (1 + r))]`.
    pub range_ratio: f64,
    /// A random prefix shared by every prompt.
    pub prefix_len: usize,
    pub seed: u64,
}

/// Per-request input and output lengths, uniform integers around the
/// means; `real_input_len` is the input length less the special tokens the
/// server adds. Output lengths are at least 1.
pub fn sample_lengths(
    rng: &mut impl Rng,
    num_requests: usize,
    range_ratio: f64,
    real_input_len: usize,
    output_len: usize,
) -> anyhow::Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&range_ratio) {
        anyhow::bail!("--random-range-ratio must be in [0, 1), got {range_ratio}");
    }
    let input_low = (real_input_len as f64 * (1.0 - range_ratio)).floor() as usize;
    let input_high = (real_input_len as f64 * (1.0 + range_ratio)).ceil() as usize;
    let output_low = ((output_len as f64 * (1.0 - range_ratio)).floor() as usize).max(1);
    let output_high = ((output_len as f64 * (1.0 + range_ratio)).ceil() as usize).max(1);
    let input_lens = (0..num_requests)
        .map(|_| rng.random_range(input_low..=input_high))
        .collect();
    let output_lens = (0..num_requests)
        .map(|_| rng.random_range(output_low..=output_high))
        .collect();
    Ok((input_lens, output_lens))
}

/// vLLM's `gen_prompt_decode_to_target_len`: decode the ids, re-encode the
/// text, and pad (with random pool tokens) or truncate until re-encoding
/// gives `target` tokens, at most `max_retry` times. N tokens do not always
/// decode to text that encodes back to N tokens (`[' calls', 'here']` ->
/// `[' call', 'sh', 'ere']`). Returns the text, its ids, and the residual
/// mismatch (0 when it converged).
pub async fn gen_prompt_decode_to_target_len<T: TextTokenizer>(
    tokenizer: &T,
    mut token_sequence: Vec<u32>,
    target: usize,
    max_retry: usize,
    pool: &[u32],
    rng: &mut impl Rng,
) -> anyhow::Result<(String, Vec<u32>, i64)> {
    let mut remaining = max_retry;
    loop {
        let prompt = tokenizer.decode(&token_sequence).await?;
        token_sequence = tokenizer.encode(&prompt, false).await?;
        if remaining == 0 || token_sequence.len() == target {
            let mismatch = token_sequence.len() as i64 - target as i64;
            return Ok((prompt, token_sequence, mismatch));
        }
        if token_sequence.len() < target {
            let missing = target - token_sequence.len();
            token_sequence.extend((0..missing).map(|_| pool[rng.random_range(0..pool.len())]));
        } else {
            token_sequence.truncate(target);
        }
        remaining -= 1;
    }
}

/// vLLM's random dataset: a shared random prefix, then for request `i`,
/// `input_len[i]` consecutive pool tokens from a random offset, decoded to
/// text and adjusted to the exact length. `num_special_tokens` (a BOS the
/// server adds) is taken off the input length so the server counts
/// `input_len`. Reproducible for a seed.
pub async fn sample_random_requests<T: TextTokenizer>(
    tokenizer: &T,
    pool: &[u32],
    num_special_tokens: usize,
    config: &RandomDatasetConfig,
    num_requests: usize,
    request_id_prefix: &str,
) -> anyhow::Result<Vec<SampleRequest>> {
    if pool.is_empty() {
        anyhow::bail!("no tokens to build random prompts from");
    }
    let real_input_len = config.input_len.saturating_sub(num_special_tokens);
    let min_input = (real_input_len as f64 * (1.0 - config.range_ratio)).floor() as usize;
    if config.prefix_len + min_input < 1 {
        anyhow::bail!(
            "--random-input-len {} is too small: less the tokenizer's {num_special_tokens} special \
             tokens and with --random-range-ratio {}, a prompt could be empty",
            config.input_len,
            config.range_ratio
        );
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let (input_lens, output_lens) = sample_lengths(
        &mut rng,
        num_requests,
        config.range_ratio,
        real_input_len,
        config.output_len,
    )?;
    let offsets: Vec<usize> = (0..num_requests)
        .map(|_| rng.random_range(0..pool.len()))
        .collect();
    let prefix = if config.prefix_len > 0 {
        let ids = (0..config.prefix_len)
            .map(|_| pool[rng.random_range(0..pool.len())])
            .collect();
        gen_prompt_decode_to_target_len(tokenizer, ids, config.prefix_len, 10, pool, &mut rng)
            .await?
            .1
    } else {
        Vec::new()
    };
    // One seed per request, drawn up front: requests are adjusted
    // concurrently and stay reproducible whatever order they finish in.
    let seeds: Vec<u64> = (0..num_requests).map(|_| rng.random()).collect();
    let results: Vec<(SampleRequest, i64)> = stream::iter(0..num_requests)
        .map(|i| {
            let mut ids = prefix.clone();
            ids.extend((0..input_lens[i]).map(|j| pool[(offsets[i] + i + j) % pool.len()]));
            let target = config.prefix_len + input_lens[i];
            let (seed, output_len) = (seeds[i], output_lens[i]);
            async move {
                let mut rng = StdRng::seed_from_u64(seed);
                let (prompt, ids, mismatch) =
                    gen_prompt_decode_to_target_len(tokenizer, ids, target, 10, pool, &mut rng)
                        .await?;
                let request = SampleRequest {
                    prompt,
                    prompt_len: ids.len() + num_special_tokens,
                    expected_output_len: output_len,
                    request_id: format!("{request_id_prefix}{i}"),
                };
                anyhow::Ok((request, mismatch))
            }
        })
        .buffered(TOKENIZE_CONCURRENCY)
        .try_collect()
        .await?;
    let mismatch: i64 = results.iter().map(|(_, m)| m).sum();
    if mismatch != 0 {
        let sign = if mismatch > 0 { "more" } else { "fewer" };
        eprintln!(
            "WARNING: across all generated prompts, there were {} {sign} tokens than expected after \
             decoding and re-encoding (the tokenizer does not round-trip every sequence).",
            mismatch.abs()
        );
    }
    Ok(results.into_iter().map(|(r, _)| r).collect())
}

/// vLLM's `is_valid_sequence` with its defaults: prompts and outputs of at
/// least 4 tokens, prompts of at most 1024, both together at most 2048.
pub fn is_valid_sequence(
    prompt_len: usize,
    output_len: usize,
    skip_min_output_len_check: bool,
) -> bool {
    let (min_len, max_prompt_len, max_total_len) = (4, 1024, 2048);
    !(prompt_len < min_len
        || (!skip_min_output_len_check && output_len < min_len)
        || prompt_len > max_prompt_len
        || prompt_len + output_len > max_total_len)
}

/// The (prompt, completion) pairs of a ShareGPT-format JSON file: the first
/// two turns of every conversation that has at least two.
pub fn load_sharegpt(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let data: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let entries = data
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{} is not a JSON list of conversations", path.display()))?;
    let turn = |t: &Value| t.get("value").and_then(Value::as_str).map(str::to_string);
    Ok(entries
        .iter()
        .filter_map(|e| {
            let turns = e.get("conversations").and_then(Value::as_array)?;
            Some((turn(turns.first()?)?, turn(turns.get(1)?)?))
        })
        .collect())
}

/// vLLM's ShareGPT sampling: shuffle with the seed, keep conversations whose
/// lengths pass `is_valid_sequence`, the output length being the reply's
/// tokens or `fixed_output_len`; too few valid ones are repeated (oversampled).
pub async fn sample_sharegpt_requests<T: TextTokenizer>(
    tokenizer: &T,
    mut conversations: Vec<(String, String)>,
    num_requests: usize,
    fixed_output_len: Option<usize>,
    seed: u64,
    request_id_prefix: &str,
) -> anyhow::Result<Vec<SampleRequest>> {
    let mut rng = StdRng::seed_from_u64(seed);
    conversations.shuffle(&mut rng);
    let mut samples = Vec::new();
    for batch in conversations.chunks(TOKENIZE_CONCURRENCY) {
        if samples.len() >= num_requests {
            break;
        }
        let lens: Vec<(usize, usize)> = stream::iter(batch)
            .map(|(prompt, completion)| async move {
                let prompt_len = tokenizer.encode(prompt, true).await?.len();
                let output_len = match fixed_output_len {
                    Some(n) => n,
                    None => tokenizer.encode(completion, true).await?.len(),
                };
                anyhow::Ok((prompt_len, output_len))
            })
            .buffered(TOKENIZE_CONCURRENCY)
            .try_collect()
            .await?;
        for ((prompt, _), (prompt_len, output_len)) in batch.iter().zip(lens) {
            if samples.len() < num_requests
                && is_valid_sequence(prompt_len, output_len, fixed_output_len.is_some())
            {
                samples.push(SampleRequest {
                    prompt: prompt.clone(),
                    prompt_len,
                    expected_output_len: output_len,
                    request_id: format!("{request_id_prefix}{}", samples.len()),
                });
            }
        }
    }
    if samples.is_empty() {
        anyhow::bail!(
            "no ShareGPT conversation has valid lengths (prompt 4..=1024 tokens, total <= 2048)"
        );
    }
    if samples.len() < num_requests {
        eprintln!(
            "Oversampling {} valid conversations to {num_requests} requests.",
            samples.len()
        );
        let base = samples.len();
        while samples.len() < num_requests {
            let mut extra = samples[rng.random_range(0..base)].clone();
            extra.request_id = format!("{request_id_prefix}{}", samples.len());
            samples.push(extra);
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words `t<id>` joined by spaces: every id sequence round-trips exactly.
    struct WordTokenizer;

    impl TextTokenizer for WordTokenizer {
        async fn encode(&self, text: &str, add_special_tokens: bool) -> anyhow::Result<Vec<u32>> {
            let mut ids: Vec<u32> = text
                .split_whitespace()
                .map(|w| w.trim_start_matches('t').parse().unwrap_or(0))
                .collect();
            if add_special_tokens {
                ids.insert(0, 1);
            }
            Ok(ids)
        }
        async fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
            Ok(ids
                .iter()
                .map(|i| format!("t{i}"))
                .collect::<Vec<_>>()
                .join(" "))
        }
    }

    /// Like WordTokenizer, but with merges and splits as BPE has them:
    /// `t7 t8` re-encodes as `[7, 80, 81]` (grows), `t3 t4` as `[34]` (shrinks).
    struct MergingTokenizer;

    impl TextTokenizer for MergingTokenizer {
        async fn encode(&self, text: &str, add_special_tokens: bool) -> anyhow::Result<Vec<u32>> {
            let base = WordTokenizer.encode(text, add_special_tokens).await?;
            let mut out: Vec<u32> = Vec::new();
            for (k, &id) in base.iter().enumerate() {
                let prev = k.checked_sub(1).map(|p| base[p]);
                match (prev, id) {
                    (Some(7), 8) => out.extend([80, 81]),
                    (Some(3), 4) => *out.last_mut().unwrap() = 34,
                    _ => out.push(id),
                }
            }
            Ok(out)
        }
        async fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
            WordTokenizer.decode(ids).await
        }
    }

    fn config(seed: u64) -> RandomDatasetConfig {
        RandomDatasetConfig {
            input_len: 40,
            output_len: 20,
            range_ratio: 0.5,
            prefix_len: 0,
            seed,
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn lengths_stay_in_range_and_cover_it() {
        let mut rng = StdRng::seed_from_u64(0);
        let (inp, out) = sample_lengths(&mut rng, 5000, 0.25, 100, 10).unwrap();
        assert!(inp.iter().all(|&n| (75..=125).contains(&n)));
        assert!(out.iter().all(|&n| (7..=13).contains(&n)));
        assert_eq!(*inp.iter().min().unwrap(), 75);
        assert_eq!(*inp.iter().max().unwrap(), 125);
        let mut rng = StdRng::seed_from_u64(0);
        let (inp, out) = sample_lengths(&mut rng, 50, 0.0, 64, 1).unwrap();
        assert!(inp.iter().all(|&n| n == 64) && out.iter().all(|&n| n == 1));
        assert!(sample_lengths(&mut rng, 1, 1.0, 64, 1).is_err());
        // Output lengths never reach 0.
        let (_, out) = sample_lengths(&mut rng, 100, 0.9, 10, 1).unwrap();
        assert!(out.iter().all(|&n| n >= 1));
    }

    #[test]
    fn random_prompts_have_exact_lengths_and_a_seed_reproduces_them() {
        let pool: Vec<u32> = (10..500).collect();
        let run = |seed| {
            block_on(sample_random_requests(
                &WordTokenizer,
                &pool,
                1,
                &config(seed),
                30,
                "r-",
            ))
        };
        let a = run(7).unwrap();
        assert_eq!(a.len(), 30);
        for r in &a {
            // 40 less one BOS, +-50%: the server counts 1 + [19, 59].
            assert!((20..=60).contains(&r.prompt_len), "{}", r.prompt_len);
            assert_eq!(r.prompt.split_whitespace().count() + 1, r.prompt_len);
            assert!((10..=30).contains(&r.expected_output_len));
        }
        assert_eq!(a[3].request_id, "r-3");
        assert_eq!(a, run(7).unwrap());
        assert_ne!(a, run(8).unwrap());
    }

    #[test]
    fn shared_prefix_starts_every_prompt() {
        let pool: Vec<u32> = (10..500).collect();
        let cfg = RandomDatasetConfig {
            prefix_len: 5,
            ..config(1)
        };
        let reqs = block_on(sample_random_requests(
            &WordTokenizer,
            &pool,
            0,
            &cfg,
            4,
            "",
        ))
        .unwrap();
        let head = |p: &str| p.split_whitespace().take(5).collect::<Vec<_>>().join(" ");
        assert!(reqs
            .iter()
            .all(|r| head(&r.prompt) == head(&reqs[0].prompt)));
        assert!(reqs.iter().all(|r| r.prompt_len >= 5 + 20));
    }

    #[test]
    fn adjustment_truncates_growth_and_pads_shrinkage() {
        let mut rng = StdRng::seed_from_u64(0);
        for (start, target) in [(vec![5, 7, 8, 6], 4), (vec![3, 4, 6], 3)] {
            let (text, ids, mismatch) = block_on(gen_prompt_decode_to_target_len(
                &MergingTokenizer,
                start,
                target,
                10,
                &[20],
                &mut rng,
            ))
            .unwrap();
            assert_eq!((ids.len(), mismatch), (target, 0));
            assert_eq!(
                block_on(MergingTokenizer.encode(&text, false)).unwrap(),
                ids
            );
        }
        // With no retries left the residual mismatch is reported.
        let (_, ids, mismatch) = block_on(gen_prompt_decode_to_target_len(
            &MergingTokenizer,
            vec![7, 8],
            2,
            0,
            &[20],
            &mut rng,
        ))
        .unwrap();
        assert_eq!((ids.len(), mismatch), (3, 1));
    }

    #[test]
    fn too_small_inputs_are_refused() {
        let pool = [5u32];
        let cfg = RandomDatasetConfig {
            input_len: 1,
            ..config(0)
        };
        assert!(block_on(sample_random_requests(
            &WordTokenizer,
            &pool,
            1,
            &cfg,
            1,
            ""
        ))
        .is_err());
        assert!(block_on(sample_random_requests(
            &WordTokenizer,
            &[],
            0,
            &config(0),
            1,
            ""
        ))
        .is_err());
    }

    #[test]
    fn sharegpt_filters_and_oversamples() {
        let dir = std::env::temp_dir().join(format!("pagoda-sharegpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sg.json");
        let long = vec!["t5"; 2000].join(" ");
        let json = serde_json::json!([
            {"conversations": [{"from": "human", "value": "t1 t2 t3 t4 t5"}, {"from": "gpt", "value": "t1 t2 t3 t4"}]},
            {"conversations": [{"from": "human", "value": "t1 t2"}, {"from": "gpt", "value": "t1 t2 t3 t4"}]},
            {"conversations": [{"from": "human", "value": long}, {"from": "gpt", "value": "t1 t2 t3 t4"}]},
            {"conversations": [{"from": "human", "value": "only one turn"}]},
            {"id": "no conversations"}
        ]);
        std::fs::write(&path, json.to_string()).unwrap();
        let convs = load_sharegpt(&path).unwrap();
        assert_eq!(convs.len(), 3);
        let reqs = block_on(sample_sharegpt_requests(
            &WordTokenizer,
            convs.clone(),
            3,
            None,
            0,
            "s",
        ))
        .unwrap();
        // Only the first passes: 6 prompt tokens (BOS included), 5 output tokens.
        assert_eq!(reqs.len(), 3);
        assert!(reqs
            .iter()
            .all(|r| r.prompt_len == 6 && r.expected_output_len == 5));
        assert_eq!(reqs[2].request_id, "s2");
        // A fixed output length skips the minimum-output check but not the prompt checks.
        let reqs = block_on(sample_sharegpt_requests(
            &WordTokenizer,
            convs,
            1,
            Some(2),
            0,
            "",
        ))
        .unwrap();
        assert_eq!(reqs[0].expected_output_len, 2);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(is_valid_sequence(4, 4, false) && !is_valid_sequence(3, 4, false));
        assert!(!is_valid_sequence(1000, 1049, false) && is_valid_sequence(1000, 1048, false));
    }
}
