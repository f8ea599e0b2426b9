//! `pagoda generate`: offline generation. All prompts enter the engine
//! together; results come out in input order, as JSON lines or as text.

use std::io::Write;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use pagoda_engine::{generate_all, EngineHandle, FinalOutput, SamplingParams};
use serde::Serialize;
use serde_json::json;

use crate::cli::GenerateArgs;
use crate::serve::{log_kv_cache, resolve_model};

/// One prompt as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum GenPrompt {
    Text(String),
    Ids(Vec<u32>),
}

/// The prompts in the order they appeared, from their argument indices.
pub fn ordered_prompts(texts: Vec<(usize, String)>, ids: Vec<(usize, Vec<u32>)>) -> Vec<GenPrompt> {
    let mut all: Vec<(usize, GenPrompt)> = texts
        .into_iter()
        .map(|(i, t)| (i, GenPrompt::Text(t)))
        .chain(ids.into_iter().map(|(i, v)| (i, GenPrompt::Ids(v))))
        .collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, p)| p).collect()
}

/// `--json` output: one line per prompt (per sample when n > 1).
#[derive(Debug, Serialize)]
pub struct JsonLine<'a> {
    pub prompt_token_ids: &'a [u32],
    pub output_token_ids: &'a [u32],
    pub text: &'a str,
    pub finish_reason: &'static str,
    /// Per generated token: the top K `[token_id, logprob]` pairs, highest first.
    pub logprobs: Option<Vec<Vec<(u32, f32)>>>,
}

pub fn run(args: GenerateArgs, prompts: Vec<GenPrompt>) -> Result<()> {
    if prompts.is_empty() {
        bail!("give at least one prompt: --prompt TEXT or --prompt-ids 1,2,3 (repeatable)");
    }
    let (model, name) = resolve_model(args.engine.model.as_deref())?;
    let config = args.engine.engine_config(model.clone(), Some(name));
    tracing::info!("Loading model {}", model.display());
    let engine = EngineHandle::start(config)?;
    log_kv_cache(engine.model_info());
    let result = generate(&engine, &args, &prompts);
    engine.shutdown();
    result
}

fn sampling_params(args: &GenerateArgs, vocab_size: usize) -> Result<SamplingParams> {
    let params = SamplingParams {
        n: args.n,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        min_p: args.min_p,
        seed: args.engine.seed,
        ignore_eos: args.ignore_eos,
        max_tokens: Some(args.max_tokens),
        logprobs: args.logprobs,
        ..SamplingParams::default()
    };
    params
        .validate(vocab_size)
        .map_err(|e| anyhow!("--{}: {}", e.param.replace('_', "-"), e.message))?;
    Ok(params)
}

/// Token ids of each prompt (text is tokenized; `--chat` wraps it in the template).
fn tokenize_prompts(
    engine: &EngineHandle,
    args: &GenerateArgs,
    prompts: &[GenPrompt],
) -> Result<Vec<Vec<u32>>> {
    let vocab = engine.model_info().vocab_size;
    prompts
        .iter()
        .map(|p| match p {
            GenPrompt::Ids(ids) => {
                if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
                    bail!("--prompt-ids: token id {id} is out of vocabulary (size {vocab})");
                }
                Ok(ids.clone())
            }
            GenPrompt::Text(text) => {
                let tokenizer = engine
                    .tokenizer()
                    .ok_or_else(|| anyhow!("this model has no tokenizer: use --prompt-ids"))?;
                if args.chat {
                    let template = engine
                        .chat_template()
                        .ok_or_else(|| anyhow!("--chat: this model has no chat template"))?;
                    let rendered = template
                        .render(&[json!({"role": "user", "content": text})], true, None)
                        .context("cannot render the chat template")?;
                    tokenizer
                        .encode(&rendered, false)
                        .context("cannot tokenize the prompt")
                } else {
                    tokenizer
                        .encode(text, true)
                        .context("cannot tokenize the prompt")
                }
            }
        })
        .collect()
}

