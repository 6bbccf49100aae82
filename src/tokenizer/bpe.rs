//! GPT-NeoX 20B byte-level BPE, read from a Hugging Face `tokenizers` JSON.
//!
//! Encoding follows the `tokenizers` pipeline for this file so ids match
//! the reference exactly:
//! 1. split out added tokens whose `normalized` is false (`<|endoftext|>`),
//!    leftmost-longest, on the raw text;
//! 2. normalize the rest (NFC);
//! 3. split out the normalized added tokens (runs of 2–24 spaces);
//! 4. pre-tokenize the remaining pieces with the GPT-2 pattern;
//! 5. map each piece's bytes to BPE symbols and apply merges by rank.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::Value;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::letters::is_letter;
use super::TokenizerError;

/// Words longer than this are rare enough that caching them only costs
/// memory.
const CACHE_MAX_WORD: usize = 64;
/// Bounds cache memory on long generations; it is simply emptied when full.
const CACHE_MAX_ENTRIES: usize = 65536;

#[derive(Deserialize)]
struct TokenizerJson {
    #[serde(default)]
    added_tokens: Vec<AddedTokenJson>,
    normalizer: Option<Value>,
    pre_tokenizer: Option<Value>,
    post_processor: Option<Value>,
    decoder: Option<Value>,
    model: ModelJson,
}

#[derive(Deserialize)]
struct AddedTokenJson {
    id: u32,
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default)]
    normalized: bool,
}

#[derive(Deserialize)]
struct ModelJson {
    #[serde(rename = "type")]
    kind: String,
    dropout: Option<f64>,
    continuing_subword_prefix: Option<String>,
    end_of_word_suffix: Option<String>,
    #[serde(default)]
    byte_fallback: bool,
    vocab: HashMap<String, u32>,
    merges: Vec<MergeJson>,
}

/// Older files write a merge as `"a b"`, newer ones as `["a", "b"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum MergeJson {
    Joined(String),
    Pair(String, String),
}

/// The GPT-2 byte ↔ character table: printable Latin-1 bytes stand for
/// themselves, the rest are moved to U+0100 onwards so every token is a
/// printable string.
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut shifted = 0;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[usize::from(b)] = if printable {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap_or('\0')
        };
    }
    table
}

/// Bytes a token string stands for. Like the reference ByteLevel decoder,
/// a string containing any character outside the table (the added
/// whitespace tokens are literal spaces) is taken as plain UTF-8.
fn token_string_bytes(s: &str, char_to_byte: &HashMap<char, u8>) -> Vec<u8> {
    s.chars()
        .map(|c| char_to_byte.get(&c).copied())
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_else(|| s.as_bytes().to_vec())
}

/// Literal tokens matched before BPE, leftmost-longest.
struct AddedTokens {
    /// `(content, id)`, longest first so the first hit is the longest.
    tokens: Vec<(String, u32)>,
    /// Whether any token starts with this byte: most text positions can be
    /// skipped without comparing.
    first_byte: [bool; 256],
}

impl AddedTokens {
    fn new(mut tokens: Vec<(String, u32)>) -> Self {
        tokens.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut first_byte = [false; 256];
        for (t, _) in &tokens {
            first_byte[usize::from(t.as_bytes()[0])] = true;
        }
        Self { tokens, first_byte }
    }

    /// Splits `text` into plain pieces and added tokens. Patterns and text
    /// are both UTF-8, so a byte match always falls on char boundaries.
    fn split<'a>(&self, text: &'a str) -> Vec<Piece<'a>> {
        let mut pieces = Vec::new();
        if self.tokens.is_empty() {
            pieces.push(Piece::Text(text));
            return pieces;
        }
        let bytes = text.as_bytes();
        let mut plain_start = 0;
        let mut pos = 0;
        while pos < bytes.len() {
            if self.first_byte[usize::from(bytes[pos])] {
                if let Some((t, id)) = self
                    .tokens
                    .iter()
                    .find(|(t, _)| bytes[pos..].starts_with(t.as_bytes()))
                {
                    if plain_start < pos {
                        pieces.push(Piece::Text(&text[plain_start..pos]));
                    }
                    pieces.push(Piece::Token(*id));
                    pos += t.len();
                    plain_start = pos;
                    continue;
                }
            }
            pos += 1;
        }
        if plain_start < bytes.len() {
            pieces.push(Piece::Text(&text[plain_start..]));
        }
        pieces
    }
}

enum Piece<'a> {
    Text(&'a str),
    Token(u32),
}

