//! Snapshots: a split run (generate k tokens, save, exit, continue N−k in a
//! new process) equals one run of N tokens, byte for byte; damaged or
//! mismatched snapshots are refused.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn quill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(args)
        .env_remove("QUILL_MODEL")
        .output()
        .expect("run quill")
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "quill failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn tmpdir(tag: &str) -> TempDir {
    TempDir::new(&format!("snap-{tag}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Non-greedy sampler with penalties on, fixed seed (the setting).
const SAMPLER: [&str; 10] = [
    "--temperature",
    "1",
    "--top-p",
    "0.9",
    "--presence",
    "0.4",
    "--frequency",
    "0.4",
    "--seed",
    "1234",
];

fn split_equals_whole(model: &Path, tag: &str) {
    let dir = tmpdir(tag);
    let (n, k) = (60usize, 23usize);
    let whole = dir.join("whole.qs");
    let mut args = vec![
        "generate",
        "--model",
        s(model),
        "--prompt",
        "The old lighthouse",
        "-n",
    ];
    let n_s = n.to_string();
    args.push(&n_s);
    args.extend(SAMPLER);
    args.extend(["--state-out", s(&whole)]);
    let one = ok(quill(&args)).stdout;

    let first = dir.join("first.qs");
    let k_s = k.to_string();
    let mut args = vec![
        "generate",
        "--model",
        s(model),
        "--prompt",
        "The old lighthouse",
        "-n",
        &k_s,
    ];
    args.extend(SAMPLER);
    args.extend(["--state-out", s(&first)]);
    let part1 = ok(quill(&args)).stdout;

    let second = dir.join("second.qs");
    let rest = (n - k).to_string();
    let part2 = ok(quill(&[
        "generate",
        "--model",
        s(model),
        "--state-in",
        s(&first),
        "-n",
        &rest,
        "--state-out",
        s(&second),
    ]))
    .stdout;
    let mut joined = part1.clone();
    joined.extend(&part2);
    assert_eq!(
        String::from_utf8_lossy(&joined),
        String::from_utf8_lossy(&one),
        "{tag}: split text differs from the single run"
    );
    let d = ok(quill(&["state", "diff", s(&whole), s(&second)]));
    assert!(
        String::from_utf8_lossy(&d.stdout).starts_with("same"),
        "{tag}: {}",
        String::from_utf8_lossy(&d.stdout)
    );
    // And the files are equal but for their creation time.
    let a = quill::snapshot::Snapshot::load(&whole).unwrap();
    let mut b = quill::snapshot::Snapshot::load(&second).unwrap();
    b.meta.created = a.meta.created.clone();
    assert_eq!(a, b);
    assert_eq!(a.meta.tokens, (n + "The old lighthouse".len()) as u64);
}

#[test]
fn split_run_equals_single_run_v7() {
    split_equals_whole(&random_dir().join("rand-v7.safetensors"), "v7");
}

#[test]
fn split_run_equals_single_run_v4() {
    split_equals_whole(&random_dir().join("rand-v4.safetensors"), "v4");
}

#[test]
fn split_run_equals_single_run_v5() {
    split_equals_whole(&random_dir().join("rand-v5.safetensors"), "v5");
}

#[test]
fn split_run_equals_single_run_v6() {
    split_equals_whole(&random_dir().join("rand-v6-bf16.pth"), "v6");
}

#[test]
fn split_run_equals_single_run_trained_v4_v5() {
    let dir = trained_dir().expect("trained fixtures needed");
    split_equals_whole(&dir.join("trained-v4.safetensors"), "tv4");
    split_equals_whole(&dir.join("trained-v5-bf16.pth"), "tv5");
}

#[test]
fn split_run_equals_single_run_trained_v7() {
    let dir = trained_dir().expect("trained fixtures needed");
    split_equals_whole(&dir.join("trained-v7.safetensors"), "tv7");
}

#[test]
fn damaged_snapshots_are_refused() {
    let dir = tmpdir("damage");
    let model = random_dir().join("rand-v7.safetensors");
    let snap = dir.join("s.qs");
    let mut args = vec![
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "abc",
        "-n",
        "5",
    ];
    args.extend(SAMPLER);
    args.extend(["--state-out", s(&snap)]);
    ok(quill(&args));
    let bytes = std::fs::read(&snap).unwrap();
    let bad = dir.join("bad.qs");
    // Flip one bit at many positions across header and tensors.
    let step = (bytes.len() / 97).max(1);
    for pos in (0..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
        let mut b = bytes.clone();
        b[pos] ^= 0x04;
        std::fs::write(&bad, &b).unwrap();
        let o = quill(&[
            "generate",
            "--model",
            s(&model),
            "--state-in",
            s(&bad),
            "-n",
            "1",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "flip at {pos} accepted");
        assert!(!err.contains("panicked"), "flip at {pos}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "flip at {pos}: {err}");
    }
    for cut in [0, 7, 8, 50, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let o = quill(&["state", "info", s(&bad)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "truncation at {cut} accepted");
        assert!(!err.contains("panicked"));
        // It was meant to be a snapshot, not a model checkpoint.
        assert!(!err.contains("checkpoint"), "cut at {cut}: {err}");
    }
    // The undamaged file still loads.
    ok(quill(&["state", "info", s(&snap)]));
}

#[test]
fn snapshots_from_other_models_are_refused_with_reasons() {
    let dir = tmpdir("mismatch");
    let model = random_dir().join("rand-v7.safetensors");
    let snap = dir.join("s.qs");
    ok(quill(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "abc",
        "-n",
        "2",
        "--state-out",
        s(&snap),
        "--seed",
        "1",
    ]));
    // Same dims, other weights (bf16-rounded copy): refused, --force allowed.
    let bf16 = dir.join("bf16.safetensors");
    write_bf16_copy(&model, &bf16);
    let o = quill(&[
        "generate",
        "--model",
        s(&bf16),
        "--state-in",
        s(&snap),
        "-n",
        "2",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("fingerprint") && err.contains("--force"),
        "{err}"
    );
    ok(quill(&[
        "generate",
        "--model",
        s(&bf16),
        "--state-in",
        s(&snap),
        "-n",
        "2",
        "--force",
    ]));
    // Another version: refused even with --force.
    let v5 = random_dir().join("rand-v5.safetensors");
    if quill(&["info", s(&v5)]).status.success() {
        let o = quill(&[
            "generate",
            "--model",
            s(&v5),
            "--state-in",
            s(&snap),
            "-n",
            "2",
            "--force",
        ]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("RWKV-7"));
    }
}

#[test]
fn state_info_shows_metadata() {
    let dir = tmpdir("info");
    let model = random_dir().join("rand-v7.safetensors");
    let snap = dir.join("s.qs");
    ok(quill(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "Hello there",
        "-n",
        "3",
        "--state-out",
        s(&snap),
        "--seed",
        "9",
    ]));
    let o = ok(quill(&["state", "info", s(&snap), "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rwkv_version"], "7");
    assert_eq!(v["tokens"], "14");
    assert_eq!(v["n_layer"], "3");
    assert!(v["text_tail"].as_str().unwrap().starts_with("Hello there"));
    assert!(v["created"].as_str().unwrap().starts_with("20"));
    // Any safetensors reader can open it: our generic reader sees the tensors.
    let wf = quill::model::weights::WeightFile::open(&snap);
    // (A snapshot is not a model, but its tensor table parses.)
    let bytes = std::fs::read(&snap).unwrap();
    let (tensors, _) =
        quill::model::weights::parse_safetensors(&bytes, "snap", "a snapshot").unwrap();
    assert!(tensors.contains_key("blocks.0.att.wkv") && tensors.contains_key("logits"));
    assert_eq!(tensors["blocks.0.att.wkv"].shape, vec![2, 64, 64]);
    drop(wf);
}

fn write_bf16_copy(src: &Path, dst: &Path) {
    use quill::model::weights::{write_safetensors, DType, TensorOut, WeightFile};
    let file = WeightFile::open(src).unwrap();
    let outs: Vec<TensorOut> = file
        .tensors
        .iter()
        .map(|(name, info)| TensorOut {
            name: name.clone(),
            dtype: DType::BF16,
            shape: info.shape.clone(),
            data: file
                .to_f32(name)
                .unwrap()
                .iter()
                .flat_map(|&v| round_bf16(v).to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        })
        .collect();
    std::fs::write(dst, write_safetensors(&outs, &file.metadata)).unwrap();
}

#[test]
fn killing_the_process_during_a_save_keeps_the_previous_snapshot() {
    let dir = tmpdir("kill");
    let model = random_dir().join("rand-v7.safetensors");
    let snap = dir.join("s.qs");
    ok(quill(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "first",
        "-n",
        "3",
        "--state-out",
        s(&snap),
        "--seed",
        "1",
    ]));
    let before = std::fs::read(&snap).unwrap();
    // The second save pauses after writing its temporary file and before
    // the rename; kill -9 it inside that window.
    let mut child = Command::new(env!("CARGO_BIN_EXE_quill"))
        .args([
            "generate",
            "--model",
            s(&model),
            "--prompt",
            "second",
            "-n",
            "3",
            "--state-out",
            s(&snap),
            "--seed",
            "2",
        ])
        .env("QUILL_TEST_PAUSE_BEFORE_RENAME_MS", "5000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the temporary file exists (the save is under way).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let tmp_exists = std::fs::read_dir(&dir)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp-"));
        if tmp_exists {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the save never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read(&snap).unwrap(),
        before,
        "the previous snapshot changed"
    );
    ok(quill(&["state", "info", s(&snap)]));
}

#[test]
fn a_state_holding_nan_is_never_saved() {
    let dir = tmpdir("nan-save");
    let model = quill::model::Model::load(&random_dir().join("rand-v7.safetensors")).unwrap();
    let tok = quill::tokenizer::Tokenizer::new(quill::tokenizer::TokenizerKind::Bytes).unwrap();
    let mut session = quill::session::Session::new(
        std::sync::Arc::new(model),
        std::sync::Arc::new(tok),
        quill::sampler::Sampler::new(Default::default(), 1),
    );
    session.feed_text("abc").unwrap();
    let good = dir.join("good.qs");
    let snap = quill::snapshot::Snapshot::capture(&session);
    snap.save(&good).unwrap();
    let before = std::fs::read(&good).unwrap();
    let mut broken = snap.clone();
    broken.state.layers[1].wkv[5] = f32::INFINITY;
    let err = broken.save(&good).unwrap_err().to_string();
    assert!(
        err.contains("blocks.1.att.wkv") && err.contains("NaN or infinity"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&good).unwrap(),
        before,
        "the good snapshot was replaced"
    );
    let mut broken = snap.clone();
    broken.logits.as_mut().unwrap()[0] = f32::NAN;
    assert!(broken
        .check_finite()
        .unwrap_err()
        .to_string()
        .contains("logits"));
}

#[test]
fn a_state_made_with_converted_weights_does_not_pass_for_the_stored_ones() {
    let dir = tmpdir("dtype");
    let model = random_dir().join("rand-v7.safetensors");
    let gen = |extra: &[&str]| {
        let mut a = vec!["generate", "--model", s(&model), "-n", "2", "--seed", "1"];
        a.extend_from_slice(extra);
        quill(&a)
    };
    let as_stored = dir.join("stored.qs");
    let int8 = dir.join("int8.qs");
    ok(gen(&["--prompt", "abc", "--state-out", s(&as_stored)]));
    ok(gen(&[
        "--prompt",
        "abc",
        "--dtype",
        "int8",
        "--state-out",
        s(&int8),
    ]));
    // A state made as stored, continued with int8 weights: refused, and
    // told what to do.
    let o = gen(&["--state-in", s(&as_stored), "--dtype", "int8"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "continued with other weights");
    assert!(err.contains("leave out --dtype"), "{err}");
    // And the other way round.
    let o = gen(&["--state-in", s(&int8)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("pass --dtype int8"), "{err}");
    // Loaded as it was made, each continues; --force still overrides.
    ok(gen(&["--state-in", s(&int8), "--dtype", "int8"]));
    ok(gen(&["--state-in", s(&as_stored)]));
    ok(gen(&[
        "--state-in",
        s(&as_stored),
        "--dtype",
        "int8",
        "--force",
    ]));
    // A --dtype that is the file's own changes nothing.
    ok(gen(&["--state-in", s(&as_stored), "--dtype", "f32"]));
}

#[test]
fn state_tuned_time_state_imports_transposed() {
    use quill::model::weights::{f32_bytes, write_safetensors, DType, TensorOut};
    let dir = tmpdir("timestate");
    for v in ["v5", "v6", "v7"] {
        let model_path = random_dir().join(format!("rand-{v}.safetensors"));
        let model = quill::model::Model::load(&model_path).unwrap();
        let reference =
            load_state_tensors(&random_dir().join(format!("rand-{v}.state-story.safetensors")));
        let (h, n) = (model.info().dims.n_head, model.info().dims.head_size);
        // A published time_state is the transpose of the official wkv state.
        let outs: Vec<TensorOut> = (0..model.info().dims.n_layer)
            .map(|i| {
                let wkv = &reference[i * 3 + 1];
                let mut t = vec![0.0f32; wkv.len()];
                for hi in 0..h {
                    for a in 0..n {
                        for b in 0..n {
                            t[hi * n * n + a * n + b] = wkv[hi * n * n + b * n + a];
                        }
                    }
                }
                TensorOut {
                    name: format!("blocks.{i}.att.time_state"),
                    dtype: DType::F32,
                    shape: vec![h, n, n],
                    data: f32_bytes(&t).into(),
                }
            })
            .collect();
        let ts = dir.join(format!("{v}-state.safetensors"));
        std::fs::write(&ts, write_safetensors(&outs, &Default::default())).unwrap();
        let snap = quill::snapshot::load_for(&ts, &model).unwrap();
        for (i, layer) in snap.state.layers.iter().enumerate() {
            assert_eq!(layer.wkv, reference[i * 3 + 1], "{v} layer {i} wkv");
            assert!(layer.att_x.iter().chain(&layer.ffn_x).all(|&x| x == 0.0));
        }
        ok(quill(&[
            "generate",
            "--model",
            s(&model_path),
            "--state-in",
            s(&ts),
            "--prompt",
            "Hi",
            "-n",
            "5",
            "--seed",
            "1",
        ]));
        // NaN in a time_state is refused at import, not generated from
        // (which gave token 0 forever and a snapshot Quill refuses).
        let nan_outs: Vec<TensorOut> = (outs.iter().enumerate())
            .map(|(i, o)| TensorOut {
                name: o.name.clone(),
                dtype: DType::F32,
                shape: o.shape.clone(),
                data: if i == 0 {
                    f32_bytes(&vec![f32::NAN; h * n * n]).into()
                } else {
                    o.data.clone()
                },
            })
            .collect();
        let nan = dir.join(format!("{v}-nan.safetensors"));
        std::fs::write(&nan, write_safetensors(&nan_outs, &Default::default())).unwrap();
        let err = quill::snapshot::load_for(&nan, &model)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NaN") && err.contains("time_state"), "{err}");
        let out = dir.join(format!("{v}-nan.qs"));
        let o = quill(&[
            "generate",
            "--model",
            s(&model_path),
            "--state-in",
            s(&nan),
            "--prompt",
            "Hi",
            "-n",
            "2",
            "--state-out",
            s(&out),
        ]);
        assert!(!o.status.success(), "{v}: a NaN time_state was used");
        assert!(!out.exists(), "{v}: a snapshot was written from it");
        // A time_state for another shape is refused with the reason.
        let other = random_dir().join("rand-v7.safetensors");
        if v != "v7" {
            let o = quill(&[
                "generate",
                "--model",
                s(&other),
                "--state-in",
                s(&ts),
                "--prompt",
                "Hi",
                "-n",
                "1",
            ]);
            assert!(!o.status.success());
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("time_state"),
                "{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}
