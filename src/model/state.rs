//! The recurrent state: everything an RWKV model remembers of a text, a
//! fixed number of floats whatever the text's length.

use super::RwkvVersion;

/// One layer's state.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerState {
    /// Token shift of the time-mix block: the previous token's LN1 output (C).
    pub att_x: Vec<f32>,
    /// The wkv state. v5/v6: H×N×N indexed `[head][key][value]`; v7: H×N×N
    /// indexed `[head][value][key]` (the official layouts); v4: `aa`, `bb`,
    /// `pp` (3×C, in that order).
    pub wkv: Vec<f32>,
    /// Token shift of the channel-mix block: the previous token's LN2 output (C).
    pub ffn_x: Vec<f32>,
}

/// A model's full recurrent state.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// Which generation's layout this is.
    pub version: RwkvVersion,
    /// Per-layer state, layer 0 first.
    pub layers: Vec<LayerState>,
}

/// v4's `pp` starts at −1e30 (the official package's fresh state), so the
/// first token's running maximum is its own exponent.
pub const V4_FRESH_PP: f32 = -1e30;

impl State {
    /// Lengths of one layer's `att_x`, `wkv` and `ffn_x` for a model's
    /// dims: what [`State::new`] allocates, known without allocating.
    pub fn layer_shape(
        version: RwkvVersion,
        n_embd: usize,
        n_head: usize,
        head_size: usize,
    ) -> [usize; 3] {
        let wkv = match version {
            RwkvVersion::V4 => 3 * n_embd,
            _ => n_head * head_size * head_size,
        };
        [n_embd, wkv, n_embd]
    }

    /// A fresh (empty-context) state.
    pub fn new(
        version: RwkvVersion,
        n_layer: usize,
        n_embd: usize,
        n_head: usize,
        head_size: usize,
    ) -> Self {
        let [att, wkv_len, ffn] = State::layer_shape(version, n_embd, n_head, head_size);
        let mut wkv = vec![0.0; wkv_len];
        if version == RwkvVersion::V4 {
            wkv[2 * n_embd..].fill(V4_FRESH_PP);
        }
        let layer = LayerState {
            att_x: vec![0.0; att],
            wkv,
            ffn_x: vec![0.0; ffn],
        };
        State {
            version,
            layers: vec![layer; n_layer],
        }
    }

    /// Number of f32 values held.
    pub fn len(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.att_x.len() + l.wkv.len() + l.ffn_x.len())
            .sum()
    }

    /// Whether the state holds no values (a model with no layers).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size in bytes.
    pub fn byte_len(&self) -> usize {
        self.len() * 4
    }

    /// The state as the official package's list of tensors, in its order
    /// (reference/README.md): v4 `att_x, aa, bb, pp, ffn_x` per layer;
    /// v5–v7 `att_x, wkv, ffn_x` per layer.
    pub fn official_tensors(&self) -> Vec<&[f32]> {
        let mut out = Vec::new();
        for l in &self.layers {
            out.push(&l.att_x[..]);
            if self.version == RwkvVersion::V4 {
                let c = l.att_x.len();
                out.extend([&l.wkv[..c], &l.wkv[c..2 * c], &l.wkv[2 * c..]]);
            } else {
                out.push(&l.wkv[..]);
            }
            out.push(&l.ffn_x[..]);
        }
        out
    }

    /// Mutable form of [`State::official_tensors`], same order.
    pub fn official_tensors_mut(&mut self) -> Vec<&mut [f32]> {
        let v4 = self.version == RwkvVersion::V4;
        let mut out: Vec<&mut [f32]> = Vec::new();
        for l in &mut self.layers {
            let c = l.att_x.len();
            out.push(&mut l.att_x[..]);
            if v4 {
                let (aa, rest) = l.wkv.split_at_mut(c);
                let (bb, pp) = rest.split_at_mut(c);
                out.extend([aa, bb, pp]);
            } else {
                out.push(&mut l.wkv[..]);
            }
            out.push(&mut l.ffn_x[..]);
        }
        out
    }
}
