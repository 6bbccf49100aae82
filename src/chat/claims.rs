//! Which saved sessions a run may write over without asking.
//!
//! Saving under a name that already holds a session would silently throw
//! that session away. Saving again under the name a run loaded, or saved
//! earlier, is the normal flow, though, and must stay quiet. So a run
//! remembers each session file it loaded or wrote *as it was then* (its
//! size and modification time): a file this run does not know, or one
//! that changed since (another `quill` saved over it), is someone else's
//! work, and saving over it needs the user's say-so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{ChatError, Result};
use crate::snapshot::{is_story, Snapshot};

/// What identifies one version of a file well enough to notice that
/// someone else replaced it: an atomic save writes a new file, whose
/// modification time (nanoseconds on common file systems) and usually
/// size differ from the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// The session files one run loaded or saved, each as it was then.
#[derive(Debug, Clone, Default)]
pub struct SessionClaims {
    files: HashMap<PathBuf, Stamp>,
}

impl SessionClaims {
    /// Records that this run has just loaded or written the session file
    /// at `path`, so saving there again needs no confirmation.
    pub fn claim(&mut self, path: &Path) {
        if let Some(s) = stamp(path) {
            self.files.insert(path.to_path_buf(), s);
        }
    }

    /// Whether saving the session `name` to `path` loses nothing: no file
    /// is there, or it is the one this run loaded or wrote last,
    /// unchanged since. Otherwise [`ChatError::SessionExists`], which
    /// describes the session that is there.
    pub fn check(&self, name: &str, path: &Path) -> Result<()> {
        // symlink_metadata: a dangling link is still a name in use.
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        if stamp(path).is_some_and(|now| self.files.get(path) == Some(&now)) {
            return Ok(());
        }
        Err(ChatError::SessionExists {
            name: name.to_string(),
            about: describe(path),
        })
    }
}

/// A few words on the session in a file, for the question whether to
/// replace it: `923 tokens, saved 2026-11-26T20:15:00Z` (a story says so).
pub fn describe(path: &Path) -> String {
    match Snapshot::load(path) {
        Ok(s) => format!(
            "{}{} tokens, saved {}",
            if is_story(&s.meta) { "a story of " } else { "" },
            s.meta.tokens,
            s.meta.created
        ),
        // Unreadable is still somebody's file: it is described, not
        // taken as free.
        Err(e) => format!("unreadable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_this_run_loaded_or_wrote_unchanged_are_free() {
        let dir = std::env::temp_dir().join(format!("quill-claims-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("one.qs");
        let mut claims = SessionClaims::default();
        assert!(
            claims.check("one", &path).is_ok(),
            "no file: nothing to lose"
        );
        std::fs::write(&path, b"not a snapshot").unwrap();
        let err = claims.check("one", &path).unwrap_err();
        assert!(
            matches!(&err, ChatError::SessionExists { name, about }
                if name == "one" && about.starts_with("unreadable")),
            "{err}"
        );
        assert!(err.to_string().contains("/save one!"), "{err}");
        claims.claim(&path);
        assert!(claims.check("one", &path).is_ok(), "claimed: free");
        // Someone else replaces it: no longer this run's to overwrite.
        std::fs::write(&path, b"another process's session").unwrap();
        assert!(claims.check("one", &path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
