//! Building blocks shared by every RWKV generation: checked tensor loading,
//! norms, token shift, LoRA products and activations.

use std::sync::Arc;

use super::weights::WeightFile;
use crate::error::{QuillError, Result};
use crate::kernels::{self, for_rows, lanes, matmul, wkv5_step, Matrix, Scratch, WeightDtype};

/// LayerNorm epsilon of every RWKV generation (torch default).
pub const LN_EPS: f32 = 1e-5;
/// GroupNorm epsilon of the wkv output `ln_x` in v5.2/v6/v7: 64e-5, i.e.
/// 1e-5 scaled by the head size 64 (official `model.py`), NOT 1e-5.
pub const GN_EPS: f32 = 64e-5;

/// Loads tensors with their shapes checked, so a wrong file fails at load
/// with the tensor named rather than later with a panic.
pub struct Loader<'a> {
    /// The checkpoint.
    pub file: &'a Arc<WeightFile>,
    /// dtype the large matrices ([`Loader::matrix`]) are converted to at
    /// load; `None` keeps them as stored.
    pub dtype: Option<WeightDtype>,
    /// Whether tensors copied out may have their pages released
    /// ([`WeightFile::release`]). Off for an in-memory model someone else
    /// still holds: releasing its bytes would zero them for that holder.
    pub release: bool,
    /// Tensors loaded through [`Loader::matrix`], in order (what `quill
    /// convert --dtype int8` stores as int8).
    pub matrix_names: std::sync::Mutex<Vec<String>>,
}

impl<'a> Loader<'a> {
    /// A loader keeping every matrix as stored.
    pub fn new(file: &'a Arc<WeightFile>) -> Self {
        Loader {
            file,
            dtype: None,
            release: false,
            matrix_names: Default::default(),
        }
    }

