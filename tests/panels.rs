//! The panel layout ([`Layout::Panels`]) holds the same matrix as row-major:
//! every element reads back the same, the matrix–matrix product (which
//! widens the same values in the same order) is bit-identical, the scalar
//! matrix–vector kernels are bit-identical, and every SIMD set's panel
//! kernels agree with the scalar row-major reference to summation order —
//! on shapes with a ragged last group of rows and tasks split across
//! threads. Also: models load their converted matrices in panels where the
//! active set asks for them, and their logits match the row-major load.

use std::sync::Arc;

use quill::bench::synthetic_model_with;
use quill::kernels::{self, matmul, slab_width, Layout, Matrix, WeightDtype, I8_BLOCK, PANEL_ROWS};
use quill::model::weights::DType;
use quill::model::{LoadOptions, Logits, Model};

mod common;

use common::{simd_sets, Rng};

fn product(set: &str, w: &Matrix, x: &[f32], t: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; t * w.rows];
    kernels::with_kernels(set, || matmul(w, x, t, &mut y)).unwrap();
    y
}

/// (rows, cols) for a dtype: ragged row groups (rows mod 4 ≠ 0), whole
/// pieces per row (16 for bf16, one int8 block), and one shape large
/// enough to be cut into several tasks on several threads.
fn shapes(dtype: WeightDtype) -> Vec<(usize, usize)> {
    let p = if dtype == WeightDtype::Int8 {
        I8_BLOCK
    } else {
        16
    };
    vec![
        (4, p),
        (5, p),
        (7, 2 * p),
        (9, 3 * p),
        (64, 4 * p),
        (1027, 1024),
        // Wider than a slab: 2 slabs of 1024, 4 of 1024 (ragged rows),
        // 5 of 512.
        (8, 2048),
        (13, 4096),
        (9, 2560),
    ]
}

fn pair(rng: &mut Rng, dtype: WeightDtype, rows: usize, cols: usize) -> (Matrix, Matrix) {
    pair_of(&rng.vec(rows * cols), dtype, rows, cols)
}

/// The scalar row-major product the way the panel path sums a matrix wider
/// than a slab: each slab of columns on its own, partial sums added in slab
/// order (one slab: the plain product) — for the rows in panels; the rows
/// past the last full group are row-major and summed in one run.
fn slab_by_slab(wf: &[f32], dtype: WeightDtype, rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    let s = slab_width(cols);
    let full = rows / PANEL_ROWS * PANEL_ROWS;
    let whole = product(
        "scalar",
        &Matrix::from_f32(rows, cols, wf.to_vec()).convert(dtype),
        x,
        1,
    );
    let mut y = vec![0.0f32; rows];
    for k in 0..cols / s {
        let part: Vec<f32> = (0..rows)
            .flat_map(|r| wf[r * cols + k * s..r * cols + (k + 1) * s].to_vec())
            .collect();
        let m = Matrix::from_f32(rows, s, part).convert(dtype);
        let p = product("scalar", &m, &x[k * s..(k + 1) * s], 1);
        if k == 0 {
            y = p;
        } else {
            y.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
        }
    }
    y[full..].copy_from_slice(&whole[full..]);
    y
}

fn pair_of(wf: &[f32], dtype: WeightDtype, rows: usize, cols: usize) -> (Matrix, Matrix) {
    let rm = Matrix::from_f32(rows, cols, wf.to_vec()).convert(dtype);
    let pm = Matrix::from_f32(rows, cols, wf.to_vec())
        .convert(dtype)
        .into_panels();
    assert_eq!(rm.layout, Layout::Rows);
    assert_eq!(
        pm.layout,
        Layout::Panels,
        "{dtype} {rows}×{cols} not put in panels"
    );
    (rm, pm)
}

#[test]
fn panels_read_back_the_same_elements() {
    let mut rng = Rng(7);
    for dtype in [WeightDtype::BF16, WeightDtype::Int8] {
        for (rows, cols) in shapes(dtype) {
            let (rm, pm) = pair(&mut rng, dtype, rows, cols);
            let (mut a, mut b) = (vec![0.0; cols], vec![1.0; cols]);
            for r in 0..rows {
                rm.row_f32(r, &mut a);
                pm.row_f32(r, &mut b);
                assert_eq!(a, b, "{dtype} {rows}×{cols}: row {r} differs");
            }
            // Converting out of panels gives the row-major matrix back.
            let back = pm.convert(WeightDtype::F32);
            let direct = rm.convert(WeightDtype::F32);
            for r in 0..rows {
                back.row_f32(r, &mut a);
                direct.row_f32(r, &mut b);
                assert_eq!(a, b, "{dtype} {rows}×{cols}: converted row {r} differs");
            }
        }
    }
}

