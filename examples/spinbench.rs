//! Temporary: rayon fork/join vs a spinning helper thread for decode-sized products.
use quill::kernels::{self, MatData, Matrix, WeightDtype};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::Instant;

fn mat(rows: usize, cols: usize, seed: u32) -> Matrix {
    let mut s = seed.wrapping_mul(2654435761).max(1);
    let d: Vec<f32> = (0..rows * cols).map(|_| { s ^= s << 13; s ^= s >> 17; s ^= s << 5; (s as f32 / u32::MAX as f32 - 0.5) * 0.1 }).collect();
    Matrix::from_f32(rows, cols, d).convert(WeightDtype::BF16).into_panels()
}

struct Job { w: *const u16, n: usize, y: *mut f32, rows: usize, x: *const f32 }
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

static EPOCH: AtomicUsize = AtomicUsize::new(0);
static NEXT: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);
static mut JOBS: Vec<(usize, usize, usize)> = Vec::new(); // (matrix idx, r0, rows)
static mut MATS: Vec<Job> = Vec::new();

fn work() {
    let ks = kernels::best();
    let jobs = unsafe { &*std::ptr::addr_of!(JOBS) };
    let mats = unsafe { &*std::ptr::addr_of!(MATS) };
    loop {
        let i = NEXT.fetch_add(1, AcqRel);
        if i >= jobs.len() { break; }
        let (m, r0, rows) = jobs[i];
        let j = &mats[m];
        unsafe {
            let w = std::slice::from_raw_parts(j.w.add(r0 * j.n), rows * j.n);
            let x = std::slice::from_raw_parts(j.x, j.n);
            let y = std::slice::from_raw_parts_mut(j.y.add(r0), rows);
            (ks.rows_bf16_panels)(w, x, y);
        }
    }
}

fn main() {
    kernels::set_threads(2);
    let c = 1024;
    let layers: Vec<Vec<Matrix>> = (0..24).map(|l| vec![mat(c, c, l * 10 + 1), mat(c, c, l * 10 + 2), mat(c, c, l * 10 + 3), mat(c, c, l * 10 + 4), mat(4 * c, c, l * 10 + 5), mat(c, 4 * c, l * 10 + 6)]).collect();
    let bytes: usize = layers.iter().flatten().map(|m| m.byte_len()).sum();
    let x = vec![0.01f32; 4 * c];
    let mut y = vec![0f32; 8 * c];
    let ptr = |m: &Matrix| match &m.data { MatData::BF16(s) => s.as_slice().as_ptr(), _ => unreachable!() };
    // helper
    let seen = Arc::new(AtomicUsize::new(0));
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let use_spin = std::env::args().nth(1).as_deref() == Some("spin");
    if use_spin { std::thread::spawn(move || {
        let mut last = 0;
        while !STOP.load(Relaxed) {
            let e = EPOCH.load(Acquire);
            if e != last { last = e; work(); DONE.fetch_add(1, AcqRel); } else { std::hint::spin_loop(); }
        }
    }); }
    let _ = seen;
    let task_rows = |m: &Matrix, tb: usize| ((tb / (m.cols * 2)).min(m.rows / 2)).max(4) / 4 * 4;
    let groups: Vec<Vec<usize>> = vec![vec![0, 1, 2], vec![3], vec![4], vec![5]];
    let mut tot = [0f64; 4];
    let tbs = [512usize << 10, 128 << 10];
    for _round in 0..10 {
        for mode in (if use_spin { 2..4 } else { 0..2 }) {
            let tb = tbs[mode % 2];
            let spin = mode >= 2;
            let t0 = Instant::now();
            for _ in 0..3 {
                for l in &layers {
                    for g in &groups {
                        let mats: Vec<Job> = g.iter().enumerate().map(|(k, &i)| Job { w: ptr(&l[i]), n: l[i].cols, y: unsafe { y.as_mut_ptr().add(k * 2 * c) }, rows: l[i].rows, x: x.as_ptr() }).collect();
                        let mut jobs = Vec::new();
                        for (k, &i) in g.iter().enumerate() {
                            let tr = task_rows(&l[i], tb);
                            let mut r = 0;
                            while r < l[i].rows { jobs.push((k, r, tr.min(l[i].rows - r))); r += tr; }
                        }
                        if spin {
                            unsafe { JOBS = jobs; MATS = mats; }
                            NEXT.store(0, Release);
                            let d0 = DONE.load(Acquire);
                            EPOCH.fetch_add(1, AcqRel);
                            work();
                            while DONE.load(Acquire) == d0 { std::hint::spin_loop(); }
                        } else {
                            let ks = kernels::best();
                            kernels::install(|| jobs.par_iter().for_each(|&(k, r0, rows)| {
                                let j = &mats[k];
                                unsafe {
                                    let w = std::slice::from_raw_parts(j.w.add(r0 * j.n), rows * j.n);
                                    let x = std::slice::from_raw_parts(j.x, j.n);
                                    let y = std::slice::from_raw_parts_mut(j.y.add(r0), rows);
                                    (ks.rows_bf16_panels)(w, x, y);
                                }
                            }));
                        }
                    }
                }
            }
            tot[mode] += t0.elapsed().as_secs_f64();
        }
    }
    STOP.store(true, Relaxed);
    std::thread::sleep(std::time::Duration::from_millis(10));
    let probe = quill::bench::bandwidth_probe(1 << 30, 5);
    for mode in (if use_spin { 2..4 } else { 0..2 }) {
        let gbs = (bytes * 30) as f64 / tot[mode] / 1e9;
        println!("{} tasks {}K: {gbs:.1} GB/s ({:.0}% of probe {probe:.1})", if mode >= 2 { "spin " } else { "rayon" }, tbs[mode % 2] >> 10, 100.0 * gbs / probe);
    }
}
