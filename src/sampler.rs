//! Token sampling with the official PIPELINE semantics (RWKV-NOTES
//! "Sampling conventions"): penalties on raw logits, then top-p / top-k /
//! min-p on probabilities, temperature as `p^(1/T)`, and a seeded RNG whose
//! state can be saved so a continuation is reproducible bit for bit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{QuillError, Result};

/// Sampler settings. Defaults follow the official chat demo except `top_p`,
/// which is looser (0.85) because Quill writes stories as well as chats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerSettings {
    /// Temperature; 0 is greedy.
    pub temperature: f32,
    /// Nucleus mass kept (1 = off).
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 = off, 1 = greedy).
    pub top_k: usize,
    /// Drop tokens whose probability is below `min_p · p_max` (0 = off).
    pub min_p: f32,
    /// Subtracted once from the logit of every token seen so far.
    pub presence: f32,
    /// Subtracted per (decayed) occurrence.
    pub frequency: f32,
    /// Occurrence counts are multiplied by this after every generated token.
    pub penalty_decay: f32,
    /// Token ids never sampled.
    pub banned: Vec<u32>,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        SamplerSettings {
            temperature: 1.0,
            top_p: 0.85,
            top_k: 0,
            min_p: 0.0,
            presence: 0.5,
            frequency: 0.5,
            penalty_decay: 0.996,
            banned: Vec::new(),
        }
    }
}

/// Tokens [`Sampler::sample`] sorts first by probability (a partial sort),
/// sorting 4× as many each time the cut is not decided within them, and
/// all of them once that is a quarter of them.
///
/// Why: sorting a whole 65536-token vocabulary took 4.9–6.8 ms per token
/// here (default settings), up to a third of a 0.4B int8 decode step,
/// while a peaked distribution's top-p nucleus is a few tokens. Measured
/// (65536 tokens, 40 draws each): logits ±3 with a few spikes 4.86 →
/// 1.20 ms, uniform ±10 6.85 → 1.88 ms, uniform ±1 (nearly the whole
/// order needed) 6.20 → 5.26 ms; the same tokens drawn.
const FIRST_SORTED: usize = 512;

/// Probability below which [`Sampler::sample`] first leaves a token out of
/// the order (the cut rarely reaches so far; when it does, all tokens are
/// ordered). Selecting the head among all 65536 tokens instead made a
/// peaked distribution's draw 1.46 ms against 0.91 (before `order_key`).
const CANDIDATE_FLOOR: f64 = 1e-6;

