//! Prompt files: what a story is made of, and the exact text the model
//! reads for it.
//!
//! A `.toml` prompt file holds a title, the premise that opens the story,
//! optional model / seed / sampler settings and a list of `[[chapter]]`
//! tables (heading, optional guidance, length in tokens, optional stop
//! strings); optional `[[extra]]` tables are the chapters `--extend` adds.
//! Any other file is a plain-text prompt: its text is continued as one
//! chapter whose length comes from `-n`.
//!
//! Errors name the file, the line and the field (`chapter[2].length`,
//! counting from 1), because a prompt file is written by hand and the
//! message is all the user has to find the mistake.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::sampler::SamplerSettings;

/// Fed after every chapter's text, before its snapshot is taken: the next
/// chapter's heading then starts on a fresh paragraph.
pub const SEPARATOR: &str = "\n\n";

/// Length of a plain-text prompt's chapter when `-n` is not given.
pub const DEFAULT_TEXT_LENGTH: usize = 500;

/// A prompt file that cannot be used: where, and why. Shown as one line:
/// `FILE:LINE: field `FIELD`: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.one_line())]
pub struct PromptError {
    /// The prompt file.
    pub path: PathBuf,
    /// 1-based line of the problem.
    pub line: usize,
    /// The field, as a path such as `chapter[2].length` (1-based indices),
    /// when the problem belongs to one.
    pub field: Option<String>,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl PromptError {
    fn one_line(&self) -> String {
        let mut s = format!("{}:{}: ", self.path.display(), self.line);
        if let Some(field) = &self.field {
            // A field path quotes the file's own keys, and a quoted TOML key
            // may hold a line break (["\n"]): show control characters
            // escaped, so the key stays recognisable and the line one line.
            let shown: String = field
                .chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            s.push_str(&format!("field `{shown}`: "));
        }
        // One line, whatever the parser put in its message.
        let words: Vec<&str> = self.message.split_whitespace().collect();
        s.push_str(&words.join(" "));
        s
    }
}

/// Whether a prompt came from a TOML file or plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptKind {
    /// A `.toml` prompt file.
    Toml,
    /// Plain text, continued as is.
    Text,
}

/// One chapter: what is fed before it and how much to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChapterSpec {
    /// The heading (`## heading` in the text); empty for a plain-text
    /// prompt's chapter, which continues the prompt directly.
    pub heading: String,
    /// Text fed to the model after the heading, steering the chapter; it
    /// is not part of the chapter's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<String>,
    /// Most tokens to generate.
    pub length: usize,
    /// The chapter ends early where one of these appears (not kept).
    #[serde(default)]
    pub stop: Vec<String>,
}

impl ChapterSpec {
    /// The text fed before the chapter is generated: `## heading\n\n`
    /// (when there is a heading), then `guidance\n\n` (when there is some).
    pub fn prefix(&self) -> String {
        let mut s = String::new();
        let heading = self.heading.trim();
        if !heading.is_empty() {
            s.push_str("## ");
            s.push_str(heading);
            s.push_str("\n\n");
        }
        if let Some(g) = self.guidance.as_deref().map(str::trim) {
            if !g.is_empty() {
                s.push_str(g);
                s.push_str("\n\n");
            }
        }
        s
    }

    /// The chapter's Markdown file: the heading, a blank line and the
    /// generated text, ending in one newline. A heading-less chapter keeps
    /// its leading whitespace, since it continues the prompt mid-line.
    pub fn render(&self, text: &str) -> String {
        let heading = self.heading.trim();
        let body = if heading.is_empty() {
            text.trim_end()
        } else {
            text.trim()
        };
        let mut s = String::new();
        if !heading.is_empty() {
            s.push_str("## ");
            s.push_str(heading);
            s.push('\n');
            if !body.is_empty() {
                s.push('\n');
            }
        }
        s.push_str(body);
        if !body.is_empty() {
            s.push('\n');
        }
        s
    }
}

/// A parsed, checked prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// The file it came from.
    pub path: PathBuf,
    /// TOML or plain text.
    pub kind: PromptKind,
    /// The title (a plain-text prompt's file name without extension).
    pub title: String,
    /// The premise (TOML) or the whole text (plain text).
    pub premise: String,
    /// Model file named by the prompt (relative to the prompt's folder).
    pub model: Option<PathBuf>,
    /// Seed named by the prompt.
    pub seed: Option<u64>,
    /// Sampler settings named by the prompt (unset keys take defaults).
    pub sampler: Option<SamplerSettings>,
    /// The chapters a plain run writes (at least one).
    pub chapters: Vec<ChapterSpec>,
    /// Chapters `--extend` adds, in order, before falling back to
    /// "Chapter N".
    pub extra: Vec<ChapterSpec>,
}

