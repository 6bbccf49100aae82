//! NEON kernels for ARM64 (AdvSIMD, baseline on every AArch64 core).
//!
//! Same structure as the AVX2 set: `#[target_feature(enable = "neon")]`
//! unsafe functions behind bounds-checking safe wrappers, the table handed
//! out only after `is_aarch64_feature_detected!("neon")`. Vectors are 4
//! lanes, so the row kernels keep 4 rows × 2 accumulators and the GEMM tile
//! 6 rows × 16 tokens (4 vectors) = 24 of the 32 q registers.
//!
//! f16 weights are widened through the `half` crate in small stack blocks
//! (the NEON f16 conversion intrinsics are not stable in Rust), then dotted
//! with NEON.

use std::arch::aarch64::*;

use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use super::scalar::bf16_to_f32;
use super::{KernelSet, I8_BLOCK, MR, NR};

static NEON: KernelSet = KernelSet {
    name: "neon",
    dot_f32,
    dot_bf16,
    dot_f16,
    rows_f32,
    rows_bf16,
    rows_f16,
    rows_i8,
    // No NEON panel kernels yet: models are not laid out in panels on
    // this set (`panels: false`); these serve matrices that already are.
    rows_bf16_panels: super::scalar::rows_bf16_panels,
    rows_i8_panels: super::scalar::rows_i8_panels,
    panels: false,
    widen_bf16,
    widen_bf16_panel: super::scalar::widen_bf16_panel,
    widen_bf16_group: super::scalar::widen_bf16_group,
    widen_f16,
    widen_i8,
    widen_i8_group: super::scalar::widen_i8_group,
    gemm_tile,
    packed_gemm: None,
    pack_tile: super::scalar::pack_tile,
    unpack_tile: super::scalar::unpack_tile,
    exp: super::scalar::exp,
    sigmoid: super::scalar::sigmoid,
    wkv7,
    quantize_x8: super::quantize_x8,
    sum_f32,
    fma_probe,
};

/// The NEON set if this CPU has AdvSIMD.
pub(super) fn kernel_set() -> Option<&'static KernelSet> {
    std::arch::is_aarch64_feature_detected!("neon").then_some(&NEON)
}

/// 4 f32 from `p`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn ld_f32(p: *const f32) -> float32x4_t {
    vld1q_f32(p)
}

/// 8 bf16 from `p` as two f32 vectors (exact: shift into the top half).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn ld_bf16x8(p: *const u16) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u16(p);
    (
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
        vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
    )
}

/// 8 int8 from `p` as two f32 vectors.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn ld_i8x8(p: *const i8) -> (float32x4_t, float32x4_t) {
    let h = vmovl_s8(vld1_s8(p));
    (
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(h))),
        vcvtq_f32_s32(vmovl_high_s16(h)),
    )
}

/// Widens 8 weights at `p` to two f32 vectors, per weight type.
trait Load8: Copy {
    /// # Safety
    /// 8 elements must be readable at `p`; NEON must be present.
    unsafe fn load8(p: *const Self) -> (float32x4_t, float32x4_t);
    fn scalar(self) -> f32;
}

impl Load8 for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> (float32x4_t, float32x4_t) {
        (ld_f32(p), ld_f32(p.add(4)))
    }
    #[inline(always)]
    fn scalar(self) -> f32 {
        self
    }
}

/// bf16 bits.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct Bf16(u16);

impl Load8 for Bf16 {
    #[inline(always)]
    unsafe fn load8(p: *const Bf16) -> (float32x4_t, float32x4_t) {
        ld_bf16x8(p as *const u16)
    }
    #[inline(always)]
    fn scalar(self) -> f32 {
        bf16_to_f32(self.0)
    }
}

impl Load8 for i8 {
    #[inline(always)]
    unsafe fn load8(p: *const i8) -> (float32x4_t, float32x4_t) {
        ld_i8x8(p)
    }
    #[inline(always)]
    fn scalar(self) -> f32 {
        self as f32
    }
}