fn generate(engine: &EngineHandle, args: &GenerateArgs, prompts: &[GenPrompt]) -> Result<()> {
    let params = sampling_params(args, engine.model_info().vocab_size)?;
    let token_ids = tokenize_prompts(engine, args, prompts)?;
    let max_len = engine.model_info().max_model_len;
    for (i, ids) in token_ids.iter().enumerate() {
        if ids.is_empty() {
            bail!("prompt {} is empty", i + 1);
        }
        if ids.len() >= max_len {
            bail!(
                "prompt {} has {} tokens; the model's context length is {max_len}",
                i + 1,
                ids.len()
            );
        }
    }
    let start = Instant::now();
    let inputs = token_ids
        .into_iter()
        .map(|ids| (ids, params.clone()))
        .collect();
    let outputs = generate_all(engine, inputs).context("generation failed")?;
    let elapsed = start.elapsed().as_secs_f64();

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (i, (prompt, output)) in prompts.iter().zip(&outputs).enumerate() {
        if args.json {
            write_json(&mut out, output, args.logprobs)?;
        } else {
            write_text(&mut out, engine, i, prompt, output)?;
        }
    }
    out.flush()?;
    let generated: usize = outputs
        .iter()
        .flat_map(|o| &o.samples)
        .map(|s| s.token_ids.len())
        .sum();
    eprintln!(
        "Generated {generated} tokens for {} prompts in {elapsed:.2}s ({:.1} tokens/s)",
        outputs.len(),
        generated as f64 / elapsed.max(1e-9)
    );
    Ok(())
}

fn write_json(out: &mut impl Write, output: &FinalOutput, logprobs: Option<usize>) -> Result<()> {
    for s in &output.samples {
        let line = JsonLine {
            prompt_token_ids: &output.prompt_token_ids,
            output_token_ids: &s.token_ids,
            text: &s.text,
            finish_reason: s.finish_reason.map_or("stop", |r| r.as_str()),
            logprobs: logprobs.map(|k| {
                s.logprobs
                    .iter()
                    .map(|t| t.top.iter().take(k).copied().collect())
                    .collect()
            }),
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
    }
    Ok(())
}

fn write_text(
    out: &mut impl Write,
    engine: &EngineHandle,
    i: usize,
    prompt: &GenPrompt,
    output: &FinalOutput,
) -> Result<()> {
    let prompt_text = match prompt {
        GenPrompt::Text(t) => t.clone(),
        GenPrompt::Ids(ids) => engine
            .tokenizer()
            .and_then(|t| t.decode(ids, false).ok())
            .unwrap_or_else(|| format!("{ids:?}")),
    };
    writeln!(
        out,
        "=== Prompt {} ({} tokens) ===\n{prompt_text}",
        i + 1,
        output.prompt_token_ids.len()
    )?;
    let many = output.samples.len() > 1;
    for (j, s) in output.samples.iter().enumerate() {
        let label = if many {
            format!("{}.{}", i + 1, j + 1)
        } else {
            format!("{}", i + 1)
        };
        writeln!(
            out,
            "=== Output {label} ({} tokens, finish: {}) ===\n{}\n",
            s.token_ids.len(),
            s.finish_reason.map_or("stop", |r| r.as_str()),
            s.text
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagoda_engine::{FinalSample, FinishReason, TokenLogprobs};

    #[test]
    fn prompts_keep_command_line_order() {
        let p = ordered_prompts(
            vec![(2, "a".into()), (6, "b".into())],
            vec![(4, vec![1, 2])],
        );
        assert_eq!(
            p,
            vec![
                GenPrompt::Text("a".into()),
                GenPrompt::Ids(vec![1, 2]),
                GenPrompt::Text("b".into())
            ]
        );
    }

    #[test]
    fn json_lines_have_the_documented_fields() {
        let output = FinalOutput {
            prompt_token_ids: vec![1, 2],
            num_cached_tokens: 0,
            samples: vec![FinalSample {
                token_ids: vec![5],
                text: "x".into(),
                logprobs: vec![TokenLogprobs {
                    token_id: 5,
                    logprob: -0.5,
                    rank: 1,
                    top: vec![(5, -0.5), (6, -2.5), (7, -3.0)],
                }],
                finish_reason: Some(FinishReason::Length),
            }],
            metrics: None,
            prompt_logprobs: None,
        };
        let mut buf = Vec::new();
        write_json(&mut buf, &output, Some(2)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            v,
            json!({"prompt_token_ids": [1, 2], "output_token_ids": [5], "text": "x",
                   "finish_reason": "length", "logprobs": [[[5, -0.5], [6, -2.5]]]})
        );
        let mut buf = Vec::new();
        write_json(&mut buf, &output, None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert!(v["logprobs"].is_null());
    }
}
