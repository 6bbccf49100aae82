//! AVX2 + FMA + F16C kernels for x86-64 (Haswell / Zen and later, no
//! AVX-512 needed).
//!
//! The `unsafe` functions carry `#[target_feature(enable = "avx2,fma,f16c")]`
//! so they use those instructions without the whole build assuming them
//! (no `target-cpu=native`). The safe wrappers in the table check slice
//! bounds; the table itself is only handed out by [`kernel_set`] after
//! `is_x86_feature_detected!` confirmed all three features, which is what
//! makes calling them sound.
//!
//! Decode kernels stream 4 rows at once with 2 accumulators each (8
//! independent FMA chains cover the FMA latency × throughput of current
//! cores) and share each load of `x` between the 4 rows. The GEMM
//! micro-kernel keeps a 6-row × 16-token tile in 12 ymm registers.

use std::arch::x86_64::*;

use super::matrix::{quantize_one, ROUND_MAGIC};
use super::scalar::{bf16_to_f32, f16_to_f32};
use super::{KernelSet, I8_BLOCK, MR, NR, PANEL_ROWS};

static AVX2: KernelSet = KernelSet {
    name: "avx2",
    dot_f32,
    dot_bf16,
    dot_f16,
    rows_f32,
    rows_bf16,
    rows_f16,
    rows_i8,
    rows_bf16_panels,
    rows_i8_panels,
    panels: true,
    widen_bf16,
    widen_bf16_panel,
    widen_bf16_group,
    widen_f16,
    widen_i8,
    widen_i8_group,
    gemm_tile,
    packed_gemm: Some(super::PackedGemm {
        pack: pack_panel,
        tile: gemm_tile_packed,
    }),
    pack_tile,
    unpack_tile,
    exp,
    sigmoid,
    wkv7,
    quantize_x8,
    sum_f32,
    fma_probe,
};

/// The AVX2 set if this CPU has AVX2, FMA and F16C.
pub(super) fn kernel_set() -> Option<&'static KernelSet> {
    (is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c"))
    .then_some(&AVX2)
}

// ---------------------------------------------------------------- helpers

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

/// The four horizontal sums of `v`, as one 4-lane vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum4(v: [__m256; 4]) -> __m128 {
    let t = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t))
}

/// 8 f32 from `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ld_f32(p: *const f32) -> __m256 {
    _mm256_loadu_ps(p)
}

/// 8 bf16 from `p`, widened exactly (bf16 is the top half of an f32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ld_bf16(p: *const u16) -> __m256 {
    let h = _mm_loadu_si128(p as *const __m128i);
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
}

/// 8 f16 from `p` (F16C `vcvtph2ps`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ld_f16(p: *const u16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// 8 int8 from `p` as f32 (`vpmovsxbd` + `vcvtdq2ps`), for widening.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ld_i8(p: *const i8) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
}

// ------------------------------------------------------- dot and row kernels

/// Prefetches element `off` of each of 4 rows (`p[q] + off`) into L2.
///
/// Why: streaming a matrix from DRAM, the row kernels reached less than
/// half the read bandwidth of a plain sum per on-CPU second: their longer
/// loop bodies let the out-of-order window hold fewer outstanding misses,
/// and four 2–8 KiB row streams per group are too short for the hardware
/// prefetcher to run ahead. Fetching the next group while the current one
/// is summed hides the memory latency. Into L2 (`T1`), not L1: L1 has
/// too few miss buffers to keep DRAM busy (measured: T0 gave ~55% of the
/// probe's bandwidth per CPU-second, T1 ~90%).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prefetch_group<T>(p: &[*const T; 4], off: usize) {
    for &row in p {
        // wrapping_add: only an address for the hint, never dereferenced.
        _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(off) as *const i8);
    }
}

/// Prefetches into L2 the two cache lines `ahead` bytes past `p` (one
/// 128-byte step of a panel kernel). Prefetches never fault, so `p +
/// ahead` may lie past the matrix (wrapping arithmetic: no pointer into
/// another allocation is dereferenced).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prefetch_ahead(p: *const u8, ahead: usize) {
    let at = p.wrapping_add(ahead) as *const i8;
    _mm_prefetch::<_MM_HINT_T1>(at);
    _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(64));
}

/// Pointers to rows `r..r + 4` of a row-major matrix of `n` columns at `w`
/// (the row groups the rows kernels work on).
#[inline]
unsafe fn four_rows<T>(w: *const T, r: usize, n: usize) -> [*const T; 4] {
    [
        w.add(r * n),
        w.add((r + 1) * n),
        w.add((r + 2) * n),
        w.add((r + 3) * n),
    ]
}

/// Generates a 1-row dot product with 4 accumulators for one weight type.
macro_rules! dot_kernel {
    ($dot:ident, $t:ty, $ld:ident, $sc:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $dot(w: *const $t, x: *const f32, n: usize) -> f32 {
            let mut a = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (u, acc) in a.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps($ld(w.add(i + 8 * u)), ld_f32(x.add(i + 8 * u)), *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                a[0] = _mm256_fmadd_ps($ld(w.add(i)), ld_f32(x.add(i)), a[0]);
                i += 8;
            }
            let mut s = hsum(_mm256_add_ps(
                _mm256_add_ps(a[0], a[1]),
                _mm256_add_ps(a[2], a[3]),
            ));
            while i < n {
                s += $sc(*w.add(i)) * *x.add(i);
                i += 1;
            }
            s
        }
    };
}

/// Generates, for one weight type: a 1-row dot product ([`dot_kernel`]),
/// and a rows kernel doing 4 rows at a time.
macro_rules! row_kernels {
    ($dot:ident, $rows:ident, $t:ty, $ld:ident, $sc:expr) => {
        dot_kernel!($dot, $t, $ld, $sc);

        /// `avail`: elements readable at `w` (≥ y.len()·n); rows past
        /// `y.len()` are only prefetched.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $rows(w: *const $t, avail: usize, x: *const f32, n: usize, y: &mut [f32]) {
            let m = y.len();
            let mut r = 0;
            while r + 4 <= m {
                let p = four_rows(w, r, n);
                // Prefetch the next group of 4 rows while this one is summed
                // (see `prefetch_group`); none past the last group.
                let ahead = if (r + 8) * n <= avail { 4 * n } else { 0 };
                let mut a = [[_mm256_setzero_ps(); 2]; 4];
                let mut i = 0;
                while i + 16 <= n {
                    if ahead > 0 {
                        prefetch_group(&p, ahead + i);
                    }
                    let x0 = ld_f32(x.add(i));
                    let x1 = ld_f32(x.add(i + 8));
                    for q in 0..4 {
                        a[q][0] = _mm256_fmadd_ps($ld(p[q].add(i)), x0, a[q][0]);
                        a[q][1] = _mm256_fmadd_ps($ld(p[q].add(i + 8)), x1, a[q][1]);
                    }
                    i += 16;
                }
                if i + 8 <= n {
                    let x0 = ld_f32(x.add(i));
                    for q in 0..4 {
                        a[q][0] = _mm256_fmadd_ps($ld(p[q].add(i)), x0, a[q][0]);
                    }
                    i += 8;
                }
                for q in 0..4 {
                    let mut s = hsum(_mm256_add_ps(a[q][0], a[q][1]));
                    for j in i..n {
                        s += $sc(*p[q].add(j)) * *x.add(j);
                    }
                    y[r + q] = s;
                }
                r += 4;
            }
            while r < m {
                y[r] = $dot(w.add(r * n), x, n);
                r += 1;
            }
        }
    };
}

row_kernels!(dot_f32_raw, rows_f32_raw, f32, ld_f32, |v: f32| v);
dot_kernel!(dot_bf16_raw, u16, ld_bf16, bf16_to_f32);
row_kernels!(dot_f16_raw, rows_f16_raw, u16, ld_f16, f16_to_f32);

fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: reads n elements of each; features checked by `kernel_set`.
    unsafe { dot_f32_raw(w.as_ptr(), x.as_ptr(), n) }
}

fn dot_bf16(w: &[u16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: as `dot_f32`.
    unsafe { dot_bf16_raw(w.as_ptr(), x.as_ptr(), n) }
}

fn dot_f16(w: &[u16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: as `dot_f32`.
    unsafe { dot_f16_raw(w.as_ptr(), x.as_ptr(), n) }
}

fn rows_f32(w: &[f32], x: &[f32], y: &mut [f32]) {
    assert!(w.len() >= y.len() * x.len(), "rows_f32: weights too short");
    // SAFETY: rows · n elements of w exist (checked); features by `kernel_set`.
    unsafe { rows_f32_raw(w.as_ptr(), w.len(), x.as_ptr(), x.len(), y) }
}

fn rows_bf16(w: &[u16], x: &[f32], y: &mut [f32]) {
    assert!(w.len() >= y.len() * x.len(), "rows_bf16: weights too short");
    let n = x.len();
    XP.with(|buf| {
        let mut xp = buf.borrow_mut();
        deinterleave16(x, &mut xp);
        // SAFETY: as `rows_f32`; `xp` holds n rounded down to 16 values.
        unsafe { rows_bf16_eo_raw(w.as_ptr(), w.len(), xp.as_ptr(), x.as_ptr(), n, y) }
    })
}

thread_local! {
    /// x rearranged for [`rows_bf16_eo_raw`], reused across calls.
    static XP: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `xp[16b..16b+8]` = the even elements of `x[16b..16b+16]`, then the odd
/// ones, for every full block of 16 (the ragged tail is left out).
///
/// In vector shuffles: it runs once per product task, and as an iterator
/// chain (`step_by` into `extend`) it was 4.5% of a 0.4B bf16 decode's CPU
/// time (perf, 2 threads), the largest cost after the product itself.
fn deinterleave16(x: &[f32], xp: &mut Vec<f32>) {
    let blocks = x.len() / 16;
    xp.clear();
    xp.reserve(16 * blocks);
    // SAFETY: reads 16·blocks elements of x, writes as many into xp's
    // reserved capacity, then marks them initialised; features by
    // `kernel_set`.
    unsafe {
        deinterleave16_raw(x.as_ptr(), xp.as_mut_ptr(), blocks);
        xp.set_len(16 * blocks);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn deinterleave16_raw(x: *const f32, out: *mut f32, blocks: usize) {
    for b in 0..blocks {
        let a = _mm256_loadu_ps(x.add(16 * b));
        let c = _mm256_loadu_ps(x.add(16 * b + 8));
        // Per 128-bit half: [a0 a2 c0 c2 | a4 a6 c4 c6] and the odd ones;
        // then 64-bit pieces in order 0, 2, 1, 3: [a0 a2 a4 a6 c0 c2 c4 c6].
        let even = _mm256_castps_pd(_mm256_shuffle_ps::<0b10_00_10_00>(a, c));
        let odd = _mm256_castps_pd(_mm256_shuffle_ps::<0b11_01_11_01>(a, c));
        let even = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(even));
        let odd = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(odd));
        _mm256_storeu_ps(out.add(16 * b), even);
        _mm256_storeu_ps(out.add(16 * b + 8), odd);
    }
}

/// bf16 rows, 4 at a time, widening 16 weights with two instructions.
///
/// A 256-bit load of 16 bf16 holds in its 32-bit lane j the weights 2j (low
/// half) and 2j+1 (high half); as f32 bit patterns, `lane << 16` is weight
/// 2j and `lane & 0xffff0000` is weight 2j+1, both exact. So each 16
/// weights take one load, one shift, one AND and two FMAs, against the
/// even and odd elements of x (`xp`, see [`deinterleave16`]) — instead of
/// two widening loads (`vpmovzxwd`) and two shifts. Measured on this
/// machine's Zen 4 cores with a matrix resident in L2: 73 GB/s per thread
/// against 33 GB/s for the widening kernel, which is about what DRAM
/// delivers per thread, so the old kernel could not keep up with memory.
/// `x` (natural order) serves the tail of each row (n mod 16) and the last
/// rows (m mod 4).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_bf16_eo_raw(
    w: *const u16,
    avail: usize,
    xp: *const f32,
    x: *const f32,
    n: usize,
    y: &mut [f32],
) {
    let m = y.len();
    let full = n / 16 * 16;
    let high = _mm256_set1_epi32(0xffff_0000_u32 as i32);
    let mut r = 0;
    while r + 4 <= m {
        let p = four_rows(w, r, n);
        // Prefetch the next group of 4 rows while this one is summed
        // (see `prefetch_group`); none past the last group.
        let ahead = if (r + 8) * n <= avail { 4 * n } else { 0 };
        let mut a = [[_mm256_setzero_ps(); 2]; 4];
        let mut i = 0;
        while i < full {
            if ahead > 0 {
                prefetch_group(&p, ahead + i);
            }
            let xe = ld_f32(xp.add(i));
            let xo = ld_f32(xp.add(i + 8));
            for q in 0..4 {
                let v = _mm256_loadu_si256(p[q].add(i) as *const __m256i);
                let even = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
                let odd = _mm256_castsi256_ps(_mm256_and_si256(v, high));
                a[q][0] = _mm256_fmadd_ps(even, xe, a[q][0]);
                a[q][1] = _mm256_fmadd_ps(odd, xo, a[q][1]);
            }
            i += 16;
        }
        for q in 0..4 {
            let mut s = hsum(_mm256_add_ps(a[q][0], a[q][1]));
            for j in full..n {
                s += bf16_to_f32(*p[q].add(j)) * *x.add(j);
            }
            y[r + q] = s;
        }
        r += 4;
    }
    while r < m {
        y[r] = dot_bf16_raw(w.add(r * n), x, n);
        r += 1;
    }
}

fn rows_bf16_panels(w: &[u16], x: &[f32], y: &mut [f32]) {
    let n = x.len();
    assert!(
        n.is_multiple_of(16) && y.len().is_multiple_of(PANEL_ROWS),
        "rows_bf16_panels: ragged shape"
    );
    assert!(
        w.len() >= y.len() * n,
        "rows_bf16_panels: weights too short"
    );
    XP.with(|buf| {
        let mut xp = buf.borrow_mut();
        deinterleave16(x, &mut xp);
        // SAFETY: y.len()·n elements of w exist (checked), xp holds n
        // values (n a multiple of 16); features checked by `kernel_set`.
        unsafe { rows_bf16_panels_raw(w.as_ptr(), xp.as_ptr(), n, y) }
    })
}

/// bf16 rows in panels ([`super::Layout::Panels`]): the widening of
/// [`rows_bf16_eo_raw`] on one sequential stream — each step reads the
/// next 128 bytes, 16 weights of each of the group's 4 rows — prefetching
/// [`super::prefetch::distance`] bytes ahead when the model's tuner found
/// that faster (on some CPUs the hardware prefetcher alone keeps ahead of
/// such a stream, on others it falls far behind: see [`super::prefetch`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_bf16_panels_raw(w: *const u16, xp: *const f32, n: usize, y: &mut [f32]) {
    let ahead = super::prefetch::distance();
    if ahead != 0 {
        rows_bf16_panels_loop::<true>(w, xp, n, y, ahead)
    } else {
        rows_bf16_panels_loop::<false>(w, xp, n, y, 0)
    }
}

/// [`rows_bf16_panels_raw`] with the prefetch decided at compile time
/// (`PF`), two 128-byte steps per iteration. Why: with the `ahead != 0`
/// test and one step per iteration, this loop streamed 8–11% slower than
/// the same loop unswitched and unrolled twice (1 GiB of bf16 panels, 2
/// threads, 12 alternating rounds, 4 runs: 1.08×, 1.09×, 1.10×, 1.11×,
/// and a fifth, disturbed throughout, 1.03×; unrolled four times
/// 1.08–1.12×, so twice it is). The branch and the loop control are a
/// fifth of the loop's instructions, and each instruction waiting behind a
/// cache miss is one fewer that the out-of-order window can look past it
/// to reach the next loads. One accumulator per row (the even and the odd
/// product chained) rather than two: the unrolled loop then needs no
/// register spill, and streamed 0.8–3.0% faster (6 runs as above); at
/// memory speed a step takes far longer than the two FMAs' latency.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_bf16_panels_loop<const PF: bool>(
    w: *const u16,
    xp: *const f32,
    n: usize,
    y: &mut [f32],
    ahead: usize,
) {
    let high = _mm256_set1_epi32(0xffff_0000_u32 as i32);
    // One 128-byte step at column i: weights at p, 16 x values at xp + i.
    let step = |p: *const u16, i: usize, a: &mut [__m256; 4]| {
        let xe = ld_f32(xp.add(i));
        let xo = ld_f32(xp.add(i + 8));
        if PF {
            prefetch_ahead(p as *const u8, ahead);
        }
        for (q, aq) in a.iter_mut().enumerate() {
            let v = _mm256_loadu_si256(p.add(16 * q) as *const __m256i);
            let even = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
            let odd = _mm256_castsi256_ps(_mm256_and_si256(v, high));
            *aq = _mm256_fmadd_ps(odd, xo, _mm256_fmadd_ps(even, xe, *aq));
        }
    };
    for (g, yg) in y.chunks_exact_mut(PANEL_ROWS).enumerate() {
        let mut p = w.add(g * PANEL_ROWS * n);
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            step(p, i, &mut a);
            step(p.add(16 * PANEL_ROWS), i + 16, &mut a);
            p = p.add(32 * PANEL_ROWS);
            i += 32;
        }
        if i < n {
            step(p, i, &mut a);
        }
        for (o, aq) in yg.iter_mut().zip(&a) {
            *o = hsum(*aq);
        }
    }
}

