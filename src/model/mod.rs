//! Models: weight files, one module per RWKV generation, and the state.
//!
//! [`Model`] holds what every generation shares (embedding with `ln0`,
//! the output norm and head) and dispatches the blocks to the generation's
//! module. Everything runs through one sequence-mode path: a single token
//! is a chunk of length one.

pub mod common;
pub mod convert;
pub mod default;
pub mod pth;
pub mod state;
pub mod v4;
pub mod v5;
pub mod v6;
pub mod v7;
pub mod weights;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{QuillError, Result};
use crate::kernels::prefetch::{PrefetchChoice, PrefetchTuner};
use crate::kernels::PassPlan;
pub use crate::kernels::WeightDtype;
use crate::kernels::{install, matmul, Matrix, Scratch};
use common::{Loader, Norm};
pub use state::{LayerState, State};
use weights::{DType, WeightFile};

/// RWKV generations Quill runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RwkvVersion {
    /// RWKV-4 (Pile, Raven).
    V4,
    /// RWKV-5.2 (Eagle).
    V5,
    /// RWKV-6 (Finch).
    V6,
    /// RWKV-7 (Goose, G1).
    V7,
}

impl RwkvVersion {
    /// The number as written in metadata (`4`, `5`, `6`, `7`).
    pub fn number(self) -> u32 {
        match self {
            RwkvVersion::V4 => 4,
            RwkvVersion::V5 => 5,
            RwkvVersion::V6 => 6,
            RwkvVersion::V7 => 7,
        }
    }

    /// Parses `4`, `5`, `5.2`, `6`, `7` (also with a `v` prefix).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().trim_start_matches(['v', 'V']) {
            "4" => Some(RwkvVersion::V4),
            "5" | "5.2" => Some(RwkvVersion::V5),
            "6" => Some(RwkvVersion::V6),
            "7" => Some(RwkvVersion::V7),
            _ => None,
        }
    }
}

impl fmt::Display for RwkvVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RwkvVersion::V4 => "RWKV-4",
            RwkvVersion::V5 => "RWKV-5.2",
            RwkvVersion::V6 => "RWKV-6",
            RwkvVersion::V7 => "RWKV-7",
        })
    }
}

/// Tells the generation from tensor names (RWKV-NOTES "Telling versions apart").
pub fn detect_version(file: &WeightFile) -> Result<RwkvVersion> {
    let has = |n: &str| file.tensors.contains_key(n);
    if !has("emb.weight") || !has("head.weight") {
        return Err(QuillError::UnknownArchitecture(format!(
            "{} has no `emb.weight`/`head.weight`; it is not an RWKV checkpoint Quill knows",
            file.origin
        )));
    }
    if has("blocks.0.att.k_k") {
        return Ok(RwkvVersion::V7);
    }
    if has("blocks.0.att.time_maa_x") {
        return Ok(RwkvVersion::V6);
    }
    // The official loader's rule: `ln_x` makes it v5.0, a gate v5.1, and a
    // per-channel `time_decay` (H, N) with N > 1 v5.2. 5.0 and 5.1 differ
    // from 5.2 in ways no reference here covers, so they are refused by name.
    let decay = file.tensors.get("blocks.0.att.time_decay");
    let per_channel = decay.is_some_and(|t| t.shape.len() > 1 && t.shape[1] > 1);
    if has("blocks.0.att.gate.weight") {
        if !per_channel {
            let shape = decay.map(|t| t.shape.clone()).unwrap_or_default();
            return Err(QuillError::UnknownArchitecture(format!(
                "an RWKV-5.1 checkpoint (a gate, and `blocks.0.att.time_decay` of shape \
                 {shape:?}: one decay per head), which Quill cannot run"
            )));
        }
        return Ok(RwkvVersion::V5);
    }
    if has("blocks.0.att.ln_x.weight") {
        return Err(QuillError::UnknownArchitecture(
            "an RWKV-5.0 checkpoint (`ln_x` without a gate), which Quill cannot run".into(),
        ));
    }
    if has("blocks.0.att.time_mix_k") && has("blocks.0.att.time_first") {
        return Ok(RwkvVersion::V4);
    }
    let sample: Vec<&str> = file
        .tensors
        .keys()
        .filter(|k| k.starts_with("blocks.0.att."))
        .map(|s| s.as_str())
        .take(6)
        .collect();
    Err(QuillError::UnknownArchitecture(format!(
        "{}: layer-0 attention tensors {sample:?} match no RWKV generation (v4, v5.2, v6, v7)",
        file.origin
    )))
}

