//! The blocked matrix–matrix product behind [`super::matmul`] for `t > 1`
//! (prefill): `Y (t×rows) = X (t×cols) · Wᵀ`.
//!
//! Layout of the work, outermost first:
//! - X is packed once per product, transposed into token tiles of [`NR`]:
//!   `xp[tile][p][0..NR]` (zero-padded), so a micro-kernel loads NR tokens'
//!   values of input `p` as vectors. This costs t·cols copies per product,
//!   ~1/rows of the arithmetic.
//! - tasks: groups of weight rows, run in parallel; each task owns its rows
//!   (output columns of Y), so threads never share writes.
//! - k-blocks of [`KC`] columns: the task's rows are widened to f32 once
//!   per block (contiguous, no transposition; f32 weights are read in
//!   place) — the only time a weight is read, whatever its dtype — then
//!   reused by all `t` tokens.
//! - each [`MR`]-row micro-tile's widened rows are then packed side by
//!   side (`wp[p][0..MR]`, a micro-panel) where the kernel set has a
//!   packed micro-kernel ([`super::PackedGemm`]; f32 weights are packed
//!   from where they lie).
//! - token tiles, then micro-tiles: the micro-kernel broadcasts MR
//!   weights and multiplies them into NR tokens held in vectors,
//!   accumulating an MR × NR tile in registers (6 × 16 = 12 AVX2
//!   accumulators: 12 FMAs per 2 vector loads and 6 broadcasts).
//!
//! Each weight is read once per chunk of tokens, and the inner loop is
//! FMA-bound, not memory-bound.
//!
//! A matrix small next to the chunk (rows·cols < t·(rows + cols): v7's
//! LoRA factors) runs swapped instead, W packed and X read in place (see
//! [`gemm_swapped`]).

use super::{threads, KernelSet, MatData, Matrix, Scratch, I8_BLOCK, MR, NR, PANEL_ROWS};

/// Columns per k-block: a token tile of packed X (KC × NR f32 = 16 KiB)
/// and the widened rows of a micro-tile (MR × KC f32 = 6 KiB) fit a 32 KiB
/// L1. A multiple of [`I8_BLOCK`] so int8 scale blocks are never split.
const KC: usize = 256;
const _: () = assert!(KC.is_multiple_of(I8_BLOCK));

/// Micro-tiles per task: 48 rows, whose widened k-block (48 KiB) is reused
/// by every token tile from L1/L2, and each token tile of X, loaded from
/// L2, by 8 micro-tiles. Against 4 (in-process alternating runs, 256
/// tokens, 2 threads, 16–24 pairs each, median speed ratio): bf16
/// 1024×1024 +2.6%, 4096×1024 +3.8%, 1024×4096 +4.7%; int8 1024×1024
/// +1.2%, 1024×4096 +7.8%. 12 was no better than 8.
const GROUP: usize = 8;

/// Below this many multiply-adds the product runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 20;

/// Output pointer shared by tasks writing disjoint rows of W, i.e.
/// disjoint columns of Y.
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (their own rows' outputs) and the
// buffer outlives the parallel section.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The output element `o` elements in.
    ///
    /// # Safety
    /// `o` is inside the buffer.
    unsafe fn at(&self, o: usize) -> *mut f32 {
        // SAFETY: by the caller's contract.
        unsafe { self.0.add(o) }
    }
}

pub(super) fn gemm(ks: &'static KernelSet, w: &Matrix, x: &[f32], t: usize, y: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    // Packing X and unpacking Y cost t·(rows + cols) copies; the swapped
    // product packs W instead, rows·cols. v7's LoRA factors (1024×32 …
    // 160×1024) against a 256-token chunk take the swapped road.
    if rows * cols < t * (rows + cols) {
        return gemm_swapped(ks, w, x, t, y);
    }
    let nthreads = threads();
    let par = rows * cols * t >= PAR_MIN_MACS && nthreads > 1;
    let xp = pack_x(ks, x, t, cols, par);
    let tiles = rows.div_ceil(MR);
    // Big groups when there is plenty of work to share, single micro-tiles
    // when groups would leave threads idle.
    let group = if tiles >= GROUP * 4 * nthreads {
        GROUP
    } else {
        1
    };
    let task_rows = group * MR;
    let tasks = rows.div_ceil(task_rows);
    let out = OutPtr(y.as_mut_ptr());
    let ylen = y.len();
    let run = |task: usize| {
        let r0 = task * task_rows;
        let nr = task_rows.min(rows - r0);
        run_task(ks, w, &xp, t, r0, nr, &out, ylen);
    };
    each(par, (0..tasks).collect(), run);
}

