//! Arbitrary bytes through the .pth reader (zip directory + pickle
//! interpreter), then the model builder when a tensor table comes out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quill::model::weights::{Backing, WeightFile};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // The reader directly, so inputs that lost their `PK` magic to a
    // mutation still exercise it.
    if let Ok((tensors, _)) = quill::model::pth::read_tensors(data, "fuzz") {
        for (name, t) in &tensors {
            let end = t.start.checked_add(t.byte_len()).expect("end overflows");
            assert!(end <= data.len(), "tensor {name} ends past the file");
        }
    }
    if data.starts_with(b"PK") {
        if let Ok(file) = WeightFile::from_backing(Backing::Owned(data.to_vec()), "fuzz".into()) {
            common::try_model(file);
        }
    }
});
