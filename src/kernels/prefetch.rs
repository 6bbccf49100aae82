//! Software prefetch in the decode kernels: on or off, whichever each model
//! measures to be faster on the machine it runs on.
//!
//! Why measure instead of choosing once: the panel kernels
//! ([`super::Layout::Panels`]) read each thread's share of a matrix as one
//! sequential stream, and whether the hardware prefetcher keeps such a
//! stream ahead of the loads depends on the CPU. On the VM this engine was
//! first tuned on (AVX2, no AVX-512, two vCPUs sharing one core) it did:
//! prefetching in software was slower or equal for bf16 and cost int8
//! decode 6–12% (see `rows_i8_panels_raw`). On a Sapphire/Emerald Rapids VM
//! (2.1 GHz; one thread reads 11–13 GB/s) it did not: prefetching
//! [`AHEAD`] bytes ahead into L2 made 0.4B decode on 2 threads 1.45× as
//! fast with bf16 weights and 1.40× with int8 (in-process alternating
//! blocks of 8 tokens, 3 rounds each).
//!
//! So every [`Model`](crate::model::Model) owns a [`PrefetchTuner`]: its
//! first decode steps alternate the two settings (after two warm-up steps,
//! in the order off, on, on, off, … so that a drift of the machine during
//! the trial favours neither), and the one with the lower median step time
//! is kept — then tried again every [`RETUNE_EVERY`] steps, since a shared
//! machine's memory can change speed within minutes. Prefetching never
//! changes a result, only when bytes arrive, so a choice made on a noisy
//! sample costs speed at worst. `QUILL_PREFETCH=on|off|auto` fixes the
//! setting (for measuring either one; `auto`, the default, tunes).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Bytes ahead of the current read that the decode kernels prefetch when
/// prefetching is on. Measured on the Rapids VM (0.4B, 2 threads, bf16
/// decode against none): 2 KiB 1.30×, 4 KiB 1.40×, 8 KiB 1.45×, 16 KiB
/// 1.44× as fast; int8 4 KiB 1.38×, 8 KiB 1.40×.
pub const AHEAD: usize = 8192;

/// Decode steps between two trials of a model's tuner.
pub const RETUNE_EVERY: u64 = 2048;

/// Steps at the start of each trial that are run but not timed (the first
/// steps after a prefill find other data in the caches).
const WARMUP: u64 = 2;

/// Timed steps of each setting per trial.
const SAMPLES: usize = 6;

/// Decode steps a model's first trial takes (warm-up and both settings'
/// samples): after them the faster setting is in force until the next
/// trial, [`RETUNE_EVERY`] steps later.
pub const TRIAL_STEPS: u64 = WARMUP + 2 * SAMPLES as u64;

/// The prefetch distance the decode kernels use now, in bytes (0: none).
static DISTANCE: AtomicUsize = AtomicUsize::new(0);

/// Bytes ahead that the panel matrix–vector kernels prefetch (0: none).
/// Set by the tuner of the model that is decoding; read by the kernels at
/// the start of each product (the team's helpers see it through the pass
/// publication, which orders it before their reads).
pub fn distance() -> usize {
    DISTANCE.load(Ordering::Relaxed)
}

