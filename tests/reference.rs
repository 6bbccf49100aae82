//! Conformance: the engine against the official implementation's outputs
//! (../shared/reference, computed by the `rwkv` pip package in fp32).

mod common;

use common::*;
use quill::model::Model;

fn check_random(version: &str) {
    let dir = random_dir();
    let base = dir.join(format!("rand-{version}"));
    let model = Model::load(&dir.join(format!("rand-{version}.safetensors"))).unwrap();
    check_model(
        &model,
        &dir.join(format!("rand-{version}.expected.json")),
        Some(&base),
        &format!("rand-{version} f32"),
    );
    // The same weights rounded to bf16 against the -bf16 expectations.
    let bf16 = bf16_copy(&dir.join(format!("rand-{version}.safetensors")));
    check_model(
        &bf16,
        &dir.join(format!("rand-{version}-bf16.expected.json")),
        Some(&dir.join(format!("rand-{version}-bf16"))),
        &format!("rand-{version} bf16"),
    );
    // The official-format .pth (torch.save, bf16), read in place.
    let pth = Model::load(&dir.join(format!("rand-{version}-bf16.pth"))).unwrap();
    check_model(
        &pth,
        &dir.join(format!("rand-{version}-bf16.expected.json")),
        Some(&dir.join(format!("rand-{version}-bf16"))),
        &format!("rand-{version} bf16.pth"),
    );
}

fn check_trained(version: &str) {
    let Some(dir) = trained_dir() else {
        panic!("trained fixtures missing: cannot check trained-{version}");
    };
    let name = format!("trained-{version}");
    let model = Model::load(&dir.join(format!("{name}.safetensors"))).unwrap();
    check_model(
        &model,
        &dir.join(format!("{name}.expected.json")),
        Some(&dir.join(&name)),
        &format!("{name} f32"),
    );
    let bf16 = bf16_copy(&dir.join(format!("{name}.safetensors")));
    check_model(
        &bf16,
        &dir.join(format!("{name}-bf16.expected.json")),
        Some(&dir.join(format!("{name}-bf16"))),
        &format!("{name} bf16"),
    );
    let pth = Model::load(&dir.join(format!("{name}-bf16.pth"))).unwrap();
    check_model(
        &pth,
        &dir.join(format!("{name}-bf16.expected.json")),
        Some(&dir.join(format!("{name}-bf16"))),
        &format!("{name} bf16.pth"),
    );
}

#[test]
fn random_v7_matches_reference() {
    check_random("v7");
}

#[test]
fn trained_v7_matches_reference() {
    check_trained("v7");
}

#[test]
fn random_v4_matches_reference() {
    check_random("v4");
}

#[test]
fn random_v5_matches_reference() {
    check_random("v5");
}

#[test]
fn random_v6_matches_reference() {
    check_random("v6");
}

#[test]
fn trained_v4_matches_reference() {
    check_trained("v4");
}

#[test]
fn trained_v5_matches_reference() {
    check_trained("v5");
}
