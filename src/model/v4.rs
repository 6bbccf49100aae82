//! RWKV-4 blocks (RWKV-NOTES "v4"; official `model.py` `att_one` /
//! `att_seq` and `ffn_one` / `ffn_seq`). Steps are numbered as in the notes.
//!
//! The official sequence mode (`att_seq`, CPU path) runs the same per-token
//! recurrence in a loop over the chunk, so serial and sequence mode share
//! this one path exactly.

use super::common::{
    lerp_rows, project, shift_delta, sigmoid, Layer, Loader, MixStyle, Norm, ReceptanceFfn,
};
use super::Dims;
use crate::error::Result;
use crate::kernels::{wkv4_step, Matrix, Scratch};

/// One RWKV-4 layer's weights.
pub struct Block {
    ln1: Norm,
    ln2: Norm,
    /// `1 − time_mix_*` ([`MixStyle::Blend`]), for [`lerp_rows`].
    mix_k: Vec<f32>,
    mix_v: Vec<f32>,
    mix_r: Vec<f32>,
    /// `−exp(time_decay)`, precomputed in f32 at load (official `model.py`).
    w: Vec<f32>,
    /// `time_first`, the bonus of the current token.
    u: Vec<f32>,
    key: Matrix,
    value: Matrix,
    receptance: Matrix,
    output: Matrix,
    ffn: ReceptanceFfn,
}

/// Loads layer `i`.
pub fn load_block(l: &Loader, i: usize, d: &Dims) -> Result<Block> {
    let c = d.n_embd;
    let p = |s: &str| format!("blocks.{i}.{s}");
    let att = |s: &str| format!("blocks.{i}.att.{s}");
    let w = l
        .vector(&att("time_decay"), c)?
        .into_iter()
        .map(|x| -x.exp())
        .collect();
    Ok(Block {
        ln1: l.norm(&p("ln1"), c)?,
        ln2: l.norm(&p("ln2"), c)?,
        mix_k: l.mix(&att("time_mix_k"), c, MixStyle::Blend)?,
        mix_v: l.mix(&att("time_mix_v"), c, MixStyle::Blend)?,
        mix_r: l.mix(&att("time_mix_r"), c, MixStyle::Blend)?,
        w,
        u: l.vector(&att("time_first"), c)?,
        key: l.matrix(&att("key.weight"), c, c)?,
        value: l.matrix(&att("value.weight"), c, c)?,
        receptance: l.matrix(&att("receptance.weight"), c, c)?,
        output: l.matrix(&att("output.weight"), c, c)?,
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
        let mut m = vec![&self.key, &self.value, &self.receptance, &self.output];
        m.extend(self.ffn.matrices());
        m
    }

    fn vectors(&self) -> Vec<&[f32]> {
        let mut v: Vec<&[f32]> = vec![&self.mix_k, &self.mix_v, &self.mix_r, &self.w, &self.u];
        v.extend(self.ffn.vectors());
        v
    }

    /// The time mix; `wkv` is the layer's `[aa | bb | pp]` (3×C).
    fn time_mix(
        &self,
        d: &Dims,
        xx: &[f32],
        t: usize,
        shift: &mut [f32],
        wkv: &mut [f32],
        _ctx: &mut (),
    ) -> Scratch {
        let c = d.n_embd;
        // 1. mixes kx = xx·m_k + prev·(1 − m_k) = xx + (prev − xx)·(1 − m_k) (same for v, r).
        let sx = shift_delta(xx, shift);
        let kx = lerp_rows(xx, &sx, &self.mix_k);
        let vx = lerp_rows(xx, &sx, &self.mix_v);
        let rx = lerp_rows(xx, &sx, &self.mix_r);
        // 2. projections; r goes through the sigmoid.
        let k = project(&self.key, &kx, t);
        let v = project(&self.value, &vx, t);
        let mut r = project(&self.receptance, &rx, t);
        // 3. wkv with the running-max trick, token by token.
        let (aa, rest) = wkv.split_at_mut(c);
        let (bb, pp) = rest.split_at_mut(c);
        // wkv4_step writes all c outputs of each token.
        let mut y = Scratch::dirty(t * c);
        for ti in 0..t {
            let row = ti * c..(ti + 1) * c;
            wkv4_step(
                aa,
                bb,
                pp,
                &self.w,
                &self.u,
                &k[row.clone()],
                &v[row.clone()],
                &mut y[row],
            );
        }
        // 4. out = W_o(σ(r) ⊙ wkv).
        for (ri, yi) in r.iter_mut().zip(&y) {
            *ri = sigmoid(*ri) * yi;
        }
        project(&self.output, &r, t)
    }
}