    /// Errors unless `name` has exactly `shape`.
    pub fn expect_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        let info = self.file.info(name)?;
        if info.shape != shape {
            return Err(QuillError::tensor(
                name,
                format!("has shape {:?}, expected {:?}", info.shape, shape),
            ));
        }
        Ok(())
    }

    /// A vector of `len` values stored with any shape of `len` elements
    /// whose other dimensions are 1 (the official files store mixes as
    /// (1,1,C) and biases as (C)), converted to f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let info = self.file.info(name)?;
        let non_unit: Vec<usize> = info.shape.iter().copied().filter(|&d| d != 1).collect();
        if info.numel() != len || non_unit.len() > 1 {
            return Err(QuillError::tensor(
                name,
                format!("has shape {:?}, expected {len} values", info.shape),
            ));
        }
        self.file.to_f32(name)
    }

    /// A tensor of exactly `shape`, converted to f32 (for small parameters).
    pub fn array(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.expect_shape(name, shape)?;
        self.file.to_f32(name)
    }

    /// A large (rows, cols) weight matrix (projections, channel mix, head):
    /// read in place, or converted to the loader's dtype if one was asked
    /// for (`--dtype`, e.g. int8).
    ///
    /// Where the active kernel set reads [`kernels::Layout::Panels`] faster
    /// (AVX2), every such matrix is copied into panels on huge pages — bf16
    /// as stored too — and the file's pages of the tensor are released, so
    /// resident memory holds the weights once; otherwise a matrix in the
    /// stored dtype is read in place, row-major. Why copy bf16: with huge
    /// pages granted to every copy and wide matrices in slabs, 0.4B decode
    /// ran +7, +12, 0, −1 and +6% against in place (five alternating bench
    /// pairs), prefill unchanged, for ~0.1 s more load time from a warm page
    /// cache (0.27 → 0.35 s).
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let m = self.matrix_as_stored(name, rows, cols)?;
        self.matrix_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_string());
        // A mapped source hands the file's pages back band by band as they
        // are read — converted (--dtype) or copied into panels — so memory
        // never holds a whole tensor twice (the head is 128 MiB of a 0.4B
        // model: 14% of it). Converting to int8 from a 0.4B bf16 file,
        // peak resident 632 → 501 MB once conversion released too.
        let release = m.is_mapped() && self.release;
        let src_row = m.cols * m.dtype_size();
        let release_rows = |r: std::ops::Range<usize>| {
            if release {
                let (start, len) = (r.start * src_row, r.len() * src_row);
                self.file.release_bytes(name, start, len);
            }
        };
        let m = self.converted_then(m, release_rows);
        let panels = kernels::active().panels && m.can_use_panels();
        if m.is_mapped() && !panels {
            return Ok(m);
        }
        // Still mapped means not converted: the panel copy is the read.
        let copying_source = m.is_mapped();
        let m = if panels {
            m.into_panels_then(|r| {
                if copying_source {
                    release_rows(r)
                }
            })
        } else {
            m
        };
        // After the copy: a mapped tensor is read by it.
        if self.release {
            self.file.release(name);
        }
        Ok(m)
    }

    /// `m` in the `--dtype` this load asked for (unchanged without one).
    fn converted(&self, m: Matrix) -> Matrix {
        self.converted_then(m, |_| {})
    }

    /// [`Loader::converted`] with [`Matrix::convert_then`]'s callback.
    fn converted_then(&self, m: Matrix, done: impl Fn(std::ops::Range<usize>) + Sync) -> Matrix {
        match self.dtype {
            Some(d) => m.convert_then(d, done),
            None => m,
        }
    }

    /// A (rows, cols) matrix always kept as stored, read in place: for the
    /// embedding, of which one row per token is read, so converting it would
    /// cost memory without saving bandwidth.
    pub fn matrix_as_stored(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        self.expect_shape(name, &[rows, cols])?;
        Matrix::from_file(self.file, name, rows, cols)
    }

    /// A LayerNorm's weight and bias (`{prefix}.weight`, `{prefix}.bias`).
    pub fn norm(&self, prefix: &str, len: usize) -> Result<Norm> {
        Ok(Norm {
            w: self.vector(&format!("{prefix}.weight"), len)?,
            b: self.vector(&format!("{prefix}.bias"), len)?,
        })
    }

    /// A token-shift mix vector of `len` values in the form [`lerp_rows`]
    /// takes: as stored for [`MixStyle::Lerp`], `1 − m` for [`MixStyle::Blend`].
    pub fn mix(&self, name: &str, len: usize, style: MixStyle) -> Result<Vec<f32>> {
        let m = self.vector(name, len)?;
        Ok(match style {
            MixStyle::Lerp => m,
            MixStyle::Blend => m.into_iter().map(|v| 1.0 - v).collect(),
        })
    }

    /// A per-head tensor of (heads, head_size) values, stored as (H, N) or
    /// (H, N, 1) (v5.2/v6 `time_faaaa`, v5.2 `time_decay`), flattened to
    /// H·N values in `[head][channel]` order.
    pub fn per_head(&self, name: &str, h: usize, n: usize) -> Result<Vec<f32>> {
        let info = self.file.info(name)?;
        match info.shape[..] {
            [a, b] | [a, b, 1] if a == h && b == n => self.file.to_f32(name),
            _ => Err(QuillError::tensor(
                name,
                format!(
                    "has shape {:?}, expected ({h}, {n}) (heads, head_size)",
                    info.shape
                ),
            )),
        }
    }

    /// A LoRA pair stored as `x @ down @ up` with `down` (C, D) and `up` (D, C),
    /// transposed once into (out, in) matrices, converted by `--dtype` like
    /// the large matrices.
    ///
    /// Why convert them too: in an int8 0.4B model they were, as stored
    /// (bf16), 28 of the 414 MB read per token (now 399) and ~6% of decode
    /// samples.
    /// Quality, int8 against f32 weights, with the LoRAs kept as stored →
    /// with them in int8: perplexity on the README (sequence mode) +0.115%
    /// → +0.114% on the built-in model, +0.034% → +0.034% on the trained
    /// v7 fixture; tests/int8.rs's max |Δlogit| 0.01197 → 0.01196 and its
    /// perplexities (+0.065%) unchanged. The LoRA products' rounding is
    /// small beside the large matrices'.
    pub fn lora(&self, down: &str, up: &str, c: usize) -> Result<Lora> {
        let d = self.file.info(down)?.shape.get(1).copied().unwrap_or(0);
        if d == 0 {
            return Err(QuillError::tensor(
                down,
                "expected a 2-D (C, D) LoRA matrix",
            ));
        }
        // In panels like the large matrices where the shape allows (both
        // are copies): row-major, the bf16 LoRAs of an int8 0.4B model took
        // 7.3% of decode time for ~7% of its bytes (profile). An int8 up
        // factor narrower than a block (D = 32 or 64) stays row-major.
        Ok(Lora {
            down: self.owned(Matrix::from_file_transposed_stored(self.file, down, c, d)?),
            up: self.owned(Matrix::from_file_transposed_stored(self.file, up, d, c)?),
        })
    }

    /// A matrix made at load (transposed or cut out of a larger tensor),
    /// treated as [`Loader::lora`] treats its factors: in the `--dtype`
    /// asked for, in panels where the active kernel set reads those faster.
    pub fn owned(&self, m: Matrix) -> Matrix {
        place(self.converted(m))
    }
}

