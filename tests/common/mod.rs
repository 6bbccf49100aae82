//! Helpers shared by the integration tests: fixture paths and the
//! conformance checks against the official implementation's outputs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use quill::model::weights::{self, Backing, DType, TensorOut, WeightFile};
use quill::model::{Logits, Model, State};

/// Absolute tolerance per logit and state value against the reference
/// (reference/README.md: an f32 engine agrees within 1e-4).
pub const TOL: f32 = 1e-4;

/// `tests/fixtures/random` (copied from ../shared/reference/random).
pub fn random_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/random")
}

/// `../shared/reference/trained`, which may not be committed; tests that
/// need it say loudly when it is absent.
pub fn trained_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/trained");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "!!! ../shared/reference/trained is absent: the trained-fixture checks CANNOT RUN here !!!"
        );
        None
    }
}

/// One prompt's expectations.
pub struct Case {
    pub name: String,
    pub tokens: Vec<u32>,
    pub logits_serial: Vec<Vec<f32>>,
    pub logits_seq_last: Vec<f32>,
    pub greedy: Vec<u32>,
    pub greedy_margin: Vec<f32>,
}

/// Reads `NAME.expected.json`.
pub fn load_cases(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let f32s = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let u32s = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let mut cases: Vec<Case> = json
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, c)| Case {
            name: name.clone(),
            tokens: u32s(&c["tokens"]),
            logits_serial: c["logits_serial"]
                .as_array()
                .unwrap()
                .iter()
                .map(f32s)
                .collect(),
            logits_seq_last: f32s(&c["logits_seq_last"]),
            greedy: u32s(&c["greedy"]),
            greedy_margin: f32s(&c["greedy_margin"]),
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// Largest absolute difference, asserting equal lengths.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Index of the largest value (first on ties, as torch.argmax).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Reads a reference state file (`state.0 … state.K`, official order).
pub fn load_state_tensors(path: &Path) -> Vec<Vec<f32>> {
    let file = WeightFile::open(path).unwrap();
    let mut out = Vec::new();
    for i in 0.. {
        let name = format!("state.{i}");
        if !file.tensors.contains_key(&name) {
            break;
        }
        out.push(file.to_f32(&name).unwrap());
    }
    out
}

/// Rounds f32 to bf16, round-to-nearest-even (as torch `.to(bfloat16)`).
pub fn round_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// An in-memory copy of a safetensors model with every tensor rounded to
/// bf16: the weights the `-bf16` expectations were computed from.
pub fn bf16_copy(path: &Path) -> Model {
    let file = WeightFile::open(path).unwrap();
    let outs: Vec<TensorOut> = file
        .tensors
        .iter()
        .map(|(name, info)| {
            let vals = file.to_f32(name).unwrap();
            let data: Vec<u8> = vals
                .iter()
                .flat_map(|&v| round_bf16(v).to_le_bytes())
                .collect();
            TensorOut {
                name: name.clone(),
                dtype: DType::BF16,
                shape: info.shape.clone(),
                data: data.into(),
            }
        })
        .collect();
    let bytes = weights::write_safetensors(&outs, &file.metadata);
    let wf = WeightFile::from_backing(Backing::Owned(bytes), format!("{} (bf16)", path.display()))
        .unwrap();
    Model::from_file(wf).unwrap()
}

/// Checks a model against one expected.json: per-step serial logits,
/// sequence-mode last logits, the final state (when `state_prefix` is
/// given) and the greedy continuation up to the first low-margin step.
pub fn check_model(model: &Model, expected: &Path, state_prefix: Option<&Path>, label: &str) {
    for case in load_cases(expected) {
        // Serial: one token at a time.
        let mut state = model.new_state();
        let mut worst = 0.0f32;
        for (t, &tok) in case.tokens.iter().enumerate() {
            let logits = model.forward(&[tok], &mut state, Logits::Last).unwrap();
            let d = max_diff(&logits, &case.logits_serial[t]);
            worst = worst.max(d);
            assert!(
                d <= TOL,
                "{label}/{}: serial step {t}: max |Δlogit| = {d:e} > {TOL:e}",
                case.name
            );
        }
        // Sequence mode: the whole prompt at once, checked step by step too.
        let mut seq_state = model.new_state();
        let all = model
            .forward(&case.tokens, &mut seq_state, Logits::All)
            .unwrap();
        let v = case.logits_seq_last.len();
        for (t, exp) in case.logits_serial.iter().enumerate() {
            let d = max_diff(&all[t * v..(t + 1) * v], exp);
            assert!(
                d <= TOL,
                "{label}/{}: sequence step {t}: max |Δlogit| = {d:e}",
                case.name
            );
        }
        let last = &all[all.len() - v..];
        let d = max_diff(last, &case.logits_seq_last);
        assert!(
            d <= TOL,
            "{label}/{}: sequence last: max |Δlogit| = {d:e}",
            case.name
        );
        // Final state, both modes.
        if let Some(prefix) = state_prefix {
            let path = PathBuf::from(format!(
                "{}.state-{}.safetensors",
                prefix.display(),
                case.name
            ));
            let reference = load_state_tensors(&path);
            for (mode, st) in [("serial", &state), ("sequence", &seq_state)] {
                let ours = st.official_tensors();
                assert_eq!(ours.len(), reference.len(), "{label}: state tensor count");
                for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
                    let d = state_diff(a, b);
                    assert!(
                        d <= TOL,
                        "{label}/{} {mode}: state.{i} max |Δ| = {d:e}",
                        case.name
                    );
                }
            }
        }
        // Greedy continuation from the serial state.
        let mut logits = case.logits_serial.last().unwrap().clone();
        logits.copy_from_slice(last);
        for (i, (&want, &margin)) in case.greedy.iter().zip(&case.greedy_margin).enumerate() {
            if margin < 1e-3 {
                break;
            }
            let got = argmax(&logits);
            assert_eq!(
                got, want,
                "{label}/{}: greedy step {i} (margin {margin})",
                case.name
            );
            logits = model.forward(&[got], &mut state, Logits::Last).unwrap();
        }
        eprintln!("{label}/{}: ok (worst serial |Δ| {worst:e})", case.name);
    }
}

