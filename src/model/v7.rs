//! RWKV-7 "Goose" blocks (RWKV-NOTES "v7"; official `model.py`
//! `RWKV_x070_TMix_*` / `RWKV_x070_CMix_*`). Steps are numbered as in the
//! notes so the code can be read against them.

use super::common::{lerp_rows, project, shift_delta, Layer, Loader, Lora, Norm};
use super::Dims;
use crate::error::Result;
use crate::kernels::{
    exp_in_place, for_rows, for_rows2, lanes, matmul_many, sigmoid_in_place, wkv7_chunk, Matrix,
    Product, Scratch,
};

/// One RWKV-7 layer's weights.
pub struct Block {
    ln1: Norm,
    ln2: Norm,
    x_r: Vec<f32>,
    x_w: Vec<f32>,
    x_k: Vec<f32>,
    x_v: Vec<f32>,
    x_a: Vec<f32>,
    x_g: Vec<f32>,
    w0: Vec<f32>,
    w_lora: Lora,
    a0: Vec<f32>,
    a_lora: Lora,
    /// Value-residual gate; layer 0 has none (it defines `v_first`).
    v_gate: Option<(Vec<f32>, Lora)>,
    g_lora: Lora,
    k_k: Vec<f32>,
    k_a: Vec<f32>,
    r_k: Vec<f32>,
    receptance: Matrix,
    key: Matrix,
    value: Matrix,
    output: Matrix,
    ln_x: Norm,
    ffn_x_k: Vec<f32>,
    ffn_key: Matrix,
    ffn_value: Matrix,
}

/// Loads layer `i`.
pub fn load_block(l: &Loader, i: usize, d: &Dims) -> Result<Block> {
    let c = d.n_embd;
    let p = |s: &str| format!("blocks.{i}.{s}");
    let att = |s: &str| format!("blocks.{i}.att.{s}");
    Ok(Block {
        ln1: l.norm(&p("ln1"), c)?,
        ln2: l.norm(&p("ln2"), c)?,
        x_r: l.vector(&att("x_r"), c)?,
        x_w: l.vector(&att("x_w"), c)?,
        x_k: l.vector(&att("x_k"), c)?,
        x_v: l.vector(&att("x_v"), c)?,
        x_a: l.vector(&att("x_a"), c)?,
        x_g: l.vector(&att("x_g"), c)?,
        w0: l.vector(&att("w0"), c)?,
        w_lora: l.lora(&att("w1"), &att("w2"), c)?,
        a0: l.vector(&att("a0"), c)?,
        a_lora: l.lora(&att("a1"), &att("a2"), c)?,
        v_gate: if i == 0 {
            None
        } else {
            Some((l.vector(&att("v0"), c)?, l.lora(&att("v1"), &att("v2"), c)?))
        },
        g_lora: l.lora(&att("g1"), &att("g2"), c)?,
        k_k: l.vector(&att("k_k"), c)?,
        k_a: l.vector(&att("k_a"), c)?,
        r_k: l.array(&att("r_k"), &[d.n_head, d.head_size])?,
        receptance: l.matrix(&att("receptance.weight"), c, c)?,
        key: l.matrix(&att("key.weight"), c, c)?,
        value: l.matrix(&att("value.weight"), c, c)?,
        output: l.matrix(&att("output.weight"), c, c)?,
        ln_x: l.norm(&att("ln_x"), c)?,
        ffn_x_k: l.vector(&format!("blocks.{i}.ffn.x_k"), c)?,
        ffn_key: l.matrix(&format!("blocks.{i}.ffn.key.weight"), d.ffn, c)?,
        ffn_value: l.matrix(&format!("blocks.{i}.ffn.value.weight"), c, d.ffn)?,
    })
}

impl Layer for Block {
    /// v_first: layer 0's values, mixed into every later layer (value residual).
    type Ctx = Scratch;

    fn norms(&self) -> (&Norm, &Norm) {
        (&self.ln1, &self.ln2)
    }

    fn time_mix(
        &self,
        d: &Dims,
        xx: &[f32],
        t: usize,
        shift: &mut [f32],
        wkv: &mut [f32],
        v_first: &mut Scratch,
    ) -> Scratch {
        self.attention(d, xx, t, shift, wkv, v_first)
    }

    fn channel_mix(&self, xx: &[f32], t: usize, shift: &mut [f32]) -> Scratch {
        self.ffn(xx, t, shift)
    }

    fn matrices(&self) -> Vec<&Matrix> {
        let mut m = vec![
            &self.receptance,
            &self.key,
            &self.value,
            &self.output,
            &self.ffn_key,
            &self.ffn_value,
        ];
        for l in [&self.w_lora, &self.a_lora, &self.g_lora] {
            m.extend([&l.down, &l.up]);
        }
        if let Some((_, l)) = &self.v_gate {
            m.extend([&l.down, &l.up]);
        }
        m
    }

