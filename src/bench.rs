//! `quill bench`: prefill and decode speed of a model against the
//! machine's own limits, measured by built-in probes.
//!
//! Token generation reads every weight once per token, so its ceiling is
//! the memory read bandwidth; prompt processing is matrix–matrix work, so
//! its ceiling is the FMA throughput. [`run`] measures both on a model
//! (a file, or random weights at a released model's shape built in memory)
//! and measures the two ceilings with a STREAM-style read probe and an
//! FMA-chain probe on the same threads, so the report says how close to
//! the hardware the engine runs on *this* machine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::error::{QuillError, Result};
use crate::kernels::{self, prefetch, WeightDtype};
use crate::model::weights::{Backing, DType, WeightFile};
use crate::model::{LoadOptions, Logits, Model, State};

/// Shapes of the released RWKV-7 World/G1 models (as
/// `../shared/tools/synth_model.py`): layers × width, vocab 65536, head 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum SyntheticSize {
    /// 0.1B: 12 layers × 768.
    #[serde(rename = "0.1b")]
    B0p1,
    /// 0.4B: 24 layers × 1024.
    #[serde(rename = "0.4b")]
    B0p4,
    /// 1.5B: 24 layers × 2048.
    #[serde(rename = "1.5b")]
    B1p5,
}

impl SyntheticSize {
    /// (layers, width).
    pub fn shape(self) -> (usize, usize) {
        match self {
            SyntheticSize::B0p1 => (12, 768),
            SyntheticSize::B0p4 => (24, 1024),
            SyntheticSize::B1p5 => (24, 2048),
        }
    }

    /// `0.1b`, `0.4b` or `1.5b`.
    pub fn name(self) -> &'static str {
        match self {
            SyntheticSize::B0p1 => "0.1b",
            SyntheticSize::B0p4 => "0.4b",
            SyntheticSize::B1p5 => "1.5b",
        }
    }
}

impl std::fmt::Display for SyntheticSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SyntheticSize {
    type Err = QuillError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "0.1b" | "0.1" => Ok(SyntheticSize::B0p1),
            "0.4b" | "0.4" => Ok(SyntheticSize::B0p4),
            "1.5b" | "1.5" => Ok(SyntheticSize::B1p5),
            other => Err(QuillError::Invalid(format!(
                "unknown synthetic size `{other}`; expected 0.1b, 0.4b or 1.5b"
            ))),
        }
    }
}

/// What to benchmark and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// A model file (`--model`); exactly one of this and `synthetic`.
    pub model: Option<PathBuf>,
    /// Random weights at a released shape, built in memory (`--synthetic`).
    pub synthetic: Option<SyntheticSize>,
    /// Weight dtype (`--dtype`): the file's when `None` (bf16 for
    /// synthetic models, as released). Synthetic weights are generated
    /// directly in f32/f16/bf16; int8 is generated as bf16 and quantised at
    /// load, as a real bf16 checkpoint would be.
    pub dtype: Option<WeightDtype>,
    /// Kernel threads (`--threads`); 0 = one per physical core.
    pub threads: usize,
    /// Prompt length for the prefill measurement.
    pub prompt_tokens: usize,
    /// Tokens generated (greedily) for the decode measurement.
    pub gen_tokens: usize,
    /// Rounds of (prefill, decode, probes); figures are the medians.
    pub rounds: usize,
    /// Also measure the same model with this dtype (`--compare`), round by
    /// round right next to the main one, and report the speed ratios.
    pub compare: Option<WeightDtype>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            model: None,
            synthetic: None,
            dtype: None,
            threads: 0,
            prompt_tokens: 512,
            gen_tokens: 128,
            rounds: 1,
            compare: None,
        }
    }
}

/// The measurements (`quill bench --json` prints this object).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The model: its path, or `synthetic 0.4b`.
    pub model: String,
    /// Kernel set used (`scalar`, `avx2`, `neon`).
    pub kernels: String,
    /// dtype of the weight matrices as computed with.
    pub dtype: String,
    /// Kernel threads.
    pub threads: usize,
    /// Prompt length of the prefill measurement.
    pub prompt_tokens: usize,
    /// Tokens of the decode measurement.
    pub gen_tokens: usize,
    /// Seconds to load (or build and load) the model.
    pub load_seconds: f64,
    /// Prompt tokens per second, sequence mode, logits for the last token.
    pub prefill_tokens_per_s: f64,
    /// Generated tokens per second, one token per forward pass.
    pub decode_tokens_per_s: f64,
    /// Bytes of weights one decoded token reads ([`Model::bytes_per_token`]).
    pub bytes_per_token: u64,
    /// Effective decode read bandwidth: `bytes_per_token × decode_tokens_per_s`, GB/s (10⁹ B).
    pub bandwidth_gbs: f64,
    /// The machine's read bandwidth from the built-in probe, same threads, GB/s.
    pub probe_bandwidth_gbs: f64,
    /// `bandwidth_gbs / probe_bandwidth_gbs`.
    pub bandwidth_ratio: f64,
    /// Floating-point operations of the prefill: `2 × (multiply-adds of every
    /// layer matrix, large and LoRA, per token) × prompt_tokens + 2 × head
    /// multiply-adds` (the head runs for the last token only; the wkv
    /// recurrence, norms and activations, a few % of the work, are not counted).
    pub prefill_flops: f64,
    /// `prefill_flops / prefill seconds / 10⁹`.
    pub prefill_gflops: f64,
    /// The machine's f32 FMA throughput from the built-in probe, all threads, GFLOP/s.
    pub probe_peak_gflops: f64,
    /// `prefill_gflops / probe_peak_gflops`.
    pub peak_ratio: f64,
    /// Peak resident memory of the process (VmHWM) after the first round's
    /// prefill and decode, before the probes allocate their buffer and
    /// before a `--compare` model loads; 0 where unknown.
    pub peak_rss_bytes: u64,
    /// Size of the weight file (built in memory for synthetic models).
    pub file_bytes: u64,
    /// CPU time the process got during the prefill ÷ (wall time × threads):
    /// ~1 on an otherwise idle machine; well below 1 means other work shared
    /// the cores and the speeds above understate the engine (0 where unknown).
    pub prefill_cpu_share: f64,
    /// As `prefill_cpu_share`, during the decode.
    pub decode_cpu_share: f64,
    /// `peak_rss_bytes / file_bytes`.
    pub rss_ratio: f64,
    /// Rounds measured (`--rounds`). Each round runs the prefill, the
    /// decode and then both probes, so every ratio compares the engine with
    /// the machine as it was at that moment (on a shared machine the
    /// bandwidth drifts by ±30% within minutes); the figures above are the
    /// medians over rounds.
    pub rounds: usize,
    /// `bandwidth_ratio` of each round, in order.
    pub bandwidth_ratio_rounds: Vec<f64>,
    /// `peak_ratio` of each round, in order.
    pub peak_ratio_rounds: Vec<f64>,
    /// The decode kernels' software prefetch (JSON: its fields at the top
    /// level).
    #[serde(flatten)]
    pub prefetch: PrefetchReport,
    /// The same model in another dtype, measured alongside (`--compare`);
    /// null without it.
    pub compare: Option<CompareReport>,
}

