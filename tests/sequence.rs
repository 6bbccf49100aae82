//! Sequence mode against serial decoding on a model big enough that the
//! prefill takes the parallel paths (row-parallel element-wise passes,
//! multi-task GEMM, heads in parallel) while decoding takes the serial ones
//! (matrix–vector kernels, single-thread passes): both must give the same
//! logits and state, on every kernel path and weight dtype.

use quill::bench::synthetic_model_with;
use quill::kernels;
use quill::model::weights::DType;
use quill::model::{LoadOptions, Logits, Model, WeightDtype};

/// Largest |Δ| (logits and state) allowed between the two modes. They
/// differ in summation order only, except that int8 decoding also rounds
/// activations to int16 (the prefill widens weights and keeps f32
/// activations). Measured: f32 1.5e-5, bf16 3.7e-5, int8 1.0e-3.
fn tol(dtype: WeightDtype) -> f32 {
    match dtype {
        WeightDtype::Int8 => 5e-3,
        _ => 2e-4,
    }
}

#[test]
fn sequence_mode_matches_serial_decoding_on_parallel_paths() {
    // 3 layers × 256 (4 heads), vocab 500: a 96-token chunk is 24 K
    // elements per pass, above the parallel threshold.
    let file = synthetic_model_with(3, 256, 500, DType::F32, 11, "seq").unwrap();
    let tokens: Vec<u32> = (0..96u32).map(|i| (i * 37 + 5) % 500).collect();
    for dtype in [WeightDtype::F32, WeightDtype::BF16, WeightDtype::Int8] {
        let model =
            Model::from_file_with(file.clone(), &LoadOptions { dtype: Some(dtype) }).unwrap();
        for ks in kernels::available() {
            kernels::with_kernels(ks.name, || {
                let mut seq = model.new_state();
                let all = model.forward(&tokens, &mut seq, Logits::All).unwrap();
                let mut ser = model.new_state();
                let v = model.info().dims.vocab;
                let mut worst = 0.0f32;
                for (t, &tok) in tokens.iter().enumerate() {
                    let one = model.forward(&[tok], &mut ser, Logits::Last).unwrap();
                    for (a, b) in one.iter().zip(&all[t * v..(t + 1) * v]) {
                        worst = worst.max((a - b).abs());
                    }
                }
                for (ls, lq) in ser.layers.iter().zip(&seq.layers) {
                    for (a, b) in ls
                        .wkv
                        .iter()
                        .zip(&lq.wkv)
                        .chain(ls.att_x.iter().zip(&lq.att_x))
                    {
                        worst = worst.max((a - b).abs());
                    }
                }
                eprintln!(
                    "{dtype} [{}]: max |Δ| sequence vs serial = {worst:e}",
                    ks.name
                );
                assert!(
                    worst <= tol(dtype),
                    "{dtype} [{}]: sequence vs serial differ by {worst}",
                    ks.name
                );
            })
            .unwrap();
        }
    }
}

#[test]
fn for_rows_visits_every_row_once_in_parallel() {
    let (rows, width) = (300, 97);
    let mut data = vec![0.0f32; rows * width + 13];
    kernels::for_rows(&mut data, width, |i, r| {
        r.iter_mut().for_each(|v| *v += i as f32 + 1.0)
    });
    for (i, r) in data.chunks(width).enumerate() {
        assert!(r.iter().all(|&v| v == i as f32 + 1.0), "row {i}");
    }
    let mut b = vec![0.0f32; data.len()];
    kernels::for_rows2(&mut data, &mut b, width, |i, ra, rb| {
        for (x, y) in ra.iter_mut().zip(rb.iter_mut()) {
            *y = *x * 2.0;
            *x = i as f32;
        }
    });
    for (i, (ra, rb)) in data.chunks(width).zip(b.chunks(width)).enumerate() {
        assert!(
            ra.iter().all(|&v| v == i as f32) && rb.iter().all(|&v| v == 2.0 * (i as f32 + 1.0))
        );
    }
}

/// A sequence-mode call gives its pooled activation buffers back when it
/// ends (decoding pools nothing): what it used stays out of the resident
/// memory of the decoding that follows. Run on a kernel thread, where the
/// call's layers run and pool (`kernels::install`).
#[test]
fn a_prefill_leaves_no_pooled_buffers_behind() {
    let file = synthetic_model_with(2, 256, 300, DType::F32, 3, "pool").unwrap();
    let model = Model::from_file(file).unwrap();
    let tokens: Vec<u32> = (0..100u32).map(|i| (i * 7 + 1) % 300).collect();
    let (during, after) = kernels::install(|| {
        // A buffer dropped mid-call is pooled (a chunk's activations are).
        drop(kernels::Scratch::dirty(1 << 16));
        let during = kernels::pooled_elements();
        let mut st = model.new_state();
        model.forward(&tokens, &mut st, Logits::Last).unwrap();
        (during, kernels::pooled_elements())
    });
    assert!(during >= 1 << 16, "nothing pooled to begin with: {during}");
    assert_eq!(after, 0, "a prefill left {after} elements pooled");
}