impl SamplerSettings {
    /// How many of the most likely tokens the top-p, top-k and min-p cuts
    /// keep, given the head `sorted` of the order (most likely first) of
    /// the tokens with probabilities `p`, the whole order if `complete`;
    /// `None` if the tokens after the head could change it.
    fn kept(&self, sorted: &[u128], p: &[f64], complete: bool) -> Option<usize> {
        // top-p: the cutoff is the probability of the token at which the
        // cumulative mass first reaches top_p; everything below it goes.
        let mut keep = sorted.len();
        if self.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, &key) in sorted.iter().enumerate() {
                cum += p[key_id(key)];
                if cum >= self.top_p as f64 {
                    let cutoff = p[key_id(key)];
                    keep = sorted
                        .iter()
                        .take_while(|&&j| p[key_id(j)] >= cutoff)
                        .count()
                        .max(i + 1);
                    break;
                }
            }
        }
        if self.top_k > 0 {
            keep = keep.min(self.top_k);
        }
        if self.min_p > 0.0 {
            let floor = p[key_id(sorted[0])] * self.min_p as f64;
            keep = keep.min(
                sorted
                    .iter()
                    .take_while(|&&j| p[key_id(j)] >= floor)
                    .count(),
            );
        }
        // A cut inside the head is the cut over all tokens (each rule
        // stopped at a token of the head); one at its end may go on.
        (keep < sorted.len() || complete).then_some(keep)
    }

    /// Checks ranges, with a message saying which value is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(QuillError::Invalid(m));
        // NaN and ±∞ first: "temperature inf must be ≥ 0" would blame the
        // sign of a value whose problem is that it is not a number at all.
        for (name, v) in [
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            ("min_p", self.min_p),
            ("presence", self.presence),
            ("frequency", self.frequency),
            ("penalty_decay", self.penalty_decay),
        ] {
            if !v.is_finite() {
                return bad(format!("{name} must be a finite number, not {v}"));
            }
        }
        if self.temperature < 0.0 {
            return bad(format!("temperature {} must be ≥ 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p {} must be in [0, 1]", self.min_p));
        }
        if !(0.0..=1.0).contains(&self.penalty_decay) {
            return bad(format!(
                "penalty_decay {} must be in [0, 1]",
                self.penalty_decay
            ));
        }
        Ok(())
    }

    /// Checks the banned ids against a model's vocabulary of `vocab`
    /// tokens: an id outside it would silently ban nothing.
    pub fn check_vocab(&self, vocab: usize) -> Result<()> {
        match self.banned.iter().find(|&&id| id as usize >= vocab) {
            Some(id) => Err(QuillError::Invalid(format!(
                "banned token id {id} is outside the model's vocabulary (size {vocab}): ban only ids below {vocab}"
            ))),
            None => Ok(()),
        }
    }

    /// Whether sampling is deterministic argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    /// Applies `key=value` assignments (as in `/set temperature=0.8 top_p=0.5`).
    /// The settings are unchanged when the value is rejected.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let mut next = self.clone();
        next.assign(key, value)?;
        next.validate()?;
        *self = next;
        Ok(())
    }

    fn assign(&mut self, key: &str, value: &str) -> Result<()> {
        let num = |v: &str| -> Result<f32> {
            v.parse::<f32>()
                .map_err(|_| QuillError::Invalid(format!("{key}: `{v}` is not a number")))
        };
        match key.replace('-', "_").as_str() {
            "temperature" | "temp" | "t" => self.temperature = num(value)?,
            "top_p" => self.top_p = num(value)?,
            "top_k" => {
                self.top_k = value
                    .parse()
                    .map_err(|_| QuillError::Invalid(format!("top_k: `{value}` is not a whole number")))?
            }
            "min_p" => self.min_p = num(value)?,
            "presence" | "presence_penalty" => self.presence = num(value)?,
            "frequency" | "frequency_penalty" => self.frequency = num(value)?,
            "penalty_decay" | "decay" => self.penalty_decay = num(value)?,
            other => {
                return Err(QuillError::Invalid(format!(
                    "unknown setting `{other}` (known: temperature, top_p, top_k, min_p, presence, frequency, penalty_decay)"
                )))
            }
        }
        Ok(())
    }
}

/// xoshiro256** (Blackman & Vigna): small, fast, and its whole state is
/// four words that a snapshot can store, unlike library RNGs whose state
/// is opaque or may change between versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// Seeds through SplitMix64, as the xoshiro authors recommend.
    pub fn seeded(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// Restores a saved state.
    pub fn from_state(s: [u64; 4]) -> Self {
        Rng { s }
    }

    /// The state words.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A sampler: settings, the RNG and the decayed occurrence counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampler {
    /// Settings in force.
    pub settings: SamplerSettings,
    rng: Rng,
    /// Decayed occurrence count per token id seen.
    counts: BTreeMap<u32, f32>,
}

impl Sampler {
    /// A sampler with a seeded RNG and no history.
    pub fn new(settings: SamplerSettings, seed: u64) -> Self {
        Sampler {
            settings,
            rng: Rng::seeded(seed),
            counts: BTreeMap::new(),
        }
    }

    /// Restores from saved parts (snapshots).
    pub fn from_parts(settings: SamplerSettings, rng: Rng, counts: BTreeMap<u32, f32>) -> Self {
        Sampler {
            settings,
            rng,
            counts,
        }
    }

    /// The RNG (for snapshots).
    pub fn rng(&self) -> &Rng {
        &self.rng
    }

