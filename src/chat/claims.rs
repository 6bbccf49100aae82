//! Which saved sessions a run may write over without asking.
//!
//! Saving under a name that already holds a session would silently throw
//! that session away. Saving again under the name a run loaded, or saved
//! earlier, is the normal flow, though, and must stay quiet. So a run
//! remembers each session file it loaded or wrote *as it was then* (its
//! size and modification time): a file this run does not know, or one
//! that changed since (another `quill` saved over it), is someone else's
//! work, and saving over it needs the user's say-so.
//!
//! That check and the write after it must not interleave with another
//! process doing the same for the same name (both would find the file as
//! they left it, and the second write would silently drop the first), so
//! [`SessionClaims::save`] holds an advisory lock on the session's lock
//! file across check, write and rename.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{ChatError, Result};
use crate::snapshot::{is_story, SnapshotMeta};

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

    /// Saves the session `name` to `path`: `write` writes the file
    /// (atomically, as [`Snapshot::save`](crate::snapshot::Snapshot::save)
    /// does), after [`check`](Self::check) unless `replace`; the file is
    /// then claimed. The session's lock file
    /// ([`lock_file`]) is held throughout, so another quill saving the same
    /// name at the same moment cannot slip in between the check and the
    /// rename; if one holds it for longer than a short wait, the save fails
    /// with [`ChatError::SaveInProgress`] and nothing is written.
    pub fn save(
        &mut self,
        name: &str,
        path: &Path,
        replace: bool,
        write: impl FnOnce(&Path) -> crate::error::Result<()>,
    ) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|error| ChatError::Io {
                path: dir.to_path_buf(),
                error,
            })?;
        }
        let _lock = lock(name, path)?;
        if !replace {
            self.check(name, path)?;
        }
        write(path)?;
        self.claim(path);
        Ok(())
    }
}

/// The lock file of the session file `path`: `.NAME.qs.lock` beside it.
/// Hidden and not ending in `.qs`, it is never listed as a session, and no
/// session name (which cannot start with `.`) can take it. Lock files
/// stay after a save: deleting one would let a process that opened it
/// just before lock the deleted file while a third locks a new one, each
/// believing it holds the lock.
pub fn lock_file(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.lock"))
}

/// How long a save waits for another process's save of the same name: a
/// save takes milliseconds (a state is at most tens of megabytes), so
/// waiting out one in progress is better than failing; a lock held longer
/// is a stuck process, and the user is told rather than kept waiting.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// Takes the lock of the session file `path` (released when the returned
/// file is dropped, or when the process ends, however it ends).
fn lock(name: &str, path: &Path) -> Result<Option<File>> {
    let lock_path = lock_file(path);
    let io = |error| ChatError::Io {
        path: lock_path.clone(),
        error,
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io)?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(ChatError::SaveInProgress(name.to_string()))
            }
            // A file system without locks (some network mounts) must not
            // stop saving: it gets the check without the lock, as before.
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                return Ok(None)
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
    }
}

/// A few words on the session in a file, for the question whether to
/// replace it: `923 tokens, saved 2026-11-26T20:15:00Z` (a story says so).
/// Read from the header alone (see [`SnapshotMeta::peek`]).
pub fn describe(path: &Path) -> String {
    match SnapshotMeta::peek(path) {
        Ok(m) => format!(
            "{}{} tokens, saved {}",
            if is_story(&m) { "a story of " } else { "" },
            m.tokens,
            m.created
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

    /// The path every save takes (a chat's `/save`, Write mode's Ctrl-S):
    /// while another process holds the session's lock nothing is written,
    /// replacing or not, and the write is not even attempted.
    #[test]
    fn a_save_under_anothers_lock_writes_nothing() {
        let dir = std::env::temp_dir().join(format!("quill-claims-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sessions").join("one.qs");
        let mut claims = SessionClaims::default();
        let write = |bytes: &'static [u8]| move |p: &Path| crate::snapshot::write_atomic(p, bytes);
        claims.save("one", &path, false, write(b"mine")).unwrap();
        let other = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_file(&path))
            .unwrap();
        other.try_lock().unwrap();
        for replace in [false, true] {
            let mut wrote = false;
            let err = claims
                .save("one", &path, replace, |_| {
                    wrote = true;
                    Ok(())
                })
                .unwrap_err();
            assert!(
                matches!(&err, ChatError::SaveInProgress(n) if n == "one"),
                "{err}"
            );
            assert!(!wrote, "wrote under another's lock (replace {replace})");
            assert_eq!(std::fs::read(&path).unwrap(), b"mine");
        }
        drop(other);
        claims.save("one", &path, false, write(b"again")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"again");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
