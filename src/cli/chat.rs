//! `quill chat`: the terminal front end of [`ChatEngine`]. Everything a
//! command does lives in the library; this file reads lines (rustyline
//! when both ends are a terminal, plain stdin otherwise), prints replies as
//! they stream, and turns Ctrl-C into "stop this reply".

use std::borrow::Cow;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use quill::chat::commands::{parse_input, Command, Input, COMMANDS};
use quill::chat::engine::{existing_session, list_sessions, SET_KEYS};
use quill::chat::{
    paths, ChatEngine, ChatOptions, LoadableSessions, OpeningReport, Outcome, Persona, Reply, Think,
};
use quill::sampler::{Sampler, SamplerSettings};
use quill::session::{Session, StopReason};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{
    Cmd, ConditionalEventHandler, Context, Editor, Event, EventContext, EventHandler, KeyEvent,
    Movement, RepeatCount,
};

use super::generate::SamplerArgs;
use super::ModelArgs;

/// Arguments of `quill chat`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Persona: a TOML file, or a built-in one (assistant, cowriter, g1-reasoning).
    #[arg(long, value_name = "FILE|NAME", default_value = "assistant")]
    persona: String,
    /// Resume a session saved earlier with /save NAME.
    #[arg(long, value_name = "NAME")]
    session: Option<String>,
    /// Reply length limit in tokens (default: the persona's, else 500).
    #[arg(short = 'n', long = "max-tokens", value_name = "N")]
    max_tokens: Option<usize>,
    /// G1 models: reason before answering (on) or not (off). Default: the persona's.
    #[arg(long, value_name = "on|off", value_parser = parse_think)]
    think: Option<Think>,
    /// Neither read nor write the cache of pre-filled persona openings.
    #[arg(long)]
    no_cache: bool,
    /// Load sessions saved with other weights of the same shape.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    sampler: SamplerArgs,
}

fn parse_think(s: &str) -> Result<Think, String> {
    match Think::parse(s) {
        Some(t @ (Think::On | Think::Off)) => Ok(t),
        _ => Err("expected on or off".into()),
    }
}

/// Terminal styling: ANSI colours only for a terminal and without NO_COLOR.
#[derive(Clone, Copy)]
struct Ui {
    /// Interactive: names before turns, blank lines between them.
    interactive: bool,
    /// stdout is a terminal (model output is then made harmless).
    tty_out: bool,
    colour_out: bool,
    colour_err: bool,
}

