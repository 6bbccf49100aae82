//! Text ↔ token-id conversion for the three vocabularies RWKV models use.
//!
//! - [`TokenizerKind::World`](crate::tokenizer::TokenizerKind::World): the RWKV World vocabulary (v5, v6, v7 World
//!   and G1 models), greedy longest match over bytes.
//! - [`TokenizerKind::Bytes`](crate::tokenizer::TokenizerKind::Bytes): one token per byte, for 256-row models.
//! - [`TokenizerKind::Neox20B`](crate::tokenizer::TokenizerKind::Neox20B): the GPT-NeoX 20B byte-level BPE used by
//!   RWKV-4 Pile and Raven models.
//!
//! The vocab files are compiled into the library so a tokenizer works from
//! any working directory; each is parsed only when a tokenizer of that kind
//! is first built, and the parsed form is shared by later builds.
//!
//! A token can end in the middle of a UTF-8 character, so text shown while
//! generating should go through a [`StreamDecoder`](crate::tokenizer::StreamDecoder) rather than
//! [`Tokenizer::decode`](crate::tokenizer::Tokenizer::decode) one token at a time.

mod bpe;
mod bytes;
mod letters;
mod stream;
mod world;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

pub use stream::StreamDecoder;

use bpe::BpeTokenizer;
use bytes::ByteTokenizer;
use world::WorldTokenizer;

/// The RWKV World vocabulary, as shipped with the `rwkv` pip package.
const WORLD_VOCAB: &[u8] = include_bytes!("../../models/rwkv_vocab_v20230424.txt");
/// The GPT-NeoX 20B tokenizer in Hugging Face `tokenizers` JSON form.
const NEOX_JSON: &[u8] = include_bytes!("../../models/20B_tokenizer.json");

/// Rows of the embedding of RWKV-4 Pile/Raven models; the BPE's own ids
/// stop at 50276, so this is also the smallest table that holds them all.
const NEOX_VOCAB_SIZE: usize = 50277;
/// NeoX-family checkpoints pad their embedding up to a multiple of 64 or
/// 128 (GPT-NeoX 20B itself has 50432 rows); anything in this range is
/// the same tokenizer.
const NEOX_MAX_PADDED: usize = 50432;

/// Which vocabulary a [`Tokenizer`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenizerKind {
    /// RWKV World vocabulary: 65536 ids, greedy longest byte match.
    World,
    /// Byte-level: token id = byte value, 256 ids.
    Bytes,
    /// GPT-NeoX 20B byte-level BPE (RWKV-4 Pile and Raven).
    Neox20B,
}

impl FromStr for TokenizerKind {
    type Err = TokenizerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "world" => Ok(Self::World),
            "bytes" | "byte" => Ok(Self::Bytes),
            "20b" | "neox" | "neox20b" | "neox-20b" | "gpt-neox" => Ok(Self::Neox20B),
            _ => Err(TokenizerError::UnknownKind(s.to_string())),
        }
    }
}

impl fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The same spellings FromStr accepts first, so the value round-trips
        // through config files and command lines.
        f.write_str(match self {
            Self::World => "world",
            Self::Bytes => "bytes",
            Self::Neox20B => "20b",
        })
    }
}

/// Errors from building a tokenizer or decoding ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    /// A tokenizer name that is none of the known kinds.
    #[error("unknown tokenizer `{0}`: use `world`, `bytes` or `20b`")]
    UnknownKind(String),
    /// A token id at or past the end of the vocabulary.
    #[error(
        "token id {id} is outside the {kind} vocabulary (size {vocab_size}): \
         check that the tokenizer matches the model"
    )]
    IdOutOfRange {
        /// The offending id.
        id: u32,
        /// The tokenizer that was asked.
        kind: TokenizerKind,
        /// Number of valid ids.
        vocab_size: usize,
    },
    /// The embedded World vocab could not be parsed.
    #[error(
        "World vocab line {line}: {reason}; the embedded vocab file is damaged, \
         restore models/rwkv_vocab_v20230424.txt and rebuild"
    )]
    WorldVocab {
        /// 1-based line number in the vocab file.
        line: usize,
        /// What was wrong with it.
        reason: String,
    },
    /// The embedded 20B tokenizer JSON could not be used.
    #[error(
        "20B tokenizer JSON: {0}; the embedded file is damaged or of an unsupported \
         form, restore models/20B_tokenizer.json and rebuild"
    )]
    NeoxJson(String),
}

/// The parsed implementations, shared between all tokenizers of a kind.
#[derive(Clone)]
enum Inner {
    World(Arc<WorldTokenizer>),
    Bytes(ByteTokenizer),
    Neox(Arc<BpeTokenizer>),
}

/// A tokenizer of one [`TokenizerKind`], built from the embedded vocab.
///
/// Cloning is cheap: the parsed vocabulary is shared.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Inner,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind())
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

/// Parse at most once per process: the 20B JSON takes tens of
/// milliseconds, and callers build tokenizers freely (tests, model reloads).
fn shared<T>(
    cell: &'static OnceLock<Result<Arc<T>, TokenizerError>>,
    build: impl FnOnce() -> Result<T, TokenizerError>,
) -> Result<Arc<T>, TokenizerError> {
    cell.get_or_init(|| build().map(Arc::new)).clone()
}

