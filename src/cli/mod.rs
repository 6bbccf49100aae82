//! Command-line front end: argument parsing and the subcommands.

/// `println!` for command output that treats a closed pipe (`quill info M
/// | head -1`) as the reader being done, as `generate` does: exit quietly
/// with success instead of panicking. Other write errors are returned.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(anyhow::Error::new(e).context("writing to stdout"));
        }
    }};
}

mod bench;
mod chat;
mod convert;
mod generate;
mod info;
mod load;
mod logits;
mod perplexity;
mod state;
mod tokenize;
mod tui;
mod write;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use load::ModelArgs;

/// Quill: chat and write stories with RWKV language models, on your CPU.
#[derive(Parser)]
#[command(name = "quill", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size difference between variants is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Chat with a model in the terminal (or answer lines piped to stdin).
    Chat(chat::Args),
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
    /// Measure prefill and decode speed against the machine's own limits.
    Bench(bench::Args),
    /// Convert a checkpoint (.pth or .safetensors) to safetensors.
    Convert(convert::Args),
    /// Score a text file: mean negative log-likelihood and perplexity.
    Perplexity(perplexity::Args),
    /// Write stories from prompt files, chapter by chapter (resumable).
    Write(write::Args),
    /// Full-screen terminal app: chat and story writing side by side.
    Tui(tui::Args),
}

/// Parses the command line and runs the subcommand; returns the exit code.
pub fn run() -> anyhow::Result<i32> {
    let mut cmd = allow_negative_numbers(Cli::command());
    let matches = cmd
        .try_get_matches_from_mut(std::env::args_os())
        .unwrap_or_else(|e| exit_on(e));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| exit_on(e.format(&mut cmd)));
    match cli.command {
        Command::Chat(a) => chat::run(a).map(|_| 0),
        Command::Generate(a) => generate::run(a).map(|_| 0),
        Command::Logits(a) => logits::run(a).map(|_| 0),
        Command::Tokenize(a) => tokenize::run(a).map(|_| 0),
        Command::Info(a) => info::run(a).map(|_| 0),
        Command::State(a) => state::run(a),
        Command::Bench(a) => bench::run(a).map(|_| 0),
        Command::Convert(a) => convert::run(a).map(|_| 0),
        Command::Perplexity(a) => perplexity::run(a).map(|_| 0),
        Command::Write(a) => write::run(a).map(|_| 0),
        Command::Tui(a) => tui::run(a).map(|_| 0),
    }
}

/// Exits as clap would (`--help` and `--version` print as they do), but
/// with a usage mistake said on one line, as every other error is (see
/// `main`): clap's own message spreads it over several, with a blank line
/// and a tip, which scripts reading stderr cannot rely on. The usage line
/// it names stays, in brackets.
fn exit_on(e: clap::Error) -> ! {
    // `quill` alone shows the whole help, which is not a mistake to sum up.
    if !e.use_stderr()
        || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    {
        e.exit();
    }
    let text = e.render().to_string();
    let mut parts: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("For more information") {
            continue;
        }
        match line.strip_prefix("Usage: ") {
            Some(usage) => parts.push(format!("(usage: {usage}; see --help)")),
            None => parts.push(line.trim_start_matches("error: ").to_string()),
        }
    }
    eprintln!("quill: error: {}", parts.join(" "));
    std::process::exit(2);
}

/// Lets every option that takes a value take a negative number
/// (`--presence -0.5`, `--temperature -1`, `-n -1`), in every subcommand.
/// Without it clap reads `-0.5` as an unknown flag and says so, instead
/// of the option's own check saying what range it wants. No option of
/// quill is spelt like a number, so nothing is lost.
fn allow_negative_numbers(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        if a.get_action().takes_values() {
            a.allow_negative_numbers(true)
        } else {
            a
        }
    })
    .mut_subcommands(allow_negative_numbers)
}

/// Context naming the file an error is about, for errors that may not.
pub trait PathContext<T> {
    /// Adds "`what` `path`" as context, unless the error's message already
    /// names `path` (the library's I/O and format errors do): otherwise
    /// the path is said twice, `loading x: x: not a safetensors file`.
    fn path_context(self, what: &str, path: &std::path::Path) -> anyhow::Result<T>;
}

impl<T, E> PathContext<T> for Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn path_context(self, what: &str, path: &std::path::Path) -> anyhow::Result<T> {
        self.map_err(|e| {
            let shown = path.display().to_string();
            if e.to_string().contains(&shown) {
                anyhow::Error::new(e)
            } else {
                anyhow::Error::new(e).context(format!("{what} {shown}"))
            }
        })
    }
}

/// Checks, before the work whose result it will hold, that a file can be
/// saved at `path` (named `what` in the message): its folder exists and
/// it is not itself a folder. Otherwise a typo in the path would be found
/// only once a whole generation or conversion had run.
pub fn check_output_path(path: &std::path::Path, what: &str) -> anyhow::Result<()> {
    if path.is_dir() {
        anyhow::bail!(
            "{what} {} is a folder: give the path of a file in it",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        let problem = if dir.exists() {
            "is not a folder"
        } else {
            "does not exist"
        };
        anyhow::bail!(
            "{what} {}: {} {problem}; create the folder first or choose another path",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Parses `1,2,3` (spaces allowed) into token ids; `[1, 2, 3]`, as
/// `quill tokenize` prints them, too.
pub fn parse_ids(s: &str) -> anyhow::Result<Vec<u32>> {
    let t = s.trim();
    let s = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(t);
    // Nothing at all is an empty list (the command says whether that will
    // do); an empty item between commas is a mistake, not nothing.
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(str::trim)
        .map(|t| {
            if t.is_empty() {
                anyhow::bail!(
                    "`{}` has an empty item between commas: give token ids like 1,2,3",
                    s.trim()
                );
            }
            t.parse::<u32>().map_err(|_| {
                anyhow::anyhow!("`{t}` is not a token id (expected numbers like 1,2,3)")
            })
        })
        .collect()
}