    fn vectors(&self) -> Vec<&[f32]> {
        let mut v: Vec<&[f32]> = vec![
            &self.x_r,
            &self.x_w,
            &self.x_k,
            &self.x_v,
            &self.x_a,
            &self.x_g,
            &self.w0,
            &self.a0,
            &self.k_k,
            &self.k_a,
            &self.r_k,
            &self.ffn_x_k,
        ];
        v.extend(self.ln_x.vectors());
        if let Some((v0, _)) = &self.v_gate {
            v.push(v0);
        }
        v
    }
}

impl Block {
    /// dtype of the large matrices as held in memory.
    pub fn weight_dtype(&self) -> crate::kernels::WeightDtype {
        self.key.weight_dtype()
    }
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        d: &Dims,
        xx: &[f32],
        t: usize,
        shift: &mut [f32],
        wkv: &mut [f32],
        v_first: &mut Scratch,
    ) -> Scratch {
        let (c, h, n) = (d.n_embd, d.n_head, d.head_size);
        // 1. token shift: sx = prev − x; x_* = x + sx ⊙ x_*.
        let sx = shift_delta(xx, shift);
        let xr = lerp_rows(xx, &sx, &self.x_r);
        let xw = lerp_rows(xx, &sx, &self.x_w);
        let xk = lerp_rows(xx, &sx, &self.x_k);
        let xv = lerp_rows(xx, &sx, &self.x_v);
        let xa = lerp_rows(xx, &sx, &self.x_a);
        let xg = lerp_rows(xx, &sx, &self.x_g);
        // 2. projections, with the first halves of the LoRAs of steps 3–6
        // (all independent: one parallel pass, see `matmul_many`).
        // (Every product writes its output in full: scratch buffers need
        // no zeroing.)
        let mut r = Scratch::dirty(t * c);
        let mut k = Scratch::dirty(t * c);
        let mut v = Scratch::dirty(t * c);
        let mut w_mid = self.w_lora.mid(t);
        let mut a_mid = self.a_lora.mid(t);
        let mut g_mid = self.g_lora.mid(t);
        let mut v_mid = self
            .v_gate
            .as_ref()
            .map_or(Scratch::default(), |(_, l)| l.mid(t));
        {
            let mut products = vec![
                Product {
                    w: &self.receptance,
                    x: &xr,
                    y: &mut r,
                },
                Product {
                    w: &self.key,
                    x: &xk,
                    y: &mut k,
                },
                Product {
                    w: &self.value,
                    x: &xv,
                    y: &mut v,
                },
                Product {
                    w: &self.w_lora.down,
                    x: &xw,
                    y: &mut w_mid,
                },
                Product {
                    w: &self.a_lora.down,
                    x: &xa,
                    y: &mut a_mid,
                },
                Product {
                    w: &self.g_lora.down,
                    x: &xg,
                    y: &mut g_mid,
                },
            ];
            if let Some((_, l)) = &self.v_gate {
                products.push(Product {
                    w: &l.down,
                    x: &xv,
                    y: &mut v_mid,
                });
            }
            matmul_many(t, &mut products);
        }
        // The LoRAs' activations (3: tanh, 5: σ; 4 and 6 have none), then
        // their second halves, again as one pass.
        for_rows(&mut w_mid, self.w_lora.down.rows, |_, row| {
            row.iter_mut().for_each(|x| *x = x.tanh())
        });
        for_rows(&mut g_mid, self.g_lora.down.rows, |_, row| {
            sigmoid_in_place(row)
        });
        let mut w = Scratch::dirty(t * c);
        let mut a = Scratch::dirty(t * c);
        let mut g = Scratch::dirty(t * c);
        let mut gate = Scratch::dirty(if self.v_gate.is_some() { t * c } else { 0 });
        {
            let mut products = vec![
                Product {
                    w: &self.w_lora.up,
                    x: &w_mid,
                    y: &mut w,
                },
                Product {
                    w: &self.a_lora.up,
                    x: &a_mid,
                    y: &mut a,
                },
                Product {
                    w: &self.g_lora.up,
                    x: &g_mid,
                    y: &mut g,
                },
            ];
            if let Some((_, l)) = &self.v_gate {
                products.push(Product {
                    w: &l.up,
                    x: &v_mid,
                    y: &mut gate,
                });
            }
            matmul_many(t, &mut products);
        }
        // 3. decay w = exp(−0.606531·σ(w0 + tanh(xw·w1)·w2)), in f32.
        // (Element-wise passes run on row-parallel `for_rows`, exp and σ
        // as the kernel set's vectorised passes over a row.)
        for_rows(&mut w, c, |_, row| {
            row.iter_mut().zip(&self.w0).for_each(|(wi, &w0)| *wi += w0);
            sigmoid_in_place(row);
            row.iter_mut().for_each(|wi| *wi *= -0.606531);
            exp_in_place(row);
        });
        // 4. in-context learning rate a = σ(a0 + (xa·a1)·a2).
        for_rows(&mut a, c, |_, row| {
            row.iter_mut().zip(&self.a0).for_each(|(ai, &a0)| *ai += a0);
            sigmoid_in_place(row);
        });
        // 5. gate g = σ(xg·g1)·g2: done above.
        // 6. value residual: layer 0 defines v_first, later layers lerp to
        //    it by σ(v0 + (xv·v1)·v2).
        match &self.v_gate {
            None => *v_first = Scratch::copy_of(&v),
            Some((v0, _)) => {
                let vf: &[f32] = v_first;
                for_rows2(&mut v, &mut gate, c, |ti, row, s| {
                    s.iter_mut().zip(v0).for_each(|(si, &v0)| *si += v0);
                    sigmoid_in_place(s);
                    let vf = &vf[ti * c..(ti + 1) * c];
                    for ((vi, &si), &fi) in row.iter_mut().zip(s.iter()).zip(vf) {
                        *vi += (fi - *vi) * si;
                    }
                });
            }
        }
        // 7. kk = normalize(k ⊙ k_k) per head (eps 1e-12); k = k ⊙ (1 + (a−1) ⊙ k_a).
        let mut neg_kk = Scratch::dirty(t * c);
        let mut kka = Scratch::dirty(t * c);
        {
            let (kr, ar) = (&k, &a);
            for_rows2(&mut neg_kk, &mut kka, c, |ti, nk, ka| {
                let row = ti * c..(ti + 1) * c;
                let heads = (nk.chunks_exact_mut(n).zip(ka.chunks_exact_mut(n)))
                    .zip(kr[row.clone()].chunks_exact(n).zip(ar[row].chunks_exact(n)))
                    .zip(self.k_k.chunks_exact(n));
                for (((nk, ka), (kh, ah)), kkh) in heads {
                    for ((q, &kj), &m) in nk.iter_mut().zip(kh).zip(kkh) {
                        *q = kj * m;
                    }
                    let inv = 1.0 / lanes::sum_sq(nk).sqrt().max(1e-12);
                    for ((q, x), &aj) in nk.iter_mut().zip(ka.iter_mut()).zip(ah) {
                        let kk = *q * inv;
                        *q = -kk;
                        *x = kk * aj;
                    }
                }
            });
        }
        for_rows(&mut k, c, |ti, row| {
            let ar = &a[ti * c..(ti + 1) * c];
            for ((kj, &aj), &m) in row.iter_mut().zip(ar).zip(&self.k_a) {
                *kj *= 1.0 + (aj - 1.0) * m;
            }
        });
        // 8. the wkv recurrence: heads in parallel, tokens in order.
        let mut y = Scratch::dirty(t * c);
        wkv7_chunk(wkv, h, n, t, &r, &w, &k, &v, &neg_kk, &kka, &mut y);
        // 9. y = GroupNorm(y) + (Σ_head r⊙k⊙r_k)·v, then ⊙ g, then W_o.
        self.ln_x.group_norm_rows(&mut y, h);
        for_rows(&mut y, c, |ti, row| {
            let o = ti * c..(ti + 1) * c;
            let heads = (row.chunks_exact_mut(n).zip(self.r_k.chunks_exact(n)))
                .zip(
                    r[o.clone()]
                        .chunks_exact(n)
                        .zip(k[o.clone()].chunks_exact(n)),
                )
                .zip(v[o.clone()].chunks_exact(n));
            for (((yh, rkh), (rh, kh)), vh) in heads {
                let s = lanes::dot3(rh, kh, rkh);
                for (yi, &vi) in yh.iter_mut().zip(vh) {
                    *yi += s * vi;
                }
            }
            for (yi, gi) in row.iter_mut().zip(&g[o]) {
                *yi *= gi;
            }
        });
        project(&self.output, &y, t)
    }

    /// ffn: k = x + (prev − x) ⊙ x_k; out = W_v(relu(W_k k)²).
    fn ffn(&self, xx: &[f32], t: usize, shift: &mut [f32]) -> Scratch {
        let sx = shift_delta(xx, shift);
        let kx = lerp_rows(xx, &sx, &self.ffn_x_k);
        let mut hidden = project(&self.ffn_key, &kx, t);
        for_rows(&mut hidden, self.ffn_key.rows, |_, row| {
            for v in row.iter_mut() {
                let r = v.max(0.0);
                *v = r * r
            }
        });
        project(&self.ffn_value, &hidden, t)
    }
}