impl Tokenizer {
    /// Builds a tokenizer of `kind` from the vocabulary compiled into the
    /// library.
    pub fn new(kind: TokenizerKind) -> Result<Self, TokenizerError> {
        static WORLD: OnceLock<Result<Arc<WorldTokenizer>, TokenizerError>> = OnceLock::new();
        static NEOX: OnceLock<Result<Arc<BpeTokenizer>, TokenizerError>> = OnceLock::new();
        let inner = match kind {
            TokenizerKind::World => {
                Inner::World(shared(&WORLD, || WorldTokenizer::from_vocab(WORLD_VOCAB))?)
            }
            TokenizerKind::Bytes => Inner::Bytes(ByteTokenizer),
            TokenizerKind::Neox20B => {
                Inner::Neox(shared(&NEOX, || BpeTokenizer::from_json(NEOX_JSON))?)
            }
        };
        Ok(Self { inner })
    }

    /// The vocabulary this tokenizer uses.
    pub fn kind(&self) -> TokenizerKind {
        match self.inner {
            Inner::World(_) => TokenizerKind::World,
            Inner::Bytes(_) => TokenizerKind::Bytes,
            Inner::Neox(_) => TokenizerKind::Neox20B,
        }
    }

    /// Number of valid ids: 65536 (World), 256 (Bytes) or 50277 (20B, the
    /// embedding rows of RWKV-4 Pile models).
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::World(_) => world::VOCAB_SIZE,
            Inner::Bytes(_) => bytes::VOCAB_SIZE,
            Inner::Neox(t) => t.vocab_size(),
        }
    }

    /// Converts text to token ids.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match &self.inner {
            Inner::World(t) => t.encode(text.as_bytes()),
            Inner::Bytes(t) => t.encode(text.as_bytes()),
            Inner::Neox(t) => t.encode(text),
        }
    }

    /// Concatenated bytes of `ids`; these need not be valid UTF-8.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id).ok_or(TokenizerError::IdOutOfRange {
                id,
                kind: self.kind(),
                vocab_size: self.vocab_size(),
            })?);
        }
        Ok(out)
    }

    /// Decodes `ids` to text, replacing invalid UTF-8 with U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Bytes of one token, or `None` if `id` is outside the vocabulary.
    ///
    /// Ids that are in range but stand for no text (World id 0, the
    /// end-of-text marker, and World's unassigned top ids) give an empty
    /// slice. For 20B this is the token's decoded bytes, and the special
    /// tokens give their literal text (`<|endoftext|>`).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        match &self.inner {
            Inner::World(t) => t.token_bytes(id),
            Inner::Bytes(t) => t.token_bytes(id),
            Inner::Neox(t) => t.token_bytes(id),
        }
    }

    /// Guesses the tokenizer from the number of rows in a model's
    /// embedding, or `None` if no known vocabulary has that size.
    pub fn for_vocab_size(n: usize) -> Option<TokenizerKind> {
        match n {
            bytes::VOCAB_SIZE => Some(TokenizerKind::Bytes),
            world::VOCAB_SIZE => Some(TokenizerKind::World),
            NEOX_VOCAB_SIZE..=NEOX_MAX_PADDED => Some(TokenizerKind::Neox20B),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_parses_and_displays() {
        for kind in [
            TokenizerKind::World,
            TokenizerKind::Bytes,
            TokenizerKind::Neox20B,
        ] {
            assert_eq!(kind.to_string().parse::<TokenizerKind>(), Ok(kind));
        }
        assert_eq!("neox".parse(), Ok(TokenizerKind::Neox20B));
        assert_eq!("World".parse(), Ok(TokenizerKind::World));
        assert!("gpt2".parse::<TokenizerKind>().is_err());
    }

    #[test]
    fn vocab_size_guesses() {
        assert_eq!(Tokenizer::for_vocab_size(256), Some(TokenizerKind::Bytes));
        assert_eq!(Tokenizer::for_vocab_size(65536), Some(TokenizerKind::World));
        for n in [50277, 50280, 50304, 50432] {
            assert_eq!(Tokenizer::for_vocab_size(n), Some(TokenizerKind::Neox20B));
        }
        assert_eq!(Tokenizer::for_vocab_size(50254), None);
        assert_eq!(Tokenizer::for_vocab_size(32000), None);
    }

    #[test]
    fn sizes_match_the_models() {
        for (kind, n) in [
            (TokenizerKind::World, 65536),
            (TokenizerKind::Bytes, 256),
            (TokenizerKind::Neox20B, 50277),
        ] {
            let t = Tokenizer::new(kind).unwrap();
            assert_eq!(t.kind(), kind);
            assert_eq!(t.vocab_size(), n);
            assert_eq!(Tokenizer::for_vocab_size(n), Some(kind));
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
            assert!(t.token_bytes(n - 1).is_some());
            assert!(t.token_bytes(n).is_none());
            let err = t.decode(&[1, n]).unwrap_err();
            assert_eq!(
                err,
                TokenizerError::IdOutOfRange {
                    id: n,
                    kind,
                    vocab_size: n as usize
                }
            );
            assert!(t.decode_bytes(&[u32::MAX]).is_err());
        }
    }
}