#[test]
fn only_whole_pieces_of_bf16_and_int8_go_into_panels() {
    let m = |rows, cols, d| Matrix::from_f32(rows, cols, vec![0.5; rows * cols]).convert(d);
    for (rows, cols, dtype) in [
        (8, 17, WeightDtype::BF16),
        (8, 48, WeightDtype::Int8),
        (3, 64, WeightDtype::BF16),
        (8, 64, WeightDtype::F32),
        (8, 64, WeightDtype::F16),
    ] {
        let p = m(rows, cols, dtype).into_panels();
        assert_eq!(
            p.layout,
            Layout::Rows,
            "{dtype} {rows}×{cols} must stay row-major"
        );
    }
}

#[test]
fn gemm_and_scalar_rows_are_bit_identical_on_panels() {
    assert_eq!(
        [1024, 2048, 4096, 2560, 1000, 3000].map(slab_width),
        [1024, 1024, 1024, 512, 1000, 3000]
    );
    let mut rng = Rng(11);
    for dtype in [WeightDtype::BF16, WeightDtype::Int8] {
        for (rows, cols) in shapes(dtype) {
            let wf = rng.vec(rows * cols);
            let (rm, pm) = pair_of(&wf, dtype, rows, cols);
            for t in [1, 7, 20] {
                let x = rng.vec(t * cols);
                // t > 1: the GEMM (every set); t = 1: the scalar row kernels.
                let sets: Vec<&str> = if t > 1 {
                    kernels::available().iter().map(|k| k.name).collect()
                } else {
                    vec!["scalar"]
                };
                for set in sets {
                    let a = if t == 1 {
                        slab_by_slab(&wf, dtype, rows, cols, &x)
                    } else {
                        product(set, &rm, &x, t)
                    };
                    let b = product(set, &pm, &x, t);
                    assert!(
                        a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits()),
                        "{set} {dtype} {rows}×{cols} t={t}: panels differ from row-major"
                    );
                }
            }
        }
    }
}

/// The SIMD panel kernels against the scalar row-major reference: the
/// same weights, only the summation order differs, so 1e-5 of Σ|w·x|
/// (int8: both sides quantise x the same way, so the same bound holds).
#[test]
fn simd_panel_kernels_match_scalar_rows() {
    let mut rng = Rng(13);
    for set in simd_sets() {
        for dtype in [WeightDtype::BF16, WeightDtype::Int8] {
            for (rows, cols) in shapes(dtype) {
                let (rm, pm) = pair(&mut rng, dtype, rows, cols);
                let x = rng.vec(cols);
                let want = product("scalar", &rm, &x, 1);
                let got = product(set, &pm, &x, 1);
                let mut w = vec![0.0; cols];
                for r in 0..rows {
                    rm.row_f32(r, &mut w);
                    let mag: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                    // int8: Σ|ŵ·x| bounds the integer path's scale too.
                    let tol = 1e-5 * mag + 1e-6;
                    assert!(
                        (want[r] - got[r]).abs() <= tol,
                        "{set} {dtype} {rows}×{cols}: y[{r}] = {} vs scalar {} (tol {tol:e})",
                        got[r],
                        want[r]
                    );
                }
            }
        }
    }
}