fn rows_i8_panels(q: &[i8], scales: &[f32], xq: &[i8], xs: &[f32], y: &mut [f32]) {
    let n = xq.len();
    let nb = n / I8_BLOCK;
    assert!(
        n.is_multiple_of(I8_BLOCK) && y.len().is_multiple_of(PANEL_ROWS),
        "rows_i8_panels: ragged shape"
    );
    assert!(q.len() >= y.len() * n, "rows_i8_panels: weights too short");
    assert!(
        scales.len() >= y.len() * nb,
        "rows_i8_panels: scales too short"
    );
    assert!(
        xs.len() >= nb,
        "rows_i8_panels: activation scales too short"
    );
    // SAFETY: bounds checked above; features by `kernel_set`.
    unsafe {
        rows_i8_panels_raw(
            q.as_ptr(),
            scales.as_ptr(),
            xq.as_ptr(),
            xs.as_ptr(),
            n,
            I8_BLOCK,
            y,
        )
    }
}

/// int8 rows in panels: per block, the group's 4 rows × `bl` weights are
/// contiguous bytes and its 4 scales 16; block sums in integers as in
/// [`rows_i8_raw`], then all 4 rows scaled and accumulated in one vector.
/// `bl` is [`I8_BLOCK`], or for a matrix narrower than one block (one block
/// per row, so its row-major order is already this one) the row's width,
/// a multiple of 16.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_i8_panels_raw(
    q: *const i8,
    scales: *const f32,
    xq: *const i8,
    xs: *const f32,
    n: usize,
    bl: usize,
    y: &mut [f32],
) {
    // Unswitched on the prefetch, as `rows_bf16_panels_raw` (why there).
    let ahead = super::prefetch::distance();
    if ahead != 0 {
        rows_i8_panels_loop::<true>(q, scales, xq, xs, n, bl, y, ahead)
    } else {
        rows_i8_panels_loop::<false>(q, scales, xq, xs, n, bl, y, 0)
    }
}

/// [`rows_i8_panels_raw`] with the prefetch decided at compile time
/// (`PF`), two 64-byte steps per iteration (one prefetch of two lines per
/// iteration instead of a test every step).
#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_i8_panels_loop<const PF: bool>(
    q: *const i8,
    scales: *const f32,
    xq: *const i8,
    xs: *const f32,
    n: usize,
    bl: usize,
    y: &mut [f32],
    ahead: usize,
) {
    let nb = n / bl;
    // One 128-byte step: 32 weights of each of the 4 rows at p, 32
    // activations at x (|x| once for the 4 rows).
    let step = |p: *const i8, x: *const i8, a: &mut [__m256i; 4]| {
        let xv = _mm256_loadu_si256(x as *const __m256i);
        let xa = _mm256_abs_epi8(xv);
        for (r, ar) in a.iter_mut().enumerate() {
            let w = _mm256_loadu_si256(p.add(r * bl) as *const __m256i);
            *ar = _mm256_add_epi32(*ar, dot32_i8(w, xv, xa));
        }
    };
    // A last 16 of a block as wide as 16·odd (a narrow matrix's rows):
    // both sides zero-extended, so the upper lanes add 0.
    let half = |p: *const i8, x: *const i8, a: &mut [__m256i; 4]| {
        let z = _mm_setzero_si128();
        let xv = _mm256_set_m128i(z, _mm_loadu_si128(x as *const __m128i));
        let xa = _mm256_abs_epi8(xv);
        for (r, ar) in a.iter_mut().enumerate() {
            let w = _mm256_set_m128i(z, _mm_loadu_si128(p.add(r * bl) as *const __m128i));
            *ar = _mm256_add_epi32(*ar, dot32_i8(w, xv, xa));
        }
    };
    for (g, yg) in y.chunks_exact_mut(PANEL_ROWS).enumerate() {
        // Lane j < 4: row j (low lanes of each block); j ≥ 4: row j − 4.
        let mut acc = _mm256_setzero_ps();
        let mut p = q.add(g * PANEL_ROWS * n);
        let mut sc = scales.add(g * PANEL_ROWS * nb);
        for b in 0..nb {
            // Software prefetch only where the model's tuner measured it
            // faster (see `super::prefetch`). On the first VM tuned for,
            // the panels on 2 MiB pages kept the hardware prefetcher ahead
            // and prefetching the block 8 KiB ahead cost int8 decode
            // tokens/s: in-process alternating runs (24 pairs each), 59.7
            // vs 56.0 and 64.1 vs 57.5 without and with; 512 B ahead 60.7
            // vs 57.3. On a Rapids VM it made int8 decode 1.40× as fast.
            let xsb = *xs.add(b);
            let xb = xq.add(b * bl);
            if PF {
                // The scales are a second, slower stream (4 bytes per
                // I8_BLOCK weights): fetch them as far ahead as the
                // weights. Measured with the weight prefetch on (0.4B int8
                // decode, in-process alternating blocks of 8 tokens, 3
                // runs): tokens 1.1–1.3% faster.
                let at = (sc as *const u8).wrapping_add(ahead / bl * 4);
                _mm_prefetch::<_MM_HINT_T1>(at as *const i8);
            }
            let mut a = [_mm256_setzero_si256(); 4];
            // The block is 4·bl bytes: each step reads 128 of them, and
            // prefetches the 2 lines as far ahead.
            let mut i = 0;
            while i + 32 <= bl {
                if PF {
                    prefetch_ahead(p.add(4 * i) as *const u8, ahead);
                }
                step(p.add(i), xb.add(i), &mut a);
                i += 32;
            }
            if i < bl {
                if PF {
                    prefetch_ahead(p.add(4 * i) as *const u8, ahead);
                }
                half(p.add(i), xb.add(i), &mut a);
            }
            // The 4 rows' block sums, reduced across lanes in integers
            // (exact) into one vector — lanes 0–3 rows 0–3 over the low
            // half of the block's lanes, 4–7 over the high half — then one
            // convert and one FMA by the 4 combined scales for all rows.
            // Per block that is ~9 instructions instead of ~20 (4 converts,
            // 4 FMAs, 4 scalar scale products and their broadcasts), of ~70
            // per block in all, and the lanes are summed exactly. Measured
            // (noisy, shared core): from L2 on one thread 38.3 and 31.2 GB/s
            // against 33.9 and 29.7 before; in 4 paired decode runs a mean
            // of 52.8 tokens/s against 50.7.
            let t01 = _mm256_hadd_epi32(a[0], a[1]);
            let t23 = _mm256_hadd_epi32(a[2], a[3]);
            let t = _mm256_cvtepi32_ps(_mm256_hadd_epi32(t01, t23));
            let s4 = _mm_mul_ps(_mm_loadu_ps(sc), _mm_set1_ps(xsb));
            acc = _mm256_fmadd_ps(t, _mm256_set_m128(s4, s4), acc);
            p = p.add(PANEL_ROWS * bl);
            sc = sc.add(PANEL_ROWS);
        }
        let v = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
        _mm_storeu_ps(yg.as_mut_ptr(), v);
    }
}

