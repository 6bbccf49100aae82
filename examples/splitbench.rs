//! Temporary: the same bytes as one product, as 64 calls of 2 MB, as one call of 64 products.
use quill::kernels::{self, matmul_many, Matrix, Product, WeightDtype};
use std::time::Instant;
fn mat(rows: usize, cols: usize, seed: u32) -> Matrix {
    let mut s = seed.wrapping_mul(2654435761).max(1);
    let d: Vec<f32> = (0..rows * cols).map(|_| { s ^= s << 13; s ^= s >> 17; s ^= s << 5; (s as f32 / u32::MAX as f32 - 0.5) * 0.1 }).collect();
    Matrix::from_f32(rows, cols, d).convert(WeightDtype::BF16).into_panels()
}
fn main() {
    kernels::set_threads(2);
    let c = 1024;
    let big = mat(64 * c, c, 1);
    let small: Vec<Matrix> = (0..64).map(|i| mat(c, c, i + 7)).collect();
    let x = vec![0.01f32; c];
    let mut yb = vec![0f32; 64 * c];
    let mut tot = [0f64; 3];
    for _ in 0..10 {
        for mode in 0..3 {
            let t0 = Instant::now();
            for _ in 0..5 {
                match mode {
                    0 => matmul_many(1, &mut [Product { w: &big, x: &x, y: &mut yb }]),
                    1 => for (m, y) in small.iter().zip(yb.chunks_mut(c)) { matmul_many(1, &mut [Product { w: m, x: &x, y }]) },
                    _ => { let mut ps: Vec<Product> = small.iter().zip(yb.chunks_mut(c)).map(|(m, y)| Product { w: m, x: &x, y }).collect(); matmul_many(1, &mut ps) }
                }
            }
            tot[mode] += t0.elapsed().as_secs_f64();
        }
    }
    let probe = quill::bench::bandwidth_probe(1 << 30, 5);
    for (mode, name) in ["one 128MB", "64 calls of 2MB", "1 call 64 prods"].iter().enumerate() {
        let gbs = (big.byte_len() * 50) as f64 / tot[mode] / 1e9;
        println!("{name}: {gbs:.1} GB/s ({:.0}% of probe {probe:.1})", 100.0 * gbs / probe);
    }
}
