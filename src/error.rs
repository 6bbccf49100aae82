//! Typed errors of the library. Every message is one line that names the
//! problem and, where there is one, what to do next.

use std::path::PathBuf;

/// Everything the engine can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum QuillError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
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
    #[error("unknown architecture: {0}")]
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

/// The library's result type.
pub type Result<T, E = QuillError> = std::result::Result<T, E>;
