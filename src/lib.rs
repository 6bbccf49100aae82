//! Quill: an RWKV engine.