impl Ui {
    fn paint(on: bool, code: &str, text: &str) -> String {
        if on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn out(&self, code: &str, text: &str) -> String {
        Ui::paint(self.colour_out, code, text)
    }

    /// A status note on stderr (dim).
    /// Notes quote model text (a loaded session's tail), so they go
    /// through [`printable`] like replies do.
    fn note(&self, text: &str) {
        let text = printable(text);
        eprintln!("{}", Ui::paint(self.colour_err, "2", &format!("[{text}]")));
    }

    /// A problem the chat survives (red).
    fn problem(&self, text: &str) {
        let text = printable(text);
        eprintln!(
            "{}",
            Ui::paint(self.colour_err, "31", &format!("error: {text}"))
        );
    }
}

fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Runs `quill chat`: loads the persona and model, pre-fills (or restores)
/// the opening, optionally resumes `--session`, then reads lines until
/// `/quit`, Ctrl-D or the end of stdin.
pub fn run(a: Args) -> Result<()> {
    if a.max_tokens == Some(0) {
        anyhow::bail!("--max-tokens must be at least 1");
    }
    let persona = Persona::find(&a.persona)?;
    let (model, tokenizer) = a.model.load()?;
    // A persona without [sampler] gets the official chat demo's settings.
    let base = persona.sampler.clone().unwrap_or(SamplerSettings {
        top_p: 0.3,
        ..SamplerSettings::default()
    });
    let settings = a.sampler.apply(base)?;
    settings
        .check_vocab(model.info().dims.vocab)
        .with_context(|| format!("sampler settings (persona {} and the flags)", persona.name))?;
    let seed = a.sampler.seed_or_clock();
    let session = Session::new(model, tokenizer, Sampler::new(settings, seed));
    let data_dir = paths::data_dir();
    let options = ChatOptions {
        max_tokens: a.max_tokens,
        think: a.think,
        sessions_dir: data_dir.as_deref().map(paths::sessions_dir),
        cache_dir: if a.no_cache { None } else { paths::cache_dir() },
        force: a.force,
    };

    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let ui = Ui {
        interactive,
        tty_out: std::io::stdout().is_terminal(),
        colour_out: interactive && !no_color(),
        colour_err: std::io::stderr().is_terminal() && !no_color(),
    };
    // A mistyped --session fails before the opening is pre-filled.
    if let Some(name) = &a.session {
        existing_session(options.sessions_dir.as_deref(), name)?;
    }
    let (mut engine, report) = ChatEngine::start(session, persona, options)?;
    // Resumed before the banner, so it shows what the chat goes on with.
    let loaded = match &a.session {
        Some(name) => {
            let msg = engine.load(name)?;
            resume_overrides(&mut engine, &a)?;
            Some(msg)
        }
        None => None,
    };
    let info = engine.session().model().info();
    let model_name = Path::new(&info.origin)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seed_note = match &a.session {
        // A resumed session keeps its random generator, so it continues
        // exactly as it would have: the seed is not what decides.
        Some(name) => format!(
            "seed: the random state saved in session {name}{}",
            a.sampler
                .seed
                .map(|s| format!(" (--seed {s} not used: /set seed={s} reseeds)"))
                .unwrap_or_default()
        ),
        None => format!("seed {seed}"),
    };
    ui.note(&format!(
        "quill chat: {model_name} ({}, {} tokenizer) · persona {} · think {} · {seed_note}",
        info.version,
        engine.session().tokenizer().kind(),
        engine.persona().name,
        engine.format().think.as_str()
    ));
    ui.note(&opening_note(&report));
    if let Some(msg) = loaded {
        ui.note(&msg);
    }
    if interactive {
        ui.note("type a message; /help lists commands; Ctrl-C stops a reply; Ctrl-D quits");
        interactive_loop(&mut engine, data_dir.as_deref(), ui)
    } else {
        piped_loop(&mut engine, ui)
    }
}

/// After `--session`: the flags given on the command line win over what
/// the session restored (as they win over the persona); flags not given
/// keep the session's values. The seed is the exception (see `run`).
fn resume_overrides(engine: &mut ChatEngine, a: &Args) -> Result<()> {
    let settings = a
        .sampler
        .apply(engine.session().sampler().settings.clone())?;
    engine.set_sampler(settings)?;
    if let Some(t) = a.think {
        engine.set_think(t);
    }
    if let Some(n) = a.max_tokens {
        engine.set_max_tokens(n);
    }
    Ok(())
}

fn opening_note(r: &OpeningReport) -> String {
    let mut s = if r.tokens == 0 {
        "no opening conversation".to_string()
    } else if r.from_cache {
        format!(
            "opening: {} tokens loaded from cache in {:.2}s",
            r.tokens, r.seconds
        )
    } else {
        format!(
            "opening: {} tokens prefilled in {:.2}s ({:.0} tokens/s){}",
            r.tokens,
            r.seconds,
            r.tokens as f64 / r.seconds.max(1e-9),
            if r.cache_path.is_some() && r.cache_problem.is_none() {
                "; cached for next time"
            } else {
                ""
            }
        )
    };
    if let Some(p) = &r.cache_problem {
        s.push_str(&format!("; {p}"));
    }
    s
}

/// Lines from stdin, one message (or command) each; a line ending in `\`
/// continues on the next. No prompts and no colours: the output is for a
/// pipe or a file.
fn piped_loop(engine: &mut ChatEngine, ui: Ui) -> Result<()> {
    let stdin = std::io::stdin().lock();
    let mut pending = String::new();
    for line in stdin.lines() {
        let line = line.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                anyhow::anyhow!("stdin is not valid UTF-8 text: send UTF-8 (iconv -t UTF-8 converts other encodings)")
            } else {
                anyhow::Error::new(e).context("reading stdin")
            }
        })?;
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push('\n');
            continue;
        }
        pending.push_str(&line);
        let input = std::mem::take(&mut pending);
        if !handle_line(engine, &input, ui, None)? {
            return Ok(());
        }
    }
    if !pending.trim().is_empty() {
        handle_line(engine, &pending, ui, None)?;
    }
    Ok(())
}

