//! Every SIMD kernel set agrees with the scalar reference: matrix–vector
//! and matrix–matrix products for each weight dtype, the widening and
//! probe helpers, and the wkv7 step, on random shapes including lengths
//! that are not multiples of any vector width or block size.

use quill::kernels::{self, matmul, matmul_many, Matrix, Product, WeightDtype, I8_BLOCK};

mod common;

use common::{simd_sets, Rng};

/// `Σ|w||x|` per output: the scale a rounding difference is relative to.
fn magnitudes(w: &[f32], x: &[f32], rows: usize, cols: usize, t: usize) -> Vec<f32> {
    let mut m = vec![0.0; t * rows];
    for ti in 0..t {
        for r in 0..rows {
            m[ti * rows + r] = (0..cols)
                .map(|c| (w[r * cols + c] * x[ti * cols + c]).abs())
                .sum();
        }
    }
    m
}

fn product(set: &str, w: &Matrix, x: &[f32], t: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; t * w.rows];
    kernels::with_kernels(set, || matmul(w, x, t, &mut y)).unwrap();
    y
}

/// Compares `set` against scalar for one shape and dtype; both see the
/// same (already rounded or quantised) weights, so only the summation
/// order differs: 1e-5 relative to Σ|w·x| is ~100 f32 ulps.
fn check_product(rng: &mut Rng, set: &str, dtype: WeightDtype, rows: usize, cols: usize, t: usize) {
    let wf = rng.vec(rows * cols);
    let x = rng.vec(t * cols);
    let w = Matrix::from_f32(rows, cols, wf.clone()).convert(dtype);
    let want = product("scalar", &w, &x, t);
    let got = product(set, &w, &x, t);
    let mag = magnitudes(&wf, &x, rows, cols, t);
    for i in 0..want.len() {
        let tol = 1e-5 * mag[i] + 1e-6;
        assert!(
            (want[i] - got[i]).abs() <= tol,
            "{set} {dtype} {rows}×{cols} t={t}: y[{i}] = {} vs scalar {} (tol {tol:e})",
            got[i],
            want[i]
        );
    }
}

/// Widths around the vector and block sizes; 16, 32, 64 and 112 are the
/// narrow int8 path's (one block per row, a multiple of 16 wide).
const COLS: [usize; 16] = [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 63, 64, 65, 112, 130, 257];

#[test]
fn matvec_simd_matches_scalar() {
    let mut rng = Rng(0x1234_5678);
    for set in simd_sets() {
        for dtype in WeightDtype::ALL {
            for rows in [1, 3, 4, 5, 9] {
                for cols in COLS {
                    check_product(&mut rng, set, dtype, rows, cols, 1);
                }
            }
            // Big enough to be split across threads, with odd row counts.
            check_product(&mut rng, set, dtype, 4099, 67, 1);
            check_product(&mut rng, set, dtype, 301, 1000, 1);
            // A LoRA up-projection's shape (int8: the narrow path, split
            // into tasks, with a ragged last group).
            check_product(&mut rng, set, dtype, 1027, 64, 1);
        }
    }
}

#[test]
fn matmul_simd_matches_scalar() {
    let mut rng = Rng(0x9abc_def0);
    for set in simd_sets() {
        for dtype in WeightDtype::ALL {
            for (rows, t) in [(1, 2), (15, 3), (16, 6), (17, 7), (40, 13)] {
                for cols in [1, 9, 64, 255, 256, 257, 300] {
                    check_product(&mut rng, set, dtype, rows, cols, t);
                }
            }
            // Several k-blocks, row groups and token tiles, run in parallel.
            check_product(&mut rng, set, dtype, 333, 600, 20);
            // Small next to the tokens (the swapped product, see
            // `kernels::gemm`): LoRA-like down and up factors with ragged
            // panels and token groups, split into tasks.
            check_product(&mut rng, set, dtype, 70, 300, 101);
            check_product(&mut rng, set, dtype, 300, 40, 101);
            check_product(&mut rng, set, dtype, 9, 1000, 37);
        }
    }
}