#[inline(always)]
unsafe fn dot_raw<T: Load8>(w: *const T, x: *const f32, n: usize) -> f32 {
    let mut a = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        let (w0, w1) = T::load8(w.add(i));
        let (w2, w3) = T::load8(w.add(i + 8));
        a[0] = vfmaq_f32(a[0], w0, ld_f32(x.add(i)));
        a[1] = vfmaq_f32(a[1], w1, ld_f32(x.add(i + 4)));
        a[2] = vfmaq_f32(a[2], w2, ld_f32(x.add(i + 8)));
        a[3] = vfmaq_f32(a[3], w3, ld_f32(x.add(i + 12)));
        i += 16;
    }
    while i + 8 <= n {
        let (w0, w1) = T::load8(w.add(i));
        a[0] = vfmaq_f32(a[0], w0, ld_f32(x.add(i)));
        a[1] = vfmaq_f32(a[1], w1, ld_f32(x.add(i + 4)));
        i += 8;
    }
    let mut s = vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])));
    while i < n {
        s += (*w.add(i)).scalar() * *x.add(i);
        i += 1;
    }
    s
}

/// 4 rows at a time, sharing each x load; 2 accumulators per row.
#[inline(always)]
unsafe fn rows_raw<T: Load8>(w: *const T, x: *const f32, n: usize, y: &mut [f32]) {
    let m = y.len();
    let mut r = 0;
    while r + 4 <= m {
        let p = [
            w.add(r * n),
            w.add((r + 1) * n),
            w.add((r + 2) * n),
            w.add((r + 3) * n),
        ];
        let mut a = [[vdupq_n_f32(0.0); 2]; 4];
        let mut i = 0;
        while i + 8 <= n {
            let x0 = ld_f32(x.add(i));
            let x1 = ld_f32(x.add(i + 4));
            for q in 0..4 {
                let (w0, w1) = T::load8(p[q].add(i));
                a[q][0] = vfmaq_f32(a[q][0], w0, x0);
                a[q][1] = vfmaq_f32(a[q][1], w1, x1);
            }
            i += 8;
        }
        for q in 0..4 {
            let mut s = vaddvq_f32(vaddq_f32(a[q][0], a[q][1]));
            for j in i..n {
                s += (*p[q].add(j)).scalar() * *x.add(j);
            }
            y[r + q] = s;
        }
        r += 4;
    }
    while r < m {
        y[r] = dot_raw(w.add(r * n), x, n);
        r += 1;
    }
}

#[target_feature(enable = "neon")]
unsafe fn dot_f32_neon(w: *const f32, x: *const f32, n: usize) -> f32 {
    dot_raw(w, x, n)
}

#[target_feature(enable = "neon")]
unsafe fn dot_bf16_neon(w: *const Bf16, x: *const f32, n: usize) -> f32 {
    dot_raw(w, x, n)
}

#[target_feature(enable = "neon")]
unsafe fn rows_f32_neon(w: *const f32, x: *const f32, n: usize, y: &mut [f32]) {
    rows_raw(w, x, n, y)
}

#[target_feature(enable = "neon")]
unsafe fn rows_bf16_neon(w: *const Bf16, x: *const f32, n: usize, y: &mut [f32]) {
    rows_raw(w, x, n, y)
}

fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: reads n elements of each; NEON checked by `kernel_set`.
    unsafe { dot_f32_neon(w.as_ptr(), x.as_ptr(), n) }
}