/// Carries out one line and prints the result; `Ok(false)` means quit.
/// Errors the chat can go on from are printed, not returned.
fn handle_line(
    engine: &mut ChatEngine,
    line: &str,
    ui: Ui,
    cancel: Option<&AtomicBool>,
) -> Result<bool> {
    // Name the speaker before the reply streams in (interactive only).
    let replies = match parse_input(line) {
        Ok(Input::Message(_)) => true,
        Ok(Input::Command(Command::Retry)) => engine.undo_depth() > 0,
        _ => false,
    };
    let continues = matches!(parse_input(line), Ok(Input::Command(Command::Continue)))
        && engine.undo_depth() > 0;
    let mut out = std::io::stdout().lock();
    if ui.interactive && (replies || continues) {
        // A continuation goes on from the reply above: mark it as such.
        let label = if continues {
            "…".to_string()
        } else {
            format!("{}:", engine.format().assistant)
        };
        write!(out, "{} ", ui.out("1;36", &label))?;
        out.flush()?;
    }
    if let Some(c) = cancel {
        c.store(false, Ordering::SeqCst);
    }
    let mut write_error = None;
    let mut printed = String::new();
    let result = engine.handle(line, &mut |piece| {
        let shown = if ui.tty_out {
            printable(piece)
        } else {
            Cow::Borrowed(piece)
        };
        if let Err(e) = out.write_all(shown.as_bytes()).and_then(|_| out.flush()) {
            write_error = Some(e);
            return false;
        }
        printed.push_str(piece);
        !cancel.is_some_and(|c| c.load(Ordering::SeqCst))
    });
    if let Some(c) = cancel {
        c.store(false, Ordering::SeqCst);
    }
    if let Some(e) = write_error {
        // A closed pipe (`| head`) is a normal way to stop reading.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(false);
        }
        return Err(e).context("writing to stdout");
    }
    match result {
        Ok(Outcome::Nothing) => {}
        Ok(Outcome::Quit) => return Ok(false),
        Ok(Outcome::Message(m)) => {
            // Messages quote model text (session tails): made harmless too.
            let m = if ui.tty_out {
                printable(&m)
            } else {
                Cow::Borrowed(m.as_str())
            };
            writeln!(out, "{m}")?;
        }
        Ok(Outcome::Reply(r)) => {
            if !printed.ends_with('\n') && (!printed.is_empty() || replies || continues) {
                writeln!(out)?;
            }
            out.flush()?;
            drop(out);
            ui.note(&reply_note(&r));
            if ui.interactive {
                // A blank line between one exchange and the next prompt.
                println!();
            }
        }
        Err(e) => {
            if ui.interactive && (replies || continues) {
                writeln!(out)?;
            }
            drop(out);
            ui.problem(&e.to_string());
        }
    }
    Ok(true)
}