fn rows_f16(w: &[u16], x: &[f32], y: &mut [f32]) {
    assert!(w.len() >= y.len() * x.len(), "rows_f16: weights too short");
    // SAFETY: as `rows_f32`.
    unsafe { rows_f16_raw(w.as_ptr(), w.len(), x.as_ptr(), x.len(), y) }
}

/// 8 lanes of i32 sums of 32 int8 weights `w` times 32 int8 activations
/// `x` (`xa` = |x|), exact: `vpmaddubsw` multiplies |x| (unsigned) by w
/// given x's sign (`vpsignb`) and adds pairs into i16, which cannot
/// saturate as both sides are within ±127 (2·127² = 32258; int8 files with
/// a −128 are refused at load), then `vpmaddwd` by ones adds pairs into
/// i32. With the caller's `vpaddd`, four vector operations per 32 weights
/// where int16 activations took six (`vpmovsxbw`, `vpmaddwd`, `vpaddd` per
/// 16).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot32_i8(w: __m256i, x: __m256i, xa: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(w, x));
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// Integer dot of `len ≤ I8_BLOCK` int8 weights with int8 activations:
/// 8 lanes of i32 partial sums ([`dot32_i8`], 32 weights per step), plus
/// the scalar tail's sum. Exact: |sum| ≤ 128·127² < 2³¹.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i8_block(q: *const i8, x: *const i8, len: usize) -> (__m256i, i32) {
    let mut a = _mm256_setzero_si256();
    let mut i = 0;
    while i + 32 <= len {
        let w = _mm256_loadu_si256(q.add(i) as *const __m256i);
        let xv = _mm256_loadu_si256(x.add(i) as *const __m256i);
        a = _mm256_add_epi32(a, dot32_i8(w, xv, _mm256_abs_epi8(xv)));
        i += 32;
    }
    let mut tail = 0i32;
    while i < len {
        tail += *q.add(i) as i32 * *x.add(i) as i32;
        i += 1;
    }
    (a, tail)
}

/// int8 rows, 4 at a time sharing each load of x: per full block, 4 steps of
/// 16 weights per row into an i32 vector, then one convert and one FMA by
/// the block's combined scale into the row's f32 accumulator.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_i8_raw(
    q: *const i8,
    avail: usize,
    scales: *const f32,
    xq: *const i8,
    xs: *const f32,
    n: usize,
    y: &mut [f32],
) {
    let nb = n.div_ceil(I8_BLOCK);
    let m = y.len();
    let mut r = 0;
    while r + 4 <= m {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut tails = [0.0f32; 4];
        // The scales are a stream of their own (nb floats per row): fetch
        // those of the rows the weight prefetch below runs ahead to.
        if (r + 12) * n <= avail {
            for qq in 8..12 {
                _mm_prefetch::<_MM_HINT_T1>(scales.wrapping_add((r + qq) * nb) as *const i8);
            }
        }
        for b in 0..nb {
            let i0 = b * I8_BLOCK;
            let len = I8_BLOCK.min(n - i0);
            let xsb = *xs.add(b);
            if len == I8_BLOCK {
                // Two groups ahead: 8 rows of int8 are as many bytes as the
                // 4 rows ahead the bf16 kernel prefetches (~8 KiB for
                // C = 1024), and one group ahead left int8 decode ~6% slower
                // (latency not hidden).
                if (r + 12) * n <= avail {
                    let p = four_rows(q.add(i0), r, n);
                    prefetch_group(&p, 8 * n);
                }
                let mut a = [_mm256_setzero_si256(); 4];
                let mut i = 0;
                while i < I8_BLOCK {
                    let xv = _mm256_loadu_si256(xq.add(i0 + i) as *const __m256i);
                    let xa = _mm256_abs_epi8(xv);
                    for (qq, aq) in a.iter_mut().enumerate() {
                        let p = q.add((r + qq) * n + i0 + i);
                        let w = _mm256_loadu_si256(p as *const __m256i);
                        *aq = _mm256_add_epi32(*aq, dot32_i8(w, xv, xa));
                    }
                    i += 32;
                }
                for (qq, aq) in a.iter().enumerate() {
                    let s = _mm256_set1_ps(*scales.add((r + qq) * nb + b) * xsb);
                    acc[qq] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(*aq), s, acc[qq]);
                }
            } else {
                for qq in 0..4 {
                    let (v, tail) = i8_block(q.add((r + qq) * n + i0), xq.add(i0), len);
                    let s = *scales.add((r + qq) * nb + b) * xsb;
                    acc[qq] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(s), acc[qq]);
                    tails[qq] += tail as f32 * s;
                }
            }
        }
        for qq in 0..4 {
            y[r + qq] = hsum(acc[qq]) + tails[qq];
        }
        r += 4;
    }
    while r < m {
        let mut acc = _mm256_setzero_ps();
        let mut tails = 0.0f32;
        for b in 0..nb {
            let i0 = b * I8_BLOCK;
            let (v, tail) = i8_block(q.add(r * n + i0), xq.add(i0), I8_BLOCK.min(n - i0));
            let s = *scales.add(r * nb + b) * *xs.add(b);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(s), acc);
            tails += tail as f32 * s;
        }
        y[r] = hsum(acc) + tails;
        r += 1;
    }
}

fn rows_i8(q: &[i8], scales: &[f32], xq: &[i8], xs: &[f32], y: &mut [f32]) {
    let n = xq.len();
    let nb = n.div_ceil(I8_BLOCK);
    assert!(q.len() >= y.len() * n, "rows_i8: weights too short");
    assert!(scales.len() >= y.len() * nb, "rows_i8: scales too short");
    assert!(xs.len() >= nb, "rows_i8: activation scales too short");
    if n < I8_BLOCK && n.is_multiple_of(16) && n > 0 {
        // One block per row (v7's LoRA up-projections of 32 or 64
        // columns, which cannot be laid out in I8_BLOCK panels): the rows
        // of each group of 4 are one contiguous block of the panel
        // kernel's shape. Through the general kernel's ragged-block path
        // they took ~3.4% of a 0.4B int8 token's kernel time for ~1.5% of
        // its bytes (perf); this way int8 decode ran 1.0–2.5% faster
        // (in-process alternating blocks of 8 tokens, 6 runs).
        let full = y.len() / PANEL_ROWS * PANEL_ROWS;
        let (groups, rest) = y.split_at_mut(full);
        // SAFETY: bounds checked above (groups are the first `full` rows,
        // one scale each); features by `kernel_set`.
        unsafe {
            rows_i8_panels_raw(
                q.as_ptr(),
                scales.as_ptr(),
                xq.as_ptr(),
                xs.as_ptr(),
                n,
                n,
                groups,
            );
            rows_i8_raw(
                q.as_ptr().add(full * n),
                q.len() - full * n,
                scales.as_ptr().add(full),
                xq.as_ptr(),
                xs.as_ptr(),
                n,
                rest,
            );
        }
        return;
    }
    // SAFETY: bounds checked above; features by `kernel_set`.
    unsafe {
        rows_i8_raw(
            q.as_ptr(),
            q.len(),
            scales.as_ptr(),
            xq.as_ptr(),
            xs.as_ptr(),
            n,
            y,
        )
    }
}