/// Software prefetch changes when bytes arrive, never a result: each SIMD
/// set's panel products are bit-identical with prefetching on and off
/// (run through tuners fixed to each setting, as a model's decode step
/// is), on every shape, including prefetches that point past the matrix.
#[test]
fn panel_products_are_the_same_with_and_without_prefetch() {
    use quill::kernels::prefetch::{PrefetchMode, PrefetchTuner, AHEAD};
    let mut rng = Rng(17);
    let on = PrefetchTuner::with_mode(PrefetchMode::On);
    let off = PrefetchTuner::with_mode(PrefetchMode::Off);
    for set in simd_sets() {
        for dtype in [WeightDtype::BF16, WeightDtype::Int8] {
            for (rows, cols) in shapes(dtype) {
                let (_, pm) = pair(&mut rng, dtype, rows, cols);
                let x = rng.vec(cols);
                let with = on.run(true, |ahead| {
                    assert_eq!(ahead, AHEAD);
                    product(set, &pm, &x, 1)
                });
                let without = off.run(true, |ahead| {
                    assert_eq!(ahead, 0);
                    product(set, &pm, &x, 1)
                });
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&with), bits(&without), "{set} {dtype} {rows}×{cols}");
            }
        }
        // int8 narrower than a block (v7's LoRA up-projections) goes
        // through the panel kernel row-major, one block per row: widths
        // with and without a half step of 16 at the end of each block.
        for cols in [16, 64, 112] {
            let w = Matrix::from_f32(1027, cols, rng.vec(1027 * cols)).convert(WeightDtype::Int8);
            let x = rng.vec(cols);
            let with = on.run(true, |_| product(set, &w, &x, 1));
            let without = off.run(true, |_| product(set, &w, &x, 1));
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&with), bits(&without), "{set} int8 1027×{cols}");
        }
    }
}

/// A model measures whether its decode steps run faster prefetching in
/// software: after its first steps that return logits (two warm-up
/// steps, then six of each setting) it has a trial's figure, and steps
/// that return no logits are not part of the trial.
#[test]
fn a_model_tunes_its_prefetch_on_its_first_decode_steps() {
    use quill::kernels::prefetch::PrefetchMode;
    let file = synthetic_model_with(2, 64, 256, DType::BF16, 5, "tuning").unwrap();
    let model = Model::from_file(file).unwrap();
    let choice = model.prefetch_choice();
    if choice.mode != PrefetchMode::Auto {
        eprintln!(
            "\n!!! QUILL_PREFETCH={} fixes the setting: the tuning test DID NOT RUN !!!\n",
            choice.mode.name()
        );
        return;
    }
    let mut state = model.new_state();
    for _ in 0..20 {
        model.forward(&[1], &mut state, Logits::None).unwrap();
    }
    assert_eq!(
        model.prefetch_choice().speedup,
        None,
        "untimed steps ran a trial"
    );
    for step in 0..14 {
        assert_eq!(
            model.prefetch_choice().speedup,
            None,
            "decided after {step} steps"
        );
        model.forward(&[1], &mut state, Logits::Last).unwrap();
    }
    let speedup = model
        .prefetch_choice()
        .speedup
        .expect("a trial after 14 steps");
    assert!(speedup.is_finite() && speedup > 0.0, "{speedup}");
}

/// A model loaded while a set that wants panels is active gives the same
/// logits as one loaded row-major under the scalar set (within the SIMD
/// summation-order tolerance), its large matrices are in panels (bf16 as
/// stored and int8 alike), and loading releases nothing a second holder
/// of an in-memory model still needs: the same file loads again.
#[test]
fn models_load_in_panels_and_agree_with_row_major() {
    let file = synthetic_model_with(2, 128, 300, DType::BF16, 5, "panels").unwrap();
    let tokens: Vec<u32> = (0..12u32).map(|i| (i * 31 + 3) % 300).collect();
    for dtype in [None, Some(WeightDtype::Int8)] {
        let opts = LoadOptions { dtype };
        let run = |set: &str| {
            kernels::with_kernels(set, || {
                let model = Model::from_file_with(Arc::clone(&file), &opts).unwrap();
                // Large matrices go into panels where the set asks for them.
                let want = if kernels::active().panels {
                    Layout::Panels
                } else {
                    Layout::Rows
                };
                assert_eq!(model.head_layout(), want, "{set} {dtype:?}");
                let mut st = model.new_state();
                model.forward(&tokens, &mut st, Logits::Last).unwrap()
            })
            .unwrap()
        };
        let reference = run("scalar");
        if !kernels::available().iter().any(|k| k.panels) {
            eprintln!("!!! no kernel set here lays models out in panels: row-major only !!!");
        }
        for ks in kernels::available() {
            let got = run(ks.name);
            let worst = reference
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            // int8 decode quantises x per block on every set alike; the
            // sequence path here is the GEMM, so only summation order differs.
            assert!(worst < 1e-3, "{} {dtype:?}: max |Δlogit| {worst}", ks.name);
        }
    }
}

