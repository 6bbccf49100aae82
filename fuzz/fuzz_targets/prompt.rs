//! Arbitrary bytes as a `quill write` prompt file, both as `.toml` and as
//! plain text, through `Prompt::load` (so invalid UTF-8 takes the real
//! path); a prompt that parses renders its opening and chapters. Errors
//! must stay on one line: the message is all a user gets.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use quill::writer::prompt::Prompt;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("quill-fuzz-prompt-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    for name in ["p.toml", "p.txt"] {
        let path = dir().join(name);
        std::fs::write(&path, data).unwrap();
        match Prompt::load(&path, None) {
            Ok(p) => {
                let _ = p.opening();
                let _ = p.slug();
                for n in 1..=p.chapters.len() + p.extra.len() + 1 {
                    let c = p.chapter(n, None);
                    let _ = c.prefix();
                    let _ = c.render("text");
                    let _ = p.defines(n);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
            }
        }
    }
});
