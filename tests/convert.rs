//! `quill convert` and `quill perplexity`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use quill::model::weights::WeightFile;
use quill::model::{Logits, Model};

fn quill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(args)
        .env_remove("QUILL_MODEL")
        .output()
        .expect("run quill")
}

/// A file path `name` in a folder of its own that goes when the returned
/// guard does.
fn tmp(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(&format!("convert-{name}"));
    let path = dir.join(name);
    (dir, path)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn story_logits(model: &Model) -> Vec<f32> {
    let tokens: Vec<u32> = "It was a dark and stormy night"
        .bytes()
        .map(u32::from)
        .collect();
    let mut st = model.new_state();
    model.forward(&tokens, &mut st, Logits::All).unwrap()
}

#[test]
fn pth_converts_to_safetensors_with_identical_logits() {
    for v in ["v4", "v5", "v6", "v7"] {
        let src = random_dir().join(format!("rand-{v}-bf16.pth"));
        let (_out_dir, out) = tmp(&format!("{v}.safetensors"));
        let o = quill(&["convert", s(&src), s(&out)]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let a = story_logits(&Model::load(&src).unwrap());
        let b = story_logits(&Model::load(&out).unwrap());
        assert_eq!(a, b, "{v}: logits changed by conversion");
        let wf = WeightFile::open(&out).unwrap();
        assert_eq!(wf.metadata["tokenizer"], "bytes");
        assert_eq!(wf.metadata["rwkv_version"], &v[1..]);
    }
}

#[test]
fn dtype_conversion_matches_bf16_reference() {
    let src = random_dir().join("rand-v7.safetensors");
    let (_out_dir, out) = tmp("v7-bf16.safetensors");
    let o = quill(&["convert", s(&src), s(&out), "--dtype", "bf16"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = Model::load(&out).unwrap();
    assert_eq!(model.info().dtype.to_string(), "bf16");
    check_model(
        &model,
        &random_dir().join("rand-v7-bf16.expected.json"),
        None,
        "converted bf16",
    );
    // f16 round trip loads and runs close to f32.
    let (_out16_dir, out16) = tmp("v7-f16.safetensors");
    assert!(quill(&["convert", s(&src), s(&out16), "--dtype", "f16"])
        .status
        .success());
    let a = story_logits(&Model::load(&src).unwrap());
    let b = story_logits(&Model::load(&out16).unwrap());
    assert!(max_diff(&a, &b) < 0.05, "f16 drifted {}", max_diff(&a, &b));
    // Bad dtype and same-file output are refused.
    assert!(!quill(&["convert", s(&src), s(&out), "--dtype", "q4"])
        .status
        .success());
    let o = quill(&["convert", s(&src), s(&src)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("overwrite"));
}

/// A file's bytes, to show it was not touched.
fn bytes_of(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn the_input_is_never_overwritten_whatever_the_output_is_called() {
    let dir = TempDir::new("convert-same");
    let input = dir.join("mine.pth");
    std::fs::copy(random_dir().join("rand-v5-bf16.pth"), &input).unwrap();
    let before = bytes_of(&input);
    let link = dir.join("link.pth");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let dotted = dir.join(".").join("mine.pth");
    let via_parent = dir.join("sub").join("..").join("mine.pth");
    std::fs::create_dir(dir.join("sub")).unwrap();
    for (from, to) in [
        (&input, &dotted),
        (&input, &via_parent),
        (&link, &input),
        (&input, &link),
    ] {
        let o = quill(&["convert", s(from), s(to), "--dtype", "int8"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{} -> {} was accepted", s(from), s(to));
        assert!(err.contains("overwrite"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert_eq!(bytes_of(&input), before, "{} -> {}", s(from), s(to));
    }
    // Relative spellings, from inside the folder.
    let o = Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(["convert", "mine.pth", "./mine.pth"])
        .current_dir(&*dir)
        .env_remove("QUILL_MODEL")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(bytes_of(&input), before);
    // A real second file is still written.
    let (_d, out) = tmp("other.safetensors");
    assert!(quill(&["convert", s(&link), s(&out)]).status.success());
    assert!(Model::load(&out).is_ok());
}

#[test]
fn a_tokenizer_with_more_ids_than_the_model_has_rows_is_refused() {
    let src = random_dir().join("rand-v7.safetensors");
    let (_d, out) = tmp("world.safetensors");
    let o = quill(&["convert", s(&src), s(&out), "--tokenizer", "world"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a 256-row model recorded as world");
    assert!(err.contains("--tokenizer bytes"), "{err}");
    assert!(!out.exists(), "nothing written");
    // The same check guards every command that picks a tokenizer.
    let o = quill(&[
        "generate",
        "-m",
        s(&src),
        "--tokenizer",
        "world",
        "--prompt",
        "hi",
        "-n",
        "2",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("256 vocabulary rows"));
    // The tokenizer that fits is recorded.
    let o = quill(&["convert", s(&src), s(&out), "--tokenizer", "bytes"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn perplexity_is_the_mean_nll_and_chunking_does_not_change_it() {
    let model_path = random_dir().join("rand-v7.safetensors");
    let text = "The quick brown fox jumps over the lazy dog. It was the best of times.";
    let (_file_dir, file) = tmp("text.txt");
    std::fs::write(&file, text).unwrap();
    let run = |chunk: &str| -> serde_json::Value {
        let o = quill(&[
            "perplexity",
            "--model",
            s(&model_path),
            s(&file),
            "--chunk",
            chunk,
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let a = run("256");
    let b = run("7");
    assert_eq!(a["tokens"], text.len() - 1);
    let (na, nb) = (
        a["mean_nll"].as_f64().unwrap(),
        b["mean_nll"].as_f64().unwrap(),
    );
    assert!((na - nb).abs() < 1e-5, "{na} vs {nb}");
    // Independent computation: serial steps, log-softmax by hand.
    let model = Model::load(&model_path).unwrap();
    let toks: Vec<u32> = text.bytes().map(u32::from).collect();
    let mut st = model.new_state();
    let mut total = 0.0f64;
    for t in 0..toks.len() - 1 {
        let l = model.forward(&[toks[t]], &mut st, Logits::Last).unwrap();
        let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        total += z.ln() - l[toks[t + 1] as usize] as f64;
    }
    let manual = total / (toks.len() - 1) as f64;
    assert!((manual - na).abs() < 1e-4, "manual {manual} vs quill {na}");
    assert!((a["perplexity"].as_f64().unwrap() - na.exp()).abs() < 1e-6 * na.exp());
}

#[test]
fn perplexity_prefers_real_text_on_a_trained_model() {
    let Some(dir) = trained_dir() else {
        panic!("trained fixtures missing");
    };
    let model = Model::load(&dir.join("trained-v7.safetensors")).unwrap();
    let english: Vec<u32> = "and the king said unto them, go ye into the city and tell the people"
        .bytes()
        .map(u32::from)
        .collect();
    let noise: Vec<u32> = "qz xv kj wq pz fj vx qk zj wx vq jz kq xw zv qj fk xz jq vw kx zq"
        .bytes()
        .map(u32::from)
        .collect();
    let a = quill::eval::perplexity(&model, &english, 16, |_| {}).unwrap();
    let b = quill::eval::perplexity(&model, &noise, 16, |_| {}).unwrap();
    assert!(
        a.mean_nll < b.mean_nll,
        "english {} vs noise {}",
        a.mean_nll,
        b.mean_nll
    );
}

#[test]
fn int8_files_load_as_quantising_at_load_does() {
    use quill::kernels::{Matrix, WeightDtype};
    use quill::model::weights::DType;
    use quill::model::LoadOptions;
    use std::sync::Arc;
    let int8 = LoadOptions {
        dtype: Some(WeightDtype::Int8),
    };
    for v in ["v4", "v5", "v6", "v7"] {
        let src = random_dir().join(format!("rand-{v}.safetensors"));
        let (_dir, out) = tmp(&format!("{v}-int8.safetensors"));
        let o = quill(&["convert", s(&src), s(&out), "--dtype", "int8"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // Bit for bit what `--dtype int8` computes from the source.
        let at_load = story_logits(&Model::load_with(&src, &int8).unwrap());
        let model = Model::load(&out).unwrap();
        assert_eq!(model.info().weight_dtype, WeightDtype::Int8, "{v}");
        assert_eq!(story_logits(&model), at_load, "{v}: logits differ");
        // The matrices are int8 in the file, each with its scales.
        let wf = WeightFile::open(&out).unwrap();
        let names = model.matrix_tensors();
        assert!(names.iter().any(|n| n == "head.weight"), "{v}: {names:?}");
        for n in names {
            assert_eq!(wf.tensors[n].dtype, DType::I8, "{v}: {n}");
            assert_eq!(wf.tensors[&format!("{n}.q8_scales")].dtype, DType::F32);
        }
        assert_eq!(
            wf.tensors["emb.weight"].dtype,
            WeightFile::open(&src).unwrap().tensors["emb.weight"].dtype
        );
        assert!(std::fs::metadata(&out).unwrap().len() < std::fs::metadata(&src).unwrap().len());
        // Asked for another dtype, an int8 matrix is widened from its
        // scaled values: exactly what converting the quantised source gives.
        let widened = Model::load_with(
            &out,
            &LoadOptions {
                dtype: Some(WeightDtype::BF16),
            },
        )
        .unwrap();
        assert_eq!(widened.info().weight_dtype, WeightDtype::BF16, "{v}");
        assert!(story_logits(&widened).iter().all(|x| x.is_finite()));
        let shape = &wf.tensors["head.weight"].shape;
        let (rows, cols) = (shape[0], shape[1]);
        let from_file = Matrix::from_file(&wf, "head.weight", rows, cols)
            .unwrap()
            .convert(WeightDtype::BF16);
        let src_file = Arc::new(WeightFile::open(&src).unwrap());
        let expected = Matrix::from_file(&src_file, "head.weight", rows, cols)
            .unwrap()
            .convert(WeightDtype::Int8)
            .convert(WeightDtype::BF16);
        let (mut a, mut b) = (vec![0.0; cols], vec![0.0; cols]);
        for r in 0..rows {
            from_file.row_f32(r, &mut a);
            expected.row_f32(r, &mut b);
            assert_eq!(a, b, "{v}: head row {r}");
        }
        // An int8 file is not converted again.
        let (_d2, again) = tmp(&format!("{v}-again.safetensors"));
        let o = quill(&["convert", s(&out), s(&again), "--dtype", "bf16"]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("already quantised"));
    }
}

/// A damaged int8 file (scales missing or of the wrong shape, int8 where a
/// float vector belongs, a weight of −128) is a one-line error, not a panic.
#[test]
fn damaged_int8_files_are_refused_with_a_reason() {
    use quill::model::weights::{write_safetensors, DType, TensorOut};
    let src = random_dir().join("rand-v7.safetensors");
    let (dir, out) = tmp("v7-int8.safetensors");
    assert!(quill(&["convert", s(&src), s(&out), "--dtype", "int8"])
        .status
        .success());
    let wf = WeightFile::open(&out).unwrap();
    let variant = |name: &str, edit: &dyn Fn(&str, &mut TensorOut) -> bool| {
        let mut tensors = Vec::new();
        for (n, info) in &wf.tensors {
            let mut t = TensorOut {
                name: n.clone(),
                dtype: info.dtype,
                shape: info.shape.clone(),
                data: wf.raw(info).into(),
            };
            if edit(n, &mut t) {
                tensors.push(t);
            }
        }
        let path = dir.join(name);
        std::fs::write(&path, write_safetensors(&tensors, &wf.metadata)).unwrap();
        let o = quill(&["generate", "-m", s(&path), "--prompt", "hi", "-n", "1"]);
        assert!(!o.status.success(), "{name} loaded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = variant("no-scales.safetensors", &|n, _| {
        n != "blocks.0.att.key.weight.q8_scales"
    });
    assert!(
        e.contains("blocks.0.att.key.weight") && e.contains("scales"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    let e = variant("bad-scales.safetensors", &|n, t| {
        if n == "head.weight.q8_scales" {
            t.shape = vec![t.shape[0] * t.shape[1]];
        }
        true
    });
    assert!(
        e.contains("head.weight.q8_scales") && e.contains("expected f32"),
        "{e}"
    );
    let e = variant("int8-vector.safetensors", &|n, t| {
        if n == "ln_out.weight" {
            let bytes: Vec<u8> = t.data.chunks(4).map(|_| 1u8).collect();
            t.dtype = DType::I8;
            t.data = bytes.into();
        }
        true
    });
    assert!(e.contains("ln_out.weight") && e.contains("int8"), "{e}");
    // −128 is outside quill's int8 (±127), which the AVX2 kernels rely on.
    let e = variant("minus-128.safetensors", &|n, t| {
        if n == "blocks.0.att.key.weight" {
            let mut bytes = t.data.to_vec();
            bytes[5] = 0x80;
            t.data = bytes.into();
        }
        true
    });
    assert!(
        e.contains("blocks.0.att.key.weight") && e.contains("−128") && e.contains("element 5"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}