/// A model's dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dims {
    /// Number of layers.
    pub n_layer: usize,
    /// Width of the residual stream (C).
    pub n_embd: usize,
    /// Heads (H); 1 for v4, whose wkv is per channel.
    pub n_head: usize,
    /// Head size (N).
    pub head_size: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab: usize,
    /// Hidden width of the channel mix.
    pub ffn: usize,
}

/// What `quill info` shows about a model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Generation.
    pub version: RwkvVersion,
    /// Dimensions.
    pub dims: Dims,
    /// dtype of the large matrices in the file.
    pub dtype: DType,
    /// dtype the large matrices are held in for computing (the file's, or
    /// the one asked for with [`LoadOptions::dtype`]).
    pub weight_dtype: WeightDtype,
    /// Total parameters in the checkpoint.
    pub n_params: usize,
    /// Bytes of the recurrent state (f32).
    pub state_bytes: usize,
    /// Where the weights came from.
    pub origin: String,
    /// The `tokenizer` metadata entry, if any.
    pub tokenizer_hint: Option<String>,
    /// String metadata of the file.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// A cheap identity of the weights: hash of every tensor's name, dtype,
    /// shape and a sample of its bytes (see [`fingerprint`]).
    pub fingerprint: String,
}

enum Blocks {
    V4(Vec<v4::Block>),
    V5(Vec<v5::Block>),
    V6(Vec<v6::Block>),
    V7(Vec<v7::Block>),
}

/// A loaded model, ready to run.
pub struct Model {
    info: ModelInfo,
    /// The tensors loaded as weight matrices ([`Model::matrix_tensors`]).
    matrix_names: Vec<String>,
    file: Arc<WeightFile>,
    emb: Matrix,
    ln0: Norm,
    blocks: Blocks,
    ln_out: Norm,
    head: Matrix,
    /// Whether this model's decode steps prefetch in software, as measured
    /// on its first steps ([`crate::kernels::prefetch`]).
    prefetch: PrefetchTuner,
    /// Where its decode steps' passes begin, for the kernel threads'
    /// look-ahead between passes ([`crate::kernels::PassPlan`]).
    plan: PassPlan,
}

/// Which logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None (state update only: prefill of text whose continuation is not sampled yet).
    None,
    /// After the last token only (the head runs once).
    Last,
    /// After every token (perplexity, conformance checks).
    All,
}

/// How to load a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Convert the weight matrices (time-mix receptance/key/value/output,
    /// channel-mix key/value, the v6/v7 LoRA factors, head) to this dtype at
    /// load; `None` keeps them as stored (read in place from the mapped file,
    /// or copied into panels where the kernel set wants them: see
    /// [`common::Loader::matrix`]; v6's `time_maa_w2`, a 3-D tensor cut
    /// into 5 matrices at load, is held in f32). The embedding (one row read
    /// per token) and the vectors always stay as stored.
    pub dtype: Option<WeightDtype>,
}

/// Tokens per internal chunk in sequence mode: bounds the activation memory
/// (T × 4C floats for the channel mix) while reading each weight once per
/// chunk.
///
/// Measured on 512-token 0.4B prefills (in-process alternating pairs,
/// per-pair median of 128-token ÷ 256-token speed): bf16 0.971, 0.984 and
/// 0.959 (22 of 24 pairs faster), int8 0.977, 0.997 and 0.981; 512 tokens
/// bf16 0.968, int8 0.995. (With rayon's split of the GEMM tasks, before
/// `share_out`, 256 had been ~3% slower than 128.)
pub const CHUNK: usize = 256;

impl Model {
    /// Loads a `.safetensors` or `.pth` checkpoint from disk.
    pub fn load(path: &Path) -> Result<Model> {
        Model::from_file(WeightFile::open(path)?)
    }

    /// Loads a checkpoint from disk with options (e.g. int8 weights).
    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Model> {
        Model::from_file_with(WeightFile::open(path)?, opts)
    }

    /// Builds a model from an opened weight file.
    pub fn from_file(file: Arc<WeightFile>) -> Result<Model> {
        Model::from_file_with(file, &LoadOptions::default())
    }

    /// Builds a model from an opened weight file with options. Conversions
    /// run on the kernel thread pool.
    pub fn from_file_with(file: Arc<WeightFile>, opts: &LoadOptions) -> Result<Model> {
        install(|| Model::build(file, opts))
    }

