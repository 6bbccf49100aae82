//! `quill perplexity`: how well a model predicts a text.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use quill::eval::perplexity;

use super::ModelArgs;

/// Arguments of `quill perplexity`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file to score.
    file: PathBuf,
    /// Tokens per sequence-mode chunk (the state carries across chunks).
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.chunk == 0 {
        anyhow::bail!("--chunk must be at least 1 token (default 256)");
    }
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{} is not valid UTF-8 text: convert it to UTF-8 (e.g. iconv -t UTF-8)",
            a.file.display()
        )
    })?;
    let (model, tokenizer) = a.model.load()?;
    let tokens = tokenizer.encode(&text);
    let bar = if std::io::stderr().is_terminal() && tokens.len() > 2048 {
        let b = indicatif::ProgressBar::new(tokens.len() as u64 - 1);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} tokens {per_sec} ETA {eta}",
            )
            .expect("template"),
        );
        Some(b)
    } else {
        None
    };
    let t0 = std::time::Instant::now();
    let report = perplexity(&model, &tokens, a.chunk, |done| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = t0.elapsed().as_secs_f64();
    let bytes_scored = text
        .len()
        .saturating_sub(tokenizer.decode_bytes(&tokens[..1])?.len());
    let nats_per_byte = report.mean_nll * report.tokens as f64 / bytes_scored.max(1) as f64;
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["nats_per_byte"] = serde_json::json!(nats_per_byte);
        v["bits_per_byte"] = serde_json::json!(nats_per_byte / std::f64::consts::LN_2);
        v["tokens_per_s"] = serde_json::json!(report.tokens as f64 / secs.max(1e-9));
        outln!("{v}");
    } else {
        outln!("tokens        {}", report.tokens);
        outln!("mean NLL      {:.4} nats/token", report.mean_nll);
        outln!("perplexity    {:.3}", report.perplexity);
        outln!(
            "bits/byte     {:.4}",
            nats_per_byte / std::f64::consts::LN_2
        );
        eprintln!("[{:.1} tokens/s]", report.tokens as f64 / secs.max(1e-9));
    }
    Ok(())
}
