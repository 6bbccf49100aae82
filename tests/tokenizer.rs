//! Tokenizers against the reference ids in `tests/fixtures/tokenizer-vectors.json`
//! (computed with the official `rwkv` pip package), plus round-trips.

use quill::tokenizer::{StreamDecoder, Tokenizer, TokenizerError, TokenizerKind};
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    world: Vec<u32>,
    gpt_neox_20b: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokenizer-vectors.json"
    );
    let json = std::fs::read(path).expect("read tests/fixtures/tokenizer-vectors.json");
    let v: Vectors = serde_json::from_slice(&json).expect("parse tokenizer vectors");
    assert!(v.cases.len() >= 20, "expected the full vector set");
    v.cases
}

fn check_vectors(kind: TokenizerKind, want: impl Fn(&Case) -> &[u32]) {
    let t = Tokenizer::new(kind).unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        let ids = t.encode(&case.text);
        if ids != want(&case) {
            failures.push(format!(
                "{:?}\n  got  {ids:?}\n  want {:?}",
                case.text,
                want(&case)
            ));
        }
        let back = t.decode(want(&case)).unwrap();
        if back != case.text {
            failures.push(format!("{:?} decoded as {back:?}", case.text));
        }
    }
    assert!(failures.is_empty(), "{kind}:\n{}", failures.join("\n"));
}

#[test]
fn world_matches_reference_vectors() {
    check_vectors(TokenizerKind::World, |c| &c.world);
}

#[test]
fn neox_matches_reference_vectors() {
    check_vectors(TokenizerKind::Neox20B, |c| &c.gpt_neox_20b);
}

#[test]
fn world_known_ids() {
    let t = Tokenizer::new(TokenizerKind::World).unwrap();
    assert_eq!(t.encode("\n"), [11]);
    assert_eq!(t.encode("\n\n"), [261]);
    assert_eq!(t.token_bytes(0), Some(&b""[..]));
    assert_eq!(t.decode(&[0, 11, 0]).unwrap(), "\n");
}

#[test]
fn neox_special_tokens() {
    let t = Tokenizer::new(TokenizerKind::Neox20B).unwrap();
    assert_eq!(t.encode("<|endoftext|>"), [0]);
    assert_eq!(t.token_bytes(0), Some(&b"<|endoftext|>"[..]));
    // Runs of 2..=24 spaces are added tokens 50276 down to 50254.
    assert_eq!(t.encode("  "), [50276]);
    assert_eq!(t.token_bytes(50254), Some(&[b' '; 24][..]));
    assert_eq!(t.encode(&" ".repeat(25)), [50254, 209]);
}

#[test]
fn neox_normalizes_to_nfc() {
    let t = Tokenizer::new(TokenizerKind::Neox20B).unwrap();
    // "e" + combining acute is composed to "é" first, as the reference does.
    assert_eq!(t.encode("caf\u{65}\u{301}"), t.encode("caf\u{e9}"));
}

const ROUND_TRIP_TEXTS: &[&str] = &[
    "",
    "plain ASCII text, with punctuation!?",
    "emoji 😀🎉👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "中文 日本語 한국어 ไทย हिन्दी العربية",
    "control \0 \x01 \x07 \x1b[31m \x7f chars",
    "line\r\nbreaks\rand\n\n\ttabs",
    "combining e\u{301} and zero\u{200b}width\u{feff}",
    "    indented    code    ",
    "<|endoftext|><|padding|>",
    "\u{10FFFF}\u{E000}\u{FFFD}",
];

#[test]
fn world_round_trips_arbitrary_text() {
    let t = Tokenizer::new(TokenizerKind::World).unwrap();
    for text in ROUND_TRIP_TEXTS {
        let ids = t.encode(text);
        assert!(ids.iter().all(|&id| (id as usize) < t.vocab_size()));
        assert_eq!(t.decode(&ids).unwrap(), *text);
    }
    let all: String = ROUND_TRIP_TEXTS.concat();
    assert_eq!(t.decode(&t.encode(&all)).unwrap(), all);
}

#[test]
fn neox_round_trips_nfc_text() {
    let t = Tokenizer::new(TokenizerKind::Neox20B).unwrap();
    for text in ROUND_TRIP_TEXTS {
        // Encoding normalizes, so what comes back is the NFC form.
        let nfc: String = text.nfc().collect();
        assert_eq!(t.decode(&t.encode(text)).unwrap(), nfc);
    }
}

#[test]
fn bytes_round_trip_arbitrary_bytes() {
    let t = Tokenizer::new(TokenizerKind::Bytes).unwrap();
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let ids: Vec<u32> = all.iter().map(|&b| u32::from(b)).collect();
    assert_eq!(t.decode_bytes(&ids).unwrap(), all);
    for text in ROUND_TRIP_TEXTS {
        assert_eq!(
            t.encode(text),
            text.bytes().map(u32::from).collect::<Vec<_>>()
        );
        assert_eq!(t.decode(&t.encode(text)).unwrap(), *text);
    }
}

#[test]
fn out_of_range_ids_are_errors() {
    for kind in [
        TokenizerKind::World,
        TokenizerKind::Bytes,
        TokenizerKind::Neox20B,
    ] {
        let t = Tokenizer::new(kind).unwrap();
        let n = t.vocab_size() as u32;
        let err = t.decode_bytes(&[1, n]).unwrap_err();
        assert!(matches!(err, TokenizerError::IdOutOfRange { id, .. } if id == n));
        assert!(t.decode(&[u32::MAX]).is_err());
        assert!(t.token_bytes(n).is_none());
    }
}

#[test]
fn stream_decoding_token_by_token_matches_decode() {
    for kind in [
        TokenizerKind::World,
        TokenizerKind::Neox20B,
        TokenizerKind::Bytes,
    ] {
        let t = Tokenizer::new(kind).unwrap();
        let text = "héllo 世界 🎉 👩‍👩‍👧‍👦 ไทย";
        let mut d = StreamDecoder::new();
        let mut joined = String::new();
        for id in t.encode(text) {
            let piece = d.push(t.token_bytes(id).unwrap());
            assert!(!piece.contains('\u{FFFD}'), "{kind}: {piece:?}");
            joined.push_str(&piece);
        }
        joined.push_str(&d.finish());
        assert_eq!(joined, text, "{kind}");
    }
}

#[test]
fn stream_decoder_byte_at_a_time() {
    let text = "héllo 世界 🎉";
    let mut d = StreamDecoder::new();
    let mut joined = String::new();
    for &b in text.as_bytes() {
        let piece = d.push(&[b]);
        // A piece is either empty or exactly the characters just completed.
        assert!(piece.is_empty() || text.contains(&piece));
        assert!(!piece.contains('\u{FFFD}'));
        joined.push_str(&piece);
    }
    assert_eq!(joined, text);
    assert_eq!(d.finish(), "");
    assert_eq!(StreamDecoder::new().push(b"\xff"), "\u{FFFD}");
}

#[test]
fn world_encodes_a_megabyte_quickly() {
    let t = Tokenizer::new(TokenizerKind::World).unwrap();
    let unit = "The quick brown fox 跳过了 lazy dogs 🎉, again and again.\n";
    let text = unit.repeat((1 << 20) / unit.len() + 1);
    let start = std::time::Instant::now();
    let ids = t.encode(&text);
    let elapsed = start.elapsed();
    assert_eq!(t.decode(&ids).unwrap(), text);
    // Generous so a loaded machine or a debug build still passes; release
    // builds take a few milliseconds.
    assert!(elapsed.as_secs_f64() < 2.0, "{elapsed:?}");
}
