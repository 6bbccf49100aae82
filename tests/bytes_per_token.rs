//! `Model::bytes_per_token` (the bytes of weights a decoded token reads,
//! which `quill bench` turns into a bandwidth) counts the weights as held
//! in memory: after `--dtype`, for every RWKV generation.

mod common;

use common::*;
use quill::model::weights::WeightFile;
use quill::model::{LoadOptions, Model, WeightDtype};

fn load(path: &std::path::Path, dtype: WeightDtype) -> Model {
    Model::load_with(path, &LoadOptions { dtype: Some(dtype) }).unwrap()
}

/// Loaded as stored (f32), a model reads every tensor of its file once per
/// token, but only one row of the embedding; converted, it reads each
/// weight matrix in the new dtype and the vectors still in f32. (Before,
/// v4–v6 counted the file's dtypes whatever `--dtype` said.)
#[test]
fn bytes_per_token_follow_the_dtype_for_every_version() {
    for version in ["v4", "v5", "v6", "v7"] {
        let path = random_dir().join(format!("rand-{version}.safetensors"));
        let file = WeightFile::open(&path).unwrap();
        let f32m = load(&path, WeightDtype::F32);
        let emb = file.info("emb.weight").unwrap();
        let vocab = f32m.info().dims.vocab;
        let stored = file.tensor_bytes() - emb.byte_len() + emb.byte_len() / vocab;
        let (b32, b16, b8) = (
            f32m.bytes_per_token(),
            load(&path, WeightDtype::BF16).bytes_per_token(),
            load(&path, WeightDtype::Int8).bytes_per_token(),
        );
        eprintln!("{version}: file {stored}, f32 {b32}, bf16 {b16}, int8 {b8}");
        assert_eq!(
            b32, stored,
            "{version}: f32 bytes per token vs the file's tensors"
        );
        // Every weight matrix but the embedding converts (v6's token-shift
        // mix factors included): 2 bytes fewer per weight in bf16.
        let dims = &f32m.info().dims;
        let matrices = f32m.block_macs_per_token() + dims.vocab * dims.n_embd;
        assert_eq!(b32 - b16, 2 * matrices, "{version}: bf16 bytes per token");
        assert!(b8 < b16, "{version}: int8 {b8} vs bf16 {b16}");
    }
}
