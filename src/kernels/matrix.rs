//! [`Matrix`]: a weight matrix in its stored dtype, read in place from the
//! weight file when its bytes are aligned, copied only when they are not.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::{QuillError, Result};
use crate::model::weights::{bytes_to_f32, DType, WeightFile};

/// Elements of type `T`, either borrowed from a weight file or owned.
pub enum Store<T: Copy + 'static> {
    /// In the file's bytes (memory map or embedded), aligned for `T`.
    Mapped {
        /// Keeps the bytes alive.
        file: Arc<WeightFile>,
        /// Byte offset of the first element.
        offset: usize,
        /// Element count.
        len: usize,
        /// Element type.
        _t: PhantomData<T>,
    },
    /// A copy (misaligned source, transposed or converted data).
    Owned(Vec<T>),
}

impl<T: Copy + 'static> Store<T> {
    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        match self {
            Store::Mapped {
                file, offset, len, ..
            } => {
                let bytes = &file.bytes()[*offset..*offset + *len * std::mem::size_of::<T>()];
                // SAFETY: alignment and length were checked in `mapped`, the
                // bytes live as long as `file`, and T is a plain number type
                // for which every bit pattern is valid.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, *len) }
            }
            Store::Owned(v) => v,
        }
    }

    /// Borrows `len` elements at `offset` of `file` if aligned for `T`.
    fn mapped(file: &Arc<WeightFile>, offset: usize, len: usize) -> Option<Self> {
        let ptr = file.bytes()[offset..].as_ptr();
        (cfg!(target_endian = "little") && ptr.align_offset(std::mem::align_of::<T>()) == 0).then(
            || Store::Mapped {
                file: Arc::clone(file),
                offset,
                len,
                _t: PhantomData,
            },
        )
    }

    /// Whether this store reads the weight file in place.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Store::Mapped { .. })
    }
}

/// Stored elements of a matrix, by dtype.
pub enum MatData {
    /// f32 weights.
    F32(Store<f32>),
    /// f16 weights (raw bits).
    F16(Store<u16>),
    /// bf16 weights (raw bits).
    BF16(Store<u16>),
}

/// A row-major `rows × cols` weight matrix: `y = W·x` maps `cols` → `rows`.
pub struct Matrix {
    /// Output size.
    pub rows: usize,
    /// Input size.
    pub cols: usize,
    /// The elements.
    pub data: MatData,
}

impl Matrix {
    /// Reads tensor `name` of `file` as a `rows × cols` matrix in place
    /// (copied only if its bytes are misaligned). The tensor's element
    /// count must be `rows·cols`; its shape is validated by the caller.
    pub fn from_file(file: &Arc<WeightFile>, name: &str, rows: usize, cols: usize) -> Result<Self> {
        let info = file.info(name)?;
        if info.numel() != rows * cols {
            return Err(QuillError::tensor(
                name,
                format!("has shape {:?}, expected {rows}×{cols}", info.shape),
            ));
        }
        let raw = file.raw(info);
        let n = rows * cols;
        let data = match info.dtype {
            DType::F32 => MatData::F32(
                Store::mapped(file, info.start, n)
                    .unwrap_or_else(|| Store::Owned(bytes_to_f32(DType::F32, raw))),
            ),
            DType::F16 => MatData::F16(
                Store::mapped(file, info.start, n).unwrap_or_else(|| Store::Owned(le_u16(raw))),
            ),
            DType::BF16 => MatData::BF16(
                Store::mapped(file, info.start, n).unwrap_or_else(|| Store::Owned(le_u16(raw))),
            ),
        };
        Ok(Matrix { rows, cols, data })
    }

    /// Reads tensor `name` stored as (in, out) — the LoRA layout `x @ W` —
    /// and transposes it into an owned f32 `out × in` matrix. LoRA factors
    /// are small (C × 32..128), so the copy costs little memory.
    pub fn from_file_transposed(
        file: &Arc<WeightFile>,
        name: &str,
        inner: usize,
        outer: usize,
    ) -> Result<Self> {
        let info = file.info(name)?;
        if info.shape.len() != 2 || info.shape[0] != inner || info.shape[1] != outer {
            return Err(QuillError::tensor(
                name,
                format!("has shape {:?}, expected [{inner}, {outer}]", info.shape),
            ));
        }
        let src = bytes_to_f32(info.dtype, file.raw(info));
        let mut t = vec![0.0f32; inner * outer];
        for i in 0..inner {
            for o in 0..outer {
                t[o * inner + i] = src[i * outer + o];
            }
        }
        Ok(Matrix::from_f32(outer, inner, t))
    }

    /// An owned f32 matrix.
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * cols);
        Matrix {
            rows,
            cols,
            data: MatData::F32(Store::Owned(data)),
        }
    }

    /// Stored dtype.
    pub fn dtype(&self) -> DType {
        match self.data {
            MatData::F32(_) => DType::F32,
            MatData::F16(_) => DType::F16,
            MatData::BF16(_) => DType::BF16,
        }
    }

    /// Bytes per stored element.
    pub fn dtype_size(&self) -> usize {
        self.dtype().size()
    }

    /// Bytes of weights one full product reads.
    pub fn byte_len(&self) -> usize {
        self.rows * self.cols * self.dtype_size()
    }

    /// Whether the weights are read in place from the file.
    pub fn is_mapped(&self) -> bool {
        match &self.data {
            MatData::F32(s) => s.is_mapped(),
            MatData::F16(s) | MatData::BF16(s) => s.is_mapped(),
        }
    }

    /// Copies row `r` into `out` as f32 (embedding lookup).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let c = self.cols;
        match &self.data {
            MatData::F32(s) => out.copy_from_slice(&s.as_slice()[r * c..(r + 1) * c]),
            MatData::BF16(s) => {
                for (o, &b) in out.iter_mut().zip(&s.as_slice()[r * c..(r + 1) * c]) {
                    *o = super::scalar::bf16_to_f32(b);
                }
            }
            MatData::F16(s) => {
                for (o, &b) in out.iter_mut().zip(&s.as_slice()[r * c..(r + 1) * c]) {
                    *o = half::f16::from_bits(b).to_f32();
                }
            }
        }
    }
}

fn le_u16(raw: &[u8]) -> Vec<u16> {
    raw.chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}
