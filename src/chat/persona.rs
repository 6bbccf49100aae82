//! Personas: who the assistant is, as a TOML file (`prompts/*.toml`).
//!
//! ```toml
//! name = "assistant"                 # optional, default: the file name
//! description = "A helpful assistant"
//! user = "User"                      # optional, default: the model's
//! assistant = "Assistant"            #   (User/Assistant; Bob/Alice on RWKV-4)
//! system = "You are ..."             # optional `System:` line first
//! think = true                       # optional, G1 models: reason first
//! max_tokens = 500                   # optional reply limit
//!
//! [sampler]                          # optional; any SamplerSettings field
//! temperature = 1.0
//! top_p = 0.3
//!
//! [[opening]]                        # the conversation so far, any number
//! user = "Hi!"
//! assistant = "Hello! How can I help?"
//! ```
//!
//! Unknown fields are errors, and every error names the file, the line and
//! the field, so a typo does not silently fall back to a default.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::format::{normalize_message, ChatFormat, Think};
use super::{ChatError, Result};
use crate::model::RwkvVersion;
use crate::sampler::SamplerSettings;

/// The personas shipped in `prompts/`, compiled in so `--persona NAME`
/// works from any folder.
pub const BUILTIN: &[(&str, &str)] = &[
    ("assistant", include_str!("../../prompts/assistant.toml")),
    ("cowriter", include_str!("../../prompts/cowriter.toml")),
    (
        "g1-reasoning",
        include_str!("../../prompts/g1-reasoning.toml"),
    ),
];

/// One exchange of an opening conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// What the user says (normalised).
    pub user: String,
    /// What the assistant answers (normalised).
    pub assistant: String,
}

