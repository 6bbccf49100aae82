//! Arbitrary bytes as a weight file: the safetensors header parser (and,
//! for bytes that start like a zip, the .pth reader), then the model
//! builder and one forward step when the table parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quill::model::weights::{Backing, WeightFile};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = WeightFile::from_backing(Backing::Owned(data.to_vec()), "fuzz".into()) {
        common::try_model(file);
    }
});