/// Asks for the cache line at `addr` to be brought into L2 (a hint: it
/// never faults, whatever the address; a no-op where this build has no
/// prefetch instruction for it).
#[inline]
pub(crate) fn prefetch_l2(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht1` only hints the cache (SSE, always present on
    // x86-64) and does not access memory architecturally.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// How `QUILL_PREFETCH` asks the decode kernels to prefetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefetchMode {
    /// Measure both settings on each model's first decode steps (default).
    Auto,
    /// Always prefetch [`AHEAD`] bytes ahead.
    On,
    /// Never prefetch in software.
    Off,
}

impl PrefetchMode {
    /// The mode's name as `QUILL_PREFETCH` spells it.
    pub fn name(self) -> &'static str {
        match self {
            PrefetchMode::Auto => "auto",
            PrefetchMode::On => "on",
            PrefetchMode::Off => "off",
        }
    }

    /// Parses a `QUILL_PREFETCH` value; the warning to print for one that
    /// is not a mode (then `Auto`).
    pub fn parse(value: &str) -> (PrefetchMode, Option<String>) {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => (PrefetchMode::Auto, None),
            "on" => (PrefetchMode::On, None),
            "off" => (PrefetchMode::Off, None),
            other => (
                PrefetchMode::Auto,
                Some(format!(
                    "QUILL_PREFETCH={other} is not a prefetch mode (on, off, auto); using auto"
                )),
            ),
        }
    }
}

/// The process's mode, from `QUILL_PREFETCH` on first use.
pub fn mode() -> PrefetchMode {
    static MODE: OnceLock<PrefetchMode> = OnceLock::new();
    *MODE.get_or_init(|| {
        let (mode, warning) =
            PrefetchMode::parse(&std::env::var("QUILL_PREFETCH").unwrap_or_default());
        if let Some(w) = warning {
            eprintln!("quill: {w}");
        }
        mode
    })
}

/// What a tuner has decided, for reports such as `quill bench`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefetchChoice {
    /// Bytes ahead (0: no software prefetch).
    pub distance: usize,
    /// Tuned (`Auto`) or fixed by `QUILL_PREFETCH`.
    pub mode: PrefetchMode,
    /// Median step time without prefetch ÷ with it, from the last trial;
    /// `None` when the setting is fixed or no trial has ended yet.
    pub speedup: Option<f64>,
}

/// Chooses, per model, whether its decode steps prefetch (module docs).
#[derive(Debug)]
pub struct PrefetchTuner {
    mode: PrefetchMode,
    state: Mutex<Trial>,
}

/// A tuner's record: steps since the current trial began, the step times
/// of each setting in it (index 0 off, 1 on) and the setting in force.
#[derive(Debug, Default)]
struct Trial {
    steps: u64,
    times: [Vec<f64>; 2],
    on: bool,
    speedup: Option<f64>,
}

/// What step `steps` of a trial does: `Some(on)` times the step with that
/// setting; `None` runs it untimed with the setting in force.
fn schedule(steps: u64) -> Option<bool> {
    let k = steps.checked_sub(WARMUP)?;
    if k >= 2 * SAMPLES as u64 {
        return None;
    }
    // off, on, on, off, off, on, on, off, …
    Some(matches!(k % 4, 1 | 2))
}

/// The median of a non-empty sample.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Trial {
    /// Records one timed step, and decides once the trial has all of them.
    fn record(&mut self, on: bool, seconds: f64) {
        self.times[on as usize].push(seconds);
        if self.times.iter().all(|t| t.len() >= SAMPLES) {
            let off = median(&mut self.times[0]);
            let with = median(&mut self.times[1]);
            self.on = with < off;
            self.speedup = Some(off / with);
            self.times = Default::default();
        }
    }
}

impl Default for PrefetchTuner {
    fn default() -> Self {
        Self::new()
    }
}

impl PrefetchTuner {
    /// A tuner in the process's [`mode`].
    pub fn new() -> Self {
        Self::with_mode(mode())
    }

    /// A tuner in `mode` (tests, and callers that fix the setting).
    pub fn with_mode(mode: PrefetchMode) -> Self {
        PrefetchTuner {
            mode,
            state: Mutex::new(Trial::default()),
        }
    }

    /// The setting in force and the last trial's figure.
    pub fn choice(&self) -> PrefetchChoice {
        let (on, speedup) = match self.mode {
            PrefetchMode::On => (true, None),
            PrefetchMode::Off => (false, None),
            PrefetchMode::Auto => {
                let t = self.lock();
                (t.on, t.speedup)
            }
        };
        PrefetchChoice {
            distance: if on { AHEAD } else { 0 },
            mode: self.mode,
            speedup,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Trial> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one decode step `step` with this model's setting (handed to
    /// it: the bytes ahead now in force), timing it for the trial when
    /// `comparable` (steps that compute the same thing, e.g. all the steps
    /// that return the last token's logits).
    pub fn run<R>(&self, comparable: bool, step: impl FnOnce(usize) -> R) -> R {
        // This step's setting, and whether the trial times it.
        let (on, timed) = match self.mode {
            PrefetchMode::On => (true, false),
            PrefetchMode::Off => (false, false),
            PrefetchMode::Auto if !comparable => (self.lock().on, false),
            PrefetchMode::Auto => {
                let mut t = self.lock();
                let plan = schedule(t.steps);
                t.steps = (t.steps + 1) % RETUNE_EVERY;
                plan.map_or((t.on, false), |on| (on, true))
            }
        };
        let ahead = if on { AHEAD } else { 0 };
        DISTANCE.store(ahead, Ordering::Relaxed);
        let t0 = Instant::now();
        let out = step(ahead);
        if timed {
            self.lock().record(on, t0.elapsed().as_secs_f64());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_warms_up_then_alternates_both_settings_evenly() {
        let plan: Vec<Option<bool>> = (0..WARMUP + 2 * SAMPLES as u64 + 2).map(schedule).collect();
        assert_eq!(plan[..WARMUP as usize], [None, None]);
        let timed: Vec<bool> = plan.iter().flatten().copied().collect();
        assert_eq!(timed.len(), 2 * SAMPLES);
        assert_eq!(timed.iter().filter(|&&on| on).count(), SAMPLES);
        assert_eq!(timed[..4], [false, true, true, false]);
        assert_eq!(plan[plan.len() - 2..], [None, None]);
    }

    /// Feeds a tuner steps whose time depends on the setting in force.
    fn tune(mode: PrefetchMode, cost: impl Fn(bool) -> f64, steps: usize) -> PrefetchTuner {
        let tuner = PrefetchTuner::with_mode(mode);
        for _ in 0..steps {
            tuner.run(true, |ahead| {
                // Stand-in for a step whose time depends on the setting.
                let on = ahead != 0;
                std::thread::sleep(std::time::Duration::from_micros((cost(on) * 1e6) as u64));
            });
        }
        tuner
    }

    #[test]
    fn the_faster_setting_is_kept_whichever_it_is() {
        let steps = (WARMUP as usize) + 2 * SAMPLES + 1;
        let faster_on = tune(
            PrefetchMode::Auto,
            |on| if on { 0.002 } else { 0.006 },
            steps,
        );
        let choice = faster_on.choice();
        assert_eq!(choice.distance, AHEAD);
        assert!(choice.speedup.expect("a trial ran") > 1.5, "{choice:?}");

        let faster_off = tune(
            PrefetchMode::Auto,
            |on| if on { 0.006 } else { 0.002 },
            steps,
        );
        let choice = faster_off.choice();
        assert_eq!(choice.distance, 0);
        assert!(choice.speedup.expect("a trial ran") < 0.7, "{choice:?}");
    }

    #[test]
    fn no_decision_before_the_trial_ends_and_a_new_trial_follows() {
        let tuner = PrefetchTuner::with_mode(PrefetchMode::Auto);
        for _ in 0..WARMUP as usize + 2 * SAMPLES - 1 {
            tuner.run(true, |_| ());
        }
        assert_eq!(tuner.choice().speedup, None);
        tuner.run(true, |_| ());
        assert!(tuner.choice().speedup.is_some());
        // Steps that are not comparable neither count nor get timed.
        let before = tuner.lock().steps;
        tuner.run(false, |_| ());
        assert_eq!(tuner.lock().steps, before);
        tuner.lock().steps = RETUNE_EVERY - 1;
        tuner.run(true, |_| ());
        assert_eq!(tuner.lock().steps, 0, "the next trial starts over");
    }

    #[test]
    fn a_fixed_mode_never_tries_the_other_setting() {
        for (mode, want) in [(PrefetchMode::On, AHEAD), (PrefetchMode::Off, 0)] {
            let tuner = PrefetchTuner::with_mode(mode);
            for _ in 0..20 {
                let seen = tuner.run(true, |ahead| ahead);
                assert_eq!(seen, want, "{mode:?}");
            }
            assert_eq!(
                tuner.choice(),
                PrefetchChoice {
                    distance: want,
                    mode,
                    speedup: None
                }
            );
        }
    }

    #[test]
    fn modes_parse_and_a_bad_value_warns() {
        assert_eq!(PrefetchMode::parse(" On "), (PrefetchMode::On, None));
        assert_eq!(PrefetchMode::parse("off"), (PrefetchMode::Off, None));
        assert_eq!(PrefetchMode::parse(""), (PrefetchMode::Auto, None));
        let (mode, warning) = PrefetchMode::parse("fast");
        assert_eq!(mode, PrefetchMode::Auto);
        assert!(warning.expect("a warning").contains("on, off, auto"));
    }
}
