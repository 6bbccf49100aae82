//! RWKV-5.2 "Eagle" blocks (RWKV-NOTES "v5.2 and v6"; official `model.py`
//! `att_one_v5_1` (used for 5.2 single tokens) / `att_seq_v5_2` and
//! `ffn_one` / `ffn_seq`). Steps are numbered as in the notes.
//!
//! Facts checked against `model.py`:
//! - the output `r·(u⊙a + S)` uses the state *before* this token's update,
//!   then `S = a + decay⊙S`;
//! - no division by `head_size_divisor` (8 in training): 5.2 inference
//!   applies GroupNorm with eps 64e-5 = 1e-5·8² instead, which is the same
//!   thing since the norm is scale-invariant apart from eps;
//! - `time_faaaa` is used as `u` as stored (v5.0's `time_first` was
//!   exponentiated; 5.2's is not).
//! - the official sequence mode computes the chunk in a parallel
//!   (matrix) form; it equals the recurrence up to f32 rounding
//!   (reference/README.md: ≈2e-6), so one recurrent path serves both.

use super::common::{
    gated_group_out, lerp_rows, project, shift_delta, silu, wkv5_chunk, Layer, Loader, MixStyle,
    Norm, ReceptanceFfn,
};
use super::Dims;
use crate::error::Result;
use crate::kernels::{Matrix, Scratch};

/// One RWKV-5.2 layer's weights.
pub struct Block {
    ln1: Norm,
    ln2: Norm,
    /// `1 − time_mix_*` ([`MixStyle::Blend`]), for [`lerp_rows`].
    mix_k: Vec<f32>,
    mix_v: Vec<f32>,
    mix_r: Vec<f32>,
    mix_g: Vec<f32>,
    /// `exp(−exp(time_decay))` per (head, key channel), precomputed in f32.
    decay: Vec<f32>,
    /// `time_faaaa` per (head, key channel).
    u: Vec<f32>,
    receptance: Matrix,
    key: Matrix,
    value: Matrix,
    gate: Matrix,
    output: Matrix,
    ln_x: Norm,
    ffn: ReceptanceFfn,
}

/// Loads layer `i`.
pub fn load_block(l: &Loader, i: usize, d: &Dims) -> Result<Block> {
    let (c, h, n) = (d.n_embd, d.n_head, d.head_size);
    let p = |s: &str| format!("blocks.{i}.{s}");
    let att = |s: &str| format!("blocks.{i}.att.{s}");
    // 5.2's time_decay is (H, N); v5.0/5.1 stored one value per head and
    // are not supported: the shape check names the tensor.
    let decay = l
        .per_head(&att("time_decay"), h, n)?
        .into_iter()
        .map(|x| (-x.exp()).exp())
        .collect();
    Ok(Block {
        ln1: l.norm(&p("ln1"), c)?,
        ln2: l.norm(&p("ln2"), c)?,
        mix_k: l.mix(&att("time_mix_k"), c, MixStyle::Blend)?,
        mix_v: l.mix(&att("time_mix_v"), c, MixStyle::Blend)?,
        mix_r: l.mix(&att("time_mix_r"), c, MixStyle::Blend)?,
        mix_g: l.mix(&att("time_mix_g"), c, MixStyle::Blend)?,
        decay,
        u: l.per_head(&att("time_faaaa"), h, n)?,
        receptance: l.matrix(&att("receptance.weight"), c, c)?,
        key: l.matrix(&att("key.weight"), c, c)?,
        value: l.matrix(&att("value.weight"), c, c)?,
        gate: l.matrix(&att("gate.weight"), c, c)?,
        output: l.matrix(&att("output.weight"), c, c)?,
        ln_x: l.norm(&att("ln_x"), c)?,
        ffn: ReceptanceFfn::load(l, i, MixStyle::Blend, c, d.ffn)?,
    })
}

impl Layer for Block {
    type Ctx = ();

    fn norms(&self) -> (&Norm, &Norm) {
        (&self.ln1, &self.ln2)
    }

    fn channel_mix(&self, xx: &[f32], t: usize, shift: &mut [f32]) -> Scratch {
        self.ffn.forward(xx, t, shift)
    }

    fn matrices(&self) -> Vec<&Matrix> {
        let mut m = vec![
            &self.receptance,
            &self.key,
            &self.value,
            &self.gate,
            &self.output,
        ];
        m.extend(self.ffn.matrices());
        m
    }

    fn vectors(&self) -> Vec<&[f32]> {
        let mut v: Vec<&[f32]> = vec![
            &self.mix_k,
            &self.mix_v,
            &self.mix_r,
            &self.mix_g,
            &self.decay,
            &self.u,
        ];
        v.extend(self.ln_x.vectors());
        v.extend(self.ffn.vectors());
        v
    }

    fn time_mix(
        &self,
        d: &Dims,
        xx: &[f32],
        t: usize,
        shift: &mut [f32],
        wkv: &mut [f32],
        _ctx: &mut (),
    ) -> Scratch {
        let (h, n) = (d.n_head, d.head_size);
        // 1. mixes kx = xx·m_k + prev·(1 − m_k) = xx + (prev − xx)·(1 − m_k) (v, r, g alike).
        let sx = shift_delta(xx, shift);
        let kx = lerp_rows(xx, &sx, &self.mix_k);
        let vx = lerp_rows(xx, &sx, &self.mix_v);
        let rx = lerp_rows(xx, &sx, &self.mix_r);
        let gx = lerp_rows(xx, &sx, &self.mix_g);
        // 2. projections; gate g = silu(W_g gx).
        let r = project(&self.receptance, &rx, t);
        let k = project(&self.key, &kx, t);
        let v = project(&self.value, &vx, t);
        let mut g = project(&self.gate, &gx, t);
        g.iter_mut().for_each(|x| *x = silu(*x));
        // 3. wkv: y = r·(u⊙(k⊗v) + S), then S = k⊗v + decay⊙S.
        let y = wkv5_chunk(wkv, h, n, t, &r, &k, &v, &self.u, &self.decay);
        // 4. GroupNorm (H groups, eps 64e-5), ⊙ g, W_o.
        gated_group_out(&self.ln_x, y, &g, h, &self.output, t)
    }
}
