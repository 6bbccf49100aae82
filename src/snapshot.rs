//! State snapshots: the constant-size recurrent state, the last logits and
//! the sampler's RNG and penalty counts, saved so a story or chat continues
//! later exactly as if it had never stopped.
//!
//! The file is safetensors, so any safetensors reader can open it:
//! `blocks.{i}.att.x`, `blocks.{i}.att.wkv` (v4: `.att.aa`, `.att.bb`,
//! `.att.pp`), `blocks.{i}.ffn.x` in the official state order, then
//! `logits`; everything else is string metadata. A checksum over the
//! tensors and the metadata is verified on load, and writes are atomic.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::error::{QuillError, Result};
use crate::hash::Fnv64;
use crate::model::weights::{f32_bytes, parse_safetensors, write_safetensors, DType, TensorOut};
use crate::model::{Model, ModelInfo, RwkvVersion, State};
use crate::sampler::{Rng, Sampler, SamplerSettings};
use crate::session::Session;

/// Written in every snapshot's `format` entry.
pub const FORMAT: &str = "quill-snapshot";
/// Bumped when the layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
/// Free-form metadata key (`meta.extra`) naming the mode a snapshot was
/// saved from: [`MODE_WRITE`] marks a story saved by `quill tui`'s Write
/// mode; chat sessions have none.
pub const MODE_KEY: &str = "tui.mode";
/// The [`MODE_KEY`] value of a story.
pub const MODE_WRITE: &str = "write";
/// Free-form metadata key holding a story's title: written by `quill
/// write` with each chapter's snapshot and by `quill tui`'s Write mode.
pub const TITLE_KEY: &str = "story";

/// Everything in a snapshot besides the tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotMeta {
    /// Fingerprint of the model that produced the state.
    pub fingerprint: String,
    /// Generation.
    pub version: RwkvVersion,
    /// Layers.
    pub n_layer: usize,
    /// Width.
    pub n_embd: usize,
    /// Heads.
    pub n_head: usize,
    /// Head size.
    pub head_size: usize,
    /// Vocabulary size (length of `logits`).
    pub vocab: usize,
    /// Tokens the state has consumed.
    pub tokens: u64,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// The last ~200 characters of text.
    pub text_tail: String,
    /// Free-form entries (model file name, tokenizer, …).
    pub extra: BTreeMap<String, String>,
}

/// Whether a snapshot is a story saved from `quill tui`'s Write mode
/// (see [`MODE_KEY`]).
pub fn is_story(meta: &SnapshotMeta) -> bool {
    meta.extra.get(MODE_KEY).is_some_and(|m| m == MODE_WRITE)
}

impl SnapshotMeta {
    /// The metadata of the snapshot file at `path`, read from its header
    /// alone: cheap for a folder of large files, but unverified (neither
    /// the checksum nor the tensors are read), so it decides what to offer
    /// (Tab completion), never what is restored: that is [`Snapshot::load`].
    pub fn peek(path: &Path) -> Result<SnapshotMeta> {
        let origin = path.display().to_string();
        let meta = crate::model::weights::read_safetensors_metadata(
            path,
            "a snapshot written by --state-out or /save",
        )?;
        check_format(&meta, &origin)?;
        SnapshotMeta::from_entries(&meta, &origin)
    }

