//! Weight files: the bytes of a checkpoint (memory-mapped, embedded or owned)
//! and a table of the tensors in it. The safetensors reader lives here; the
//! `.pth` reader fills the same table.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{QuillError, Result};

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16 (the top half of an f32).
    BF16,
    /// Quantised int8 weights (`quill convert --dtype int8`): a matrix
    /// `NAME` whose per-block scales are the f32 tensor `NAME` +
    /// [`INT8_SCALES_SUFFIX`] (rows × ⌈cols / 128⌉, see
    /// [`crate::kernels::I8_BLOCK`]). Only weight matrices are stored so.
    I8,
}

/// Name suffix of an int8 matrix's scales tensor ([`DType::I8`]).
pub const INT8_SCALES_SUFFIX: &str = ".q8_scales";

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 => 1,
        }
    }

    /// The safetensors spelling.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I8 => "I8",
        }
    }

    fn from_safetensors(s: &str) -> Option<DType> {
        match s {
            "F32" => Some(DType::F32),
            "F16" => Some(DType::F16),
            "BF16" => Some(DType::BF16),
            "I8" => Some(DType::I8),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "int8",
        })
    }
}

/// Where one tensor's bytes sit in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Byte offset of the first element within the file.
    pub start: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Byte length.
    pub fn byte_len(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

/// The bytes behind a weight file.
pub enum Backing {
    /// A read-only memory map of a file on disk.
    Mmap(memmap2::Mmap),
    /// Bytes compiled into the binary.
    Static(&'static [u8]),
    /// Bytes held in memory (tests, generated models).
    Owned(Vec<u8>),
    /// Bytes generated into an anonymous memory map (synthetic benchmark
    /// models): unlike `Owned`, a tensor's pages can be handed back to the
    /// OS once it was copied out ([`WeightFile::release`]).
    Anon(memmap2::Mmap),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Static(s) => s,
            Backing::Owned(v) => v,
            Backing::Anon(m) => m,
        }
    }
}

/// A checkpoint: its bytes, the tensors in it and its string metadata.
pub struct WeightFile {
    backing: Backing,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// String metadata (safetensors `__metadata__`).
    pub metadata: BTreeMap<String, String>,
    /// Where it came from, for messages.
    pub origin: String,
    /// Tensors whose bytes were discarded by [`WeightFile::release`].
    released: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightFile")
            .field("origin", &self.origin)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Largest safetensors JSON header accepted (the format's own reference
/// implementation uses the same bound); keeps a lying header from allocating.
const MAX_HEADER: u64 = 100_000_000;

impl WeightFile {
    /// Opens a weight file, choosing the reader by content: a zip (`.pth`)
    /// or safetensors.
    pub fn open(path: &Path) -> Result<Arc<WeightFile>> {
        let file = std::fs::File::open(path).map_err(|source| QuillError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let meta = file.metadata().map_err(|source| QuillError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            return Err(QuillError::format(
                path.display(),
                "is a directory, not a model file",
            ));
        }
        // SAFETY: the map is read-only; a file truncated underneath us by
        // another process is outside what any mmap-based loader can guard.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| QuillError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_backing(Backing::Mmap(mmap), path.display().to_string())
    }

    /// Reads weights from bytes in memory (embedded or generated).
    pub fn from_backing(backing: Backing, origin: String) -> Result<Arc<WeightFile>> {
        let bytes = backing.bytes();
        if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
            let (tensors, metadata) = crate::model::pth::read_tensors(bytes, &origin)?;
            return Ok(Arc::new(WeightFile {
                backing,
                tensors,
                metadata,
                origin,
                released: Default::default(),
            }));
        }
        let (tensors, metadata) =
            parse_safetensors(bytes, &origin, "a .safetensors or .pth checkpoint")?;
        Ok(Arc::new(WeightFile {
            backing,
            tensors,
            metadata,
            origin,
            released: Default::default(),
        }))
    }

    /// Whether the bytes are a memory map of a file on disk.
    pub fn is_file_map(&self) -> bool {
        matches!(self.backing, Backing::Mmap(_))
    }

    /// All bytes of the file.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// Looks a tensor up, with an error naming it when absent (or when
    /// its bytes were discarded by [`WeightFile::release`]).
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| QuillError::tensor(name, "missing from the checkpoint"))?;
        if self.released.lock().is_ok_and(|r| r.contains(name)) {
            return Err(QuillError::tensor(
                name,
                "was already copied out of this in-memory model and its bytes released",
            ));
        }
        Ok(info)
    }