/// The blocked matrix–matrix product and the matrix–vector kernels are
/// two code paths for the same numbers: they must agree token by token,
/// in every set (sequence mode must match serial decoding), to summation
/// order (1e-5 of Σ|w·x|). For int8 the matrix–vector path also rounds x
/// to int8 per block ([`kernels::quantize_x8`]): each x moves by at most
/// half a step, amax_b/254, so the products may differ by at most
/// Σ_b amax_b/254 · Σ_{i∈b} |ŵ_i| (ŵ the int8 weights as stored) on top.
#[test]
fn matmul_matches_matvec_per_token() {
    let mut rng = Rng(42);
    let sets: Vec<&str> = kernels::available().iter().map(|k| k.name).collect();
    for set in sets {
        // The blocked product, then the swapped one (see `kernels::gemm`).
        for (dtype, (rows, cols, t)) in WeightDtype::ALL
            .into_iter()
            .flat_map(|d| [(d, (70, 1030, 9)), (d, (40, 300, 50))])
        {
            let wf = rng.vec(rows * cols);
            let x = rng.vec(t * cols);
            let w = Matrix::from_f32(rows, cols, wf.clone()).convert(dtype);
            let all = product(set, &w, &x, t);
            let mag = magnitudes(&wf, &x, rows, cols, t);
            for ti in 0..t {
                let xt = &x[ti * cols..(ti + 1) * cols];
                let one = product(set, &w, xt, 1);
                for (r, &o) in one.iter().enumerate() {
                    let i = ti * rows + r;
                    let mut bound = 1e-5 * mag[i] + 1e-6;
                    if dtype == WeightDtype::Int8 {
                        let mut wr = vec![0.0; cols];
                        w.row_f32(r, &mut wr);
                        for (wb, xb) in wr.chunks(I8_BLOCK).zip(xt.chunks(I8_BLOCK)) {
                            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                            bound += amax / 254.0 * wb.iter().map(|v| v.abs()).sum::<f32>();
                        }
                    }
                    assert!(
                        (all[i] - o).abs() <= bound,
                        "{set} {dtype}: token {ti} row {r}: matmul {} vs matvec {o} (bound {bound})",
                        all[i]
                    );
                }
            }
        }
    }
}

/// A batch of products (`matmul_many`: for decode one parallel pass over
/// the rows of all of them, for t > 1 one GEMM after another) gives each
/// product exactly what it gives alone, and the same bits with one kernel
/// thread and with several: a row's sum does not depend on which task or
/// thread computed it, so snapshots and seeded runs reproduce whatever
/// `--threads` says.
#[test]
fn matmul_many_equals_each_product_alone_on_any_thread_count() {
    let mut rng = Rng(7);
    // Large (split into tasks), LoRA-sized (one task each), ragged.
    let shapes = [(1030, 517), (64, 768), (768, 64), (3, 5), (257, 1500)];
    // t = 100: (64, 768) and (768, 64) take the swapped product.
    for set in kernels::available().iter().map(|k| k.name) {
        for dtype in WeightDtype::ALL {
            let ws: Vec<Matrix> = shapes
                .iter()
                .map(|&(r, c)| Matrix::from_f32(r, c, rng.vec(r * c)).convert(dtype))
                .collect();
            for t in [1, 20, 100] {
                let xs: Vec<Vec<f32>> = shapes.iter().map(|&(_, c)| rng.vec(t * c)).collect();
                let alone: Vec<Vec<f32>> = ws
                    .iter()
                    .zip(&xs)
                    .map(|(w, x)| product(set, w, x, t))
                    .collect();
                for threads in [1, 2, 3] {
                    kernels::set_threads(threads);
                    let mut ys: Vec<Vec<f32>> =
                        ws.iter().map(|w| vec![f32::NAN; t * w.rows]).collect();
                    let mut batch: Vec<Product> = ws
                        .iter()
                        .zip(&xs)
                        .zip(ys.iter_mut())
                        .map(|((w, x), y)| Product { w, x, y })
                        .collect();
                    kernels::with_kernels(set, || matmul_many(t, &mut batch)).unwrap();
                    for (i, (y, want)) in ys.iter().zip(&alone).enumerate() {
                        let same = y.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{set} {dtype} t={t} threads {threads}: product {i} differs"
                        );
                    }
                }
            }
        }
    }
    kernels::set_threads(0);
}

