//! The Write mode's story: a prompt file's opening, then chapters written
//! one at a time as the user asks, each steered by the guidance box.
//!
//! The text layout is the writer's ([`Prompt::opening`],
//! [`ChapterSpec::prefix`], [`SEPARATOR`]), so a chapter written here is
//! what `quill write` would feed and produce for the same prompt file. What
//! differs is the pace: `quill write` runs a whole story in one go, while
//! here every chapter waits for the user, can be stopped, continued or
//! retried, and so keeps [`Checkpoint`]s instead of files.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::model::Model;
use crate::sampler::{Sampler, SamplerSettings};
use crate::session::{Checkpoint, Session, StopReason};
use crate::snapshot::Snapshot;
use crate::tokenizer::Tokenizer;
use crate::writer::prompt::{ChapterSpec, Prompt, SEPARATOR};
use crate::Result;

pub use crate::snapshot::{MODE_KEY, MODE_WRITE, TITLE_KEY};
/// Snapshot metadata key holding the story text shown when it was saved.
pub const TEXT_KEY: &str = "tui.story";
/// Snapshot metadata key holding how many chapters the story had.
pub const CHAPTERS_KEY: &str = "tui.chapters";
/// Snapshot metadata key holding the chapter length set in the settings
/// panel, or [`PLAN_LENGTH`]: like a chat's reply length, it is one of the
/// settings a loaded story goes on with.
pub const CHAPTER_LENGTH_KEY: &str = "tui.chapter_length";
/// The [`CHAPTER_LENGTH_KEY`] value of a story whose chapters take the
/// lengths of its plan (none was set).
pub const PLAN_LENGTH: &str = "plan";

/// One chapter written in this run.
#[derive(Debug, Clone)]
struct Chapter {
    spec: ChapterSpec,
    /// The text as shown: the blank line the model read before it (none
    /// for a first chapter, which follows the opening), the heading, then
    /// the generated text.
    shown: String,
    /// Before the heading was fed (retry returns here).
    before: Checkpoint,
    /// Right after the last generated token, before the separator
    /// (continue resumes here, so the separator is not in the way).
    open: Checkpoint,
}

/// What one write, retry or continue produced.
#[derive(Debug, Clone)]
pub struct Written {
    /// Tokens generated.
    pub tokens: usize,
    /// Wall time of the generation.
    pub seconds: f64,
    /// Why it stopped.
    pub stop: StopReason,
}

