//! Temporary: kernel throughput from L2 (one thread).
use quill::kernels::{self, matmul, Matrix, WeightDtype};
use std::time::Instant;
fn main() {
    kernels::set_threads(1);
    for (dt, rows) in [(WeightDtype::BF16, 128usize), (WeightDtype::Int8, 256)] {
        for panels in [false, true] {
            let c = 1024;
            let w: Vec<f32> = (0..rows * c).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
            let mut m = Matrix::from_f32(rows, c, w).convert(dt);
            if panels { m = m.into_panels(); }
            let x = vec![0.3f32; c];
            let mut y = vec![0f32; rows];
            let reps = 20000;
            for _ in 0..100 { matmul(&m, &x, 1, &mut y); }
            let t0 = Instant::now();
            for _ in 0..reps { matmul(&m, &x, 1, &mut y); }
            let s = t0.elapsed().as_secs_f64();
            println!("{dt:?} panels={panels}: {:.1} GB/s ({:.2} us/call)", (m.byte_len() * reps) as f64 / s / 1e9, s / reps as f64 * 1e6);
        }
    }
}