#[test]
fn helpers_simd_match_scalar() {
    let mut rng = Rng(7);
    let scalar = kernels::by_name("scalar").unwrap();
    for set in simd_sets() {
        let ks = kernels::by_name(set).unwrap();
        for n in COLS.iter().copied().chain([1000, 4097]) {
            let w = rng.vec(n);
            let x = rng.vec(n);
            let mag: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            let close = |a: f32, b: f32, what: &str| {
                assert!(
                    (a - b).abs() <= 1e-5 * mag + 1e-6,
                    "{set} {what} n={n}: {a} vs {b}"
                )
            };
            close((ks.dot_f32)(&w, &x), (scalar.dot_f32)(&w, &x), "dot_f32");
            let bf: Vec<u16> = w
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_bits())
                .collect();
            let hf: Vec<u16> = w
                .iter()
                .map(|&v| half::f16::from_f32(v).to_bits())
                .collect();
            close(
                (ks.dot_bf16)(&bf, &x),
                (scalar.dot_bf16)(&bf, &x),
                "dot_bf16",
            );
            close((ks.dot_f16)(&hf, &x), (scalar.dot_f16)(&hf, &x), "dot_f16");
            let sum_mag: f32 = x.iter().map(|v| v.abs()).sum();
            // Prefetching (which may point past x) changes no sum.
            let b = (scalar.sum_f32)(&x, 0);
            for ahead in [0, kernels::prefetch::AHEAD] {
                let a = (ks.sum_f32)(&x, ahead);
                assert!(
                    (a - b).abs() <= 1e-5 * sum_mag,
                    "{set} sum_f32 n={n} ahead {ahead}: {a} vs {b}"
                );
            }
            // Widening is exact in every set.
            let (mut o1, mut o2) = (vec![0.0; n], vec![0.0; n]);
            (ks.widen_bf16)(&bf, &mut o1);
            (scalar.widen_bf16)(&bf, &mut o2);
            assert_eq!(o1, o2, "{set} widen_bf16 n={n}");
            (ks.widen_f16)(&hf, &mut o1);
            (scalar.widen_f16)(&hf, &mut o2);
            assert_eq!(o1, o2, "{set} widen_f16 n={n}");
            let q: Vec<i8> = (0..n)
                .map(|i| (rng.next() % 255) as i8 ^ (i as i8))
                .collect();
            let scales = rng.vec(n.div_ceil(I8_BLOCK));
            (ks.widen_i8)(&q, &scales, &mut o1);
            (scalar.widen_i8)(&q, &scales, &mut o2);
            assert_eq!(o1, o2, "{set} widen_i8 n={n}");
        }
        assert!((ks.fma_probe)(10) > 0.0);
    }
}

/// A panel group's int8 weights widened in one call equal the block-by-
/// block widening, in every set (exact: one product per weight).
#[test]
fn widen_i8_group_matches_blocks() {
    let mut rng = Rng(23);
    for set in kernels::available() {
        for blocks in [1, 3, 4] {
            let kc = blocks * I8_BLOCK;
            let q: Vec<i8> = (0..4 * kc).map(|_| (rng.next() % 255) as i8).collect();
            let scales = rng.vec(4 * blocks);
            let ld = kc + 5;
            let mut got = vec![f32::NAN; 3 * ld + kc];
            (set.widen_i8_group)(&q, &scales, kc, &mut got, ld);
            for r in 0..4 {
                for c in 0..kc {
                    let (b, i) = (c / I8_BLOCK, c % I8_BLOCK);
                    let k = b * 4 + r;
                    let want = q[k * I8_BLOCK + i] as f32 * scales[k];
                    assert_eq!(got[r * ld + c], want, "{} row {r} col {c}", set.name);
                }
            }
        }
    }
}

