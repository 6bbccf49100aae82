//! `quill tokenize`: text → ids, or ids → text.

use std::path::PathBuf;

use anyhow::{Context, Result};
use quill::tokenizer::{Tokenizer, TokenizerKind};

use super::{parse_ids, ModelArgs};

/// Arguments of `quill tokenize`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["text", "file", "decode"])))]
pub struct Args {
    /// Use this model's tokenizer (default: $QUILL_MODEL, else the built-in model, as every command).
    #[arg(short, long, value_name = "FILE", conflicts_with = "tokenizer")]
    model: Option<PathBuf>,
    /// Tokenizer: world, bytes or 20b (default: the model's).
    #[arg(long, value_name = "NAME")]
    tokenizer: Option<TokenizerKind>,
    /// Text to encode.
    #[arg(long)]
    text: Option<String>,
    /// File whose contents to encode.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Token ids to decode instead (e.g. 1,2,3, or [1,2,3] as encoding prints them).
    #[arg(long, value_name = "IDS")]
    decode: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    // Without --tokenizer, the tokenizer of the model the other commands
    // would load (--model, else $QUILL_MODEL, else the built-in one), so
    // the ids are the ones `generate --tokens` and `logits` take.
    let tok = match a.tokenizer {
        Some(kind) => std::sync::Arc::new(Tokenizer::new(kind)?),
        None => {
            let args = ModelArgs {
                model: a.model.clone(),
                tokenizer: None,
                threads: None,
                dtype: None,
            };
            args.load()?.1
        }
    };
    if let Some(ids) = &a.decode {
        let ids = parse_ids(ids)?;
        let text = tok.decode(&ids)?;
        outln!("{}", serde_json::json!({ "text": text }));
        return Ok(());
    }
    let text = match (&a.text, &a.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            String::from_utf8(bytes).map_err(|_| {
                anyhow::anyhow!(
                    "{} is not valid UTF-8 text: convert it to UTF-8 (e.g. iconv -t UTF-8)",
                    f.display()
                )
            })?
        }
        _ => unreachable!("clap requires one input"),
    };
    let ids = tok.encode(&text);
    outln!("{}", serde_json::json!(ids));
    Ok(())
}