// ------------------------------------------------------------------ widening

/// Generates a widening loop (8 at a time, scalar tail) for one 16-bit type.
macro_rules! widen_kernel {
    ($name:ident, $ld:ident, $sc:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(w: *const u16, out: &mut [f32]) {
            let n = out.len();
            let o = out.as_mut_ptr();
            let mut i = 0;
            while i + 8 <= n {
                _mm256_storeu_ps(o.add(i), $ld(w.add(i)));
                i += 8;
            }
            while i < n {
                *o.add(i) = $sc(*w.add(i));
                i += 1;
            }
        }
    };
}

widen_kernel!(widen_bf16_raw, ld_bf16, bf16_to_f32);
widen_kernel!(widen_f16_raw, ld_f16, f16_to_f32);

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_i8_raw(q: *const i8, scales: *const f32, out: &mut [f32]) {
    let n = out.len();
    let o = out.as_mut_ptr();
    let mut b0 = 0;
    while b0 < n {
        let len = I8_BLOCK.min(n - b0);
        let sf = *scales.add(b0 / I8_BLOCK);
        if len == I8_BLOCK {
            widen_i8_block(q.add(b0), sf, o.add(b0));
        } else {
            let s = _mm256_set1_ps(sf);
            let mut i = b0;
            while i + 8 <= b0 + len {
                _mm256_storeu_ps(o.add(i), _mm256_mul_ps(ld_i8(q.add(i)), s));
                i += 8;
            }
            while i < b0 + len {
                *o.add(i) = *q.add(i) as f32 * sf;
                i += 1;
            }
        }
        b0 += len;
    }
}

/// One whole int8 block (`I8_BLOCK` weights from `q`) times `scale` into
/// `o`: the inner step of both int8 widenings.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_i8_block(q: *const i8, scale: f32, o: *mut f32) {
    let s = _mm256_set1_ps(scale);
    for j in (0..I8_BLOCK).step_by(8) {
        _mm256_storeu_ps(o.add(j), _mm256_mul_ps(ld_i8(q.add(j)), s));
    }
}

fn widen_bf16_panel(w: &[u16], out: &mut [f32]) {
    let pieces = out.len() / 16;
    if pieces > 0 {
        assert!(
            w.len() >= (pieces - 1) * PANEL_ROWS * 16 + 16,
            "widen_bf16_panel: short"
        );
    }
    // SAFETY: piece j reads w[64j..64j+16] (checked above) and writes
    // out[16j..16j+16]; features checked by `kernel_set`.
    unsafe { widen_bf16_panel_raw(w.as_ptr(), out.as_mut_ptr(), pieces) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_bf16_panel_raw(w: *const u16, out: *mut f32, pieces: usize) {
    for j in 0..pieces {
        let (s, o) = (w.add(j * PANEL_ROWS * 16), out.add(j * 16));
        _mm256_storeu_ps(o, ld_bf16(s));
        _mm256_storeu_ps(o.add(8), ld_bf16(s.add(8)));
    }
}

fn widen_bf16_group(w: &[u16], kc: usize, out: &mut [f32], ld: usize) {
    let pieces = kc / 16;
    if pieces == 0 {
        return;
    }
    assert!(
        w.len() >= pieces * PANEL_ROWS * 16,
        "widen_bf16_group: short"
    );
    assert!(
        ld >= pieces * 16 && out.len() >= (PANEL_ROWS - 1) * ld + pieces * 16,
        "widen_bf16_group: out too short"
    );
    // SAFETY: piece j reads w[64j..64j+64] and writes out[q·ld + 16j..+16]
    // for q < 4 (both checked above); features checked by `kernel_set`.
    unsafe { widen_bf16_group_raw(w.as_ptr(), pieces, out.as_mut_ptr(), ld) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_bf16_group_raw(w: *const u16, pieces: usize, out: *mut f32, ld: usize) {
    for j in 0..pieces {
        for q in 0..PANEL_ROWS {
            let (s, o) = (w.add((j * PANEL_ROWS + q) * 16), out.add(q * ld + j * 16));
            _mm256_storeu_ps(o, ld_bf16(s));
            _mm256_storeu_ps(o.add(8), ld_bf16(s.add(8)));
        }
    }
}

fn widen_bf16(w: &[u16], out: &mut [f32]) {
    assert!(w.len() >= out.len());
    // SAFETY: reads out.len() elements (checked); features by `kernel_set`.
    unsafe { widen_bf16_raw(w.as_ptr(), out) }
}

fn widen_f16(w: &[u16], out: &mut [f32]) {
    assert!(w.len() >= out.len());
    // SAFETY: as `widen_bf16`.
    unsafe { widen_f16_raw(w.as_ptr(), out) }
}

fn widen_i8(q: &[i8], scales: &[f32], out: &mut [f32]) {
    assert!(q.len() >= out.len() && scales.len() >= out.len().div_ceil(I8_BLOCK));
    // SAFETY: as `widen_bf16`, scales for every block present (checked).
    unsafe { widen_i8_raw(q.as_ptr(), scales.as_ptr(), out) }
}

fn widen_i8_group(q: &[i8], scales: &[f32], kc: usize, out: &mut [f32], ld: usize) {
    let blocks = kc / I8_BLOCK;
    if blocks == 0 {
        return;
    }
    assert!(
        q.len() >= blocks * PANEL_ROWS * I8_BLOCK && scales.len() >= blocks * PANEL_ROWS,
        "widen_i8_group: short"
    );
    assert!(
        ld >= blocks * I8_BLOCK && out.len() >= (PANEL_ROWS - 1) * ld + blocks * I8_BLOCK,
        "widen_i8_group: out too short"
    );
    // SAFETY: block b of row r reads q[(4b + r)·B..+B] and scales[4b + r],
    // writes out[r·ld + B·b..+B], B = I8_BLOCK (all checked above);
    // features by `kernel_set`.
    unsafe { widen_i8_group_raw(q.as_ptr(), scales.as_ptr(), blocks, out.as_mut_ptr(), ld) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_i8_group_raw(
    q: *const i8,
    scales: *const f32,
    blocks: usize,
    out: *mut f32,
    ld: usize,
) {
    for b in 0..blocks {
        for r in 0..PANEL_ROWS {
            let i = b * PANEL_ROWS + r;
            let o = out.add(r * ld + b * I8_BLOCK);
            widen_i8_block(q.add(i * I8_BLOCK), *scales.add(i), o);
        }
    }
}

// ------------------------------------------------------- GEMM micro-kernel

/// The M × 8V register tile: `acc[i][0..8V] += Σ_p w[i][p] · xp[p][0..8V]`,
/// the weights read as M rows `ldw` apart or, when `PACKED`, as a
/// micro-panel (`w[p·M + i]`, see [`pack_panel`]). With M = 6, V = 2: 12
/// accumulators, 2 token vectors and 1 broadcast weight live in 15 of the
/// 16 ymm registers; 12 FMAs per 2 loads + 6 broadcasts.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const M: usize, const V: usize, const PACKED: bool>(
    w: *const f32,
    ldw: usize,
    xp: *const f32,
    k: usize,
    acc: *mut f32,
) {
    let mut c = [[_mm256_setzero_ps(); V]; M];
    let mut wp = [w; M];
    for (i, p) in wp.iter_mut().enumerate() {
        *p = w.add(i * ldw);
    }
    // One k step: V token vectors times M broadcast weights.
    macro_rules! step {
        ($p:expr) => {{
            let xq = xp.add($p * NR);
            let mut xv = [_mm256_setzero_ps(); V];
            for (u, v) in xv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(xq.add(8 * u));
            }
            for i in 0..M {
                let at = if PACKED {
                    w.add($p * M + i)
                } else {
                    wp[i].add($p)
                };
                let b = _mm256_broadcast_ss(&*at);
                for u in 0..V {
                    c[i][u] = _mm256_fmadd_ps(b, xv[u], c[i][u]);
                }
            }
        }};
    }
    let mut p = 0;
    if PACKED {
        // Unrolled by 4: the packed steps have no address arithmetic of
        // their own, so the loop's counter and branch are all that is
        // left besides loads and FMAs.
        while p + 4 <= k {
            step!(p);
            step!(p + 1);
            step!(p + 2);
            step!(p + 3);
            p += 4;
        }
    }
    // Unrolled by 2 to halve the loop overhead per FMA.
    while p + 2 <= k {
        step!(p);
        step!(p + 1);
        p += 2;
    }
    if p < k {
        step!(p);
    }
    for (i, ci) in c.iter().enumerate() {
        for (u, cu) in ci.iter().enumerate() {
            let o = acc.add(i * NR + 8 * u);
            _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), *cu));
        }
    }
}

/// [`tile`] for `m` rows (1..=MR) and `n` tokens (one or two vectors).
///
/// # Safety
/// As [`tile`]'s reads and writes, bounds checked by the callers.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_for<const PACKED: bool>(
    w: *const f32,
    ldw: usize,
    m: usize,
    xp: *const f32,
    k: usize,
    n: usize,
    acc: *mut f32,
) {
    macro_rules! go {
        ($v:literal) => {
            match m {
                6 => tile::<6, $v, PACKED>(w, ldw, xp, k, acc),
                5 => tile::<5, $v, PACKED>(w, ldw, xp, k, acc),
                4 => tile::<4, $v, PACKED>(w, ldw, xp, k, acc),
                3 => tile::<3, $v, PACKED>(w, ldw, xp, k, acc),
                2 => tile::<2, $v, PACKED>(w, ldw, xp, k, acc),
                _ => tile::<1, $v, PACKED>(w, ldw, xp, k, acc),
            }
        };
    }
    if n > 8 {
        go!(2)
    } else {
        go!(1)
    }
}