/// Runs `f` on every item: shared among the kernel threads when `par`,
/// each thread taking a contiguous run (see `share_out`; against rayon's
/// split of the same GEMM tasks, 512-token 0.4B prefills in alternating
/// pairs, 20 each, per-pair median of old ÷ new speed: bf16 0.990 and
/// 0.962, int8 0.931 and 0.947), else in order on this thread.
fn each<T: Send>(par: bool, items: Vec<T>, f: impl Fn(T) + Sync) {
    if par {
        super::share_out(items, f);
    } else {
        items.into_iter().for_each(f);
    }
}

/// Packs rows `x[j·ld..j·ld + width]`, j < n ≤ NR, into one tile `dst`
/// (`dst[p·NR + j]`, width = dst.len() / NR). Lanes past n are zeros: the
/// micro-kernel computes them too (and they are dropped), so they must
/// hold ordinary numbers, not whatever the buffer held before.
fn pack_one(ks: &KernelSet, x: &[f32], ld: usize, n: usize, dst: &mut [f32]) {
    if n < NR {
        dst.fill(0.0);
    }
    (ks.pack_tile)(x, ld, n, dst)
}

/// [`gemm`] with the roles of W and X swapped, for a matrix small next to
/// the tokens: W is widened and packed the way token tiles are
/// (`wp[panel][p][0..NR]`, NR rows of W a panel, zero past the last row),
/// and the micro-kernel broadcasts X's rows, read in place, against it.
/// Its accumulator tile is then MR tokens × NR outputs, already Y's
/// layout: X is never packed nor Y unpacked, which for a LoRA factor was
/// most of the work (in-process alternating runs, 256 tokens, 2 threads,
/// 20–30 pairs each, median speed ratio against the blocked product: bf16
/// 64×1024 1.47×, 1024×64 1.27×, 160×1024 1.17×, 1024×32 1.47×; int8
/// 64×1024 1.45×, 1024×64 1.25×).
///
/// Each output is one micro-kernel call over all `cols` (no k-blocks), in
/// a task that owns its tokens: the result does not depend on the thread
/// count.
fn gemm_swapped(ks: &'static KernelSet, w: &Matrix, x: &[f32], t: usize, y: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    let nthreads = threads();
    let par = rows * cols * t >= PAR_MIN_MACS && nthreads > 1;
    let panels = rows.div_ceil(NR);
    let mut wp = Scratch::dirty(panels * cols * NR);
    let pack = |(panel, dst): (usize, &mut [f32])| {
        let r0 = panel * NR;
        let n = NR.min(rows - r0);
        let mut wr = Scratch::dirty(n * cols);
        for (j, row) in wr.chunks_mut(cols).enumerate() {
            // In k-blocks, as `run_task` widens: a run never crosses a
            // slab of a matrix in panels.
            for (b, span) in row.chunks_mut(KC).enumerate() {
                widen_row(ks, w, r0 + j, b * KC, span);
            }
        }
        pack_one(ks, &wr, cols, n, dst)
    };
    each(par, wp.chunks_mut(cols * NR).enumerate().collect(), pack);
    // Tasks of up to GROUP micro-rows of MR tokens, at least ~8 per thread.
    let groups = t.div_ceil(MR);
    let per = (groups / (8 * nthreads)).clamp(1, GROUP);
    let tasks = groups.div_ceil(per);
    let out = OutPtr(y.as_mut_ptr());
    let ylen = y.len();
    let run = |task: usize| {
        let mut acc = [0.0f32; MR * NR];
        for g in task * per..((task + 1) * per).min(groups) {
            let i0 = g * MR;
            let m = MR.min(t - i0);
            for panel in 0..panels {
                let r0 = panel * NR;
                let n = NR.min(rows - r0);
                let acc = &mut acc[..m * NR];
                acc.fill(0.0);
                let wpanel = &wp[panel * cols * NR..(panel + 1) * cols * NR];
                (ks.gemm_tile)(&x[i0 * cols..], cols, m, wpanel, cols, n, acc);
                for (i, a) in acc.chunks_exact(NR).enumerate() {
                    let o = (i0 + i) * rows + r0;
                    assert!(o + n <= ylen, "gemm_swapped: output out of bounds");
                    // SAFETY: in bounds (checked above); tokens i0..i0 + m
                    // are this task's alone, see `OutPtr`.
                    unsafe { std::ptr::copy_nonoverlapping(a.as_ptr(), out.at(o), n) };
                }
            }
        }
    };
    each(par, (0..tasks).collect(), run);
}

