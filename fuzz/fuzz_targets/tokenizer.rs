//! The World tokenizer on arbitrary bytes: the lossy text must come back
//! exactly from encode → decode (and through the streaming decoder, token
//! by token); ids read from the input decode without panicking (in range:
//! to bytes; out of range: to an error). The byte-level tokenizer must
//! round-trip too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use quill::tokenizer::{StreamDecoder, Tokenizer, TokenizerKind};

fn world() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::new(TokenizerKind::World).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let t = world();
    let text = String::from_utf8_lossy(data);
    let ids = t.encode(&text);
    assert_eq!(t.decode(&ids).unwrap(), text, "encode/decode round trip");
    assert_eq!(t.decode_bytes(&ids).unwrap(), text.as_bytes());
    let mut stream = StreamDecoder::new();
    let mut streamed = String::new();
    for &id in &ids {
        assert!((id as usize) < t.vocab_size());
        streamed.push_str(&stream.push(t.token_bytes(id).unwrap()));
    }
    streamed.push_str(&stream.finish());
    assert_eq!(streamed, text, "streamed decode");

    // The raw bytes as little-endian u32 ids, folded into range or not.
    let raw: Vec<u32> = data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let folded: Vec<u32> = raw.iter().map(|&id| id % t.vocab_size() as u32).collect();
    let bytes = t.decode_bytes(&folded).unwrap();
    let _ = String::from_utf8_lossy(&bytes);
    let mut stream = StreamDecoder::new();
    for &id in &folded {
        let _ = stream.push(t.token_bytes(id).unwrap());
    }
    let _ = stream.finish();
    if raw.iter().any(|&id| id as usize >= t.vocab_size()) {
        assert!(t.decode_bytes(&raw).is_err());
    }

    let b = Tokenizer::new(TokenizerKind::Bytes).unwrap();
    assert_eq!(b.decode(&b.encode(&text)).unwrap(), text);
});