fn gemm_tile(w: &[f32], ldw: usize, m: usize, xp: &[f32], k: usize, n: usize, acc: &mut [f32]) {
    assert!(NR == 16 && (1..=MR).contains(&m) && (1..=NR).contains(&n) && k > 0);
    assert!(w.len() >= (m - 1) * ldw + k, "gemm_tile: weights too short");
    assert!(xp.len() >= k * NR, "gemm_tile: packed x too short");
    assert!(acc.len() >= m * NR, "gemm_tile: acc too short");
    // SAFETY: every read and write is within the bounds checked above
    // (one vector per 8 tokens: lanes 0..16 of xp rows and acc rows);
    // features by `kernel_set`.
    unsafe { tile_for::<false>(w.as_ptr(), ldw, m, xp.as_ptr(), k, n, acc.as_mut_ptr()) }
}

fn gemm_tile_packed(wp: &[f32], m: usize, xp: &[f32], k: usize, n: usize, acc: &mut [f32]) {
    assert!(NR == 16 && (1..=MR).contains(&m) && (1..=NR).contains(&n) && k > 0);
    assert!(wp.len() >= m * k, "gemm_tile_packed: panel too short");
    assert!(xp.len() >= k * NR, "gemm_tile_packed: packed x too short");
    assert!(acc.len() >= m * NR, "gemm_tile_packed: acc too short");
    // SAFETY: as `gemm_tile`, the weights being the m·k checked above.
    unsafe { tile_for::<true>(wp.as_ptr(), 0, m, xp.as_ptr(), k, n, acc.as_mut_ptr()) }
}

/// The unpack / shuffle / lane-swap sequence of an 8×8 f32 transpose:
/// `out[i]` lane j is `r[j]` lane i.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose8_regs(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// The vector part of [`pack_panel`]: columns `0..k8`, k8 a multiple of 8.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_panel_raw(src: *const f32, ld: usize, m: usize, k8: usize, out: *mut f32) {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let first_m = _mm256_cmpgt_epi32(_mm256_set1_epi32(m as i32), lanes);
    for p in (0..k8).step_by(8) {
        let r: [__m256; 8] = std::array::from_fn(|j| {
            if j < m {
                _mm256_loadu_ps(src.add(j * ld + p))
            } else {
                _mm256_setzero_ps()
            }
        });
        for (s, c) in transpose8_regs(r).iter().enumerate() {
            let at = out.add((p + s) * m);
            if s * m + 8 <= 8 * m {
                _mm256_storeu_ps(at, *c);
            } else {
                _mm256_maskstore_ps(at, first_m, *c);
            }
        }
    }
}

/// 8 rows of 8 (`x[j·ld..j·ld + 8]`, j < 8) transposed into
/// `dst[i·ldd..i·ldd + 8]`, i < 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose8(x: *const f32, ld: usize, dst: *mut f32, ldd: usize) {
    let r: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(x.add(j * ld)));
    for (i, c) in transpose8_regs(r).iter().enumerate() {
        _mm256_storeu_ps(dst.add(i * ldd), *c);
    }
}

/// The scalar [`super::scalar::pack_panel`] 8 columns at a time: the m
/// rows' 8 weights (zeros for rows m..8) transposed in registers, and
/// result s stored at its step's m slots, `(p + s)·m`. A store is 8 lanes
/// wide where that stays inside the group's own 8·m slots (its lanes past
/// m are overwritten by the stores after it), else masked to m lanes, so
/// nothing past the panel's `m·k` elements is written. Columns past a
/// multiple of 8 by the scalar packing.
fn pack_panel(w: &[f32], ld: usize, m: usize, k: usize, dst: &mut [f32]) {
    assert!((1..=MR).contains(&m), "pack_panel: 1 to MR rows");
    assert!(w.len() >= (m - 1) * ld + k, "pack_panel: weights too short");
    assert!(dst.len() >= m * k, "pack_panel: panel too short");
    let k8 = k / 8 * 8;
    // SAFETY: reads w[i·ld + p..+8] for i < m, p + 8 ≤ k8 ≤ k (in bounds,
    // asserted above); writes inside dst[p·m..(p + 8)·m], within m·k (a
    // full store only when s·m + 8 ≤ 8·m, else m lanes); features by
    // `kernel_set`.
    unsafe { pack_panel_raw(w.as_ptr(), ld, m, k8, dst.as_mut_ptr()) };
    if k8 < k {
        // The columns past the last 8: the reference's packing, from
        // column k8 on (its step p is step k8 + p of this panel).
        super::scalar::pack_panel(&w[k8..], ld, m, k - k8, &mut dst[k8 * m..]);
    }
}

/// The token tile's packing ([`super::scalar::pack_tile`]) in 8×8
/// transposes for each whole group of 8 tokens and 8 inputs; the rest
/// (a ragged last tile, a width not a multiple of 8) element by element.
fn pack_tile(x: &[f32], ld: usize, n: usize, dst: &mut [f32]) {
    let width = dst.len() / NR;
    assert!(n <= NR, "pack_tile: more than NR tokens");
    assert!(
        n == 0 || x.len() >= (n - 1) * ld + width,
        "pack_tile: x too short"
    );
    let w8 = width / 8 * 8;
    let groups = n / 8;
    for g in 0..groups {
        for p in (0..w8).step_by(8) {
            // SAFETY: rows 8g..8g+8 < n, columns p..p+8 ≤ width (asserted
            // above); dst rows p..p+8, lanes 8g..8g+8 < NR; features by
            // `kernel_set`.
            unsafe {
                transpose8(
                    x.as_ptr().add(8 * g * ld + p),
                    ld,
                    dst.as_mut_ptr().add(p * NR + 8 * g),
                    NR,
                )
            }
        }
    }
    for j in 0..n {
        let p0 = if j < groups * 8 { w8 } else { 0 };
        for p in p0..width {
            dst[p * NR + j] = x[j * ld + p];
        }
    }
}