    /// Replaces the RNG with a freshly seeded one.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::seeded(seed);
    }

    /// The decayed occurrence counts (for snapshots).
    pub fn counts(&self) -> &BTreeMap<u32, f32> {
        &self.counts
    }

    /// Forgets the occurrence counts (a new conversation).
    pub fn clear_counts(&mut self) {
        self.counts.clear();
    }

    /// Picks the next token from `logits` (which are not modified).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.sample_sorting(logits, CANDIDATE_FLOOR, FIRST_SORTED)
    }

    /// [`Sampler::sample`], ordering at first only the tokens of
    /// probability `floor` or more (see [`CANDIDATE_FLOOR`]) and sorting of
    /// them only the `first_sorted` most likely (see [`FIRST_SORTED`]): any
    /// values give the same token and leave the same RNG state.
    fn sample_sorting(&mut self, logits: &[f32], floor: f64, first_sorted: usize) -> u32 {
        SCRATCH.with_borrow_mut(|(z, e, p)| self.sample_in(logits, floor, first_sorted, z, e, p))
    }

    /// [`Sampler::sample_sorting`] with buffers for the penalised logits,
    /// their exponentials and the probabilities given (reused from draw to
    /// draw: a fresh 0.5 MB vector per token was ~8% of a draw in page
    /// faults).
    #[allow(clippy::too_many_arguments)]
    fn sample_in(
        &mut self,
        logits: &[f32],
        floor: f64,
        first_sorted: usize,
        z: &mut Vec<f32>,
        e: &mut Vec<f32>,
        p: &mut Vec<f64>,
    ) -> u32 {
        let s = &self.settings;
        z.clear();
        z.extend_from_slice(logits);
        // Penalties on raw logits, only for tokens already seen (PIPELINE:
        // `out[n] -= presence + occurrence[n] * frequency`).
        for (&id, &n) in &self.counts {
            if let Some(l) = z.get_mut(id as usize) {
                *l -= s.presence + n * s.frequency;
            }
        }
        for &id in &s.banned {
            if let Some(l) = z.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        if s.is_greedy() {
            return argmax(z);
        }
        softmax(z, e, p);
        let p = &p[..];
        // First only the tokens of probability `floor` or more: all more
        // likely than the rest, so their order is the head of the whole
        // order. All tokens with a probability if the cut needs more.
        let candidates = |floor: f64| -> Vec<u128> {
            (p.iter().zip(0u32..))
                .filter(|&(&pi, _)| pi > 0.0 && pi >= floor)
                .map(|(&pi, id)| order_key(pi, id))
                .collect()
        };
        let mut order = candidates(floor);
        let mut all = false;
        if order.is_empty() {
            order = candidates(0.0);
            all = true;
        }
        if order.is_empty() {
            // No token has a usable probability: every logit is NaN or
            // −∞ (damaged weights or state, or every id banned). Fall
            // back to argmax rather than index an empty list; the caller
            // still gets an id inside the vocabulary.
            return argmax(z);
        }
        // Most likely first, ties by id (`order_key`): a total order, so
        // the first k of a partial sort are the first k of the full one.
        // The cut below needs only the head of the order; sort more only
        // while the head sorted so far cannot decide it (all of it once
        // that is most of it: a flat distribution's nucleus).
        let mut k = first_sorted.clamp(1, order.len());
        let keep = loop {
            if k < order.len() {
                order.select_nth_unstable(k - 1);
            }
            order[..k].sort_unstable();
            if let Some(keep) = s.kept(&order[..k], p, all && k == order.len()) {
                break keep;
            }
            if k == order.len() {
                order = candidates(0.0);
                all = true;
            }
            k = k.saturating_mul(4);
            if k >= order.len() / 4 {
                k = order.len();
            }
        };
        let kept = &order[..keep.max(1)];
        let inv_t = 1.0 / s.temperature as f64;
        // p¹ is p: no `powf` per kept token at the default temperature
        // (a flat distribution keeps most of the vocabulary).
        let weights: Vec<f64> = if inv_t == 1.0 {
            kept.iter().map(|&key| p[key_id(key)]).collect()
        } else {
            kept.iter().map(|&key| p[key_id(key)].powf(inv_t)).collect()
        };
        let sum: f64 = weights.iter().sum();
        let mut u = self.rng.next_f64() * sum;
        for (&key, &w) in kept.iter().zip(&weights) {
            if u < w {
                return key_id(key) as u32;
            }
            u -= w;
        }
        key_id(*kept.last().expect("at least one token kept")) as u32
    }

    /// Records a generated token: decay every count, then count it
    /// (PIPELINE order).
    pub fn observe(&mut self, token: u32) {
        let decay = self.settings.penalty_decay;
        self.counts.values_mut().for_each(|n| *n *= decay);
        *self.counts.entry(token).or_insert(0.0) += 1.0;
    }
}

