//! Command-line front end: argument parsing and the subcommands.

mod generate;
mod info;
mod load;
mod logits;
mod state;
mod tokenize;
mod write;

use clap::{Parser, Subcommand};

pub use load::ModelArgs;

/// Quill: chat and write stories with RWKV language models, on your CPU.
#[derive(Parser)]
#[command(name = "quill", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Continue a prompt, streaming the text to stdout.
    Generate(generate::Args),
    /// Print the model's logits for a list of token ids, as JSON (conformance checks).
    Logits(logits::Args),
    /// Turn text into token ids (or ids back into text) as the model would.
    Tokenize(tokenize::Args),
    /// Show a model's version, size, dtype and state size.
    Info(info::Args),
    /// Inspect or compare state snapshots.
    State(state::Args),
    /// Write stories from prompt files, chapter by chapter (resumable).
    Write(write::Args),
}

/// Parses the command line and runs the subcommand; returns the exit code.
pub fn run() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(a) => generate::run(a).map(|_| 0),
        Command::Logits(a) => logits::run(a).map(|_| 0),
        Command::Tokenize(a) => tokenize::run(a).map(|_| 0),
        Command::Info(a) => info::run(a).map(|_| 0),
        Command::State(a) => state::run(a),
        Command::Write(a) => write::run(a).map(|_| 0),
    }
}

/// Parses `1,2,3` (spaces allowed) into token ids.
pub fn parse_ids(s: &str) -> anyhow::Result<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>().map_err(|_| {
                anyhow::anyhow!("`{t}` is not a token id (expected numbers like 1,2,3)")
            })
        })
        .collect()
}
