//! Temporary: matrix passes of a 0.4B decode, variants interleaved.
use quill::kernels::{self, avx2, matmul_many, Matrix, Product, WeightDtype};
use std::time::Instant;

fn mat(rows: usize, cols: usize, seed: u32, dt: WeightDtype) -> Matrix {
    let mut s = seed.wrapping_mul(2654435761).max(1);
    let d: Vec<f32> = (0..rows * cols)
        .map(|_| { s ^= s << 13; s ^= s >> 17; s ^= s << 5; (s as f32 / u32::MAX as f32 - 0.5) * 0.1 })
        .collect();
    Matrix::from_f32(rows, cols, d).convert(dt).into_panels()
}

fn main() {
    let dt = match std::env::args().nth(1).as_deref() { Some("int8") => WeightDtype::Int8, _ => WeightDtype::BF16 };
    let pfs: Vec<usize> = std::env::args().skip(2).map(|v| v.parse().unwrap()).collect();
    kernels::set_threads(2);
    let c = 1024;
    let layers: Vec<Vec<Matrix>> = (0..24).map(|l| vec![mat(c, c, l * 10 + 1, dt), mat(c, c, l * 10 + 2, dt), mat(c, c, l * 10 + 3, dt), mat(c, c, l * 10 + 4, dt), mat(4 * c, c, l * 10 + 5, dt), mat(c, 4 * c, l * 10 + 6, dt)]).collect();
    let head = mat(65536, c, 999, dt);
    let bytes: usize = layers.iter().flatten().map(|m| m.byte_len()).sum::<usize>() + head.byte_len();
    let x = vec![0.01f32; 4 * c];
    let mut y = vec![vec![0f32; 4 * c]; 4];
    let mut yh = vec![0f32; 65536];
    let mut tot = vec![0f64; pfs.len()];
    let rounds = 12;
    for _ in 0..rounds {
        for (i, &pf) in pfs.iter().enumerate() {
            avx2::PF_I8.store(pf, std::sync::atomic::Ordering::Relaxed);
            let t0 = Instant::now();
            let headonly = std::env::var("HEADONLY").is_ok();
            for _ in 0..3 {
                if headonly {
                    for _ in 0..bytes / head.byte_len() { matmul_many(1, &mut [Product { w: &head, x: &x[..c], y: &mut yh }]); }
                    continue;
                }
                for l in &layers {
                    let (a, rest) = y.split_at_mut(1);
                    let (b, rest) = rest.split_at_mut(1);
                    let (cc, _) = rest.split_at_mut(1);
                    matmul_many(1, &mut [Product { w: &l[0], x: &x[..c], y: &mut a[0][..c] }, Product { w: &l[1], x: &x[..c], y: &mut b[0][..c] }, Product { w: &l[2], x: &x[..c], y: &mut cc[0][..c] }]);
                    matmul_many(1, &mut [Product { w: &l[3], x: &x[..c], y: &mut y[0][..c] }]);
                    matmul_many(1, &mut [Product { w: &l[4], x: &x[..c], y: &mut y[1][..] }]);
                    matmul_many(1, &mut [Product { w: &l[5], x: &x[..], y: &mut y[2][..c] }]);
                }
                matmul_many(1, &mut [Product { w: &head, x: &x[..c], y: &mut yh }]);
            }
            tot[i] += t0.elapsed().as_secs_f64();
        }
    }
    let probe = quill::bench::bandwidth_probe(1 << 30, 5);
    for (i, pf) in pfs.iter().enumerate() {
        let b = if std::env::var("HEADONLY").is_ok() { bytes / head.byte_len() * head.byte_len() } else { bytes };
        let gbs = (b * 3 * rounds) as f64 / tot[i] / 1e9;
        println!("pf {pf}: {gbs:.1} GB/s ({:.0}% of probe {probe:.1})", 100.0 * gbs / probe);
    }
}
