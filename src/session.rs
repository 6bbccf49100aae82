//! [`Session`]: a model, its recurrent state, a tokenizer and a sampler —
//! what every front end talks to. Feed text, generate, checkpoint, restore.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{QuillError, Result};
use crate::model::{Logits, Model, State};
use crate::sampler::Sampler;
use crate::tokenizer::{StreamDecoder, Tokenizer, TokenizerKind};

/// How many characters of recent text a session remembers (snapshot
/// metadata shows them so a user can tell snapshots apart).
pub const TAIL_CHARS: usize = 200;

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The token budget ran out.
    Length,
    /// A stop string appeared (it is not part of the returned text).
    StopString(String),
    /// The model produced end-of-text (id 0 of World / 20B vocabularies).
    EndOfText,
    /// The caller asked to stop (Ctrl-C, Esc).
    Cancelled,
}

impl StopReason {
    /// Its name in machine-readable output (`quill generate --json`'s
    /// `stop`, a story manifest's `stop_reason`): `length`, `stop`,
    /// `end-of-text` or `cancelled`.
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::Length => "length",
            StopReason::StopString(_) => "stop",
            StopReason::EndOfText => "end-of-text",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// The result of [`Session::generate`].
#[derive(Debug, Clone)]
pub struct Generated {
    /// Text produced, without any stop string.
    pub text: String,
    /// Every token sampled (and fed to the model), stop strings included.
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop: StopReason,
    /// Wall time of the generation loop.
    pub seconds: f64,
}

impl Generated {
    /// Generated tokens per second.
    pub fn tokens_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tokens.len() as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Everything needed to put a session back where it was (for `/retry`,
/// `/undo` and branching): cheap, one state's worth of floats.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    state: State,
    logits: Option<Vec<f32>>,
    sampler: Sampler,
    tokens_in_state: u64,
    tail: String,
    pending: Vec<u8>,
}

/// A model with its state, tokenizer and sampler.
pub struct Session {
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    state: State,
    /// Logits after the last token fed (None before any token).
    logits: Option<Vec<f32>>,
    sampler: Sampler,
    tokens_in_state: u64,
    tail: String,
    /// Bytes of a character whose token(s) ended a generation mid-character:
    /// printed once the next token completes it, even across a snapshot.
    decoder: StreamDecoder,
    /// Tokens run through the model since the session was made (a counter
    /// for tests and `/show`: `/retry` must not grow it by the history).
    pub tokens_processed: u64,
    /// `tokens_in_state` for another thread, once asked for
    /// ([`Session::share_tokens_in_state`]).
    shared_tokens: Option<Arc<AtomicU64>>,
}

impl Session {
    /// A fresh session.
    pub fn new(model: Arc<Model>, tokenizer: Arc<Tokenizer>, sampler: Sampler) -> Self {
        Session {
            state: model.new_state(),
            model,
            tokenizer,
            logits: None,
            sampler,
            tokens_in_state: 0,
            tail: String::new(),
            decoder: StreamDecoder::default(),
            tokens_processed: 0,
            shared_tokens: None,
        }
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// The recurrent state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Logits after the last token fed, if any.
    pub fn logits(&self) -> Option<&[f32]> {
        self.logits.as_deref()
    }

    /// The sampler.
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// The sampler, to change settings.
    pub fn sampler_mut(&mut self) -> &mut Sampler {
        &mut self.sampler
    }

    /// Tokens the state has consumed since it was fresh.
    pub fn tokens_in_state(&self) -> u64 {
        self.tokens_in_state
    }

    /// [`Session::tokens_in_state`], readable by another thread while this
    /// one generates: the callback of [`Session::generate`] cannot borrow
    /// the session, and a status bar wants the count as tokens arrive. It
    /// is kept from this call on, at one relaxed store per change; later
    /// calls return the same counter.
    pub fn share_tokens_in_state(&mut self) -> Arc<AtomicU64> {
        let n = self.tokens_in_state;
        self.shared_tokens
            .get_or_insert_with(|| Arc::new(AtomicU64::new(n)))
            .clone()
    }

    fn set_tokens_in_state(&mut self, n: u64) {
        self.tokens_in_state = n;
        if let Some(shared) = &self.shared_tokens {
            shared.store(n, Ordering::Relaxed);
        }
    }

    /// The last [`TAIL_CHARS`] characters of text fed or generated.
    pub fn text_tail(&self) -> &str {
        &self.tail
    }

    /// Replaces state, logits and counters (loading a snapshot). The state
    /// must fit the model.
    pub fn restore_parts(
        &mut self,
        state: State,
        logits: Option<Vec<f32>>,
        sampler: Sampler,
        tokens_in_state: u64,
        tail: String,
        pending: &[u8],
    ) -> Result<()> {
        self.model.check_state(&state)?;
        if let Some(l) = &logits {
            if l.len() != self.model.info().dims.vocab {
                return Err(QuillError::StateMismatch(format!(
                    "saved logits have {} entries, the model's vocabulary is {}",
                    l.len(),
                    self.model.info().dims.vocab
                )));
            }
        }
        self.state = state;
        self.logits = logits;
        self.sampler = sampler;
        self.set_tokens_in_state(tokens_in_state);
        self.tail = tail;
        self.decoder = StreamDecoder::with_pending(pending);
        Ok(())
    }

    /// Back to a fresh state (settings and RNG kept, penalties cleared).
    pub fn reset(&mut self) {
        self.state = self.model.new_state();
        self.logits = None;
        self.sampler.clear_counts();
        self.set_tokens_in_state(0);
        self.tail.clear();
        self.decoder = StreamDecoder::default();
    }

    /// A copy of everything that changes as text goes in or out.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            state: self.state.clone(),
            logits: self.logits.clone(),
            sampler: self.sampler.clone(),
            tokens_in_state: self.tokens_in_state,
            tail: self.tail.clone(),
            pending: self.decoder.pending().to_vec(),
        }
    }

