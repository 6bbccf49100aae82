//! Long-form writing: a story described by a prompt file is written
//! chapter by chapter through a [`Session`](crate::session::Session), with
//! the state saved after each chapter so the story can be resumed,
//! extended or branched without feeding anything again.
//!
//! - [`prompt`]: the prompt file format and the exact text layout;
//! - [`manifest`]: `manifest.json`, the record of a story folder;
//! - [`runner`]: deciding what a run does ([`runner::plan`]) and doing it
//!   ([`runner::write`]).

pub mod manifest;
pub mod prompt;
pub mod runner;

use std::path::PathBuf;

pub use manifest::{ChapterRecord, Manifest};
pub use prompt::{ChapterSpec, Prompt, PromptError};
pub use runner::{
    plan, up_to_date, write, BranchRequest, Outcome, Plan, Progress, Request, Silent,
};

/// Why a story cannot be written (one line each, saying what to do).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The prompt file is malformed.
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// The folder holds a finished story and the run would overwrite it.
    #[error("{} already holds a finished story ({chapters} chapters); pass --extend K to add K chapters, --branch NAME --from-chapter N to write another continuation, or choose another --out", dir.display())]
    Finished {
        /// The story folder.
        dir: PathBuf,
        /// Chapters in it.
        chapters: usize,
    },
    /// The folder holds an unfinished story and the run did not say to
    /// continue it.
    #[error("{} holds an unfinished story ({done} of {target} chapters written); rerun with --resume to continue it", dir.display())]
    Unfinished {
        /// The story folder.
        dir: PathBuf,
        /// Chapters finished.
        done: usize,
        /// Chapters it should have.
        target: usize,
    },
    /// A manifest or a file it lists is unreadable or damaged.
    #[error("{}: {reason}", path.display())]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The run asks for something that contradicts how the story was
    /// started (another model, seed or sampler settings).
    #[error("cannot continue the story in {}: {reason}", dir.display())]
    Mismatch {
        /// The story folder.
        dir: PathBuf,
        /// What differs and what to do.
        reason: String,
    },
    /// Options that do not fit together or do not fit the story.
    #[error("{0}")]
    Usage(String),
    /// The engine failed (model, snapshot, or writing a file).
    #[error(transparent)]
    Engine(#[from] crate::QuillError),
}
