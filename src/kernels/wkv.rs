//! The per-head wkv recurrences. Each is O(N²) per head and token: the
//! state is updated in place by rank-1 terms, never by an N×N product.

/// One RWKV-7 step for one head (RWKV-NOTES "v7"; official `model.py`
/// `RWKV_x070_TMix_one`): with `s` indexed `[value][key]`,
/// `sa = S·(−kk)`, `S = S⊙w(key) + sa⊗(kk⊙a) + v⊗k`, `y = S·r`.
/// `kka` is `kk⊙a` and `neg_kk` is `−kk`, both precomputed by the caller.
#[allow(clippy::too_many_arguments)]
pub fn wkv7_step(
    s: &mut [f32],
    n: usize,
    r: &[f32],
    w: &[f32],
    k: &[f32],
    v: &[f32],
    neg_kk: &[f32],
    kka: &[f32],
    y: &mut [f32],
) {
    for (i, row) in s.chunks_exact_mut(n).enumerate() {
        let mut sa = 0.0f32;
        for j in 0..n {
            sa += row[j] * neg_kk[j];
        }
        let vi = v[i];
        let mut acc = 0.0f32;
        for j in 0..n {
            let x = row[j] * w[j] + sa * kka[j] + vi * k[j];
            row[j] = x;
            acc += x * r[j];
        }
        y[i] = acc;
    }
}

/// One RWKV-5.2 / RWKV-6 step for one head (RWKV-NOTES "v5.2 and v6"):
/// with `s` indexed `[key][value]`, `a = k⊗v`, `y = r·(u⊙a + S)`,
/// `S = a + decay⊙S` (decay and `u` per key channel).
#[allow(clippy::too_many_arguments)]
pub fn wkv5_step(
    s: &mut [f32],
    n: usize,
    r: &[f32],
    decay: &[f32],
    u: &[f32],
    k: &[f32],
    v: &[f32],
    y: &mut [f32],
) {
    y[..n].fill(0.0);
    for (j, row) in s.chunks_exact_mut(n).enumerate() {
        let (kj, rj, uj, wj) = (k[j], r[j], u[j], decay[j]);
        for c in 0..n {
            let a = kj * v[c];
            y[c] += rj * (uj * a + row[c]);
            row[c] = a + wj * row[c];
        }
    }
}

/// One RWKV-4 step over all C channels (RWKV-NOTES "v4"; official
/// `model.py` `att_one` / the `att_seq` loop), with the running-maximum
/// trick that keeps the exponentials in range: the state is `aa`, `bb`
/// (numerator and denominator scaled by `exp(−pp)`) and `pp` (the exponent).
/// `w` is `−exp(time_decay)`, `u` is `time_first`; `y` receives wkv.
#[allow(clippy::too_many_arguments)]
pub fn wkv4_step(
    aa: &mut [f32],
    bb: &mut [f32],
    pp: &mut [f32],
    w: &[f32],
    u: &[f32],
    k: &[f32],
    v: &[f32],
    y: &mut [f32],
) {
    for i in 0..y.len() {
        let (a, b, p_old, ki, vi) = (aa[i], bb[i], pp[i], k[i], v[i]);
        // Output with the bonus u for the current token.
        let ww = u[i] + ki;
        let p = p_old.max(ww);
        let e1 = (p_old - p).exp();
        let e2 = (ww - p).exp();
        y[i] = (e1 * a + e2 * vi) / (e1 * b + e2);
        // State update: decay the past by w, add the current token.
        let ww = w[i] + p_old;
        let p = ww.max(ki);
        let e1 = (ww - p).exp();
        let e2 = (ki - p).exp();
        aa[i] = e1 * a + e2 * vi;
        bb[i] = e1 * b + e2;
        pp[i] = p;
    }
}
