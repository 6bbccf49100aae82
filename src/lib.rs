//! Quill: a pure-Rust CPU engine for RWKV language models, and the library
//! behind the `quill` terminal chat and story writer.
//!
//! The layers, bottom up: [`kernels`] (numeric kernels), [`model`] (weights,
//! one module per RWKV generation, the recurrent state), [`tokenizer`],
//! [`sampler`], and [`session`], which ties them together for the front ends.
//! [`bench`] measures the engine against the machine's own limits.

pub mod bench;
pub mod error;
pub mod model;

pub use error::{QuillError, Result};
pub mod kernels;
