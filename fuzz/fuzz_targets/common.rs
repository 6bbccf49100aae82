//! Checks shared by the model-loading targets.

use std::sync::Arc;

use quill::model::weights::WeightFile;
use quill::model::{Logits, Model};

/// Every tensor the table lists must lie inside the file: the loaders
/// promise it, and [`WeightFile::raw`] slices without further checks.
pub fn check_table(file: &WeightFile) {
    let len = file.bytes().len();
    for (name, t) in &file.tensors {
        let end = t
            .start
            .checked_add(t.byte_len())
            .unwrap_or_else(|| panic!("tensor {name}: end overflows"));
        assert!(end <= len, "tensor {name} ends at {end}, past {len}");
    }
}

/// Builds a model if the table describes one, and runs one token: a model
/// that loads must run without panicking (shapes were all checked).
pub fn try_model(file: Arc<WeightFile>) {
    check_table(&file);
    let Ok(model) = Model::from_file(file) else {
        return;
    };
    let vocab = model.info().dims.vocab;
    let mut state = model.new_state();
    if let Ok(logits) = model.forward(&[0, (vocab - 1) as u32], &mut state, Logits::Last) {
        assert_eq!(logits.len(), vocab);
    }
    assert!(model
        .forward(&[vocab as u32], &mut state, Logits::Last)
        .is_err());
}