/// The accumulator tile's unpacking ([`super::scalar::unpack_tile`]) in
/// 8×8 transposes: each writes 8 outputs of 8 tokens as 8 vector stores,
/// where element by element the GEMM's output pass took 2–3% of prefill
/// samples.
/// The rest (a ragged tile, rows past a multiple of 8) element by element.
///
/// # Safety
/// As [`super::KernelSet::unpack_tile`].
unsafe fn unpack_tile(src: &[f32], n: usize, dst: *mut f32, ld: usize) {
    assert!(n <= NR, "unpack_tile: more than NR tokens");
    let width = src.len() / NR;
    let (w8, n8) = (width / 8 * 8, n / 8 * 8);
    for p in (0..w8).step_by(8) {
        for j in (0..n8).step_by(8) {
            // SAFETY: src rows p..p+8 < width, lanes j..j+8 ≤ n ≤ NR; dst
            // indices j'·ld + p' for j' < n, p' < width are the caller's;
            // features by `kernel_set`.
            unsafe { transpose8(src.as_ptr().add(p * NR + j), NR, dst.add(j * ld + p), ld) }
        }
    }
    for j in 0..n {
        let p0 = if j < n8 { w8 } else { 0 };
        for p in p0..width {
            // SAFETY: as above.
            unsafe { *dst.add(j * ld + p) = src[p * NR + j] };
        }
    }
}

/// [`super::quantize_x8`] with each block's maximum and conversion eight
/// lanes at a time: on the thread that runs the layers, the reference took
/// 1.69 µs per 1024 values (~0.34 ms of each 0.4B int8 token), this 0.34
/// µs; int8 decode +2.4% in two alternating runs (24 pairs each). The same
/// operations in the same IEEE order, so the result is bit-identical: the
/// maximum of |x| (lanes that are NaN never win, as in the reference's
/// `a > m`), the reference's scalar scale, `v·inv` rounded by adding and
/// subtracting 1.5·2²³ (a multiply, then an add: no FMA contraction), and
/// NaN (or ∞·0) mapped to 0 and the rest clamped to ±127.
fn quantize_x8(x: &[f32], xq: &mut Vec<i8>, xs: &mut Vec<f32>) {
    xq.clear();
    xs.clear();
    xq.resize(x.len(), 0);
    xs.reserve(x.len().div_ceil(I8_BLOCK));
    for (blk, out) in x.chunks(I8_BLOCK).zip(xq.chunks_mut(I8_BLOCK)) {
        // SAFETY: both slices have blk.len() elements; features by
        // `kernel_set`.
        xs.push(unsafe { quantize_block(blk, out) });
    }
}

/// One block of [`quantize_x8`] into `out` (`blk.len()` values); returns
/// its scale.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block(blk: &[f32], out: &mut [i8]) -> f32 {
    let n8 = blk.len() / 8 * 8;
    let n32 = blk.len() / 32 * 32;
    let p = blk.as_ptr();
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    // Four running maxima: one chain of dependent max ops per block was
    // most of this function's time (a decoded 0.4B token quantises ~330
    // blocks, all on the thread that runs the layers).
    let mut mv = [_mm256_setzero_ps(); 4];
    for i in (0..n32).step_by(32) {
        for (j, m) in mv.iter_mut().enumerate() {
            // max(a, m) is `a > m ? a : m`: a NaN `a` leaves m.
            *m = _mm256_max_ps(_mm256_and_ps(ld_f32(p.add(i + 8 * j)), abs), *m);
        }
    }
    for i in (n32..n8).step_by(8) {
        mv[0] = _mm256_max_ps(_mm256_and_ps(ld_f32(p.add(i)), abs), mv[0]);
    }
    // The maxima hold no NaN (they start at 0 and a NaN input leaves them),
    // so their order does not matter.
    let m = _mm256_max_ps(_mm256_max_ps(mv[0], mv[1]), _mm256_max_ps(mv[2], mv[3]));
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m1 = _mm_max_ss(m2, _mm_shuffle_ps::<1>(m2, m2));
    let mut amax = _mm_cvtss_f32(m1);
    for &v in &blk[n8..] {
        let a = v.abs();
        if a > amax {
            amax = a;
        }
    }
    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let (iv, magic) = (_mm256_set1_ps(inv), _mm256_set1_ps(ROUND_MAGIC));
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    for i in (0..n8).step_by(8) {
        let r = _mm256_sub_ps(
            _mm256_add_ps(_mm256_mul_ps(ld_f32(p.add(i)), iv), magic),
            magic,
        );
        // As `quantize_one`: NaN → 0 (ordered-compare mask), then the
        // clamp (only reached when inv overflowed to ∞ for a block of
        // values below ~1e-36), then an exact conversion and two packs
        // that cannot saturate.
        let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
        let r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
        let q = _mm256_cvtps_epi32(r);
        let q = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        _mm_storel_epi64(
            out.as_mut_ptr().add(i) as *mut __m128i,
            _mm_packs_epi16(q, q),
        );
    }
    for (o, &v) in out[n8..].iter_mut().zip(&blk[n8..]) {
        *o = quantize_one(v, inv);
    }
    amax / 127.0
}

// -------------------------------------------------------------- activations

/// eˣ for 8 lanes by Cephes' `expf`: `x = n·ln 2 + r`, n the nearest integer
/// to `x·log₂e` (found by adding 1.5·2²³, which leaves it in the low
/// mantissa bits), `|r| ≤ ln 2 / 2` (ln 2 in two parts so `r` is exact),
/// `e^r` by its degree-6 minimax polynomial, and `2^n` as `2^a·2^(n−a)`
/// (a = ⌊n/2⌋) in the exponent bits, so n = 128 at the top of the range
/// does not overflow. Within 2 ulp of libm over the normal range (tested);
/// results that would be subnormal (x < −87.34) are 0, x > 88.72 gives +∞,
/// NaN stays NaN.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp8(x: __m256) -> __m256 {
    const HI: f32 = 88.722_83;
    const LO: f32 = -87.336_55;
    // max/min return their second operand when one is NaN: x goes second.
    let xc = _mm256_min_ps(_mm256_set1_ps(HI), _mm256_max_ps(_mm256_set1_ps(LO), x));
    let t = _mm256_fmadd_ps(
        xc,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
        _mm256_set1_ps(ROUND_MAGIC),
    );
    let n = _mm256_sub_ps(t, _mm256_set1_ps(ROUND_MAGIC));
    let bits = _mm256_sub_epi32(
        _mm256_castps_si256(t),
        _mm256_castps_si256(_mm256_set1_ps(ROUND_MAGIC)),
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let er = _mm256_add_ps(
        _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
        _mm256_set1_ps(1.0),
    );
    let a = _mm256_srai_epi32::<1>(bits);
    let b = _mm256_sub_epi32(bits, a);
    let pow2 = |e: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            e,
            _mm256_set1_epi32(127),
        )))
    };
    let y = _mm256_mul_ps(_mm256_mul_ps(er, pow2(a)), pow2(b));
    let y = _mm256_blendv_ps(
        y,
        _mm256_set1_ps(f32::INFINITY),
        _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(HI)),
    );
    _mm256_blendv_ps(
        y,
        _mm256_setzero_ps(),
        _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LO)),
    )
}