/// Units in the last place between `a` and the reference `b`.
fn ulps(a: f32, b: f32) -> f32 {
    if a == b {
        return 0.0;
    }
    let ulp = b.abs().max(f32::MIN_POSITIVE);
    (a - b).abs() / (f32::from_bits(ulp.to_bits() + 1) - ulp)
}

/// The SIMD sets' exp stays within 2 ulp of the scalar set's (libm) over
/// the normal range, and sigmoid within 4 (exp's 2, plus the roundings of
/// `1 + e` and of the division on either side; 4 is reached on this grid), at every length (vector tails included),
/// and agree on the edges: underflow to 0, overflow to +∞, NaN.
#[test]
fn exp_and_sigmoid_simd_match_scalar() {
    let scalar = kernels::by_name("scalar").unwrap();
    let grid: Vec<f32> = (0..470_000).map(|i| -87.3 + i as f32 * 3.75e-4).collect();
    let edges = [
        -1000.0,
        -87.5,
        0.0,
        -0.0,
        88.7,
        88.8,
        1000.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    for set in simd_sets() {
        let ks = kernels::by_name(set).unwrap();
        for n in [1, 7, 8, 9, 1000, grid.len()] {
            let x = &grid[grid.len() - n..];
            let (mut a, mut b) = (x.to_vec(), x.to_vec());
            (ks.exp)(&mut a);
            (scalar.exp)(&mut b);
            for ((xi, ai), bi) in x.iter().zip(&a).zip(&b) {
                assert!(ulps(*ai, *bi) <= 2.0, "{set} exp({xi}) = {ai} vs {bi}");
            }
            let (mut a, mut b) = (x.to_vec(), x.to_vec());
            (ks.sigmoid)(&mut a);
            (scalar.sigmoid)(&mut b);
            for ((xi, ai), bi) in x.iter().zip(&a).zip(&b) {
                assert!(ulps(*ai, *bi) <= 4.0, "{set} σ({xi}) = {ai} vs {bi}");
            }
        }
        let (mut a, mut b) = (edges.to_vec(), edges.to_vec());
        (ks.exp)(&mut a);
        (scalar.exp)(&mut b);
        for ((xi, ai), bi) in edges.iter().zip(&a).zip(&b) {
            let same = ai == bi || (*xi < -87.34 && *ai == 0.0 && *bi < 1.2e-38);
            assert!(same, "{set} exp({xi}) = {ai} vs {bi}");
        }
        let mut nan = [f32::NAN; 3];
        (ks.exp)(&mut nan);
        assert!(nan.iter().all(|v| v.is_nan()), "{set} exp(NaN)");
        (ks.sigmoid)(&mut nan);
        assert!(nan.iter().all(|v| v.is_nan()), "{set} σ(NaN)");
        let mut s = [-1000.0f32, 1000.0];
        (ks.sigmoid)(&mut s);
        assert_eq!(s, [0.0, 1.0], "{set} σ saturates");
    }
}

/// Packing a token tile is a transposition: every set produces exactly the
/// scalar layout, for whole and ragged tiles (n < 16, n < 8) and widths that
/// are not multiples of the vector width, read from a wider row stride.
#[test]
fn pack_tile_simd_matches_scalar() {
    let mut rng = Rng(17);
    let scalar = kernels::by_name("scalar").unwrap();
    for set in simd_sets() {
        let ks = kernels::by_name(set).unwrap();
        for width in [1, 7, 8, 9, 64, 100, 1024] {
            for n in [1, 5, 8, 9, 15, 16] {
                let ld = width + 3;
                let x = rng.vec((n - 1) * ld + width);
                let (mut a, mut b) = (vec![0.0; width * 16], vec![0.0; width * 16]);
                (ks.pack_tile)(&x, ld, n, &mut a);
                (scalar.pack_tile)(&x, ld, n, &mut b);
                assert_eq!(a, b, "{set} pack_tile width={width} n={n}");
                for p in 0..width {
                    for j in 0..16 {
                        let want = if j < n { x[j * ld + p] } else { 0.0 };
                        assert_eq!(b[p * 16 + j], want, "scalar pack_tile ({p}, {j})");
                    }
                }
            }
        }
    }
}

/// Unpacking an accumulator tile is the inverse transposition, written
/// through a row stride: every set writes exactly the scalar result, for
/// whole and ragged tiles and row counts that are not multiples of 8, and
/// leaves every other element of the output alone.
#[test]
fn unpack_tile_simd_matches_scalar() {
    let mut rng = Rng(19);
    let scalar = kernels::by_name("scalar").unwrap();
    for set in simd_sets() {
        let ks = kernels::by_name(set).unwrap();
        for width in [1, 6, 7, 8, 9, 24, 100] {
            for n in [1, 5, 8, 9, 15, 16] {
                let ld = width + 5;
                let src = rng.vec(width * 16);
                let (mut a, mut b) = (vec![-1.0; 16 * ld], vec![-1.0; 16 * ld]);
                // SAFETY: every index j·ld + p (j < n ≤ 16, p < width < ld)
                // lies in the 16·ld-element buffers, owned by this thread.
                unsafe {
                    (ks.unpack_tile)(&src, n, a.as_mut_ptr(), ld);
                    (scalar.unpack_tile)(&src, n, b.as_mut_ptr(), ld);
                }
                assert_eq!(a, b, "{set} unpack_tile width={width} n={n}");
                for j in 0..16 {
                    for p in 0..ld {
                        let want = if j < n && p < width {
                            src[p * 16 + j]
                        } else {
                            -1.0
                        };
                        assert_eq!(b[j * ld + p], want, "scalar unpack_tile ({j}, {p})");
                    }
                }
            }
        }
    }
}

/// A packed micro-panel holds exactly the rows' weights step by step
/// (`dst[p·m + i] = w[i·ld + p]`) and nothing is written past its `m·k`
/// elements; the packed micro-kernel then gives bit for bit what the same
/// set's strided one gives (same sums, same order), for every row count up
/// to MR, ragged token tiles and depths not a multiple of the vector width.
#[test]
fn packed_gemm_matches_the_strided_micro_kernel() {
    let mut rng = Rng(23);
    let mut checked = Vec::new();
    for ks in kernels::available() {
        let Some(pg) = ks.packed_gemm.as_ref() else {
            eprintln!(
                "{}: no packed micro-kernel (the strided one is used)",
                ks.name
            );
            continue;
        };
        for m in 1..=kernels::MR {
            for k in [1, 7, 8, 9, 64, 100, 256] {
                for n in [1, 5, 8, 9, 16] {
                    let ld = k + 3;
                    let w = rng.vec((m - 1) * ld + k);
                    let xp = rng.vec(k * kernels::NR);
                    let mut wp = vec![-7.0; m * k + 16];
                    (pg.pack)(&w, ld, m, k, &mut wp);
                    for p in 0..k {
                        for i in 0..m {
                            assert_eq!(
                                wp[p * m + i],
                                w[i * ld + p],
                                "{} pack m={m} k={k}",
                                ks.name
                            );
                        }
                    }
                    assert!(
                        wp[m * k..].iter().all(|&v| v == -7.0),
                        "{} pack m={m} k={k} wrote past the panel",
                        ks.name
                    );
                    let acc0 = rng.vec(m * kernels::NR);
                    let (mut a, mut b) = (acc0.clone(), acc0);
                    (pg.tile)(&wp[..m * k], m, &xp, k, n, &mut a);
                    (ks.gemm_tile)(&w, ld, m, &xp, k, n, &mut b);
                    for i in 0..m {
                        let row = i * kernels::NR..i * kernels::NR + n;
                        assert_eq!(a[row.clone()], b[row], "{} tile m={m} k={k} n={n}", ks.name);
                    }
                }
            }
        }
        checked.push(ks.name);
    }
    // Only NEON goes without (see `KernelSet::packed_gemm`).
    for ks in kernels::available() {
        assert!(
            ks.name == "neon" || checked.contains(&ks.name),
            "{} has no packed micro-kernel",
            ks.name
        );
    }
}

/// Runs `steps` wkv7 steps with `set` from the same state and inputs.
fn wkv7_run(set: &str, n: usize, steps: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng(seed);
    let ks = kernels::by_name(set).unwrap();
    let mut s = rng.vec(n * n);
    let mut ys = Vec::new();
    for _ in 0..steps {
        let r = rng.vec(n);
        // Decays in (0, 1) as the model makes them.
        let w: Vec<f32> = (0..n).map(|_| 0.5 + 0.49 * rng.f()).collect();
        let k = rng.vec(n);
        let v = rng.vec(n);
        let nkk = rng.vec(n);
        let kka: Vec<f32> = rng.vec(n).iter().map(|a| a * 0.2).collect();
        let mut y = vec![0.0; n];
        (ks.wkv7)(&mut s, n, &r, &w, &k, &v, &nkk, &kka, &mut y);
        ys.extend(y);
    }
    (s, ys)
}

#[test]
fn wkv7_simd_matches_scalar() {
    for set in simd_sets() {
        for n in [1, 3, 4, 5, 8, 13, 16, 24, 33, 64] {
            let (s0, y0) = wkv7_run("scalar", n, 6, n as u64 + 1);
            let (s1, y1) = wkv7_run(set, n, 6, n as u64 + 1);
            let scale = s0.iter().chain(&y0).fold(1.0f32, |m, v| m.max(v.abs()));
            for (a, b) in s0.iter().zip(&s1).chain(y0.iter().zip(&y1)) {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "{set} wkv7 n={n}: {a} vs {b}"
                );
            }
        }
    }
}

