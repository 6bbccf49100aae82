//! `quill generate`: continue a prompt.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use quill::sampler::{Sampler, SamplerSettings};
use quill::session::{Session, StopReason};
use quill::snapshot::Snapshot;

use super::{parse_ids, ModelArgs, PathContext};

/// Sampler flags shared by the commands that generate.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplerArgs {
    /// Random seed; the same seed, prompt and settings give the same text (default: from the clock, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Temperature (0 = greedy).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Drop tokens less likely than MIN_P × the most likely one.
    #[arg(long, value_name = "P")]
    pub min_p: Option<f32>,
    /// Presence penalty: subtracted once from every token already generated.
    #[arg(long, value_name = "A")]
    pub presence: Option<f32>,
    /// Frequency penalty: subtracted per (decayed) occurrence.
    #[arg(long, value_name = "B")]
    pub frequency: Option<f32>,
    /// Occurrence counts are multiplied by this after every token.
    #[arg(long, value_name = "D")]
    pub penalty_decay: Option<f32>,
    /// Token ids never to sample (comma-separated).
    #[arg(long, value_name = "IDS")]
    pub ban: Option<String>,
}

impl SamplerArgs {
    /// Applies the flags that were given on top of `base`.
    pub fn apply(&self, mut s: SamplerSettings) -> Result<SamplerSettings> {
        if let Some(v) = self.temperature {
            s.temperature = v;
        }
        if let Some(v) = self.top_p {
            s.top_p = v;
        }
        if let Some(v) = self.top_k {
            s.top_k = v;
        }
        if let Some(v) = self.min_p {
            s.min_p = v;
        }
        if let Some(v) = self.presence {
            s.presence = v;
        }
        if let Some(v) = self.frequency {
            s.frequency = v;
        }
        if let Some(v) = self.penalty_decay {
            s.penalty_decay = v;
        }
        if let Some(b) = &self.ban {
            s.banned.extend(parse_ids(b)?);
        }
        s.validate()?;
        Ok(s)
    }

    /// `--seed`, or one from the clock.
    pub fn seed_or_clock(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        })
    }
}

/// Arguments of `quill generate`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").args(["prompt", "prompt_file", "tokens"])))]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to continue.
    #[arg(short, long)]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// The prompt as token ids (comma-separated).
    #[arg(long, value_name = "IDS")]
    tokens: Option<String>,
    /// Tokens to generate (0 only reads the prompt).
    #[arg(short = 'n', long = "max-tokens", default_value_t = 200)]
    n: usize,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long, value_name = "STR")]
    stop: Vec<String>,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Continue from this snapshot (state, logits, RNG and penalties), or start from a state-tuned
    /// `time_state` file (.pth or safetensors); a prompt is appended to it.
    #[arg(long, value_name = "FILE")]
    state_in: Option<PathBuf>,
    /// Save the state after generating (atomically) to this snapshot file.
    #[arg(long, value_name = "FILE")]
    state_out: Option<PathBuf>,
    /// Use a --state-in snapshot made with other weights of the same shape.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    sampler: SamplerArgs,
}

/// The one message for a prompt with nothing in it.
const EMPTY_PROMPT: &str = "the prompt is empty: give --prompt TEXT, --prompt-file FILE or --tokens IDS (or --state-in FILE to continue a snapshot)";

/// Reads a prompt file as UTF-8, saying where it is not.
fn read_prompt_file(f: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(f).with_context(|| format!("reading prompt file {}", f.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        anyhow::anyhow!(
            "prompt file {} is not valid UTF-8 text (bad byte 0x{:02x} at byte {at}, line {line}): save it as UTF-8",
            f.display(),
            e.as_bytes()[at]
        )
    })
}

