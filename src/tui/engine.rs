//! The engine thread: owns the model's sessions (a [`ChatEngine`] for Chat,
//! a [`Story`] for Write) and carries out [`Request`]s one at a time,
//! streaming text back as [`Response`]s. Nothing here blocks the UI: the
//! UI thread only ever waits on its event channel.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::chat::engine::{list_sessions, valid_session_name, SNAPSHOT_EXT, UNDO_DEPTH};
use crate::chat::{ChatEngine, ChatError, ChatOptions, Persona, SessionClaims};
use crate::model::Model;
use crate::sampler::{Sampler, SamplerSettings};
use crate::session::{Session, StopReason};
use crate::snapshot::{Snapshot, SnapshotMeta};
use crate::tokenizer::Tokenizer;
use crate::writer::Prompt;

use super::protocol::{Mode, Request, Response, SessionEntry, Settings, Status};
use super::story::Story;

/// The engine thread's name (the panic hook tells it apart by it).
pub const THREAD_NAME: &str = "quill-engine";

/// The last panic on the engine thread, as the panic hook saw it (with
/// its location).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Records a panic of the engine thread, for [`Response::Fatal`].
pub fn note_panic(message: String) {
    if let Ok(mut p) = LAST_PANIC.lock() {
        *p = Some(message);
    }
}

/// What the engine starts with.
pub struct EngineConfig {
    /// The model.
    pub model: Arc<Model>,
    /// Its tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The chat persona (as `quill chat --persona`).
    pub persona: Persona,
    /// The story prompt (as `quill write`'s prompt file).
    pub prompt: Prompt,
    /// Seed of both modes' samplers (a prompt file's own seed wins in Write).
    pub seed: u64,
    /// Reply length limit for Chat (default: the persona's).
    pub max_tokens: Option<usize>,
    /// Where sessions are saved: the same folder as `quill chat` uses.
    pub sessions_dir: Option<PathBuf>,
    /// Where the chat's pre-filled opening is cached (as `quill chat`).
    pub cache_dir: Option<PathBuf>,
}

/// Starts the engine thread. `emit` receives every response; `cancel`
/// stops the generation in progress when set (it is cleared before each
/// request). The thread ends on [`Request::Quit`] or when the returned
/// sender is dropped.
pub fn spawn(
    config: EngineConfig,
    cancel: Arc<AtomicBool>,
    emit: impl Fn(Response) + Send + 'static,
) -> anyhow::Result<(Sender<Request>, JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            // A panic here must not leave the UI waiting for an answer
            // that never comes: report it, and the UI quits with it.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(config, cancel, &emit, rx)
            }));
            if let Err(p) = r {
                let noted = LAST_PANIC.lock().ok().and_then(|mut n| n.take());
                let what = noted
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                emit(Response::Fatal(format!("the engine thread {what}")));
            }
        })?;
    Ok((tx, handle))
}

struct Worker<'a> {
    chat: Option<ChatEngine>,
    story: Option<Story>,
    sessions_dir: Option<PathBuf>,
    cancel: Arc<AtomicBool>,
    emit: &'a dyn Fn(Response),
    tokens_per_s: [f64; 2],
    /// Each mode's tokens in state, kept by its session as it generates,
    /// so each piece of text streamed can carry the count.
    tokens_in_state: [Arc<AtomicU64>; 2],
    session_name: [Option<String>; 2],
    /// Sessions Write mode loaded or saved (the chat keeps its own), so a
    /// save never replaces another session unasked.
    story_claims: SessionClaims,
}

/// Why a save was not done.
enum SaveError {
    /// The name holds another session; the text describes it.
    Taken(String),
    /// Anything else, as the message line shows it.
    Failed(String),
}

fn idx(mode: Mode) -> usize {
    match mode {
        Mode::Chat => 0,
        Mode::Write => 1,
    }
}

fn run(
    config: EngineConfig,
    cancel: Arc<AtomicBool>,
    emit: &dyn Fn(Response),
    rx: Receiver<Request>,
) {
    let mut w = Worker {
        chat: None,
        story: None,
        sessions_dir: config.sessions_dir.clone(),
        cancel,
        emit,
        tokens_per_s: [0.0; 2],
        tokens_in_state: Default::default(),
        session_name: [None, None],
        story_claims: SessionClaims::default(),
    };
    w.start(config);
    // Lets the tmux test check that a panic on this thread restores the
    // terminal and reaches the user.
    if std::env::var("QUILL_TUI_TEST_PANIC").is_ok_and(|v| v == "engine") {
        panic!("QUILL_TUI_TEST_PANIC=engine: panicking on purpose");
    }
    emit(Response::Idle);
    for req in rx {
        w.cancel.store(false, Ordering::SeqCst);
        if req == Request::Quit {
            break;
        }
        if let Err(e) = w.handle(req) {
            emit(Response::Error(e));
        }
        emit(Response::Idle);
    }
}