    fn build(file: Arc<WeightFile>, opts: &LoadOptions) -> Result<Model> {
        let version = detect_version(&file)?;
        // Before the loader releases copied tensors' pages (their bytes are
        // sampled) and while every tensor can still be looked up; and
        // before the NaN check, which evicts the pages it read (read after
        // it, the samples would bring back 64 KiB of fault-around each).
        let fingerprint = fingerprint(&file);
        check_values(&file)?;
        let stored_dtype = file.tensors.get("blocks.0.att.key.weight").map(|t| t.dtype);
        // A file map can always give pages back (they reload from the
        // file); an in-memory model only when this load holds it alone.
        let release = Arc::strong_count(&file) == 1 || file.is_file_map();
        let l = Loader {
            file: &file,
            // A file of int8 matrices loads as `--dtype int8` would from
            // its source: the factors converted at load (LoRAs, v6's
            // token-shift mix) are quantised the same way.
            dtype: opts.dtype.or(file.has_int8().then_some(WeightDtype::Int8)),
            release,
            matrix_names: Default::default(),
        };
        let emb_info = file.info("emb.weight")?;
        if emb_info.shape.len() != 2 || emb_info.shape[0] == 0 || emb_info.shape[1] == 0 {
            return Err(QuillError::tensor(
                "emb.weight",
                format!("has shape {:?}, expected (vocab, C)", emb_info.shape),
            ));
        }
        let (vocab, c) = (emb_info.shape[0], emb_info.shape[1]);
        let n_layer = count_layers(&file)?;
        let (n_head, head_size) = match version {
            RwkvVersion::V7 => head_shape(&file, "blocks.0.att.r_k", c)?,
            RwkvVersion::V5 | RwkvVersion::V6 => head_shape(&file, "blocks.0.att.time_faaaa", c)?,
            RwkvVersion::V4 => (1, c),
        };
        let ffn = file
            .info("blocks.0.ffn.key.weight")?
            .shape
            .first()
            .copied()
            .unwrap_or(0);
        let dims = Dims {
            n_layer,
            n_embd: c,
            n_head,
            head_size,
            vocab,
            ffn,
        };
        let blocks = match version {
            RwkvVersion::V4 => Blocks::V4(
                (0..n_layer)
                    .map(|i| v4::load_block(&l, i, &dims))
                    .collect::<Result<_>>()?,
            ),
            RwkvVersion::V5 => Blocks::V5(
                (0..n_layer)
                    .map(|i| v5::load_block(&l, i, &dims))
                    .collect::<Result<_>>()?,
            ),
            RwkvVersion::V6 => Blocks::V6(
                (0..n_layer)
                    .map(|i| v6::load_block(&l, i, &dims))
                    .collect::<Result<_>>()?,
            ),
            RwkvVersion::V7 => Blocks::V7(
                (0..n_layer)
                    .map(|i| v7::load_block(&l, i, &dims))
                    .collect::<Result<_>>()?,
            ),
        };
        // The head is quantised with the blocks: it is ~18% of the bytes a
        // 0.4B model reads per token, and int8 keeps quality on it (see the
        // int8 tests); the embedding is only read one row per token.
        let emb = l.matrix_as_stored("emb.weight", vocab, c)?;
        let head = l.matrix("head.weight", vocab, c)?;
        let state_bytes = State::new(version, n_layer, c, n_head, head_size).byte_len();
        let info = ModelInfo {
            version,
            // Present: the blocks loaded above read it.
            dtype: stored_dtype.ok_or_else(|| {
                QuillError::tensor("blocks.0.att.key.weight", "missing from the checkpoint")
            })?,
            weight_dtype: head.weight_dtype(),
            n_params: file.tensors.values().map(|t| t.numel()).sum(),
            state_bytes,
            origin: file.origin.clone(),
            tokenizer_hint: file.metadata.get("tokenizer").cloned(),
            metadata: file.metadata.clone(),
            fingerprint: with_load_dtype(fingerprint, stored_dtype, opts.dtype),
            dims,
        };
        let (ln0, ln_out) = (l.norm("blocks.0.ln0", c)?, l.norm("ln_out", c)?);
        let matrix_names = l
            .matrix_names
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        Ok(Model {
            ln0,
            ln_out,
            emb,
            head,
            blocks,
            info,
            matrix_names,
            file,
            prefetch: PrefetchTuner::new(),
            plan: PassPlan::default(),
        })
    }

