//! `pagoda bench perplexity` flags, named after llama.cpp's `llama-perplexity`
//! (`-c`, `--chunks`), the tool the field quotes quantized-model quality with.

use std::path::PathBuf;

use pagoda_engine::EngineArgs;

/// Perplexity of the model over a text file, scored as `llama-perplexity`
/// scores it, so the two tools' figures on one GGUF compare directly.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("model", |a| a.required(true)))]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The text to score (UTF-8), e.g. wikitext-2's test split.
    #[arg(long, value_name = "PATH")]
    pub text_file: PathBuf,
    /// Tokens per chunk (llama-perplexity's `-c`); the second half of each
    /// chunk is scored, with the first half as its context.
    #[arg(long, default_value_t = 512)]
    pub context_length: usize,
    /// Score at most this many chunks (llama-perplexity's `--chunks`).
    #[arg(long)]
    pub max_chunks: Option<usize>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub output_json: Option<PathBuf>,
}
