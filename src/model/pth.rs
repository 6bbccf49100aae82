//! Reader for PyTorch `.pth` checkpoints (zip + pickle). Placeholder until
//! the real reader lands.

use std::collections::BTreeMap;

use super::weights::TensorInfo;
use crate::error::{QuillError, Result};

/// Reads the tensor table of a torch zip checkpoint.
pub fn read_tensors(
    _bytes: &[u8],
    origin: &str,
) -> Result<(BTreeMap<String, TensorInfo>, BTreeMap<String, String>)> {
    Err(QuillError::format(
        origin,
        ".pth checkpoints are not supported yet; convert to safetensors",
    ))
}
