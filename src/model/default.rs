//! The small RWKV-7 model trained by this project (`models/`), compiled into
//! the binary so every command works before any download.

use std::sync::Arc;

use super::weights::{Backing, WeightFile};
use super::{LoadOptions, Model};
use crate::error::Result;

/// Forces the alignment of the embedded bytes: safetensors data sits at
/// 8-byte multiples from the file start, so with the start 64-byte aligned
/// the f32/bf16 matrices are read in place instead of copied.
#[repr(C, align(64))]
struct Aligned<B: ?Sized>(B);

static DEFAULT_MODEL: &Aligned<[u8]> =
    &Aligned(*include_bytes!("../../models/quill-default.safetensors"));

/// How the built-in model is named in messages and snapshots. Front ends
/// show a model by the file name of its origin (the last `/`-separated
/// part), so the name holds no `/`: with one, the built-in model showed
/// as `quill-default.safetensors)`.
pub const DEFAULT_MODEL_NAME: &str = "built-in quill-default";

/// The embedded model file's bytes.
pub fn default_model_bytes() -> &'static [u8] {
    &DEFAULT_MODEL.0
}

/// Loads the built-in model (read in place from the binary).
pub fn load_default() -> Result<Model> {
    load_default_with(&LoadOptions::default())
}

/// Loads the built-in model with load options (e.g. int8 weights).
pub fn load_default_with(opts: &LoadOptions) -> Result<Model> {
    let file = WeightFile::from_backing(
        Backing::Static(default_model_bytes()),
        DEFAULT_MODEL_NAME.to_string(),
    )?;
    Model::from_file_with(Arc::clone(&file), opts)
}