    /// Hands tensor `name`'s pages back to the OS after the loader copied
    /// it out (into panels, or converted), so the model does not hold both
    /// copies: the file's resident pages count as this process's memory.
    /// Only whole pages inside the tensor are released, never a neighbour's.
    /// A file map stays readable (pages come back from the page cache); an
    /// [`Backing::Anon`] map reads zeros afterwards, so the tensor is
    /// marked and [`WeightFile::info`] refuses it from then on. Embedded
    /// and `Owned` bytes are kept.
    pub fn release(&self, name: &str) {
        if let Some(info) = self.tensors.get(name) {
            self.release_bytes(name, 0, info.byte_len());
        }
    }

    /// [`WeightFile::release`] for bytes `start..start + len` of tensor
    /// `name` only (whole pages inside that range), so a large tensor can
    /// be handed back piece by piece as it is copied out: resident memory
    /// then never holds both copies of more than one piece.
    pub fn release_bytes(&self, name: &str, start: usize, len: usize) {
        let (Some(info), Backing::Mmap(m) | Backing::Anon(m)) =
            (self.tensors.get(name), &self.backing)
        else {
            return;
        };
        if matches!(self.backing, Backing::Anon(_)) {
            if let Ok(mut r) = self.released.lock() {
                r.insert(name.to_string());
            }
        }
        // Nothing reads an anonymous map's tensor again (`info` now
        // refuses it); a file map's pages come back from the page cache.
        drop_pages(m, info, start, len);
    }

    /// Drops bytes `start..start + len` of tensor `name` from this
    /// process's resident memory when they are a file map; they come back
    /// from the page cache when read again. For a pass that reads every
    /// weight once (the NaN check) without keeping the whole file resident
    /// until the loader has copied each tensor. Loading a 0.4B bf16 file
    /// with `--dtype int8`: peak resident 895 → 632 MB, after the load 567
    /// → 438 MB (the embedding is no longer all resident); as stored (bf16
    /// in panels), 939 → 810 MB; load time +0.07 s (median of 8). Other
    /// backings are left alone.
    pub fn evict(&self, name: &str, start: usize, len: usize) {
        if let (Some(info), Backing::Mmap(m)) = (self.tensors.get(name), &self.backing) {
            drop_pages(m, info, start, len);
        }
    }

    /// The raw little-endian bytes of a tensor.
    pub fn raw(&self, info: &TensorInfo) -> &[u8] {
        &self.bytes()[info.start..info.start + info.byte_len()]
    }

    /// A tensor converted to f32 (a copy; for the small vectors). An int8
    /// tensor is refused: its values mean nothing without its scales.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        if info.dtype == DType::I8 {
            return Err(QuillError::tensor(
                name,
                "is int8, which quill stores only for weight matrices: the file is damaged or not quill's",
            ));
        }
        Ok(bytes_to_f32(info.dtype, self.raw(info)))
    }

    /// Whether any tensor is stored as int8 (a `quill convert --dtype int8` file).
    pub fn has_int8(&self) -> bool {
        self.tensors.values().any(|t| t.dtype == DType::I8)
    }

    /// Total bytes of all tensors.
    pub fn tensor_bytes(&self) -> usize {
        self.tensors.values().map(|t| t.byte_len()).sum()
    }
}

/// Converts little-endian stored elements to f32 (exact for all dtypes here;
/// int8 values as they are, unscaled).
pub fn bytes_to_f32(dtype: DType, raw: &[u8]) -> Vec<f32> {
    match dtype {
        DType::I8 => raw.iter().map(|&b| b as i8 as f32).collect(),
        DType::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        DType::F16 => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        DType::BF16 => raw
            .chunks_exact(2)
            .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
    }
}

type Parsed = (BTreeMap<String, TensorInfo>, BTreeMap<String, String>);