/// Ids of recently encoded words, keyed by their bytes.
type WordCache = HashMap<Box<[u8]>, Box<[u32]>>;

/// Merge rank and result, keyed by [`pair_key`] of the two symbol ids.
type Merges = HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>;

fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// Merge lookups dominate BPE time and the keys are trusted small
/// integers, so a multiplicative hash beats the DoS-resistant default.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// The 20B tokenizer.
pub(super) struct BpeTokenizer {
    /// Decoded token bytes, concatenated in id order.
    bytes: Vec<u8>,
    /// `bytes[offsets[id]..offsets[id + 1]]` is token `id`.
    offsets: Vec<u32>,
    /// Symbol id of each single byte, where every word starts. The vocab
    /// lacks the bytes that never occur in UTF-8 (0xC0, 0xC1, 0xF5..),
    /// which encoding a `&str` cannot meet.
    byte_ids: [Option<u32>; 256],
    merges: Merges,
    raw_added: AddedTokens,
    normalized_added: AddedTokens,
    nfc: bool,
    add_prefix_space: bool,
    use_regex: bool,
    cache: Mutex<WordCache>,
}

fn json_err(msg: impl Into<String>) -> TokenizerError {
    TokenizerError::NeoxJson(msg.into())
}

/// The `type` of a pipeline component, or `None` for a null component.
fn component_type(v: &Option<Value>) -> Option<&str> {
    v.as_ref()
        .filter(|v| !v.is_null())
        .map(|v| v.get("type").and_then(Value::as_str).unwrap_or("?"))
}

