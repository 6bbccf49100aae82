//! [`ChatEngine`]: a conversation over a [`Session`], with every command
//! carried out here and no terminal I/O, so front ends stay thin and the
//! behaviour is unit-testable.
//!
//! The recurrent state is the whole memory of the conversation, so the
//! engine never re-reads history: it keeps [`Checkpoint`]s (one state each)
//! at the points it may need to return to — before the user's message
//! (`/undo`), before the reply (`/retry`), at the end of a reply that was
//! cut short (`/continue`) — and the persona's opening (`/reset`).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::claims::SessionClaims;
use super::commands::{help_text, parse_input, Command, Input};
use super::format::{normalize_message, ChatFormat, ReplyFilter, Think};
use super::loadable::LoadableSessions;
use super::persona::Persona;
use super::{ChatError, Result};
use crate::error::QuillError;
use crate::hash::Fnv64;
use crate::model::ModelInfo;
use crate::sampler::{Sampler, SamplerSettings};
use crate::session::{Checkpoint, Session, StopReason};
use crate::snapshot::{Snapshot, SnapshotMeta};

/// How many exchanges `/undo` can take back. Each costs one state in
/// memory (tens of MB for a 3B model), so the depth is bounded.
pub const UNDO_DEPTH: usize = 8;

/// File extension of session and cache snapshots.
pub const SNAPSHOT_EXT: &str = "qs";

/// Bumped when the way openings are rendered changes, so old cache
/// entries are not mistaken for new ones.
const OPENING_CACHE_VERSION: &str = "quill-chat-opening-v1";

/// Sampler keys `/set` passes to [`SamplerSettings::set`](crate::sampler::SamplerSettings::set).
const SAMPLER_KEYS: &[&str] = &[
    "temperature",
    "temp",
    "top_p",
    "top_k",
    "min_p",
    "presence",
    "presence_penalty",
    "frequency",
    "frequency_penalty",
    "penalty_decay",
    "decay",
];

/// Keys `/set` knows, for messages and tab completion.
pub const SET_KEYS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence",
    "frequency",
    "penalty_decay",
    "max_tokens",
    "seed",
];

/// How a chat is set up besides the session and the persona.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// Reply length limit (tokens); `None`: the persona's, else 500.
    pub max_tokens: Option<usize>,
    /// G1 reasoning override; `None`: the persona's.
    pub think: Option<Think>,
    /// Where `/save` and `/load` keep sessions (`None`: they fail clearly).
    pub sessions_dir: Option<PathBuf>,
    /// Where pre-filled openings are cached (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Load sessions made with other weights of the same shape.
    pub force: bool,
}

/// How the persona's opening got into the state.
#[derive(Debug, Clone)]
pub struct OpeningReport {
    /// Tokens of the opening (now in the state).
    pub tokens: u64,
    /// Whether it came from the cache rather than the model.
    pub from_cache: bool,
    /// Time taken.
    pub seconds: f64,
    /// The cache file, if caching is on.
    pub cache_path: Option<PathBuf>,
    /// Why the cache could not be read or written, if it could not.
    pub cache_problem: Option<String>,
}

/// One reply (or, after `/continue`, the part added to one).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The text as shown: leading space and think tag dealt with.
    pub text: String,
    /// The text as generated after the prompt (without the stop string).
    pub raw: String,
    /// Tokens sampled.
    pub generated: usize,
    /// Tokens fed after the reply to close the turn (0 when the model
    /// ended it itself).
    pub closing: usize,
    /// Tokens of the earlier reply fed again (`/continue` after a reply
    /// that had ended; 0 otherwise).
    pub refed: usize,
    /// Why generation stopped.
    pub stop: StopReason,
    /// Wall time of the generation.
    pub seconds: f64,
}

impl Reply {
    /// Generated tokens per second.
    pub fn tokens_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.generated as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Whether the reply was stopped by the caller (Ctrl-C).
    pub fn cancelled(&self) -> bool {
        self.stop == StopReason::Cancelled
    }
}

/// What a line of input led to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The line was empty.
    Nothing,
    /// The assistant replied (a message, `/retry`, `/continue`).
    Reply(Reply),
    /// A command's report, to show the user.
    Message(String),
    /// `/quit`.
    Quit,
}

/// A place in the conversation the engine can return to.
#[derive(Debug, Clone)]
struct Point {
    cp: Checkpoint,
    /// Whether the state has already read the next turn's `User:`.
    user_tag_consumed: bool,
}

