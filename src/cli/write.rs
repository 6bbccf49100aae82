//! `quill write`: stories from prompt files, chapter by chapter, into one
//! folder per story (see `quill::writer` and the README's "Writing
//! stories" section).

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use quill::model::Model;
use quill::tokenizer::Tokenizer;
use quill::writer::{
    self, BranchRequest, ChapterRecord, ChapterSpec, Manifest, Outcome, Plan, Progress, Prompt,
    Request, WriteError,
};
use quill::QuillError;

use super::generate::SamplerArgs;
use super::ModelArgs;

/// Arguments of `quill write`.
#[derive(clap::Args)]
pub struct Args {
    /// Prompt files: `.toml` (see prompts/), or plain text continued as one chapter.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Folder that receives one folder per story (named after the prompt file).
    #[arg(long, value_name = "DIR", default_value = "stories")]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Tokens of a plain-text prompt's chapter (default 500) and of chapters --extend makes up (default: the last chapter's length).
    #[arg(short = 'n', long = "max-tokens", value_name = "N")]
    n: Option<usize>,
    /// Stories written at the same time, one thread each.
    #[arg(long, value_name = "N", default_value_t = 1)]
    jobs: usize,
    /// Continue unfinished stories from their last finished chapter (finished chapters are never rewritten).
    #[arg(long, conflicts_with = "extend")]
    resume: bool,
    /// Add K chapters to finished stories, from their last snapshot.
    #[arg(long, value_name = "K")]
    extend: Option<usize>,
    /// Write an alternative continuation into the folder STORY--NAME.
    #[arg(long, value_name = "NAME", requires = "from_chapter")]
    branch: Option<String>,
    /// The chapter the branch continues from (chapters 1..=N are shared).
    #[arg(long, value_name = "N", requires = "branch")]
    from_chapter: Option<usize>,
    #[command(flatten)]
    sampler: SamplerArgs,
}