/// X (t × cols) → `xp[tile][p][j] = x[(tile·NR + j)·cols + p]`, zero past `t`.
fn pack_x(ks: &KernelSet, x: &[f32], t: usize, cols: usize, par: bool) -> Scratch {
    let tiles = t.div_ceil(NR);
    let mut xp = Scratch::dirty(tiles * cols * NR);
    let pack = |(tile, dst): (usize, &mut [f32])| {
        let j0 = tile * NR;
        pack_one(ks, &x[j0 * cols..], cols, NR.min(t - j0), dst)
    };
    each(par, xp.chunks_mut(cols * NR).enumerate().collect(), pack);
    xp
}

/// Widens columns `k0..k0 + kc` of row `r` — or of the 4 rows `r..r + 4`
/// when they are a whole bf16 or int8 panel group, all `left` to do — into
/// rows of `out` [`KC`] apart; returns how many rows it widened.
fn widen_rows(
    ks: &KernelSet,
    w: &Matrix,
    r: usize,
    left: usize,
    k0: usize,
    kc: usize,
    out: &mut [f32],
) -> usize {
    let group =
        r.is_multiple_of(PANEL_ROWS) && r + PANEL_ROWS <= w.panel_rows() && left >= PANEL_ROWS;
    if group {
        // The group's columns k0..k0+kc are one run (see `prefetch_rows`),
        // and so are its int8 scales (one per block and row).
        let s = w.offset(r, k0);
        match &w.data {
            MatData::BF16(st) => {
                (ks.widen_bf16_group)(&st.as_slice()[s..s + PANEL_ROWS * kc], kc, out, KC);
                return PANEL_ROWS;
            }
            MatData::I8 { q, scales } => {
                let b = w.scale_offset(r, k0 / I8_BLOCK);
                let nb = PANEL_ROWS * kc / I8_BLOCK;
                let q = &q[s..s + PANEL_ROWS * kc];
                (ks.widen_i8_group)(q, &scales[b..b + nb], kc, out, KC);
                return PANEL_ROWS;
            }
            _ => {}
        }
    }
    widen_row(ks, w, r, k0, &mut out[..kc]);
    1
}

/// Widens `out.len()` weights of row `r` from column `k0` to f32, one
/// contiguous run at a time: the whole span when row-major, each panel
/// piece when in panels (`k0` and the span are whole pieces: KC is a
/// multiple of both piece sizes and panel matrices have whole pieces).
fn widen_row(ks: &KernelSet, w: &Matrix, r: usize, k0: usize, out: &mut [f32]) {
    if let (true, MatData::BF16(st)) = (r < w.panel_rows(), &w.data) {
        // bf16 pieces are short (16): one call for the whole span.
        let s = w.offset(r, k0);
        return (ks.widen_bf16_panel)(&st.as_slice()[s..], out);
    }
    let piece = if r < w.panel_rows() {
        w.panel_piece()
    } else {
        out.len()
    };
    for (j, o) in out.chunks_mut(piece.max(1)).enumerate() {
        let c = k0 + j * piece;
        let s = w.offset(r, c);
        let len = o.len();
        match &w.data {
            MatData::F32(st) => o.copy_from_slice(&st.as_slice()[s..s + len]),
            MatData::BF16(st) => (ks.widen_bf16)(&st.as_slice()[s..s + len], o),
            MatData::F16(st) => (ks.widen_f16)(&st.as_slice()[s..s + len], o),
            MatData::I8 { q, scales } => {
                let b0 = w.scale_offset(r, c / I8_BLOCK);
                // Row-major, the row's next scales follow; in panels a
                // piece is one block with one scale.
                let nbs = len.div_ceil(I8_BLOCK);
                (ks.widen_i8)(&q[s..s + len], &scales[b0..b0 + nbs], o)
            }
        }
    }
}

/// Asks the caches for columns `k0..k0+kc` of rows `r0..r0+nr` of W, so the
/// next k-block arrives while this one is computed. Without it widening is
/// latency-bound: each row contributes only KC weights (a few cache lines)
/// per block, too short a run for the hardware prefetcher, and profiles
/// showed widening at a quarter of the micro-kernel's time.
#[inline]
fn prefetch_rows(w: &Matrix, r0: usize, nr: usize, k0: usize, kc: usize) {
    let (elem, full) = (w.dtype_size(), w.panel_rows());
    // In panels a group's columns k0..k0+kc are one run of 4·kc
    // elements starting where its first row's piece k0 is.
    let runs = (r0..r0 + nr).filter_map(|r| {
        if r >= full {
            Some((w.addr_of(r, k0), kc))
        } else if r % PANEL_ROWS == 0 || r == r0 {
            let q = r % PANEL_ROWS;
            Some((w.addr_of(r - q, k0), PANEL_ROWS * kc))
        } else {
            None
        }
    });
    for (start, len) in runs {
        // Inside W's elements (r < rows, k0 + kc ≤ cols); a prefetch
        // never faults or changes memory.
        for off in (0..len * elem).step_by(64) {
            super::prefetch::prefetch_l2(start + off);
        }
    }
}

