//! int8 weights against f32 on the trained RWKV-7 fixture: logits within a
//! documented tolerance, perplexity on a text within 2%.

mod common;

use common::*;
use quill::kernels;
use quill::model::{LoadOptions, Logits, Model, WeightDtype};

/// A short English text written for this test (the fixture's prompts are
/// English stories).
const TEXT: &str = "Once upon a time, there was a little girl named Lily. She loved to play \
outside in the park with her dog, Max. One day, Lily and Max found a big red ball under a \
tree. Lily said, \"Look, Max! A ball! Let's play!\" Max wagged his tail and ran after the \
ball. They played all day until the sun went down. When it was time to go home, Lily was \
sad. Her mom said, \"Don't worry, we can come back tomorrow.\" Lily smiled and hugged her \
mom. The next day, Lily and Max went back to the park. The ball was still there, and they \
played again. Lily learned that good things can happen more than once, and she was happy.\n";

fn models() -> Option<(Model, Model)> {
    let dir = trained_dir()?;
    let path = dir.join("trained-v7.safetensors");
    let f32m = Model::load(&path).unwrap();
    let i8m = Model::load_with(
        &path,
        &LoadOptions {
            dtype: Some(WeightDtype::Int8),
        },
    )
    .unwrap();
    assert_eq!(i8m.info().weight_dtype, WeightDtype::Int8);
    Some((f32m, i8m))
}

/// Mean negative log-likelihood per byte of `text`: in sequence mode (one
/// pass, matrix–matrix products) or token by token (the decode path, whose
/// int8 products also round the activations to int8).
fn nll(model: &Model, text: &[u8], serial: bool) -> f64 {
    let tokens: Vec<u32> = text.iter().map(|&b| b as u32).collect();
    let inputs = &tokens[..tokens.len() - 1];
    let mut state = model.new_state();
    let logits = if serial {
        let mut all = Vec::new();
        for &t in inputs {
            all.extend(model.forward(&[t], &mut state, Logits::Last).unwrap());
        }
        all
    } else {
        model.forward(inputs, &mut state, Logits::All).unwrap()
    };
    let v = model.info().dims.vocab;
    let mut total = 0.0f64;
    for (t, row) in logits.chunks(v).enumerate() {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        total += lse - row[tokens[t + 1] as usize] as f64;
    }
    total / (tokens.len() - 1) as f64
}

/// Largest |Δlogit| between int8 and f32 weights on the fixture prompts
/// (every serial step and the sequence-mode pass), on every kernel path.
///
/// Measured: 0.0176 (scalar and AVX2 alike; blocks of 128; decoding also
/// rounds the activations to int8, which with int16 activations measured
/// 0.0120), with the fixture's logits spanning about [−2, 4.4]; the
/// tolerance leaves ~3× headroom over that.
/// (The fixture is a small, weakly trained byte model — ~30–40 perplexity
/// per byte on English — so this bounds the int8 error, it does not show
/// how a large model's text changes.)
const INT8_LOGIT_TOL: f32 = 0.05;

#[test]
fn int8_logits_stay_close_to_f32() {
    let Some((f32m, i8m)) = models() else {
        panic!("trained fixtures missing: cannot check int8 quality");
    };
    let dir = trained_dir().unwrap();
    for ks in kernels::available() {
        kernels::with_kernels(ks.name, || {
            let mut worst = 0.0f32;
            for case in load_cases(&dir.join("trained-v7.expected.json")) {
                let (mut s1, mut s2) = (f32m.new_state(), i8m.new_state());
                for &tok in &case.tokens {
                    let a = f32m.forward(&[tok], &mut s1, Logits::Last).unwrap();
                    let b = i8m.forward(&[tok], &mut s2, Logits::Last).unwrap();
                    worst = worst.max(max_diff(&a, &b));
                }
                let (mut s1, mut s2) = (f32m.new_state(), i8m.new_state());
                let a = f32m.forward(&case.tokens, &mut s1, Logits::All).unwrap();
                let b = i8m.forward(&case.tokens, &mut s2, Logits::All).unwrap();
                worst = worst.max(max_diff(&a, &b));
            }
            eprintln!("int8 vs f32 [{}]: max |Δlogit| = {worst:.5}", ks.name);
            assert!(
                worst <= INT8_LOGIT_TOL,
                "[{}] int8 max |Δlogit| {worst} > {INT8_LOGIT_TOL}",
                ks.name
            );
        })
        .unwrap();
    }
}

#[test]
fn int8_perplexity_within_two_percent_of_f32() {
    let Some((f32m, i8m)) = models() else {
        panic!("trained fixtures missing: cannot check int8 perplexity");
    };
    for (serial, path) in [(false, "sequence"), (true, "decode")] {
        let (p32, p8) = (
            nll(&f32m, TEXT.as_bytes(), serial).exp(),
            nll(&i8m, TEXT.as_bytes(), serial).exp(),
        );
        let rel = (p8 / p32 - 1.0).abs();
        eprintln!(
            "perplexity per byte ({path}): f32 {p32:.4}, int8 {p8:.4} ({:+.3}%)",
            (p8 / p32 - 1.0) * 100.0
        );
        assert!(
            rel < 0.02,
            "{path}: int8 perplexity {p8} vs f32 {p32}: {:.2}% apart",
            rel * 100.0
        );
    }
}
