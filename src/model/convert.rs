//! Checkpoint conversion to safetensors, streamed tensor by tensor so a
//! multi-gigabyte model never needs a second copy in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use super::weights::{bytes_to_f32, DType, WeightFile, INT8_SCALES_SUFFIX};
use crate::error::{QuillError, Result};
use crate::kernels::{Matrix, WeightDtype, I8_BLOCK};

/// Converts one element buffer to `to`, rounding to nearest even as torch.
///
/// # Panics
/// If `to` is [`DType::I8`]: int8 needs per-block scales, which
/// [`write_converted`] computes per matrix.
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
        DType::I8 => panic!("convert_elements: int8 needs scales (write_converted's `int8`)"),
    }
}

/// Writes every tensor of `file` to `out` as safetensors in `dtype` (None:
/// as stored), with `metadata`. With `dtype` [`DType::I8`], the tensors
/// named in `int8` are quantised as `--dtype int8` quantises them at load
/// (per-row blocks of [`crate::kernels::I8_BLOCK`], scales in a companion
/// f32 tensor, see [`DType::I8`]) and the rest keep their dtype. The file
/// appears atomically: it is written beside the target, synced, then
/// renamed.
pub fn write_converted(
    file: &Arc<WeightFile>,
    out: &Path,
    dtype: Option<DType>,
    int8: &BTreeSet<String>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    if file.has_int8() {
        return Err(QuillError::Invalid(
            "the input is already quantised (int8): convert the original checkpoint instead".into(),
        ));
    }
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
    // (name, dtype written): an int8 matrix is followed by its scales.
    let quantised = |name: &str| dtype == Some(DType::I8) && int8.contains(name);
    let mut plan: Vec<(String, DType, Vec<usize>)> = Vec::new();
    for (name, info) in &file.tensors {
        if quantised(name) {
            let [rows, cols] = info.shape[..] else {
                return Err(QuillError::tensor(name, "is not a 2-D matrix"));
            };
            plan.push((name.clone(), DType::I8, info.shape.clone()));
            plan.push((
                format!("{name}{INT8_SCALES_SUFFIX}"),
                DType::F32,
                vec![rows, cols.div_ceil(I8_BLOCK)],
            ));
        } else {
            let to = match dtype {
                None | Some(DType::I8) => info.dtype,
                Some(d) => d,
            };
            plan.push((name.clone(), to, info.shape.clone()));
        }
    }
    for (name, to, shape) in &plan {
        let len = shape.iter().product::<usize>() * to.size();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": to.safetensors_name(), "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut json = serde_json::Value::Object(header).to_string();
    while !(8 + json.len()).is_multiple_of(8) {
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
        let mut scales = Vec::new();
        for (name, to, shape) in &plan {
            if let Some(info) = file.tensors.get(name).filter(|_| !quantised(name)) {
                w.write_all(&convert_elements(info.dtype, *to, file.raw(info)))?;
            } else if *to == DType::I8 {
                let m = Matrix::from_file(file, name, shape[0], shape[1])
                    .map_err(std::io::Error::other)?
                    .convert(WeightDtype::Int8);
                let (q, s) = m.i8_file_bytes().expect("converted to row-major int8");
                w.write_all(&q)?;
                scales = s;
            } else {
                // The scales of the int8 matrix just written.
                w.write_all(&std::mem::take(&mut scales))?;
            }
            // Read once: its pages go back to the page cache rather than
            // stay resident until the end (a file map; other backings
            // are left alone). A 0.4B bf16 safetensors file to int8 or
            // bf16: peak resident 1.09 → 0.32 GB (GNU time's maximum RSS
            // 1,061,188 → 311,016 KiB to int8), the same bytes out.
            if let Some(info) = file.tensors.get(name) {
                file.evict(name, 0, info.byte_len());
            }
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