    /// Returns to a checkpoint (sampler settings changed since are kept).
    pub fn restore(&mut self, cp: &Checkpoint) {
        let settings = self.sampler.settings.clone();
        self.state = cp.state.clone();
        self.logits = cp.logits.clone();
        self.sampler = cp.sampler.clone();
        self.sampler.settings = settings;
        self.set_tokens_in_state(cp.tokens_in_state);
        self.tail = cp.tail.clone();
        self.decoder = StreamDecoder::with_pending(&cp.pending);
    }

    /// Bytes of an incomplete character held from the last generation.
    pub fn pending_bytes(&self) -> &[u8] {
        self.decoder.pending()
    }

    /// Releases held bytes of an incomplete character (lossily): call when
    /// the text ends for good, not before saving a snapshot.
    pub fn flush_text(&mut self) -> String {
        self.decoder.finish()
    }

    /// Tokenizes and feeds text (sequence mode). Returns the token count.
    /// Held bytes of an unfinished character are dropped: the text fed
    /// follows what was printed.
    pub fn feed_text(&mut self, text: &str) -> Result<usize> {
        self.decoder = StreamDecoder::default();
        let tokens = self.tokenizer.encode(text);
        self.feed_tokens(&tokens)?;
        Ok(tokens.len())
    }

    /// Feeds token ids (sequence mode); the logits after the last become
    /// the next sampling point. Feeding nothing changes nothing.
    pub fn feed_tokens(&mut self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        let logits = self.model.forward(tokens, &mut self.state, Logits::Last)?;
        self.logits = Some(logits);
        self.set_tokens_in_state(self.tokens_in_state + tokens.len() as u64);
        self.tokens_processed += tokens.len() as u64;
        if let Ok(bytes) = self.tokenizer.decode_bytes(tokens) {
            self.push_tail(&String::from_utf8_lossy(&bytes));
        }
        Ok(())
    }

    fn push_tail(&mut self, text: &str) {
        self.tail.push_str(text);
        let n = self.tail.chars().count();
        if n > TAIL_CHARS {
            let cut = self
                .tail
                .char_indices()
                .nth(n - TAIL_CHARS)
                .map(|(i, _)| i)
                .unwrap_or(0);
            self.tail.drain(..cut);
        }
    }