/// State difference: absolute, like the logits ([`TOL`] is per state value).
///
/// It used to divide by the magnitude for entries above 1, for v4's `pp`.
/// That is the wrong measure for `pp`: it is a log-domain exponent (the
/// state's numerator and denominator are `aa·e^pp`, `bb·e^pp`), so an error δ
/// in `pp` is a *relative* error δ in both, and must be bounded absolutely;
/// a relative bound on `pp` let |pp| ≈ 5 drift by 5e-4. The −1e30 sentinel
/// only exists in a fresh state (after any token `pp = max(w + pp, k)` is
/// finite) and compares exactly anyway. `aa`/`bb` are already scaled by
/// `e^−pp`, so every state value of the fixtures stays below ~15.
fn state_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "state tensor length");
    max_diff(a, b)
}

/// A fresh state helper for tests that only need the type.
pub fn fresh(model: &Model) -> State {
    model.new_state()
}

/// xorshift64*: deterministic test inputs without a dev-dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` values uniform in [-1, 1).
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

/// The SIMD kernel sets this CPU runs (none on a machine without AVX2 or
/// NEON, in which case comparisons against scalar are vacuous and say so).
pub fn simd_sets() -> Vec<&'static str> {
    let sets: Vec<&str> = quill::kernels::available()
        .iter()
        .map(|k| k.name)
        .filter(|&n| n != "scalar")
        .collect();
    if sets.is_empty() {
        eprintln!("!!! no SIMD kernel set on this CPU: only the scalar path is tested !!!");
    }
    sets
}

/// A fresh directory `quill-{name}-{pid}` under the system's temp dir,
/// removed with everything in it when dropped, unless the test is failing
/// (panicking): then what it wrote stays there to be looked at. (Before, a
/// run of the suite left ~30 directories behind in /tmp.)
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates it, emptying any left over from an earlier run of this pid.
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("quill-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A safetensors file's bytes up to the end of its header: a copy that
/// says what the file holds but has none of its tensors.
pub fn header_only(bytes: &[u8]) -> &[u8] {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    &bytes[..8 + n]
}