/// An owned copy of a matrix, laid out in panels where the active kernel
/// set reads those faster ([`kernels::KernelSet::panels`]).
fn place(m: Matrix) -> Matrix {
    if kernels::active().panels {
        m.into_panels()
    } else {
        m
    }
}

/// How a generation's token-shift mix `m` combines the current row `x` and
/// the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixStyle {
    /// v4 / v5.2 `time_mix_*`: `x·m + prev·(1 − m)` (official `model.py`
    /// `kx = xx * k_mix + sx * (1 - k_mix)`); note `m` weighs the *current* token.
    Blend,
    /// v6 `time_maa_*` and v7 `x_*`: `x + (prev − x)·m`.
    Lerp,
}

impl MixStyle {
    /// The tensor-name stem of the ffn mixes: `time_mix` or `time_maa`.
    fn ffn_stem(self) -> &'static str {
        match self {
            MixStyle::Blend => "time_mix",
            MixStyle::Lerp => "time_maa",
        }
    }
}

/// LayerNorm / GroupNorm affine parameters.
pub struct Norm {
    /// Scale.
    pub w: Vec<f32>,
    /// Shift.
    pub b: Vec<f32>,
}

impl Norm {
    /// Its scale and shift.
    pub fn vectors(&self) -> [&[f32]; 2] {
        [&self.w, &self.b]
    }

    /// LayerNorm of each `c`-wide row of `x` into `out` (eps 1e-5).
    pub fn layer_norm_rows(&self, x: &[f32], out: &mut [f32]) {
        let c = self.w.len();
        for_rows(out, c, |t, or| {
            normalize(&x[t * c..(t + 1) * c], or, &self.w, &self.b, LN_EPS)
        });
    }

    /// GroupNorm with `groups` equal groups on each row of `x`, in place
    /// (eps 64e-5, see [`GN_EPS`]).
    pub fn group_norm_rows(&self, x: &mut [f32], groups: usize) {
        let c = self.w.len();
        let g = c / groups;
        for_rows(x, c, |_, row| {
            for (h, grp) in row.chunks_exact_mut(g).enumerate() {
                normalize_in_place(
                    grp,
                    &self.w[h * g..(h + 1) * g],
                    &self.b[h * g..(h + 1) * g],
                    GN_EPS,
                );
            }
        });
    }
}

/// Mean and 1/sqrt(biased variance + eps), as torch (sums in lanes, see
/// [`lanes`]).
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = lanes::sum(x) / n;
    let var = lanes::sum_sq_dev(x, mean) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// (x − mean) / sqrt(var + eps) · w + b, with the biased variance as torch.
fn normalize(x: &[f32], out: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let (mean, inv) = moments(x, eps);
    for (((o, &xi), &wi), &bi) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = (xi - mean) * inv * wi + bi;
    }
}

/// [`normalize`] of `x` into itself.
fn normalize_in_place(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let (mean, inv) = moments(x, eps);
    for ((xi, &wi), &bi) in x.iter_mut().zip(w).zip(b) {
        *xi = (*xi - mean) * inv * wi + bi;
    }
}