/// Model output shown on a terminal must not be able to drive it: control
/// characters (an escape sequence could clear the screen or retitle the
/// window) are shown as U+FFFD; line breaks and tabs pass.
fn printable(s: &str) -> Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\n' && c != '\t';
    if s.contains(bad) {
        Cow::Owned(
            s.chars()
                .map(|c| if bad(c) { '\u{FFFD}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

fn reply_note(r: &Reply) -> String {
    let why = match &r.stop {
        StopReason::Cancelled => "; stopped — /continue goes on, /retry redoes it",
        StopReason::Length => "; length limit — /continue goes on",
        _ => "",
    };
    format!(
        "{} tokens in {:.2}s, {:.1} tokens/s{why}",
        r.generated,
        r.seconds,
        r.tokens_per_s()
    )
}

/// rustyline's line editor with history, completion and multi-line input;
/// Ctrl-C while a reply streams sets a flag the reply checks per token.
fn interactive_loop(engine: &mut ChatEngine, data_dir: Option<&Path>, ui: Ui) -> Result<()> {
    let cancel = Arc::new(AtomicBool::new(false));
    // While a line is edited the terminal is in raw mode and Ctrl-C is a
    // key, not a signal; the handler only sees Ctrl-C during a reply.
    // A second Ctrl-C before the first was acted on (say, in a long
    // prefill) quits, so the program can always be stopped.
    signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        cancel.clone(),
    )
    .context("installing the Ctrl-C handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone())
        .context("installing the Ctrl-C handler")?;

    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .bracketed_paste(true)
        .completion_type(rustyline::CompletionType::List)
        .max_history_size(5000)
        .context("history size")?
        .build();
    let mut rl: Editor<ChatHelper, FileHistory> =
        Editor::with_config(config).context("starting the line editor")?;
    rl.set_helper(Some(ChatHelper {
        sessions_dir: engine.sessions_dir().map(Path::to_path_buf),
        loadable: engine.loadable_sessions(),
        colour: ui.colour_out,
    }));
    rl.bind_sequence(
        KeyEvent::ctrl('C'),
        EventHandler::Conditional(Box::new(CtrlCClearsLine)),
    );
    let history = data_dir.map(paths::history_file);
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // A missing history file is the normal first run.
        let _ = rl.load_history(h);
    }
    let mut history_warned = false;
    loop {
        let prompt = format!("{}: ", engine.format().user);
        match rl.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = rl.add_history_entry(line.as_str());
                    if let Some(h) = &history {
                        if let Err(e) = rl.append_history(h) {
                            if !history_warned {
                                ui.problem(&format!("cannot write history {}: {e}", h.display()));
                                history_warned = true;
                            }
                        }
                    }
                }
                // `\` + Enter continued the line (see the validator).
                let text = line.replace("\\\n", "\n");
                if !handle_line(engine, &text, ui, Some(&cancel))? {
                    break;
                }
            }
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading input"),
        }
    }
    Ok(())
}

/// Ctrl-C clears a line that has text (as in a shell) and quits on an empty one.
struct CtrlCClearsLine;

impl ConditionalEventHandler for CtrlCClearsLine {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        if ctx.line().is_empty() {
            None // the default: Interrupted, which ends the chat
        } else {
            Some(Cmd::Kill(Movement::WholeBuffer))
        }
    }
}

/// Completion of commands, session names, `/set` keys; multi-line input.
struct ChatHelper {
    /// `/save` completes every name in use (saving over one is a choice).
    sessions_dir: Option<PathBuf>,
    /// `/load` completes only what it would load.
    loadable: Option<LoadableSessions>,
    colour: bool,
}

impl Completer for ChatHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        if !before.starts_with('/') || before.contains('\n') {
            return Ok((pos, Vec::new()));
        }
        let pairs = |words: Vec<String>, prefix: &str| -> Vec<Pair> {
            words
                .into_iter()
                .filter(|w| w.starts_with(prefix))
                .map(|w| Pair {
                    display: w.clone(),
                    replacement: w,
                })
                .collect()
        };
        let Some((cmd, _)) = before.split_once(' ') else {
            let names = COMMANDS.iter().map(|(n, _, _)| n.to_string()).collect();
            return Ok((0, pairs(names, before)));
        };
        let start = before.rfind(' ').map(|i| i + 1).unwrap_or(0);
        let word = &before[start..];
        let words: Vec<String> = match cmd {
            "/load" => self
                .loadable
                .as_ref()
                .map(LoadableSessions::names)
                .unwrap_or_default(),
            "/save" => self
                .sessions_dir
                .as_deref()
                .map(list_sessions)
                .unwrap_or_default(),
            "/think" => vec!["on".into(), "off".into()],
            "/set" => SET_KEYS.iter().map(|k| format!("{k}=")).collect(),
            _ => Vec::new(),
        };
        Ok((start, pairs(words, word)))
    }
}

impl Hinter for ChatHelper {
    type Hint = String;
}

impl Highlighter for ChatHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        if self.colour {
            Cow::Owned(format!("\x1b[1;32m{prompt}\x1b[0m"))
        } else {
            Cow::Borrowed(prompt)
        }
    }
}