/// Applies `f` to `x` 8 lanes at a time, the tail through a zero-padded
/// vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn map8(x: &mut [f32], f: impl Fn(__m256) -> __m256) {
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        _mm256_storeu_ps(c.as_mut_ptr(), f(_mm256_loadu_ps(c.as_ptr())));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut buf = [0.0f32; 8];
        buf[..rest.len()].copy_from_slice(rest);
        _mm256_storeu_ps(buf.as_mut_ptr(), f(_mm256_loadu_ps(buf.as_ptr())));
        rest.copy_from_slice(&buf[..rest.len()]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp_raw(x: &mut [f32]) {
    // SAFETY (of the closure's calls): features enabled by this function.
    map8(x, |v| unsafe { exp8(v) })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sigmoid_raw(x: &mut [f32]) {
    let one = _mm256_set1_ps(1.0);
    // SAFETY (of the closure's calls): features enabled by this function.
    map8(x, |v| unsafe {
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_div_ps(one, _mm256_add_ps(one, e))
    })
}

fn exp(x: &mut [f32]) {
    // SAFETY: features by `kernel_set`; map8 stays within `x`.
    unsafe { exp_raw(x) }
}

fn sigmoid(x: &mut [f32]) {
    // SAFETY: features by `kernel_set`; map8 stays within `x`.
    unsafe { sigmoid_raw(x) }
}

// ---------------------------------------------------------------------- wkv

/// The v7 step ([`super::wkv7_step`]) vectorised along the key index: per
/// value row, `sa = row·(−kk)`, then `row = row⊙w + sa·kka + v_i·k` and
/// `y_i = row·r` in one pass over the row.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn wkv7_raw(
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
    let n8 = n / 8 * 8;
    let (rp, wp, kp, nkp, kap) = (
        r.as_ptr(),
        w.as_ptr(),
        k.as_ptr(),
        neg_kk.as_ptr(),
        kka.as_ptr(),
    );
    let mut first = 0;
    if n8 == n {
        // Four value rows at a time: their two dot products each reduce
        // together (`hsum4`), so the reduction latency, which bounds a
        // one-row-at-a-time loop, is paid once per four rows.
        while first + 4 <= n {
            let rows = s.as_mut_ptr().add(first * n);
            let mut sa = [_mm256_setzero_ps(); 4];
            let mut j = 0;
            while j < n {
                let nk = ld_f32(nkp.add(j));
                for (q, a) in sa.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(ld_f32(rows.add(q * n + j)), nk, *a);
                }
                j += 8;
            }
            let mut sa4 = [0.0f32; 4];
            _mm_storeu_ps(sa4.as_mut_ptr(), hsum4(sa));
            let mut sav = [_mm256_setzero_ps(); 4];
            let mut viv = [_mm256_setzero_ps(); 4];
            for q in 0..4 {
                sav[q] = _mm256_set1_ps(sa4[q]);
                viv[q] = _mm256_set1_ps(v[first + q]);
            }
            let mut yv = [_mm256_setzero_ps(); 4];
            let mut j = 0;
            while j < n {
                let (ka, kv) = (ld_f32(kap.add(j)), ld_f32(kp.add(j)));
                let (wv, rv) = (ld_f32(wp.add(j)), ld_f32(rp.add(j)));
                for q in 0..4 {
                    let p = rows.add(q * n + j);
                    let t = _mm256_fmadd_ps(sav[q], ka, _mm256_mul_ps(viv[q], kv));
                    let xv = _mm256_fmadd_ps(ld_f32(p), wv, t);
                    _mm256_storeu_ps(p, xv);
                    yv[q] = _mm256_fmadd_ps(xv, rv, yv[q]);
                }
                j += 8;
            }
            _mm_storeu_ps(y.as_mut_ptr().add(first), hsum4(yv));
            first += 4;
        }
    }
    for (i, row) in s.chunks_exact_mut(n).take(n).enumerate().skip(first) {
        let rowp = row.as_mut_ptr();
        let mut sa0 = _mm256_setzero_ps();
        let mut sa1 = _mm256_setzero_ps();
        let mut j = 0;
        while j + 16 <= n8 {
            sa0 = _mm256_fmadd_ps(ld_f32(rowp.add(j)), ld_f32(nkp.add(j)), sa0);
            sa1 = _mm256_fmadd_ps(ld_f32(rowp.add(j + 8)), ld_f32(nkp.add(j + 8)), sa1);
            j += 16;
        }
        if j < n8 {
            sa0 = _mm256_fmadd_ps(ld_f32(rowp.add(j)), ld_f32(nkp.add(j)), sa0);
        }
        let mut sa = hsum(_mm256_add_ps(sa0, sa1));
        for jj in n8..n {
            sa += row[jj] * neg_kk[jj];
        }
        let vi = v[i];
        let (sav, viv) = (_mm256_set1_ps(sa), _mm256_set1_ps(vi));
        let mut y0 = _mm256_setzero_ps();
        let mut j = 0;
        while j < n8 {
            let t = _mm256_fmadd_ps(
                sav,
                ld_f32(kap.add(j)),
                _mm256_mul_ps(viv, ld_f32(kp.add(j))),
            );
            let xv = _mm256_fmadd_ps(ld_f32(rowp.add(j)), ld_f32(wp.add(j)), t);
            _mm256_storeu_ps(rowp.add(j), xv);
            y0 = _mm256_fmadd_ps(xv, ld_f32(rp.add(j)), y0);
            j += 8;
        }
        let mut acc = hsum(y0);
        for jj in n8..n {
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
    // SAFETY: all vector accesses are at indices < n of slices checked to
    // hold n (n·n for the state); features by `kernel_set`.
    unsafe { wkv7_raw(s, n, r, w, k, v, neg_kk, kka, y) }
}

// -------------------------------------------------------------------- probes

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum_f32_raw(x: &[f32], ahead: usize) -> f32 {
    // Unswitched on the prefetch and unrolled as the panel kernels are
    // (see `rows_bf16_panels_loop`): with a test in the loop this probe
    // read 6–11% below what the same buffer delivers (3 runs of 12
    // alternating rounds), and a probe that reads less than the machine
    // can would overstate how close the kernels come.
    if ahead != 0 {
        sum_f32_loop::<true>(x, ahead)
    } else {
        sum_f32_loop::<false>(x, 0)
    }
}

/// [`sum_f32_raw`] with the prefetch decided at compile time, two
/// 128-byte steps per iteration.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum_f32_loop<const PF: bool>(x: &[f32], ahead: usize) -> f32 {
    let p = x.as_ptr();
    let n = x.len();
    let mut a = [_mm256_setzero_ps(); 4];
    let step = |i: usize, a: &mut [__m256; 4]| {
        if PF {
            prefetch_ahead(p.add(i) as *const u8, ahead);
        }
        for (u, acc) in a.iter_mut().enumerate() {
            *acc = _mm256_add_ps(*acc, _mm256_loadu_ps(p.add(i + 8 * u)));
        }
    };
    let mut i = 0;
    while i + 64 <= n {
        step(i, &mut a);
        step(i + 32, &mut a);
        i += 64;
    }
    if i + 32 <= n {
        step(i, &mut a);
        i += 32;
    }
    let mut s = hsum(_mm256_add_ps(
        _mm256_add_ps(a[0], a[1]),
        _mm256_add_ps(a[2], a[3]),
    ));
    while i < n {
        s += x[i];
        i += 1;
    }
    s
}

fn sum_f32(x: &[f32], ahead: usize) -> f32 {
    // SAFETY: reads within x (prefetches may point past it: they never
    // fault); features by `kernel_set`.
    unsafe { sum_f32_raw(x, ahead) }
}

/// Chains of `vfmadd` on 12 independent registers: enough to cover 2 FMA
/// pipes × 4-5 cycles latency on current x86 cores.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fma_probe_raw(iters: u64) -> f64 {
    const CHAINS: usize = 12;
    let mut acc = [_mm256_setzero_ps(); CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm256_set1_ps(i as f32 * 0.01);
    }
    let (m, c) = std::hint::black_box((0.999_999f32, 1e-6f32));
    let (m, c) = (_mm256_set1_ps(m), _mm256_set1_ps(c));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    std::hint::black_box(hsum(s));
    iters as f64 * (CHAINS * 8 * 2) as f64
}

fn fma_probe(iters: u64) -> f64 {
    // SAFETY: register-only arithmetic; features by `kernel_set`.
    unsafe { fma_probe_raw(iters) }
}
