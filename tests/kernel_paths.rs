//! The reference fixtures pass through every kernel path this CPU can run
//! (scalar, and AVX2 or NEON), not just the one `auto` picks: the
//! conformance harness of `reference.rs` under `kernels::with_kernels`.

mod common;

use common::*;
use quill::kernels;
use quill::model::Model;

fn check_all_paths(label: &str, check: impl Fn(&str)) {
    let sets = kernels::available();
    assert!(!sets.is_empty());
    for ks in sets {
        eprintln!("{label}: kernel path {}", ks.name);
        kernels::with_kernels(ks.name, || check(ks.name)).unwrap();
    }
}

#[test]
fn random_v7_fixture_passes_every_kernel_path() {
    let dir = random_dir();
    check_all_paths("rand-v7", |path| {
        let model = Model::load(&dir.join("rand-v7.safetensors")).unwrap();
        check_model(
            &model,
            &dir.join("rand-v7.expected.json"),
            Some(&dir.join("rand-v7")),
            &format!("rand-v7 f32 [{path}]"),
        );
        let bf16 = bf16_copy(&dir.join("rand-v7.safetensors"));
        check_model(
            &bf16,
            &dir.join("rand-v7-bf16.expected.json"),
            Some(&dir.join("rand-v7-bf16")),
            &format!("rand-v7 bf16 [{path}]"),
        );
    });
}

#[test]
fn trained_v7_fixture_passes_every_kernel_path() {
    let Some(dir) = trained_dir() else {
        panic!("trained fixtures missing: cannot check trained-v7 on every kernel path");
    };
    check_all_paths("trained-v7", |path| {
        let model = Model::load(&dir.join("trained-v7.safetensors")).unwrap();
        check_model(
            &model,
            &dir.join("trained-v7.expected.json"),
            Some(&dir.join("trained-v7")),
            &format!("trained-v7 f32 [{path}]"),
        );
        let bf16 = bf16_copy(&dir.join("trained-v7.safetensors"));
        check_model(
            &bf16,
            &dir.join("trained-v7-bf16.expected.json"),
            Some(&dir.join("trained-v7-bf16")),
            &format!("trained-v7 bf16 [{path}]"),
        );
    });
}
