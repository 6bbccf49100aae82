//! [`Matrix`]: a weight matrix in its stored dtype, read in place from the
//! weight file when its bytes are aligned, copied only when they are not;
//! or converted at load time to another [`WeightDtype`], including int8
//! with per-block scales.

use std::marker::PhantomData;
use std::sync::Arc;

use super::huge::HugeBuf;
use crate::error::{QuillError, Result};
use crate::model::weights::{bytes_to_f32, DType, TensorInfo, WeightFile};

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
    /// A copy on huge pages (`HugeBuf`): matrices in panels.
    Huge(HugeBuf<T>),
}

impl<T: Copy + 'static> std::ops::Deref for Store<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
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
            Store::Huge(h) => h,
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

/// Elements per int8 quantisation block: each run of `I8_BLOCK` weights
/// along a row (the last one of a row may be shorter) shares one f32 scale.
///
/// Why blocks of 128: a block bounds the damage of an outlier weight to its
/// 127 neighbours, where a per-row scale lets one large weight coarsen a
/// whole 1024–4096-wide row (released RWKV checkpoints have such
/// outliers); the scale costs 4/128 = 3.1% extra bytes. Against blocks of
/// 64 (6.25%): 0.4B int8 reads 413.8 MB per decoded token instead of
/// 425.4, and four alternating bench pairs gave decode 59.8 against 58.1
/// tokens/s and prefill 198 against 185 (fewer scales to apply when
/// widening). Quality barely moves on the trained fixtures: perplexity
/// of the README text, int8 against f32, +0.11% / +0.03% / −0.09% /
/// −0.11% for the built-in model / v7 / v5 / v4 with blocks of 128, and
/// +0.07% / +0.03% / −0.07% / −0.06% with 64; tests/int8.rs's max
/// |Δlogit| is 0.0120 and 0.0121 (whole rows: 0.0122). 128 also divides
/// the GEMM's k-block, so packing never splits a block.
pub const I8_BLOCK: usize = 128;

/// Stored elements of a matrix, by dtype.
pub enum MatData {
    /// f32 weights.
    F32(Store<f32>),
    /// f16 weights (raw bits).
    F16(Store<u16>),
    /// bf16 weights (raw bits).
    BF16(Store<u16>),
    /// Symmetric int8 weights: `w[r][c] ≈ q[r·cols + c] · scales[r·nb + c / I8_BLOCK]`
    /// with `nb = cols.div_ceil(I8_BLOCK)` blocks per row ([`I8_BLOCK`]),
    /// every q within ±127 (the AVX2 kernels cannot negate −128; files
    /// holding one are refused at load).
    /// Matrix–vector products quantise x to int8 ([`quantize_x8`]) and sum
    /// in integers; matrix–matrix products widen the weights to f32.
    I8 {
        /// Quantised weights, in the matrix's layout.
        q: Store<i8>,
        /// One scale per block (`rows × nb`), in the matrix's layout.
        scales: Store<f32>,
    },
}

/// The dtype weights are held in for computing, as chosen at load time
/// (`--dtype`): the file's dtypes plus int8, which only exists in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// int8 with per-block f32 scales ([`I8_BLOCK`]).
    Int8,
}

impl WeightDtype {
    /// Every dtype, in the order `--dtype` lists them.
    pub const ALL: [WeightDtype; 4] = [
        WeightDtype::F32,
        WeightDtype::F16,
        WeightDtype::BF16,
        WeightDtype::Int8,
    ];

    /// The spelling used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            WeightDtype::F32 => "f32",
            WeightDtype::F16 => "f16",
            WeightDtype::BF16 => "bf16",
            WeightDtype::Int8 => "int8",
        }
    }
}

impl From<DType> for WeightDtype {
    fn from(d: DType) -> Self {
        match d {
            DType::F32 => WeightDtype::F32,
            DType::F16 => WeightDtype::F16,
            DType::BF16 => WeightDtype::BF16,
            DType::I8 => WeightDtype::Int8,
        }
    }
}