    /// Whether a state with this metadata can continue on a model with
    /// `info`: same version and dims, and the same weights unless `force`
    /// (same dims, other weights: e.g. bf16 weights vs int8 weights of the
    /// same model).
    pub fn check_fits(&self, info: &ModelInfo, force: bool) -> Result<()> {
        let d = &info.dims;
        let m = self;
        if m.version != info.version {
            return Err(QuillError::StateMismatch(format!(
                "the snapshot is from an {} model, this model is {}; use the model it was made with (`quill state info` names it)",
                m.version, info.version
            )));
        }
        let ours = (d.n_layer, d.n_embd, d.n_head, d.head_size, d.vocab);
        let theirs = (m.n_layer, m.n_embd, m.n_head, m.head_size, m.vocab);
        if ours != theirs {
            return Err(QuillError::StateMismatch(format!(
                "the snapshot is for {} layers × {} (heads {}×{}, vocab {}), this model has {} layers × {} (heads {}×{}, vocab {}); use the model it was made with (`quill state info` names it)",
                m.n_layer, m.n_embd, m.n_head, m.head_size, m.vocab, d.n_layer, d.n_embd, d.n_head, d.head_size, d.vocab
            )));
        }
        if m.fingerprint != info.fingerprint && !force {
            if let Some(hint) = crate::model::dtype_hint(&m.fingerprint, &info.fingerprint) {
                return Err(QuillError::StateMismatch(format!(
                    "the snapshot does not fit the weights as loaded: {hint} (or pass --force to use it anyway)"
                )));
            }
            return Err(QuillError::StateMismatch(format!(
                "the snapshot was made with other weights (fingerprint {} vs this model's {}; model {}); pass --force to use it anyway",
                m.fingerprint,
                info.fingerprint,
                m.extra.get("model").map(String::as_str).unwrap_or("unknown")
            )));
        }
        Ok(())
    }

    /// The descriptive entries of a snapshot's metadata (after
    /// [`check_format`]).
    fn from_entries(meta: &BTreeMap<String, String>, origin: &str) -> Result<SnapshotMeta> {
        let get = |k: &str| meta_entry(meta, k, origin);
        // From a file that passed its checksum (see `from_bytes`), a value
        // out of place means another writer or a hand edit, not damage.
        let version = RwkvVersion::parse(get("rwkv_version")?)
            .ok_or_else(|| inconsistent(origin, "unknown rwkv_version".into()))?;
        Ok(SnapshotMeta {
            fingerprint: get("model_fingerprint")?.clone(),
            version,
            n_layer: num(get("n_layer")?, "n_layer", origin)?,
            n_embd: num(get("n_embd")?, "n_embd", origin)?,
            n_head: num(get("n_head")?, "n_head", origin)?,
            head_size: num(get("head_size")?, "head_size", origin)?,
            vocab: num(get("vocab")?, "vocab", origin)?,
            tokens: num(get("tokens")?, "tokens", origin)?,
            created: get("created")?.clone(),
            text_tail: get("text_tail")?.clone(),
            extra: meta
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("x.").map(|k| (k.to_string(), v.clone())))
                .collect(),
        })
    }
}

/// A required metadata entry.
fn meta_entry<'a>(
    meta: &'a BTreeMap<String, String>,
    key: &str,
    origin: &str,
) -> Result<&'a String> {
    meta.get(key).ok_or_else(|| {
        QuillError::format(
            origin,
            format!("not a Quill snapshot (metadata `{key}` missing): pass a file written by --state-out or /save"),
        )
    })
}

/// Refuses files that are not Quill snapshots of the version this build reads.
fn check_format(meta: &BTreeMap<String, String>, origin: &str) -> Result<()> {
    if meta_entry(meta, "format", origin)? != FORMAT {
        return Err(QuillError::format(
            origin,
            "not a Quill snapshot (wrong `format`): pass a file written by --state-out or /save",
        ));
    }
    let fv: u32 = num(
        meta_entry(meta, "format_version", origin)?,
        "format_version",
        origin,
    )?;
    if fv != FORMAT_VERSION {
        return Err(QuillError::format(origin, format!(
            "snapshot format version {fv} is not supported by this Quill (it reads version {FORMAT_VERSION}); use a matching Quill release"
        )));
    }
    Ok(())
}

/// A value that passed the checksum yet does not fit: another writer or a
/// hand edit, not damage.
fn inconsistent(origin: &str, reason: String) -> QuillError {
    QuillError::format(
        origin,
        format!("{reason}: the snapshot is inconsistent (written by another program or edited by hand); regenerate it"),
    )
}