impl Validator for ChatHelper {
    /// A line ending in `\` is not finished: Enter inserts a line break.
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if ctx.input().ends_with('\\') {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl rustyline::Helper for ChatHelper {}

#[cfg(test)]
mod tests {
    use super::*;
    use rustyline::history::DefaultHistory;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/random")
            .join(name)
    }

    /// A snapshot of a fresh session on `model`, as `/save` (or, with
    /// `story`, `quill tui`'s Write mode) would write it.
    fn save_session(model: &Arc<quill::model::Model>, path: &Path, story: bool) {
        use quill::snapshot::{Snapshot, MODE_KEY, MODE_WRITE};
        use quill::tokenizer::{Tokenizer, TokenizerKind};
        let tok = Arc::new(Tokenizer::new(TokenizerKind::Bytes).unwrap());
        let sampler = Sampler::new(SamplerSettings::default(), 1);
        let mut session = Session::new(model.clone(), tok, sampler);
        session.feed_text("User: hi\n\n").unwrap();
        let mut snap = Snapshot::capture(&session);
        if story {
            snap.meta.extra.insert(MODE_KEY.into(), MODE_WRITE.into());
        }
        snap.save(path).unwrap();
    }

    /// A sessions folder as a chat on the v7 fixture finds it: chat
    /// sessions `alpha` and `beta`, a story `tale` from Write mode, a
    /// session `v6` of another model and a file `junk.qs` that is no
    /// snapshot; and a helper completing in it.
    fn helper(tag: &str) -> ChatHelper {
        let dir =
            std::env::temp_dir().join(format!("quill-chat-complete-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let v7 = Arc::new(quill::model::Model::load(&fixture("rand-v7.safetensors")).unwrap());
        let v6 = Arc::new(quill::model::Model::load(&fixture("rand-v6.safetensors")).unwrap());
        save_session(&v7, &dir.join("alpha.qs"), false);
        save_session(&v7, &dir.join("beta.qs"), false);
        save_session(&v7, &dir.join("tale.qs"), true);
        save_session(&v6, &dir.join("v6.qs"), false);
        std::fs::write(dir.join("junk.qs"), b"not a snapshot").unwrap();
        ChatHelper {
            loadable: Some(LoadableSessions::new(dir.clone(), v7.info().clone(), false)),
            sessions_dir: Some(dir),
            colour: false,
        }
    }

    fn complete(h: &ChatHelper, line: &str) -> (usize, Vec<String>) {
        let hist = DefaultHistory::new();
        let ctx = Context::new(&hist);
        let (start, pairs) = h.complete(line, line.len(), &ctx).unwrap();
        (start, pairs.into_iter().map(|p| p.replacement).collect())
    }

    fn remove(h: ChatHelper) {
        if let Some(dir) = &h.sessions_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn chat_completion_of_commands_sessions_and_keys() {
        let h = helper("keys");
        assert_eq!(
            complete(&h, "/re"),
            (0, vec!["/reset".into(), "/retry".into()])
        );
        assert_eq!(complete(&h, "/load a"), (6, vec!["alpha".into()]));
        assert_eq!(
            complete(&h, "/think o").1,
            vec!["on".to_string(), "off".into()]
        );
        assert_eq!(
            complete(&h, "/set temperature=1 top_").1,
            vec!["top_p=".to_string(), "top_k=".into()]
        );
        assert!(complete(&h, "hello /re").1.is_empty());
        remove(h);
    }

    /// `/load` refuses a story saved from Write mode, a session of another
    /// model and a file that is no session: Tab must not offer them.
    /// `/save` still completes every name in use.
    #[test]
    fn chat_load_completion_offers_only_what_load_takes() {
        let h = helper("load");
        assert_eq!(
            complete(&h, "/load ").1,
            vec!["alpha".to_string(), "beta".into()]
        );
        assert!(complete(&h, "/load t").1.is_empty(), "the story");
        assert_eq!(
            complete(&h, "/save ").1,
            ["alpha", "beta", "junk", "tale", "v6"].map(String::from)
        );
        remove(h);
    }

    #[test]
    fn chat_output_cannot_drive_the_terminal() {
        assert_eq!(
            printable("a\x1b[2Jb\n\tc\u{9b}"),
            "a\u{FFFD}[2Jb\n\tc\u{FFFD}"
        );
        assert!(matches!(printable("plain\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn chat_think_flag_and_reply_note() {
        assert_eq!(parse_think("on"), Ok(Think::On));
        assert!(parse_think("auto").is_err());
        let r = Reply {
            text: String::new(),
            raw: String::new(),
            generated: 10,
            closing: 2,
            refed: 0,
            stop: StopReason::Cancelled,
            seconds: 0.5,
        };
        let n = reply_note(&r);
        assert!(n.contains("20.0 tokens/s") && n.contains("stopped"), "{n}");
    }
}
