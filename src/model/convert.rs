//! Checkpoint conversion to safetensors, streamed tensor by tensor so a
//! multi-gigabyte model never needs a second copy in memory.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::weights::{bytes_to_f32, DType, WeightFile};
use crate::error::{QuillError, Result};

/// Converts one element buffer to `to`, rounding to nearest even as torch.
pub fn convert_elements(from: DType, to: DType, raw: &[u8]) -> Vec<u8> {
    if from == to {
        return raw.to_vec();
    }
    let vals = bytes_to_f32(from, raw);
    match to {
        DType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => vals
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes())
            .collect(),
        DType::BF16 => vals
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes())
            .collect(),
    }
}

/// Writes every tensor of `file` to `out` as safetensors in `dtype` (None:
/// as stored), with `metadata`. The file appears atomically: it is written
/// beside the target, synced, then renamed.
pub fn write_converted(
    file: &WeightFile,
    out: &Path,
    dtype: Option<DType>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let werr = |source| QuillError::Write {
        path: out.to_path_buf(),
        source,
    };
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata).expect("map"),
    );
    let mut offset = 0usize;
    let plan: Vec<(&String, DType)> = file
        .tensors
        .iter()
        .map(|(name, info)| (name, dtype.unwrap_or(info.dtype)))
        .collect();
    for (name, to) in &plan {
        let info = &file.tensors[*name];
        let len = info.numel() * to.size();
        header.insert(
            (*name).clone(),
            serde_json::json!({"dtype": to.safetensors_name(), "shape": info.shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut json = serde_json::Value::Object(header).to_string();
    while (8 + json.len()) % 8 != 0 {
        json.push(' ');
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        out.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let f = std::fs::File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(json.as_bytes())?;
        for (name, to) in &plan {
            let info = &file.tensors[*name];
            w.write_all(&convert_elements(info.dtype, *to, file.raw(info)))?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(werr)
}