/// A saved session state.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Descriptive metadata.
    pub meta: SnapshotMeta,
    /// The recurrent state.
    pub state: State,
    /// Logits after the last token (None if nothing was fed).
    pub logits: Option<Vec<f32>>,
    /// Sampler settings, RNG and decayed penalty counts.
    pub sampler: Sampler,
    /// Generated bytes of a character not yet complete (printed by the
    /// run that continues, so split runs print exactly the same text).
    pub pending_utf8: Vec<u8>,
}

impl Snapshot {
    /// Captures a session.
    pub fn capture(session: &Session) -> Snapshot {
        let info = session.model().info();
        let d = &info.dims;
        let mut extra = BTreeMap::new();
        extra.insert("tokenizer".into(), session.tokenizer().kind().to_string());
        extra.insert("model".into(), model_name(&info.origin));
        Snapshot {
            meta: SnapshotMeta {
                fingerprint: info.fingerprint.clone(),
                version: info.version,
                n_layer: d.n_layer,
                n_embd: d.n_embd,
                n_head: d.n_head,
                head_size: d.head_size,
                vocab: d.vocab,
                tokens: session.tokens_in_state(),
                created: now_rfc3339(),
                text_tail: session.text_tail().to_string(),
                extra,
            },
            state: session.state().clone(),
            logits: session.logits().map(|l| l.to_vec()),
            sampler: session.sampler().clone(),
            pending_utf8: session.pending_bytes().to_vec(),
        }
    }

    /// Puts the snapshot into a session, after [`Snapshot::check_model`].
    pub fn restore_into(&self, session: &mut Session, force: bool) -> Result<()> {
        self.check_model(session.model(), force)?;
        session.restore_parts(
            self.state.clone(),
            self.logits.clone(),
            self.sampler.clone(),
            self.meta.tokens,
            self.meta.text_tail.clone(),
            &self.pending_utf8,
        )
    }

    /// Refuses a model of another version or other dims, and one with
    /// another fingerprint unless `force` (same dims, other weights: e.g.
    /// bf16 weights vs int8 weights of the same model).
    pub fn check_model(&self, model: &Model, force: bool) -> Result<()> {
        self.meta.check_fits(model.info(), force)
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let tensors = self.tensors();
        let mut meta = self.metadata_map();
        let sum = checksum(&tensors, &meta);
        meta.insert("checksum".into(), sum);
        write_safetensors(&tensors, &meta)
    }