    /// Whether decode steps prefetch in software, and what this model's
    /// last trial measured ([`crate::kernels::prefetch`]).
    pub fn prefetch_choice(&self) -> PrefetchChoice {
        self.prefetch.choice()
    }

    /// Facts about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// How the head (and with it every large matrix of its dtype) is laid
    /// out in memory: panels when the kernel set active at load asked for them.
    pub fn head_layout(&self) -> crate::kernels::Layout {
        self.head.layout
    }

    /// The underlying weight file.
    pub fn weight_file(&self) -> &Arc<WeightFile> {
        &self.file
    }

    /// Names of the tensors loaded as large weight matrices (projections,
    /// channel mix, head; not the embedding, LoRA factors or vectors): the
    /// ones `quill convert --dtype int8` stores as int8.
    pub fn matrix_tensors(&self) -> &[String] {
        &self.matrix_names
    }

    /// A fresh state for this model.
    pub fn new_state(&self) -> State {
        let d = &self.info.dims;
        State::new(
            self.info.version,
            d.n_layer,
            d.n_embd,
            d.n_head,
            d.head_size,
        )
    }

    /// Checks that `state` has this model's layout.
    pub fn check_state(&self, state: &State) -> Result<()> {
        // Compared with the shape a fresh state would have, without making
        // one: every forward call checks, and allocating (and faulting in)
        // a 0.4B model's 6 MB state cost ~4 ms per decoded token.
        let d = &self.info.dims;
        let [att, wkv, ffn] =
            State::layer_shape(self.info.version, d.n_embd, d.n_head, d.head_size);
        let same = state.version == self.info.version
            && state.layers.len() == d.n_layer
            && state
                .layers
                .iter()
                .all(|l| l.att_x.len() == att && l.wkv.len() == wkv && l.ffn_x.len() == ffn);
        if same {
            Ok(())
        } else {
            Err(QuillError::StateMismatch(format!(
                "the state is a {} state with {} layers; this model is {} with {} layers of width {}",
                state.version,
                state.layers.len(),
                self.info.version,
                d.n_layer,
                d.n_embd
            )))
        }
    }

