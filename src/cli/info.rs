//! `quill info`: what a model file holds.

use std::path::PathBuf;

use anyhow::{Context, Result};
use quill::model::Model;

use super::PathContext;

/// Arguments of `quill info`.
#[derive(clap::Args)]
pub struct Args {
    /// Model file (.safetensors or .pth); default: the built-in model.
    #[arg(value_name = "MODEL")]
    model: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let model = match &a.model {
        Some(path) => Model::load(path).path_context("loading", path)?,
        None => quill::model::default::load_default().context("loading the built-in model")?,
    };
    let i = model.info();
    let d = &i.dims;
    let tokenizer = super::load::choose_tokenizer(&model, None)
        .map(|k| k.to_string())
        .unwrap_or_else(|_| "unknown".into());
    if a.json {
        let v = serde_json::json!({
            "version": i.version.number(),
            "layers": d.n_layer,
            "width": d.n_embd,
            "heads": d.n_head,
            "head_size": d.head_size,
            "vocab": d.vocab,
            "ffn": d.ffn,
            "dtype": i.dtype.to_string(),
            "parameters": i.n_params,
            "state_bytes": i.state_bytes,
            "tokenizer": tokenizer,
            "metadata": i.metadata,
        });
        outln!("{v}");
        return Ok(());
    }
    outln!("file        {}", i.origin);
    outln!("version     {}", i.version);
    outln!("layers      {}", d.n_layer);
    outln!("width       {}", d.n_embd);
    outln!("heads       {} × {}", d.n_head, d.head_size);
    outln!("ffn         {}", d.ffn);
    outln!("vocab       {}", d.vocab);
    outln!("dtype       {}", i.dtype);
    outln!("parameters  {} ({})", i.n_params, human_count(i.n_params));
    outln!(
        "state       {} bytes ({:.2} MiB)",
        i.state_bytes,
        i.state_bytes as f64 / (1 << 20) as f64
    );
    outln!("tokenizer   {tokenizer}");
    for (k, v) in &i.metadata {
        outln!("meta.{k:<7} {v}");
    }
    Ok(())
}

fn human_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}
