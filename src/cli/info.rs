//! `quill info`: what a model file holds.

use std::path::PathBuf;

use anyhow::{Context, Result};
use quill::model::Model;

/// Arguments of `quill info`.
#[derive(clap::Args)]
pub struct Args {
    /// Model file (.safetensors or .pth).
    #[arg(value_name = "MODEL")]
    model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let model = Model::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
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
        println!("{v}");
        return Ok(());
    }
    println!("file        {}", i.origin);
    println!("version     {}", i.version);
    println!("layers      {}", d.n_layer);
    println!("width       {}", d.n_embd);
    println!("heads       {} × {}", d.n_head, d.head_size);
    println!("ffn         {}", d.ffn);
    println!("vocab       {}", d.vocab);
    println!("dtype       {}", i.dtype);
    println!("parameters  {} ({})", i.n_params, human_count(i.n_params));
    println!(
        "state       {} bytes ({:.2} MiB)",
        i.state_bytes,
        i.state_bytes as f64 / (1 << 20) as f64
    );
    println!("tokenizer   {tokenizer}");
    for (k, v) in &i.metadata {
        println!("meta.{k:<7} {v}");
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
