//! Portable reference kernels. Eight independent accumulators give the
//! compiler room to vectorise and fix the summation order, so results do not
//! depend on the optimiser.

use super::KernelSet;

/// The scalar kernel set: the reference every SIMD path is tested against.
pub static SCALAR: KernelSet = KernelSet {
    name: "scalar",
    dot_f32,
    dot_bf16,
    dot_f16,
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

/// Σ w·x, bf16 weights.
pub fn dot_bf16(w: &[u16], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    dot_with(w.len().min(x.len()), |i| bf16_to_f32(w[i]), x)
}

/// Σ w·x, f16 weights.
pub fn dot_f16(w: &[u16], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    dot_with(
        w.len().min(x.len()),
        |i| half::f16::from_bits(w[i]).to_f32(),
        x,
    )
}
