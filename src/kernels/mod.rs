//! Numeric kernels behind a small interface: [`Matrix`] (a weight matrix
//! read in place from its file, or converted at load) and the products the
//! models need.
//!
//! The instruction set is chosen once per process at run time ([`active`]):
//! AVX2+FMA+F16C on x86-64 and NEON on ARM64 when the CPU has them, else the
//! portable [`scalar`] reference. The environment variable
//! `QUILL_KERNELS=scalar|avx2|neon|auto` forces a path (an unavailable one
//! is reported on stderr and the automatic choice used instead), and
//! [`with_kernels`] runs a closure with a given set so tests can cover every
//! path in one process. Nothing is compiled with `target-cpu=native`: the SIMD
//! functions carry `#[target_feature]` and are only reachable through a
//! table handed out after run-time detection, so one binary runs everywhere.
//!
//! Products: [`matmul`] with `t = 1` (decode) is a matrix–vector product
//! bound by memory bandwidth, rows split across the thread pool; with
//! `t > 1` (prefill) it is a blocked matrix–matrix product (weights widened
//! to f32 once per block and reused by every token, a register-tiled
//! micro-kernel) bound by FMA throughput. Everything computes in f32 whatever
//! the stored dtype.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod gemm;
mod huge;
pub mod lanes;
mod matrix;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod prefetch;
pub mod scalar;
mod scratch;
mod team;
mod threads;
mod wkv;

use std::cell::Cell;
use std::sync::OnceLock;

use crate::error::{QuillError, Result};
pub use huge::huge_page_vec;
pub use matrix::{
    quantize_row, quantize_x8, slab_width, transpose, Layout, MatData, Matrix, Store, WeightDtype,
    I8_BLOCK, PANEL_ROWS,
};
pub use scratch::{pooled_elements, release_pool, Scratch};
pub use team::{with_team, PassPlan};
pub use threads::{cpus, install, physical_cores, set_threads, threads};
pub(crate) use threads::{share_out, share_out_reading};
pub use wkv::{wkv4_step, wkv5_step, wkv7_step};

/// Weight rows per GEMM micro-tile (each weight broadcast to a vector).
pub const MR: usize = 6;
/// Tokens per GEMM micro-tile: two AVX2 (four NEON) vectors. 6 rows × 16
/// tokens = 12 AVX2 accumulators, leaving 3 of the 16 ymm registers for
/// the two token vectors and a broadcast weight.
pub const NR: usize = 16;

/// An int8 row kernel: `(q, scales, xq, xs, y)`, see [`KernelSet::rows_i8`].
pub type RowsI8Fn = fn(&[i8], &[f32], &[i8], &[f32], &mut [f32]);
/// A GEMM micro-kernel: `(w, ldw, m, xp, k, n, acc)`, see [`KernelSet::gemm_tile`].
pub type GemmTileFn = fn(&[f32], usize, usize, &[f32], usize, usize, &mut [f32]);
/// Packs weight rows into a micro-panel: `(w, ld, m, k, dst)`, see [`PackedGemm::pack`].
pub type PackPanelFn = fn(&[f32], usize, usize, usize, &mut [f32]);
/// A GEMM micro-kernel over a packed micro-panel: `(wp, m, xp, k, n, acc)`,
/// see [`PackedGemm::tile`].
pub type GemmTilePackedFn = fn(&[f32], usize, &[f32], usize, usize, &mut [f32]);

/// A set's GEMM over weights packed per micro-tile (the layout BLIS calls
/// a micro-panel): the MR weights a k step broadcasts sit side by side, so
/// the micro-kernel reads one stream at constant offsets instead of MR rows
/// through MR pointers, and the integer address work that competes with
/// the FMAs for ports 0 and 1 on x86 goes away. On AVX2, alone from L1 on
/// one thread, the packed micro-kernel ran at 97–98% of the FMA probe and
/// the strided one at 86–88% in one run, both at 93–102% in another (the
/// machine in a faster state); in the GEMM, packing included, calls
/// alternating with the strided kernel were 1.03–1.07× as fast (see
/// `gemm::run_task`).
pub struct PackedGemm {
    /// `(w, ld, m, k, dst)`: `dst[p·m + i] = w[i·ld + p]` for rows
    /// `i < m ≤ MR` and `p < k`; writes nothing else.
    pub pack: PackPanelFn,
    /// `(wp, m, xp, k, n, acc)`: as [`KernelSet::gemm_tile`] with the
    /// weights packed by `pack` (`wp[p·m + i]` for `w[i·ldw + p]`), summed
    /// in the same order, so the result is bit-identical to it.
    pub tile: GemmTilePackedFn,
}

/// A wkv7 step: `(state, head_size, r, w, k, v, −kk, kk⊙a, y)`, see [`wkv7_step`].
pub type Wkv7Fn = fn(&mut [f32], usize, &[f32], &[f32], &[f32], &[f32], &[f32], &[f32], &mut [f32]);

