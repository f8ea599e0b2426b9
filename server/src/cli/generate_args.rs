//! `pagoda generate` flags: prompts, sampling and output format.

use clap::Args;

use pagoda_engine::EngineArgs;

/// One `--prompt-ids` value: comma-separated token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIds(pub Vec<u32>);

pub fn parse_token_ids(s: &str) -> Result<TokenIds, String> {
    let ids: Result<Vec<u32>, _> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::parse::<u32>)
        .collect();
    match ids {
        Ok(ids) if !ids.is_empty() => Ok(TokenIds(ids)),
        Ok(_) => Err("expected comma-separated token ids, e.g. 1,2,3".into()),
        Err(e) => Err(format!(
            "`{s}`: {e} (expected comma-separated token ids, e.g. 1,2,3)"
        )),
    }
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// A text prompt; repeat for several (all run together, batched).
    #[arg(long = "prompt", value_name = "TEXT")]
    pub prompts: Vec<String>,

    /// A prompt given as token ids, e.g. `--prompt-ids 1,2,3`; repeatable.
    #[arg(long = "prompt-ids", value_name = "IDS", value_parser = parse_token_ids)]
    pub prompt_ids: Vec<TokenIds>,

    /// Wrap each text prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,

    /// Most tokens to generate per sample.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_tokens: usize,

    /// Sampling temperature; 0 is greedy.
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    pub temperature: f32,

    /// Nucleus sampling: keep the smallest set of tokens with this much probability.
    #[arg(long, value_name = "P", default_value_t = 1.0)]
    pub top_p: f32,

    /// Keep only the K most likely tokens (0 or -1: all).
    #[arg(
        long,
        value_name = "K",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub top_k: i32,

    /// Drop tokens less likely than P times the most likely one.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub min_p: f32,

    /// Samples per prompt.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub n: usize,

    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,

    /// Also report the top K logprobs of each generated token.
    #[arg(long, value_name = "K")]
    pub logprobs: Option<usize>,

    /// One JSON object per prompt (per sample when n > 1) on stdout.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_parse() {
        assert_eq!(parse_token_ids("1,2, 3"), Ok(TokenIds(vec![1, 2, 3])));
        assert_eq!(parse_token_ids("7"), Ok(TokenIds(vec![7])));
        assert!(parse_token_ids("").is_err());
        assert!(parse_token_ids("1,x").is_err());
        assert!(parse_token_ids("-1").is_err());
    }
}