impl std::fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for WeightDtype {
    type Err = QuillError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(WeightDtype::F32),
            "f16" | "fp16" | "float16" => Ok(WeightDtype::F16),
            "bf16" | "bfloat16" => Ok(WeightDtype::BF16),
            "int8" | "i8" | "q8" => Ok(WeightDtype::Int8),
            other => Err(QuillError::Invalid(format!(
                "unknown weight dtype `{other}`; expected f32, f16, bf16 or int8"
            ))),
        }
    }
}

/// Rows per panel of [`Layout::Panels`].
pub const PANEL_ROWS: usize = 4;

/// Widest slab of a matrix in panels ([`Layout::Panels`]): 1024 columns
/// keep a slab of x (4 KiB in f32) and a group's slab (8 KiB in bf16)
/// together well inside a 32 KiB L1.
pub const SLAB_MAX: usize = 1024;

/// Slab widths are multiples of this, so a slab is whole panel pieces,
/// whole int8 blocks and whole k-blocks of the matrix–matrix product.
const SLAB_UNIT: usize = 256;

/// Columns per slab of a `cols`-wide matrix in panels: all of them up to
/// `SLAB_MAX`, else the widest multiple of `SLAB_UNIT` up to
/// `SLAB_MAX` that divides `cols` (every released model's widths are
/// multiples of 256), else all of them (one slab).
pub fn slab_width(cols: usize) -> usize {
    if cols <= SLAB_MAX {
        return cols;
    }
    (1..=SLAB_MAX / SLAB_UNIT)
        .rev()
        .map(|k| k * SLAB_UNIT)
        .find(|s| cols.is_multiple_of(*s))
        .unwrap_or(cols)
}

/// How a matrix's elements (and int8 scales) are ordered in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Row-major: element (r, c) at `r·cols + c`.
    Rows,
    /// Panels of [`PANEL_ROWS`] rows for the matrix–vector kernels: each
    /// full group of 4 rows keeps its own 4·cols elements (up to
    /// `SLAB_MAX` columns, where it would be row-major), ordered piece by
    /// piece — columns `p·P..(p+1)·P` of row 0, then of rows 1, 2, 3, then
    /// the next piece — with `P` = [`Matrix::panel_piece`] (16 for bf16:
    /// one 256-bit load per row; [`I8_BLOCK`] for int8, whose scales are
    /// laid out the same way with pieces of 1). Rows past the last full
    /// group stay row-major.
    ///
    /// A wide matrix (more than `SLAB_MAX` columns) is cut into column
    /// slabs of [`Matrix::slab_cols`] columns, stored one after the other,
    /// each in panels as above: the panels of columns `0..S` of all full
    /// groups, then of columns `S..2S`, and so on. Why: a group sums against
    /// all of x, and a 4096-wide bf16 group (32 KiB) streamed through L1
    /// pushes x's 16 KiB out of it before the next group uses x again, so
    /// every load of x missed L1 as well. Measured (one 4096-column
    /// pass, 1 thread): 19.5 GB/s against 27.5 with x's footprint cut to
    /// 4 KiB; 2048 columns lost 3–12%.
    ///
    /// Why: a row kernel sums 4 rows at once to share each load of x, which
    /// row-major makes 4 interleaved streams of one row each (2 KiB for a
    /// 1024-wide bf16 row) — too short for the hardware prefetcher, so the
    /// kernel prefetched by hand and still read slower than a plain sum. In
    /// panels a task reads one sequential stream. Measured here (2 threads,
    /// 128 MiB passes interleaved with a plain sum on huge pages): 29.3
    /// GB/s against 26.7 row-major and 31.6 for the sum.
    Panels,
}