impl Written {
    /// Generated tokens per second.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// A story in progress.
pub struct Story {
    session: Session,
    /// The plan the next chapters follow: the prompt file's, or a bare
    /// one titled after a loaded story that is not the prompt file's.
    prompt: Prompt,
    /// The prompt file's story, which start over returns to.
    file_prompt: Prompt,
    /// The text before this run's chapters: the opening, or the story of
    /// a loaded session.
    base: String,
    /// Chapters in `base` (numbering goes on from there).
    base_chapters: usize,
    chapters: Vec<Chapter>,
    /// The state after the opening (start over).
    opening: Checkpoint,
    /// Chapter length set in the settings panel, instead of the prompt's.
    length: Option<usize>,
}

impl Story {
    /// Feeds the prompt's opening to a fresh session.
    pub fn start(
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        prompt: Prompt,
        settings: SamplerSettings,
        seed: u64,
    ) -> Result<Story> {
        let mut session = Session::new(model, tokenizer, Sampler::new(settings, seed));
        let base = prompt.opening();
        session.feed_text(&base)?;
        Ok(Story {
            opening: session.checkpoint(),
            session,
            file_prompt: prompt.clone(),
            prompt,
            base,
            base_chapters: 0,
            chapters: Vec::new(),
            length: None,
        })
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The session's token count, for another thread to read while a
    /// chapter is written ([`Session::share_tokens_in_state`]).
    pub fn share_tokens_in_state(&mut self) -> Arc<AtomicU64> {
        self.session.share_tokens_in_state()
    }

    /// The plan the story follows: the prompt file's, unless a story
    /// saved from another one was loaded (see [`Story::load`]).
    pub fn prompt(&self) -> &Prompt {
        &self.prompt
    }

    /// The text shown before this run's chapters.
    pub fn base_text(&self) -> &str {
        &self.base
    }

    /// The whole story as shown, laid out as the model read it.
    pub fn text(&self) -> String {
        let mut s = self.base.clone();
        for c in &self.chapters {
            s.push_str(&c.shown);
        }
        s
    }

    /// Chapters written so far, loaded ones included.
    pub fn chapter_count(&self) -> usize {
        self.base_chapters + self.chapters.len()
    }

    /// Tokens the next chapter may have.
    pub fn max_tokens(&self) -> usize {
        self.length_of(&self.next_spec())
    }

    /// Tokens chapter `spec` may have: the length set, else its planned one.
    fn length_of(&self, spec: &ChapterSpec) -> usize {
        self.length.unwrap_or(spec.length)
    }

    /// Replaces sampler settings, and the chapter length when `length` is
    /// given: from then on every chapter has it. Without one the length
    /// stays as it is, the plan's for each chapter unless one was set (a
    /// change of temperature must not pin one chapter's planned length
    /// onto all those after it).
    pub fn set(&mut self, settings: SamplerSettings, length: Option<usize>) -> Result<()> {
        settings.validate()?;
        self.session.sampler_mut().settings = settings;
        if let Some(n) = length {
            self.length = Some(n.max(1));
        }
        Ok(())
    }

    fn next_spec(&self) -> ChapterSpec {
        self.prompt.chapter(self.chapter_count() + 1, None)
    }

    /// Writes the next chapter: its heading and guidance (the box's text
    /// when given, else the prompt file's) are fed, then text streams to
    /// `on_text` (return false to stop) — the heading first, so it shows.
    pub fn write_next(
        &mut self,
        guidance: &str,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Written> {
        let mut spec = self.next_spec();
        if !guidance.trim().is_empty() {
            spec.guidance = Some(guidance.trim().to_string());
        }
        let before = self.session.checkpoint();
        // After a chapter the model has read the separator; show it too.
        let lead = if self.chapter_count() > 0 {
            SEPARATOR
        } else {
            ""
        };
        let (shown, open, w) = self.generate_chapter(lead, &spec, on_text)?;
        self.chapters.push(Chapter {
            spec,
            shown,
            before,
            open,
        });
        Ok(w)
    }

    /// Writes the last chapter again from the state before it. The RNG is
    /// not rewound, so the new chapter differs.
    pub fn retry(&mut self, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Written> {
        let Some(last) = self.chapters.pop() else {
            return Err(crate::QuillError::Invalid(
                "no chapter to retry yet: write one first".into(),
            ));
        };
        self.restore_keeping_rng(&last.before);
        let lead = if self.chapter_count() > 0 {
            SEPARATOR
        } else {
            ""
        };
        let (shown, open, w) = match self.generate_chapter(lead, &last.spec, on_text) {
            Ok(x) => x,
            Err(e) => {
                self.chapters.push(last);
                return Err(e);
            }
        };
        self.chapters.push(Chapter {
            shown,
            open,
            ..last
        });
        Ok(w)
    }

    /// Goes on with the last chapter from where its text stopped.
    pub fn continue_chapter(&mut self, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Written> {
        let Some(last) = self.chapters.last() else {
            return Err(crate::QuillError::Invalid(
                "no chapter to continue yet: write one first".into(),
            ));
        };
        let open = last.open.clone();
        let stops = last.spec.stop.clone();
        // This chapter's length (`max_tokens` is the next one's).
        let length = self.length_of(&last.spec);
        self.restore_keeping_rng(&open);
        let (text, w) = self.generate_text(length, &stops, on_text)?;
        let open = self.session.checkpoint();
        self.session.feed_text(SEPARATOR)?;
        if let Some(last) = self.chapters.last_mut() {
            last.shown.push_str(&text);
            last.open = open;
        }
        Ok(w)
    }

    /// Back to the prompt file's opening; chapters are forgotten.
    pub fn reset(&mut self) {
        let opening = self.opening.clone();
        self.restore_keeping_rng(&opening);
        // The state is the prompt file's opening again, so its plan is too.
        self.prompt = self.file_prompt.clone();
        self.base = self.prompt.opening();
        self.base_chapters = 0;
        self.chapters.clear();
    }

    /// The session as a snapshot, with the story text, chapter count and
    /// chapter length in its metadata (so loading it shows the story and
    /// goes on as it was set).
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::capture(&self.session);
        let x = &mut snap.meta.extra;
        x.insert(MODE_KEY.into(), MODE_WRITE.into());
        x.insert(TITLE_KEY.into(), self.prompt.title.clone());
        x.insert(TEXT_KEY.into(), self.text());
        x.insert(CHAPTERS_KEY.into(), self.chapter_count().to_string());
        let length = self
            .length
            .map_or_else(|| PLAN_LENGTH.to_string(), |n| n.to_string());
        x.insert(CHAPTER_LENGTH_KEY.into(), length);
        snap
    }

    /// Continues a saved story (its state, RNG, settings and chapter
    /// length); the chapter history of this run is dropped, so retry and
    /// continue wait for the next chapter. A story saved before the length
    /// was recorded keeps the current one, as an old chat session keeps
    /// the current reply length.
    ///
    /// A story keeps its own identity: when its recorded title is not the
    /// prompt file's, the prompt file's chapter plan (headings, guidance,
    /// lengths, stops) belongs to another story and would be written into
    /// this one, so the story goes on as an untitled one would ("Chapter
    /// N", no guidance but the box's) under its own title. Returns a note
    /// saying so in that case.
    pub fn load(&mut self, snap: &Snapshot) -> Result<Option<String>> {
        snap.restore_into(&mut self.session, false)?;
        let x = &snap.meta.extra;
        let title = x.get(TITLE_KEY).map(|t| t.trim()).unwrap_or_default();
        let note = if title == self.file_prompt.title {
            self.prompt = self.file_prompt.clone();
            None
        } else {
            // A story saved without a title cannot be told apart from
            // another: it is not assumed to be the prompt file's.
            let title = if title.is_empty() {
                "Untitled story"
            } else {
                title
            };
            self.prompt = Prompt::untitled(title);
            Some(format!(
                "`{title}` is not `{}`: its chapters go on as \"Chapter N\", without the prompt file's plan",
                self.file_prompt.title
            ))
        };
        self.base = x
            .get(TEXT_KEY)
            .cloned()
            .unwrap_or_else(|| format!("…{}", snap.meta.text_tail));
        self.base_chapters = x
            .get(CHAPTERS_KEY)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        match x.get(CHAPTER_LENGTH_KEY).map(|v| v.trim()) {
            Some(PLAN_LENGTH) => self.length = None,
            Some(v) => {
                if let Some(n) = v.parse::<usize>().ok().filter(|&n| n > 0) {
                    self.length = Some(n);
                }
            }
            None => {}
        }
        self.chapters.clear();
        Ok(note)
    }

    /// Feeds the spec's heading and guidance, generates, then feeds the
    /// separator. Returns the shown text (`lead`, the heading, the text)
    /// and the state before the separator.
    fn generate_chapter(
        &mut self,
        lead: &str,
        spec: &ChapterSpec,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, Checkpoint, Written)> {
        self.session.feed_text(&spec.prefix())?;
        let mut shown = lead.to_string();
        let heading = spec.heading.trim();
        if !heading.is_empty() {
            shown.push_str(&format!("## {heading}\n\n"));
        }
        if !shown.is_empty() {
            on_text(&shown);
        }
        let (text, w) = self.generate_text(self.length_of(spec), &spec.stop, on_text)?;
        shown.push_str(&text);
        let open = self.session.checkpoint();
        self.session.feed_text(SEPARATOR)?;
        Ok((shown, open, w))
    }

    fn generate_text(
        &mut self,
        max_tokens: usize,
        stops: &[String],
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, Written)> {
        let g = self.session.generate(max_tokens, stops, |s| on_text(s))?;
        // A character cut by the budget is shown lossily now: the text
        // that follows (separator, heading) would break it anyway.
        let mut text = g.text;
        let rest = self.session.flush_text();
        if !rest.is_empty() {
            on_text(&rest);
            text.push_str(&rest);
        }
        let w = Written {
            tokens: g.tokens.len(),
            seconds: g.seconds,
            stop: g.stop,
        };
        Ok((text, w))
    }

    /// Returns to a checkpoint but keeps the RNG going, so a retried
    /// chapter is a fresh draw rather than the same text again.
    fn restore_keeping_rng(&mut self, cp: &Checkpoint) {
        let rng = self.session.sampler().rng().clone();
        self.session.restore(cp);
        let s = self.session.sampler();
        let sampler = Sampler::from_parts(s.settings.clone(), rng, s.counts().clone());
        *self.session.sampler_mut() = sampler;
    }
}