/// One instruction set's implementations of the inner loops. The fields are
/// safe functions: a SIMD set is only ever handed out (by [`by_name`],
/// [`active`], [`available`]) after the CPU was found to support it.
pub struct KernelSet {
    /// Name shown by `quill info` / `quill bench` (`scalar`, `avx2`, `neon`).
    pub name: &'static str,
    /// Σ w·x over f32 weights.
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// Σ w·x over bf16 weights (raw bits).
    pub dot_bf16: fn(&[u16], &[f32]) -> f32,
    /// Σ w·x over f16 weights (raw bits).
    pub dot_f16: fn(&[u16], &[f32]) -> f32,
    /// `y[r] = W[r]·x` for the first `y.len()` rows of row-major `w`
    /// (`x.len()` wide). `w` may hold more rows (the rest of the matrix):
    /// those are not used, only prefetched, so a task's first rows are not
    /// cold.
    pub rows_f32: fn(&[f32], &[f32], &mut [f32]),
    /// As `rows_f32` over bf16 rows.
    pub rows_bf16: fn(&[u16], &[f32], &mut [f32]),
    /// As `rows_f32` over f16 rows.
    pub rows_f16: fn(&[u16], &[f32], &mut [f32]),
    /// As `rows_f32` over int8 rows `(q, scales, xq, xs, y)` with x given
    /// quantised to int8 by [`quantize_x8`] (`xq`, one scale `xs` per
    /// block): `y[r] = Σ_b scales[r·nb + b]·xs[b]·Σ_{i∈b} q[r·n + i]·xq[i]`,
    /// `n = xq.len()`, `nb = n.div_ceil(I8_BLOCK)`. The block sums are exact
    /// integer arithmetic (`vpmaddubsw` + `vpmaddwd` on AVX2), a fraction
    /// of the vector work of widening the weights to f32, so decode stays
    /// bound by memory, not arithmetic.
    pub rows_i8: RowsI8Fn,
    /// As `rows_bf16` for `y.len()` (a multiple of [`PANEL_ROWS`]) rows in
    /// [`Layout::Panels`] starting at `w`'s first element (the start of a
    /// group), `x.len()` a multiple of 16. `w` may hold more (unused).
    pub rows_bf16_panels: fn(&[u16], &[f32], &mut [f32]),
    /// As `rows_i8` for rows in [`Layout::Panels`] (weights and scales),
    /// `xq.len()` a multiple of [`I8_BLOCK`], `y.len()` of [`PANEL_ROWS`].
    pub rows_i8_panels: RowsI8Fn,
    /// Whether models loaded while this set is active get their large
    /// bf16 and int8 matrices (as stored or converted) and LoRA factors
    /// copied into [`Layout::Panels`] (this set's panel kernels are its
    /// fast path). Every set computes both layouts correctly.
    pub panels: bool,
    /// bf16 → f32 over a run (`out.len()` elements).
    pub widen_bf16: fn(&[u16], &mut [f32]),
    /// bf16 → f32 for one row of a panel group ([`Layout::Panels`]):
    /// `out[16j..16j+16]` from `w[64j..64j+16]` (the row's pieces, one per
    /// [`PANEL_ROWS`]·16 elements), for every whole piece of `out`.
    pub widen_bf16_panel: fn(&[u16], &mut [f32]),
    /// bf16 → f32 for a whole panel group: `(w, kc, out, ld)` widens the
    /// group's `kc` columns from one contiguous run `w` (4·kc elements,
    /// piece by piece) into rows `out[q·ld..q·ld + kc]`, q = 0..4 — the
    /// same values as [`KernelSet::widen_bf16_panel`] row by row, read in
    /// order instead of in 32-byte pieces 128 bytes apart.
    pub widen_bf16_group: fn(&[u16], usize, &mut [f32], usize),
    /// f16 → f32 over a run.
    pub widen_f16: fn(&[u16], &mut [f32]),
    /// int8 → f32 over a run starting at a block boundary: `(q, scales, out)`,
    /// `scales[b]` applying to `q[b·I8_BLOCK..]`.
    pub widen_i8: fn(&[i8], &[f32], &mut [f32]),
    /// int8 → f32 for a whole panel group: `(q, scales, kc, out, ld)`
    /// widens the group's `kc` columns (whole blocks) from one contiguous
    /// run — block b holds row q's [`I8_BLOCK`] weights at
    /// `q[(4b + q)·I8_BLOCK..]`, scaled by `scales[4b + q]` — into rows
    /// `out[q·ld..q·ld + kc]`, q = 0..4: the values [`KernelSet::widen_i8`]
    /// gives row by row, in one call instead of one per block and row.
    pub widen_i8_group: fn(&[i8], &[f32], usize, &mut [f32], usize),
    /// GEMM micro-kernel `(w, ldw, m, xp, k, n, acc)`:
    /// `acc[i·NR + j] += Σ_{p<k} w[i·ldw + p] · xp[p·NR + j]` for `i < m ≤ MR`
    /// and at least `j < n ≤ NR` (lanes up to the vector width past `n` may
    /// be computed too: `xp` is zero-padded). `w` holds m rows of f32
    /// weights, `xp` a token tile of X packed transposed.
    pub gemm_tile: GemmTileFn,
    /// The blocked GEMM's micro-kernel over packed weights, where this set
    /// has one; `None`: the blocked GEMM hands `gemm_tile` the widened rows
    /// in place (NEON: the packed kernel was measured on AVX2 only, and no
    /// ARM machine was at hand to measure it on).
    pub packed_gemm: Option<PackedGemm>,
    /// Packs one token tile for [`KernelSet::gemm_tile`]: `(x, ld, n, dst)`
    /// sets `dst[p·NR + j] = x[j·ld + p]` for tokens `j < n ≤ NR` and the
    /// tile's `dst.len() / NR` inputs `p`, leaving lanes `j ≥ n` as they
    /// are (the GEMM zeroes a ragged tile first).
    pub pack_tile: fn(&[f32], usize, usize, &mut [f32]),
    /// The inverse of [`KernelSet::pack_tile`], for a GEMM accumulator tile:
    /// `(src, n, dst, ld)` sets `dst[j·ld + p] = src[p·NR + j]` for tokens
    /// `j < n ≤ NR` and the tile's `src.len() / NR` rows `p`.
    ///
    /// # Safety
    /// `dst` must be valid for writes at every such index, and nothing else
    /// may access those elements during the call (the GEMM's tasks write
    /// disjoint columns of one output).
    pub unpack_tile: unsafe fn(&[f32], usize, *mut f32, usize),
    /// `x ← eˣ` element-wise; the scalar set's is libm's `expf`, the
    /// reference the others are tested against (within 2 ulp).
    pub exp: fn(&mut [f32]),
    /// `x ← 1 / (1 + e⁻ˣ)` element-wise (the logistic sigmoid), with this
    /// set's `exp`.
    pub sigmoid: fn(&mut [f32]),
    /// One RWKV-7 wkv step for one head ([`wkv7_step`] is the reference).
    pub wkv7: Wkv7Fn,
    /// Quantises an activation vector for the int8 matrix–vector kernels
    /// ([`quantize_x8`] is the reference; every set's result is
    /// bit-identical to it).
    pub quantize_x8: fn(&[f32], &mut Vec<i8>, &mut Vec<f32>),
    /// Σ x, for the read-bandwidth probe: `(x, ahead)` prefetches `ahead`
    /// bytes in front of its reads where the set prefetches in software
    /// (0: none; see [`prefetch`]).
    pub sum_f32: fn(&[f32], usize) -> f32,
    /// Runs independent multiply-add chains for the given rounds and returns
    /// the floating-point operations done: the FMA-peak probe.
    pub fma_probe: fn(u64) -> f64,
}