/// A `rows × cols` weight matrix: `y = W·x` maps `cols` → `rows`, its
/// elements ordered as `layout` says.
pub struct Matrix {
    /// Output size.
    pub rows: usize,
    /// Input size.
    pub cols: usize,
    /// The elements.
    pub data: MatData,
    /// Their order.
    pub layout: Layout,
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
            DType::I8 => i8_from_file(file, name, info, rows, cols)?,
        };
        Ok(Matrix {
            rows,
            cols,
            data,
            layout: Layout::Rows,
        })
    }
    /// The int8 weights of a row-major `rows × cols` matrix (as
    /// [`Matrix::convert`] to int8 makes them) as the bytes of a [`DType::I8`]
    /// tensor and of its f32 scales tensor; `None` for other dtypes or
    /// layouts.
    pub fn i8_file_bytes(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match (&self.data, self.layout) {
            (MatData::I8 { q, scales }, Layout::Rows) => Some((
                q.iter().map(|&v| v as u8).collect(),
                scales.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )),
            _ => None,
        }
    }

    /// An owned f32 matrix.
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * cols);
        Matrix {
            rows,
            cols,
            data: MatData::F32(Store::Owned(data)),
            layout: Layout::Rows,
        }
    }

    /// Reads tensor `name` stored as (in, out) — the LoRA layout `x @ W` —
    /// and transposes it into an owned `out × in` matrix in the stored
    /// dtype (f32, f16 or bf16 as in the file): no widening, so a bf16
    /// model's LoRA factors cost 2 bytes per weight in memory and per token.
    pub fn from_file_transposed_stored(
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
        let raw = file.raw(info);
        let data = match info.dtype {
            DType::F32 => MatData::F32(Store::Owned(transpose(
                &bytes_to_f32(DType::F32, raw),
                inner,
                outer,
            ))),
            DType::F16 => MatData::F16(Store::Owned(transpose(&le_u16(raw), inner, outer))),
            DType::BF16 => MatData::BF16(Store::Owned(transpose(&le_u16(raw), inner, outer))),
            DType::I8 => {
                return Err(QuillError::tensor(
                    name,
                    "is int8, but quill stores LoRA factors as floats: the file is damaged",
                ))
            }
        };
        Ok(Matrix {
            rows: outer,
            cols: inner,
            data,
            layout: Layout::Rows,
        })
    }

    /// Stored dtype.
    pub fn weight_dtype(&self) -> WeightDtype {
        match self.data {
            MatData::F32(_) => WeightDtype::F32,
            MatData::F16(_) => WeightDtype::F16,
            MatData::BF16(_) => WeightDtype::BF16,
            MatData::I8 { .. } => WeightDtype::Int8,
        }
    }

    /// Bytes per stored weight (int8: 1, its scales not counted).
    pub fn dtype_size(&self) -> usize {
        match self.data {
            MatData::F32(_) => 4,
            MatData::F16(_) | MatData::BF16(_) => 2,
            MatData::I8 { .. } => 1,
        }
    }

    /// Address of the stored weight (r, c) (int8: its quantised byte), for
    /// prefetch hints: where [`Matrix::offset`] puts it in memory.
    pub fn addr_of(&self, r: usize, c: usize) -> usize {
        let base = match &self.data {
            MatData::F32(s) => s.as_slice().as_ptr() as usize,
            MatData::F16(s) | MatData::BF16(s) => s.as_slice().as_ptr() as usize,
            MatData::I8 { q, .. } => q.as_ptr() as usize,
        };
        base + self.offset(r, c) * self.dtype_size()
    }

    /// Bytes of weights one full product reads (int8: the quantised
    /// weights plus their scales).
    pub fn byte_len(&self) -> usize {
        match &self.data {
            MatData::F32(_) => self.rows * self.cols * 4,
            MatData::F16(_) | MatData::BF16(_) => self.rows * self.cols * 2,
            MatData::I8 { q, scales } => q.len() + scales.len() * 4,
        }
    }

    /// Whether the weights are read in place from the file.
    pub fn is_mapped(&self) -> bool {
        match &self.data {
            MatData::F32(s) => s.is_mapped(),
            MatData::F16(s) | MatData::BF16(s) => s.is_mapped(),
            MatData::I8 { .. } => false,
        }
    }

    /// Int8 blocks per row ([`I8_BLOCK`]).
    pub fn i8_blocks_per_row(&self) -> usize {
        self.cols.div_ceil(I8_BLOCK)
    }

    /// This matrix held as `to`: returned unchanged (still read in place)
    /// when it already is, otherwise converted row by row in parallel into
    /// an owned copy. f32 → bf16/f16 round to nearest even; int8 uses
    /// symmetric per-block scales `max|w| / 127` ([`I8_BLOCK`]).
    pub fn convert(self, to: WeightDtype) -> Matrix {
        self.convert_then(to, |_| {})
    }

    /// [`Matrix::convert`], calling `done(rows)` as each run of source rows
    /// has been converted (every row once, runs in any order, possibly from
    /// several threads), so the caller can hand the source's memory back
    /// while the conversion goes on. Not called when nothing is converted.
    pub fn convert_then(
        self,
        to: WeightDtype,
        done: impl Fn(std::ops::Range<usize>) + Sync,
    ) -> Matrix {
        if self.weight_dtype() == to {
            return self;
        }
        use rayon::prelude::*;
        let (rows, cols) = (self.rows, self.cols);
        // Rows per parallel task, so each task converts ≥ ~64 Ki weights.
        let rpt = (65536 / cols.max(1)).max(1);
        let data = match to {
            WeightDtype::F32 => {
                let mut out = vec![0.0f32; rows * cols];
                out.par_chunks_mut(rpt * cols)
                    .enumerate()
                    .for_each(|(i, o)| {
                        for (j, row) in o.chunks_mut(cols).enumerate() {
                            self.row_f32(i * rpt + j, row);
                        }
                        done(i * rpt..i * rpt + o.len() / cols);
                    });
                MatData::F32(Store::Owned(out))
            }
            WeightDtype::F16 | WeightDtype::BF16 => {
                let mut out = vec![0u16; rows * cols];
                let bf = to == WeightDtype::BF16;
                out.par_chunks_mut(rpt * cols)
                    .enumerate()
                    .for_each(|(i, o)| {
                        let mut tmp = vec![0.0f32; cols];
                        for (j, row) in o.chunks_mut(cols).enumerate() {
                            self.row_f32(i * rpt + j, &mut tmp);
                            for (d, &v) in row.iter_mut().zip(&tmp) {
                                *d = if bf {
                                    half::bf16::from_f32(v).to_bits()
                                } else {
                                    half::f16::from_f32(v).to_bits()
                                };
                            }
                        }
                        done(i * rpt..i * rpt + o.len() / cols);
                    });
                if bf {
                    MatData::BF16(Store::Owned(out))
                } else {
                    MatData::F16(Store::Owned(out))
                }
            }
            WeightDtype::Int8 => {
                let nb = cols.div_ceil(I8_BLOCK);
                let mut q = vec![0i8; rows * cols];
                let mut scales = vec![0.0f32; rows * nb];
                q.par_chunks_mut(rpt * cols)
                    .zip(scales.par_chunks_mut(rpt * nb))
                    .enumerate()
                    .for_each(|(i, (qo, so))| {
                        let mut tmp = vec![0.0f32; cols];
                        for (j, (qr, sr)) in qo.chunks_mut(cols).zip(so.chunks_mut(nb)).enumerate()
                        {
                            self.row_f32(i * rpt + j, &mut tmp);
                            quantize_row(&tmp, qr, sr);
                        }
                        done(i * rpt..i * rpt + so.len() / nb);
                    });
                MatData::I8 {
                    q: Store::Owned(q),
                    scales: Store::Owned(scales),
                }
            }
        };
        Matrix {
            rows,
            cols,
            data,
            layout: Layout::Rows,
        }
    }

    /// Copies row `r` into `out` as f32 (embedding lookup, conversion).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let c = self.cols;
        let piece = self.panel_piece().min(c.max(1));
        // Row r is `c / piece` runs of `piece` elements (one run when
        // row-major), each converted as a whole.
        for (p, o) in out[..c].chunks_mut(piece).enumerate() {
            let s = self.offset(r, p * piece);
            match &self.data {
                MatData::F32(st) => o.copy_from_slice(&st.as_slice()[s..s + o.len()]),
                MatData::BF16(st) => {
                    for (o, &b) in o.iter_mut().zip(&st.as_slice()[s..]) {
                        *o = super::scalar::bf16_to_f32(b);
                    }
                }
                MatData::F16(st) => {
                    for (o, &b) in o.iter_mut().zip(&st.as_slice()[s..]) {
                        *o = half::f16::from_bits(b).to_f32();
                    }
                }
                MatData::I8 { q, scales } => {
                    for (i, (o, &v)) in o.iter_mut().zip(&q[s..]).enumerate() {
                        let col = p * piece + i;
                        *o = v as f32 * scales[self.scale_offset(r, col / I8_BLOCK)];
                    }
                }
            }
        }
    }

    /// Columns per panel piece ([`Layout::Panels`]) for this dtype; the
    /// whole row when row-major.
    pub fn panel_piece(&self) -> usize {
        match (self.layout, panel_piece_of(&self.data)) {
            (Layout::Panels, Some(piece)) => piece,
            _ => self.cols.max(1),
        }
    }

    /// Rows held in panels: the full groups of [`PANEL_ROWS`] (0 when
    /// row-major).
    pub fn panel_rows(&self) -> usize {
        match self.layout {
            Layout::Rows => 0,
            Layout::Panels => self.rows / PANEL_ROWS * PANEL_ROWS,
        }
    }

    /// Columns per slab ([`Layout::Panels`], [`slab_width`]); all of them
    /// when row-major.
    pub fn slab_cols(&self) -> usize {
        match self.layout {
            Layout::Rows => self.cols,
            Layout::Panels => slab_width(self.cols),
        }
    }

    /// Index of element (r, c) in the stored elements.
    pub fn offset(&self, r: usize, c: usize) -> usize {
        let full = self.panel_rows();
        panel_index(r, c, self.cols, full, self.panel_piece(), self.slab_cols())
    }

    /// Index of the scale of int8 block `b` of row `r`.
    pub fn scale_offset(&self, r: usize, b: usize) -> usize {
        let slab = self.slab_cols() / I8_BLOCK;
        panel_index(r, b, self.i8_blocks_per_row(), self.panel_rows(), 1, slab)
    }

    /// Whether [`Matrix::into_panels`] would lay this matrix out in panels:
    /// bf16 or int8, at least one full group of rows, and whole pieces per
    /// row (the kernels have no ragged-piece path).
    pub fn can_use_panels(&self) -> bool {
        let Some(piece) = panel_piece_of(&self.data) else {
            return false;
        };
        self.layout == Layout::Rows && self.rows >= PANEL_ROWS && self.cols.is_multiple_of(piece)
    }

    /// This matrix in [`Layout::Panels`] (a new owned copy, in memory that
    /// asks for huge pages), or unchanged when [`Matrix::can_use_panels`]
    /// says no.
    pub fn into_panels(self) -> Matrix {
        self.into_panels_then(|_| {})
    }

    /// [`Matrix::into_panels`], calling `done(rows)` as each band of source
    /// rows has been copied (every row once, in order), so the caller can
    /// hand the source's memory back while the copy goes on.
    pub fn into_panels_then(self, done: impl Fn(std::ops::Range<usize>) + Sync) -> Matrix {
        if !self.can_use_panels() {
            return self;
        }
        let (rows, cols) = (self.rows, self.cols);
        let full = rows / PANEL_ROWS * PANEL_ROWS;
        let piece = panel_piece_of(&self.data).unwrap_or(cols);
        let slab = slab_width(cols);
        let data = match &self.data {
            MatData::BF16(st) => MatData::BF16(Store::Huge(to_panels(
                st.as_slice(),
                rows,
                cols,
                full,
                piece,
                slab,
                &done,
            ))),
            MatData::I8 { q, scales } => {
                let nb = self.i8_blocks_per_row();
                let q = to_panels(q, rows, cols, full, piece, slab, &done);
                let scales = to_panels(scales, rows, nb, full, 1, slab / I8_BLOCK, &|_| {});
                MatData::I8 {
                    q: Store::Huge(q),
                    scales: Store::Huge(scales),
                }
            }
            _ => unreachable!("can_use_panels admits bf16 and int8 only"),
        };
        Matrix {
            rows,
            cols,
            data,
            layout: Layout::Panels,
        }
    }
}

