//! Incremental UTF-8 decoding for text produced a token at a time.

/// Turns a stream of token bytes into text without ever emitting half a
/// character.
///
/// Tokens often end inside a multi-byte character (World and 20B both
/// split CJK and emoji), so decoding each token on its own would print
/// replacement characters for text that is in fact valid. This holds an
/// incomplete trailing sequence until the bytes that complete it arrive.
/// Bytes that can never become valid become U+FFFD as soon as that is
/// certain, with the same substitutions as [`String::from_utf8_lossy`].
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    /// Start of a character still waiting for its continuation bytes
    /// (at most 3 bytes).
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` and returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let mut out = String::with_capacity(buf.len());
        let mut rest = &buf[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid_up_to` guarantees this prefix is UTF-8; no panic path.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // The sequence is cut short by the end of input:
                        // more bytes may still complete it.
                        None => {
                            self.pending.extend_from_slice(after);
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Bytes of an unfinished character held back.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// A decoder holding `bytes` of an unfinished character (restored from
    /// a snapshot).
    pub fn with_pending(bytes: &[u8]) -> Self {
        StreamDecoder {
            pending: bytes.to_vec(),
        }
    }

    /// Whether bytes are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: whatever is still held can no longer be completed,
    /// so it comes out as U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_are_held_until_complete() {
        let text = "héllo 世界 🎉";
        let mut d = StreamDecoder::new();
        let mut joined = String::new();
        for &b in text.as_bytes() {
            let piece = d.push(&[b]);
            // Each piece is a String, so valid UTF-8 by construction; what
            // must not happen is a replacement character for a split char.
            assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
            joined.push_str(&piece);
        }
        joined.push_str(&d.finish());
        assert_eq!(joined, text);
    }

    #[test]
    fn pieces_are_whole_characters() {
        let text = "a🎉b世";
        let mut d = StreamDecoder::new();
        assert_eq!(d.push(&text.as_bytes()[..3]), "a");
        assert!(d.has_pending());
        assert_eq!(d.push(&text.as_bytes()[3..6]), "🎉b");
        assert_eq!(d.push(&text.as_bytes()[6..8]), "");
        assert_eq!(d.push(&text.as_bytes()[8..]), "世");
        assert!(!d.has_pending());
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut d = StreamDecoder::new();
        // A lone continuation byte is invalid at once.
        assert_eq!(d.push(b"a\x80b"), "a\u{FFFD}b");
        // A lead byte followed by a non-continuation byte is invalid as soon
        // as that byte arrives.
        assert_eq!(d.push(b"\xe4"), "");
        assert_eq!(d.push(b"x"), "\u{FFFD}x");
        // Bytes that never appear in UTF-8.
        assert_eq!(d.push(b"\xff\xc0"), "\u{FFFD}\u{FFFD}");
        // An unfinished character at the end of the stream.
        assert_eq!(d.push(b"\xf0\x9f\x8e"), "");
        assert_eq!(d.finish(), "\u{FFFD}");
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn matches_lossy_decoding_of_the_whole() {
        let bytes: &[u8] = b"ok \xe4\xb8 \xe4\xb8\x96 \xf0\x9f\x8e\x89\xed\xa0\x80 \xc3";
        for chunk in 1..=bytes.len() {
            let mut d = StreamDecoder::new();
            let mut joined = String::new();
            for c in bytes.chunks(chunk) {
                joined.push_str(&d.push(c));
            }
            joined.push_str(&d.finish());
            assert_eq!(joined, String::from_utf8_lossy(bytes), "chunk {chunk}");
        }
    }
}