/// Names of the kernel sets this build knows, usable here or not.
pub const NAMES: [&str; 3] = ["scalar", "avx2", "neon"];

/// The set called `name` if this CPU can run it (`None` for an unknown
/// name, a set for another architecture or a missing CPU feature).
pub fn by_name(name: &str) -> Option<&'static KernelSet> {
    match name {
        "scalar" => Some(&scalar::SCALAR),
        #[cfg(target_arch = "x86_64")]
        "avx2" => avx2::kernel_set(),
        #[cfg(target_arch = "aarch64")]
        "neon" => neon::kernel_set(),
        _ => None,
    }
}

/// Every set this CPU can run, scalar first.
pub fn available() -> Vec<&'static KernelSet> {
    NAMES.iter().filter_map(|n| by_name(n)).collect()
}

/// The fastest set this CPU can run (what `auto` picks).
pub fn best() -> &'static KernelSet {
    available().last().copied().unwrap_or(&scalar::SCALAR)
}

static ACTIVE: OnceLock<&'static KernelSet> = OnceLock::new();

thread_local! {
    /// Per-thread override set by [`with_kernels`] (and carried onto pool
    /// threads by [`install`]).
    static OVERRIDE: Cell<Option<&'static KernelSet>> = const { Cell::new(None) };
}

/// The kernel set in use: the thread's [`with_kernels`] override if any,
/// else the process-wide choice made on first call from the CPU's features
/// and `QUILL_KERNELS`.
pub fn active() -> &'static KernelSet {
    OVERRIDE
        .with(|o| o.get())
        .unwrap_or_else(|| ACTIVE.get_or_init(choose))
}

fn choose() -> &'static KernelSet {
    let (ks, warning) = select(&std::env::var("QUILL_KERNELS").unwrap_or_default());
    if let Some(w) = warning {
        eprintln!("quill: {w}");
    }
    ks
}

/// The set a `QUILL_KERNELS` value asks for, and the warning to print when
/// it cannot be honoured (then the automatic choice is used).
fn select(wanted: &str) -> (&'static KernelSet, Option<String>) {
    let wanted = wanted.trim().to_ascii_lowercase();
    if wanted.is_empty() || wanted == "auto" {
        return (best(), None);
    }
    match by_name(&wanted) {
        Some(ks) => (ks, None),
        None => {
            let fallback = best();
            let why = if NAMES.contains(&wanted.as_str()) {
                "is not supported by this CPU or architecture"
            } else {
                "is not a kernel set (scalar, avx2, neon, auto)"
            };
            (
                fallback,
                Some(format!(
                    "QUILL_KERNELS={wanted} {why}; using {}",
                    fallback.name
                )),
            )
        }
    }
}

