//! The messages between the UI thread and the engine thread.
//!
//! The UI never touches the model: it sends [`Request`]s and reads
//! [`Response`]s, so a long generation or a slow prefill cannot freeze
//! the screen. Both enums are plain data, which also lets the app state
//! machine be tested without a model.

use crate::sampler::SamplerSettings;

/// Which half of the app a request or a piece of text belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A conversation with a persona.
    Chat,
    /// A story written chapter by chapter from a prompt file.
    Write,
}

impl Mode {
    /// The name shown in the tab bar.
    pub fn title(self) -> &'static str {
        match self {
            Mode::Chat => "Chat",
            Mode::Write => "Write",
        }
    }

    /// The other mode (Tab switches).
    pub fn other(self) -> Mode {
        match self {
            Mode::Chat => Mode::Write,
            Mode::Write => Mode::Chat,
        }
    }
}

/// Sampler settings plus the length limit: what the settings panel edits.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Temperature, top-p, top-k, min-p and penalties.
    pub sampler: SamplerSettings,
    /// Tokens per reply (Chat) or per chapter (Write).
    pub max_tokens: usize,
}

/// UI → engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Send a chat message and stream the reply.
    Send(String),
    /// A new reply to the last message.
    Retry(Mode),
    /// Go on with the last reply or chapter.
    Continue(Mode),
    /// Take back the last chat exchange.
    Undo,
    /// Start the conversation (or story) over.
    Reset(Mode),
    /// Write the next chapter, steered by this guidance (may be empty).
    WriteChapter(String),
    /// Replace one mode's settings. `length_set`: the user set the length
    /// itself (the panel's Max tokens row). Otherwise Write keeps the
    /// chapter length in effect when the request is handled, which may be
    /// another chapter's than the one shown when it was sent (a change
    /// made while a chapter is written arrives after it).
    Settings {
        /// Chat or Write.
        mode: Mode,
        /// The settings, as the panel shows them.
        settings: Settings,
        /// Whether `settings.max_tokens` is a length the user set.
        length_set: bool,
    },
    /// Save the mode's session under a name in the sessions folder. A
    /// name that holds a session this mode did not load or save is not
    /// written over: the engine answers [`Response::NameTaken`].
    Save(Mode, String),
    /// Save a copy under a new name and go on under that name, leaving
    /// the original as it was (a branch point to come back to). Refused
    /// as `Save` is.
    Branch(Mode, String),
    /// `Save` (or `Branch`, when `branch`) after the user agreed to
    /// replace the session the name holds.
    Replace {
        /// The mode whose session is saved.
        mode: Mode,
        /// The name to save under.
        name: String,
        /// Whether this is a branch (go on under the new name).
        branch: bool,
    },
    /// Load a saved session into a mode.
    Load(Mode, String),
    /// List the saved sessions (for the picker).
    ListSessions,
    /// Stop the engine thread.
    Quit,
}

/// What the status bar shows about one mode's session.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    /// Model file name.
    pub model: String,
    /// RWKV generation, e.g. `RWKV-7`.
    pub version: String,
    /// dtype of the large matrices.
    pub dtype: String,
    /// Worker threads of the forward pass.
    pub threads: usize,
    /// Tokens the state has read.
    pub tokens_in_state: u64,
    /// Bytes of the recurrent state.
    pub state_bytes: usize,
    /// Speed of the last generation (0 before any).
    pub tokens_per_s: f64,
    /// The current settings.
    pub settings: Option<Settings>,
    /// Persona (Chat) or prompt file title (Write).
    pub label: String,
    /// Name of the session saved or loaded last, if any.
    pub session: Option<String>,
}

/// One saved session, as the picker lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEntry {
    /// The name to load it by.
    pub name: String,
    /// Tokens in its state (0 if unreadable).
    pub tokens: u64,
    /// When it was saved (RFC 3339), or a note that it is unreadable.
    pub created: String,
    /// The end of its text, on one line.
    pub tail: String,
    /// Which mode saved it (sessions from `quill chat` are Chat).
    pub mode: Mode,
}

/// Engine → UI.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// The mode is ready (persona / prompt prefilled); `intro` is shown
    /// in its pane (e.g. the story so far).
    Ready {
        /// The mode.
        mode: Mode,
        /// Text to start the pane with.
        intro: String,
    },
    /// New status for a mode.
    Status(Mode, Status),
    /// A piece of generated text, and the tokens in the mode's state once
    /// it was generated: the status bar counts them as they arrive rather
    /// than when the generation ends.
    Text(Mode, String, u64),
    /// A generation ended.
    Finished {
        /// The mode.
        mode: Mode,
        /// Tokens generated.
        tokens: usize,
        /// Generated tokens per second.
        tokens_per_s: f64,
        /// Why it stopped, for the message line.
        stop: String,
    },
    /// A report to show on the message line.
    Notice(String),
    /// Something failed (the app goes on).
    Error(String),
    /// The saved sessions, newest first.
    Sessions(Vec<SessionEntry>),
    /// A session was loaded into a mode: its pane is replaced by `text`.
    Loaded {
        /// The mode.
        mode: Mode,
        /// The session name.
        name: String,
        /// What to show (the text the session holds, as far as known).
        text: String,
    },
    /// The last chat exchange was taken back.
    Undone,
    /// The engine finished a request (or its start-up) and waits for the
    /// next: the UI may start new work.
    Idle,
    /// The engine thread died (a panic); the app quits with this error.
    Fatal(String),
    /// A save was not done: `name` holds another session (one this mode
    /// did not load or save), which saving would lose. The app asks
    /// whether to replace it.
    NameTaken {
        /// The mode whose session was to be saved.
        mode: Mode,
        /// The name asked for.
        name: String,
        /// Whether it was a branch.
        branch: bool,
        /// The session there, in a few words (tokens, when saved).
        about: String,
    },
    /// A mode was started over; `intro` as in `Ready`.
    WasReset {
        /// The mode.
        mode: Mode,
        /// Text to start the pane with.
        intro: String,
    },
}