/// A stop reason in words, for the message line.
pub fn describe_stop(stop: &StopReason) -> String {
    match stop {
        StopReason::Length => "length limit: Ctrl-E continues".into(),
        StopReason::StopString(_) => "end of turn".into(),
        StopReason::EndOfText => "end of text".into(),
        StopReason::Cancelled => "stopped".into(),
    }
}

impl Worker<'_> {
    /// Prepares both modes: the persona's opening for Chat (from the cache
    /// when `quill chat` has filled it), the prompt's opening for Write.
    fn start(&mut self, c: EngineConfig) {
        let emit = self.emit;
        // A persona without [sampler] gets the official chat demo's
        // settings, as in `quill chat`.
        let settings = c.persona.sampler.clone().unwrap_or(SamplerSettings {
            top_p: 0.3,
            ..SamplerSettings::default()
        });
        let mut session = Session::new(
            c.model.clone(),
            c.tokenizer.clone(),
            Sampler::new(settings, c.seed),
        );
        self.tokens_in_state[idx(Mode::Chat)] = session.share_tokens_in_state();
        let options = ChatOptions {
            max_tokens: c.max_tokens,
            think: None,
            sessions_dir: c.sessions_dir.clone(),
            cache_dir: c.cache_dir.clone(),
            force: false,
        };
        match ChatEngine::start(session, c.persona, options) {
            Ok((engine, report)) => {
                self.chat = Some(engine);
                emit(Response::Ready {
                    mode: Mode::Chat,
                    intro: String::new(),
                });
                let how = if report.from_cache {
                    "from the cache"
                } else {
                    "prefilled"
                };
                emit(Response::Notice(format!(
                    "ready: persona opening of {} tokens {how} in {:.1} s",
                    report.tokens, report.seconds
                )));
            }
            Err(e) => emit(Response::Error(format!("chat is unavailable: {e}"))),
        }
        self.send_status(Mode::Chat);
        let settings = c.prompt.sampler.clone().unwrap_or_default();
        let seed = c.prompt.seed.unwrap_or(c.seed);
        match Story::start(c.model, c.tokenizer, c.prompt, settings, seed) {
            Ok(mut story) => {
                self.tokens_in_state[idx(Mode::Write)] = story.share_tokens_in_state();
                emit(Response::Ready {
                    mode: Mode::Write,
                    intro: story.base_text().to_string(),
                });
                self.story = Some(story);
            }
            Err(e) => emit(Response::Error(format!("write is unavailable: {e}"))),
        }
        self.send_status(Mode::Write);
    }

    fn chat(&mut self) -> Result<&mut ChatEngine, String> {
        self.chat
            .as_mut()
            .ok_or_else(|| "chat is unavailable".to_string())
    }

    fn story(&mut self) -> Result<&mut Story, String> {
        self.story
            .as_mut()
            .ok_or_else(|| "write is unavailable".to_string())
    }

    fn handle(&mut self, req: Request) -> Result<(), String> {
        let emit = self.emit;
        let cancel = self.cancel.clone();
        let counts = self.tokens_in_state.clone();
        // Streams a piece and says whether to go on (Esc clears it).
        let stream = move |mode: Mode| {
            let cancel = cancel.clone();
            let count = counts[idx(mode)].clone();
            move |piece: &str| {
                let tokens = count.load(Ordering::Relaxed);
                emit(Response::Text(mode, piece.to_string(), tokens));
                !cancel.load(Ordering::SeqCst)
            }
        };
        match req {
            Request::Send(text) => {
                let mut on = stream(Mode::Chat);
                let r = self
                    .chat()?
                    .send(&text, &mut on)
                    .map_err(|e| e.to_string())?;
                self.finished(Mode::Chat, r.generated, r.tokens_per_s(), &r.stop);
            }
            Request::Retry(Mode::Chat) => {
                let mut on = stream(Mode::Chat);
                let r = self.chat()?.retry(&mut on).map_err(|e| e.to_string())?;
                self.finished(Mode::Chat, r.generated, r.tokens_per_s(), &r.stop);
            }
            Request::Continue(Mode::Chat) => {
                let mut on = stream(Mode::Chat);
                let r = self
                    .chat()?
                    .continue_reply(&mut on)
                    .map_err(|e| e.to_string())?;
                self.finished(Mode::Chat, r.generated, r.tokens_per_s(), &r.stop);
            }
            Request::Undo => {
                let m = self.chat()?.undo().map_err(|e| match e {
                    // The chat's wording names `/undo`, a command the TUI
                    // does not have.
                    ChatError::NothingToUndo => format!(
                        "nothing to undo: Ctrl-Z takes back up to {UNDO_DEPTH} exchanges made since the chat started or was loaded"
                    ),
                    other => other.to_string(),
                })?;
                emit(Response::Undone);
                emit(Response::Notice(m));
                self.send_status(Mode::Chat);
            }
            Request::Reset(Mode::Chat) => {
                let m = self.chat()?.reset();
                emit(Response::WasReset {
                    mode: Mode::Chat,
                    intro: String::new(),
                });
                emit(Response::Notice(m));
                self.send_status(Mode::Chat);
            }
            Request::WriteChapter(guidance) => {
                let mut on = stream(Mode::Write);
                let w = self
                    .story()?
                    .write_next(&guidance, &mut on)
                    .map_err(|e| e.to_string())?;
                self.finished(Mode::Write, w.tokens, w.tokens_per_s(), &w.stop);
            }
            Request::Retry(Mode::Write) => {
                let mut on = stream(Mode::Write);
                let w = self.story()?.retry(&mut on).map_err(|e| e.to_string())?;
                self.finished(Mode::Write, w.tokens, w.tokens_per_s(), &w.stop);
            }
            Request::Continue(Mode::Write) => {
                let mut on = stream(Mode::Write);
                let w = self
                    .story()?
                    .continue_chapter(&mut on)
                    .map_err(|e| e.to_string())?;
                self.finished(Mode::Write, w.tokens, w.tokens_per_s(), &w.stop);
            }
            Request::Reset(Mode::Write) => {
                let story = self.story()?;
                story.reset();
                let intro = story.base_text().to_string();
                emit(Response::WasReset {
                    mode: Mode::Write,
                    intro,
                });
                emit(Response::Notice("the story starts over".into()));
                self.send_status(Mode::Write);
            }
            Request::Settings {
                mode,
                settings: s,
                length_set,
            } => {
                match mode {
                    Mode::Chat => {
                        let v = &s.sampler;
                        let pairs: Vec<(String, String)> = [
                            ("temperature", v.temperature.to_string()),
                            ("top_p", v.top_p.to_string()),
                            ("top_k", v.top_k.to_string()),
                            ("min_p", v.min_p.to_string()),
                            ("presence", v.presence.to_string()),
                            ("frequency", v.frequency.to_string()),
                            ("penalty_decay", v.penalty_decay.to_string()),
                            ("max_tokens", s.max_tokens.to_string()),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect();
                        // Through the chat's own `/set`, so both front ends
                        // accept and refuse the same values.
                        self.chat()?.set(&pairs).map_err(|e| e.to_string())?;
                    }
                    Mode::Write => {
                        // Keep the banned tokens the panel does not edit.
                        let story = self.story()?;
                        let mut settings = s.sampler.clone();
                        settings.banned = story.session().sampler().settings.banned.clone();
                        story
                            .set(settings, length_set.then_some(s.max_tokens))
                            .map_err(|e| e.to_string())?;
                    }
                }
                self.send_status(mode);
            }
            Request::Save(mode, name) => self.save_as(mode, name, false, false)?,
            Request::Branch(mode, name) => self.save_as(mode, name, true, false)?,
            Request::Replace { mode, name, branch } => self.save_as(mode, name, branch, true)?,
            Request::Load(mode, name) => {
                let text = self.load(mode, &name)?;
                emit(Response::Loaded {
                    mode,
                    name: name.clone(),
                    text,
                });
                self.session_name[idx(mode)] = Some(name);
                self.send_status(mode);
            }
            Request::ListSessions => emit(Response::Sessions(self.list())),
            Request::Quit => {}
        }
        Ok(())
    }

    fn finished(&mut self, mode: Mode, tokens: usize, tokens_per_s: f64, stop: &StopReason) {
        self.tokens_per_s[idx(mode)] = tokens_per_s;
        (self.emit)(Response::Finished {
            mode,
            tokens,
            tokens_per_s,
            stop: describe_stop(stop),
        });
        self.send_status(mode);
    }

    fn session_path(&self, name: &str) -> Result<PathBuf, String> {
        if !valid_session_name(name) {
            return Err(format!(
                "`{name}` is not a valid session name: use letters, digits, `-`, `_` and `.` (not first), at most 64"
            ));
        }
        let dir = self
            .sessions_dir
            .as_ref()
            .ok_or("no folder for sessions: set QUILL_DATA_DIR or XDG_DATA_HOME")?;
        Ok(dir.join(format!("{name}.{SNAPSHOT_EXT}")))
    }

    /// Save or branch (`branch`) under `name`; a name taken by another
    /// session is reported as [`Response::NameTaken`] unless `replace`.
    fn save_as(
        &mut self,
        mode: Mode,
        name: String,
        branch: bool,
        replace: bool,
    ) -> Result<(), String> {
        let emit = self.emit;
        let old = self.session_name[idx(mode)].clone();
        let m = match self.save(mode, &name, replace) {
            Ok(m) => m,
            Err(SaveError::Taken(about)) => {
                emit(Response::NameTaken {
                    mode,
                    name,
                    branch,
                    about,
                });
                return Ok(());
            }
            Err(SaveError::Failed(e)) => return Err(e),
        };
        emit(Response::Notice(if branch {
            format!(
                "branched: now on `{name}`{}",
                old.map(|o| format!("; `{o}` stays as it was saved"))
                    .unwrap_or_default()
            )
        } else {
            m
        }));
        self.session_name[idx(mode)] = Some(name);
        self.send_status(mode);
        Ok(())
    }

    fn save(&mut self, mode: Mode, name: &str, replace: bool) -> Result<String, SaveError> {
        let chat_error = |e: ChatError| match e {
            ChatError::SessionExists { about, .. } => SaveError::Taken(about),
            other => SaveError::Failed(other.to_string()),
        };
        match mode {
            Mode::Chat => {
                let chat = self.chat().map_err(SaveError::Failed)?;
                if replace {
                    chat.save_over(name).map_err(chat_error)
                } else {
                    chat.save(name).map_err(chat_error)
                }
            }
            Mode::Write => {
                let path = self.session_path(name).map_err(SaveError::Failed)?;
                let story = self
                    .story
                    .as_ref()
                    .ok_or_else(|| SaveError::Failed("write is unavailable".to_string()))?;
                // The same locked check-and-write as a chat's /save.
                self.story_claims
                    .save(name, &path, replace, |path| story.snapshot().save(path))
                    .map_err(chat_error)?;
                Ok(format!(
                    "saved story `{name}` ({} tokens) to {}",
                    story.session().tokens_in_state(),
                    path.display()
                ))
            }
        }
    }

    /// Loads a session; returns the text to show.
    fn load(&mut self, mode: Mode, name: &str) -> Result<String, String> {
        match mode {
            Mode::Chat => self.chat()?.load(name).map_err(|e| e.to_string()),
            Mode::Write => {
                let path = self.session_path(name)?;
                let snap = Snapshot::load(&path).map_err(|e| e.to_string())?;
                let story = self.story()?;
                let note = story.load(&snap).map_err(|e| e.to_string())?;
                let text = story.text();
                self.story_claims.claim(&path);
                if let Some(n) = note {
                    (self.emit)(Response::Notice(n));
                }
                Ok(text)
            }
        }
    }

    /// The saved sessions, newest first; unreadable ones are listed too,
    /// saying so, rather than hidden.
    fn list(&self) -> Vec<SessionEntry> {
        let Some(dir) = &self.sessions_dir else {
            return Vec::new();
        };
        let mut out: Vec<SessionEntry> = list_sessions(dir)
            .into_iter()
            .map(|name| entry(dir, name))
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created));
        out
    }

    fn send_status(&self, mode: Mode) {
        let (session, label, max_tokens) = match mode {
            Mode::Chat => match &self.chat {
                Some(c) => (c.session(), c.persona().name.clone(), c.max_tokens()),
                None => return,
            },
            Mode::Write => match &self.story {
                Some(s) => (s.session(), s.prompt().title.clone(), s.max_tokens()),
                None => return,
            },
        };
        let info = session.model().info();
        let status = Status {
            model: Path::new(&info.origin)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| info.origin.clone()),
            version: info.version.to_string(),
            dtype: info.dtype.to_string(),
            threads: rayon::current_num_threads(),
            tokens_in_state: session.tokens_in_state(),
            state_bytes: session.state().byte_len(),
            tokens_per_s: self.tokens_per_s[idx(mode)],
            settings: Some(Settings {
                sampler: session.sampler().settings.clone(),
                max_tokens,
            }),
            label,
            session: self.session_name[idx(mode)].clone(),
        };
        (self.emit)(Response::Status(mode, status));
    }
}

fn entry(dir: &Path, name: String) -> SessionEntry {
    let path = dir.join(format!("{name}.{SNAPSHOT_EXT}"));
    // The header alone (see `SnapshotMeta::peek`): the picker lists a
    // folder of sessions without reading their states; loading one checks
    // the whole file.
    match SnapshotMeta::peek(&path) {
        Ok(m) => SessionEntry {
            mode: if crate::snapshot::is_story(&m) {
                Mode::Write
            } else {
                Mode::Chat
            },
            name,
            tokens: m.tokens,
            created: m.created.clone(),
            tail: one_line_tail(&m.text_tail, 60),
        },
        Err(e) => SessionEntry {
            name,
            tokens: 0,
            created: String::new(),
            tail: format!("(unreadable: {e})"),
            mode: Mode::Chat,
        },
    }
}

/// The last `n` characters of text, on one line.
fn one_line_tail(s: &str, n: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let count = flat.chars().count();
    flat.chars().skip(count.saturating_sub(n)).collect()
}