/// Restores the previous override when dropped (also on panic).
struct OverrideGuard(Option<&'static KernelSet>);

impl Drop for OverrideGuard {
    fn drop(&mut self) {
        OVERRIDE.with(|o| o.set(self.0));
    }
}

/// Runs `f` with `ks` as this thread's kernel set.
fn with_set<R>(ks: &'static KernelSet, f: impl FnOnce() -> R) -> R {
    let _guard = OverrideGuard(OVERRIDE.with(|o| o.replace(Some(ks))));
    f()
}

/// Runs `f` with the kernel set `name` (for tests and comparisons): every
/// kernel called by `f` on this thread, and on the pool threads it hands
/// work to, uses that set. Errors if this CPU cannot run it.
pub fn with_kernels<R>(name: &str, f: impl FnOnce() -> R) -> Result<R> {
    let ks = by_name(name).ok_or_else(|| {
        QuillError::Invalid(format!("kernel set `{name}` is not available on this CPU"))
    })?;
    Ok(with_set(ks, f))
}

/// Below this many bytes of weights a matrix–vector product runs on the
/// calling thread: handing work to the pool costs a few microseconds,
/// about what 256 KiB take to stream.
const PAR_MIN_BYTES: usize = 256 << 10;

/// Bytes of weights a parallel task of a matrix–vector product reads.
///
/// The tasks go to the threads in contiguous runs (see [`share_out`]), so a
/// thread's consecutive tasks continue one stream and the size mostly sets
/// how far apart the threads can finish. Measured with rayon's split, each
/// task starting its row streams cold: 64 KiB tasks streamed ~15% below
/// 512 KiB–1 MiB ones. With `share_out`, 0.4B decode against rayon's split
/// of 512 KiB tasks (in-process alternating runs, 16–24 pairs, per-pair
/// median of old ÷ new speed): 256 KiB 0.977 and 0.960 int8, 0.992 and
/// 0.972 bf16; 128 KiB 0.979 int8 but 1.022 bf16; 64 KiB 0.990; 32 KiB
/// 1.015; 512 KiB 0.973 int8, 0.986 bf16.
const TASK_BYTES: usize = 256 << 10;

/// Bytes of the smallest task [`TaskCutter`] cuts near the end of a
/// thread's share.
///
/// Why tasks shrink there: the threads of a pass finish at most one task
/// apart (see [`share_out`]), and with [`TASK_BYTES`] tasks that is up to
/// ~20 µs per pass at this VM's per-thread read rate, over ~145 passes per
/// 0.4B token. Measured (0.4B, 2 threads, in-process alternating blocks of
/// 8 tokens, 24–32 pairs, medians of per-pair ratios): 16 KiB tails made
/// int8 decode 1.016, 1.017, 1.019, 1.021 and 1.007× as fast, bf16 1.011,
/// 1.017, 1.013, 1.006 and 1.003×; the publisher's waits at pass ends fell
/// from 0.57–0.67 to 0.21–0.38 ms per int8 token. 8 KiB tails were slower
/// (0.99×: more tasks), 32 and 64 KiB no better in one set of runs.
const TAIL_TASK_BYTES: usize = 16 << 10;

/// Cuts a decode pass's rows into tasks, in memory order: about
/// [`TASK_BYTES`] each, shrinking toward the end of each thread's share
/// (half the bytes left to it, down to [`TAIL_TASK_BYTES`]), so that the
/// last tasks the threads run, whichever thread runs them, are small.
/// The shares are the pass's bytes split equally, as [`share_out_reading`]
/// splits tasks weighted by their bytes.
struct TaskCutter {
    /// Bytes per thread's share.
    share: usize,
    /// Bytes cut so far.
    pos: usize,
}

impl TaskCutter {
    fn new(bytes: usize, threads: usize) -> Self {
        TaskCutter {
            share: bytes.div_ceil(threads.max(1)).max(1),
            pos: 0,
        }
    }

    /// Rows of the next task, `left` rows remaining of `row_bytes` each: a
    /// multiple of [`PANEL_ROWS`] up to `cap` (or all that is left).
    fn next(&mut self, row_bytes: usize, cap: usize, left: usize) -> usize {
        let to_end = self.share - self.pos % self.share;
        let want = (to_end / 2).clamp(TAIL_TASK_BYTES, TASK_BYTES);
        let rows = (want / row_bytes.max(1))
            .max(1)
            .next_multiple_of(PANEL_ROWS)
            .min(cap.max(1))
            .min(left);
        self.pos += rows * row_bytes;
        rows
    }
}

/// Rows handled per parallel task of a `rows × cols` product: a multiple of
/// 4 (the SIMD kernels do 4 rows at a time) reading about [`TASK_BYTES`],
/// but no more than an equal share per thread, so every thread gets work.
fn rows_per_task(rows: usize, cols: usize, elem: usize, threads: usize) -> usize {
    (TASK_BYTES / (cols * elem).max(1))
        .min(rows.div_ceil(threads.max(1)))
        .clamp(1, 1 << 16)
        .next_multiple_of(4)
}

/// y = W·x for one vector (`x.len() == cols`, `y.len() == rows`).
pub fn matvec(w: &Matrix, x: &[f32], y: &mut [f32]) {
    matmul(w, x, 1, y)
}

/// Y = X·Wᵀ for `t` row vectors: `x` is t×cols, `y` is t×rows (row-major).
/// `t = 1` streams W once through the matrix–vector kernels, rows split
/// across threads; `t > 1` runs the blocked matrix–matrix product, which
/// also reads each weight once per call, widened to f32 once and applied to
/// all `t` inputs while it sits in cache.
pub fn matmul(w: &Matrix, x: &[f32], t: usize, y: &mut [f32]) {
    matmul_many(t, &mut [Product { w, x, y }]);
}

/// One product `y = X·Wᵀ` of a [`matmul_many`] batch.
pub struct Product<'a> {
    /// The weights (rows × cols).
    pub w: &'a Matrix,
    /// t × cols inputs.
    pub x: &'a [f32],
    /// t × rows outputs.
    pub y: &'a mut [f32],
}

