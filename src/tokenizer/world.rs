//! RWKV World tokenizer: greedy longest match over bytes.
//!
//! The vocab file has one token a line, `ID REPR LEN`, where REPR is a
//! Python `str` or `bytes` literal as printed by `repr()`. A `str` token
//! stands for its UTF-8 encoding; `bytes` tokens exist because many tokens
//! are fragments of multi-byte characters.

use super::TokenizerError;

/// Ids run 0..65536; 0 is end-of-text and a few top ids are unassigned.
pub(super) const VOCAB_SIZE: usize = 65536;

/// One trie node: the token ending here (0 = none, which is safe because id
/// 0 has no bytes) and its outgoing edges, a run in the edge arrays sorted
/// by byte.
#[derive(Clone, Copy)]
struct Node {
    token: u32,
    edge_start: u32,
    edge_len: u32,
}

/// The parsed vocabulary and a byte trie over it.
pub(super) struct WorldTokenizer {
    /// Token bytes, concatenated in id order.
    bytes: Vec<u8>,
    /// `bytes[offsets[id]..offsets[id + 1]]` is token `id`.
    offsets: Vec<u32>,
    /// Child of the root for each first byte: every text position starts
    /// here, so it is worth skipping a search.
    root: [u32; 256],
    nodes: Vec<Node>,
    edge_bytes: Vec<u8>,
    edge_child: Vec<u32>,
}

impl WorldTokenizer {
    /// Parses the vocab file text and builds the trie.
    pub(super) fn from_vocab(text: &[u8]) -> Result<Self, TokenizerError> {
        let text = std::str::from_utf8(text).map_err(|e| TokenizerError::WorldVocab {
            line: 1 + text[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            reason: "not valid UTF-8".into(),
        })?;
        let mut tokens: Vec<Option<Vec<u8>>> = vec![None; VOCAB_SIZE];
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let err = |reason: String| TokenizerError::WorldVocab {
                line: line_no,
                reason,
            };
            if line.trim().is_empty() {
                continue;
            }
            let (id, rest) = line
                .split_once(' ')
                .ok_or_else(|| err("expected `ID REPR LEN`".into()))?;
            let (repr, len) = rest
                .rsplit_once(' ')
                .ok_or_else(|| err("expected `ID REPR LEN`".into()))?;
            let id: usize = id.parse().map_err(|_| err(format!("bad id `{id}`")))?;
            let len: usize = len
                .parse()
                .map_err(|_| err(format!("bad length `{len}`")))?;
            if id == 0 || id >= VOCAB_SIZE {
                return Err(err(format!("id {id} is outside 1..{VOCAB_SIZE}")));
            }
            let bytes = parse_py_literal(repr).map_err(|e| err(format!("{e} in {repr}")))?;
            if bytes.len() != len {
                return Err(err(format!(
                    "token {repr} is {} bytes but the line says {len}",
                    bytes.len()
                )));
            }
            if bytes.is_empty() {
                return Err(err("empty token".into()));
            }
            if tokens[id].replace(bytes).is_some() {
                return Err(err(format!("id {id} appears twice")));
            }
        }

        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(VOCAB_SIZE + 1);
        offsets.push(0);
        for tok in &tokens {
            bytes.extend_from_slice(tok.as_deref().unwrap_or_default());
            offsets.push(u32::try_from(bytes.len()).expect("vocab under 4 GiB"));
        }

        let mut items: Vec<(&[u8], u32)> = tokens
            .iter()
            .enumerate()
            .filter_map(|(id, t)| Some((t.as_deref()?, id as u32)))
            .collect();
        items.sort_unstable();
        // Two ids with the same bytes could never both be produced by a
        // longest match; keep the lower, as the file lists it first.
        items.dedup_by(|later, earlier| later.0 == earlier.0);

        let mut t = Self {
            bytes,
            offsets,
            root: [0; 256],
            nodes: Vec::new(),
            edge_bytes: Vec::new(),
            edge_child: Vec::new(),
        };
        t.build(&items, 0);
        let root = t.nodes[0];
        for e in root.edge_start..root.edge_start + root.edge_len {
            t.root[usize::from(t.edge_bytes[e as usize])] = t.edge_child[e as usize];
        }
        // Encoding relies on this to always make progress.
        if let Some(b) = (0..256).find(|&b| t.nodes[t.root[b] as usize].token == 0) {
            return Err(TokenizerError::WorldVocab {
                line: text.lines().count(),
                reason: format!("no single-byte token for byte 0x{b:02x}"),
            });
        }
        Ok(t)
    }

