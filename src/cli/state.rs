//! `quill state`: inspect and compare snapshots.

use std::path::PathBuf;

use anyhow::Result;
use quill::snapshot::{diff, Snapshot};

/// Arguments of `quill state`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Print a snapshot's metadata (model, tokens, sampler, recent text).
    Info {
        /// Snapshot file.
        file: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Tell whether two snapshots hold the same state, and where they first differ.
    Diff {
        /// First snapshot.
        a: PathBuf,
        /// Second snapshot.
        b: PathBuf,
    },
}

/// Runs the subcommand; `diff` exits 1 when the snapshots differ (like `cmp`).
pub fn run(a: Args) -> Result<i32> {
    match a.cmd {
        Cmd::Info { file, json } => {
            let snap = Snapshot::load(&file)?;
            let rows = snap.describe();
            if json {
                let map: serde_json::Map<String, serde_json::Value> = rows
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                outln!("{}", serde_json::Value::Object(map));
            } else {
                for (k, v) in rows {
                    // The tail is model text, and any value may come from a
                    // stranger's file: quoted so no control character
                    // reaches the terminal.
                    let v = if k == "text_tail" || v.contains(char::is_control) {
                        format!("{v:?}")
                    } else {
                        v
                    };
                    outln!("{k:<18} {v}");
                }
            }
            Ok(0)
        }
        Cmd::Diff { a, b } => {
            let (sa, sb) = (Snapshot::load(&a)?, Snapshot::load(&b)?);
            match diff(&sa, &sb) {
                None => {
                    outln!(
                        "same: {} and {} hold the same state",
                        a.display(),
                        b.display()
                    );
                    Ok(0)
                }
                Some(d) => {
                    outln!("different: {d}");
                    Ok(1)
                }
            }
        }
    }
}
