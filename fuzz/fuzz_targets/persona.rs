//! Arbitrary text as a chat persona (TOML): parse, then use what parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quill::chat::persona::Persona;
use quill::model::RwkvVersion;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Persona::parse(text, "fuzz.toml", "fuzz") {
        for v in [RwkvVersion::V4, RwkvVersion::V7] {
            let f = p.format(v);
            let _ = p.opening_text(&f);
        }
    }
});