pub fn run(a: Args) -> Result<()> {
    if a.stop.iter().any(String::is_empty) {
        anyhow::bail!(
            "--stop \"\" is empty: a stop string needs at least one character (or leave --stop out)"
        );
    }
    if let Some(path) = &a.state_out {
        super::check_output_path(path, "--state-out")?;
    }
    // The prompt is read and checked before the model loads: a mistake in
    // it should not cost a model load to find out.
    let text = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) => Some(p.clone()),
        (_, Some(f)) => Some(read_prompt_file(f)?),
        _ => None,
    };
    if a.state_in.is_none() {
        match text.as_deref() {
            Some("") => anyhow::bail!("{EMPTY_PROMPT}"),
            // Whitespace alone gives the model nothing to continue; after
            // --state-in it is a legitimate thing to append ("\n\n").
            Some(t) if t.trim().is_empty() => anyhow::bail!(
                "the prompt is only whitespace: give some text to continue (--prompt TEXT or --prompt-file FILE), or --state-in FILE to append it to a snapshot"
            ),
            _ => {}
        }
    }
    let (model, tokenizer) = a.model.load()?;
    let prompt_ids = match (&text, &a.tokens) {
        (Some(t), _) => tokenizer.encode(t),
        (_, Some(ids)) => parse_ids(ids)?,
        _ => Vec::new(),
    };
    // (A tokenizer with more ids than the model has rows was refused at
    // load: ids out of range here were typed in with --tokens.)
    model.check_tokens(&prompt_ids)?;
    let (mut session, seed) = match &a.state_in {
        Some(path) => {
            let snap = quill::snapshot::load_for(path, &model)?;
            // An imported time_state carries no sampler: use the defaults.
            let base = if snap.meta.extra.contains_key("imported_from") {
                SamplerSettings::default()
            } else {
                snap.sampler.settings.clone()
            };
            let settings = a.sampler.apply(base)?;
            let mut session = Session::new(model, tokenizer, Sampler::new(settings.clone(), 0));
            snap.restore_into(&mut session, a.force)
                .path_context("restoring", path)?;
            session.sampler_mut().settings = settings;
            // An explicit --seed reseeds; otherwise the saved RNG goes on.
            let imported = snap.meta.extra.contains_key("imported_from");
            let seed = if imported {
                Some(a.sampler.seed_or_clock())
            } else {
                a.sampler.seed
            };
            if let Some(seed) = seed {
                session.sampler_mut().reseed(seed);
            }
            (session, seed)
        }
        None => {
            if prompt_ids.is_empty() {
                anyhow::bail!("{EMPTY_PROMPT}");
            }
            let settings = a.sampler.apply(SamplerSettings::default())?;
            let seed = a.sampler.seed_or_clock();
            (
                Session::new(model, tokenizer, Sampler::new(settings, seed)),
                Some(seed),
            )
        }
    };
    // Before the prompt is read: --ban or a snapshot's ban list may name
    // ids this model does not have.
    let vocab = session.model().info().dims.vocab;
    session.sampler().settings.check_vocab(vocab)?;
    let t0 = Instant::now();
    session.feed_tokens(&prompt_ids)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    if session.logits().is_none() && a.n > 0 {
        anyhow::bail!("the snapshot holds no text to continue from: give a --prompt");
    }
    if !a.json {
        let seed_note = seed.map(|s| format!("; seed {s}")).unwrap_or_default();
        eprintln!(
            "[prompt: {} tokens in {:.2}s ({:.1} tokens/s); {} tokens in state{seed_note}]",
            prompt_ids.len(),
            prefill_s,
            prompt_ids.len() as f64 / prefill_s.max(1e-9),
            session.tokens_in_state()
        );
    }
    let mut stdout = std::io::stdout().lock();
    let streaming = !a.json;
    let mut write_failed = None;
    let mut out = session.generate(a.n, &a.stop, |piece| {
        if streaming {
            if let Err(e) = stdout
                .write_all(piece.as_bytes())
                .and_then(|_| stdout.flush())
            {
                write_failed = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(path) = &a.state_out {
        // Bytes of a character split across the save stay in the snapshot
        // and are printed by the run that continues it.
        Snapshot::capture(&session)
            .save(path)
            .path_context("saving the state to", path)?;
    } else {
        let rest = session.flush_text();
        if streaming && !rest.is_empty() {
            let _ = stdout.write_all(rest.as_bytes());
        }
        out.text.push_str(&rest);
    }
    if let Some(e) = write_failed {
        // A closed pipe (`| head`) is a normal way to stop reading.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(());
        }
        return Err(e).context("writing to stdout");
    }
    if a.json {
        let v = serde_json::json!({
            "text": out.text,
            "tokens": out.tokens,
            "prompt_tokens": prompt_ids.len(),
            "tokens_per_s": out.tokens_per_s(),
            "prefill_tokens_per_s": prompt_ids.len() as f64 / prefill_s.max(1e-9),
            "seed": seed,
            "tokens_in_state": session.tokens_in_state(),
            "stop": out.stop.name(),
            "stop_string": match &out.stop {
                StopReason::StopString(s) => Some(s.as_str()),
                _ => None,
            },
        });
        writeln!(stdout, "{v}")?;
    } else {
        if a.state_out.is_none() && !out.text.is_empty() && !out.text.ends_with('\n') {
            writeln!(stdout)?;
        }
        let stop = match &out.stop {
            StopReason::StopString(s) => format!("stop string {s:?}"),
            other => other.name().to_string(),
        };
        eprintln!(
            "[{} tokens in {:.2}s ({:.1} tokens/s); stop: {stop}]",
            out.tokens.len(),
            out.seconds,
            out.tokens_per_s(),
        );
    }
    Ok(())
}
