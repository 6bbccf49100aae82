//! Quill: an RWKV engine.

/// Text ↔ token ids for the World, byte-level and GPT-NeoX 20B vocabularies.
pub mod tokenizer;
