//! Portable reference kernels. Eight independent accumulators give the
//! compiler room to vectorise and fix the summation order, so results do not
//! depend on the optimiser. Every SIMD set is tested against these.

use super::{KernelSet, PackedGemm, I8_BLOCK, MR, NR, PANEL_ROWS};

/// The scalar kernel set: the reference every SIMD path is tested against.
pub static SCALAR: KernelSet = KernelSet {
    name: "scalar",
    dot_f32,
    dot_bf16,
    dot_f16,
    rows_f32,
    rows_bf16,
    rows_f16,
    rows_i8,
    rows_bf16_panels,
    rows_i8_panels,
    panels: false,
    widen_bf16,
    widen_bf16_panel,
    widen_bf16_group,
    widen_f16,
    widen_i8,
    widen_i8_group,
    gemm_tile,
    packed_gemm: Some(PackedGemm {
        pack: pack_panel,
        tile: gemm_tile_packed,
    }),
    pack_tile,
    unpack_tile,
    exp,
    sigmoid,
    wkv7: super::wkv::wkv7_step,
    quantize_x8: super::quantize_x8,
    sum_f32,
    fma_probe,
};

#[inline(always)]
fn dot_with(n: usize, w: impl Fn(usize) -> f32, x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let body = n / 8 * 8;
    let mut i = 0;
    while i < body {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += w(i + l) * x[i + l];
        }
        i += 8;
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    while i < n {
        s += w(i) * x[i];
        i += 1;
    }
    s
}

/// Σ w·x, f32 weights.
pub fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    dot_with(w.len().min(x.len()), |i| w[i], x)
}

/// bf16 → f32 is exact: bf16 is the top half of an f32.
#[inline(always)]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// f16 → f32 (exact).
#[inline(always)]
pub fn f16_to_f32(b: u16) -> f32 {
    half::f16::from_bits(b).to_f32()
}

/// Σ w·x, bf16 weights.
pub fn dot_bf16(w: &[u16], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    dot_with(w.len().min(x.len()), |i| bf16_to_f32(w[i]), x)
}

/// Σ w·x, f16 weights.
pub fn dot_f16(w: &[u16], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    dot_with(w.len().min(x.len()), |i| f16_to_f32(w[i]), x)
}

/// `y[r] = W[r]·x` for the `y.len()` rows of `w` (row-major, `x.len()` wide), f32.
pub fn rows_f32(w: &[f32], x: &[f32], y: &mut [f32]) {
    let n = x.len();
    for (r, o) in y.iter_mut().enumerate() {
        *o = dot_f32(&w[r * n..(r + 1) * n], x);
    }
}

/// `y[r] = W[r]·x`, bf16 rows.
pub fn rows_bf16(w: &[u16], x: &[f32], y: &mut [f32]) {
    let n = x.len();
    for (r, o) in y.iter_mut().enumerate() {
        *o = dot_bf16(&w[r * n..(r + 1) * n], x);
    }
}

/// `y[r] = W[r]·x`, f16 rows.
pub fn rows_f16(w: &[u16], x: &[f32], y: &mut [f32]) {
    let n = x.len();
    for (r, o) in y.iter_mut().enumerate() {
        *o = dot_f16(&w[r * n..(r + 1) * n], x);
    }
}

/// `y[r] = Σ_b scales[r·nb + b]·xs[b]·Σ_{i∈b} q[r][i]·xq[i]`: int8 rows
/// against x quantised to int8 ([`super::quantize_x8`]), one scale per
/// [`I8_BLOCK`] on each side; block sums exact in i32.
pub fn rows_i8(q: &[i8], scales: &[f32], xq: &[i8], xs: &[f32], y: &mut [f32]) {
    let n = xq.len();
    let nb = n.div_ceil(I8_BLOCK);
    for (r, o) in y.iter_mut().enumerate() {
        let row = &q[r * n..(r + 1) * n];
        let mut s = 0.0f32;
        for (b, (qb, xb)) in row.chunks(I8_BLOCK).zip(xq.chunks(I8_BLOCK)).enumerate() {
            let isum: i32 = qb.iter().zip(xb).map(|(&a, &b)| a as i32 * b as i32).sum();
            s += scales[r * nb + b] * xs[b] * isum as f32;
        }
        *o = s;
    }
}

/// Row `q` of the panel group at the start of `g` (`n` wide, pieces of
/// `piece`), gathered into `out` in row order.
fn gather_row<T: Copy>(g: &[T], q: usize, n: usize, piece: usize, out: &mut Vec<T>) {
    out.clear();
    for p in 0..n / piece {
        let s = (p * PANEL_ROWS + q) * piece;
        out.extend_from_slice(&g[s..s + piece]);
    }
}