/// Rows `r0..r0+nr` against all `t` tokens.
#[allow(clippy::too_many_arguments)]
fn run_task(
    ks: &KernelSet,
    w: &Matrix,
    xp: &[f32],
    t: usize,
    r0: usize,
    nr: usize,
    out: &OutPtr,
    ylen: usize,
) {
    let (rows, cols) = (w.rows, w.cols);
    let tiles = t.div_ceil(NR);
    // f32 weights are read (or packed) in place; other dtypes are widened
    // per k-block.
    let in_place = match &w.data {
        MatData::F32(s) => Some(s.as_slice()),
        _ => None,
    };
    let mut wb = if in_place.is_some() {
        Vec::new()
    } else {
        vec![0.0f32; nr * KC]
    };
    // Each micro-tile's rows of the k-block packed side by side (at
    // `i0·KC`), for a set with a packed micro-kernel. Packing costs one
    // pass over the k-block, read back by every token tile. Measured on
    // AVX2 against the strided micro-kernel on the widened rows (2
    // threads, 256 tokens, 100 calls alternating, median speed ratio):
    // bf16 1024×1024 1.066, 4096×1024 1.050, 1024×4096 1.050; int8 1.037,
    // 1.032, 1.028. 512-token 0.4B prefills (16 alternating pairs, median):
    // int8 1.045 and 1.023, bf16 1.012 and 1.010.
    let packed = ks.packed_gemm.as_ref();
    let mut wp = vec![0.0f32; if packed.is_some() { nr * KC } else { 0 }];
    // Accumulators [tile][row][NR], summed over all k-blocks.
    let mut acc = vec![0.0f32; tiles * nr * NR];
    let mut k0 = 0;
    while k0 < cols {
        let kc = KC.min(cols - k0);
        if k0 + kc < cols {
            prefetch_rows(w, r0, nr, k0 + kc, KC.min(cols - k0 - kc));
        }
        let (wsrc, ldw): (&[f32], usize) = match in_place {
            Some(s) => (&s[r0 * cols + k0..(r0 + nr - 1) * cols + k0 + kc], cols),
            None => {
                let mut i = 0;
                while i < nr {
                    i += widen_rows(ks, w, r0 + i, nr - i, k0, kc, &mut wb[i * KC..]);
                }
                (&wb[..(nr - 1) * KC + kc], KC)
            }
        };
        if let Some(pg) = packed {
            // Once per k-block, then read by every token tile.
            for i0 in (0..nr).step_by(MR) {
                let m = MR.min(nr - i0);
                (pg.pack)(&wsrc[i0 * ldw..], ldw, m, kc, &mut wp[i0 * KC..]);
            }
        }
        for tile in 0..tiles {
            let n = NR.min(t - tile * NR);
            let xs = &xp[(tile * cols + k0) * NR..(tile * cols + k0 + kc) * NR];
            for i0 in (0..nr).step_by(MR) {
                let m = MR.min(nr - i0);
                let a = &mut acc[(tile * nr + i0) * NR..(tile * nr + i0 + m) * NR];
                match packed {
                    Some(pg) => (pg.tile)(&wp[i0 * KC..], m, xs, kc, n, a),
                    None => (ks.gemm_tile)(&wsrc[i0 * ldw..], ldw, m, xs, kc, n, a),
                }
            }
        }
        k0 += kc;
    }
    for tile in 0..tiles {
        let n = NR.min(t - tile * NR);
        let first = tile * NR * rows + r0;
        assert!(first + (n - 1) * rows + nr <= ylen);
        // SAFETY: every index written, first + j·rows + i for j < n and
        // i < nr, is in bounds (checked above), and outputs r0..r0+nr of
        // every token belong to this task alone, see `OutPtr`.
        unsafe {
            (ks.unpack_tile)(
                &acc[tile * nr * NR..(tile + 1) * nr * NR],
                n,
                out.0.add(first),
                rows,
            )
        };
    }
}