/// The chunk driver (heads in parallel) against the reference step applied
/// head by head, token by token.
#[test]
fn wkv7_chunk_matches_reference_steps() {
    let (h, n, t) = (5, 16, 7);
    let c = h * n;
    let mut rng = Rng(99);
    let inputs: Vec<Vec<f32>> = (0..6).map(|_| rng.vec(t * c)).collect();
    let w: Vec<f32> = inputs[1].iter().map(|v| 0.5 + 0.49 * v).collect();
    let state0 = rng.vec(h * n * n);
    let mut s_ref = state0.clone();
    let mut y_ref = vec![0.0; t * c];
    for ti in 0..t {
        for hi in 0..h {
            let sl = ti * c + hi * n..ti * c + (hi + 1) * n;
            kernels::wkv7_step(
                &mut s_ref[hi * n * n..(hi + 1) * n * n],
                n,
                &inputs[0][sl.clone()],
                &w[sl.clone()],
                &inputs[2][sl.clone()],
                &inputs[3][sl.clone()],
                &inputs[4][sl.clone()],
                &inputs[5][sl.clone()],
                &mut y_ref[sl],
            );
        }
    }
    for set in kernels::available() {
        let mut s = state0.clone();
        let mut y = vec![0.0; t * c];
        kernels::with_kernels(set.name, || {
            kernels::wkv7_chunk(
                &mut s, h, n, t, &inputs[0], &w, &inputs[2], &inputs[3], &inputs[4], &inputs[5],
                &mut y,
            )
        })
        .unwrap();
        let scale = s_ref
            .iter()
            .chain(&y_ref)
            .fold(1.0f32, |m, v| m.max(v.abs()));
        for (a, b) in s.iter().zip(&s_ref).chain(y.iter().zip(&y_ref)) {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{}: wkv7_chunk {a} vs {b}",
                set.name
            );
        }
    }
}