/// [`rows_bf16`] over rows in panels ([`super::Layout::Panels`]): each row
/// is gathered and summed exactly as `rows_bf16` would, so the two layouts
/// give bit-identical results here.
pub fn rows_bf16_panels(w: &[u16], x: &[f32], y: &mut [f32]) {
    let n = x.len();
    let mut row = Vec::with_capacity(n);
    for (g, yg) in y.chunks_mut(PANEL_ROWS).enumerate() {
        for (q, o) in yg.iter_mut().enumerate() {
            gather_row(&w[g * PANEL_ROWS * n..], q, n, 16, &mut row);
            *o = dot_bf16(&row, x);
        }
    }
}

/// [`rows_i8`] over rows in panels (weights and scales), bit-identical to
/// it on the gathered rows.
pub fn rows_i8_panels(q: &[i8], scales: &[f32], xq: &[i8], xs: &[f32], y: &mut [f32]) {
    let n = xq.len();
    let nb = n.div_ceil(I8_BLOCK);
    let (mut row, mut sc) = (Vec::with_capacity(n), Vec::with_capacity(nb));
    for (g, yg) in y.chunks_mut(PANEL_ROWS).enumerate() {
        for (r, o) in yg.iter_mut().enumerate() {
            gather_row(&q[g * PANEL_ROWS * n..], r, n, I8_BLOCK, &mut row);
            gather_row(&scales[g * PANEL_ROWS * nb..], r, nb, 1, &mut sc);
            rows_i8(&row, &sc, xq, xs, std::slice::from_mut(o));
        }
    }
}

/// bf16 → f32 for a run of weights.
pub fn widen_bf16(w: &[u16], out: &mut [f32]) {
    for (o, &b) in out.iter_mut().zip(w) {
        *o = bf16_to_f32(b);
    }
}

/// bf16 → f32 for one row of a panel group (see `KernelSet::widen_bf16_panel`).
pub fn widen_bf16_panel(w: &[u16], out: &mut [f32]) {
    for (j, o) in out.chunks_exact_mut(16).enumerate() {
        widen_bf16(&w[j * PANEL_ROWS * 16..], o);
    }
}

/// bf16 → f32 for a whole panel group (see `KernelSet::widen_bf16_group`).
pub fn widen_bf16_group(w: &[u16], kc: usize, out: &mut [f32], ld: usize) {
    for q in 0..PANEL_ROWS {
        widen_bf16_panel(&w[q * 16..], &mut out[q * ld..q * ld + kc / 16 * 16]);
    }
}

/// f16 → f32 for a run of weights.
pub fn widen_f16(w: &[u16], out: &mut [f32]) {
    for (o, &b) in out.iter_mut().zip(w) {
        *o = f16_to_f32(b);
    }
}

/// int8 → f32 (`q · scale`) for a run of weights starting at a block
/// boundary: `scales[b]` applies to `q[b·I8_BLOCK..]`.
pub fn widen_i8(q: &[i8], scales: &[f32], out: &mut [f32]) {
    for (b, (qb, ob)) in q.chunks(I8_BLOCK).zip(out.chunks_mut(I8_BLOCK)).enumerate() {
        let s = scales[b];
        for (o, &v) in ob.iter_mut().zip(qb) {
            *o = v as f32 * s;
        }
    }
}

/// int8 → f32 for a whole panel group (see
/// [`super::KernelSet::widen_i8_group`]): block by block, row by row.
pub fn widen_i8_group(q: &[i8], scales: &[f32], kc: usize, out: &mut [f32], ld: usize) {
    for b in 0..kc / I8_BLOCK {
        for r in 0..PANEL_ROWS {
            let i = b * PANEL_ROWS + r;
            let o = r * ld + b * I8_BLOCK;
            widen_i8(
                &q[i * I8_BLOCK..(i + 1) * I8_BLOCK],
                &scales[i..i + 1],
                &mut out[o..o + I8_BLOCK],
            );
        }
    }
}

/// GEMM micro-kernel: `acc[i·NR + j] += Σ_{p<k} w[i·ldw + p] · xp[p·NR + j]`
/// for `i < m`, `j < n`: m weight rows against a tile of n tokens packed
/// transposed (`xp[p·NR + j]` is token j's input p).
pub fn gemm_tile(w: &[f32], ldw: usize, m: usize, xp: &[f32], k: usize, n: usize, acc: &mut [f32]) {
    for i in 0..m {
        let wr = &w[i * ldw..i * ldw + k];
        let a = &mut acc[i * NR..i * NR + n];
        for (p, &wv) in wr.iter().enumerate() {
            for (aj, &xv) in a.iter_mut().zip(&xp[p * NR..p * NR + n]) {
                *aj += wv * xv;
            }
        }
    }
}