/// Token shift over a chunk: `sx[t] = prev(t) − xx[t]` where `prev(0)` is the
/// state's last input and `prev(t) = xx[t−1]`; the state then keeps the
/// chunk's last row.
///
/// Every generation uses this form: v6/v7 write their mixes as
/// `x + (prev − x)·m` directly; v4/v5.2 write `x·m + prev·(1 − m)`, which
/// is `x + (prev − x)·(1 − m)`, so they load `1 − m` ([`MixStyle::Blend`])
/// and [`lerp_rows`] serves them too (the forms differ only in f32
/// rounding, ~1e-7 relative).
pub fn shift_delta(xx: &[f32], state_prev: &mut [f32]) -> Scratch {
    let c = state_prev.len();
    let mut sx = Scratch::dirty(xx.len());
    {
        let prev0: &[f32] = state_prev;
        for_rows(&mut sx, c, |t, row| {
            let prev = if t == 0 {
                prev0
            } else {
                &xx[(t - 1) * c..t * c]
            };
            let cur = &xx[t * c..(t + 1) * c];
            for ((d, &p), &x) in row.iter_mut().zip(prev).zip(cur) {
                *d = p - x;
            }
        });
    }
    state_prev.copy_from_slice(&xx[xx.len() - c..]);
    sx
}

/// `xx + sx ⊙ mix` per row: the lerp toward the previous token of every
/// generation (see [`shift_delta`]). `mix` is either one row of C values,
/// shared by all rows, or one row per row of `xx` (v6's data-dependent mixes).
pub fn lerp_rows(xx: &[f32], sx: &[f32], mix: &[f32]) -> Scratch {
    let c = mix.len();
    let mut out = Scratch::dirty(xx.len());
    for_rows(&mut out, c, |t, row| {
        let (x, s) = (&xx[t * c..(t + 1) * c], &sx[t * c..(t + 1) * c]);
        for (((o, &xi), &si), &mi) in row.iter_mut().zip(x).zip(s).zip(mix) {
            *o = xi + si * mi;
        }
    });
    out
}

/// A low-rank pair: `act(x·down)·up`, stored transposed as (out, in) matrices.
pub struct Lora {
    /// C → D.
    pub down: Matrix,
    /// D → C.
    pub up: Matrix,
}

impl Lora {
    /// Bytes of weights one product reads.
    pub fn byte_len(&self) -> usize {
        self.down.byte_len() + self.up.byte_len()
    }

    /// Multiply-adds per token.
    pub fn params(&self) -> usize {
        self.down.rows * self.down.cols + self.up.rows * self.up.cols
    }

    /// A buffer for the down-projection of `t` rows (t × D), to be written
    /// in full by the product.
    pub fn mid(&self, t: usize) -> Scratch {
        Scratch::dirty(t * self.down.rows)
    }

    /// `up(act(down(x)))` for `t` rows.
    pub fn apply(&self, x: &[f32], t: usize, act: impl Fn(f32) -> f32 + Send + Sync) -> Scratch {
        let mut mid = project(&self.down, x, t);
        for_rows(&mut mid, self.down.rows, |_, r| {
            r.iter_mut().for_each(|v| *v = act(*v))
        });
        project(&self.up, &mid, t)
    }
}

/// The channel mix of v4, v5.2 and v6, with a receptance gate
/// (RWKV-NOTES "v4" / "v5.2 and v6"; official `model.py` `ffn_one`,
/// `ffn_seq`, `ffn_one_v6`, `ffn_seq_v6`):
/// `k = x + (prev − x)⊙mix_k`, `r = x + (prev − x)⊙mix_r`,
/// `out = σ(W_r r) ⊙ W_v(relu(W_k k)²)`. v4/v5.2 store the mixes as
/// `ffn.time_mix_k/r` in [`MixStyle::Blend`] form, v6 as `ffn.time_maa_k/r`
/// in [`MixStyle::Lerp`] form; see [`shift_delta`].
pub struct ReceptanceFfn {
    mix_k: Vec<f32>,
    mix_r: Vec<f32>,
    key: Matrix,
    value: Matrix,
    receptance: Matrix,
}