    /// Errors on ids outside the vocabulary.
    pub fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.info.dims.vocab;
        match tokens.iter().find(|&&t| t as usize >= vocab) {
            Some(&id) => Err(QuillError::TokenOutOfRange { id, vocab }),
            None => Ok(()),
        }
    }

    /// Feeds `tokens` through the model in sequence mode, advancing `state`.
    /// Returns the logits asked for: empty (`None`), vocab (`Last`) or
    /// `tokens.len() × vocab` (`All`).
    pub fn forward(&self, tokens: &[u32], state: &mut State, want: Logits) -> Result<Vec<f32>> {
        // One hand-off to the kernel pool per call: the products inside
        // then fork cheaply from a pool thread (see `kernels::install`).
        // A decode step keeps the other threads spinning between its
        // passes instead (see `kernels::with_team`).
        // Each model measures whether its steps run faster prefetching in
        // software; steps returning the last logits are alike (O(1) per
        // token), so their times compare.
        if tokens.len() == 1 {
            return self.prefetch.run(want == Logits::Last, |_| {
                crate::kernels::with_team(&self.plan, || self.forward_inner(tokens, state, want))
            });
        }
        install(|| self.forward_inner(tokens, state, want))
    }

    fn forward_inner(&self, tokens: &[u32], state: &mut State, want: Logits) -> Result<Vec<f32>> {
        self.check_tokens(tokens)?;
        self.check_state(state)?;
        if tokens.is_empty() {
            return match want {
                Logits::Last => Err(QuillError::EmptyPrompt),
                _ => Ok(Vec::new()),
            };
        }
        let c = self.info.dims.n_embd;
        let mut out = Vec::new();
        let n_chunks = tokens.len().div_ceil(CHUNK);
        for (ci, chunk) in tokens.chunks(CHUNK).enumerate() {
            let t = chunk.len();
            // ln0 writes every row.
            let mut x = Scratch::dirty(t * c);
            let mut row = vec![0.0f32; c];
            for (ti, &tok) in chunk.iter().enumerate() {
                self.emb.row_f32(tok as usize, &mut row);
                // ln0 applied per looked-up row: exact, and it keeps the
                // embedding in its stored dtype instead of an f32 copy.
                self.ln0.layer_norm_rows(&row, &mut x[ti * c..(ti + 1) * c]);
            }
            match &self.blocks {
                Blocks::V4(b) => common::forward_layers(b, &self.info.dims, &mut x, t, state),
                Blocks::V5(b) => common::forward_layers(b, &self.info.dims, &mut x, t, state),
                Blocks::V6(b) => common::forward_layers(b, &self.info.dims, &mut x, t, state),
                Blocks::V7(b) => common::forward_layers(b, &self.info.dims, &mut x, t, state),
            }
            let rows = match want {
                Logits::None => 0..0,
                Logits::Last if ci + 1 == n_chunks => t - 1..t,
                Logits::Last => 0..0,
                Logits::All => 0..t,
            };
            if !rows.is_empty() {
                let logits = self.head(&x[rows.start * c..rows.end * c], rows.len());
                // Moved, not copied, when it is all there is (a decode
                // step's 256 KiB for a 65536-token vocabulary).
                if out.is_empty() {
                    out = logits;
                } else {
                    out.extend(logits);
                }
            }
        }
        // The activation buffers this call pooled are not needed until the
        // next prompt (see `kernels::release_pool`).
        if tokens.len() > 1 {
            crate::kernels::release_pool();
        }
        Ok(out)
    }

    /// `head(LN_out(x))` for `t` rows.
    fn head(&self, x: &[f32], t: usize) -> Vec<f32> {
        let mut normed = vec![0.0; x.len()];
        self.ln_out.layer_norm_rows(x, &mut normed);
        let mut logits = vec![0.0; t * self.info.dims.vocab];
        matmul(&self.head, &normed, t, &mut logits);
        logits
    }

    /// Bytes of weights one decoded token reads: every matrix in its
    /// in-memory dtype (int8 including its scales), the f32 vectors, the
    /// head, and one row of the embedding.
    pub fn bytes_per_token(&self) -> usize {
        let norms =
            (self.ln0.w.len() + self.ln0.b.len() + self.ln_out.w.len() + self.ln_out.b.len()) * 4;
        self.layer_counts().0
            + norms
            + self.head.byte_len()
            + self.emb.byte_len() / self.info.dims.vocab
    }

    /// Multiply-adds of the layers' matrix products (large and LoRA) per
    /// token, excluding the head (which prefill runs for the last token
    /// only) and the embedding (a lookup).
    pub fn block_macs_per_token(&self) -> usize {
        self.layer_counts().1
    }

    /// (bytes read, multiply-adds) per token, summed over the layers.
    fn layer_counts(&self) -> (usize, usize) {
        fn sum<L: common::Layer>(layers: &[L]) -> (usize, usize) {
            layers.iter().fold((0, 0), |(b, m), l| {
                (b + l.bytes_per_token(), m + l.macs_per_token())
            })
        }
        match &self.blocks {
            Blocks::V4(b) => sum(b),
            Blocks::V5(b) => sum(b),
            Blocks::V6(b) => sum(b),
            Blocks::V7(b) => sum(b),
        }
    }

    /// Multiply-adds of the head per token (vocab × C).
    pub fn head_macs(&self) -> usize {
        self.head.rows * self.head.cols
    }
}

/// Hashes every tensor's name, dtype, shape and 3 × 64 bytes (start,
/// middle, end): a few KB read, yet any retraining or requantisation of the
/// weights changes it.
pub fn fingerprint(file: &WeightFile) -> String {
    let mut h = crate::hash::Fnv64::default();
    for (name, info) in &file.tensors {
        h.update_str(name);
        h.update_str(&info.dtype.to_string());
        for d in &info.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        let raw = file.raw(info);
        let n = raw.len();
        for start in [0, n / 2, n.saturating_sub(64)] {
            h.update(&raw[start.min(n)..(start + 64).min(n)]);
        }
    }
    h.hex()
}

/// The fingerprint of a model whose matrices were converted at load
/// (`--dtype` other than the file's): the file's, plus `-DTYPE`. Converted
/// weights compute other logits, so a state made with them must not pass
/// for one made with the weights as stored, nor the other way round: every
/// same-model check (snapshots, story manifests, the chat opening cache)
/// compares fingerprints.
fn with_load_dtype(file_fp: String, stored: Option<DType>, asked: Option<WeightDtype>) -> String {
    match (stored, asked) {
        (Some(s), Some(d)) if WeightDtype::from(s) != d => format!("{file_fp}-{d}"),
        _ => file_fp,
    }
}