fn dot_bf16(w: &[u16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: as `dot_f32`; Bf16 is a transparent u16.
    unsafe { dot_bf16_neon(w.as_ptr() as *const Bf16, x.as_ptr(), n) }
}

/// f16 rows/dots: widen 256 weights at a time on the stack, then NEON f32.
fn dot_f16(w: &[u16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let mut buf = [0.0f32; 256];
    let mut s = 0.0;
    for (wc, xc) in w[..n].chunks(256).zip(x[..n].chunks(256)) {
        let b = &mut buf[..wc.len()];
        wc.reinterpret_cast::<half::f16>().convert_to_f32_slice(b);
        s += dot_f32(b, xc);
    }
    s
}

fn rows_f32(w: &[f32], x: &[f32], y: &mut [f32]) {
    assert!(w.len() >= y.len() * x.len(), "rows_f32: weights too short");
    // SAFETY: rows · n elements of w exist (checked); NEON by `kernel_set`.
    unsafe { rows_f32_neon(w.as_ptr(), x.as_ptr(), x.len(), y) }
}

fn rows_bf16(w: &[u16], x: &[f32], y: &mut [f32]) {
    assert!(w.len() >= y.len() * x.len(), "rows_bf16: weights too short");
    // SAFETY: as `rows_f32`.
    unsafe { rows_bf16_neon(w.as_ptr() as *const Bf16, x.as_ptr(), x.len(), y) }
}

fn rows_f16(w: &[u16], x: &[f32], y: &mut [f32]) {
    let n = x.len();
    assert!(w.len() >= y.len() * n, "rows_f16: weights too short");
    for (r, o) in y.iter_mut().enumerate() {
        *o = dot_f16(&w[r * n..(r + 1) * n], x);
    }
}

/// int8 rows against int8 activations: per 16 weights two `vmull_s8`
/// (products exact in i16: both sides within ±127) and two `vpadalq_s16`
/// adding their pairs into i32 lanes, where widening both sides to i16
/// first took eight operations; a last 8 widened (`vmovl_s8`, `vmlal_s16`).
/// Exact within a block; one convert and FMA by the combined scale per
/// block. (Checked against the scalar set under qemu; no ARM machine was
/// at hand to time it.)
#[target_feature(enable = "neon")]
unsafe fn rows_i8_neon(
    q: *const i8,
    scales: *const f32,
    xq: *const i8,
    xs: *const f32,
    n: usize,
    y: &mut [f32],
) {
    let nb = n.div_ceil(I8_BLOCK);
    for (r, o) in y.iter_mut().enumerate() {
        let mut acc = vdupq_n_f32(0.0);
        let mut tail = 0.0f32;
        for b in 0..nb {
            let i0 = b * I8_BLOCK;
            let len = I8_BLOCK.min(n - i0);
            let s = *scales.add(r * nb + b) * *xs.add(b);
            let p = q.add(r * n + i0);
            let mut a0 = vdupq_n_s32(0);
            let mut a1 = vdupq_n_s32(0);
            let mut i = 0;
            while i + 16 <= len {
                let w = vld1q_s8(p.add(i));
                let xv = vld1q_s8(xq.add(i0 + i));
                a0 = vpadalq_s16(a0, vmull_s8(vget_low_s8(w), vget_low_s8(xv)));
                a1 = vpadalq_s16(a1, vmull_high_s8(w, xv));
                i += 16;
            }
            if i + 8 <= len {
                let w = vmovl_s8(vld1_s8(p.add(i)));
                let xv = vmovl_s8(vld1_s8(xq.add(i0 + i)));
                a0 = vmlal_s16(a0, vget_low_s16(w), vget_low_s16(xv));
                a1 = vmlal_high_s16(a1, w, xv);
                i += 8;
            }
            acc = vfmaq_f32(acc, vcvtq_f32_s32(vaddq_s32(a0, a1)), vdupq_n_f32(s));
            let mut t = 0i32;
            while i < len {
                t += *p.add(i) as i32 * *xq.add(i0 + i) as i32;
                i += 1;
            }
            tail += t as f32 * s;
        }
        *o = vaddvq_f32(acc) + tail;
    }
}

fn rows_i8(q: &[i8], scales: &[f32], xq: &[i8], xs: &[f32], y: &mut [f32]) {
    let n = xq.len();
    let nb = n.div_ceil(I8_BLOCK);
    assert!(q.len() >= y.len() * n, "rows_i8: weights too short");
    assert!(scales.len() >= y.len() * nb, "rows_i8: scales too short");
    assert!(xs.len() >= nb, "rows_i8: activation scales too short");
    // SAFETY: bounds checked above; NEON by `kernel_set`.
    unsafe { rows_i8_neon(q.as_ptr(), scales.as_ptr(), xq.as_ptr(), xs.as_ptr(), n, y) }
}

#[target_feature(enable = "neon")]
unsafe fn widen8_neon<T: Load8>(w: *const T, out: &mut [f32], scale: f32) {
    let n = out.len();
    let o = out.as_mut_ptr();
    let s = vdupq_n_f32(scale);
    let mut i = 0;
    while i + 8 <= n {
        let (a, b) = T::load8(w.add(i));
        vst1q_f32(o.add(i), vmulq_f32(a, s));
        vst1q_f32(o.add(i + 4), vmulq_f32(b, s));
        i += 8;
    }
    while i < n {
        *o.add(i) = (*w.add(i)).scalar() * scale;
        i += 1;
    }
}

fn widen_bf16(w: &[u16], out: &mut [f32]) {
    assert!(w.len() >= out.len());
    // SAFETY: reads out.len() elements (checked); NEON by `kernel_set`.
    unsafe { widen8_neon(w.as_ptr() as *const Bf16, out, 1.0) }
}

fn widen_f16(w: &[u16], out: &mut [f32]) {
    let n = out.len();
    w[..n]
        .reinterpret_cast::<half::f16>()
        .convert_to_f32_slice(out);
}

fn widen_i8(q: &[i8], scales: &[f32], out: &mut [f32]) {
    assert!(q.len() >= out.len() && scales.len() >= out.len().div_ceil(I8_BLOCK));
    for (b, ob) in out.chunks_mut(I8_BLOCK).enumerate() {
        // SAFETY: block b's elements exist in q (checked); NEON by `kernel_set`.
        unsafe { widen8_neon(q.as_ptr().add(b * I8_BLOCK), ob, scales[b]) }
    }
}

/// M rows × 4V tokens register tile, as the AVX2 one (M = 6, V = 4:
/// 24 accumulators, 4 token vectors and a broadcast in 29 q registers).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile<const M: usize, const V: usize>(
    w: *const f32,
    ldw: usize,
    xp: *const f32,
    k: usize,
    acc: *mut f32,
) {
    let mut c = [[vdupq_n_f32(0.0); V]; M];
    let mut wp = [w; M];
    for (i, p) in wp.iter_mut().enumerate() {
        *p = w.add(i * ldw);
    }
    let mut xq = xp;
    for p in 0..k {
        let mut xv = [vdupq_n_f32(0.0); V];
        for (u, v) in xv.iter_mut().enumerate() {
            *v = ld_f32(xq.add(4 * u));
        }
        xq = xq.add(NR);
        for i in 0..M {
            let b = vdupq_n_f32(*wp[i].add(p));
            for u in 0..V {
                c[i][u] = vfmaq_f32(c[i][u], b, xv[u]);
            }
        }
    }
    for (i, ci) in c.iter().enumerate() {
        for (u, cu) in ci.iter().enumerate() {
            let o = acc.add(i * NR + 4 * u);
            vst1q_f32(o, vaddq_f32(ld_f32(o), *cu));
        }
    }
}

fn gemm_tile(w: &[f32], ldw: usize, m: usize, xp: &[f32], k: usize, n: usize, acc: &mut [f32]) {
    assert!(NR == 16 && (1..=MR).contains(&m) && (1..=NR).contains(&n) && k > 0);
    assert!(w.len() >= (m - 1) * ldw + k, "gemm_tile: weights too short");
    assert!(xp.len() >= k * NR, "gemm_tile: packed x too short");
    assert!(acc.len() >= m * NR, "gemm_tile: acc too short");
    let (a, x, c) = (w.as_ptr(), xp.as_ptr(), acc.as_mut_ptr());
    // SAFETY: every access is within the bounds checked above; NEON by `kernel_set`.
    unsafe {
        macro_rules! go {
            ($v:literal) => {
                match m {
                    6 => tile::<6, $v>(a, ldw, x, k, c),
                    5 => tile::<5, $v>(a, ldw, x, k, c),
                    4 => tile::<4, $v>(a, ldw, x, k, c),
                    3 => tile::<3, $v>(a, ldw, x, k, c),
                    2 => tile::<2, $v>(a, ldw, x, k, c),
                    _ => tile::<1, $v>(a, ldw, x, k, c),
                }
            };
        }
        match n {
            0..=4 => go!(1),
            5..=8 => go!(2),
            9..=12 => go!(3),
            _ => go!(4),
        }
    }
}

#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn wkv7_neon(
    s: &mut [f32],
    n: usize,
    r: &[f32],
    w: &[f32],
    k: &[f32],
    v: &[f32],
    neg_kk: &[f32],
    kka: &[f32],
    y: &mut [f32],
) {
    let n4 = n / 4 * 4;
    let (rp, wp, kp, nkp, kap) = (
        r.as_ptr(),
        w.as_ptr(),
        k.as_ptr(),
        neg_kk.as_ptr(),
        kka.as_ptr(),
    );
    for (i, row) in s.chunks_exact_mut(n).take(n).enumerate() {
        let rowp = row.as_mut_ptr();
        let mut sa0 = vdupq_n_f32(0.0);
        let mut j = 0;
        while j < n4 {
            sa0 = vfmaq_f32(sa0, ld_f32(rowp.add(j)), ld_f32(nkp.add(j)));
            j += 4;
        }
        let mut sa = vaddvq_f32(sa0);
        for jj in n4..n {
            sa += row[jj] * neg_kk[jj];
        }
        let vi = v[i];
        let (sav, viv) = (vdupq_n_f32(sa), vdupq_n_f32(vi));
        let mut y0 = vdupq_n_f32(0.0);
        let mut j = 0;
        while j < n4 {
            let t = vfmaq_f32(vmulq_f32(viv, ld_f32(kp.add(j))), sav, ld_f32(kap.add(j)));
            let xv = vfmaq_f32(t, ld_f32(rowp.add(j)), ld_f32(wp.add(j)));
            vst1q_f32(rowp.add(j), xv);
            y0 = vfmaq_f32(y0, xv, ld_f32(rp.add(j)));
            j += 4;
        }
        let mut acc = vaddvq_f32(y0);
        for jj in n4..n {
            let xv = row[jj] * w[jj] + sa * kka[jj] + vi * k[jj];
            row[jj] = xv;
            acc += xv * r[jj];
        }
        y[i] = acc;
    }
}