#[derive(Debug, Clone)]
struct Exchange {
    user: String,
    /// The reply as shown.
    reply: String,
    /// The reply as generated (for `/continue` after it ended).
    raw: String,
    think: Think,
    before_user: Point,
    /// Kept for the last exchange only (memory); rebuilt from
    /// `before_user` when needed after `/undo`.
    before_reply: Option<Point>,
    /// The state right after a reply that was cut short, before the turn
    /// was closed: `/continue` goes on from here.
    open: Option<Checkpoint>,
}

/// A conversation: a session, the chat format, and the checkpoints that
/// make `/retry`, `/undo`, `/continue` and `/reset` cheap.
pub struct ChatEngine {
    session: Session,
    persona: Persona,
    /// The persona's format (what `/reset` returns to).
    base_format: ChatFormat,
    format: ChatFormat,
    opening: Point,
    opening_tokens: u64,
    user_tag_consumed: bool,
    history: VecDeque<Exchange>,
    max_tokens: usize,
    sessions_dir: Option<PathBuf>,
    /// Sessions this chat loaded or saved: `/save` replaces only these.
    claims: SessionClaims,
    force: bool,
}

impl ChatEngine {
    /// Starts a chat: applies the persona's format, bans token 0 (end of
    /// text would end the chat, not the turn), and pre-fills the opening
    /// conversation, from the cache when it holds it. The session's sampler
    /// settings are used as they are (the caller merges persona and flags).
    pub fn start(
        mut session: Session,
        persona: Persona,
        options: ChatOptions,
    ) -> Result<(ChatEngine, OpeningReport)> {
        let mut format = persona.format(session.model().info().version);
        if let Some(t) = options.think {
            format.think = t;
        }
        ban_end_of_text(&mut session);
        let text = persona.opening_text(&format);
        let report = prefill(&mut session, &text, options.cache_dir.as_deref())?;
        let opening = Point {
            cp: session.checkpoint(),
            user_tag_consumed: false,
        };
        let engine = ChatEngine {
            max_tokens: options.max_tokens.or(persona.max_tokens).unwrap_or(500),
            session,
            persona,
            base_format: format.clone(),
            format,
            opening,
            opening_tokens: report.tokens,
            user_tag_consumed: false,
            history: VecDeque::new(),
            sessions_dir: options.sessions_dir,
            claims: SessionClaims::default(),
            force: options.force,
        };
        Ok((engine, report))
    }

    /// The session (state, sampler, counters).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The format in use (names, think mode).
    pub fn format(&self) -> &ChatFormat {
        &self.format
    }

    /// The persona.
    pub fn persona(&self) -> &Persona {
        &self.persona
    }

    /// Reply length limit in tokens.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Sets the most tokens a reply may take (`-n` over a resumed
    /// session's own length); 0 is taken as 1.
    pub fn set_max_tokens(&mut self, n: usize) {
        self.max_tokens = n.max(1);
    }

    /// Exchanges that `/undo` can still take back.
    pub fn undo_depth(&self) -> usize {
        self.history.len()
    }

    /// Where sessions are kept.
    pub fn sessions_dir(&self) -> Option<&Path> {
        self.sessions_dir.as_deref()
    }