/// The comparison model of `quill bench --compare DTYPE`: the same model
/// and prompt, loaded with another dtype. In every round both models run
/// their prefills back to back, then decode in alternating blocks of
/// 8 tokens, before that round's probes, so each speed
/// ratio compares the two under the same machine conditions: on a shared
/// machine, speed drifts by ±30% within minutes, more than the difference
/// between two separate runs could show.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// dtype of the comparison model's weight matrices.
    pub dtype: String,
    /// Its bytes of weights per decoded token.
    pub bytes_per_token: u64,
    /// Its prompt tokens per second (median over rounds).
    pub prefill_tokens_per_s: f64,
    /// Its generated tokens per second (median over rounds).
    pub decode_tokens_per_s: f64,
    /// Its effective decode bandwidth ÷ each round's probe (median).
    pub bandwidth_ratio: f64,
    /// Its prefill GFLOP/s ÷ each round's FMA probe (median).
    pub peak_ratio: f64,
    /// The main model's decode tokens/s ÷ this one's, round by round.
    pub decode_speedup_rounds: Vec<f64>,
    /// Median of `decode_speedup_rounds`: e.g. with `--dtype int8
    /// --compare bf16`, how many times faster int8 decodes than bf16.
    pub decode_speedup: f64,
    /// The main model's prefill tokens/s ÷ this one's, round by round.
    pub prefill_speedup_rounds: Vec<f64>,
    /// Median of `prefill_speedup_rounds`.
    pub prefill_speedup: f64,
    /// This model's software prefetch, as [`BenchReport::prefetch`].
    #[serde(flatten)]
    pub prefetch: PrefetchReport,
}

/// How a measured model's decode kernels prefetched in software.
#[derive(Debug, Clone, Serialize)]
pub struct PrefetchReport {
    /// Bytes ahead the decode kernels prefetched in software at the end
    /// (0: none), as the model's tuner chose on its first decode steps or
    /// `QUILL_PREFETCH` fixed ([`kernels::prefetch`]).
    pub prefetch_bytes: usize,
    /// `auto` (tuned) or the `on`/`off` that `QUILL_PREFETCH` fixed.
    pub prefetch_mode: String,
    /// The tuner's last trial: median decode step without software
    /// prefetch ÷ with it; null when the setting was fixed or the decode
    /// was too short for a trial to end.
    pub prefetch_speedup: Option<f64>,
}

impl From<kernels::prefetch::PrefetchChoice> for PrefetchReport {
    fn from(c: kernels::prefetch::PrefetchChoice) -> Self {
        PrefetchReport {
            prefetch_bytes: c.distance,
            prefetch_mode: c.mode.name().to_string(),
            prefetch_speedup: c.speedup,
        }
    }
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kb("VmHWM:").map(|kb| kb * 1024)
}

/// Current resident set size of this process in bytes (Linux `VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    proc_status_kb("VmRSS:").map(|kb| kb * 1024)
}

