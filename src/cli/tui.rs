//! `quill tui`: the full-screen app. This file only reads the options,
//! loads the persona, prompt file and model — so a bad file is reported as
//! a one-line error before the screen is taken over — and hands them to
//! [`quill::tui::run`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use quill::chat::{paths, Persona};
use quill::tui::engine::EngineConfig;
use quill::tui::TuiOptions;
use quill::writer::prompt::Prompt;

use super::ModelArgs;

/// Arguments of `quill tui`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Chat persona: a .toml file (as `quill chat --persona`) or a built-in name.
    #[arg(long, value_name = "FILE|NAME", default_value = "assistant")]
    persona: String,
    /// Story prompt file for Write mode (as `quill write`); default: an untitled story.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// Random seed (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Chat reply length limit in tokens (default: the persona's).
    #[arg(short = 'n', long = "max-tokens", value_name = "N")]
    max_tokens: Option<usize>,
    /// Do not cache the persona's pre-filled opening.
    #[arg(long)]
    no_cache: bool,
}

/// Runs `quill tui`.
pub fn run(a: Args) -> Result<()> {
    if a.max_tokens == Some(0) {
        anyhow::bail!("--max-tokens must be at least 1");
    }
    let persona = Persona::find(&a.persona)?;
    let prompt = match &a.prompt_file {
        Some(p) => Prompt::load(p, None)?,
        None => Prompt::untitled("Untitled story"),
    };
    // --model, then the prompt file's `model`, then $QUILL_MODEL, as in
    // `quill write`.
    let mut model_args = a.model.clone();
    if model_args.model.is_none() && std::env::var_os("QUILL_MODEL").is_none() {
        model_args.model = prompt.model.clone();
    }
    let (model, tokenizer) = model_args.load()?;
    // Ban lists naming ids this model lacks: said here, before the screen
    // is taken over, not at the first reply.
    let vocab = model.info().dims.vocab;
    if let Some(s) = &persona.sampler {
        s.check_vocab(vocab)
            .with_context(|| format!("persona {}", persona.name))?;
    }
    if let Some(s) = &prompt.sampler {
        s.check_vocab(vocab)
            .with_context(|| format!("sampler settings for {}", prompt.path.display()))?;
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!("quill tui needs a terminal (for scripts, use quill chat or quill write)");
    }
    let data = paths::data_dir();
    let engine = EngineConfig {
        model,
        tokenizer,
        persona,
        prompt,
        seed,
        max_tokens: a.max_tokens,
        sessions_dir: data.as_deref().map(paths::sessions_dir),
        cache_dir: if a.no_cache { None } else { paths::cache_dir() },
    };
    quill::tui::run(TuiOptions { engine }).context("quill tui")
}
