//! Models: weight files, one module per RWKV generation, and the state.

pub mod pth;
pub mod weights;
