//! Which saved sessions `/load` would take, for Tab completion.
//!
//! The sessions folder also holds stories saved by `quill tui`'s Write
//! mode and sessions of other models, which `/load` refuses; offering
//! them would only lead to the refusal. Telling them apart needs each
//! file's metadata, and completion runs on every Tab press, so the
//! metadata comes from the file's header alone (kilobytes, where the
//! state after it runs to megabytes) and the verdict is kept per version
//! of the file (its size and modification time), so a folder is read
//! once, then only what changed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use super::claims::{stamp, Stamp};
use super::engine::{chat_can_continue, list_sessions, SNAPSHOT_EXT};
use crate::model::ModelInfo;
use crate::snapshot::SnapshotMeta;

/// The sessions in one folder that a chat on one model can `/load`,
/// remembering what it has judged (see the module docs).
#[derive(Debug)]
pub struct LoadableSessions {
    dir: PathBuf,
    model: ModelInfo,
    force: bool,
    // Completion gets `&self`; a Mutex rather than a RefCell keeps this
    // shareable with a front end that completes on another thread.
    judged: Mutex<HashMap<PathBuf, (Stamp, bool)>>,
}

impl LoadableSessions {
    /// Sessions in `dir` that can continue on the model described by
    /// `model` (with `force`: also sessions of other weights of the same
    /// shape, as `--force` lets `/load` take them).
    pub fn new(dir: PathBuf, model: ModelInfo, force: bool) -> Self {
        LoadableSessions {
            dir,
            model,
            force,
            judged: Mutex::new(HashMap::new()),
        }
    }

    /// Names of the sessions `/load` would take, sorted. A file whose
    /// header cannot be read is left out (`/load` would refuse it too);
    /// one whose header reads but whose state is damaged is offered, and
    /// `/load` then says what is wrong with it.
    pub fn names(&self) -> Vec<String> {
        // A poisoned lock only means a panic mid-update of a cache: the
        // entries are still each a complete verdict.
        let mut judged = self.judged.lock().unwrap_or_else(|e| e.into_inner());
        let names = list_sessions(&self.dir);
        let mut seen = HashMap::with_capacity(names.len());
        let mut out = Vec::new();
        for name in names {
            let path = self.dir.join(format!("{name}.{SNAPSHOT_EXT}"));
            let Some(now) = stamp(&path) else { continue };
            let ok = match judged.get(&path) {
                Some(&(then, ok)) if then == now => ok,
                _ => SnapshotMeta::peek(&path).is_ok_and(|meta| {
                    chat_can_continue(&name, &meta, &self.model, self.force).is_ok()
                }),
            };
            seen.insert(path, (now, ok));
            if ok {
                out.push(name);
            }
        }
        // Only what is still there: deleted sessions do not pile up.
        *judged = seen;
        out
    }
}