#[test]
fn unknown_or_foreign_sets_are_refused() {
    assert!(kernels::by_name("nonsense").is_none());
    assert!(kernels::with_kernels("nonsense", || ()).is_err());
    #[cfg(target_arch = "x86_64")]
    assert!(kernels::by_name("neon").is_none());
    #[cfg(target_arch = "aarch64")]
    assert!(kernels::by_name("avx2").is_none());
}

/// int8 quantisation: per-block scales reproduce each weight within half a
/// step of its block.
#[test]
fn int8_quantisation_error_is_half_a_step() {
    let mut rng = Rng(5);
    let (rows, cols) = (7, 3 * I8_BLOCK + 5);
    let wf = rng.vec(rows * cols);
    let w = Matrix::from_f32(rows, cols, wf.clone()).convert(WeightDtype::Int8);
    let mut row = vec![0.0; cols];
    for r in 0..rows {
        w.row_f32(r, &mut row);
        for (b, (blk, got)) in wf[r * cols..(r + 1) * cols]
            .chunks(I8_BLOCK)
            .zip(row.chunks(I8_BLOCK))
            .enumerate()
        {
            let step = blk.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
            for (a, g) in blk.iter().zip(got) {
                assert!(
                    (a - g).abs() <= 0.5 * step * 1.0001,
                    "row {r} block {b}: {a} → {g}"
                );
            }
        }
    }
}