    fn tensors(&self) -> Vec<TensorOut<'static>> {
        let names = state_tensor_names(self.state.version, self.state.layers.len());
        let mut out: Vec<TensorOut> = self
            .state
            .official_tensors()
            .into_iter()
            .zip(names)
            .map(|(vals, name)| TensorOut {
                shape: state_tensor_shape(&name, vals.len(), &self.meta),
                name,
                dtype: DType::F32,
                data: f32_bytes(vals).into(),
            })
            .collect();
        if let Some(l) = &self.logits {
            out.push(TensorOut {
                name: "logits".into(),
                dtype: DType::F32,
                shape: vec![l.len()],
                data: f32_bytes(l).into(),
            });
        }
        out
    }

    fn metadata_map(&self) -> BTreeMap<String, String> {
        let m = &self.meta;
        let mut meta = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            meta.insert(k.to_string(), v);
        };
        put("format", FORMAT.into());
        put("format_version", FORMAT_VERSION.to_string());
        put("model_fingerprint", m.fingerprint.clone());
        put("rwkv_version", m.version.number().to_string());
        put("n_layer", m.n_layer.to_string());
        put("n_embd", m.n_embd.to_string());
        put("n_head", m.n_head.to_string());
        put("head_size", m.head_size.to_string());
        put("vocab", m.vocab.to_string());
        put("tokens", m.tokens.to_string());
        put("created", m.created.clone());
        put("text_tail", m.text_tail.clone());
        put(
            "sampler_settings",
            serde_json::to_string(&self.sampler.settings).expect("settings serialise"),
        );
        put(
            "rng_state",
            self.sampler
                .rng()
                .state()
                .iter()
                .map(|w| format!("{w:016x}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        let counts: Vec<(u32, f32)> = self
            .sampler
            .counts()
            .iter()
            .map(|(&k, &v)| (k, v))
            .collect();
        put(
            "penalty_counts",
            serde_json::to_string(&counts).expect("counts serialise"),
        );
        put(
            "pending_utf8",
            self.pending_utf8
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        );
        for (k, v) in &m.extra {
            meta.insert(format!("x.{k}"), v.clone());
        }
        meta
    }

    /// Parses and verifies snapshot bytes (`origin` names them in errors).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Snapshot> {
        let bad = |r: String| QuillError::format(origin, r);
        let (infos, meta) =
            parse_safetensors(bytes, origin, "a snapshot written by --state-out or /save")?;
        let get = |k: &str| meta_entry(&meta, k, origin);
        check_format(&meta, origin)?;
        let inconsistent = |r: String| inconsistent(origin, r);
        // Checksum first: nothing below should trust damaged bytes.
        let stored_sum = get("checksum")?.clone();
        let mut rest = meta.clone();
        rest.remove("checksum");
        let tensors_in_order: Vec<TensorOut> = {
            let mut v: Vec<(&String, &crate::model::weights::TensorInfo)> = infos.iter().collect();
            v.sort_by_key(|(_, i)| i.start);
            v.into_iter()
                .map(|(name, info)| TensorOut {
                    name: name.clone(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    data: std::borrow::Cow::Borrowed(
                        &bytes[info.start..info.start + info.byte_len()],
                    ),
                })
                .collect()
        };
        if checksum(&tensors_in_order, &rest) != stored_sum {
            return Err(bad(
                "snapshot is damaged (checksum mismatch); it cannot be used — restore it from a backup or regenerate it".into(),
            ));
        }
        let m = SnapshotMeta::from_entries(&meta, origin)?;
        let version = m.version;
        // The dims size the allocation below: they must describe no more
        // floats than the file actually holds.
        let per_layer = if version == RwkvVersion::V4 {
            m.n_embd.checked_mul(5)
        } else {
            m.n_head
                .checked_mul(m.head_size)
                .and_then(|x| x.checked_mul(m.head_size))
                .and_then(|x| x.checked_add(m.n_embd.checked_mul(2)?))
        };
        // n_layer ≥ 1 too: State::new builds one layer before copying it
        // n_layer times, so zero layers would not stop a lying n_embd.
        let fits = per_layer
            .and_then(|p| p.checked_mul(m.n_layer.max(1)))
            .and_then(|f| f.checked_mul(4))
            .is_some_and(|b| b <= bytes.len());
        if !fits || m.n_layer == 0 {
            return Err(inconsistent(
                "the dims in the metadata do not match the tensors".into(),
            ));
        }
        let mut state = State::new(version, m.n_layer, m.n_embd, m.n_head, m.head_size);
        let names = state_tensor_names(version, m.n_layer);
        for (slot, name) in state.official_tensors_mut().into_iter().zip(&names) {
            let info = infos
                .get(name)
                .ok_or_else(|| inconsistent(format!("tensor `{name}` missing")))?;
            if info.dtype != DType::F32 || info.numel() != slot.len() {
                return Err(inconsistent(format!(
                    "tensor `{name}` has {} {} values, expected {} f32",
                    info.numel(),
                    info.dtype,
                    slot.len()
                )));
            }
            let raw = &bytes[info.start..info.start + info.byte_len()];
            for (dst, b) in slot.iter_mut().zip(raw.chunks_exact(4)) {
                *dst = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        let logits = match infos.get("logits") {
            None => None,
            Some(info) if info.dtype == DType::F32 && info.numel() == m.vocab => {
                Some(crate::model::weights::bytes_to_f32(
                    DType::F32,
                    &bytes[info.start..info.start + info.byte_len()],
                ))
            }
            Some(_) => {
                return Err(inconsistent(format!(
                    "`logits` must hold {} f32 values",
                    m.vocab
                )))
            }
        };
        let settings: SamplerSettings = serde_json::from_str(get("sampler_settings")?)
            .map_err(|e| inconsistent(format!("sampler_settings: {e}")))?;
        // The same ranges the command line enforces: a hand-edited file
        // must not reach the sampler with settings it was never meant for.
        settings
            .validate()
            .map_err(|e| inconsistent(format!("sampler_settings: {e}")))?;
        // A state or logits holding NaN/Inf would only ever produce NaN
        // (and the sampler could pick nothing from them): refuse them here,
        // naming the tensor, rather than continue a broken story.
        if let Some(name) = first_non_finite(&state, logits.as_deref()) {
            return Err(bad(format!(
                "`{name}` holds NaN or infinity: the saved state is broken and cannot be continued; start again from the prompt"
            )));
        }
        let words: Vec<u64> = get("rng_state")?
            .split(',')
            .map(|w| u64::from_str_radix(w, 16))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| inconsistent("rng_state is not four hex words".into()))?;
        let words: [u64; 4] = words
            .try_into()
            .map_err(|_| inconsistent("rng_state is not four hex words".into()))?;
        let counts: Vec<(u32, f32)> = serde_json::from_str(get("penalty_counts")?)
            .map_err(|e| inconsistent(format!("penalty_counts: {e}")))?;
        let hex = get("pending_utf8")?;
        let pending_utf8 = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .ok()
            .filter(|v| v.len() * 2 == hex.len() && v.len() <= 8)
            .ok_or_else(|| inconsistent("pending_utf8 is not a short hex string".into()))?;
        Ok(Snapshot {
            pending_utf8,
            meta: m,
            state,
            logits,
            sampler: Sampler::from_parts(
                settings,
                Rng::from_state(words),
                counts.into_iter().collect(),
            ),
        })
    }

    /// Writes atomically: a temporary file in the same folder, fsync,
    /// rename over the target, fsync the folder. A crash at any point
    /// leaves either the old file or the new one, never a mix.
    ///
    /// A state holding NaN or ±Inf is refused, not written: loading
    /// refuses it ([`Snapshot::from_bytes`]), so it could never be
    /// continued, and the file it would replace may be one that can.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.check_finite()?;
        write_atomic(path, &self.to_bytes())
    }

    /// Refuses a state or logits holding NaN or ±Inf, which loading
    /// refuses too ([`Snapshot::from_bytes`]): call before writing one.
    pub fn check_finite(&self) -> Result<()> {
        match first_non_finite(&self.state, self.logits.as_deref()) {
            Some(name) => Err(QuillError::Invalid(format!(
                "`{name}` holds NaN or infinity (the model produced values out of range): the state could never be continued, so it is not saved"
            ))),
            None => Ok(()),
        }
    }

    /// Reads and verifies a snapshot file.
    pub fn load(path: &Path) -> Result<Snapshot> {
        let bytes = std::fs::read(path).map_err(|source| QuillError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Snapshot::from_bytes(&bytes, &path.display().to_string())
    }

    /// Metadata as `(key, value)` lines for `quill state info`.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self.metadata_map().into_iter().collect();
        v.push(("state_bytes".into(), self.state.byte_len().to_string()));
        v.push(("has_logits".into(), self.logits.is_some().to_string()));
        v
    }
}

/// Where two snapshots first differ, or `None` if they hold the same state,
/// logits and sampler (creation time and free-form entries are ignored).
pub fn diff(a: &Snapshot, b: &Snapshot) -> Option<String> {
    let (ma, mb) = (&a.meta, &b.meta);
    if ma.version != mb.version
        || (ma.n_layer, ma.n_embd, ma.n_head, ma.head_size)
            != (mb.n_layer, mb.n_embd, mb.n_head, mb.head_size)
    {
        return Some(format!(
            "different models: {} {}×{} vs {} {}×{}",
            ma.version, ma.n_layer, ma.n_embd, mb.version, mb.n_layer, mb.n_embd
        ));
    }
    if ma.fingerprint != mb.fingerprint {
        return Some(format!(
            "model fingerprints differ ({} vs {})",
            ma.fingerprint, mb.fingerprint
        ));
    }
    if ma.tokens != mb.tokens {
        return Some(format!(
            "tokens consumed differ ({} vs {})",
            ma.tokens, mb.tokens
        ));
    }
    let names = state_tensor_names(a.state.version, a.state.layers.len());
    for ((x, y), name) in a
        .state
        .official_tensors()
        .iter()
        .zip(b.state.official_tensors())
        .zip(&names)
    {
        if let Some(i) = first_diff(x, y) {
            return Some(format!(
                "`{name}` differs first at index {i} ({} vs {}, max |Δ| {:e})",
                x[i],
                y[i],
                max_abs_diff(x, y)
            ));
        }
    }
    match (&a.logits, &b.logits) {
        (Some(x), Some(y)) => {
            if let Some(i) = first_diff(x, y) {
                return Some(format!(
                    "`logits` differ first at index {i} ({} vs {})",
                    x[i], y[i]
                ));
            }
        }
        (None, None) => {}
        _ => return Some("one snapshot has logits, the other not".into()),
    }
    if a.sampler.rng() != b.sampler.rng() {
        return Some("sampler RNG states differ".into());
    }
    if a.sampler.counts() != b.sampler.counts() {
        return Some("penalty counts differ".into());
    }
    if a.sampler.settings != b.sampler.settings {
        return Some("sampler settings differ".into());
    }
    if a.pending_utf8 != b.pending_utf8 {
        return Some("held bytes of an unfinished character differ".into());
    }
    if ma.text_tail != mb.text_tail {
        return Some("text tails differ".into());
    }
    None
}

fn first_diff(a: &[f32], b: &[f32]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Tensor names in the official state order (reference/README.md).
pub fn state_tensor_names(version: RwkvVersion, n_layer: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..n_layer {
        names.push(format!("blocks.{i}.att.x"));
        if version == RwkvVersion::V4 {
            for s in ["aa", "bb", "pp"] {
                names.push(format!("blocks.{i}.att.{s}"));
            }
        } else {
            names.push(format!("blocks.{i}.att.wkv"));
        }
        names.push(format!("blocks.{i}.ffn.x"));
    }
    names
}

fn state_tensor_shape(name: &str, len: usize, m: &SnapshotMeta) -> Vec<usize> {
    if name.ends_with(".wkv") {
        vec![m.n_head, m.head_size, m.head_size]
    } else {
        vec![len]
    }
}

/// Checksum over tensor names, shapes and bytes and every metadata entry:
/// a flipped byte anywhere in the file changes it (or breaks the parse).
fn checksum(tensors: &[TensorOut], meta: &BTreeMap<String, String>) -> String {
    let mut h = Fnv64::default();
    for t in tensors {
        h.update_str(&t.name);
        for d in &t.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(&t.data);
    }
    for (k, v) in meta {
        h.update_str(k);
        h.update_str(v);
    }
    h.hex()
}

fn num<T: std::str::FromStr>(s: &str, key: &str, origin: &str) -> Result<T> {
    s.parse().map_err(|_| {
        QuillError::format(origin, format!("metadata `{key}` = `{s}` is not a number"))
    })
}

fn model_name(origin: &str) -> String {
    Path::new(origin)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| origin.to_string())
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync dir).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |source| QuillError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| err(std::io::Error::other("not a file path")))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        // Fault injection for the crash-during-save test: a window in which
        // the new bytes are on disk but not yet in place.
        if let Some(ms) = std::env::var("QUILL_TEST_PAUSE_BEFORE_RENAME_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        std::fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is on disk.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Now as RFC 3339 UTC (`2026-11-26T20:15:00Z`), without a date library.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The name of the first state tensor (or `logits`) holding NaN or ±Inf.
fn first_non_finite(state: &State, logits: Option<&[f32]>) -> Option<String> {
    let names = state_tensor_names(state.version, state.layers.len());
    let bad = |v: &[f32]| v.iter().any(|x| !x.is_finite());
    (state.official_tensors().into_iter().zip(names))
        .find(|(slot, _)| bad(slot))
        .map(|(_, name)| name)
        .or_else(|| logits.filter(|l| bad(l)).map(|_| "logits".to_string()))
}

/// Imports a state-tuned initial state (`blocks.{i}.att.time_state`, as
/// published for the official package, `.pth` or safetensors) as a
/// snapshot for `model`. The official loader uses
/// `time_state.transpose(1, 2)` as the wkv state and zero token shifts; so
/// does this. Only v5/v6/v7 have such states.
pub fn import_time_state(path: &Path, model: &Model) -> Result<Snapshot> {
    let file = crate::model::weights::WeightFile::open(path)?;
    let origin = path.display().to_string();
    let info = model.info();
    if info.version == RwkvVersion::V4 {
        return Err(QuillError::StateMismatch(
            "RWKV-4 models have no state-tuned initial states".into(),
        ));
    }
    let (h, n) = (info.dims.n_head, info.dims.head_size);
    let mut state = model.new_state();
    for (i, layer) in state.layers.iter_mut().enumerate() {
        let name = format!("blocks.{i}.att.time_state");
        let t = file.info(&name).map_err(|_| {
            QuillError::format(
                &origin,
                format!(
                    "`{name}` missing: not a state-tuned initial state for this {}-layer model",
                    info.dims.n_layer
                ),
            )
        })?;
        if t.shape != [h, n, n] {
            return Err(QuillError::StateMismatch(format!(
                "`{name}` has shape {:?}; this model needs [{h}, {n}, {n}]",
                t.shape
            )));
        }
        let vals = file.to_f32(&name)?;
        // As the snapshot loader refuses such states: NaN or ±Inf in the
        // state would only ever produce NaN (and then a snapshot that
        // Quill itself refuses to load).
        if vals.iter().any(|v| !v.is_finite()) {
            return Err(QuillError::format(
                &origin,
                format!("`{name}` holds NaN or infinity: not a usable initial state"),
            ));
        }
        for hi in 0..h {
            for a in 0..n {
                for b in 0..n {
                    layer.wkv[hi * n * n + b * n + a] = vals[hi * n * n + a * n + b];
                }
            }
        }
    }
    if file
        .tensors
        .contains_key(&format!("blocks.{}.att.time_state", info.dims.n_layer))
    {
        return Err(QuillError::StateMismatch(format!(
            "{origin} has more layers than this {}-layer model",
            info.dims.n_layer
        )));
    }
    let d = &info.dims;
    let mut extra = BTreeMap::new();
    extra.insert("imported_from".into(), model_name(&origin));
    Ok(Snapshot {
        meta: SnapshotMeta {
            fingerprint: info.fingerprint.clone(),
            version: info.version,
            n_layer: d.n_layer,
            n_embd: d.n_embd,
            n_head: d.n_head,
            head_size: d.head_size,
            vocab: d.vocab,
            tokens: 0,
            created: now_rfc3339(),
            text_tail: String::new(),
            extra,
        },
        state,
        logits: None,
        sampler: Sampler::new(SamplerSettings::default(), 0),
        pending_utf8: Vec::new(),
    })
}

/// Loads `--state-in`: a Quill snapshot, or a state-tuned `time_state`
/// file (recognised by its tensor names), imported for `model`.
pub fn load_for(path: &Path, model: &Model) -> Result<Snapshot> {
    let bytes = std::fs::read(path).map_err(|source| QuillError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.starts_with(b"PK") {
        return import_time_state(path, model);
    }
    if let Ok((tensors, meta)) = parse_safetensors(&bytes, "", "") {
        if !meta.contains_key("format") && tensors.contains_key("blocks.0.att.time_state") {
            return import_time_state(path, model);
        }
    }
    Snapshot::from_bytes(&bytes, &path.display().to_string())
}