/// Runs `quill write`.
pub fn run(a: Args) -> Result<()> {
    if a.jobs == 0 {
        anyhow::bail!("--jobs must be at least 1");
    }
    if a.n == Some(0) {
        anyhow::bail!("-n must be at least 1 token");
    }
    // Every prompt is read and every folder checked before a model is
    // loaded or a file written: a typo in the third file should not cost
    // the first two stories' time.
    let mut plans = Vec::new();
    let mut dirs = HashSet::new();
    for file in &a.files {
        let prompt = Prompt::load(file, a.n)?;
        let settings = a
            .sampler
            .apply(prompt.sampler.clone().unwrap_or_default())
            .with_context(|| format!("sampler settings for {}", file.display()))?;
        let plan = writer::plan(Request {
            prompt,
            out: a.out.clone(),
            resume: a.resume,
            extend: a.extend,
            branch: a.branch.clone().map(|name| BranchRequest {
                name,
                from_chapter: a.from_chapter.unwrap_or(0),
            }),
            seed: a.sampler.seed,
            sampler: settings,
            default_length: a.n,
        })?;
        if !dirs.insert(plan.dir.clone()) {
            anyhow::bail!(
                "two prompt files would write to {}: rename one of them",
                plan.dir.display()
            );
        }
        plans.push(plan);
    }
    let ui = Ui::new(
        plans.iter().map(Plan::to_write).sum(),
        plans.len(),
        std::io::stderr().is_terminal(),
    );
    let t0 = Instant::now();
    let mut results: Vec<Option<Result<Outcome, WriteError>>> = Vec::new();
    let mut work = Vec::new();
    let mut models: HashMap<Option<PathBuf>, (Arc<Model>, Arc<Tokenizer>)> = HashMap::new();
    for (i, plan) in plans.iter().enumerate() {
        let quiet = Story::new(&ui, plan);
        match writer::up_to_date(plan, &quiet)? {
            Some(o) => {
                ui.line(&format!(
                    "[{}] finished ({} chapters); nothing to do",
                    plan.name(),
                    o.chapters_total
                ));
                ui.story_finished();
                results.push(Some(Ok(o)));
            }
            None => {
                // --model, then the prompt's `model`, then $QUILL_MODEL.
                let mut args = a.model.clone();
                if args.model.is_none() {
                    args.model = plan.prompt.model.clone();
                }
                let key = args.model.clone();
                if !models.contains_key(&key) {
                    let loaded = args.load()?;
                    models.insert(key.clone(), loaded);
                }
                let (m, t) = &models[&key];
                plan.sampler
                    .check_vocab(m.info().dims.vocab)
                    .with_context(|| {
                        format!("sampler settings for {}", plan.prompt.path.display())
                    })?;
                work.push((i, m.clone(), t.clone()));
                results.push(None);
            }
        }
    }
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, Result<Outcome, WriteError>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..a.jobs.min(work.len()) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some((i, model, tok)) = work.get(k) else {
                    break;
                };
                let plan = &plans[*i];
                let story = Story::new(&ui, plan);
                story.start();
                let r = writer::write(plan, model.clone(), tok.clone(), &story);
                story.finish(&r);
                done.lock().expect("no panics").push((*i, r));
            });
        }
    });
    for (i, r) in done.into_inner().expect("no panics") {
        results[i] = Some(r);
    }
    ui.finish();
    let mut failures = Vec::new();
    let (mut chapters, mut tokens) = (0, 0);
    for (plan, r) in plans.iter().zip(results) {
        match r.expect("every story ran") {
            Ok(o) => {
                chapters += o.chapters_written;
                tokens += o.tokens;
            }
            Err(e) => failures.push((plan, e)),
        }
    }
    if failures.is_empty() {
        eprintln!(
            "[done] {} chapter(s), {} tokens in {:.2}s; stories in {}",
            chapters,
            tokens,
            t0.elapsed().as_secs_f64(),
            a.out.display()
        );
        return Ok(());
    }
    let n_fail = failures.len();
    let mut errors: Vec<anyhow::Error> = failures
        .into_iter()
        .map(|(plan, e)| explain(plan, e))
        .collect();
    if plans.len() == 1 {
        return Err(errors.remove(0));
    }
    for e in &errors {
        eprintln!("quill: error: {e:#}");
    }
    anyhow::bail!("{n_fail} of {} stories failed (see above)", plans.len())
}

/// The error with the story it belongs to and, for a failed write, what
/// still holds (read back from the manifest, which is written last).
fn explain(plan: &Plan, e: WriteError) -> anyhow::Error {
    let mut hint = String::new();
    // The write error itself says what to fix (space, permissions); this
    // says what is safe and how to go on once it is fixed.
    if matches!(e, WriteError::Engine(QuillError::Write { .. })) {
        let kept = Manifest::load(&plan.dir)
            .ok()
            .flatten()
            .map_or(0, |m| m.done());
        hint = if kept > 0 {
            format!("; chapters 1 to {kept} are kept: then rerun with --resume")
        } else {
            "; no chapter was finished: then run again".into()
        };
    }
    anyhow::anyhow!("story {}: {e}{hint}", plan.dir.display())
}

/// Progress output: bars on a terminal, plain lines otherwise.
struct Ui {
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    stories: usize,
    stories_done: AtomicUsize,
}