/// An in-memory model loaded by its only holder hands copied tensors'
/// pages back, and the file then refuses to serve those tensors again
/// rather than handing out released (zeroed) bytes.
#[test]
fn a_sole_in_memory_model_releases_copied_tensors() {
    let file = synthetic_model_with(1, 64, 100, DType::BF16, 9, "release").unwrap();
    let weak = Arc::downgrade(&file);
    let model = kernels::with_kernels(kernels::best().name, || {
        Model::from_file_with(
            file,
            &LoadOptions {
                dtype: Some(WeightDtype::Int8),
            },
        )
    })
    .unwrap()
    .unwrap();
    let file = weak.upgrade().expect("the model keeps its file");
    let err = file
        .info("blocks.0.att.key.weight")
        .unwrap_err()
        .to_string();
    assert!(err.contains("released"), "{err}");
    // The embedding is read in place and stays available.
    assert!(file.info("emb.weight").is_ok());
    let mut st = model.new_state();
    let logits = model.forward(&[1, 2, 3], &mut st, Logits::Last).unwrap();
    assert!(logits.iter().all(|v| v.is_finite()));
}

/// A model loaded by its only holder copies (bf16 as stored) or converts
/// (`--dtype`) its matrices while handing the source pages back band by
/// band: its logits equal those of the same weights loaded while a second
/// holder keeps the file whole (nothing was released before it was read).
#[test]
fn releasing_while_copying_into_panels_keeps_every_weight() {
    let set = kernels::best().name;
    let build = || synthetic_model_with(2, 256, 300, DType::BF16, 21, "bands").unwrap();
    let tokens: Vec<u32> = (0..9u32).map(|i| (i * 37 + 1) % 300).collect();
    for dtype in [None, Some(WeightDtype::Int8), Some(WeightDtype::F16)] {
        let logits = |file: Arc<quill::model::weights::WeightFile>| {
            kernels::with_kernels(set, || {
                let model = Model::from_file_with(file, &LoadOptions { dtype }).unwrap();
                let mut st = model.new_state();
                model.forward(&tokens, &mut st, Logits::Last).unwrap()
            })
            .unwrap()
        };
        let kept = build();
        let want = logits(Arc::clone(&kept));
        let sole = build();
        let got = logits(sole);
        let differ = want
            .iter()
            .zip(&got)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "{set} {dtype:?}: {differ} logits of a released load differ"
        );
    }
}

/// Resident kB of the mappings of `path` in this process (/proc/self/smaps).
fn mapped_rss_kb(path: &std::path::Path) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.to_str().unwrap();
    let mut total = 0;
    let mut ours = false;
    for line in smaps.lines() {
        // A mapping's header line: "start-end perms offset dev inode path".
        if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            ours = line.ends_with(name);
        } else if ours && line.starts_with("Rss:") {
            total += line
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<usize>()
                .unwrap();
        }
    }
    total
}

/// Loading a model file keeps none of it resident but what is read in
/// place and used: the NaN check's pass over every weight gives each band
/// of pages back once read, the converted matrices are released after
/// their copy, and the embedding (half of this file) comes back a row at a
/// time as tokens look it up. Measured: 6% of the file resident after the
/// load, 9% after 3 tokens (the page cache maps it in 2 MiB folios here);
/// before, the check left the whole file resident until each tensor was
/// copied, and the embedding for good (53%).
#[cfg(target_os = "linux")]
#[test]
fn a_loaded_file_is_not_left_resident() {
    let dir = std::env::temp_dir().join(format!("quill-resident-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let file = synthetic_model_with(2, 256, 65536, DType::BF16, 5, "resident").unwrap();
    std::fs::write(&path, file.bytes()).unwrap();
    let size_kb = file.bytes().len() / 1024;
    drop(file);
    let opts = LoadOptions {
        dtype: Some(WeightDtype::Int8),
    };
    let model = Model::load_with(&path, &opts).unwrap();
    let loaded = mapped_rss_kb(&path);
    let mut st = model.new_state();
    model.forward(&[1, 2, 3], &mut st, Logits::Last).unwrap();
    let used = mapped_rss_kb(&path);
    eprintln!("file {size_kb} kB: resident after load {loaded} kB, after 3 tokens {used} kB");
    assert!(
        loaded * 4 < size_kb && used * 4 < size_kb,
        "{size_kb} kB file: {loaded} kB resident after load, {used} kB after 3 tokens"
    );
    drop(model);
    let _ = std::fs::remove_dir_all(&dir);
}
