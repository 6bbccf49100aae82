//! Typed errors of the library. Every message is one line that names the
//! problem and, where there is one, what to do next.

use std::path::PathBuf;

/// Everything the engine can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum QuillError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}{hint}", hint = read_hint(.source))]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}{hint}", hint = write_hint(.source))]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A weight file is not in a format Quill reads, or is damaged.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor is missing, has the wrong shape or an unsupported dtype.
    #[error("tensor `{name}`: {reason}")]
    Tensor {
        /// The tensor's name in the checkpoint.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The checkpoint's tensor names match no RWKV generation Quill knows.
    #[error("unknown architecture: {0} (Quill runs RWKV-4, 5.2, 6 and 7 checkpoints: the official .pth files or safetensors)")]
    UnknownArchitecture(String),
    /// A token id outside the model's vocabulary.
    #[error("token id {id} is outside the vocabulary (size {vocab}); ids must be below {vocab}")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// A prompt with no tokens where one is needed.
    #[error("the prompt is empty: give some text (or --tokens) to start from")]
    EmptyPrompt,
    /// A state does not fit the model it is used with.
    #[error("state mismatch: {0}")]
    StateMismatch(String),
    /// A tokenizer problem.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    /// Invalid settings (sampler, options).
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl QuillError {
    /// Shorthand for a [`QuillError::Format`] error.
    pub fn format(path: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        QuillError::Format {
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for a [`QuillError::Tensor`] error.
    pub fn tensor(name: impl Into<String>, reason: impl Into<String>) -> Self {
        QuillError::Tensor {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// What to do about a file that cannot be read, when the OS error says.
pub(crate) fn read_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => "; check the path",
        std::io::ErrorKind::PermissionDenied => "; check the file's permissions",
        _ => "",
    }
}

/// What to do about a file that cannot be written, when the OS error says.
fn write_hint(e: &std::io::Error) -> &'static str {
    // ENOSPC is 28 on Linux and the BSDs (ErrorKind::StorageFull is newer
    // than the crate's minimum Rust).
    if e.raw_os_error() == Some(28) {
        return "; free some space on that disk or write elsewhere";
    }
    match e.kind() {
        std::io::ErrorKind::NotFound => "; create the folder first or choose another path",
        std::io::ErrorKind::PermissionDenied => "; make the folder writable or choose another path",
        _ => "",
    }
}

/// The library's result type.
pub type Result<T, E = QuillError> = std::result::Result<T, E>;
