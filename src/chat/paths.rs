//! Where chat files live, after the XDG base-directory spec: history and
//! sessions in the data folder (`$XDG_DATA_HOME/quill`, else
//! `~/.local/share/quill`), cached openings in the cache folder
//! (`$XDG_CACHE_HOME/quill`, else `~/.cache/quill`). `QUILL_DATA_DIR` and
//! `QUILL_CACHE_DIR` replace them outright, so tests and portable installs
//! keep everything in a folder of their choosing.

use std::ffi::OsString;
use std::path::PathBuf;

/// Quill's data folder from the process environment.
pub fn data_dir() -> Option<PathBuf> {
    data_dir_from(|k| std::env::var_os(k))
}

/// Quill's cache folder from the process environment.
pub fn cache_dir() -> Option<PathBuf> {
    cache_dir_from(|k| std::env::var_os(k))
}

/// [`data_dir`] with the environment given as a lookup (for tests).
pub fn data_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    resolve(&env, "QUILL_DATA_DIR", "XDG_DATA_HOME", ".local/share")
}

/// [`cache_dir`] with the environment given as a lookup (for tests).
pub fn cache_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    resolve(&env, "QUILL_CACHE_DIR", "XDG_CACHE_HOME", ".cache")
}

fn resolve(
    env: &impl Fn(&str) -> Option<OsString>,
    ours: &str,
    xdg: &str,
    home_rel: &str,
) -> Option<PathBuf> {
    // Empty values count as unset, as the XDG spec says; so do relative
    // XDG paths, which the spec tells programs to ignore.
    let get = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = get(ours) {
        return Some(p);
    }
    if let Some(p) = get(xdg).filter(|p| p.is_absolute()) {
        return Some(p.join("quill"));
    }
    get("HOME").map(|h| h.join(home_rel).join("quill"))
}

/// The sessions folder inside a data folder.
pub fn sessions_dir(data: &std::path::Path) -> PathBuf {
    data.join("sessions")
}

/// The line-editor history file inside a data folder.
pub fn history_file(data: &std::path::Path) -> PathBuf {
    data.join("history")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn precedence_override_then_xdg_then_home() {
        let all = [
            ("QUILL_DATA_DIR", "/q"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(data_dir_from(env(&all)), Some(PathBuf::from("/q")));
        assert_eq!(
            data_dir_from(env(&all[1..])),
            Some(PathBuf::from("/x/quill"))
        );
        assert_eq!(
            data_dir_from(env(&all[2..])),
            Some(PathBuf::from("/h/.local/share/quill"))
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/quill"))
        );
        assert_eq!(
            cache_dir_from(env(&[("QUILL_CACHE_DIR", ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/quill"))
        );
        assert_eq!(cache_dir_from(env(&[])), None);
    }
}