impl ReceptanceFfn {
    /// Loads layer `layer`'s channel mix, its mixes named after `style`
    /// (`ffn.time_mix_k/r` or `ffn.time_maa_k/r`); `c` is the model width
    /// and `hidden` the width of `ffn.key`.
    pub fn load(
        l: &Loader,
        layer: usize,
        style: MixStyle,
        c: usize,
        hidden: usize,
    ) -> Result<Self> {
        let f = |s: &str| format!("blocks.{layer}.ffn.{s}");
        let stem = style.ffn_stem();
        Ok(ReceptanceFfn {
            mix_k: l.mix(&f(&format!("{stem}_k")), c, style)?,
            mix_r: l.mix(&f(&format!("{stem}_r")), c, style)?,
            key: l.matrix(&f("key.weight"), hidden, c)?,
            value: l.matrix(&f("value.weight"), c, hidden)?,
            receptance: l.matrix(&f("receptance.weight"), c, c)?,
        })
    }

    /// Its matrices (key, value, receptance).
    pub fn matrices(&self) -> [&Matrix; 3] {
        [&self.key, &self.value, &self.receptance]
    }

    /// Its token-shift mixes.
    pub fn vectors(&self) -> [&[f32]; 2] {
        [&self.mix_k, &self.mix_r]
    }

    /// The channel mix of `t` rows of LN2 output `xx`; `shift` is the
    /// state's ffn token shift, advanced to the chunk's last row.
    pub fn forward(&self, xx: &[f32], t: usize, shift: &mut [f32]) -> Scratch {
        let sx = shift_delta(xx, shift);
        let kx = lerp_rows(xx, &sx, &self.mix_k);
        let rx = lerp_rows(xx, &sx, &self.mix_r);
        let mut hidden = project(&self.key, &kx, t);
        hidden.iter_mut().for_each(|v| {
            let r = v.max(0.0);
            *v = r * r
        });
        let mut out = project(&self.value, &hidden, t);
        let r = project(&self.receptance, &rx, t);
        for (o, ri) in out.iter_mut().zip(&r) {
            *o *= sigmoid(*ri);
        }
        out
    }
}

/// The v5.2/v6 wkv over a chunk of `t` tokens, head by head
/// ([`wkv5_step`]); `state` is H×N×N indexed `[head][key][value]`.
/// `decay` holds either C values (v5.2: constant) or t×C values
/// (v6: one row per token); `u` is `time_faaaa` (C values).
/// Returns y (t×C). Sequential in t, as the official `att_seq_v6_0` loop.
#[allow(clippy::too_many_arguments)]
pub fn wkv5_chunk(
    state: &mut [f32],
    h: usize,
    n: usize,
    t: usize,
    r: &[f32],
    k: &[f32],
    v: &[f32],
    u: &[f32],
    decay: &[f32],
) -> Scratch {
    let c = h * n;
    // Row stride of `decay`: 0 when one row serves every token.
    let stride = if decay.len() == c {
        0
    } else {
        assert_eq!(
            decay.len(),
            t * c,
            "wkv5_chunk: decay must be C or t×C values"
        );
        c
    };
    // Each step writes its head's n outputs in full.
    let mut y = Scratch::dirty(t * c);
    for ti in 0..t {
        let d0 = ti * stride;
        for hi in 0..h {
            let o = ti * c + hi * n;
            let sl = o..o + n;
            let hs = hi * n..(hi + 1) * n;
            wkv5_step(
                &mut state[hi * n * n..(hi + 1) * n * n],
                n,
                &r[sl.clone()],
                &decay[d0 + hi * n..d0 + (hi + 1) * n],
                &u[hs],
                &k[sl.clone()],
                &v[sl.clone()],
                &mut y[sl],
            );
        }
    }
    y
}

/// The v5.2/v6 attention output: `W_o(GroupNorm(y; H groups, eps 64e-5) ⊙ g)`
/// (official `model.py`: `F.group_norm(..., eps = 64e-5)`, then `* g`,
/// then the output matrix).
pub fn gated_group_out(
    ln_x: &Norm,
    mut y: Scratch,
    g: &[f32],
    h: usize,
    output: &Matrix,
    t: usize,
) -> Scratch {
    ln_x.group_norm_rows(&mut y, h);
    for (yi, gi) in y.iter_mut().zip(g) {
        *yi *= gi;
    }
    project(output, &y, t)
}