impl Ui {
    fn new(chapters: usize, stories: usize, terminal: bool) -> Ui {
        if !terminal {
            return Ui {
                multi: None,
                overall: None,
                stories,
                stories_done: AtomicUsize::new(0),
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        // Styled before it is added, so no unstyled frame is ever drawn.
        let overall = ProgressBar::new(chapters as u64)
            .with_style(
                ProgressStyle::with_template(
                    "{prefix:>12.bold} [{bar:30.green/dim}] {pos}/{len} chapters · {msg} · {elapsed}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            )
            .with_prefix("overall")
            .with_message(format!("stories 0/{stories}"));
        let overall = multi.add(overall);
        overall.enable_steady_tick(Duration::from_millis(500));
        Ui {
            multi: Some(multi),
            overall: Some(overall),
            stories,
            stories_done: AtomicUsize::new(0),
        }
    }

    /// A line of text above the bars (or on its own without them).
    fn line(&self, s: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(s);
            }
            None => eprintln!("{s}"),
        }
    }

    fn chapter_finished(&self) {
        if let Some(o) = &self.overall {
            o.inc(1);
        }
    }

    fn story_finished(&self) {
        let n = self.stories_done.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(o) = &self.overall {
            o.set_message(format!("stories {n}/{}", self.stories));
        }
    }

    fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
    }
}

/// One story's progress: a per-chapter token bar on a terminal.
struct Story<'a> {
    ui: &'a Ui,
    plan: &'a Plan,
    /// Made at the first chapter, reused for the next ones.
    bar: OnceCell<ProgressBar>,
}

impl<'a> Story<'a> {
    fn new(ui: &'a Ui, plan: &'a Plan) -> Story<'a> {
        Story {
            ui,
            plan,
            bar: OnceCell::new(),
        }
    }

    fn name(&self) -> String {
        self.plan.name()
    }

    fn start(&self) {
        let p = self.plan;
        let from = if p.done == 0 {
            "writing".to_string()
        } else {
            format!("continuing after chapter {},", p.done)
        };
        self.ui.line(&format!(
            "[{}] {from} chapters {} to {} into {} (seed {})",
            self.name(),
            p.done + 1,
            p.target,
            p.dir.display(),
            p.seed
        ));
    }

    fn finish(&self, r: &Result<Outcome, WriteError>) {
        if let Some(b) = self.bar.get() {
            b.finish_and_clear();
        }
        if let Ok(o) = r {
            self.ui.line(&format!(
                "[{}] finished: {} chapters → {}",
                self.name(),
                o.chapters_total,
                o.dir.join("story.md").display()
            ));
        }
        self.ui.story_finished();
    }
}

impl Progress for Story<'_> {
    fn note(&self, message: &str) {
        self.ui.line(&format!("[{}] note: {message}", self.name()));
    }

    fn chapter_start(&self, number: usize, last: usize, spec: &ChapterSpec) {
        let heading = if spec.heading.is_empty() {
            String::new()
        } else {
            format!(" \"{}\"", spec.heading)
        };
        match &self.ui.multi {
            None => self.ui.line(&format!(
                "[{}] chapter {number}/{last}{heading}: up to {} tokens",
                self.name(),
                spec.length
            )),
            Some(m) => {
                let bar = self.bar.get_or_init(|| {
                    let style = ProgressStyle::with_template(
                        "{prefix:>12.bold} [{bar:30.cyan/dim}] {pos}/{len} tokens · {rate} · ETA {eta} · {msg}",
                    )
                    .expect("valid template")
                    .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        // indicatif's {per_sec} prints four decimals.
                        let _ = write!(w, "{:.1} tokens/s", s.per_sec());
                    })
                    .progress_chars("=> ");
                    m.add(
                        ProgressBar::new(spec.length as u64)
                            .with_style(style)
                            .with_prefix(self.name()),
                    )
                });
                bar.reset();
                bar.set_length(spec.length as u64);
                bar.set_message(format!("chapter {number}/{last}{heading}"));
            }
        }
    }

    fn tokens(&self, generated: usize) {
        if let Some(b) = self.bar.get() {
            b.set_position(generated as u64);
        }
    }

    fn chapter_done(&self, r: &ChapterRecord) {
        self.ui.chapter_finished();
        self.ui.line(&format!(
            "[{}] chapter {}/{} done: {} tokens in {:.2}s ({:.1} tokens/s), stop: {}",
            self.name(),
            r.number,
            self.plan.target,
            r.tokens,
            r.seconds,
            r.tokens_per_s,
            r.stop_reason
        ));
    }
}
