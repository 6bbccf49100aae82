//! Evaluation: per-token negative log-likelihood of a text under a model.

use crate::error::{QuillError, Result};
use crate::model::{Logits, Model};

/// Result of [`perplexity`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct PerplexityReport {
    /// Tokens scored (all but the first, which nothing predicts).
    pub tokens: usize,
    /// Mean negative log-likelihood, nats per token.
    pub mean_nll: f64,
    /// exp(mean_nll).
    pub perplexity: f64,
    /// Mean NLL in bits per token.
    pub bits_per_token: f64,
}

/// Scores `tokens` from a fresh state: token t+1 under the logits after
/// tokens 0..=t, fed through sequence mode in chunks of `chunk` tokens with
/// the state carried across chunks (one pass, as an RNN reads the text).
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    chunk: usize,
    mut progress: impl FnMut(usize),
) -> Result<PerplexityReport> {
    if tokens.len() < 2 {
        return Err(QuillError::Invalid(
            "the text is too short: perplexity needs at least two tokens".into(),
        ));
    }
    model.check_tokens(tokens)?;
    let chunk = chunk.max(1);
    let v = model.info().dims.vocab;
    let mut state = model.new_state();
    let mut total = 0.0f64;
    let mut scored = 0usize;
    // Inputs are tokens[0..n-1]; targets tokens[1..n].
    let inputs = &tokens[..tokens.len() - 1];
    for (ci, piece) in inputs.chunks(chunk).enumerate() {
        let logits = model.forward(piece, &mut state, Logits::All)?;
        for (t, row) in logits.chunks_exact(v).enumerate() {
            let target = tokens[ci * chunk + t + 1] as usize;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&l| (l as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            total += lse - row[target] as f64;
            scored += 1;
        }
        progress(scored);
    }
    let mean = total / scored as f64;
    Ok(PerplexityReport {
        tokens: scored,
        mean_nll: mean,
        perplexity: mean.exp(),
        bits_per_token: mean / std::f64::consts::LN_2,
    })
}