    /// Carries out one line: a message or a command. `on_text` receives
    /// reply text as it is generated; returning `false` stops the reply
    /// (the chat goes on, the turn is closed properly).
    pub fn handle(&mut self, line: &str, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Outcome> {
        Ok(match parse_input(line)? {
            Input::Empty => Outcome::Nothing,
            Input::Message(m) => Outcome::Reply(self.send(&m, on_text)?),
            Input::Command(c) => match c {
                Command::Help => Outcome::Message(help_text()),
                Command::Reset => Outcome::Message(self.reset()),
                Command::Retry => Outcome::Reply(self.retry(on_text)?),
                Command::Continue => Outcome::Reply(self.continue_reply(on_text)?),
                Command::Undo => Outcome::Message(self.undo()?),
                Command::Save(n) => Outcome::Message(self.save(&n)?),
                Command::SaveOver(n) => Outcome::Message(self.save_over(&n)?),
                Command::Load(n) => Outcome::Message(self.load(&n)?),
                Command::Sessions => Outcome::Message(self.sessions()?),
                Command::Set(pairs) => Outcome::Message(self.set(&pairs)?),
                Command::Show => Outcome::Message(self.show()),
                Command::Think(t) => Outcome::Message(self.set_think(t)),
                Command::Quit => Outcome::Quit,
            },
        })
    }

    /// Sends a message and streams the reply.
    pub fn send(&mut self, message: &str, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Reply> {
        let message = normalize_message(message);
        if message.is_empty() {
            return Err(ChatError::EmptyMessage);
        }
        let before_user = self.point();
        self.session
            .feed_text(&self.format.user_turn(&message, self.user_tag_consumed))?;
        self.user_tag_consumed = false;
        let before_reply = self.point();
        let think = self.format.think;
        let (reply, open) = self.generate(think, ReplyFilter::new(think), on_text)?;
        // Only the newest exchange keeps its pre-reply state (memory).
        if let Some(prev) = self.history.back_mut() {
            prev.before_reply = None;
            prev.open = None;
        }
        self.history.push_back(Exchange {
            user: message,
            reply: reply.text.clone(),
            raw: reply.raw.clone(),
            think,
            before_user,
            before_reply: Some(before_reply),
            open,
        });
        if self.history.len() > UNDO_DEPTH {
            self.history.pop_front();
        }
        Ok(reply)
    }

    /// `/retry`: back to the state before the last reply and a new reply
    /// from there. The conversation is not fed again: only the new reply's
    /// tokens (and its closing `\n\n`, if needed) go through the model.
    /// The RNG is not rewound, so the new reply differs.
    pub fn retry(&mut self, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Reply> {
        let before_reply = self.reply_start("/retry")?;
        let think = self.history.back().map(|e| e.think).unwrap_or(Think::Auto);
        let (reply, open) = self.generate(think, ReplyFilter::new(think), on_text)?;
        if let Some(last) = self.history.back_mut() {
            last.reply = reply.text.clone();
            last.raw = reply.raw.clone();
            last.before_reply = Some(before_reply);
            last.open = open;
        }
        Ok(reply)
    }

    /// `/continue`: the assistant goes on with its last reply. After a reply
    /// cut short (length limit, Ctrl-C) this resumes from the state where it
    /// stopped; after one the model ended itself, the reply is fed again
    /// from the state before it (its tokens only) and generation resumes
    /// where it left off — the model may well end the turn at once.
    pub fn continue_reply(&mut self, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Reply> {
        let last = self.history.back().ok_or(ChatError::NoReply("/continue"))?;
        let think = last.think;
        let refed = if let Some(open) = last.open.clone() {
            self.restore(&Point {
                cp: open,
                user_tag_consumed: false,
            });
            0
        } else {
            let raw = last.raw.clone();
            self.reply_start("/continue")?;
            self.session.feed_text(&raw)?
        };
        let mut filter = ReplyFilter::continuing();
        if self.history.back().is_some_and(|e| e.reply.is_empty()) {
            filter = ReplyFilter::new(think);
        }
        let (mut reply, open) = self.generate(think, filter, on_text)?;
        reply.refed = refed;
        if let Some(last) = self.history.back_mut() {
            last.reply.push_str(&reply.text);
            last.raw.push_str(&reply.raw);
            last.open = open;
        }
        Ok(reply)
    }

    /// `/undo`: the state before the last user message, bit for bit (the
    /// RNG goes on, so asking again gives a new reply).
    pub fn undo(&mut self) -> Result<String> {
        let ex = self.history.pop_back().ok_or(ChatError::NothingToUndo)?;
        self.restore(&ex.before_user);
        Ok(format!(
            "dropped the last exchange (“{}”); {} more can be undone",
            excerpt(&ex.user, 40),
            self.history.len()
        ))
    }

    /// `/reset`: back to the persona's opening, history forgotten.
    pub fn reset(&mut self) -> String {
        let opening = self.opening.clone();
        self.restore(&opening);
        self.history.clear();
        let think = self.format.think;
        self.format = self.base_format.clone();
        self.format.think = think;
        format!(
            "new conversation with {} ({} tokens of opening in the state)",
            self.persona.name, self.opening_tokens
        )
    }

    /// `/set key=value ...`: all or nothing, so a typo changes nothing.
    pub fn set(&mut self, pairs: &[(String, String)]) -> Result<String> {
        let usage = |message: String| ChatError::Usage {
            command: "/set",
            message,
        };
        let mut settings = self.session.sampler().settings.clone();
        let mut max_tokens = self.max_tokens;
        let mut seed = None;
        for (k, v) in pairs {
            let key = k.replace('-', "_");
            match key.as_str() {
                "max_tokens" | "n" => {
                    max_tokens = v.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                        usage(format!("max_tokens: `{v}` is not a whole number ≥ 1"))
                    })?
                }
                "seed" => {
                    seed = Some(
                        v.parse::<u64>()
                            .map_err(|_| usage(format!("seed: `{v}` is not a whole number")))?,
                    )
                }
                k if SAMPLER_KEYS.contains(&k) => settings.set(k, v).map_err(|e| {
                    usage(match e {
                        QuillError::Invalid(m) => m,
                        other => other.to_string(),
                    })
                })?,
                _ => {
                    return Err(usage(format!(
                        "unknown setting `{k}` (known: {})",
                        SET_KEYS.join(", ")
                    )))
                }
            }
        }
        self.session.sampler_mut().settings = settings;
        self.max_tokens = max_tokens;
        if let Some(s) = seed {
            self.session.sampler_mut().reseed(s);
        }
        Ok(self.settings_line())
    }

    /// Replaces the sampler settings (validated; token 0 stays banned),
    /// keeping the RNG and the penalty counts: for command-line flags
    /// that override a resumed session's settings. Returns
    /// [`settings_line`](Self::settings_line).
    pub fn set_sampler(&mut self, settings: SamplerSettings) -> Result<String> {
        settings.validate()?;
        self.session.sampler_mut().settings = settings;
        ban_end_of_text(&mut self.session);
        Ok(self.settings_line())
    }

    /// `/think on|off`.
    pub fn set_think(&mut self, think: Think) -> String {
        self.format.think = think;
        match think {
            Think::On => "replies start with reasoning (<think>), for G1 models".into(),
            Think::Off => "replies skip reasoning (empty <think> block), for G1 models".into(),
            Think::Auto => "replies start plainly".into(),
        }
    }

    /// One line of sampler settings and the reply limit.
    pub fn settings_line(&self) -> String {
        let s = &self.session.sampler().settings;
        format!(
            "temperature={} top_p={} top_k={} min_p={} presence={} frequency={} penalty_decay={} max_tokens={}",
            s.temperature,
            s.top_p,
            s.top_k,
            s.min_p,
            s.presence,
            s.frequency,
            s.penalty_decay,
            self.max_tokens
        )
    }

    /// `/show`: settings, tokens in state, state size, model.
    pub fn show(&self) -> String {
        let info = self.session.model().info();
        let d = &info.dims;
        let model = Path::new(&info.origin)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| info.origin.clone());
        let banned = &self.session.sampler().settings.banned;
        [
            format!(
                "model      {model} ({}, {} layers × {}, vocab {}, {} tokenizer, fingerprint {})",
                info.version,
                d.n_layer,
                d.n_embd,
                d.vocab,
                self.session.tokenizer().kind(),
                info.fingerprint
            ),
            format!(
                "persona    {} ({}: / {}:), think {}",
                self.persona.name,
                self.format.user,
                self.format.assistant,
                self.format.think.as_str()
            ),
            format!(
                "state      {} tokens, {:.2} MiB",
                self.session.tokens_in_state(),
                self.session.state().byte_len() as f64 / (1024.0 * 1024.0)
            ),
            format!(
                "processed  {} tokens this run",
                self.session.tokens_processed
            ),
            format!("settings   {}", self.settings_line()),
            format!("banned     {banned:?}"),
            format!("undo       {} exchange(s)", self.history.len()),
        ]
        .join("\n")
    }

    /// `/save NAME`: the state, sampler (RNG and penalties included) and
    /// chat format as a snapshot file, written atomically. Refused with
    /// [`ChatError::SessionExists`] when NAME holds a session this chat
    /// did not load or save (or one replaced since), which would be lost;
    /// [`save_over`](Self::save_over) replaces it.
    pub fn save(&mut self, name: &str) -> Result<String> {
        self.save_inner(name, false)
    }

    /// `/save NAME!`: as [`save`](Self::save), replacing whatever session
    /// NAME holds.
    pub fn save_over(&mut self, name: &str) -> Result<String> {
        self.save_inner(name, true)
    }

    fn save_inner(&mut self, name: &str, replace: bool) -> Result<String> {
        let path = self.session_path(name)?;
        let mut snap = Snapshot::capture(&self.session);
        let x = &mut snap.meta.extra;
        x.insert("chat.persona".into(), self.persona.name.clone());
        x.insert("chat.user".into(), self.format.user.clone());
        x.insert("chat.assistant".into(), self.format.assistant.clone());
        x.insert("chat.think".into(), self.format.think.as_str().into());
        x.insert(
            "chat.user_tag_consumed".into(),
            self.user_tag_consumed.to_string(),
        );
        // The reply length is one of the settings `/set` changes: a loaded
        // session goes on with it as with the sampler's.
        x.insert("chat.max_tokens".into(), self.max_tokens.to_string());
        self.claims
            .save(name, &path, replace, |path| snap.save(path))?;
        Ok(format!(
            "saved session `{name}` ({} tokens) to {}",
            self.session.tokens_in_state(),
            path.display()
        ))
    }

    /// `/load NAME`: continues a saved session exactly where it was (state,
    /// RNG, penalties, settings, format). A session from another model is
    /// refused; undo history is cleared.
    pub fn load(&mut self, name: &str) -> Result<String> {
        let path = existing_session(self.sessions_dir.as_deref(), name)?;
        let snap = Snapshot::load(&path)?;
        chat_can_continue(name, &snap.meta, self.session.model().info(), self.force)?;
        snap.restore_into(&mut self.session, self.force)?;
        ban_end_of_text(&mut self.session);
        let x = &snap.meta.extra;
        if let Some(u) = x.get("chat.user") {
            self.format.user = u.clone();
        }
        if let Some(a) = x.get("chat.assistant") {
            self.format.assistant = a.clone();
        }
        if let Some(t) = x.get("chat.think").and_then(|t| Think::parse(t)) {
            self.format.think = t;
        }
        self.user_tag_consumed = x.get("chat.user_tag_consumed").is_some_and(|v| v == "true");
        // Sessions saved before it was recorded keep the current length.
        if let Some(n) = x
            .get("chat.max_tokens")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
        {
            self.max_tokens = n;
        }
        self.history.clear();
        // Saving this conversation under the name it came from is the
        // normal flow: no question asked.
        self.claims.claim(&path);
        Ok(format!(
            "loaded session `{name}` ({} tokens, saved {}): “…{}”",
            snap.meta.tokens,
            snap.meta.created,
            excerpt_tail(&snap.meta.text_tail, 60)
        ))
    }

    /// `/sessions`: the saved sessions, newest first, with their size and
    /// the end of their text.
    pub fn sessions(&self) -> Result<String> {
        let names = self.session_names()?;
        if names.is_empty() {
            return Ok("no saved sessions yet (/save NAME makes one)".into());
        }
        let mut rows = Vec::new();
        for name in names {
            let path = self.session_path(&name)?;
            // The header alone (see `SnapshotMeta::peek`): a folder of
            // sessions of several MB each is listed without reading their
            // states; `/load` checks the whole file.
            rows.push(match SnapshotMeta::peek(&path) {
                Ok(m) => (
                    m.created.clone(),
                    format!(
                        "  {name:<20} {:>7} tokens  {}  {}{}  “…{}”",
                        m.tokens,
                        m.created,
                        m.extra.get("model").map(String::as_str).unwrap_or("?"),
                        if crate::snapshot::is_story(&m) {
                            "  (a story: quill tui)"
                        } else {
                            ""
                        },
                        excerpt_tail(&m.text_tail, 40)
                    ),
                ),
                Err(e) => (String::new(), format!("  {name:<20} (unreadable: {e})")),
            });
        }
        rows.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(rows.into_iter().map(|r| r.1).collect::<Vec<_>>().join("\n"))
    }

    /// The sessions `/load` would take, for Tab completion: they are
    /// re-listed on every Tab, so each file is judged from its header,
    /// once per version of the file.
    pub fn loadable_sessions(&self) -> Option<LoadableSessions> {
        let dir = self.sessions_dir.clone()?;
        Some(LoadableSessions::new(
            dir,
            self.session.model().info().clone(),
            self.force,
        ))
    }

    /// Names of the saved sessions, sorted (also for tab completion).
    pub fn session_names(&self) -> Result<Vec<String>> {
        let dir = self.sessions_dir.as_ref().ok_or(ChatError::NoDataDir)?;
        Ok(list_sessions(dir))
    }

    fn session_path(&self, name: &str) -> Result<PathBuf> {
        session_file(self.sessions_dir.as_deref(), name)
    }

    fn point(&self) -> Point {
        Point {
            cp: self.session.checkpoint(),
            user_tag_consumed: self.user_tag_consumed,
        }
    }

    /// Returns to a point, keeping the RNG where it is (so a retried or
    /// re-asked reply is a fresh draw) and the current settings.
    fn restore(&mut self, p: &Point) {
        let rng = self.session.sampler().rng().clone();
        self.session.restore(&p.cp);
        let s = self.session.sampler();
        let sampler = Sampler::from_parts(s.settings.clone(), rng, s.counts().clone());
        *self.session.sampler_mut() = sampler;
        self.user_tag_consumed = p.user_tag_consumed;
    }

    /// Puts the state where the last reply started (rebuilding it from the
    /// user's turn when only that was kept) and returns that point.
    fn reply_start(&mut self, command: &'static str) -> Result<Point> {
        let last = self.history.back().ok_or(ChatError::NoReply(command))?;
        if let Some(p) = last.before_reply.clone() {
            self.restore(&p);
            return Ok(p);
        }
        let (before_user, user, think) = (last.before_user.clone(), last.user.clone(), last.think);
        self.restore(&before_user);
        let mut f = self.format.clone();
        f.think = think;
        self.session
            .feed_text(&f.user_turn(&user, before_user.user_tag_consumed))?;
        self.user_tag_consumed = false;
        let p = self.point();
        if let Some(last) = self.history.back_mut() {
            last.before_reply = Some(p.clone());
        }
        Ok(p)
    }

    /// Generates from the current state until the turn ends, then makes
    /// sure the state has read the end of the turn: if the model stopped
    /// at `\n\n` or `\n\nUser:` it has; otherwise (length limit, Ctrl-C)
    /// the missing newlines are fed, so the next `User:` is well-formed.
    /// Returns the reply and, for a reply cut short, the state before the
    /// closing newlines (for `/continue`).
    fn generate(
        &mut self,
        think: Think,
        mut filter: ReplyFilter,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(Reply, Option<Checkpoint>)> {
        let mut format = self.format.clone();
        format.think = think;
        let stops = format.stops();
        let mut shown = String::new();
        let g = self.session.generate(self.max_tokens, &stops, |piece| {
            let s = filter.push(piece);
            if s.is_empty() {
                return true;
            }
            shown.push_str(&s);
            on_text(&s)
        })?;
        let (open, closing) = match &g.stop {
            StopReason::StopString(s) => {
                // `\n\nUser:` means the state has read the next turn's
                // name too; the next message must not repeat it.
                self.user_tag_consumed = s.ends_with(':');
                (None, 0)
            }
            _ => {
                let open = self.session.checkpoint();
                let newlines = g.text.chars().rev().take_while(|&c| c == '\n').count();
                let close = &"\n\n"[newlines.min(2)..];
                let n = self.session.feed_text(close)?;
                self.user_tag_consumed = false;
                (Some(open), n)
            }
        };
        let reply = Reply {
            text: shown,
            raw: g.text,
            generated: g.tokens.len(),
            closing,
            refed: 0,
            stop: g.stop,
            seconds: g.seconds,
        };
        Ok((reply, open))
    }
}

/// What `/load NAME` refuses before restoring anything, shared with Tab
/// completion ([`LoadableSessions`]) so that it offers no name `/load`
/// would refuse: a story from Write mode, and a session of another model
/// (another version or shape; other weights of the same shape unless
/// `force`).
pub(crate) fn chat_can_continue(
    name: &str,
    meta: &SnapshotMeta,
    model: &ModelInfo,
    force: bool,
) -> Result<()> {
    if crate::snapshot::is_story(meta) {
        return Err(ChatError::StorySession(name.to_string()));
    }
    meta.check_fits(model, force)
        .map_err(|e| ChatError::WrongModel {
            name: name.to_string(),
            reason: match e {
                QuillError::StateMismatch(m) => m,
                other => other.to_string(),
            },
        })
}

/// Token 0 is end-of-text in World and 20B vocabularies: sampled in a
/// chat it would end the document rather than the turn, so chats ban it.
fn ban_end_of_text(session: &mut Session) {
    let banned = &mut session.sampler_mut().settings.banned;
    if !banned.contains(&0) {
        banned.push(0);
    }
}

/// Feeds the opening, or restores it from the cache. The cache key covers
/// the model (fingerprint), the tokenizer and the exact opening text
/// (which holds the names and format), so any change makes a new entry.
fn prefill(session: &mut Session, text: &str, cache_dir: Option<&Path>) -> Result<OpeningReport> {
    let t0 = Instant::now();
    let mut report = OpeningReport {
        tokens: 0,
        from_cache: false,
        seconds: 0.0,
        cache_path: None,
        cache_problem: None,
    };
    if text.is_empty() {
        return Ok(report);
    }
    let fp = &session.model().info().fingerprint;
    let mut h = Fnv64::default();
    h.update_str(OPENING_CACHE_VERSION);
    h.update_str(&session.tokenizer().kind().to_string());
    h.update_str(text);
    let key = h.hex();
    let path = cache_dir.map(|d| {
        let fp: String = fp.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        d.join("openings")
            .join(format!("{fp}-{key}.{SNAPSHOT_EXT}"))
    });
    report.cache_path = path.clone();
    if let Some(p) = path.as_ref().filter(|p| p.is_file()) {
        match Snapshot::load(p).and_then(|snap| {
            if snap.meta.extra.get("chat.opening").map(String::as_str) != Some(key.as_str()) {
                return Err(QuillError::format(
                    p.display(),
                    "not the cached opening it should be",
                ));
            }
            // The cache holds the opening's state; the sampler (seed,
            // settings) is this run's.
            let sampler = session.sampler().clone();
            snap.restore_into(session, false)?;
            *session.sampler_mut() = sampler;
            Ok(snap.meta.tokens)
        }) {
            Ok(tokens) => {
                report.tokens = tokens;
                report.from_cache = true;
                report.seconds = t0.elapsed().as_secs_f64();
                return Ok(report);
            }
            Err(e) => {
                session.reset();
                report.cache_problem = Some(format!("cache entry unusable, prefilling again: {e}"));
            }
        }
    }
    session.feed_text(text)?;
    report.tokens = session.tokens_in_state();
    if let Some(p) = &path {
        let mut snap = Snapshot::capture(session);
        snap.meta.extra.insert("chat.opening".into(), key);
        let written = p
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .map_err(|source| QuillError::Write {
                path: p.clone(),
                source,
            })
            .and_then(|_| snap.save(p));
        if let Err(e) = written {
            report.cache_problem = Some(format!("could not cache the opening: {e}"));
        }
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Session names are file names: letters, digits, `-`, `_`, `.` (not
/// first, so no hidden files and no `..`), at most 64.
pub fn valid_session_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The file of session `name` in `dir` (which need not exist yet).
pub fn session_file(dir: Option<&Path>, name: &str) -> Result<PathBuf> {
    if !valid_session_name(name) {
        return Err(ChatError::BadSessionName(name.to_string()));
    }
    let dir = dir.ok_or(ChatError::NoDataDir)?;
    Ok(dir.join(format!("{name}.{SNAPSHOT_EXT}")))
}

/// The file of session `name` in `dir`, which must be there: what
/// `/load` and `--session` open. (`--session` checks it before the
/// opening is pre-filled, so a mistyped name fails at once.)
pub fn existing_session(dir: Option<&Path>, name: &str) -> Result<PathBuf> {
    let path = session_file(dir, name)?;
    if path.is_file() {
        return Ok(path);
    }
    if path.exists() {
        // `/sessions` lists it (as unreadable): "no session" would
        // contradict it.
        return Err(ChatError::Io {
            path,
            error: std::io::Error::other("not a file, so not a session: remove or rename it"),
        });
    }
    Err(ChatError::NoSuchSession {
        name: name.to_string(),
        dir: dir.map(Path::to_path_buf).unwrap_or_default(),
    })
}

/// Session names in a folder, sorted.
pub fn list_sessions(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(&format!(".{SNAPSHOT_EXT}"))
                        .filter(|n| valid_session_name(n))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn excerpt(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n).collect::<String>())
    }
}

fn excerpt_tail(s: &str, n: usize) -> String {
    let one_line = s.trim_end().replace('\n', " ");
    let count = one_line.chars().count();
    one_line.chars().skip(count.saturating_sub(n)).collect()
}