#[allow(clippy::too_many_arguments)]
fn wkv7(
    s: &mut [f32],
    n: usize,
    r: &[f32],
    w: &[f32],
    k: &[f32],
    v: &[f32],
    neg_kk: &[f32],
    kka: &[f32],
    y: &mut [f32],
) {
    assert!(s.len() >= n * n, "wkv7: state too short");
    for a in [r, w, k, v, neg_kk, kka] {
        assert!(a.len() >= n, "wkv7: input too short");
    }
    assert!(y.len() >= n, "wkv7: output too short");
    // SAFETY: accesses at indices < n of slices checked to hold n (n·n for
    // the state); NEON by `kernel_set`.
    unsafe { wkv7_neon(s, n, r, w, k, v, neg_kk, kka, y) }
}

#[target_feature(enable = "neon")]
unsafe fn sum_f32_neon(x: &[f32]) -> f32 {
    let p = x.as_ptr();
    let n = x.len();
    let mut a = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (u, acc) in a.iter_mut().enumerate() {
            *acc = vaddq_f32(*acc, ld_f32(p.add(i + 4 * u)));
        }
        i += 16;
    }
    let mut s = vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])));
    while i < n {
        s += x[i];
        i += 1;
    }
    s
}

/// The NEON set does not prefetch in software (`_ahead` is ignored): its
/// kernels have no panel layout to stream, and no ARM machine here to
/// measure one on.
fn sum_f32(x: &[f32], _ahead: usize) -> f32 {
    // SAFETY: reads within x; NEON by `kernel_set`.
    unsafe { sum_f32_neon(x) }
}

/// 16 independent `fmla` chains (4-wide): covers 4 FMA pipes × 4 cycles.
#[target_feature(enable = "neon")]
unsafe fn fma_probe_neon(iters: u64) -> f64 {
    const CHAINS: usize = 16;
    let mut acc = [vdupq_n_f32(0.0); CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = vdupq_n_f32(i as f32 * 0.01);
    }
    let (m, c) = std::hint::black_box((0.999_999f32, 1e-6f32));
    let (m, c) = (vdupq_n_f32(m), vdupq_n_f32(c));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = vfmaq_f32(c, *a, m);
        }
    }
    let mut s = vdupq_n_f32(0.0);
    for a in acc {
        s = vaddq_f32(s, a);
    }
    std::hint::black_box(vaddvq_f32(s));
    iters as f64 * (CHAINS * 4 * 2) as f64
}

fn fma_probe(iters: u64) -> f64 {
    // SAFETY: register-only arithmetic; NEON by `kernel_set`.
    unsafe { fma_probe_neon(iters) }
}
