//! RWKV-6 "Finch" blocks (RWKV-NOTES "v5.2 and v6"; official `model.py`
//! `att_one_v6_0` / `att_seq_v6_0` and `ffn_one_v6` / `ffn_seq_v6`).
//! Steps are numbered as in the notes.
//!
//! What v6 adds to v5.2: data-dependent token-shift mixes (a 5-way LoRA on
//! `xx + sx·time_maa_x`, in the order w, k, v, r, g as `model.py` unbinds
//! them) and a data-dependent decay computed in f32 every token. The
//! official sequence mode loops over the chunk with the same per-token
//! recurrence, so one path serves serial and sequence mode.

use super::common::{
    gated_group_out, lerp_rows, project, shift_delta, silu, wkv5_chunk, Layer, Loader, Lora,
    MixStyle, Norm, ReceptanceFfn,
};
use super::Dims;
use crate::error::{QuillError, Result};
use crate::kernels::{transpose, Matrix, Scratch};

/// The five mixes of the data-dependent token shift, in `model.py` order.
const MIXES: usize = 5;

/// One RWKV-6 layer's weights.
pub struct Block {
    ln1: Norm,
    ln2: Norm,
    maa_x: Vec<f32>,
    /// `time_maa_w, _k, _v, _r, _g` (C each), in that order.
    maa: [Vec<f32>; MIXES],
    /// `time_maa_w1` (C, 5·D) as a (5·D × C) matrix.
    maa_down: Matrix,
    /// `time_maa_w2[j]` (D, C) as (C × D) matrices, j in w, k, v, r, g order.
    maa_up: Vec<Matrix>,
    /// `time_decay` (C), the decay's base.
    decay_base: Vec<f32>,
    /// `time_decay_w1` (C, D') and `time_decay_w2` (D', C).
    decay_lora: Lora,
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
    // time_maa_w1 is (C, 5·D); time_maa_w2 is (5, D, C).
    let w1 = att("time_maa_w1");
    let w1_shape = l.file.info(&w1)?.shape.clone();
    let dm = match w1_shape[..] {
        [rows, cols] if rows == c && cols > 0 && cols % MIXES == 0 => cols / MIXES,
        _ => {
            return Err(QuillError::tensor(
                &w1,
                format!("has shape {w1_shape:?}, expected ({c}, 5·D) (the 5-way mix LoRA)"),
            ))
        }
    };
    // Both follow --dtype like the decay LoRA (`Loader::owned`).
    let maa_down = l.owned(Matrix::from_file_transposed_stored(
        l.file,
        &w1,
        c,
        MIXES * dm,
    )?);
    let w2 = l.array(&att("time_maa_w2"), &[MIXES, dm, c])?;
    let maa_up = w2
        .chunks_exact(dm * c)
        // (D, C) stored as x @ m: transposed to (C × D) for y = W·x.
        .map(|m| l.owned(Matrix::from_f32(c, dm, transpose(m, dm, c))))
        .collect();
    Ok(Block {
        ln1: l.norm(&p("ln1"), c)?,
        ln2: l.norm(&p("ln2"), c)?,
        maa_x: l.vector(&att("time_maa_x"), c)?,
        maa: [
            l.vector(&att("time_maa_w"), c)?,
            l.vector(&att("time_maa_k"), c)?,
            l.vector(&att("time_maa_v"), c)?,
            l.vector(&att("time_maa_r"), c)?,
            l.vector(&att("time_maa_g"), c)?,
        ],
        maa_down,
        maa_up,
        decay_base: l.vector(&att("time_decay"), c)?,
        decay_lora: l.lora(&att("time_decay_w1"), &att("time_decay_w2"), c)?,
        u: l.per_head(&att("time_faaaa"), h, n)?,
        receptance: l.matrix(&att("receptance.weight"), c, c)?,
        key: l.matrix(&att("key.weight"), c, c)?,
        value: l.matrix(&att("value.weight"), c, c)?,
        gate: l.matrix(&att("gate.weight"), c, c)?,
        output: l.matrix(&att("output.weight"), c, c)?,
        ln_x: l.norm(&att("ln_x"), c)?,
        ffn: ReceptanceFfn::load(l, i, MixStyle::Lerp, c, d.ffn)?,
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
            &self.maa_down,
            &self.decay_lora.down,
            &self.decay_lora.up,
            &self.receptance,
            &self.key,
            &self.value,
            &self.gate,
            &self.output,
        ];
        m.extend(&self.maa_up);
        m.extend(self.ffn.matrices());
        m
    }

    fn vectors(&self) -> Vec<&[f32]> {
        let mut v: Vec<&[f32]> = vec![&self.maa_x, &self.decay_base, &self.u];
        v.extend(self.maa.iter().map(|m| &m[..]));
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
        let (c, h, n) = (d.n_embd, d.n_head, d.head_size);
        let dm = self.maa_up[0].cols;
        // 1. token shift, sx = prev − xx; xxx = xx + sx⊙maa_x.
        let sx = shift_delta(xx, shift);
        let xxx = lerp_rows(xx, &sx, &self.maa_x);
        // 2. the 5-way LoRA: m = tanh(xxx·w1) split into 5 blocks of D,
        //    block j times w2[j]; mix_j = maa_j + m_j, one row per token.
        let mut mid = project(&self.maa_down, &xxx, t);
        mid.iter_mut().for_each(|v| *v = v.tanh());
        let mut part = Scratch::dirty(t * dm);
        let mut mixed: Vec<Scratch> = Vec::with_capacity(MIXES);
        for j in 0..MIXES {
            for ti in 0..t {
                let src = ti * MIXES * dm + j * dm;
                part[ti * dm..(ti + 1) * dm].copy_from_slice(&mid[src..src + dm]);
            }
            let mut mix = project(&self.maa_up[j], &part, t);
            for (i, m) in mix.iter_mut().enumerate() {
                *m += self.maa[j][i % c];
            }
            // x_j = xx + sx⊙(maa_j + m_j), the mix varying per row.
            mixed.push(lerp_rows(xx, &sx, &mix));
        }
        let [wx, kx, vx, rx, gx] = &mixed[..] else {
            unreachable!("five mixes")
        };
        // 3. projections; gate g = silu(W_g gx).
        let r = project(&self.receptance, rx, t);
        let k = project(&self.key, kx, t);
        let v = project(&self.value, vx, t);
        let mut g = project(&self.gate, gx, t);
        g.iter_mut().for_each(|x| *x = silu(*x));
        // 4. data-dependent decay: w = time_decay + tanh(wx·w1)·w2,
        //    decay = exp(−exp(w)), in f32 every token.
        let mut decay = self.decay_lora.apply(wx, t, f32::tanh);
        for (i, w) in decay.iter_mut().enumerate() {
            *w = (-(self.decay_base[i % c] + *w).exp()).exp();
        }
        // 5. wkv: y = r·(u⊙(k⊗v) + S), then S = k⊗v + decay⊙S.
        let y = wkv5_chunk(wkv, h, n, t, &r, &k, &v, &self.u, &decay);
        // 6. GroupNorm (H groups, eps 64e-5), ⊙ g, W_o.
        gated_group_out(&self.ln_x, y, &g, h, &self.output, t)
    }
}
