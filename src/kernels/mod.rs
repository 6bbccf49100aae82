//! Numeric kernels behind a small interface: [`Matrix`] (a weight matrix
//! read in place from its file) and the products the models need.
//!
//! The instruction set is chosen once at run time ([`active`]); the
//! environment variable `QUILL_KERNELS=scalar|avx2|neon` forces a path so
//! tests can cover each one. Everything here computes in f32 whatever the
//! stored dtype.

mod matrix;
pub mod scalar;
mod wkv;

use std::sync::OnceLock;

pub use matrix::{MatData, Matrix};
pub use wkv::{wkv4_step, wkv5_step, wkv7_step};

/// One instruction set's implementations of the inner loops.
pub struct KernelSet {
    /// Name shown by `quill info` / `quill bench`.
    pub name: &'static str,
    /// Σ w·x over f32 weights.
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// Σ w·x over bf16 weights (raw bits).
    pub dot_bf16: fn(&[u16], &[f32]) -> f32,
    /// Σ w·x over f16 weights (raw bits).
    pub dot_f16: fn(&[u16], &[f32]) -> f32,
}

static ACTIVE: OnceLock<&'static KernelSet> = OnceLock::new();

/// The kernel set in use: chosen on first call from the CPU's features,
/// unless `QUILL_KERNELS` names one.
pub fn active() -> &'static KernelSet {
    ACTIVE.get_or_init(|| {
        let wanted = std::env::var("QUILL_KERNELS").unwrap_or_default();
        match wanted.as_str() {
            "" | "auto" | "scalar" => &scalar::SCALAR,
            other => {
                eprintln!("warning: QUILL_KERNELS={other} is not available here; using scalar");
                &scalar::SCALAR
            }
        }
    })
}

/// Rows handled per parallel task: big enough that a task reads at least
/// ~64 KiB of weights, so the thread hand-off cost stays negligible.
fn rows_per_task(cols: usize, elem: usize) -> usize {
    (65536 / (cols * elem).max(1)).clamp(1, 4096)
}

/// y = W·x for one vector (`x.len() == cols`, `y.len() == rows`).
pub fn matvec(w: &Matrix, x: &[f32], y: &mut [f32]) {
    matmul(w, x, 1, y)
}

/// Y = X·Wᵀ for `t` row vectors: `x` is t×cols, `y` is t×rows (row-major).
/// Each weight row is read once per call and applied to all `t` inputs
/// while it sits in cache, so a chunk of tokens costs one pass over W.
pub fn matmul(w: &Matrix, x: &[f32], t: usize, y: &mut [f32]) {
    assert_eq!(x.len(), t * w.cols, "matmul input shape");
    assert_eq!(y.len(), t * w.rows, "matmul output shape");
    let ks = active();
    let (rows, cols) = (w.rows, w.cols);
    let chunk = rows_per_task(cols, w.dtype_size());
    let run = |r0: usize, out: &mut [f32]| {
        // out holds rows r0..r0+n for each of the t inputs, laid out [row][t].
        let n = out.len() / t;
        for r in 0..n {
            let row = r0 + r;
            for ti in 0..t {
                let xv = &x[ti * cols..(ti + 1) * cols];
                out[r * t + ti] = match &w.data {
                    MatData::F32(s) => {
                        (ks.dot_f32)(&s.as_slice()[row * cols..(row + 1) * cols], xv)
                    }
                    MatData::BF16(s) => {
                        (ks.dot_bf16)(&s.as_slice()[row * cols..(row + 1) * cols], xv)
                    }
                    MatData::F16(s) => {
                        (ks.dot_f16)(&s.as_slice()[row * cols..(row + 1) * cols], xv)
                    }
                };
            }
        }
    };
    if t == 1 {
        if rows <= chunk {
            run(0, y);
        } else {
            use rayon::prelude::*;
            y.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, out)| run(i * chunk, out));
        }
        return;
    }
    // For t > 1 compute into a [row][t] buffer, then transpose into y.
    let mut tmp = vec![0.0f32; rows * t];
    {
        use rayon::prelude::*;
        tmp.par_chunks_mut(chunk * t)
            .enumerate()
            .for_each(|(i, out)| run(i * chunk, out));
    }
    for r in 0..rows {
        for ti in 0..t {
            y[ti * rows + r] = tmp[r * t + ti];
        }
    }
}