    /// Adds the node for the common prefix `items[..][..depth]` (sorted,
    /// unique) and its subtree; returns the node's index.
    fn build(&mut self, items: &[(&[u8], u32)], depth: usize) -> u32 {
        let index = self.nodes.len();
        self.nodes.push(Node {
            token: 0,
            edge_start: 0,
            edge_len: 0,
        });
        let mut rest = items;
        if let Some((&(b, id), tail)) = rest.split_first() {
            if b.len() == depth {
                self.nodes[index].token = id;
                rest = tail;
            }
        }
        let mut groups = Vec::new();
        while let Some(&(b, _)) = rest.first() {
            let byte = b[depth];
            let n = rest.partition_point(|(t, _)| t[depth] == byte);
            groups.push((byte, &rest[..n]));
            rest = &rest[n..];
        }
        // A node's edges must be contiguous, so reserve them all before the
        // children add theirs.
        let start = self.edge_bytes.len();
        self.edge_bytes.extend(groups.iter().map(|g| g.0));
        self.edge_child.resize(start + groups.len(), 0);
        for (k, (_, group)) in groups.iter().enumerate() {
            let child = self.build(group, depth + 1);
            self.edge_child[start + k] = child;
        }
        self.nodes[index].edge_start = start as u32;
        self.nodes[index].edge_len = groups.len() as u32;
        index as u32
    }

    #[inline]
    fn child(&self, node: u32, byte: u8) -> Option<u32> {
        let n = self.nodes[node as usize];
        let start = n.edge_start as usize;
        let edges = &self.edge_bytes[start..start + n.edge_len as usize];
        let k = edges.binary_search(&byte).ok()?;
        Some(self.edge_child[start + k])
    }

    /// Greedy longest match, as the reference implementation does: at each
    /// position take the longest token that the text starts with there.
    pub(super) fn encode(&self, text: &[u8]) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut pos = 0;
        while pos < text.len() {
            let mut node = self.root[usize::from(text[pos])];
            let mut best = self.nodes[node as usize].token;
            let mut best_len = 1;
            let mut i = pos + 1;
            while i < text.len() {
                match self.child(node, text[i]) {
                    Some(c) => node = c,
                    None => break,
                }
                i += 1;
                let token = self.nodes[node as usize].token;
                if token != 0 {
                    best = token;
                    best_len = i - pos;
                }
            }
            out.push(best);
            pos += best_len;
        }
        out
    }

    pub(super) fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let id = id as usize;
        if id >= VOCAB_SIZE {
            return None;
        }
        Some(&self.bytes[self.offsets[id] as usize..self.offsets[id + 1] as usize])
    }
}