/// SiLU, `x·σ(x)` (the v5.2/v6 gate).
#[inline]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// Logistic sigmoid.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `y = W·x` for `t` rows into a new buffer (written in full by the product).
pub fn project(w: &Matrix, x: &[f32], t: usize) -> Scratch {
    let mut y = Scratch::dirty(t * w.rows);
    matmul(w, x, t, &mut y);
    y
}

/// Adds `b` into `a` element-wise (residual connections).
pub fn add_into(a: &mut [f32], b: &[f32]) {
    const SPAN: usize = 4096;
    for_rows(a, SPAN, |i, r| {
        for (x, y) in r.iter_mut().zip(&b[i * SPAN..]) {
            *x += y;
        }
    });
}

/// One layer as the shared layer loop ([`forward_layers`]) sees it.
pub trait Layer {
    /// What flows from layer to layer within a chunk: v7's `v_first` (the
    /// value residual); nothing for v4–v6.
    type Ctx: Default;
    /// LN1 (before the time mix) and LN2 (before the channel mix).
    fn norms(&self) -> (&Norm, &Norm);
    /// The time mix over `t` rows of LN1 output, advancing the token shift
    /// and the wkv state.
    #[allow(clippy::too_many_arguments)]
    fn time_mix(
        &self,
        d: &super::Dims,
        xx: &[f32],
        t: usize,
        shift: &mut [f32],
        wkv: &mut [f32],
        ctx: &mut Self::Ctx,
    ) -> Scratch;
    /// The channel mix over `t` rows of LN2 output, advancing its shift.
    fn channel_mix(&self, xx: &[f32], t: usize, shift: &mut [f32]) -> Scratch;
    /// The layer's weight matrices, large and LoRA, as held in memory.
    fn matrices(&self) -> Vec<&Matrix>;
    /// The layer's other f32 vectors (mixes, decays, bonuses, its own
    /// norms), besides LN1's and LN2's: every token reads them too.
    fn vectors(&self) -> Vec<&[f32]>;
    /// Bytes of weights one token reads in this layer: every matrix in its
    /// in-memory dtype (so after `--dtype`; int8 with its scales) plus the
    /// f32 vectors, LN1's and LN2's included.
    fn bytes_per_token(&self) -> usize {
        let matrices: usize = self.matrices().iter().map(|m| m.byte_len()).sum();
        let (ln1, ln2) = self.norms();
        let vectors: usize = (self.vectors().into_iter())
            .chain(ln1.vectors())
            .chain(ln2.vectors())
            .map(|v| v.len())
            .sum();
        matrices + vectors * std::mem::size_of::<f32>()
    }
    /// Multiply-adds per token in this layer's matrix products (large and
    /// LoRA): the FLOP count of a token is twice this.
    fn macs_per_token(&self) -> usize {
        self.matrices().iter().map(|m| m.rows * m.cols).sum()
    }
}

/// Runs every layer over a chunk of `t` tokens: `x += att(LN1(x))`, then
/// `x += ffn(LN2(x))` (RWKV-NOTES "Every version"); `x` (t×C) is the
/// residual stream, updated in place, and `state` advances by `t` tokens.
pub fn forward_layers<L: Layer>(
    layers: &[L],
    d: &super::Dims,
    x: &mut [f32],
    t: usize,
    state: &mut super::State,
) {
    let mut ctx = L::Ctx::default();
    // LN1 and LN2 write every row.
    let mut xx = Scratch::dirty(x.len());
    for (layer, ls) in layers.iter().zip(state.layers.iter_mut()) {
        let (ln1, ln2) = layer.norms();
        ln1.layer_norm_rows(x, &mut xx);
        let out = layer.time_mix(d, &xx, t, &mut ls.att_x, &mut ls.wkv, &mut ctx);
        add_into(x, &out);
        ln2.layer_norm_rows(x, &mut xx);
        let out = layer.channel_mix(&xx, t, &mut ls.ffn_x);
        add_into(x, &out);
    }
}
