//! `pagoda bench perplexity`: the model's perplexity over a text, computed
//! from the engine's `prompt_logprobs` (the same forward pass and matmul
//! mode that serving uses) and scored as llama.cpp's `llama-perplexity`
//! does: the text is tokenized once and cut into chunks of
//! `--context-length` tokens; a chunk's first token becomes BOS when the
//! tokenizer adds one; the tokens of each chunk's second half are scored,
//! each predicted from everything before it in the chunk.

pub mod args;

use anyhow::Context;
use pagoda_engine::{generate_all, EngineHandle, FinalOutput, SamplingParams};
use serde_json::json;

pub use args::PerplexityArgs;

/// What a perplexity run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityResult {
    /// Negative log-likelihoods of the scored tokens, in text order.
    pub nll: Vec<f64>,
    pub chunks: usize,
    pub context_length: usize,
}

impl PerplexityResult {
    /// `exp(mean nll)`.
    pub fn perplexity(&self) -> f64 {
        crate::stats::mean(&self.nll).exp()
    }

    /// llama-perplexity's `+/-`: the standard error of the mean nll carried
    /// through `exp` (`ppl * se`).
    pub fn uncertainty(&self) -> f64 {
        let n = self.nll.len() as f64;
        if n < 2.0 {
            return f64::NAN;
        }
        let mean = crate::stats::mean(&self.nll);
        let var = self.nll.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        self.perplexity() * (var / n).sqrt()
    }

    pub fn summary(&self) -> String {
        format!(
            "Scored {} tokens in {} chunks of {}\nFinal estimate: PPL = {:.4} +/- {:.5}",
            self.nll.len(),
            self.chunks,
            self.context_length,
            self.perplexity(),
            self.uncertainty()
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "perplexity": self.perplexity(),
            "uncertainty": self.uncertainty(),
            "scored_tokens": self.nll.len(),
            "chunks": self.chunks,
            "context_length": self.context_length,
            "mean_nll": crate::stats::mean(&self.nll),
        })
    }
}

/// Starts the engine, scores the text, prints, writes --output-json.
pub fn run_perplexity(args: &PerplexityArgs) -> anyhow::Result<PerplexityResult> {
    let text = std::fs::read_to_string(&args.text_file)
        .with_context(|| format!("reading --text-file {}", args.text_file.display()))?;
    let handle = EngineHandle::start(crate::bench_engine_config(&args.engine)?)
        .context("starting the engine")?;
    let result = run_on(&handle, args, &text);
    handle.shutdown();
    let result = result?;
    println!("{}", result.summary());
    if let Some(path) = &args.output_json {
        let text = serde_json::to_string_pretty(&result.to_json())?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(result)
}

/// The scoring on a running engine.
pub fn run_on(
    handle: &EngineHandle,
    args: &PerplexityArgs,
    text: &str,
) -> anyhow::Result<PerplexityResult> {
    let n_ctx = args.context_length;
    if n_ctx < 4 {
        anyhow::bail!("--context-length must be at least 4");
    }
    let info = handle.model_info();
    if n_ctx > info.max_model_len {
        anyhow::bail!(
            "--context-length {n_ctx} exceeds max_model_len {}",
            info.max_model_len
        );
    }
    let tokenizer = handle
        .tokenizer()
        .context("perplexity needs the model's tokenizer")?;
    let tokens = tokenizer
        .encode(text, true)
        .context("tokenizing the text")?;
    // As llama-perplexity: BOS starts each chunk when the tokenizer adds one.
    let bos = info
        .bos_token_id
        .filter(|b| tokens.first() == Some(b) && tokens.len() > 1);
    let chunks = chunk_prompts(&tokens, n_ctx, bos, args.max_chunks);
    if chunks.is_empty() {
        anyhow::bail!(
            "the text has {} tokens: fewer than one chunk of --context-length {n_ctx}",
            tokens.len()
        );
    }
    let count = chunks.len();
    let requests = chunks.into_iter().map(|c| (c, scoring_params())).collect();
    let outputs = generate_all(handle, requests).context("scoring failed")?;
    let mut nll = Vec::with_capacity(count * n_ctx / 2);
    for out in &outputs {
        nll.extend(scored_nll(out, n_ctx)?);
    }
    Ok(PerplexityResult {
        nll,
        chunks: count,
        context_length: n_ctx,
    })
}

/// Whole chunks of `n_ctx` tokens, the first of each replaced by `bos`.
fn chunk_prompts(
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
) -> Vec<Vec<u32>> {
    tokens
        .chunks_exact(n_ctx)
        .take(max_chunks.unwrap_or(usize::MAX))
        .map(|c| {
            let mut c = c.to_vec();
            if let Some(b) = bos {
                c[0] = b;
            }
            c
        })
        .collect()
}

/// One token generated; the logprob of each prompt token (rank included).
fn scoring_params() -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens: Some(1),
        ignore_eos: true,
        prompt_logprobs: Some(0),
        ..SamplingParams::default()
    }
}

/// `-logprob` of the tokens at positions `n_ctx / 2 + 1 .. n_ctx`.
fn scored_nll(out: &FinalOutput, n_ctx: usize) -> anyhow::Result<Vec<f64>> {
    let lps = out
        .prompt_logprobs
        .as_ref()
        .context("the engine returned no prompt logprobs")?;
    if lps.len() != n_ctx {
        anyhow::bail!(
            "the engine returned {} prompt logprobs for {n_ctx} tokens",
            lps.len()
        );
    }
    lps[n_ctx / 2 + 1..]
        .iter()
        .map(|lp| {
            lp.as_ref()
                .map(|t| -(t.logprob as f64))
                .context("a prompt position without a logprob")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagoda_engine::TokenLogprobs;

    #[test]
    fn chunks_are_whole_and_start_with_bos() {
        let tokens: Vec<u32> = (0..10).collect();
        let c = chunk_prompts(&tokens, 4, Some(99), None);
        assert_eq!(c, vec![vec![99, 1, 2, 3], vec![99, 5, 6, 7]]);
        assert_eq!(
            chunk_prompts(&tokens, 4, None, Some(1)),
            vec![vec![0, 1, 2, 3]]
        );
        assert!(chunk_prompts(&tokens, 11, None, None).is_empty());
    }

    #[test]
    fn the_second_half_is_scored() {
        let lp = |v: f32| {
            Some(TokenLogprobs {
                token_id: 0,
                logprob: v,
                rank: 1,
                top: vec![],
            })
        };
        let out = FinalOutput {
            prompt_token_ids: vec![0; 6],
            num_cached_tokens: 0,
            samples: vec![],
            metrics: None,
            prompt_logprobs: Some(vec![None, lp(-9.0), lp(-9.0), lp(-9.0), lp(-1.0), lp(-2.0)]),
        };
        // n_ctx 6: position 3 is the last context token; 4 and 5 are scored.
        assert_eq!(scored_nll(&out, 6).unwrap(), vec![1.0, 2.0]);
        assert!(scored_nll(&out, 8).is_err());
        let r = PerplexityResult {
            nll: vec![1.0, 2.0],
            chunks: 1,
            context_length: 6,
        };
        assert!((r.perplexity() - 1.5f64.exp()).abs() < 1e-12);
        // se = sqrt(0.5 / 2) = 0.5.
        assert!((r.uncertainty() - 0.5 * 1.5f64.exp()).abs() < 1e-12);
    }
}