/// Parses and validates a safetensors header: 8-byte little-endian length,
/// a JSON object, then the data. Every offset is checked against the file
/// before anything is read, so a lying header is an error, not a crash.
/// `expected` says what the file should have been, for the errors about a
/// file that is not safetensors at all (a checkpoint, a snapshot).
pub fn parse_safetensors(bytes: &[u8], origin: &str, expected: &str) -> Result<Parsed> {
    let bad = |reason: String| QuillError::format(origin, reason);
    if bytes.len() < 8 {
        return Err(bad(format!(
            "{} bytes is too short for a safetensors header (expected {expected})",
            bytes.len()
        )));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let available = (bytes.len() - 8) as u64;
    if header_len > MAX_HEADER || header_len > available || header_len < 2 {
        return Err(bad(format!(
            "not a safetensors file (header length {header_len} does not fit a {}-byte file); expected {expected}",
            bytes.len()
        )));
    }
    let header_end = 8 + header_len as usize;
    let header = std::str::from_utf8(&bytes[8..header_end]).map_err(|_| {
        bad("safetensors header is not UTF-8 (damaged or not a safetensors file)".into())
    })?;
    if !header.trim_start().starts_with('{') {
        return Err(bad(
            "not a safetensors file (header is not a JSON object)".into()
        ));
    }
    let json: serde_json::Value = serde_json::from_str(header)
        .map_err(|e| bad(format!("safetensors header is not valid JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("safetensors header is not a JSON object".into()))?;
    let data_len = bytes.len() - header_end;
    let mut tensors = BTreeMap::new();
    let metadata = string_metadata(obj);
    let mut ranges: Vec<(usize, usize, String)> = Vec::new();
    for (name, entry) in obj {
        if name == "__metadata__" {
            continue;
        }
        let terr = |reason: &str| bad(format!("tensor `{name}`: {reason}"));
        let dtype_s = entry
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| terr("missing dtype"))?;
        let dtype = DType::from_safetensors(dtype_s).ok_or_else(|| {
            terr(&format!(
                "dtype {dtype_s} is not supported (Quill reads F32, F16 and BF16)"
            ))
        })?;
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| terr("missing shape"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| terr("shape is not a list of sizes"))?;
        let offsets = entry
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| terr("missing data_offsets"))?;
        let begin = offsets[0]
            .as_u64()
            .ok_or_else(|| terr("bad data_offsets"))? as usize;
        let end = offsets[1]
            .as_u64()
            .ok_or_else(|| terr("bad data_offsets"))? as usize;
        let nbytes = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| terr("shape overflows"))?;
        if end < begin || end > data_len {
            return Err(terr(&format!(
                "data offsets {begin}..{end} lie outside the file's {data_len} data bytes (truncated or damaged file)"
            )));
        }
        if end - begin != nbytes {
            return Err(terr(&format!(
                "data offsets {begin}..{end} hold {} bytes but shape {shape:?} of {dtype} needs {nbytes}",
                end - begin
            )));
        }
        ranges.push((begin, end, name.clone()));
        tensors.insert(
            name.clone(),
            TensorInfo {
                dtype,
                shape,
                start: header_end + begin,
            },
        );
    }
    ranges.sort();
    for pair in ranges.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(bad(format!(
                "tensors `{}` and `{}` overlap (damaged file)",
                pair[0].2, pair[1].2
            )));
        }
    }
    Ok((tensors, metadata))
}

/// The string entries of a header's `__metadata__` (others are ignored).
fn string_metadata(
    header: &serde_json::Map<String, serde_json::Value>,
) -> BTreeMap<String, String> {
    header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The string metadata of a safetensors file, reading its header and
/// nothing after it. Listing many large files must not read their data
/// (a session's state runs to megabytes; its header to kilobytes); the
/// price is that the tensors are not checked, so this is for deciding
/// what to offer, never for trusting what is loaded.
pub fn read_safetensors_metadata(path: &Path, expected: &str) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let origin = path.display().to_string();
    let bad = |reason: String| QuillError::format(&origin, reason);
    let io = |source| QuillError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len_bytes = [0u8; 8];
    if file_len < 8 {
        return Err(bad(format!(
            "{file_len} bytes is too short for a safetensors header (expected {expected})"
        )));
    }
    file.read_exact(&mut len_bytes).map_err(io)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER || header_len > file_len - 8 || header_len < 2 {
        return Err(bad(format!(
            "not a safetensors file (header length {header_len} does not fit a {file_len}-byte file); expected {expected}"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("safetensors header is not valid JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("safetensors header is not a JSON object".into()))?;
    Ok(string_metadata(obj))
}

/// One tensor to be written by [`write_safetensors`].
pub struct TensorOut<'a> {
    /// Name in the file.
    pub name: String,
    /// Element type of `data`.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Little-endian element bytes.
    pub data: std::borrow::Cow<'a, [u8]>,
}

/// Serialises tensors and metadata in the safetensors format (header padded
/// to 8 bytes so readers can map f32 data in place). Tensors are written in
/// the order given.
pub fn write_safetensors(
    tensors: &[TensorOut<'_>],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).expect("string map"),
        );
    }
    let mut offset = 0usize;
    for t in tensors {
        let end = offset + t.data.len();
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": t.dtype.safetensors_name(),
                "shape": t.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut json = serde_json::to_string(&serde_json::Value::Object(header)).expect("json");
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    out
}

/// `MADV_DONTNEED` on the whole pages inside bytes `start..start + len`
/// of `info`'s range in map `m` (never a neighbour's page). A file map's
/// pages reload from the page cache on the next read; an anonymous map's
/// read zeros, so its callers make sure nothing reads them again.
fn drop_pages(m: &[u8], info: &TensorInfo, start: usize, len: usize) {
    let end = start.saturating_add(len).min(info.byte_len());
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let base = m.as_ptr() as usize + info.start;
        let a = (base + start.min(end)).next_multiple_of(PAGE);
        let b = (base + end) / PAGE * PAGE;
        if b > a {
            // SAFETY: [a, b) is whole pages of this tensor's range alone,
            // inside the map; what a later read sees is the caller's
            // concern (see above). Failure only keeps the pages.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (m, info, end);
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