/// Several independent products over the same `t` tokens, as one parallel
/// pass. For decode (`t = 1`) every product's rows are cut into tasks and
/// all tasks go to the pool together: one fork/join instead of one per
/// product, and the small LoRA products, each too small to split, run side
/// by side instead of one after another on one thread. For `t > 1` each
/// product is a blocked GEMM, parallel inside.
pub fn matmul_many(t: usize, products: &mut [Product<'_>]) {
    for p in products.iter() {
        assert_eq!(p.x.len(), t * p.w.cols, "matmul input shape");
        assert_eq!(p.y.len(), t * p.w.rows, "matmul output shape");
    }
    let ks = active();
    let mut todo = Vec::with_capacity(products.len());
    for p in products.iter_mut() {
        if t == 0 || p.w.rows == 0 {
            continue;
        }
        if p.w.cols == 0 {
            p.y.fill(0.0);
        } else if t == 1 {
            todo.push(p);
        } else {
            gemm::gemm(ks, p.w, p.x, t, p.y);
        }
    }
    if !todo.is_empty() {
        matvecs(ks, &mut todo);
    }
}

/// Slab `k`'s share of `y = W[r0..r0+y.len()]·x` with the set's row kernel
/// for W's dtype: the rows in panels over slab k's columns (see
/// [`Layout::Panels`]; a matrix without slabs has one, k = 0), plus, for
/// k = 0, whole rows of any row-major rest. The caller adds the slabs'
/// results up in slab order. `xq` is x quantised by [`quantize_x8`] (int8
/// weights only). The kernel is given the rest of the slab too, which it
/// does not use: the row-major kernels prefetch from it, so the rows after
/// this task's are warm for whoever takes them.
fn rows_dispatch(
    ks: &KernelSet,
    w: &Matrix,
    r0: usize,
    k: usize,
    x: &[f32],
    xq: &(Vec<i8>, Vec<f32>),
    out: &mut [f32],
) {
    let c = w.cols;
    // Rows r0.. in panels (r0 starts a group: tasks are multiples of 4
    // rows), then any row-major rest; both start at row·c (see `Layout`).
    let np = w.panel_rows().saturating_sub(r0).min(out.len());
    let (pan, rest) = out.split_at_mut(np);
    let r1 = r0 + np;
    let nb = w.i8_blocks_per_row();
    if np > 0 {
        debug_assert_eq!(r0 % PANEL_ROWS, 0);
        // Slab k's panels start at k·full·S, its rows at row·S within them.
        let (full, sc) = (w.panel_rows(), w.slab_cols());
        let sb = sc / I8_BLOCK;
        match &w.data {
            MatData::BF16(s) => (ks.rows_bf16_panels)(
                &s.as_slice()[k * full * sc + r0 * sc..],
                &x[k * sc..(k + 1) * sc],
                pan,
            ),
            MatData::I8 { q, scales } => (ks.rows_i8_panels)(
                &q[k * full * sc + r0 * sc..],
                &scales[k * full * sb + r0 * sb..],
                &xq.0[k * sc..(k + 1) * sc],
                &xq.1[k * sb..(k + 1) * sb],
                pan,
            ),
            _ => unreachable!("only bf16 and int8 matrices are laid out in panels"),
        }
    }
    if rest.is_empty() || k > 0 {
        return;
    }
    match &w.data {
        MatData::F32(s) => (ks.rows_f32)(&s.as_slice()[r1 * c..], x, rest),
        MatData::BF16(s) => (ks.rows_bf16)(&s.as_slice()[r1 * c..], x, rest),
        MatData::F16(s) => (ks.rows_f16)(&s.as_slice()[r1 * c..], x, rest),
        MatData::I8 { q, scales } => {
            (ks.rows_i8)(&q[r1 * c..], &scales[r1 * nb..], &xq.0, &xq.1, rest)
        }
    }
}

/// Slabs of a matrix (1 unless it is in panels and wider than a slab).
fn slabs(w: &Matrix) -> usize {
    if w.panel_rows() == 0 {
        1
    } else {
        w.cols / w.slab_cols()
    }
}

/// Matrix–vector products, all rows of all of them in one parallel pass
/// (or on the calling thread when there is too little to share).
fn matvecs(ks: &'static KernelSet, products: &mut [&mut Product<'_>]) {
    // x is quantised once per int8 product, shared by every row and thread,
    // and once for all the int8 products of a pass that read the same x
    // (v7's value and value-gate projections): product i uses xqs[xq_of[i]].
    let is_i8 = |p: &Product<'_>| matches!(p.w.data, MatData::I8 { .. });
    let mut xqs: Vec<(Vec<i8>, Vec<f32>)> = Vec::with_capacity(products.len());
    let mut xq_of = Vec::with_capacity(products.len());
    for (i, p) in products.iter().enumerate() {
        let int8 = is_i8(p);
        let earlier = products[..i]
            .iter()
            .position(|q| int8 && is_i8(q) && std::ptr::eq(q.x, p.x));
        xq_of.push(match earlier {
            Some(j) => xq_of[j],
            None => {
                let mut xq = (Vec::new(), Vec::new());
                if int8 {
                    (ks.quantize_x8)(p.x, &mut xq.0, &mut xq.1);
                }
                xqs.push(xq);
                xqs.len() - 1
            }
        });
    }
    // Slab 0 writes y; slabs 1.. of a wide matrix write partial sums,
    // added to y in slab order after the pass (the order a single pass
    // over the row would add them in).
    let mut partials: Vec<Vec<f32>> = products
        .iter()
        .map(|p| vec![0.0; (slabs(p.w) - 1) * p.w.rows])
        .collect();
    let bytes: usize = products.iter().map(|p| p.w.byte_len()).sum();
    let threads = threads();
    let inputs: Vec<(&Matrix, &[f32])> = products.iter().map(|p| (p.w, p.x)).collect();
    // (product, first row, slab, output rows) per task: each reads one
    // contiguous run (a slab's rows are contiguous, a row's slabs are not).
    // Room for the usual count (full tasks, plus the shrinking ones at each
    // share's end), so the vector is not regrown in the serial part of a
    // decode step.
    let mut tasks = Vec::with_capacity(bytes / TASK_BYTES + 16 * threads + products.len());
    let serial = bytes < PAR_MIN_BYTES || threads == 1;
    // In the tasks' own measure (weights without int8 scales), so that the
    // cutter's share ends are where `share_out_reading` splits.
    let task_bytes = products
        .iter()
        .map(|p| p.w.rows * p.w.cols * p.w.dtype_size());
    let mut cut = TaskCutter::new(task_bytes.sum(), threads);
    for ((i, p), part) in products.iter_mut().enumerate().zip(partials.iter_mut()) {
        let (rows, sc, elem) = (p.w.rows, p.w.slab_cols(), p.w.dtype_size());
        let cap = rows_per_task(rows, sc, elem, threads);
        let outs = std::iter::once(&mut *p.y).chain(part.chunks_mut(rows.max(1)));
        for (k, y) in outs.enumerate() {
            let (mut rest, mut r0) = (y, 0);
            while !rest.is_empty() {
                let n = if serial {
                    rest.len()
                } else {
                    cut.next(sc * elem, cap, rest.len())
                };
                let (out, tail) = std::mem::take(&mut rest).split_at_mut(n);
                tasks.push((i, r0, k, out));
                (rest, r0) = (tail, r0 + n);
            }
        }
    }
    let run = |(i, r0, k, out): (usize, usize, usize, &mut [f32])| {
        let (w, x) = inputs[i];
        rows_dispatch(ks, w, r0, k, x, &xqs[xq_of[i]], out)
    };
    if serial {
        tasks.into_iter().for_each(run);
    } else {
        // Tasks in memory order, so each thread streams forward through
        // one run of them (see `share_out`).
        // A task's weights run on, contiguous, to the end of its slab's
        // rows (past the task: the next tasks of the same thread).
        let reads = |&(i, r0, k, _): &(usize, usize, usize, &mut [f32])| {
            let w: &Matrix = inputs[i].0;
            let sc = w.slab_cols();
            Some((w.addr_of(r0, k * sc), (w.rows - r0) * sc * w.dtype_size()))
        };
        let weight = |&(i, _, _, ref out): &(usize, usize, usize, &mut [f32])| {
            let w: &Matrix = inputs[i].0;
            out.len() * w.slab_cols() * w.dtype_size()
        };
        share_out_reading(tasks, weight, reads, run);
    }
    for (p, part) in products.iter_mut().zip(&partials) {
        for pk in part.chunks(p.w.rows.max(1)) {
            p.y.iter_mut().zip(pk).for_each(|(y, v)| *y += v);
        }
    }
}

