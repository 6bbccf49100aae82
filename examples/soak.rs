//! Soak benchmark: generates a long run of tokens in one recurrent state and
//! checks that nothing drifts — no NaN or infinity in the logits or the
//! state, a flat speed and a flat resident memory.
//!
//! ```sh
//! cargo run --release --example soak -- --model M.safetensors --tokens 100000 [--every 10000] [--seed 1] [--threads N]
//! ```
//!
//! Every `--every` tokens it prints one line: tokens so far, tokens/s over
//! the interval, VmRSS (from /proc/self/status), the largest |logit| and
//! |state| value seen. It exits non-zero as soon as a logit or state value
//! is not finite. Not a test: it runs for a long time on purpose.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use quill::model::{Logits, Model};
use quill::sampler::{Sampler, SamplerSettings};
use quill::tokenizer::Tokenizer;

struct Args {
    model: PathBuf,
    tokens: usize,
    every: usize,
    seed: u64,
    threads: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut model = None;
    let (mut tokens, mut every, mut seed, mut threads) = (100_000, 10_000, 1, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: `{v}` is not a number"))
        };
        match flag.as_str() {
            "--model" | "-m" => model = Some(PathBuf::from(value()?)),
            "--tokens" | "-n" => tokens = num(value()?)? as usize,
            "--every" => every = num(value()?)? as usize,
            "--seed" => seed = num(value()?)?,
            "--threads" => threads = Some(num(value()?)? as usize),
            "--help" | "-h" => {
                return Err("usage: soak --model FILE [--tokens 100000] [--every 10000] [--seed 1] [--threads N]".into())
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    let model = model.ok_or("pass --model FILE (a .safetensors or .pth RWKV checkpoint)")?;
    if every == 0 || tokens == 0 {
        return Err("--tokens and --every must be at least 1".into());
    }
    Ok(Args {
        model,
        tokens,
        every,
        seed,
        threads,
    })
}

/// Resident memory in KiB, from /proc/self/status (Linux); 0 elsewhere.
fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("soak: error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    if let Some(n) = a.threads {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    let t0 = Instant::now();
    let model = Arc::new(Model::load(&a.model).map_err(|e| e.to_string())?);
    let info = model.info();
    let vocab = info.dims.vocab;
    println!(
        "model {} ({}, {} layers × {}, vocab {}) loaded in {:.1}s; RSS {} MiB",
        info.origin,
        info.version,
        info.dims.n_layer,
        info.dims.n_embd,
        vocab,
        t0.elapsed().as_secs_f64(),
        vm_rss_kib() / 1024
    );
    // A short real prompt when the vocabulary is a known one, so the run
    // starts from text as a story would.
    let prompt: Vec<u32> = Tokenizer::for_vocab_size(vocab)
        .and_then(|k| Tokenizer::new(k).ok())
        .map(|t| t.encode("The lighthouse keeper opened the door and"))
        .filter(|ids| !ids.is_empty())
        .unwrap_or_else(|| vec![1]);
    let mut state = model.new_state();
    let mut logits = model
        .forward(&prompt, &mut state, Logits::Last)
        .map_err(|e| e.to_string())?;
    // Sampling as `quill generate` does by default (temperature 1, top-p
    // 0.85, penalties): a greedy run can fall into a short loop, which
    // would not exercise the state the way a story does.
    let mut sampler = Sampler::new(SamplerSettings::default(), a.seed);
    println!(
        "{:>9} {:>9} {:>9} {:>11} {:>11}",
        "tokens", "tok/s", "RSS MiB", "max|logit|", "max|state|"
    );
    let (mut done, mut interval_start) = (0usize, Instant::now());
    let (mut max_logit, mut interval_tokens) = (0f32, 0usize);
    let run_start = Instant::now();
    let mut rates = Vec::new();
    let mut rss = Vec::new();
    while done < a.tokens {
        let tok = sampler.sample(&logits);
        sampler.observe(tok);
        logits = model
            .forward(&[tok], &mut state, Logits::Last)
            .map_err(|e| e.to_string())?;
        done += 1;
        interval_tokens += 1;
        for &l in &logits {
            if !l.is_finite() {
                return Err(format!("logit {l} after {done} tokens: the run diverged"));
            }
            max_logit = max_logit.max(l.abs());
        }
        if done % a.every == 0 || done == a.tokens {
            let secs = interval_start.elapsed().as_secs_f64();
            let mut max_state = 0f32;
            for v in state.official_tensors().into_iter().flatten() {
                if !v.is_finite() {
                    return Err(format!(
                        "state value {v} after {done} tokens: the run diverged"
                    ));
                }
                // v4's `pp` starts at −1e30 as a "minus infinity": skip it.
                if v.abs() < 1e29 {
                    max_state = max_state.max(v.abs());
                }
            }
            let rate = interval_tokens as f64 / secs.max(1e-9);
            let mib = vm_rss_kib() as f64 / 1024.0;
            println!("{done:>9} {rate:>9.1} {mib:>9.1} {max_logit:>11.3} {max_state:>11.3}");
            rates.push(rate);
            rss.push(mib);
            interval_start = Instant::now();
            interval_tokens = 0;
            max_logit = 0.0;
        }
    }
    let total = run_start.elapsed().as_secs_f64();
    let (lo, hi) = rates
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    let (rlo, rhi) = rss
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    println!(
        "done: {done} tokens in {total:.1}s ({:.1} tok/s overall); interval tok/s {lo:.1}..{hi:.1}; RSS {rlo:.1}..{rhi:.1} MiB; no NaN/Inf",
        done as f64 / total
    );
    Ok(())
}