/// The SIMD activation quantisation is bit-identical to the reference:
/// random blocks, ragged tails, and the edges (zeros, NaN, ±∞, blocks so
/// small that the inverse scale overflows, huge values).
#[test]
fn x8_quantisation_simd_matches_scalar() {
    let mut rng = Rng(78);
    let scalar = kernels::by_name("scalar").unwrap();
    for set in simd_sets() {
        let ks = kernels::by_name(set).unwrap();
        for len in [1, 7, 8, 9, I8_BLOCK, I8_BLOCK + 1, 3 * I8_BLOCK + 9] {
            let mut cases = vec![(0..len).map(|_| rng.f() * 50.0).collect::<Vec<f32>>()];
            let mut edge: Vec<f32> = (0..len).map(|_| rng.f() * 1e-36).collect();
            edge[0] = f32::NAN;
            if len > 3 {
                edge[1] = f32::INFINITY;
                edge[2] = f32::NEG_INFINITY;
                edge[3] = 0.0;
            }
            cases.push(edge);
            cases.push((0..len).map(|_| rng.f() * 3e38).collect());
            cases.push((0..len).map(|_| rng.f() * 1e-40).collect());
            cases.push(vec![0.0; len]);
            for x in &cases {
                let (mut qa, mut sa) = (Vec::new(), Vec::new());
                let (mut qb, mut sb) = (Vec::new(), Vec::new());
                (ks.quantize_x8)(x, &mut qa, &mut sa);
                (scalar.quantize_x8)(x, &mut qb, &mut sb);
                assert_eq!(qa, qb, "{set} len {len}: {x:?}");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&sa), bits(&sb), "{set} len {len} scales");
            }
        }
    }
}

/// int8 activation quantisation (int8 decode): every value within half a
/// step of its block's scale, the block maximum exact, zeros kept zero.
#[test]
fn x8_quantisation_error_is_half_a_step() {
    let mut rng = Rng(77);
    let mut x: Vec<f32> = (0..3 * I8_BLOCK + 9).map(|_| rng.f() * 50.0).collect();
    x[5] = 0.0;
    x[I8_BLOCK..2 * I8_BLOCK].fill(0.0);
    let (mut q, mut s) = (Vec::new(), Vec::new());
    kernels::quantize_x8(&x, &mut q, &mut s);
    assert_eq!((q.len(), s.len()), (x.len(), x.len().div_ceil(I8_BLOCK)));
    for (b, blk) in x.chunks(I8_BLOCK).enumerate() {
        let amax = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_eq!(s[b], amax / 127.0);
        for (i, &v) in blk.iter().enumerate() {
            let got = q[b * I8_BLOCK + i] as f32 * s[b];
            assert!(
                (got - v).abs() <= 0.5 * s[b] * 1.0001,
                "block {b} [{i}]: {v} → {got}"
            );
            if v.abs() == amax && amax > 0.0 {
                assert_eq!(q[b * I8_BLOCK + i].unsigned_abs(), 127);
            }
        }
    }
    assert_eq!(q[5], 0);
}