/// `p ← softmax(z)`, `e` a buffer: e^(l − max) by the active kernel set's
/// vectorised `exp` (f32, within 2 ulp of libm's), then summed and
/// normalised in f64 for a stable cumulative sum. libm's f64 `exp` per
/// token was ~20% of a draw; which token a draw picks can differ from an
/// all-f64 softmax only where a cut or the random number falls within that
/// rounding of a boundary. NaN logits (or none finite) make every `p` NaN.
fn softmax(z: &[f32], e: &mut Vec<f32>, p: &mut Vec<f64>) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    e.clear();
    e.extend(z.iter().map(|&l| l - max));
    (crate::kernels::active().exp)(e);
    p.clear();
    p.extend(e.iter().map(|&v| v as f64));
    let total: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= total);
}

thread_local! {
    /// [`Sampler::sample_in`]'s buffers: penalised logits, their
    /// exponentials, probabilities.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>, Vec<f64>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Sort key of token `id` of probability `p` > 0: ascending keys are
/// descending probabilities, ties by ascending id (a positive f64's bits
/// order as its value). The keys sort themselves, where ids compared
/// through `p` read it at random: escalating 4× at a time to the whole of
/// a nearly flat distribution took 12.2 ms per draw that way; with keys
/// (and all sorted once a quarter is needed) 5.3. The id is the key's low
/// 32 bits ([`key_id`]).
fn order_key(p: f64, id: u32) -> u128 {
    (u128::from(!p.to_bits()) << 32) | u128::from(id)
}

/// The token id in an [`order_key`], as an index.
fn key_id(key: u128) -> usize {
    key as u32 as usize
}

/// Index of the largest logit (first on ties; NaN never wins; if every
/// logit is NaN or −∞, the first −∞, else 0).
///
/// Over 8 independent lanes, each keeping its largest value and the first
/// chunk of 8 that held it (which the compiler vectorises), then the best
/// of the lanes and the tail: 28 µs per 65536-token vocabulary here, where
/// one running index took 91–101 µs (~0.5% of a 0.4B int8 decode step).
pub fn argmax(v: &[f32]) -> u32 {
    const LANES: usize = 8;
    // Lane j's largest value and the first chunk holding it.
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut at = [0u32; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for (ci, c) in chunks.enumerate() {
        for ((m, a), &x) in lanes.iter_mut().zip(at.iter_mut()).zip(c) {
            let more = x > *m;
            *m = if more { x } else { *m };
            *a = if more { ci as u32 } else { *a };
        }
    }
    let tail = v.len() - rest.len();
    let candidates = (lanes.iter().zip(at).enumerate())
        .map(|(j, (&m, a))| (m, a as usize * LANES + j))
        .chain(rest.iter().enumerate().map(|(i, &x)| (x, tail + i)));
    let (mut max, mut best) = (f32::NEG_INFINITY, None);
    for (x, i) in candidates {
        if x > max || (x == max && best.is_some_and(|b| i < b)) {
            (max, best) = (x, Some(i));
        }
    }
    // Every value NaN or −∞: the first −∞, else 0.
    best.or_else(|| v.iter().position(|&x| x == f32::NEG_INFINITY))
        .unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![2.0, 1.0, 0.5, 0.0, -1.0, 3.0]
    }

    /// Pseudo-random logits in [−spread, spread], rounded to `step` so that
    /// many tie.
    fn random_logits(n: usize, seed: u64, spread: f32, step: f32) -> Vec<f32> {
        let mut rng = Rng::seeded(seed);
        (0..n)
            .map(|_| ((rng.next_f64() as f32 * 2.0 - 1.0) * spread / step).round() * step)
            .collect()
    }

    #[test]
    fn a_partial_sort_draws_what_the_full_sort_draws() {
        let settings = [
            SamplerSettings::default(),
            SamplerSettings {
                top_p: 1.0,
                ..Default::default()
            },
            SamplerSettings {
                top_p: 0.999,
                temperature: 1.5,
                ..Default::default()
            },
            SamplerSettings {
                top_k: 40,
                top_p: 1.0,
                ..Default::default()
            },
            SamplerSettings {
                min_p: 0.05,
                top_p: 0.95,
                ..Default::default()
            },
        ];
        for (si, set) in settings.iter().enumerate() {
            for seed in 0..12u64 {
                // Flat logits need most of the order for top-p; steep ones
                // a few tokens; coarse steps make ties at the cut.
                let (spread, step) = [(1.0, 0.25), (12.0, 0.5), (3.0, 1e-3)][seed as usize % 3];
                let z = random_logits(3000 + seed as usize, seed, spread, step);
                let ways = [1, 2, 7, 64, FIRST_SORTED]
                    .into_iter()
                    .flat_map(|first| [(CANDIDATE_FLOOR, first), (0.3, first)]);
                for (floor, first) in ways {
                    let mut full = Sampler::new(set.clone(), seed);
                    let mut part = Sampler::new(set.clone(), seed);
                    for step in 0..4 {
                        let want = full.sample_sorting(&z, 0.0, usize::MAX);
                        let got = part.sample_sorting(&z, floor, first);
                        assert_eq!(
                            got, want,
                            "settings {si}, seed {seed}, floor {floor}, first {first}, draw {step}"
                        );
                        full.observe(want);
                        part.observe(got);
                    }
                    assert_eq!(part.rng.state(), full.rng.state());
                }
            }
        }
    }

    /// The softmax on every kernel set against one in f64 with libm's
    /// `exp`: within 1e-6 relative (f32 `exp` within 2 ulp, ~2.4e-7).
    #[test]
    fn softmax_matches_f64_on_every_kernel_set() {
        let z = random_logits(70_001, 5, 12.0, 0.37);
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let want: Vec<f64> = z.iter().map(|&l| ((l - max) as f64).exp()).collect();
        let total: f64 = want.iter().sum();
        for ks in crate::kernels::available() {
            crate::kernels::with_kernels(ks.name, || {
                let (mut e, mut p) = (Vec::new(), Vec::new());
                softmax(&z, &mut e, &mut p);
                assert_eq!(p.len(), z.len());
                for (i, (&got, &w)) in p.iter().zip(&want).enumerate() {
                    let w = w / total;
                    assert!(
                        (got - w).abs() <= 1e-6 * w,
                        "{} [{i}]: {got} vs {w}",
                        ks.name
                    );
                }
                softmax(&[1.0, f32::NAN, 2.0], &mut e, &mut p);
                assert!(p.iter().all(|v| v.is_nan()), "{p:?}");
            })
            .unwrap();
        }
    }

    #[test]
    fn order_keys_sort_as_likelier_first_then_by_id() {
        let p = [0.5, 1.0, 0.25, 1.0, 1e-300, 0.5, f64::MIN_POSITIVE, 3e-7];
        let mut keys: Vec<u128> = (0u32..).zip(p).map(|(i, pi)| order_key(pi, i)).collect();
        keys.sort_unstable();
        let ids: Vec<usize> = keys.iter().map(|&k| key_id(k)).collect();
        assert_eq!(ids, [1, 3, 0, 5, 2, 7, 4, 6]);
    }

    #[test]
    fn argmax_is_the_first_largest_and_skips_nan() {
        let naive = |v: &[f32]| {
            let mut best: Option<usize> = None;
            for (i, &x) in v.iter().enumerate() {
                if !x.is_nan() && best.is_none_or(|b| x > v[b]) {
                    best = Some(i);
                }
            }
            best.unwrap_or(0) as u32
        };
        for n in [0, 1, 7, 8, 9, 31, 1000, 65536] {
            for seed in 0..4 {
                let mut v = random_logits(n, seed, 4.0, 0.5);
                if n > 3 && seed % 2 == 1 {
                    v[0] = f32::NAN;
                    v[n / 2] = f32::NAN;
                }
                assert_eq!(argmax(&v), naive(&v), "n {n}, seed {seed}");
            }
        }
        assert_eq!(argmax(&[f32::NAN, 1.0, 3.0, 3.0]), 2);
        assert_eq!(argmax(&[f32::NAN; 9]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NAN, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn values_that_are_not_numbers_are_called_so() {
        for (set, name) in [
            (
                SamplerSettings {
                    temperature: f32::INFINITY,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplerSettings {
                    top_p: f32::NAN,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplerSettings {
                    penalty_decay: f32::NEG_INFINITY,
                    ..Default::default()
                },
                "penalty_decay",
            ),
        ] {
            let err = set.validate().unwrap_err().to_string();
            assert!(
                err.contains(&format!("{name} must be a finite number")),
                "{err}"
            );
            assert!(!err.contains('≥'), "{err}");
        }
        let negative = SamplerSettings {
            temperature: -1.0,
            ..Default::default()
        };
        assert!(negative
            .validate()
            .unwrap_err()
            .to_string()
            .contains("must be ≥ 0"));
    }

    #[test]
    fn greedy_picks_argmax_and_respects_bans() {
        let mut s = Sampler::new(
            SamplerSettings {
                temperature: 0.0,
                presence: 0.0,
                frequency: 0.0,
                ..Default::default()
            },
            1,
        );
        assert_eq!(s.sample(&logits()), 5);
        s.settings.banned = vec![5];
        assert_eq!(s.sample(&logits()), 0);
    }

    #[test]
    fn same_seed_same_draws_and_state_roundtrip() {
        let set = SamplerSettings::default();
        let mut a = Sampler::new(set.clone(), 42);
        let mut b = Sampler::new(set.clone(), 42);
        let xs: Vec<u32> = (0..50)
            .map(|_| {
                let t = a.sample(&logits());
                a.observe(t);
                t
            })
            .collect();
        let ys: Vec<u32> = (0..50)
            .map(|_| {
                let t = b.sample(&logits());
                b.observe(t);
                t
            })
            .collect();
        assert_eq!(xs, ys);
        let mut c = Sampler::from_parts(set, a.rng().clone(), a.counts().clone());
        assert_eq!(a.sample(&logits()), c.sample(&logits()));
        let other: Vec<u32> = {
            let mut d = Sampler::new(SamplerSettings::default(), 43);
            (0..50).map(|_| d.sample(&logits())).collect()
        };
        assert_ne!(xs, other, "different seeds should give different draws");
    }

    #[test]
    fn top_k_and_top_p_restrict_support() {
        let mut s = Sampler::new(
            SamplerSettings {
                top_k: 2,
                top_p: 1.0,
                presence: 0.0,
                frequency: 0.0,
                ..Default::default()
            },
            7,
        );
        for _ in 0..200 {
            let t = s.sample(&logits());
            assert!(t == 5 || t == 0, "top_k=2 sampled {t}");
        }
        // p(5) = e^3/Σ ≈ 0.58: top_p 0.5 keeps only token 5.
        s.settings.top_k = 0;
        s.settings.top_p = 0.5;
        for _ in 0..100 {
            assert_eq!(s.sample(&logits()), 5);
        }
        // min_p 0.5 keeps tokens with p ≥ 0.5·p_max: only 5 (e^2/e^3 ≈ 0.37).
        s.settings.top_p = 1.0;
        s.settings.min_p = 0.5;
        for _ in 0..100 {
            assert_eq!(s.sample(&logits()), 5);
        }
    }

    #[test]
    fn penalties_follow_pipeline() {
        let mut s = Sampler::new(
            SamplerSettings {
                temperature: 0.0,
                presence: 0.5,
                frequency: 0.5,
                penalty_decay: 0.5,
                ..Default::default()
            },
            1,
        );
        s.observe(5);
        s.observe(5);
        // counts[5] = 1·0.5 + 1 = 1.5; penalty = 0.5 + 1.5·0.5 = 1.25 → 3 − 1.25 = 1.75 < 2.
        assert!((s.counts()[&5] - 1.5).abs() < 1e-6);
        assert_eq!(s.sample(&logits()), 0);
    }

    #[test]
    fn low_temperature_sharpens() {
        let set = SamplerSettings {
            temperature: 0.05,
            top_p: 1.0,
            presence: 0.0,
            frequency: 0.0,
            ..Default::default()
        };
        let mut s = Sampler::new(set, 3);
        let hits = (0..200).filter(|_| s.sample(&logits()) == 5).count();
        assert!(
            hits >= 195,
            "T=0.05 should nearly always pick the max, got {hits}/200"
        );
    }

    #[test]
    fn settings_validation_and_set() {
        let mut s = SamplerSettings::default();
        s.set("temperature", "0.7").unwrap();
        s.set("top_p", "0.5").unwrap();
        assert_eq!((s.temperature, s.top_p), (0.7, 0.5));
        assert!(s.set("top_p", "1.5").is_err());
        assert_eq!(
            s.top_p, 0.5,
            "a rejected value leaves the setting unchanged"
        );
        assert!(s.set("bogus", "1").is_err());
        assert!(s.set("temperature", "abc").is_err());
    }
}