impl BpeTokenizer {
    /// Parses a `tokenizers` JSON, refusing settings this implementation
    /// does not reproduce rather than silently producing other ids.
    pub(super) fn from_json(json: &[u8]) -> Result<Self, TokenizerError> {
        let file: TokenizerJson =
            serde_json::from_slice(json).map_err(|e| json_err(e.to_string()))?;

        let nfc = match component_type(&file.normalizer) {
            None => false,
            Some("NFC") => true,
            Some(other) => return Err(json_err(format!("unsupported normalizer {other}"))),
        };
        let pre = file.pre_tokenizer.as_ref().filter(|v| !v.is_null());
        if component_type(&file.pre_tokenizer) != Some("ByteLevel") {
            return Err(json_err("only a ByteLevel pre_tokenizer is supported"));
        }
        let flag = |name: &str, default: bool| {
            pre.and_then(|p| p.get(name))
                .and_then(Value::as_bool)
                .unwrap_or(default)
        };
        // trim_offsets only changes reported character offsets, which this
        // tokenizer does not produce, so it needs no handling.
        let add_prefix_space = flag("add_prefix_space", true);
        let use_regex = flag("use_regex", true);
        if !matches!(component_type(&file.decoder), None | Some("ByteLevel")) {
            return Err(json_err("only a ByteLevel decoder is supported"));
        }
        // A ByteLevel post-processor only trims offsets; anything else (a
        // template) would add ids this tokenizer does not.
        if !matches!(
            component_type(&file.post_processor),
            None | Some("ByteLevel")
        ) {
            return Err(json_err("only a ByteLevel post_processor is supported"));
        }

        let model = file.model;
        if model.kind != "BPE" {
            return Err(json_err(format!("model type {} is not BPE", model.kind)));
        }
        if model.dropout.is_some_and(|d| d > 0.0)
            || model.continuing_subword_prefix.is_some()
            || model.end_of_word_suffix.is_some()
            || model.byte_fallback
        {
            return Err(json_err(
                "BPE dropout, subword prefixes/suffixes and byte fallback are not supported",
            ));
        }

        let byte_to_char = byte_to_char();
        let char_to_byte: HashMap<char, u8> = (0..=255u8)
            .map(|b| (byte_to_char[usize::from(b)], b))
            .collect();

        // The added tokens take precedence for decoding, as in the reference.
        let mut by_id: HashMap<u32, Vec<u8>> = model
            .vocab
            .iter()
            .map(|(s, &id)| (id, token_string_bytes(s, &char_to_byte)))
            .collect();
        let mut raw = Vec::new();
        let mut normalized = Vec::new();
        for t in &file.added_tokens {
            if t.single_word || t.lstrip || t.rstrip {
                return Err(json_err(format!(
                    "added token {:?} uses single_word/lstrip/rstrip, which is not supported",
                    t.content
                )));
            }
            if t.content.is_empty() {
                return Err(json_err(format!("added token {} is empty", t.id)));
            }
            by_id.insert(t.id, t.content.as_bytes().to_vec());
            if t.normalized {
                // They are looked for in normalized text, so in normalized form.
                let content = if nfc {
                    t.content.nfc().collect()
                } else {
                    t.content.clone()
                };
                normalized.push((content, t.id));
            } else {
                raw.push((t.content.clone(), t.id));
            }
        }

        let vocab_size = by_id.keys().max().map_or(0, |&m| m as usize + 1);
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(vocab_size + 1);
        offsets.push(0);
        for id in 0..vocab_size as u32 {
            let b = by_id
                .get(&id)
                .ok_or_else(|| json_err(format!("no token has id {id}")))?;
            bytes.extend_from_slice(b);
            offsets.push(u32::try_from(bytes.len()).map_err(|_| json_err("vocab too large"))?);
        }

        let lookup = |s: &str| {
            model
                .vocab
                .get(s)
                .copied()
                .ok_or_else(|| json_err(format!("token {s:?} is not in the vocab")))
        };
        let mut byte_ids = [None; 256];
        for (b, c) in byte_to_char.iter().enumerate() {
            byte_ids[b] = model.vocab.get(&c.to_string()).copied();
        }
        if let Some(b) = (0..=0x7f).find(|&b| byte_ids[b].is_none()) {
            return Err(json_err(format!("no token for byte 0x{b:02x}")));
        }

        let mut merges = Merges::with_capacity_and_hasher(model.merges.len(), Default::default());
        for (rank, m) in model.merges.iter().enumerate() {
            let (a, b) = match m {
                MergeJson::Joined(s) => s
                    .split_once(' ')
                    .ok_or_else(|| json_err(format!("merge {s:?} is not `a b`")))?,
                MergeJson::Pair(a, b) => (a.as_str(), b.as_str()),
            };
            let merged = lookup(&format!("{a}{b}"))?;
            // A repeated pair takes its last rank, as the reference does.
            merges.insert(pair_key(lookup(a)?, lookup(b)?), (rank as u32, merged));
        }

        Ok(Self {
            bytes,
            offsets,
            byte_ids,
            merges,
            raw_added: AddedTokens::new(raw),
            normalized_added: AddedTokens::new(normalized),
            nfc,
            add_prefix_space,
            use_regex,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn vocab_size(&self) -> usize {
        self.offsets.len() - 1
    }

    pub(super) fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let id = id as usize;
        let start = *self.offsets.get(id)? as usize;
        let end = *self.offsets.get(id + 1)? as usize;
        Some(&self.bytes[start..end])
    }

    pub(super) fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        for piece in self.raw_added.split(text) {
            match piece {
                Piece::Token(id) => out.push(id),
                Piece::Text(raw) => {
                    let text = self.normalize(raw);
                    for piece in self.normalized_added.split(&text) {
                        match piece {
                            Piece::Token(id) => out.push(id),
                            Piece::Text(t) => self.encode_plain(t, &mut out),
                        }
                    }
                }
            }
        }
        out
    }

    fn normalize<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.nfc || is_nfc_quick(text.chars()) == IsNormalized::Yes {
            Cow::Borrowed(text)
        } else {
            Cow::Owned(text.nfc().collect())
        }
    }