/// What to tell a user whose saved state was made with model fingerprint
/// `saved` when the model now loaded has `current`: when the two are the
/// same file loaded with different `--dtype` conversions, which `--dtype`
/// (or none) loads it as the state was made; `None` for other weights.
pub fn dtype_hint(saved: &str, current: &str) -> Option<String> {
    let split = |fp: &str| -> (String, Option<String>) {
        match fp.split_once('-') {
            Some((file, d)) => (file.to_string(), Some(d.to_string())),
            None => (fp.to_string(), None),
        }
    };
    let ((saved_file, saved_dtype), (current_file, current_dtype)) = (split(saved), split(current));
    if saved_file != current_file || saved_dtype == current_dtype {
        return None;
    }
    Some(match saved_dtype {
        Some(d) => {
            format!("it was made with the same weights converted to {d} at load: pass --dtype {d}")
        }
        None => format!(
            "it was made with the same weights as stored, not converted to {}: leave out --dtype",
            current_dtype.unwrap_or_default()
        ),
    })
}

/// Refuses weights holding NaN or ±Inf: they would poison the state
/// silently, token after token. One parallel pass over the raw bits (the
/// exponent field all ones means NaN or Inf in every float format here),
/// in bands whose pages are evicted once read ([`WeightFile::evict`]), so
/// the pass does not leave the whole file resident. int8 weights must be
/// within ±127, as `quill convert` writes them: the AVX2 kernel's
/// `vpsignb` cannot negate −128 (see `kernels::quantize_x8`).
fn check_values(file: &WeightFile) -> Result<()> {
    use rayon::prelude::*;
    const BAND: usize = 4 << 20;
    let bad = file.tensors.par_iter().find_map_any(|(name, info)| {
        let size = info.dtype.size();
        file.raw(info)
            .chunks(BAND)
            .enumerate()
            .find_map(|(k, band)| {
                let pos = match info.dtype {
                    DType::F32 => band.chunks_exact(4).position(|b| {
                        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 == 0x7f80_0000
                    }),
                    DType::F16 => band
                        .chunks_exact(2)
                        .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00),
                    DType::BF16 => band
                        .chunks_exact(2)
                        .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80),
                    // Integers are finite (their scales are f32, checked);
                    // int8 is checked for −128 instead. `contains` first:
                    // it is memchr, 2–3× as fast as `position` over a 0.4B
                    // model's 450 MB of int8 (85 against 175–263 ms, one
                    // thread), and a damaged file is the rare case.
                    DType::I8 => band
                        .contains(&0x80)
                        .then(|| band.iter().position(|&b| b == 0x80))
                        .flatten(),
                };
                file.evict(name, k * BAND, band.len());
                pos.map(|i| k * BAND / size + i)
            })
            .map(|i| (name.clone(), i))
    });
    match bad {
        Some((name, i)) if file.tensors[&name].dtype == DType::I8 => Err(QuillError::tensor(
            name,
            format!("holds −128 (element {i}), outside the ±127 of quill's int8: the file is damaged or not written by `quill convert`; re-convert it"),
        )),
        Some((name, i)) => Err(QuillError::tensor(
            name,
            format!("holds NaN or infinity (element {i}): the checkpoint is damaged; re-download or re-convert it"),
        )),
        None => Ok(()),
    }
}

fn count_layers(file: &WeightFile) -> Result<usize> {
    let mut n = 0;
    for name in file.tensors.keys() {
        if let Some(rest) = name.strip_prefix("blocks.") {
            if let Some(i) = rest.split('.').next().and_then(|s| s.parse::<usize>().ok()) {
                // A hostile name can say `blocks.18446744073709551615`:
                // saturate rather than overflow; the layers are loaded in
                // order, so the first missing one is reported by name.
                n = n.max(i.saturating_add(1));
            }
        }
    }
    if n == 0 {
        return Err(QuillError::UnknownArchitecture(format!(
            "{} has no `blocks.N` layers",
            file.origin
        )));
    }
    Ok(n)
}

/// (H, N) from a per-head tensor such as `att.r_k` (v7) or `time_faaaa`
/// (v5/v6); never assumed, test models use other head sizes.
fn head_shape(file: &WeightFile, name: &str, c: usize) -> Result<(usize, usize)> {
    let shape = &file.info(name)?.shape;
    match shape[..] {
        // checked: the sizes come from the file and may be anything.
        [h, n] | [h, n, 1] if h.checked_mul(n) == Some(c) => Ok((h, n)),
        _ => Err(QuillError::tensor(
            name,
            format!("has shape {shape:?}; expected (heads, head_size) with heads·head_size = {c}"),
        )),
    }
}