/// Decodes a Python `str` or `bytes` literal (`'..'`, `".."`, `b'..'`,
/// `b".."`) to the bytes it stands for (UTF-8 for `str`).
///
/// The distinction matters: `'\x80'` is U+0080, two bytes in UTF-8, while
/// `b'\x80'` is the single byte 0x80.
fn parse_py_literal(repr: &str) -> Result<Vec<u8>, String> {
    let (is_bytes, quoted) = match repr.strip_prefix(['b', 'B']) {
        Some(rest) => (true, rest),
        None => (false, repr),
    };
    let quote = quoted
        .chars()
        .next()
        .filter(|q| matches!(q, '\'' | '"'))
        .ok_or("not a quoted literal")?;
    let body = quoted
        .strip_prefix(quote)
        .and_then(|s| s.strip_suffix(quote))
        .ok_or("unterminated literal")?;

    let mut out = Vec::with_capacity(body.len());
    let push_cp = |out: &mut Vec<u8>, cp: u32| -> Result<(), String> {
        if is_bytes {
            let b = u8::try_from(cp).map_err(|_| format!("byte value {cp} too large"))?;
            out.push(b);
        } else {
            let c =
                char::from_u32(cp).ok_or_else(|| format!("U+{cp:04X} is not a scalar value"))?;
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        Ok(())
    };
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            if is_bytes && !c.is_ascii() {
                return Err("non-ASCII character in a bytes literal".into());
            }
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let e = chars.next().ok_or("trailing backslash")?;
        let mut hex = |n: usize| -> Result<u32, String> {
            let digits: String = (0..n).filter_map(|_| chars.next()).collect();
            if digits.len() != n || !digits.chars().all(|d| d.is_ascii_hexdigit()) {
                return Err(format!("truncated \\{e} escape"));
            }
            u32::from_str_radix(&digits, 16).map_err(|_| format!("bad \\{e} escape"))
        };
        match e {
            // A backslash-newline continues the literal and stands for nothing.
            '\n' => {}
            '\\' | '\'' | '"' => out.push(e as u8),
            'a' => out.push(0x07),
            'b' => out.push(0x08),
            'f' => out.push(0x0c),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(0x0b),
            'x' => {
                let v = hex(2)?;
                push_cp(&mut out, v)?;
            }
            'u' if !is_bytes => {
                let v = hex(4)?;
                push_cp(&mut out, v)?;
            }
            'U' if !is_bytes => {
                let v = hex(8)?;
                push_cp(&mut out, v)?;
            }
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or_default();
                for _ in 0..2 {
                    match chars.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                push_cp(&mut out, v)?;
            }
            'N' if !is_bytes => return Err("\\N{...} escapes are not supported".into()),
            // Python keeps unknown escapes (and \u in bytes) verbatim.
            other => {
                out.push(b'\\');
                let mut buf = [0; 4];
                out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_follow_python() {
        let cases: &[(&str, &[u8])] = &[
            (r"'abc'", b"abc"),
            (r#""it's""#, b"it's"),
            (r"'\x00'", b"\0"),
            (r"'\x80'", "\u{80}".as_bytes()),
            (r"b'\x80'", b"\x80"),
            (r"b'\xe4\xb8'", b"\xe4\xb8"),
            (r"'\u2002'", "\u{2002}".as_bytes()),
            (r"'\U0001F600'", "😀".as_bytes()),
            (r"'\t\n\r\\\''", b"\t\n\r\\'"),
            (r"'\$'", b"\\$"),
            (r"'\101\0'", b"A\0"),
            ("'中文'", "中文".as_bytes()),
        ];
        for (repr, want) in cases {
            assert_eq!(parse_py_literal(repr).as_deref(), Ok(*want), "{repr}");
        }
        for bad in [
            r"abc",
            r"'abc",
            r"'\x4'",
            r"'\x+1'",
            r"b'é'",
            r"'\ud800'",
            r"b'\400'",
        ] {
            assert!(parse_py_literal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn length_column_is_checked() {
        let mut vocab = String::new();
        for b in 0..=255u8 {
            vocab.push_str(&format!("{} b'\\x{b:02x}' 1\n", u32::from(b) + 1));
        }
        assert!(WorldTokenizer::from_vocab(vocab.as_bytes()).is_ok());
        vocab.push_str("300 '\\x80' 1\n");
        let err = WorldTokenizer::from_vocab(vocab.as_bytes()).err().unwrap();
        assert!(
            matches!(err, TokenizerError::WorldVocab { line: 257, .. }),
            "{err}"
        );
    }

    #[test]
    fn longest_match_wins() {
        let mut vocab = String::new();
        for b in 0..=255u8 {
            vocab.push_str(&format!("{} b'\\x{b:02x}' 1\n", u32::from(b) + 1));
        }
        vocab.push_str("300 'ab' 2\n301 'abcd' 4\n302 'bc' 2\r\n");
        let t = WorldTokenizer::from_vocab(vocab.as_bytes()).unwrap();
        let a = u32::from(b'a') + 1;
        let c = u32::from(b'c') + 1;
        assert_eq!(t.encode(b"abcd"), [301]);
        assert_eq!(t.encode(b"abc"), [300, c]);
        assert_eq!(t.encode(b"aabc"), [a, 300, c]);
        assert_eq!(t.encode(b"bcx"), [302, u32::from(b'x') + 1]);
        assert_eq!(t.token_bytes(0), Some(&b""[..]));
        assert_eq!(t.token_bytes(301), Some(&b"abcd"[..]));
    }
}