/// Below this many elements a row-wise pass ([`for_rows`]) runs on the
/// calling thread: decoding one token (a few thousand elements per pass)
/// never forks, a prefill chunk (t × C ≥ 16 K) always does.
const ROWS_PAR_MIN: usize = 1 << 14;

/// Rows per task of a row-wise pass: ≥ ~4 K elements each.
fn rows_min_len(width: usize) -> usize {
    (4096 / width.max(1)).max(1)
}

/// `x ← eˣ` element-wise with the active set (see [`KernelSet::exp`]): for
/// the activations between products, which take several per channel.
pub fn exp_in_place(x: &mut [f32]) {
    (active().exp)(x)
}

/// `x ← σ(x)` element-wise with the active set (see [`KernelSet::sigmoid`]).
pub fn sigmoid_in_place(x: &mut [f32]) {
    (active().sigmoid)(x)
}

/// Runs `f(i, row_i)` for every `width`-wide row of `out` (the last may be
/// shorter), split across the kernel pool when `out` is large. For the
/// element-wise work between products (norms, mixes, activations): run on
/// one thread it would cost a prefill as much as a quarter of its time
/// while the other cores wait.
pub fn for_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Send + Sync) {
    let width = width.max(1);
    if out.len() < ROWS_PAR_MIN || threads() == 1 {
        out.chunks_mut(width).enumerate().for_each(|(i, r)| f(i, r));
        return;
    }
    install(|| {
        use rayon::prelude::*;
        out.par_chunks_mut(width)
            .enumerate()
            .with_min_len(rows_min_len(width))
            .for_each(|(i, r)| f(i, r));
    });
}