    /// Pre-tokenizes and BPE-encodes text that holds no added token.
    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        let text = if self.add_prefix_space && !text.starts_with(' ') {
            Cow::Owned(format!(" {text}"))
        } else {
            Cow::Borrowed(text)
        };
        if self.use_regex {
            let mut rest = &text[..];
            while !rest.is_empty() {
                let (word, tail) = rest.split_at(gpt2_piece_len(rest));
                self.encode_word(word.as_bytes(), out);
                rest = tail;
            }
        } else {
            self.encode_word(text.as_bytes(), out);
        }
    }

    fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        if word.len() > CACHE_MAX_WORD {
            out.extend(self.merge_word(word));
            return;
        }
        // A poisoned lock only means another thread panicked mid-insert;
        // the map itself is still usable.
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = cache.get(word) {
            out.extend_from_slice(ids);
            return;
        }
        drop(cache);
        let ids = self.merge_word(word);
        out.extend_from_slice(&ids);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(word.into(), ids.into_boxed_slice());
    }

    /// Applies merges to one word, always the lowest-ranked pair present
    /// and the leftmost of equals first, which is the reference's order.
    /// A heap of candidates keeps long words (no spaces for megabytes)
    /// from going quadratic; stale candidates are skipped when popped.
    fn merge_word(&self, word: &[u8]) -> Vec<u32> {
        // Like the reference with no unk token, a byte without a symbol is
        // dropped; valid UTF-8 never contains one.
        let mut ids: Vec<u32> = word
            .iter()
            .filter_map(|&b| self.byte_ids[usize::from(b)])
            .collect();
        let n = ids.len();
        if n < 2 {
            return ids;
        }
        const NONE: usize = usize::MAX;
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NONE } else { i }).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some(&(rank, new)) = self.merges.get(&pair_key(ids[i], ids[i + 1])) {
                heap.push(Reverse((rank, i, new)));
            }
        }
        while let Some(Reverse((rank, i, new))) = heap.pop() {
            let j = next[i];
            if !alive[i]
                || j == NONE
                || self.merges.get(&pair_key(ids[i], ids[j])) != Some(&(rank, new))
            {
                continue;
            }
            ids[i] = new;
            alive[j] = false;
            next[i] = next[j];
            if next[i] != NONE {
                prev[next[i]] = i;
            }
            let p = prev[i];
            if p != NONE {
                if let Some(&(r, m)) = self.merges.get(&pair_key(ids[p], ids[i])) {
                    heap.push(Reverse((r, p, m)));
                }
            }
            if next[i] != NONE {
                if let Some(&(r, m)) = self.merges.get(&pair_key(ids[i], ids[next[i]])) {
                    heap.push(Reverse((r, i, m)));
                }
            }
        }
        ids.into_iter()
            .zip(alive)
            .filter_map(|(id, keep)| keep.then_some(id))
            .collect()
    }
}

/// Character classes of the GPT-2 pattern.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_whitespace() {
        Class::Space
    } else if is_letter(c) {
        Class::Letter
    } else if c.is_numeric() {
        Class::Number
    } else {
        Class::Other
    }
}

/// Byte length of the match at the start of `s` (non-empty) of
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
/// the GPT-2 pre-tokenizer pattern, written out by hand.
fn gpt2_piece_len(s: &str) -> usize {
    if let Some(rest) = s.strip_prefix('\'') {
        for suffix in ["s", "t", "re", "ve", "m", "ll", "d"] {
            if rest.starts_with(suffix) {
                return 1 + suffix.len();
            }
        }
    }
    let mut chars = s.chars();
    let first = chars.next().unwrap_or(' ');
    // A single leading space joins a following letter, number or other run.
    let (start, class_here) = match (first, chars.next()) {
        (' ', Some(c)) if class(c) != Class::Space => (1, class(c)),
        _ => (0, class(first)),
    };
    if class_here != Class::Space {
        let run = s[start..]
            .char_indices()
            .find(|&(_, c)| class(c) != class_here)
            .map_or(s.len() - start, |(i, _)| i);
        return start + run;
    }
    // A whitespace run leaves its last character to prefix the next word,
    // unless it ends the text or is a single character.
    let mut last_start = 0;
    for (i, c) in s.char_indices() {
        if !c.is_whitespace() {
            return if last_start > 0 { last_start } else { i };
        }
        last_start = i;
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let (a, b) = rest.split_at(gpt2_piece_len(rest));
            out.push(a);
            rest = b;
        }
        out
    }

    #[test]
    fn gpt2_split_matches_the_pattern() {
        assert_eq!(split("Hello, world!"), ["Hello", ",", " world", "!"]);
        assert_eq!(
            split("it's I'M we'll"),
            ["it", "'s", " I", "'", "M", " we", "'ll"]
        );
        assert_eq!(split("a   b"), ["a", "  ", " b"]);
        assert_eq!(split("x  "), ["x", "  "]);
        assert_eq!(
            split("tabs\tand\r\nCRLF"),
            ["tabs", "\t", "and", "\r", "\n", "CRLF"]
        );
        assert_eq!(split(" 123abc ..."), [" 123", "abc", " ..."]);
        assert_eq!(split("f(x):"), ["f", "(", "x", "):"]);
        assert_eq!(split(" "), [" "]);
        assert_eq!(split("\n \n"), ["\n \n"]);
        assert_eq!(split("a \u{a0}b"), ["a", " ", "\u{a0}", "b"]);
        assert_eq!(split("zero\u{200b}width"), ["zero", "\u{200b}", "width"]);
    }

    #[test]
    fn byte_table_is_a_bijection() {
        let t = byte_to_char();
        let mut seen: Vec<char> = t.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(t[usize::from(b' ')], 'Ġ');
        assert_eq!(t[usize::from(b'\n')], 'Ċ');
        assert_eq!(t[usize::from(b'A')], 'A');
    }
}
