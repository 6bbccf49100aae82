//! Chat on top of a [`Session`](crate::session::Session): the World/G1 and
//! Raven prompt formats ([`format`](mod@format)), personas loaded from TOML
//! ([`persona`]), the slash commands ([`commands`]) and [`ChatEngine`],
//! which carries out messages and commands without any terminal I/O so a
//! front end only reads lines and prints what it gets back.

pub mod claims;
pub mod commands;
pub mod engine;
pub mod format;
pub mod loadable;
pub mod paths;
pub mod persona;

use std::path::PathBuf;

use crate::error::QuillError;

pub use claims::SessionClaims;
pub use commands::{Command, Input};
pub use engine::{ChatEngine, ChatOptions, OpeningReport, Outcome, Reply};
pub use format::{normalize_message, ChatFormat, Think};
pub use loadable::LoadableSessions;
pub use persona::Persona;

/// Everything a chat can refuse. Each message is one line that says what
/// is wrong and, where there is one, what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// A persona file that does not parse or holds a bad value; `line` and
    /// `column` are 1-based (0 when the problem has no single place).
    #[error("{origin}:{line}:{column}: {message}")]
    Persona {
        /// The file (or `built-in NAME`).
        origin: String,
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        column: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A persona name that is neither a file nor a built-in persona.
    #[error("no persona `{0}`: give a .toml file or one of {list}", list = persona::BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))]
    NoPersona(String),
    /// A line starting with `/` that names no command.
    #[error("unknown command `{0}`: /help lists the commands (start a message with // to send one beginning with /)")]
    UnknownCommand(String),
    /// A command with missing or malformed arguments.
    #[error("{command}: {message}")]
    Usage {
        /// The command, e.g. `/set`.
        command: &'static str,
        /// What is wrong and how to write it.
        message: String,
    },
    /// A message with nothing in it once normalised.
    #[error("the message is empty")]
    EmptyMessage,
    /// `/retry` or `/continue` before any reply.
    #[error("{0}: there is no reply yet (send a message first)")]
    NoReply(&'static str),
    /// `/undo` with nothing left to undo.
    #[error("/undo: nothing to undo")]
    NothingToUndo,
    /// A session name that could escape the sessions folder or is unwieldy.
    #[error("`{0}` is not a valid session name: use letters, digits, `-`, `_` and `.` (not first), at most 64")]
    BadSessionName(String),
    /// `/load` or `--session` of a session that does not exist.
    #[error("no session named `{name}` in {dir} (/sessions lists them)")]
    NoSuchSession {
        /// The name asked for.
        name: String,
        /// Where sessions are kept.
        dir: PathBuf,
    },
    /// `/load` or `--session` of a story saved from `quill tui`'s Write
    /// mode: its text is a story, not a conversation in the chat format.
    #[error("`{0}` is a story saved from quill tui's Write mode, not a chat: continue it there (quill tui, then Ctrl-O)")]
    StorySession(String),
    /// `/save NAME` where NAME holds a session this chat did not load or
    /// save (or one replaced since): saving would lose it.
    #[error("session `{name}` already exists ({about}): `/save {name}!` replaces it, or pick another name")]
    SessionExists {
        /// The name asked for.
        name: String,
        /// The session there: tokens and when it was saved.
        about: String,
    },
    /// `/save NAME` while another quill process is saving NAME (its lock
    /// is held past a short wait); nothing was written.
    #[error("session `{0}` is being saved by another quill: try again in a moment")]
    SaveInProgress(String),
    /// A session saved with another model.
    #[error(
        "session `{name}` was saved with another model and cannot continue with this one: {reason}"
    )]
    WrongModel {
        /// The session.
        name: String,
        /// What differs.
        reason: String,
    },
    /// No folder to keep sessions in (no `$HOME`, `$XDG_DATA_HOME` or `QUILL_DATA_DIR`).
    #[error("no folder for sessions: set QUILL_DATA_DIR or XDG_DATA_HOME")]
    NoDataDir,
    /// A file or folder that could not be read or written.
    #[error("{path}: {error}{hint}", hint = crate::error::read_hint(.error))]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said (in the message, so not also a `source`,
        /// which `{:#}` would print a second time).
        error: std::io::Error,
    },
    /// An engine error (model, snapshot, settings).
    #[error(transparent)]
    Quill(#[from] QuillError),
}

/// The chat's result type.
pub type Result<T, E = ChatError> = std::result::Result<T, E>;