    /// Samples up to `max_tokens` tokens, feeding each back, streaming text
    /// through `on_text` (return `false` to stop). Text that could be the
    /// start of a stop string is held back until it is known not to be one,
    /// so a stop string is never printed. Bytes of a character not yet
    /// complete stay held (see [`Session::flush_text`]). Each sampled token is fed to the
    /// model, so the state and logits are ready to continue afterwards.
    pub fn generate(
        &mut self,
        max_tokens: usize,
        stops: &[String],
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generated> {
        // Front ends check this when they load their settings; this is for
        // those that do not (settings arrive from files and panels).
        self.sampler
            .settings
            .check_vocab(self.model.info().dims.vocab)?;
        let start = Instant::now();
        let mut tokens = Vec::new();
        let mut matcher = StopMatcher::new(stops);
        let eot = self.tokenizer.kind() != TokenizerKind::Bytes;
        let mut stop = StopReason::Length;
        let mut text = String::new();
        for _ in 0..max_tokens {
            let logits = self.logits.as_deref().ok_or_else(|| {
                QuillError::Invalid("nothing to continue from: feed a prompt first".into())
            })?;
            let tok = self.sampler.sample(logits);
            self.sampler.observe(tok);
            tokens.push(tok);
            self.feed_tokens(&[tok])?;
            if eot && tok == 0 {
                stop = StopReason::EndOfText;
                break;
            }
            let piece = self.decoder.push(&self.tokenizer.decode_bytes(&[tok])?);
            let (emit, hit) = matcher.push(&piece);
            text.push_str(&emit);
            let go_on = emit.is_empty() || on_text(&emit);
            if let Some(s) = hit {
                stop = StopReason::StopString(s);
                break;
            }
            if !go_on {
                stop = StopReason::Cancelled;
                break;
            }
        }
        if !matches!(stop, StopReason::StopString(_)) {
            let rest = matcher.flush();
            if !rest.is_empty() {
                on_text(&rest);
                text.push_str(&rest);
            }
        }
        Ok(Generated {
            text,
            tokens,
            stop,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// Finds stop strings in streamed text, holding back only what could still
/// become one.
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// A matcher for these stop strings (empty ones are ignored).
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds text; returns what is safe to show and the stop string hit, if
    /// any (text after a hit is dropped).
    pub fn push(&mut self, piece: &str) -> (String, Option<String>) {
        self.pending.push_str(piece);
        let first_hit = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|i| (i, s)))
            .min_by_key(|(i, _)| *i);
        if let Some((i, s)) = first_hit {
            let s = s.clone();
            let out = self.pending[..i].to_string();
            self.pending.clear();
            return (out, Some(s));
        }
        // Hold back the longest suffix that is a proper prefix of a stop.
        let mut hold = 0;
        for s in &self.stops {
            for (end, _) in s.char_indices().skip(1) {
                if self.pending.ends_with(&s[..end]) {
                    hold = hold.max(end);
                }
            }
        }
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, None)
    }

    /// Releases held-back text at the end of a generation.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::StopMatcher;

    #[test]
    fn stop_matcher_holds_back_prefixes_and_cuts_at_stop() {
        let mut m = StopMatcher::new(&["\n\nUser:".to_string()]);
        assert_eq!(m.push("Hello"), ("Hello".into(), None));
        assert_eq!(m.push(" there\n"), (" there".into(), None));
        assert_eq!(m.push("\nUs"), ("".into(), None));
        assert_eq!(m.push("er: hi"), ("".into(), Some("\n\nUser:".into())));
        let mut m = StopMatcher::new(&["END".to_string()]);
        assert_eq!(m.push("a E"), ("a ".into(), None));
        assert_eq!(m.push("x"), ("Ex".into(), None));
        assert_eq!(m.push("EN"), ("".into(), None));
        assert_eq!(m.flush(), "EN");
    }
}