impl Prompt {
    /// A story with a title and nothing else: chapters are "Chapter N" of
    /// the default length, steered only by what the user adds (Write mode
    /// without a prompt file, or a loaded story that is not the prompt
    /// file's).
    pub fn untitled(title: &str) -> Prompt {
        Prompt {
            path: PathBuf::from("untitled.toml"),
            kind: PromptKind::Toml,
            title: title.to_string(),
            premise: String::new(),
            model: None,
            seed: None,
            sampler: None,
            chapters: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Reads a prompt file: `.toml` is a TOML prompt, anything else plain
    /// text whose single chapter is `text_length` tokens long (default
    /// [`DEFAULT_TEXT_LENGTH`]).
    pub fn load(path: &Path, text_length: Option<usize>) -> Result<Prompt, PromptError> {
        let err = |line: usize, message: String| PromptError {
            path: path.to_path_buf(),
            line,
            field: None,
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| err(1, format!("cannot read it: {e}")))?;
        let is_toml = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        let src = match std::str::from_utf8(&bytes) {
            Ok(s) => s,
            Err(e) => {
                let at = e.valid_up_to();
                // The bytes before the bad one decode the same in a lossy
                // copy, so the copy can name the field they belong to.
                let lossy = String::from_utf8_lossy(&bytes);
                let field = if is_toml {
                    field_at(&lossy, at, false)
                } else {
                    None
                };
                return Err(PromptError {
                    path: path.to_path_buf(),
                    line: line_of(&lossy, at),
                    field,
                    message: format!(
                        "the file is not valid UTF-8 text (bad byte 0x{:02x} at byte {at}); save it as UTF-8",
                        bytes[at]
                    ),
                });
            }
        };
        if is_toml {
            Prompt::parse_toml(path, src)
        } else {
            Prompt::from_text(path, src, text_length.unwrap_or(DEFAULT_TEXT_LENGTH))
        }
    }

    /// A plain-text prompt: the text (less the one trailing line break most
    /// editors add) is continued as one chapter of `length` tokens.
    pub fn from_text(path: &Path, src: &str, length: usize) -> Result<Prompt, PromptError> {
        let err = |message: &str| PromptError {
            path: path.to_path_buf(),
            line: 1,
            field: None,
            message: message.to_string(),
        };
        if src.trim().is_empty() {
            return Err(err(
                "the file is empty: write the text to continue (or use a .toml prompt file)",
            ));
        }
        if length == 0 {
            return Err(err("the chapter length (-n) must be at least 1 token"));
        }
        let text = if src.ends_with("\n\n") || src.ends_with("\r\n\r\n") {
            src
        } else {
            src.strip_suffix("\r\n")
                .or_else(|| src.strip_suffix('\n'))
                .unwrap_or(src)
        };
        Ok(Prompt {
            path: path.to_path_buf(),
            kind: PromptKind::Text,
            title: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "story".into()),
            premise: text.to_string(),
            model: None,
            seed: None,
            sampler: None,
            chapters: vec![ChapterSpec {
                heading: String::new(),
                guidance: None,
                length,
                stop: Vec::new(),
            }],
            extra: Vec::new(),
        })
    }

    /// Parses and checks a TOML prompt (`path` names it in errors and
    /// anchors a relative `model` path).
    pub fn parse_toml(path: &Path, src: &str) -> Result<Prompt, PromptError> {
        let at = |span: Range<usize>, field: Option<String>, message: String| PromptError {
            path: path.to_path_buf(),
            line: line_of(src, span.start),
            field,
            message,
        };
        if src.trim().is_empty() {
            return Err(at(
                0..0,
                None,
                "the file is empty: a prompt needs `title`, `premise` and at least one [[chapter]] table".into(),
            ));
        }
        let raw: RawPrompt = toml::from_str(src).map_err(|e| serde_error(path, src, &e))?;
        let title = raw.title.get_ref().trim().to_string();
        if title.is_empty() || title.contains('\n') {
            return Err(at(
                raw.title.span(),
                Some("title".into()),
                "must be one non-empty line".into(),
            ));
        }
        let model = match &raw.model {
            None => None,
            Some(m) if m.get_ref().trim().is_empty() => {
                return Err(at(
                    m.span(),
                    Some("model".into()),
                    "is empty: name a model file or leave the key out".into(),
                ))
            }
            Some(m) => {
                let p = PathBuf::from(m.get_ref());
                Some(if p.is_relative() {
                    path.parent().unwrap_or(Path::new("")).join(p)
                } else {
                    p
                })
            }
        };
        let sampler = match &raw.sampler {
            None => None,
            Some(s) => {
                if let Err(e) = s.get_ref().validate() {
                    let msg = match e {
                        crate::QuillError::Invalid(m) => m,
                        other => other.to_string(),
                    };
                    // validate() names the setting first; point at its key.
                    let key = SAMPLER_KEYS
                        .iter()
                        .find(|k| msg.starts_with(*k))
                        .copied()
                        .unwrap_or("");
                    let span = key_span(src, &["sampler", key]).unwrap_or(s.span());
                    let field = if key.is_empty() {
                        "sampler".to_string()
                    } else {
                        format!("sampler.{key}")
                    };
                    return Err(at(span, Some(field), msg));
                }
                Some(s.get_ref().clone())
            }
        };
        let chapters = match &raw.chapter {
            Some(list) if !list.get_ref().is_empty() => list
                .get_ref()
                .iter()
                .enumerate()
                .map(|(i, c)| check_chapter(path, src, "chapter", i, c))
                .collect::<Result<Vec<_>, _>>()?,
            other => {
                let span = other.as_ref().map(|l| l.span()).unwrap_or(0..0);
                return Err(at(
                    span,
                    Some("chapter".into()),
                    "the prompt has no chapters: add at least one [[chapter]] table with `heading` and `length`".into(),
                ));
            }
        };
        let extra = raw
            .extra
            .iter()
            .enumerate()
            .map(|(i, c)| check_chapter(path, src, "extra", i, c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Prompt {
            path: path.to_path_buf(),
            kind: PromptKind::Toml,
            title,
            premise: raw.premise.get_ref().clone(),
            model,
            seed: raw.seed,
            sampler,
            chapters,
            extra,
        })
    }

    /// The text that opens the story, fed once to a fresh state. TOML:
    /// `# title\n\n` then the trimmed premise and `\n\n` (when the premise
    /// is not blank). Plain text: the text itself.
    pub fn opening(&self) -> String {
        match self.kind {
            PromptKind::Text => self.premise.clone(),
            PromptKind::Toml => {
                let mut s = format!("# {}\n\n", self.title);
                let p = self.premise.trim();
                if !p.is_empty() {
                    s.push_str(p);
                    s.push_str("\n\n");
                }
                s
            }
        }
    }

    /// Chapter `n` (from 1): a `[[chapter]]`, then an `[[extra]]`, then
    /// "Chapter n" with `default_length` tokens (else the last defined
    /// chapter's length) and the last defined chapter's stop strings.
    pub fn chapter(&self, n: usize, default_length: Option<usize>) -> ChapterSpec {
        let defined: Vec<&ChapterSpec> = self.chapters.iter().chain(&self.extra).collect();
        if let Some(c) = n.checked_sub(1).and_then(|i| defined.get(i)) {
            return (*c).clone();
        }
        let last = defined.last().copied();
        ChapterSpec {
            heading: format!("Chapter {n}"),
            guidance: None,
            length: default_length
                .or(last.map(|c| c.length))
                .unwrap_or(DEFAULT_TEXT_LENGTH),
            stop: last.map(|c| c.stop.clone()).unwrap_or_default(),
        }
    }

    /// Whether chapter `n` (from 1) is written out in the file (rather than
    /// made up by `--extend`), so a change to it can be told apart.
    pub fn defines(&self, n: usize) -> bool {
        self.kind == PromptKind::Toml && n >= 1 && n <= self.chapters.len() + self.extra.len()
    }

    /// The story's folder name: the prompt file's name without extension,
    /// with anything but letters, digits, `-`, `_` and `.` replaced by `-`.
    pub fn slug(&self) -> String {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let s: String = stem
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let s = s.trim_matches('.').to_string();
        if s.is_empty() {
            "story".into()
        } else {
            s
        }
    }
}

/// Settings that `SamplerSettings::validate` names at the start of its
/// messages (longest first, so `top_p` is not taken for `top`).
const SAMPLER_KEYS: [&str; 7] = [
    "penalty_decay",
    "temperature",
    "frequency",
    "presence",
    "min_p",
    "top_p",
    "top_k",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrompt {
    title: Spanned<String>,
    premise: Spanned<String>,
    #[serde(default)]
    model: Option<Spanned<String>>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    sampler: Option<Spanned<SamplerSettings>>,
    #[serde(default)]
    chapter: Option<Spanned<Vec<Spanned<RawChapter>>>>,
    #[serde(default)]
    extra: Vec<Spanned<RawChapter>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChapter {
    heading: Spanned<String>,
    #[serde(default)]
    guidance: Option<String>,
    // Signed, so that a negative length gets our message, not serde's.
    length: Spanned<i64>,
    #[serde(default)]
    stop: Vec<Spanned<String>>,
}

fn check_chapter(
    path: &Path,
    src: &str,
    list: &str,
    i: usize,
    c: &Spanned<RawChapter>,
) -> Result<ChapterSpec, PromptError> {
    let c = c.get_ref();
    let err = |span: Range<usize>, key: &str, message: String| PromptError {
        path: path.to_path_buf(),
        line: line_of(src, span.start),
        field: Some(format!("{list}[{}].{key}", i + 1)),
        message,
    };
    let heading = c.heading.get_ref().trim();
    if heading.is_empty() || heading.contains('\n') {
        return Err(err(
            c.heading.span(),
            "heading",
            "must be one non-empty line (e.g. \"Chapter 1: The Storm\")".into(),
        ));
    }
    let length = *c.length.get_ref();
    if length <= 0 {
        return Err(err(
            c.length.span(),
            "length",
            format!("must be a positive number of tokens, got {length}"),
        ));
    }
    // An empty stop string would end the chapter before its first token.
    if let Some((k, s)) = c
        .stop
        .iter()
        .enumerate()
        .find(|(_, s)| s.get_ref().is_empty())
    {
        return Err(err(
            s.span(),
            &format!("stop[{}]", k + 1),
            "is empty: a stop string needs at least one character (or leave it out)".into(),
        ));
    }
    Ok(ChapterSpec {
        heading: heading.to_string(),
        guidance: c.guidance.clone(),
        length: usize::try_from(length).unwrap_or(usize::MAX),
        stop: c.stop.iter().map(|s| s.get_ref().clone()).collect(),
    })
}

/// Turns a serde/TOML error into one naming the line and the field.
fn serde_error(path: &Path, src: &str, e: &toml::de::Error) -> PromptError {
    let message = e.message().to_string();
    let span = e.span().unwrap_or(0..0);
    // "missing field `x`" points at the table lacking it; "unknown field"
    // and type errors point at the key or the value itself.
    let named = ["missing field `", "unknown field `", "duplicate key `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    let missing = message.starts_with("missing field");
    let mut field = field_at(src, span.start, missing);
    if let Some(name) = named {
        field = Some(match field {
            Some(f) if f == name || f.ends_with(&format!(".{name}")) => f,
            Some(f) if missing => format!("{f}.{name}"),
            Some(f) if message.starts_with("unknown") => format!("{f}.{name}"),
            _ => name,
        });
    }
    PromptError {
        path: path.to_path_buf(),
        // A missing top-level key has no line of its own: say line 1.
        line: if missing && !field.as_deref().unwrap_or("").contains('.') {
            1
        } else {
            line_of(src, span.start)
        },
        field,
        message,
    }
}

/// 1-based line holding byte `at`.
fn line_of(src: &str, at: usize) -> usize {
    let at = at.min(src.len());
    1 + src.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count()
}

enum Seg {
    Key(String),
    Index(usize),
}

/// The field (`chapter[2].stop[1]`, 1-based indices) whose key or value
/// holds byte `at`; with `tables_only`, the innermost table holding it.
/// `None` when the text does not parse or `at` is outside every field.
fn field_at(src: &str, at: usize, tables_only: bool) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(src).ok()?;
    let mut path = Vec::new();
    walk_table(doc.as_table(), at, tables_only, &mut path);
    if path.is_empty() {
        return None;
    }
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(&k);
            }
            Seg::Index(i) => s.push_str(&format!("[{}]", i + 1)),
        }
    }
    Some(s)
}

fn contains(span: Option<Range<usize>>, at: usize) -> bool {
    span.is_some_and(|s| s.start <= at && at < s.end.max(s.start + 1))
}

fn walk_table(t: &toml_edit::Table, at: usize, tables_only: bool, path: &mut Vec<Seg>) -> bool {
    for (k, item) in t.iter() {
        path.push(Seg::Key(k.to_string()));
        let on_key = !tables_only && contains(t.key(k).and_then(|k| k.span()), at);
        if on_key || walk_item(item, at, tables_only, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn walk_item(item: &toml_edit::Item, at: usize, tables_only: bool, path: &mut Vec<Seg>) -> bool {
    match item {
        toml_edit::Item::Table(t) => walk_table(t, at, tables_only, path) || contains(t.span(), at),
        toml_edit::Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                if walk_table(t, at, tables_only, path) || contains(t.span(), at) {
                    return true;
                }
                path.pop();
            }
            false
        }
        toml_edit::Item::Value(v) if !tables_only => walk_value(v, at, path),
        _ => false,
    }
}

fn walk_value(v: &toml_edit::Value, at: usize, path: &mut Vec<Seg>) -> bool {
    match v {
        toml_edit::Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                if walk_value(e, at, path) {
                    return true;
                }
                path.pop();
            }
        }
        toml_edit::Value::InlineTable(t) => {
            for (k, e) in t.iter() {
                path.push(Seg::Key(k.to_string()));
                if contains(t.key(k).and_then(|k| k.span()), at) || walk_value(e, at, path) {
                    return true;
                }
                path.pop();
            }
        }
        _ => {}
    }
    contains(v.span(), at)
}