/// A parsed, checked persona.
#[derive(Debug, Clone, PartialEq)]
pub struct Persona {
    /// Its name (the `name` field, else the file name).
    pub name: String,
    /// One line about it, for `/show`.
    pub description: String,
    /// The user's name, if the persona sets one.
    pub user: Option<String>,
    /// The assistant's name, if the persona sets one.
    pub assistant: Option<String>,
    /// A `System:` line before the opening, if any.
    pub system: Option<String>,
    /// G1 reasoning control.
    pub think: Think,
    /// Reply length limit, if the persona sets one.
    pub max_tokens: Option<usize>,
    /// Sampler settings, if the persona sets any (unset fields take
    /// Quill's defaults).
    pub sampler: Option<SamplerSettings>,
    /// The conversation pre-filled before the user's first message.
    pub opening: Vec<Turn>,
    /// Where it came from: a path or `built-in NAME`.
    pub origin: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPersona {
    name: Option<Spanned<String>>,
    description: Option<String>,
    user: Option<Spanned<String>>,
    assistant: Option<Spanned<String>>,
    system: Option<Spanned<String>>,
    think: Option<bool>,
    max_tokens: Option<Spanned<usize>>,
    sampler: Option<Spanned<SamplerSettings>>,
    #[serde(default)]
    opening: Vec<Spanned<RawTurn>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurn {
    user: String,
    assistant: String,
}

impl Persona {
    /// Parses persona TOML; `origin` names it in errors and `default_name`
    /// is used when the file has no `name`.
    pub fn parse(text: &str, origin: &str, default_name: &str) -> Result<Persona> {
        let err = |span: Option<Range<usize>>, message: String| {
            let (line, column) = span.map(|s| locate(text, s.start)).unwrap_or((0, 0));
            ChatError::Persona {
                origin: origin.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: RawPersona = toml::from_str(text).map_err(|e| {
            let span = e.span();
            // serde's message says what is wrong but not always where in
            // the tree; the key on that line (and its table) says it.
            let mut message = e.message().trim().replace('\n', " ");
            let start = span.as_ref().map(|s| s.start);
            if let Some(key) = start.and_then(|s| key_at(text, s)) {
                if !message.contains(&format!("`{key}`")) {
                    message = format!("`{key}`: {message}");
                }
            } else if let Some(header) = start.and_then(|s| header_at(text, s)) {
                // e.g. a table missing a field: name the table.
                message = format!("{header}: {message}");
            }
            err(span, message)
        })?;
        let name_field = |f: &Option<Spanned<String>>, what: &str| -> Result<Option<String>> {
            let Some(s) = f else { return Ok(None) };
            let v = s.get_ref().trim();
            if v.is_empty() || v.contains([':', '\n', '\r']) || v.chars().count() > 40 {
                return Err(err(
                    Some(s.span()),
                    format!(
                        "`{what}` must be a short name without `:` or line breaks, got {:?}",
                        s.get_ref()
                    ),
                ));
            }
            Ok(Some(v.to_string()))
        };
        let name = name_field(&raw.name, "name")?.unwrap_or_else(|| default_name.to_string());
        let user = name_field(&raw.user, "user")?;
        let assistant = name_field(&raw.assistant, "assistant")?;
        let system = raw
            .system
            .as_ref()
            .map(|s| normalize_message(s.get_ref()))
            .filter(|s| !s.is_empty());
        if let Some(m) = &raw.max_tokens {
            if *m.get_ref() == 0 {
                return Err(err(
                    Some(m.span()),
                    "`max_tokens` must be at least 1".into(),
                ));
            }
        }
        if let Some(s) = &raw.sampler {
            if let Err(e) = s.get_ref().validate() {
                let msg = match e {
                    crate::error::QuillError::Invalid(m) => m,
                    other => other.to_string(),
                };
                // The message starts with the setting's name: point at
                // its line when it is there.
                let key = msg.split_whitespace().next().unwrap_or("");
                return Err(match find_key(text, "sampler", key) {
                    Some(at) => err(Some(at..at), format!("`sampler.{key}`: {msg}")),
                    None => err(Some(s.span()), format!("[sampler]: {msg}")),
                });
            }
        }
        let mut opening = Vec::new();
        for (i, t) in raw.opening.iter().enumerate() {
            let turn = Turn {
                user: normalize_message(&t.get_ref().user),
                assistant: normalize_message(&t.get_ref().assistant),
            };
            if turn.user.is_empty() || turn.assistant.is_empty() {
                return Err(err(
                    Some(t.span()),
                    format!(
                        "[[opening]] #{}: `user` and `assistant` must both say something",
                        i + 1
                    ),
                ));
            }
            opening.push(turn);
        }
        Ok(Persona {
            name,
            description: raw.description.unwrap_or_default().trim().to_string(),
            user,
            assistant,
            system,
            think: match raw.think {
                None => Think::Auto,
                Some(true) => Think::On,
                Some(false) => Think::Off,
            },
            max_tokens: raw.max_tokens.map(|m| m.into_inner()),
            sampler: raw.sampler.map(|s| s.into_inner()),
            opening,
            origin: origin.to_string(),
        })
    }

    /// Reads a persona file.
    pub fn load(path: &Path) -> Result<Persona> {
        let bytes = std::fs::read(path).map_err(|error| ChatError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            // Say where, and what to do: "stream did not contain valid
            // UTF-8" alone leaves the user searching the file.
            let at = e.utf8_error().valid_up_to();
            let before = &e.as_bytes()[..at];
            let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            ChatError::Persona {
                origin: path.display().to_string(),
                line,
                column: at - line_start + 1,
                message: format!(
                    "the file is not valid UTF-8 text (bad byte 0x{:02x}); save it as UTF-8",
                    e.as_bytes()[at]
                ),
            }
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "persona".into());
        Persona::parse(&text, &path.display().to_string(), &stem)
    }

    /// A shipped persona by name.
    pub fn builtin(name: &str) -> Option<Result<Persona>> {
        BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| Persona::parse(text, &format!("built-in {n}"), n))
    }

    /// `--persona ARG`: an existing file, else a built-in name.
    pub fn find(arg: &str) -> Result<Persona> {
        let path = Path::new(arg);
        if path.is_file() {
            return Persona::load(path);
        }
        if let Some(p) = Persona::builtin(arg) {
            return p;
        }
        if arg.ends_with(".toml") || arg.contains(std::path::MAIN_SEPARATOR) {
            // Meant as a file: say that the file is missing.
            return Persona::load(path);
        }
        Err(ChatError::NoPersona(arg.to_string()))
    }

    /// The chat format for a model: the persona's names where it sets
    /// them, else the model's own.
    pub fn format(&self, version: RwkvVersion) -> ChatFormat {
        let mut f = ChatFormat::for_model(version);
        if let Some(u) = &self.user {
            f.user = u.clone();
        }
        if let Some(a) = &self.assistant {
            f.assistant = a.clone();
        }
        f.think = self.think;
        f
    }

    /// The text pre-filled before the first message: the `System:` line
    /// and the opening exchanges, each closed by `\n\n` so the user's
    /// first turn follows on well-formed.
    pub fn opening_text(&self, format: &ChatFormat) -> String {
        let mut s = String::new();
        if let Some(sys) = &self.system {
            s.push_str(&format!("System: {sys}\n\n"));
        }
        for t in &self.opening {
            s.push_str(&format.exchange(&t.user, &t.assistant));
        }
        s
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn locate(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary_compat(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// The dotted key (`sampler.top_p`) assigned on the line holding `offset`,
/// if that line is a `key = value` line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = text.floor_char_boundary_compat(offset.min(text.len()));
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.contains(char::is_whitespace) {
        return None;
    }
    // The table this line belongs to: the nearest header above it.
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// The table header (`[sampler]`, `[[opening]]`) on the line holding `offset`.
fn header_at(text: &str, offset: usize) -> Option<String> {
    let offset = text.floor_char_boundary_compat(offset.min(text.len()));
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    line.starts_with('[').then(|| line.to_string())
}

/// Byte offset of the `key = ...` line inside `[table]`, if there is one.
fn find_key(text: &str, table: &str, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    let mut current = String::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if current == table {
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(offset + (line.len() - line.trim_start().len()));
                }
            }
        }
        offset += line.len();
    }
    None
}

/// `str::floor_char_boundary` is unstable; this is the same thing.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_personas_parse() {
        for (name, _) in BUILTIN {
            let p = Persona::builtin(name).unwrap().unwrap();
            assert_eq!(&p.name, name);
            assert!(!p.opening.is_empty(), "{name} has no opening");
            assert!(!p.description.is_empty());
            let text = p.opening_text(&p.format(RwkvVersion::V7));
            assert!(text.ends_with("\n\n"));
        }
        let g1 = Persona::builtin("g1-reasoning").unwrap().unwrap();
        assert_eq!(g1.think, Think::On);
    }

    #[test]
    fn full_persona_and_format() {
        let p = Persona::parse(
            "user = \"Ann\"\nsystem = \"Be brief.\"\n[sampler]\ntop_p = 0.5\n[[opening]]\nuser = \"a\\n\\n\\nb\"\nassistant = \"c\"\n",
            "x.toml",
            "x",
        )
        .unwrap();
        assert_eq!(p.name, "x");
        assert_eq!(p.sampler.as_ref().unwrap().top_p, 0.5);
        assert_eq!(p.sampler.as_ref().unwrap().temperature, 1.0);
        let f = p.format(RwkvVersion::V7);
        assert_eq!(
            p.opening_text(&f),
            "System: Be brief.\n\nAnn: a\nb\n\nAssistant: c\n\n"
        );
        assert_eq!(p.format(RwkvVersion::V4).assistant, "Alice");
    }

    fn error(text: &str) -> String {
        Persona::parse(text, "p.toml", "p").unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = error("name = \"a\"\ncolour = \"red\"\n");
        assert!(e.starts_with("p.toml:2:"), "{e}");
        assert!(e.contains("colour"), "{e}");
        let e = error("\n[sampler]\ntop_p = \"high\"\n");
        assert!(e.starts_with("p.toml:3:"), "{e}");
        assert!(e.contains("sampler.top_p"), "{e}");
        let e = error("[sampler]\ntemprature = 1\n");
        assert!(
            e.starts_with("p.toml:2:") && e.contains("temprature"),
            "{e}"
        );
        let e = error("[sampler]\ntemperature = 1\n  top_p = 1.5\n");
        assert!(
            e.starts_with("p.toml:3:3: `sampler.top_p`: top_p 1.5"),
            "{e}"
        );
        let e = error("[[opening]]\nuser = \"hi\"\n");
        assert!(
            e.starts_with("p.toml:1:") && e.contains("[[opening]]: missing field `assistant`"),
            "{e}"
        );
        let e = error("[[opening]]\nuser = \"hi\"\nassistant = \" \"\n");
        assert!(e.contains("#1"), "{e}");
        let e = error("user = \"A: B\"\n");
        assert!(e.starts_with("p.toml:1:") && e.contains("`user`"), "{e}");
        let e = error("max_tokens = 0\n");
        assert!(e.contains("max_tokens"), "{e}");
    }
}
