//! Model and tokenizer selection shared by every subcommand.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use quill::kernels::WeightDtype;
use quill::model::{LoadOptions, Model};
use quill::tokenizer::{Tokenizer, TokenizerKind};

use super::PathContext;

/// Options for choosing a model and its tokenizer.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model file (.safetensors or official .pth). Default: $QUILL_MODEL, else the built-in model.
    #[arg(short, long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Tokenizer: world, bytes or 20b (default: from the model's metadata, else its vocabulary size).
    #[arg(long, value_name = "NAME")]
    pub tokenizer: Option<TokenizerKind>,
    /// Worker threads (default: physical cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Convert the weight matrices at load (the embedding stays as stored): f32, f16, bf16 or int8 (default: as stored).
    #[arg(long, value_name = "DTYPE")]
    pub dtype: Option<WeightDtype>,
}

impl ModelArgs {
    /// The model path: `--model`, else `$QUILL_MODEL` (None: the built-in model).
    pub fn path(&self) -> Option<PathBuf> {
        self.model.clone().or_else(|| {
            std::env::var_os("QUILL_MODEL")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
    }

    /// Loads the model and picks its tokenizer.
    pub fn load(&self) -> Result<(Arc<Model>, Arc<Tokenizer>)> {
        if let Some(n) = self.threads {
            quill::kernels::set_threads(check_threads(n)?);
        }
        let opts = LoadOptions { dtype: self.dtype };
        let model = match self.path() {
            Some(path) => Model::load_with(&path, &opts).path_context("loading", &path)?,
            None => quill::model::default::load_default_with(&opts)
                .context("loading the built-in model")?,
        };
        let kind = choose_tokenizer(&model, self.tokenizer)?;
        let tokenizer = Tokenizer::new(kind)?;
        Ok((Arc::new(model), Arc::new(tokenizer)))
    }
}

/// The most `--threads` accepted on a machine with `cpus` CPUs: 4 × the
/// CPUs, and at least 8.
///
/// Threads beyond the CPUs only add hand-offs (and a decoding team spins
/// between passes, so oversubscribed threads steal each other's time), yet
/// a few times the CPUs leaves room to experiment. Thousands of threads,
/// each with its own stack and scratch buffers, exhaust memory before any
/// work is done. The floor of 8 lets a 1- or 2-CPU VM still try a few.
pub fn max_threads(cpus: usize) -> usize {
    cpus.saturating_mul(4).max(8)
}

/// Checks a `--threads` value: at least 1, at most [`max_threads`].
pub fn check_threads(n: usize) -> Result<usize> {
    let cpus = quill::kernels::cpus();
    let max = max_threads(cpus);
    if n == 0 {
        anyhow::bail!("--threads must be at least 1 (leave it out for one per physical core)");
    }
    if n > max {
        anyhow::bail!(
            "--threads {n} is too many for this machine's {cpus} CPUs: give at most {max} (4 × the CPUs, never fewer than 8), or leave it out for one thread per physical core"
        );
    }
    Ok(n)
}

/// `--tokenizer`, else the model's `tokenizer` metadata, else its vocab
/// size. A tokenizer with more ids than the model has vocabulary rows is
/// refused: most text would encode to ids the model cannot read.
pub fn choose_tokenizer(model: &Model, flag: Option<TokenizerKind>) -> Result<TokenizerKind> {
    let info = model.info();
    let fits = |kind: TokenizerKind, named_by: &str| -> Result<TokenizerKind> {
        let ids = Tokenizer::new(kind)?.vocab_size();
        if ids > info.dims.vocab {
            let fix = match Tokenizer::for_vocab_size(info.dims.vocab) {
                Some(k) => format!("use --tokenizer {k}"),
                None => "pass the tokenizer the model was trained with".into(),
            };
            anyhow::bail!(
                "{named_by} the {kind} tokenizer ({ids} ids), but the model has only {} vocabulary rows: {fix}",
                info.dims.vocab
            );
        }
        Ok(kind)
    };
    if let Some(k) = flag {
        return fits(k, "--tokenizer asks for");
    }
    if let Some(hint) = &info.tokenizer_hint {
        let kind = hint
            .parse::<TokenizerKind>()
            .map_err(|_| anyhow::anyhow!("the model's metadata names tokenizer `{hint}`, which Quill does not know; pass --tokenizer world|bytes|20b"))?;
        return fits(kind, "the model's metadata names");
    }
    Tokenizer::for_vocab_size(info.dims.vocab).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot tell the tokenizer of a model with {} vocabulary rows; pass --tokenizer world|bytes|20b",
            info.dims.vocab
        )
    })
}
