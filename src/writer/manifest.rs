//! `manifest.json`: the record of a story folder. A chapter is done when,
//! and only when, the manifest lists it; the manifest is written last
//! after each chapter, so files a crash left beyond it are simply stale.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::hash::Fnv64;
use crate::sampler::SamplerSettings;
use crate::writer::prompt::{ChapterSpec, PromptKind};
use crate::writer::WriteError;

/// Written in every manifest's `format` entry.
pub const FORMAT: &str = "quill-story";
/// Bumped when the layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name inside a story folder.
pub const FILE: &str = "manifest.json";

/// A story folder's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The story's title.
    pub title: String,
    /// The prompt file, as given on the command line.
    pub prompt_file: String,
    /// TOML or plain-text prompt.
    pub prompt_kind: PromptKind,
    /// The exact text fed to a fresh state before chapter 1.
    pub opening: String,
    /// Tokens of the opening.
    pub opening_tokens: usize,
    /// Model file name.
    pub model: String,
    /// The model's fingerprint: snapshots only fit this model.
    pub model_fingerprint: String,
    /// Tokenizer used.
    pub tokenizer: String,
    /// Seed of the random generator at the start of the story.
    pub seed: u64,
    /// Sampler settings of the chapters still to write.
    pub sampler: SamplerSettings,
    /// Chapters the story should have once finished.
    pub target_chapters: usize,
    /// Set when the folder is a branch of another story.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<BranchInfo>,
    /// When the folder was started (RFC 3339 UTC).
    pub created: String,
    /// When the manifest was last written.
    pub updated: String,
    /// Finished chapters, in order.
    pub chapters: Vec<ChapterRecord>,
}

/// Where a branch comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchInfo {
    /// The branch's name (`--branch`).
    pub name: String,
    /// The story folder it was taken from.
    pub source: String,
    /// Chapters shared with the source; the branch continues after them.
    pub from_chapter: usize,
    /// The random generator is reseeded with this where the branch starts.
    pub seed: u64,
}

/// One finished chapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChapterRecord {
    /// Chapter number, from 1.
    pub number: usize,
    /// Heading, guidance, length and stop strings it was written with.
    #[serde(flatten)]
    pub spec: ChapterSpec,
    /// Sampler settings it was written with.
    pub sampler: SamplerSettings,
    /// The chapter's Markdown file.
    pub file: String,
    /// FNV-1a 64 of that file's bytes.
    pub file_fnv64: String,
    /// Snapshot after the chapter (and the separator after it).
    pub snapshot: String,
    /// FNV-1a 64 of the snapshot file's bytes.
    pub snapshot_fnv64: String,
    /// Tokens of the heading and guidance fed before the chapter.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub tokens: usize,
    /// Why generation ended: `length`, `stop`, `end-of-text`.
    pub stop_reason: String,
    /// Tokens in the state after the chapter.
    pub tokens_in_state: u64,
    /// Wall time of the chapter (feeding and generating), seconds.
    pub seconds: f64,
    /// Generated tokens per second.
    pub tokens_per_s: f64,
    /// When it was finished (RFC 3339 UTC).
    pub written: String,
}

impl Manifest {
    /// Reads `dir/manifest.json`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Manifest>, WriteError> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(crate::QuillError::Io { path, source }.into()),
        };
        let bad = |reason: String| WriteError::Manifest {
            path: path.clone(),
            reason,
        };
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            bad(format!(
                "it is not a readable story manifest ({e}); move the folder away or pick another --out"
            ))
        })?;
        if m.format != FORMAT {
            return Err(bad(format!("`format` is `{}`, not `{FORMAT}`", m.format)));
        }
        if m.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "story format version {} is not supported by this Quill (it reads version {FORMAT_VERSION})",
                m.format_version
            )));
        }
        for (i, c) in m.chapters.iter().enumerate() {
            if c.number != i + 1 {
                return Err(bad(format!(
                    "chapter entry {} says it is chapter {}",
                    i + 1,
                    c.number
                )));
            }
        }
        Ok(Some(m))
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), WriteError> {
        let mut text = serde_json::to_string_pretty(self).expect("a manifest serialises");
        text.push('\n');
        crate::snapshot::write_atomic(&dir.join(FILE), text.as_bytes())?;
        Ok(())
    }

    /// Chapters finished.
    pub fn done(&self) -> usize {
        self.chapters.len()
    }
}

/// FNV-1a 64 of `bytes` as 16 hex digits (the manifest's file checksums).
pub fn fnv_hex(bytes: &[u8]) -> String {
    let mut h = Fnv64::default();
    h.update(bytes);
    h.hex()
}

/// `chapter-NN.md` (two digits at least, so names sort up to 99).
pub fn chapter_file(n: usize) -> String {
    format!("chapter-{n:02}.md")
}

/// `chapter-NN.qs`.
pub fn snapshot_file(n: usize) -> String {
    format!("chapter-{n:02}.qs")
}