/// CPU time used so far by all threads of this process, in seconds (Linux
/// `/proc/self/task/*/schedstat`, nanosecond resolution).
pub fn process_cpu_seconds() -> Option<f64> {
    let mut ns = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        // A thread may exit between listing and reading: skip it.
        if let Ok(text) = std::fs::read_to_string(path) {
            ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(ns as f64 / 1e9)
}

fn proc_status_kb(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Runs the benchmark, reporting each phase through `progress`: loads or
/// builds the model, times a warm-up, the prefill and the decode, records
/// peak memory, frees the model, then runs the two probes.
pub fn run(opts: &BenchOptions, progress: impl FnMut(&str)) -> Result<BenchReport> {
    run_with_probes(opts, progress, || {
        (bandwidth_probe(1 << 30, 5), fma_peak_probe(3))
    })
}

/// [`run`] with the probes supplied (`(read GB/s, peak GFLOP/s)`, called
/// once per round), so tests can check the report's arithmetic without a
/// 1 GiB buffer.
fn run_with_probes(
    opts: &BenchOptions,
    mut progress: impl FnMut(&str),
    mut probes: impl FnMut() -> (f64, f64),
) -> Result<BenchReport> {
    if opts.prompt_tokens == 0 || opts.gen_tokens == 0 {
        return Err(QuillError::Invalid(
            "bench needs at least one prompt token and one generated token".into(),
        ));
    }
    if opts.compare.is_some() && opts.compare == opts.dtype {
        return Err(QuillError::Invalid(
            "--compare needs a dtype other than --dtype's".into(),
        ));
    }
    kernels::set_threads(opts.threads);
    let threads = kernels::threads();
    let start = Instant::now();
    let (model, name, file_bytes) = load_model(opts, opts.dtype, &mut progress)?;
    let load_seconds = start.elapsed().as_secs_f64();
    if opts.compare == Some(model.info().weight_dtype) {
        return Err(QuillError::Invalid(format!(
            "the model is already measured in {}: give --compare another dtype (or --dtype)",
            model.info().weight_dtype
        )));
    }
    let vocab = model.info().dims.vocab;
    let mut rng = SplitMix(0x0b5e_55ed);
    let prompt: Vec<u32> = (0..opts.prompt_tokens)
        .map(|_| (rng.next() % vocab as u64) as u32)
        .collect();

    progress("warm-up");
    warm_up(&model, &prompt)?;

    let rounds = opts.rounds.max(1);
    let mut runs = Vec::with_capacity(rounds);
    let mut other: Option<Model> = None;
    let mut other_times = Vec::with_capacity(rounds);
    let mut peak_rss = 0;
    for round in 0..rounds {
        let of = round_tag(round, rounds);
        let gen = opts.gen_tokens;
        let time = match opts.compare {
            None => {
                let mut main = Decoding::prefill(&model, &prompt, &of, "", &mut progress)?;
                progress(&format!("decode of {gen} tokens{of}"));
                main.decode(gen)?;
                if round == 0 {
                    // Before the first probe allocates its buffer.
                    peak_rss = peak_rss_bytes().unwrap_or(0);
                }
                main.timing()
            }
            Some(_) => {
                let (main, second) = compare_round(
                    opts,
                    &model,
                    &mut other,
                    &prompt,
                    round,
                    &mut peak_rss,
                    &mut progress,
                )?;
                other_times.push(second);
                main
            }
        };
        progress(&format!("read-bandwidth and FMA-peak probes{of}"));
        let (bw, peak) = probes();
        runs.push(Round { time, bw, peak });
    }

    let bytes_per_token = model.bytes_per_token() as u64;
    let prefill_flops = 2.0 * model.block_macs_per_token() as f64 * prompt.len() as f64
        + 2.0 * model.head_macs() as f64;
    let dtype = model.info().weight_dtype.to_string();
    let kernel_name = kernels::active().name.to_string();
    let prefetch = model.prefetch_choice();
    drop(model);

    let decode_tps = |t: &Timing| t.decoded as f64 / t.decode_s;
    let prefill_tps = |t: &Timing| prompt.len() as f64 / t.prefill_s;
    let bandwidth = |r: &Round| bytes_per_token as f64 * decode_tps(&r.time) / 1e9;
    let gflops = |r: &Round| prefill_flops / r.time.prefill_s / 1e9;
    let med = |f: &dyn Fn(&Round) -> f64| median(runs.iter().map(f).collect());
    let bandwidth_ratio_rounds: Vec<f64> = runs.iter().map(|r| bandwidth(r) / r.bw).collect();
    let peak_ratio_rounds: Vec<f64> = runs.iter().map(|r| gflops(r) / r.peak).collect();
    let compare = other.map(|m| {
        let other_prefetch = m.prefetch_choice();
        let times = &other_times[..];
        let bytes = m.bytes_per_token() as u64;
        let pairs = || runs.iter().zip(times);
        let decode_speedup_rounds: Vec<f64> = pairs()
            .map(|(r, t)| decode_tps(&r.time) / decode_tps(t))
            .collect();
        let prefill_speedup_rounds: Vec<f64> = pairs()
            .map(|(r, t)| prefill_tps(&r.time) / prefill_tps(t))
            .collect();
        CompareReport {
            dtype: m.info().weight_dtype.to_string(),
            bytes_per_token: bytes,
            prefill_tokens_per_s: median(times.iter().map(prefill_tps).collect()),
            decode_tokens_per_s: median(times.iter().map(decode_tps).collect()),
            bandwidth_ratio: median(
                pairs()
                    .map(|(r, t)| bytes as f64 * decode_tps(t) / 1e9 / r.bw)
                    .collect(),
            ),
            peak_ratio: median(
                pairs()
                    .map(|(r, t)| prefill_flops / t.prefill_s / 1e9 / r.peak)
                    .collect(),
            ),
            decode_speedup: median(decode_speedup_rounds.clone()),
            decode_speedup_rounds,
            prefill_speedup: median(prefill_speedup_rounds.clone()),
            prefill_speedup_rounds,
            prefetch: other_prefetch.into(),
        }
    });
    Ok(BenchReport {
        model: name,
        kernels: kernel_name,
        dtype,
        threads,
        prompt_tokens: prompt.len(),
        gen_tokens: opts.gen_tokens,
        load_seconds,
        prefill_tokens_per_s: med(&|r| prefill_tps(&r.time)),
        decode_tokens_per_s: med(&|r| decode_tps(&r.time)),
        bytes_per_token,
        bandwidth_gbs: med(&bandwidth),
        probe_bandwidth_gbs: med(&|r| r.bw),
        bandwidth_ratio: median(bandwidth_ratio_rounds.clone()),
        prefill_flops,
        prefill_gflops: med(&gflops),
        probe_peak_gflops: med(&|r| r.peak),
        peak_ratio: median(peak_ratio_rounds.clone()),
        peak_rss_bytes: peak_rss,
        file_bytes,
        rss_ratio: peak_rss as f64 / file_bytes as f64,
        prefill_cpu_share: med(&|r| r.time.prefill_share),
        decode_cpu_share: med(&|r| r.time.decode_share),
        rounds,
        bandwidth_ratio_rounds,
        peak_ratio_rounds,
        prefetch: prefetch.into(),
        compare,
    })
}

/// Loads (or builds, for `--synthetic`) the model to measure with weights
/// in `dtype`: the model, its name, and the size of its weight file.
fn load_model(
    opts: &BenchOptions,
    dtype: Option<WeightDtype>,
    progress: &mut impl FnMut(&str),
) -> Result<(Model, String, u64)> {
    let load = LoadOptions { dtype };
    Ok(match (&opts.model, opts.synthetic) {
        (Some(path), None) => {
            progress(&format!("loading {}", path.display()));
            let model = Model::load_with(path, &load)?;
            let bytes = model.weight_file().bytes().len() as u64;
            (model, path.display().to_string(), bytes)
        }
        (None, Some(size)) => {
            let stored = match dtype {
                Some(WeightDtype::F32) => DType::F32,
                Some(WeightDtype::F16) => DType::F16,
                _ => DType::BF16,
            };
            progress(&format!("building synthetic {size} weights ({stored})"));
            let file = synthetic_model(size, stored, 0x5eed)?;
            let bytes = file.bytes().len() as u64;
            (
                Model::from_file_with(file, &load)?,
                format!("synthetic {size}"),
                bytes,
            )
        }
        _ => {
            return Err(QuillError::Invalid(
                "bench needs exactly one of a model file and a synthetic size".into(),
            ))
        }
    })
}

/// One model's prefill and decode times in one round.
struct Timing {
    prefill_s: f64,
    decode_s: f64,
    /// Tokens decoded in `decode_s`.
    decoded: usize,
    prefill_share: f64,
    decode_share: f64,
}

/// " (round i of n)" for progress messages, or nothing for a single round.
fn round_tag(round: usize, rounds: usize) -> String {
    if rounds > 1 {
        format!(" (round {} of {rounds})", round + 1)
    } else {
        String::new()
    }
}

/// Tokens each model of a `--compare` round decodes before the other takes
/// over. This machine's memory alternates between a slower and a faster
/// state within seconds to minutes (the same int8 build decoded a 0.4B
/// model at 72 and at 85 tokens/s, bf16 at 41 and at 58, minutes apart):
/// when each model decoded all its tokens in one go, a state change between
/// the two made single rounds' ratios range from 1.16 to 2.05. In blocks of
/// 8 tokens (~0.1–0.2 s each) both see the same state, and a round's ratio
/// is the engine's.
const COMPARE_BLOCK: usize = 8;

/// A model decoding greedily from the end of a prompt, its decode wall and
/// CPU time summed over the calls to [`Decoding::decode`].
struct Decoding<'m> {
    model: &'m Model,
    state: State,
    logits: Vec<f32>,
    prefill_s: f64,
    prefill_share: f64,
    decode_s: f64,
    decoded: usize,
    /// CPU seconds of the decode steps; `None` where unmeasurable.
    decode_cpu: Option<f64>,
}

impl<'m> Decoding<'m> {
    /// Times the prefill of `prompt`; `of` and `tag` (which round, which
    /// model) go into the progress message.
    fn prefill(
        model: &'m Model,
        prompt: &[u32],
        of: &str,
        tag: &str,
        progress: &mut impl FnMut(&str),
    ) -> Result<Self> {
        progress(&format!("prefill of {} tokens{tag}{of}", prompt.len()));
        let mut state = model.new_state();
        let (t0, c0) = (Instant::now(), process_cpu_seconds());
        let logits = model.forward(prompt, &mut state, Logits::Last)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        Ok(Decoding {
            model,
            state,
            logits,
            prefill_s,
            prefill_share: cpu_share(cpu_since(c0), prefill_s, kernels::threads()),
            decode_s: 0.0,
            decoded: 0,
            decode_cpu: Some(0.0),
        })
    }

    /// Decodes `n` more tokens greedily, adding their times.
    fn decode(&mut self, n: usize) -> Result<()> {
        let (t0, c0) = (Instant::now(), process_cpu_seconds());
        for _ in 0..n {
            let next = crate::sampler::argmax(&self.logits);
            self.logits = self.model.forward(&[next], &mut self.state, Logits::Last)?;
        }
        self.decode_s += t0.elapsed().as_secs_f64();
        self.decoded += n;
        self.decode_cpu = self.decode_cpu.zip(cpu_since(c0)).map(|(sum, c)| sum + c);
        Ok(())
    }

    fn timing(&self) -> Timing {
        Timing {
            prefill_s: self.prefill_s,
            decode_s: self.decode_s,
            decoded: self.decoded,
            prefill_share: self.prefill_share,
            decode_share: cpu_share(self.decode_cpu, self.decode_s, kernels::threads()),
        }
    }
}

/// One round of `--compare`: both models' prefills (the main model's first
/// in even rounds, the comparison model's in odd ones, so neither always
/// runs on a machine the other warmed), then their decodes in alternating
/// blocks of [`COMPARE_BLOCK`] tokens (which goes first alternates too).
/// Loads the comparison model on first use. Returns (main, comparison).
fn compare_round(
    opts: &BenchOptions,
    model: &Model,
    other: &mut Option<Model>,
    prompt: &[u32],
    round: usize,
    peak_rss: &mut u64,
    progress: &mut impl FnMut(&str),
) -> Result<(Timing, Timing)> {
    let dtype = opts.compare.expect("a comparison dtype");
    let of = round_tag(round, opts.rounds.max(1));
    let tag = format!(" with {dtype}");
    let mut main = None;
    let mut second = None;
    for comparison in [!round.is_multiple_of(2), round.is_multiple_of(2)] {
        if !comparison {
            main = Some(Decoding::prefill(model, prompt, &of, "", progress)?);
            if round == 0 {
                // Before the comparison model loads and the first probe
                // allocates its buffer. Decoding allocates nothing the
                // prefill did not (activations come from the pool it left).
                *peak_rss = peak_rss_bytes().unwrap_or(0);
            }
            continue;
        }
        if other.is_none() {
            let (m, _, _) = load_model(opts, Some(dtype), progress)?;
            warm_up(&m, prompt)?;
            *other = Some(m);
        }
        let m = other.as_ref().expect("loaded above");
        second = Some(Decoding::prefill(m, prompt, &of, &tag, progress)?);
    }
    let (mut main, mut second) = (
        main.expect("the main model runs every round"),
        second.expect("the comparison model runs every round"),
    );
    let gen = opts.gen_tokens;
    progress(&format!(
        "decode of {gen} tokens, alternating with {dtype} every {COMPARE_BLOCK}{of}"
    ));
    let mut done = 0;
    while done < gen {
        let n = COMPARE_BLOCK.min(gen - done);
        if (round + done / COMPARE_BLOCK).is_multiple_of(2) {
            main.decode(n)?;
            second.decode(n)?;
        } else {
            second.decode(n)?;
            main.decode(n)?;
        }
        done += n;
    }
    Ok((main.timing(), second.timing()))
}

/// What no measurement should time: a short chunk reads every weight once
/// (faulting in mapped pages) and wakes the thread pool; then decode steps
/// run the model's first prefetch trial ([`prefetch::TRIAL_STEPS`]), whose
/// steps alternate the two settings — 6 of them with the slower one, which
/// the tuner measured 1.3–1.5× slower on the Rapids VM, so timed they
/// would add 6 × 0.3–0.5 steps' time to a first round of 128 (1.4–2.3%) —
/// and fill the plan of the decode team's look-ahead. A long generation pays the trial once per loaded
/// model and then once every [`prefetch::RETUNE_EVERY`] steps.
fn warm_up(model: &Model, prompt: &[u32]) -> Result<()> {
    let mut state = model.new_state();
    let mut logits = model.forward(&prompt[..prompt.len().min(8)], &mut state, Logits::Last)?;
    for _ in 0..prefetch::TRIAL_STEPS {
        let next = crate::sampler::argmax(&logits);
        logits = model.forward(&[next], &mut state, Logits::Last)?;
    }
    Ok(())
}

/// One round's raw measurements.
struct Round {
    /// The main model's times.
    time: Timing,
    /// Probe read bandwidth, GB/s.
    bw: f64,
    /// Probe FMA peak, GFLOP/s.
    peak: f64,
}

/// The median (the mean of the middle two for an even count); 0 if empty.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// CPU seconds used since `start` (a [`process_cpu_seconds`] reading);
/// `None` if either reading is unknown.
fn cpu_since(start: Option<f64>) -> Option<f64> {
    Some(process_cpu_seconds()? - start?)
}

/// `cpu` seconds ÷ (wall seconds × threads); 0 if unknown.
fn cpu_share(cpu: Option<f64>, wall: f64, threads: usize) -> f64 {
    match cpu {
        Some(c) if wall > 0.0 => c / (wall * threads as f64),
        _ => 0.0,
    }
}

/// STREAM-style read bandwidth in GB/s: every kernel thread sums its own
/// contiguous part of a `bytes`-long f32 buffer (≫ last-level cache), best
/// of `runs`, each run summing once without software prefetch and once
/// prefetching [`kernels::prefetch::AHEAD`] bytes ahead (where the kernel
/// set prefetches): the decode kernels may do either, and on some CPUs a
/// plain sum reads far below what the memory delivers (a Rapids VM, 2
/// threads: 19.8 GB/s plain, 22.4–25.4 prefetching). Summing, not
/// copying: decode only reads weights.
pub fn bandwidth_probe(bytes: usize, runs: usize) -> f64 {
    use rayon::prelude::*;
    let ks = kernels::best();
    let n = bytes / 4;
    let threads = kernels::threads().max(1);
    let part = n.div_ceil(threads);
    // On huge pages when the OS grants them, as int8 weights are
    // (`kernels::huge_page_vec`): the probe measures the best this machine
    // reads, not a handicapped baseline. (Zeroed on this thread first, so
    // on a NUMA machine the pages sit near it; these VMs have one node.)
    let mut buf: Vec<f32> = kernels::huge_page_vec(n);
    kernels::install(|| buf.par_chunks_mut(part).for_each(|c| c.fill(1.0)));
    let mut best = 0.0f64;
    for _ in 0..runs.max(1) {
        for ahead in [0, kernels::prefetch::AHEAD] {
            let t0 = Instant::now();
            let total: f32 =
                kernels::install(|| buf.par_chunks(part).map(|c| (ks.sum_f32)(c, ahead)).sum());
            let s = t0.elapsed().as_secs_f64();
            std::hint::black_box(total);
            best = best.max((n * 4) as f64 / s / 1e9);
        }
    }
    best
}

/// f32 FMA throughput in GFLOP/s: independent FMA chains on every kernel
/// thread (the best set the CPU has), ~20 ms per run, best of `runs`. Many
/// short runs rather than a few long ones: on a shared machine a long run
/// is almost always interrupted, so its average understates the peak.
pub fn fma_peak_probe(runs: usize) -> f64 {
    use rayon::prelude::*;
    let ks = kernels::best();
    let threads = kernels::threads().max(1);
    // Calibrate the rounds to ~20 ms on one thread.
    let mut iters = 1u64 << 16;
    loop {
        let t0 = Instant::now();
        (ks.fma_probe)(iters);
        let s = t0.elapsed().as_secs_f64();
        if s > 0.005 || iters > 1 << 34 {
            iters = ((iters as f64) * 0.02 / s.max(1e-9)) as u64;
            break;
        }
        iters *= 4;
    }
    let mut best = 0.0f64;
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        let flops: f64 = kernels::install(|| {
            (0..threads)
                .into_par_iter()
                .with_max_len(1)
                .map(|_| (ks.fma_probe)(iters))
                .sum()
        });
        best = best.max(flops / t0.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// splitmix64: fast, seedable per block so generation can be parallel and
/// still deterministic.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// How a synthetic tensor's values are drawn (as synth_model.py).
#[derive(Clone, Copy)]
enum Init {
    /// Zero-mean with this standard deviation (uniform, not Gaussian: the
    /// distribution does not matter for speed, and the tails stay bounded).
    Normal(f32),
    /// Uniform in [lo, hi).
    Uniform(f32, f32),
}

/// LoRA ranks of the released RWKV-7 models for width `c` (synth_model.py
/// `lora_dims`): decay, a, v, gate.
pub fn lora_dims(c: usize) -> [usize; 4] {
    let r = |f: f64, p: f64| 32.max(((f * (c as f64).powf(p) / 32.0).round() as usize) * 32);
    [r(1.8, 0.5), r(1.8, 0.5), r(1.3, 0.5), r(0.6, 0.8)]
}

/// The tensors of an RWKV-7 model of `n_layer` × `c` with vocab `vocab`:
/// names, shapes and initialisation as in synth_model.py.
fn synthetic_tensors(n_layer: usize, c: usize, vocab: usize) -> Vec<(String, Vec<usize>, Init)> {
    let (h, n) = (c / 64, 64);
    let [dw, da, dv, dg] = lora_dims(c);
    let mut t: Vec<(String, Vec<usize>, Init)> = Vec::new();
    let mut add = |name: String, shape: &[usize], init: Init| t.push((name, shape.to_vec(), init));
    let vec1 = |c: usize| vec![1, 1, c];
    add("emb.weight".into(), &[vocab, c], Init::Normal(0.5));
    add("blocks.0.ln0.weight".into(), &[c], Init::Uniform(0.8, 1.2));
    add("blocks.0.ln0.bias".into(), &[c], Init::Normal(0.1));
    let sc = (c as f32).powf(-0.5);
    for l in 0..n_layer {
        let b = |s: &str| format!("blocks.{l}.{s}");
        for ln in ["ln1", "ln2"] {
            add(b(&format!("{ln}.weight")), &[c], Init::Uniform(0.8, 1.2));
            add(b(&format!("{ln}.bias")), &[c], Init::Normal(0.1));
        }
        for m in ["r", "w", "k", "v", "a", "g"] {
            add(b(&format!("att.x_{m}")), &vec1(c), Init::Uniform(0.0, 1.0));
        }
        add(b("att.w0"), &vec1(c), Init::Uniform(-3.0, 0.5));
        add(b("att.w1"), &[c, dw], Init::Normal(0.1));
        add(b("att.w2"), &[dw, c], Init::Normal(0.1));
        add(b("att.a0"), &vec1(c), Init::Uniform(-1.0, 1.0));
        add(b("att.a1"), &[c, da], Init::Normal(0.1));
        add(b("att.a2"), &[da, c], Init::Normal(0.1));
        if l > 0 {
            add(b("att.v0"), &vec1(c), Init::Uniform(-1.0, 1.0));
            add(b("att.v1"), &[c, dv], Init::Normal(0.1));
            add(b("att.v2"), &[dv, c], Init::Normal(0.1));
        }
        add(b("att.g1"), &[c, dg], Init::Normal(0.1));
        add(b("att.g2"), &[dg, c], Init::Normal(0.1));
        add(b("att.k_k"), &vec1(c), Init::Uniform(0.5, 1.0));
        add(b("att.k_a"), &vec1(c), Init::Uniform(0.5, 1.5));
        add(b("att.r_k"), &[h, n], Init::Normal(0.5));
        for m in ["receptance", "key", "value", "output"] {
            add(b(&format!("att.{m}.weight")), &[c, c], Init::Normal(sc));
        }
        add(b("att.ln_x.weight"), &[c], Init::Uniform(0.8, 1.2));
        add(b("att.ln_x.bias"), &[c], Init::Normal(0.1));
        add(b("ffn.x_k"), &vec1(c), Init::Uniform(0.0, 1.0));
        add(b("ffn.key.weight"), &[4 * c, c], Init::Normal(sc));
        add(
            b("ffn.value.weight"),
            &[c, 4 * c],
            Init::Normal((4.0 * c as f32).powf(-0.5)),
        );
    }
    add("ln_out.weight".into(), &[c], Init::Uniform(0.8, 1.2));
    add("ln_out.bias".into(), &[c], Init::Normal(0.1));
    add("head.weight".into(), &[vocab, c], Init::Normal(sc));
    t
}

/// Builds a random-weight RWKV-7 model at a released shape as an in-memory
/// safetensors file stored in `dtype`. The bytes are generated in place,
/// in parallel, into the one buffer the model then reads: no f32 copy of
/// the model and no second copy of the file is ever made, so resident
/// memory is the file size.
pub fn synthetic_model(size: SyntheticSize, dtype: DType, seed: u64) -> Result<Arc<WeightFile>> {
    let (n_layer, c) = size.shape();
    synthetic_model_with(n_layer, c, 65536, dtype, seed, &size.to_string())
}

/// [`synthetic_model`] for any shape (`c` a multiple of 64).
pub fn synthetic_model_with(
    n_layer: usize,
    c: usize,
    vocab: usize,
    dtype: DType,
    seed: u64,
    label: &str,
) -> Result<Arc<WeightFile>> {
    use rayon::prelude::*;
    if c == 0 || !c.is_multiple_of(64) || n_layer == 0 || vocab == 0 {
        return Err(QuillError::Invalid(format!(
            "synthetic model {n_layer}×{c} (vocab {vocab}): width must be a positive multiple of 64"
        )));
    }
    let tensors = synthetic_tensors(n_layer, c, vocab);
    let es = dtype.size();
    // Header, laid out as model::weights::write_safetensors does (padded to
    // 8 bytes so f32 data is aligned in place).
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, _) in &tensors {
        let len = shape.iter().product::<usize>() * es;
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype.safetensors_name(),
                "shape": shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    let mut json = serde_json::to_string(&serde_json::Value::Object(header))
        .map_err(|e| QuillError::Invalid(format!("synthetic header: {e}")))?;
    while (8 + json.len()) % 8 != 0 {
        json.push(' ');
    }
    let data_start = 8 + json.len();
    // An anonymous map (zero-filled, pages resident only as written) rather
    // than a Vec, so the loader can hand each large tensor's pages back once
    // it has copied it into panels or int8 (`WeightFile::release`).
    let mut bytes = memmap2::MmapMut::map_anon(data_start + offset)
        .map_err(|e| QuillError::Invalid(format!("synthetic model: cannot map memory: {e}")))?;
    bytes[..8].copy_from_slice(&(json.len() as u64).to_le_bytes());
    bytes[8..data_start].copy_from_slice(json.as_bytes());
    let mut rest = &mut bytes[data_start..];
    // Fill every tensor in parallel, in blocks seeded by (tensor, block).
    const BLOCK: usize = 1 << 16;
    let mut jobs = Vec::new();
    for (ti, (_, shape, init)) in tensors.iter().enumerate() {
        let len = shape.iter().product::<usize>() * es;
        let (mine, tail) = rest.split_at_mut(len);
        rest = tail;
        for (bi, blk) in mine.chunks_mut(BLOCK * es).enumerate() {
            jobs.push((ti, bi, *init, blk));
        }
    }
    kernels::install(|| {
        jobs.into_par_iter().for_each(|(ti, bi, init, blk)| {
            let mut rng = SplitMix(seed ^ ((ti as u64) << 32) ^ bi as u64);
            let (lo, hi) = match init {
                // Uniform with standard deviation s: ±s·√3.
                Init::Normal(s) => (-s * 3f32.sqrt(), s * 3f32.sqrt()),
                Init::Uniform(lo, hi) => (lo, hi),
            };
            for e in blk.chunks_exact_mut(es) {
                let v = lo + (hi - lo) * rng.unit();
                match dtype {
                    DType::F32 => e.copy_from_slice(&v.to_le_bytes()),
                    DType::F16 => e.copy_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                    DType::BF16 => e.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
                    DType::I8 => unreachable!("synthetic weights are floats"),
                }
            }
        })
    });
    let bytes = bytes
        .make_read_only()
        .map_err(|e| QuillError::Invalid(format!("synthetic model: {e}")))?;
    WeightFile::from_backing(Backing::Anon(bytes), format!("synthetic {label} ({dtype})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_dims_match_the_released_models() {
        assert_eq!(lora_dims(768), [64, 64, 32, 128]);
        assert_eq!(lora_dims(1024), [64, 64, 32, 160]);
        assert_eq!(lora_dims(2048), [96, 96, 64, 256]);
    }

    #[test]
    fn sizes_parse_and_print() {
        for s in [
            SyntheticSize::B0p1,
            SyntheticSize::B0p4,
            SyntheticSize::B1p5,
        ] {
            assert_eq!(s.to_string().parse::<SyntheticSize>().unwrap(), s);
        }
        assert!("2b".parse::<SyntheticSize>().is_err());
    }

    #[test]
    fn small_synthetic_model_runs() {
        let file = synthetic_model_with(2, 128, 300, DType::BF16, 1, "test").unwrap();
        let model = Model::from_file(file).unwrap();
        assert_eq!(model.info().dims.n_head, 2);
        let mut state = model.new_state();
        let logits = model.forward(&[1, 2, 3], &mut state, Logits::Last).unwrap();
        assert_eq!(logits.len(), 300);
        assert!(logits.iter().all(|v| v.is_finite()));
    }

    /// A tiny f32 synthetic model written to a fresh temporary folder
    /// named after `tag`: (the folder, the file).
    fn temp_model(seed: u64, tag: &str) -> (PathBuf, PathBuf) {
        let file = synthetic_model_with(2, 64, 256, DType::F32, seed, tag).unwrap();
        let dir = std::env::temp_dir().join(format!("quill-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        std::fs::write(&path, file.bytes()).unwrap();
        (dir, path)
    }

    #[test]
    fn tiny_bench_reports_consistent_figures() {
        let (dir, path) = temp_model(2, "t");
        let opts = BenchOptions {
            model: Some(path.clone()),
            dtype: Some(WeightDtype::Int8),
            prompt_tokens: 20,
            gen_tokens: 3,
            ..BenchOptions::default()
        };
        let mut phases = Vec::new();
        // Small probes: this is about the report's arithmetic, not speed.
        let r = run_with_probes(&opts, |p| phases.push(p.to_string()), || (1.0, 10.0)).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(r.dtype, "int8");
        assert!(r.decode_tokens_per_s > 0.0 && r.prefill_tokens_per_s > 0.0);
        assert!(
            (r.bandwidth_gbs - r.bytes_per_token as f64 * r.decode_tokens_per_s / 1e9).abs() < 1e-9
        );
        assert!((r.bandwidth_ratio - r.bandwidth_gbs).abs() < 1e-9);
        assert!(!phases.is_empty());
        let json = serde_json::to_value(&r).unwrap();
        for key in [
            "decode_tokens_per_s",
            "prefill_tokens_per_s",
            "bandwidth_gbs",
            "probe_bandwidth_gbs",
            "bandwidth_ratio",
            "prefill_gflops",
            "probe_peak_gflops",
            "peak_ratio",
            "peak_rss_bytes",
            "dtype",
            "threads",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        // 3 timed decode steps are too few for the prefetch trial, but the
        // warm-up ran it: tuned (a measured speed-up) unless
        // QUILL_PREFETCH fixed the setting (null then).
        let mode = json["prefetch_mode"].as_str().unwrap();
        assert!(["auto", "on", "off"].contains(&mode));
        assert!(json["prefetch_bytes"].is_u64());
        if mode == "auto" {
            let speedup = json["prefetch_speedup"].as_f64();
            assert!(speedup.is_some_and(|s| s > 0.0), "{json}");
        } else {
            assert_eq!(json["prefetch_speedup"], serde_json::Value::Null);
        }
    }

    #[test]
    fn rounds_pair_each_measurement_with_its_own_probes() {
        let (dir, path) = temp_model(3, "r");
        let opts = BenchOptions {
            model: Some(path),
            prompt_tokens: 10,
            gen_tokens: 2,
            rounds: 3,
            ..BenchOptions::default()
        };
        // Probe figures that differ per round: 1, 2, 3 GB/s and 10, 20, 30 GFLOP/s.
        let mut calls = 0.0;
        let r = run_with_probes(
            &opts,
            |_| {},
            || {
                calls += 1.0;
                (calls, 10.0 * calls)
            },
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(calls, 3.0, "one probe per round");
        assert_eq!(r.rounds, 3);
        assert_eq!(r.probe_bandwidth_gbs, 2.0);
        assert_eq!(r.probe_peak_gflops, 20.0);
        assert_eq!(r.bandwidth_ratio_rounds.len(), 3);
        assert_eq!(r.peak_ratio_rounds.len(), 3);
        // Each round's ratio is against that round's probe, and the
        // reported ratio is their median (not median ÷ median).
        assert_eq!(r.bandwidth_ratio, median(r.bandwidth_ratio_rounds.clone()));
        assert_eq!(r.peak_ratio, median(r.peak_ratio_rounds.clone()));
        assert!(r.bandwidth_ratio_rounds.iter().all(|&x| x > 0.0));
    }

    #[test]
    fn compare_measures_a_second_dtype_in_every_round() {
        let (dir, path) = temp_model(4, "c");
        let mut opts = BenchOptions {
            model: Some(path),
            dtype: Some(WeightDtype::Int8),
            compare: Some(WeightDtype::Int8),
            prompt_tokens: 10,
            gen_tokens: 2,
            rounds: 3,
            ..BenchOptions::default()
        };
        let same = run_with_probes(&opts, |_| {}, || (1.0, 10.0));
        assert!(same.unwrap_err().to_string().contains("--compare"));
        // The same check when the dtype is the file's own (f32 here).
        let implicit = BenchOptions {
            dtype: None,
            compare: Some(WeightDtype::F32),
            ..opts.clone()
        };
        let same = run_with_probes(&implicit, |_| {}, || (1.0, 10.0));
        assert!(same
            .unwrap_err()
            .to_string()
            .contains("already measured in f32"));
        opts.compare = Some(WeightDtype::F32);
        let mut phases = Vec::new();
        let r = run_with_probes(&opts, |p| phases.push(p.to_string()), || (1.0, 10.0)).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let c = r.compare.as_ref().expect("a comparison report");
        assert_eq!((r.dtype.as_str(), c.dtype.as_str()), ("int8", "f32"));
        assert!(c.bytes_per_token > r.bytes_per_token);
        assert_eq!(c.decode_speedup_rounds.len(), 3);
        assert_eq!(c.prefill_speedup_rounds.len(), 3);
        assert_eq!(c.decode_speedup, median(c.decode_speedup_rounds.clone()));
        assert_eq!(c.prefill_speedup, median(c.prefill_speedup_rounds.clone()));
        assert!(c
            .decode_speedup_rounds
            .iter()
            .all(|&x| x > 0.0 && x.is_finite()));
        assert!(c.decode_tokens_per_s > 0.0 && c.prefill_tokens_per_s > 0.0);
        assert!(c.bandwidth_ratio > 0.0 && c.peak_ratio > 0.0);
        // Both models decode in every round; which goes first alternates.
        let firsts: Vec<bool> = phases
            .iter()
            .filter(|p| p.starts_with("prefill"))
            .map(|p| p.contains("with f32"))
            .collect();
        assert_eq!(firsts, [false, true, true, false, false, true]);
        // Each round decodes once, both models side by side.
        let decodes: Vec<&String> = phases.iter().filter(|p| p.starts_with("decode")).collect();
        assert_eq!(decodes.len(), 3);
        assert!(decodes[0].contains("alternating with f32 every 8"));
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["compare"]["decode_speedup"].as_f64().is_some());
    }

    #[test]
    fn compared_models_decode_every_token_in_alternating_blocks() {
        let (dir, path) = temp_model(5, "b");
        let opts = BenchOptions {
            model: Some(path),
            dtype: Some(WeightDtype::F32),
            compare: Some(WeightDtype::BF16),
            prompt_tokens: 4,
            // Not a multiple of the block: the last block is shorter.
            gen_tokens: 2 * COMPARE_BLOCK + 3,
            rounds: 2,
            ..BenchOptions::default()
        };
        let main = Model::load_with(
            opts.model.as_ref().unwrap(),
            &LoadOptions { dtype: opts.dtype },
        )
        .unwrap();
        let mut other = None;
        let mut peak = 0;
        for round in 0..2 {
            let (a, b) = compare_round(
                &opts,
                &main,
                &mut other,
                &[1, 2, 3, 4],
                round,
                &mut peak,
                &mut |_| {},
            )
            .unwrap();
            assert_eq!((a.decoded, b.decoded), (opts.gen_tokens, opts.gen_tokens));
            assert!(a.decode_s > 0.0 && b.decode_s > 0.0);
        }
        std::fs::remove_dir_all(&dir).ok();
        let other = other.expect("loaded on first use");
        assert_eq!(other.info().weight_dtype, WeightDtype::BF16);
        if cfg!(target_os = "linux") {
            assert!(peak > 0, "peak RSS read in round 0");
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
