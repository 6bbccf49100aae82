//! `quill logits`: raw logits as JSON, for conformance checks.

use anyhow::Result;
use quill::model::Logits;

use super::{parse_ids, ModelArgs};

/// Arguments of `quill logits`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Token ids, comma-separated (e.g. 1,2,3).
    #[arg(long, value_name = "IDS", required = true)]
    tokens: String,
    /// Feed the tokens one at a time instead of as one sequence.
    #[arg(long)]
    serial: bool,
    /// Also print the logits after every token (`"steps"`).
    #[arg(long)]
    all: bool,
}

pub fn run(a: Args) -> Result<()> {
    let ids = parse_ids(&a.tokens)?;
    if ids.is_empty() {
        anyhow::bail!("--tokens is empty: give at least one token id");
    }
    let (model, _) = a.model.load()?;
    model.check_tokens(&ids)?;
    let mut state = model.new_state();
    let v = model.info().dims.vocab;
    let steps: Vec<Vec<f32>> = if a.serial {
        let mut out = Vec::new();
        for &t in &ids {
            out.push(model.forward(&[t], &mut state, Logits::Last)?);
        }
        out
    } else if a.all {
        let flat = model.forward(&ids, &mut state, Logits::All)?;
        flat.chunks(v).map(|c| c.to_vec()).collect()
    } else {
        vec![model.forward(&ids, &mut state, Logits::Last)?]
    };
    let last = steps.last().cloned().unwrap_or_default();
    let mut obj = serde_json::json!({ "logits": last });
    if a.all {
        obj["steps"] = serde_json::json!(steps);
    }
    outln!("{obj}");
    Ok(())
}