/// Packs `m ≤ MR` weight rows (`ld` apart) into a micro-panel:
/// `dst[p·m + i] = w[i·ld + p]` for `p < k` (see
/// [`super::PackedGemm::pack`]).
pub fn pack_panel(w: &[f32], ld: usize, m: usize, k: usize, dst: &mut [f32]) {
    assert!((1..=MR).contains(&m), "pack_panel: 1 to MR rows");
    assert!(w.len() >= (m - 1) * ld + k, "pack_panel: weights too short");
    assert!(dst.len() >= m * k, "pack_panel: panel too short");
    for i in 0..m {
        for (p, &v) in w[i * ld..i * ld + k].iter().enumerate() {
            dst[p * m + i] = v;
        }
    }
}

/// [`gemm_tile`] over a micro-panel from [`pack_panel`]: `wp[p·m + i]`
/// is row i's weight p; the same sums in the same order.
pub fn gemm_tile_packed(wp: &[f32], m: usize, xp: &[f32], k: usize, n: usize, acc: &mut [f32]) {
    for i in 0..m {
        let a = &mut acc[i * NR..i * NR + n];
        for p in 0..k {
            let wv = wp[p * m + i];
            for (aj, &xv) in a.iter_mut().zip(&xp[p * NR..p * NR + n]) {
                *aj += wv * xv;
            }
        }
    }
}

/// Packs a token tile: `dst[p·NR + j] = x[j·ld + p]` for `j < n`, every
/// `p < dst.len() / NR` (see [`super::KernelSet::pack_tile`]).
pub fn pack_tile(x: &[f32], ld: usize, n: usize, dst: &mut [f32]) {
    let width = dst.len() / NR;
    assert!(n <= NR, "pack_tile: more than NR tokens");
    assert!(
        n == 0 || x.len() >= (n - 1) * ld + width,
        "pack_tile: x too short"
    );
    // Blocks of PB inputs: the block's NR·PB destination (4 KiB) stays in
    // L1 while the tile's rows are scattered into it, instead of each row
    // striding across the whole tile (NR·width floats).
    const PB: usize = 64;
    for p0 in (0..width).step_by(PB) {
        let p1 = (p0 + PB).min(width);
        for j in 0..n {
            for (p, &v) in x[j * ld + p0..j * ld + p1].iter().enumerate() {
                dst[(p0 + p) * NR + j] = v;
            }
        }
    }
}

/// Unpacks an accumulator tile: `dst[j·ld + p] = src[p·NR + j]` for
/// `j < n`, every `p < src.len() / NR` (see
/// [`super::KernelSet::unpack_tile`]).
///
/// # Safety
/// As [`super::KernelSet::unpack_tile`].
pub unsafe fn unpack_tile(src: &[f32], n: usize, dst: *mut f32, ld: usize) {
    assert!(n <= NR, "unpack_tile: more than NR tokens");
    for j in 0..n {
        for (p, row) in src.chunks_exact(NR).enumerate() {
            // SAFETY: the caller's contract.
            unsafe { *dst.add(j * ld + p) = row[j] };
        }
    }
}

/// `x ← eˣ` with libm's `expf` (correctly rounded in practice): the
/// reference for the SIMD sets' polynomial.
pub fn exp(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.exp());
}

/// `x ← 1 / (1 + e⁻ˣ)` with libm's `expf`.
pub fn sigmoid(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
}

/// Σ x (8 accumulators), for the read-bandwidth probe; the portable set
/// does not prefetch (`_ahead` is ignored).
pub fn sum_f32(x: &[f32], _ahead: usize) -> f32 {
    let ones = [1.0f32; 8];
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += c[l] * ones[l];
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Independent multiply-add chains for `iters` rounds; returns the
/// floating-point operations done (2 per multiply-add). Portable code has
/// no guaranteed fused instruction, so this is the scalar path's own peak.
pub fn fma_probe(iters: u64) -> f64 {
    let mut acc = [
        0.0f32, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5,
    ];
    let (m, c) = std::hint::black_box((0.999_999f32, 1e-6f32));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = *a * m + c;
        }
    }
    std::hint::black_box(acc);
    iters as f64 * acc.len() as f64 * 2.0
}