/// Span of the value at `keys` (e.g. `["sampler", "temperature"]`).
fn key_span(src: &str, keys: &[&str]) -> Option<Range<usize>> {
    let doc = toml_edit::ImDocument::parse(src).ok()?;
    let mut item = doc.as_item();
    for k in keys {
        item = item.as_table_like()?.get(k)?;
    }
    item.span()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Prompt, PromptError> {
        Prompt::parse_toml(Path::new("p.toml"), src)
    }

    const GOOD: &str = r#"title = "T"
premise = """
Once.
"""

[sampler]
temperature = 0.8

[[chapter]]
heading = "One"
length = 10

[[chapter]]
heading = "Two"
guidance = "Rain."
length = 20
stop = ["END"]
"#;

    #[test]
    fn good_prompt_and_layout() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.opening(), "# T\n\nOnce.\n\n");
        assert_eq!(p.chapters.len(), 2);
        assert_eq!(p.chapter(2, None).prefix(), "## Two\n\nRain.\n\n");
        let c3 = p.chapter(3, None);
        assert_eq!((c3.heading.as_str(), c3.length), ("Chapter 3", 20));
        assert_eq!(c3.stop, vec!["END".to_string()]);
        assert_eq!(p.chapter(3, Some(7)).length, 7);
        assert_eq!(p.chapter(1, None).render("\n text \n"), "## One\n\ntext\n");
        assert_eq!(p.sampler.unwrap().temperature, 0.8);
    }

    fn error(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_line_and_field() {
        let missing = GOOD.replace("length = 20\n", "");
        assert_eq!(
            error(&missing),
            "p.toml:13: field `chapter[2].length`: missing field `length`"
        );
        let e = error(&GOOD.replace("length = 20", "length = \"x\""));
        assert!(
            e.starts_with("p.toml:16: field `chapter[2].length`: invalid type"),
            "{e}"
        );
        let e = error(&GOOD.replace("length = 20", "length = -3"));
        assert!(
            e.starts_with("p.toml:16: field `chapter[2].length`: must be a positive"),
            "{e}"
        );
        let e = error(&GOOD.replace("length = 10", "length = 0"));
        assert!(e.starts_with("p.toml:11: field `chapter[1].length`"), "{e}");
        let e = error(&GOOD.replace("stop = [\"END\"]", "stop = [\"END\", 3]"));
        assert!(
            e.starts_with("p.toml:17: field `chapter[2].stop[2]`"),
            "{e}"
        );
        let e = error(&GOOD.replace("guidance", "guidanse"));
        assert!(
            e.starts_with("p.toml:15: field `chapter[2].guidanse`: unknown field"),
            "{e}"
        );
        let e = error(&GOOD.replace("title = \"T\"\n", ""));
        assert!(
            e.starts_with("p.toml:1: field `title`: missing field"),
            "{e}"
        );
        let e = error(&GOOD.replace("temperature = 0.8", "temperature = -1"));
        assert!(
            e.starts_with("p.toml:7: field `sampler.temperature`"),
            "{e}"
        );
        let e = error(&GOOD.replace("temperature = 0.8", "temprature = 1"));
        assert!(e.starts_with("p.toml:7: field `sampler.temprature`"), "{e}");
        let e = error("title = \"T\"\npremise = \"\"\n");
        assert!(
            e.starts_with("p.toml:1: field `chapter`: the prompt has no chapters"),
            "{e}"
        );
        let e = error("title = \"T\"\npremise = \"\"\nchapter = []\n");
        assert!(e.starts_with("p.toml:3: field `chapter`"), "{e}");
        let e = error("  \n");
        assert!(e.starts_with("p.toml:1: the file is empty"), "{e}");
        let e = error("title = 3\npremise = \"\"\n");
        assert!(
            e.starts_with("p.toml:1: field `title`: invalid type"),
            "{e}"
        );
    }
}
