//! Arbitrary bytes as a state snapshot.
//!
//! A snapshot carries a checksum, so almost every mutation is refused
//! there. Half the inputs (first byte odd) are therefore "resealed" first:
//! parsed as safetensors, given the checksum their contents deserve and
//! written back, so the checks after the checksum are fuzzed too. A
//! snapshot that loads is described, diffed with itself, restored into a
//! session of the small random v4 fixture model (the seeds are its
//! snapshots) and continued for two tokens.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use quill::hash::Fnv64;
use quill::model::weights::{parse_safetensors, write_safetensors, Backing, TensorOut, WeightFile};
use quill::model::Model;
use quill::sampler::{Sampler, SamplerSettings};
use quill::session::Session;
use quill::snapshot::{diff, Snapshot};
use quill::tokenizer::{Tokenizer, TokenizerKind};

static MODEL: &[u8] = include_bytes!("../../tests/fixtures/random/rand-v4.safetensors");

fn model() -> Arc<Model> {
    static M: OnceLock<Arc<Model>> = OnceLock::new();
    M.get_or_init(|| {
        let file = WeightFile::from_backing(Backing::Static(MODEL), "rand-v4".into()).unwrap();
        Arc::new(Model::from_file(file).unwrap())
    })
    .clone()
}

/// Mirrors `snapshot::checksum`: tensors in file order (name, shape,
/// bytes), then every metadata entry but `checksum`.
fn reseal(bytes: &[u8]) -> Option<Vec<u8>> {
    let (infos, mut meta) = parse_safetensors(bytes, "fuzz", "").ok()?;
    meta.remove("checksum");
    let mut order: Vec<_> = infos.iter().collect();
    order.sort_by_key(|(_, i)| i.start);
    let tensors: Vec<TensorOut> = order
        .into_iter()
        .map(|(name, i)| TensorOut {
            name: name.clone(),
            dtype: i.dtype,
            shape: i.shape.clone(),
            data: bytes[i.start..i.start + i.byte_len()].into(),
        })
        .collect();
    let mut h = Fnv64::default();
    for t in &tensors {
        h.update_str(&t.name);
        for d in &t.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(&t.data);
    }
    for (k, v) in &meta {
        h.update_str(k);
        h.update_str(v);
    }
    let mut meta: BTreeMap<String, String> = meta;
    meta.insert("checksum".into(), h.hex());
    Some(write_safetensors(&tensors, &meta))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        match reseal(rest) {
            Some(b) => b,
            None => return,
        }
    } else {
        rest.to_vec()
    };
    let Ok(snap) = Snapshot::from_bytes(&bytes, "fuzz") else {
        return;
    };
    let _ = snap.describe();
    assert!(
        diff(&snap, &snap).is_none(),
        "a snapshot differs from itself"
    );
    let model = model();
    let tokenizer = Arc::new(Tokenizer::new(TokenizerKind::Bytes).unwrap());
    let mut session = Session::new(
        model,
        tokenizer,
        Sampler::new(SamplerSettings::default(), 0),
    );
    if snap.restore_into(&mut session, true).is_ok() && session.logits().is_some() {
        let _ = session.generate(2, &["a".to_string()], |_| true);
    }
});
