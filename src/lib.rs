//! Quill: a pure-Rust CPU engine for RWKV language models, and the library
//! behind the `quill` terminal chat and story writer.
//!
//! The layers, bottom up: [`kernels`] (numeric kernels), [`model`] (weights,
//! one module per RWKV generation, the recurrent state), [`tokenizer`],
//! [`sampler`], and [`session`], which ties them together for the front
//! ends; [`snapshot`] saves a session's state to disk, [`chat`] runs a
//! conversation over a session, [`writer`] writes whole stories chapter by
//! chapter from prompt files, and [`tui`] is the full-screen app over both.
//! [`bench`](mod@bench) measures the engine against the machine's own limits.

pub mod bench;
pub mod chat;
pub mod error;
pub mod eval;
pub mod hash;
pub mod kernels;
pub mod model;
pub mod sampler;
pub mod session;
pub mod snapshot;
/// Text ↔ token ids for the World, byte-level and GPT-NeoX 20B vocabularies.
pub mod tokenizer;
pub mod tui;
pub mod writer;

pub use error::{QuillError, Result};
