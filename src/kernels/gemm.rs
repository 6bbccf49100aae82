//! The blocked matrix–matrix product behind [`super::matmul`] for `t > 1`
//! (prefill): `Y (t×rows) = X (t×cols) · Wᵀ`.
//!
//! Layout of the work, outermost first:
//! - tasks: groups of up to [`GROUP`] panels of [`MR`] weight rows, run in
//!   parallel; each task owns the output columns of its rows;
//! - k-blocks of [`KC`] columns: the task's rows are widened to f32 and
//!   packed k-major (`panel[p·MR + i]`) once per block — the only time a
//!   weight is read, whatever its dtype — then reused by all `t` tokens;
//! - token tiles of [`NR`]: the tile's slice of X (NR × KC f32, 6 KiB)
//!   stays in L1 while the micro-kernel runs it against each packed panel
//!   (MR × KC f32, 16 KiB, from L1/L2), accumulating in registers.
//!
//! So each weight is read once per chunk and the inner loop does 12 FMAs per
//! 2 weight-vector loads and 6 broadcasts: compute-bound, not memory-bound.

use super::{install, threads, KernelSet, MatData, Matrix, I8_BLOCK, MR, NR};

/// Columns per k-block: a packed panel (MR × KC f32 = 16 KiB) plus a token
/// tile of X (NR × KC f32 = 6 KiB) fit a 32 KiB L1. A multiple of
/// [`I8_BLOCK`] so int8 scale blocks are never split.
const KC: usize = 256;
const _: () = assert!(KC % I8_BLOCK == 0);

/// Panels per task: the X block (t × KC) is then reused from L2 by 64 rows.
const GROUP: usize = 4;

/// Below this many multiply-adds the product runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 20;

/// Output pointer shared by tasks writing disjoint rows of Y.
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (their own rows of W, i.e. their
// own columns of Y) and the buffer outlives the parallel section.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

pub(super) fn gemm(ks: &'static KernelSet, w: &Matrix, x: &[f32], t: usize, y: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    let panels = rows.div_ceil(MR);
    let nthreads = threads();
    // Big groups when there is plenty of work to share, single panels when
    // groups would leave threads idle.
    let group = if panels >= GROUP * 4 * nthreads {
        GROUP
    } else {
        1
    };
    let tasks = panels.div_ceil(group);
    let out = OutPtr(y.as_mut_ptr());
    let ylen = y.len();
    let run = |task: usize| {
        let p0 = task * group;
        let np = group.min(panels - p0);
        run_task(ks, w, x, t, p0, np, &out, ylen);
    };
    if rows * cols * t < PAR_MIN_MACS || tasks == 1 || nthreads == 1 {
        (0..tasks).for_each(run);
    } else {
        install(|| {
            use rayon::prelude::*;
            (0..tasks).into_par_iter().for_each(run);
        });
    }
}

/// Widens `out.len()` weights of row `r` from column `k0` to f32.
fn widen_row(ks: &KernelSet, w: &Matrix, r: usize, k0: usize, out: &mut [f32]) {
    let s = r * w.cols + k0;
    let kc = out.len();
    match &w.data {
        MatData::F32(st) => out.copy_from_slice(&st.as_slice()[s..s + kc]),
        MatData::BF16(st) => (ks.widen_bf16)(&st.as_slice()[s..s + kc], out),
        MatData::F16(st) => (ks.widen_f16)(&st.as_slice()[s..s + kc], out),
        MatData::I8 { q, scales } => {
            let nb = w.i8_blocks_per_row();
            let b0 = r * nb + k0 / I8_BLOCK;
            (ks.widen_i8)(&q[s..s + kc], &scales[b0..(r + 1) * nb], out)
        }
    }
}

/// Panels `p0..p0+np` (rows `p0·MR..`) against all `t` tokens.
#[allow(clippy::too_many_arguments)]
fn run_task(
    ks: &KernelSet,
    w: &Matrix,
    x: &[f32],
    t: usize,
    p0: usize,
    np: usize,
    out: &OutPtr,
    ylen: usize,
) {
    let (rows, cols) = (w.rows, w.cols);
    let mut packed = vec![0.0f32; np * KC * MR];
    // Accumulators [panel][token][MR], summed over all k-blocks.
    let mut acc = vec![0.0f32; np * t * MR];
    let mut rowbuf = vec![0.0f32; KC];
    let mut k0 = 0;
    while k0 < cols {
        let kc = KC.min(cols - k0);
        for pi in 0..np {
            let pan = &mut packed[pi * KC * MR..pi * KC * MR + kc * MR];
            for i in 0..MR {
                let r = (p0 + pi) * MR + i;
                if r < rows {
                    widen_row(ks, w, r, k0, &mut rowbuf[..kc]);
                    for (p, &v) in rowbuf[..kc].iter().enumerate() {
                        pan[p * MR + i] = v;
                    }
                } else {
                    // Rows past the end are zero, so the tail panel needs no
                    // special kernel; their results are simply not stored.
                    for p in 0..kc {
                        pan[p * MR + i] = 0.0;
                    }
                }
            }
        }
        let mut j0 = 0;
        while j0 < t {
            let n = NR.min(t - j0);
            let xs = &x[j0 * cols + k0..(j0 + n - 1) * cols + k0 + kc];
            for pi in 0..np {
                let a = &mut acc[(pi * t + j0) * MR..(pi * t + j0 + n) * MR];
                (ks.gemm_tile)(
                    &packed[pi * KC * MR..pi * KC * MR + kc * MR],
                    xs,
                    cols,
                    n,
                    kc,
                    a,
                );
            }
            j0 += n;
        }
        k0 += kc;
    }
    for pi in 0..np {
        let r = (p0 + pi) * MR;
        let m = MR.min(rows - r);
        for j in 0..t {
            let src = &acc[(pi * t + j) * MR..(pi * t + j) * MR + m];
            let dst = j * rows + r;
            assert!(dst + m <= ylen);
            // SAFETY: in bounds (checked above); rows r..r+m of every token
            // belong to this task alone, see `OutPtr`.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), out.0.add(dst), m) };
        }
    }
}