/// [`for_rows`] over two buffers of the same shape at once.
pub fn for_rows2(
    a: &mut [f32],
    b: &mut [f32],
    width: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Send + Sync,
) {
    assert_eq!(a.len(), b.len(), "for_rows2: buffers differ in length");
    let width = width.max(1);
    if a.len() < ROWS_PAR_MIN || threads() == 1 {
        a.chunks_mut(width)
            .zip(b.chunks_mut(width))
            .enumerate()
            .for_each(|(i, (ra, rb))| f(i, ra, rb));
        return;
    }
    install(|| {
        use rayon::prelude::*;
        a.par_chunks_mut(width)
            .zip(b.par_chunks_mut(width))
            .enumerate()
            .with_min_len(rows_min_len(width))
            .for_each(|(i, (ra, rb))| f(i, ra, rb));
    });
}

/// Below this many state elements × tokens a chunk's wkv runs on one
/// thread: one decoded token of a 0.4B model (16 heads of 64², ~1 µs per
/// head) is just worth splitting.
const WKV_PAR_MIN: usize = 1 << 16;

/// The RWKV-7 recurrence over a chunk of `t` tokens for all `h` heads of
/// size `n`: `state` is h×n×n (`[head][value][key]`); `r`, `w`, `k`, `v`,
/// `neg_kk`, `kka` and `y` are t×(h·n) row-major. Heads are independent, so
/// they run in parallel, each going through its tokens in order with its
/// n×n state hot in L1.
#[allow(clippy::too_many_arguments)]
pub fn wkv7_chunk(
    state: &mut [f32],
    h: usize,
    n: usize,
    t: usize,
    r: &[f32],
    w: &[f32],
    k: &[f32],
    v: &[f32],
    neg_kk: &[f32],
    kka: &[f32],
    y: &mut [f32],
) {
    let c = h * n;
    assert_eq!(state.len(), h * n * n, "wkv7 state shape");
    for a in [r, w, k, v, neg_kk, kka] {
        assert_eq!(a.len(), t * c, "wkv7 input shape");
    }
    assert_eq!(y.len(), t * c, "wkv7 output shape");
    let ks = active();
    // Per-head outputs, [head][token][n], scattered into y afterwards.
    let mut yh = Scratch::dirty(t * c);
    let head = |hi: usize, s: &mut [f32], out: &mut [f32]| {
        for ti in 0..t {
            let o = ti * c + hi * n;
            let sl = o..o + n;
            (ks.wkv7)(
                s,
                n,
                &r[sl.clone()],
                &w[sl.clone()],
                &k[sl.clone()],
                &v[sl.clone()],
                &neg_kk[sl.clone()],
                &kka[sl],
                &mut out[ti * n..(ti + 1) * n],
            );
        }
    };
    if h > 1 && t * h * n * n >= WKV_PAR_MIN && threads() > 1 {
        // Through `share_out_reading`, which a decode team's threads serve:
        // each head reads and writes its n×n state, which the passes since
        // this layer's last step have pushed out of the caches, so a
        // helper's share of it (the states are contiguous, head after
        // head) is worth fetching during the serial work before this pass
        // (see `PassPlan`).
        let heads: Vec<_> = state
            .chunks_mut(n * n)
            .zip(yh.chunks_mut(t * n))
            .enumerate()
            .collect();
        let bytes = n * n * std::mem::size_of::<f32>();
        share_out_reading(
            heads,
            |_| 1,
            |(hi, (s, _))| Some((s.as_ptr() as usize, (h - hi) * bytes)),
            |(hi, (s, out))| head(hi, s, out),
        );
    } else {
        for (hi, (s, out)) in state
            .chunks_mut(n * n)
            .zip(yh.chunks_mut(t * n))
            .enumerate()
        {
            head(hi, s, out);
        }
    }
    for hi in 0..h {
        for ti in 0..t {
            y[ti * c + hi * n..ti * c + (hi + 1) * n]
                .copy_from_slice(&yh[(hi * t + ti) * n..(hi * t + ti + 1) * n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_tasks_shrink_toward_each_share_end() {
        // Two products in one pass, as r, k and v are: 1024 rows of 1 KiB
        // (int8, C = 1024) then 4096 rows of 1 KiB, 2 threads.
        let (row, threads) = (1024, 2);
        let rows = [1024, 4096];
        let bytes = rows.iter().sum::<usize>() * row;
        let mut cut = TaskCutter::new(bytes, threads);
        let mut tasks = Vec::new(); // (start byte, bytes)
        let mut pos = 0;
        for &r in &rows {
            let cap = rows_per_task(r, row, 1, threads);
            let mut left = r;
            while left > 0 {
                let n = cut.next(row, cap, left);
                assert!(
                    n > 0 && (n.is_multiple_of(PANEL_ROWS) || n == left),
                    "{n} rows"
                );
                assert!(n * row <= TASK_BYTES, "a task of {n} rows");
                tasks.push((pos, n * row));
                pos += n * row;
                left -= n;
            }
        }
        assert_eq!(pos, bytes, "every row in exactly one task");
        // Each share ends exactly at a task boundary, after small tasks.
        for end in [bytes / 2, bytes] {
            let last = tasks.iter().position(|&(p, b)| p + b == end);
            let last = last.unwrap_or_else(|| panic!("no task ends at {end}"));
            assert_eq!(tasks[last].1, TAIL_TASK_BYTES, "the share's last task");
            assert!(tasks[last - 1].1 <= 2 * TAIL_TASK_BYTES);
        }
        // Large tasks elsewhere: not many more tasks than whole ones.
        assert!(
            tasks.len() <= bytes / TASK_BYTES + 2 * 8,
            "{} tasks",
            tasks.len()
        );
        // The weighted shares split these tasks at the middle in bytes.
        let weights: Vec<usize> = tasks.iter().map(|t| t.1).collect();
        let mid = threads::share_bounds(&weights, threads)[1];
        assert_eq!(tasks[mid].0, bytes / 2);
    }

    #[test]
    fn quill_kernels_values_select_or_fall_back() {
        assert_eq!(select("").0.name, best().name);
        assert_eq!(select(" Auto ").0.name, best().name);
        let (ks, warn) = select("scalar");
        assert_eq!((ks.name, warn), ("scalar", None));
        let (ks, warn) = select("sse9");
        assert_eq!(ks.name, best().name);
        assert!(warn.unwrap().contains("is not a kernel set"));
        // The other architecture's set is never available.
        let foreign = if cfg!(target_arch = "x86_64") {
            "neon"
        } else {
            "avx2"
        };
        let (ks, warn) = select(foreign);
        assert_eq!(ks.name, best().name);
        assert!(warn.unwrap().contains("not supported"));
        for name in NAMES {
            if let Some(ks) = by_name(name) {
                let (got, warn) = select(name);
                assert!(std::ptr::eq(got, ks) && warn.is_none(), "{name}");
            }
        }
    }

    /// Sets 2 kernel threads for a decode-team test; false (said loudly,
    /// threads reset) where the machine cannot run a team of 2.
    fn two_kernel_threads() -> bool {
        set_threads(2);
        let ok = threads() == 2 && cpus() >= 2;
        if !ok {
            eprintln!("!!! skipped: needs 2 CPUs for a decode team");
            set_threads(0);
        }
        ok
    }

    /// A decode pass records where the helper's share begins: the weights
    /// of its first task, for the next step's look-ahead.
    #[test]
    fn a_decode_pass_records_where_the_helpers_share_begins() {
        if !two_kernel_threads() {
            return;
        }
        let (rows, cols) = (1024, 1024);
        let w = Matrix::from_f32(rows, cols, vec![0.5; rows * cols])
            .convert(WeightDtype::BF16)
            .into_panels();
        let base = w.addr_of(0, 0);
        let (x, mut y) = (vec![1.0; cols], vec![0.0; rows]);
        let plan = PassPlan::default();
        with_team(&plan, || matvec(&w, &x, &mut y));
        set_threads(0);
        assert!(y.iter().all(|&v| v == 512.0));
        // 2 MiB of bf16 in tasks of 128 rows (256 KiB): 8 tasks, the
        // helper's share starting at the fifth, row 512, and running on to
        // the matrix's end.
        assert_eq!(plan.planned(1, 1), (base + 512 * cols * 2, 512 * cols * 2));
        assert_eq!(plan.planned(2, 1), (0, 0), "one pass");
    }

    /// A decoded token's wkv pass records the helper's share of the heads'
    /// states too (the states are cold by then: worth the look-ahead).
    #[test]
    fn a_decode_wkv_pass_records_the_helpers_share_of_the_state() {
        if !two_kernel_threads() {
            return;
        }
        // 0.4B's shape: 16 heads of 64, one token (just parallel).
        let (h, n) = (16, 64);
        let c = h * n;
        let mut state = vec![0.0f32; h * n * n];
        let base = state.as_ptr() as usize;
        let ones = vec![1.0f32; c];
        let mut y = vec![0.0f32; c];
        let plan = PassPlan::default();
        with_team(&plan, || {
            wkv7_chunk(
                &mut state, h, n, 1, &ones, &ones, &ones, &ones, &ones, &ones, &mut y,
            )
        });
        set_threads(0);
        // The step ran: S = v⊗k = 1 everywhere, y = S·r = n.
        assert!(state.iter().all(|&s| s == 1.0) && y.iter().all(|&v| v == n as f32));
        // Equal shares of heads: the helper's begins at head 8 and runs
        // on to the last state's end.
        let head = n * n * 4;
        assert_eq!(plan.planned(1, 1), (base + 8 * head, 8 * head));
    }
}