/// Columns per panel piece for a dtype that can be laid out in panels:
/// 16 bf16 weights (one 256-bit load per row), one int8 block.
fn panel_piece_of(data: &MatData) -> Option<usize> {
    match data {
        MatData::BF16(_) => Some(16),
        MatData::I8 { .. } => Some(I8_BLOCK),
        _ => None,
    }
}

/// Index of element (r, c) of a `cols`-wide matrix whose first `full` rows
/// are in panels of `piece`-column pieces, in slabs of `slab` columns
/// ([`Layout::Panels`]).
fn panel_index(r: usize, c: usize, cols: usize, full: usize, piece: usize, slab: usize) -> usize {
    if r >= full {
        return r * cols + c;
    }
    let (s, c) = (c / slab, c % slab);
    let (g, q) = (r / PANEL_ROWS, r % PANEL_ROWS);
    s * full * slab
        + g * PANEL_ROWS * slab
        + (c / piece) * PANEL_ROWS * piece
        + q * piece
        + c % piece
}

/// Source bytes per band of [`to_panels`].
const BAND_BYTES: usize = 8 << 20;

/// Row-major `src` (rows × cols) reordered into panels over its first
/// `full` rows, in slabs of `slab` columns, in a fresh `HugeBuf`; groups
/// run in parallel, in bands of ~[`BAND_BYTES`] of `src`, and `done` is
/// told each band's source rows once they are copied.
fn to_panels<T: Copy + Default + Send + Sync>(
    src: &[T],
    rows: usize,
    cols: usize,
    full: usize,
    piece: usize,
    slab: usize,
    done: &(dyn Fn(std::ops::Range<usize>) + Sync),
) -> HugeBuf<T> {
    use rayon::prelude::*;
    use std::mem::MaybeUninit;
    fn fill<T: Copy>(d: &mut [MaybeUninit<T>], s: &[T]) {
        for (d, &v) in d.iter_mut().zip(s) {
            d.write(v);
        }
    }
    let mut out = HugeBuf::<T>::uninit(rows * cols);
    let groups = full / PANEL_ROWS;
    let (panels, tail) = out.uninit_mut().split_at_mut(full * cols);
    // Chunk k: group g of slab sl, in slab-major order.
    let mut chunks: Vec<_> = panels.chunks_mut(PANEL_ROWS * slab).enumerate().collect();
    let group_bytes = PANEL_ROWS * cols * std::mem::size_of::<T>();
    let band = (BAND_BYTES / group_bytes.max(1)).max(1);
    for g0 in (0..groups).step_by(band) {
        let g1 = (g0 + band).min(groups);
        chunks
            .par_iter_mut()
            .filter(|(k, _)| (g0..g1).contains(&(k % groups)))
            .for_each(|(k, dst)| {
                let (sl, g) = (*k / groups, *k % groups);
                // Piece p of row q of the group goes to slot (p, q).
                for (slot, d) in dst.chunks_exact_mut(piece).enumerate() {
                    let (p, q) = (slot / PANEL_ROWS, slot % PANEL_ROWS);
                    let s = (g * PANEL_ROWS + q) * cols + sl * slab + p * piece;
                    fill(d, &src[s..s + piece]);
                }
            });
        done(g0 * PANEL_ROWS..g1 * PANEL_ROWS);
    }
    fill(tail, &src[full * cols..rows * cols]);
    done(full..rows);
    // SAFETY: the loops above wrote all rows·cols elements (every group's
    // slots and the row-major tail).
    unsafe { out.assume_init() }
}

/// Symmetric int8 quantisation of one row, block by block: scale =
/// max|w| / 127 so the largest weight of each block maps to ±127 exactly;
/// an all-zero block gets scale 0.
pub fn quantize_row(row: &[f32], q: &mut [i8], scales: &mut [f32]) {
    for ((blk, qb), s) in row
        .chunks(I8_BLOCK)
        .zip(q.chunks_mut(I8_BLOCK))
        .zip(scales.iter_mut())
    {
        let amax = blk.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
        *s = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (d, &v) in qb.iter_mut().zip(blk) {
            *d = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
    }
}

/// 1.5·2²³: adding it to an f32 of magnitude ≤ 2²² and subtracting it again
/// rounds to the nearest integer, ties to even (the sum's ulp is 1).
/// `f32::round` is a libm call on baseline x86-64 (no SSE4.1), ~5 ns per
/// element, which cost ~1 ms per decoded int8 token in [`quantize_x8`].
pub(super) const ROUND_MAGIC: f32 = 12_582_912.0;

/// One activation quantised with its block's `inv = 127 / max|x|`:
/// `v·inv` rounded to nearest even ([`ROUND_MAGIC`]), saturated to ±127
/// (only reached when `inv` overflowed, for blocks below ~1e-36), NaN → 0.
#[inline]
pub(super) fn quantize_one(v: f32, inv: f32) -> i8 {
    ((v * inv + ROUND_MAGIC) - ROUND_MAGIC).clamp(-127.0, 127.0) as i8
}

/// Quantises an activation vector to int8 for the int8 matrix–vector
/// kernels, per [`I8_BLOCK`] block: scale = max|x| / 127, so each value is
/// within 1/254 of its block's largest, the same grid as the weights
/// ([`quantize_row`]). Both sides in ±127 is what lets the AVX2 kernel
/// multiply with `vpmaddubsw` (|x| unsigned × w with x's sign): a pair of
/// products is at most 2·127² = 32258, so its i16 sum never saturates, and
/// a block's sum is exact in i32. Measured on the trained fixtures (decode
/// path, a 1.8 KB English text, against the same int8 weights with x in
/// int16): perplexity +0.021% (v4), +0.015% (v5), +0.005% (v7); the v7
/// fixture's largest |Δlogit| to f32 0.0176 against 0.0120.
pub fn quantize_x8(x: &[f32], xq: &mut Vec<i8>, xs: &mut Vec<f32>) {
    xq.clear();
    xs.clear();
    for blk in x.chunks(I8_BLOCK) {
        let amax = blk
            .iter()
            .map(|v| v.abs())
            .fold(0.0f32, |m, a| if a > m { a } else { m });
        xs.push(amax / 127.0);
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        xq.extend(blk.iter().map(|&v| quantize_one(v, inv)));
    }
}

/// `src` is `inner × outer` row-major; returns it `outer × inner`.
pub fn transpose<T: Copy + Default>(src: &[T], inner: usize, outer: usize) -> Vec<T> {
    let mut t = vec![T::default(); inner * outer];
    for i in 0..inner {
        for o in 0..outer {
            t[o * inner + i] = src[i * outer + o];
        }
    }
    t
}

fn le_u16(raw: &[u8]) -> Vec<u16> {
    raw.chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// An int8 matrix of a weight file ([`DType::I8`]): its values read in
/// place, its scales from the companion tensor, which must be f32 of shape
/// (rows, ⌈cols / [`I8_BLOCK`]⌉).
fn i8_from_file(
    file: &Arc<WeightFile>,
    name: &str,
    info: &TensorInfo,
    rows: usize,
    cols: usize,
) -> Result<MatData> {
    let sname = format!("{name}{}", crate::model::weights::INT8_SCALES_SUFFIX);
    let nb = cols.div_ceil(I8_BLOCK);
    let si = file.info(&sname).map_err(|_| {
        QuillError::tensor(
            name,
            format!("is int8 but `{sname}` (its scales) is missing: the file is damaged"),
        )
    })?;
    if si.dtype != DType::F32 || si.shape != [rows, nb] {
        return Err(QuillError::tensor(
            &sname,
            format!(
                "is {} {:?}, expected f32 ({rows}, {nb}): the file is damaged",
                si.dtype, si.shape
            ),
        ));
    }
    let scales = Store::mapped(file, si.start, rows * nb)
        .unwrap_or_else(|| Store::Owned(bytes_to_f32(DType::F32, file.raw(si))));
    let q = Store::mapped(file, info.start, rows * cols)
        .unwrap_or_else(|| Store::Owned(file.raw(info).iter().map(|&b| b as i8).collect()));
    Ok(MatData::I8 { q, scales })
}
