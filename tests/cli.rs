//! The `quill` binary end to end: generate, logits, tokenize, info, and
//! the one-line errors for bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use quill::model::weights::{write_safetensors, DType, TensorOut};

fn quill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(args)
        .env_remove("QUILL_MODEL")
        .output()
        .expect("run quill")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn v7() -> PathBuf {
    random_dir().join("rand-v7.safetensors")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A failure as users must see it: non-zero exit, one line naming the
/// problem, no panic or backtrace.
fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "error should mention `{needle}`: {err}"
    );
}

/// A file path `name` in a folder of its own that goes when the returned
/// guard does.
fn tmp(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(&format!("cli-{name}"));
    let path = dir.join(name);
    (dir, path)
}

#[test]
fn logits_match_reference_in_both_modes() {
    let cases = load_cases(&random_dir().join("rand-v7.expected.json"));
    let case = cases.iter().find(|c| c.name == "story").unwrap();
    let ids: Vec<String> = case.tokens.iter().map(|t| t.to_string()).collect();
    let ids = ids.join(",");
    for serial in [false, true] {
        let model = v7();
        let mut args = vec!["logits", "--model", p(&model), "--tokens", &ids, "--all"];
        if serial {
            args.push("--serial");
        }
        let o = quill(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let last: Vec<f32> = v["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert!(max_diff(&last, &case.logits_seq_last) <= TOL);
        let steps = v["steps"].as_array().unwrap();
        assert_eq!(steps.len(), case.tokens.len());
        for (t, step) in steps.iter().enumerate() {
            let got: Vec<f32> = step
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert!(max_diff(&got, &case.logits_serial[t]) <= TOL, "step {t}");
        }
    }
}

#[test]
fn generate_is_reproducible_with_a_seed() {
    let run = |seed: &str| {
        let o = quill(&[
            "generate",
            "--model",
            p(&v7()),
            "--prompt",
            "Once upon a time",
            "-n",
            "40",
            "--seed",
            seed,
            "--temperature",
            "1",
            "--top-p",
            "0.9",
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    let a = run("7");
    let b = run("7");
    let c = run("8");
    assert_eq!(a["tokens"], b["tokens"]);
    assert_eq!(a["text"], b["text"]);
    assert_eq!(a["tokens"].as_array().unwrap().len(), 40);
    assert_eq!(a["prompt_tokens"], 16);
    assert_ne!(
        a["tokens"], c["tokens"],
        "another seed should change the sample"
    );
    assert!(a["tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn greedy_generate_matches_reference_continuation() {
    let cases = load_cases(&random_dir().join("rand-v7.expected.json"));
    let case = cases.iter().find(|c| c.name == "story").unwrap();
    let ids: Vec<String> = case.tokens.iter().map(|t| t.to_string()).collect();
    let n_ok = case
        .greedy_margin
        .iter()
        .take_while(|&&m| m >= 1e-3)
        .count()
        .min(20);
    let o = quill(&[
        "generate",
        "--model",
        p(&v7()),
        "--tokens",
        &ids.join(","),
        "-n",
        &n_ok.to_string(),
        "--temperature",
        "0",
        "--presence",
        "0",
        "--frequency",
        "0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let got: Vec<u32> = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(&got[..], &case.greedy[..n_ok]);
}

#[test]
fn generate_zero_tokens_reads_prompt_only_and_stop_strings_cut() {
    let o = quill(&[
        "generate",
        "--model",
        p(&v7()),
        "--prompt",
        "abc",
        "-n",
        "0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 0);
    assert_eq!(v["prompt_tokens"], 3);
    // Greedy text of the random model, then the same run with a stop string
    // taken from inside it: the output is cut just before it.
    let base = quill(&[
        "generate",
        "--model",
        p(&v7()),
        "--prompt",
        "abc",
        "-n",
        "30",
        "--temperature",
        "0",
        "--json",
    ]);
    let base: serde_json::Value = serde_json::from_str(&stdout(&base)).unwrap();
    // The reason is a plain name, not Rust's Debug text.
    assert_eq!(base["stop"], "length");
    assert!(base["stop_string"].is_null(), "{base}");
    let text = base["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 12, "need some text: {text:?}");
    let stop: String = chars[8..11].iter().collect();
    let o = quill(&[
        "generate",
        "--model",
        p(&v7()),
        "--prompt",
        "abc",
        "-n",
        "30",
        "--temperature",
        "0",
        "--stop",
        &stop,
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let cut = v["text"].as_str().unwrap();
    assert!(!cut.contains(&stop));
    assert_eq!(v["stop"], "stop");
    assert_eq!(v["stop_string"], stop.as_str());
    assert!(text.starts_with(cut) && cut.len() < text.len());
}

#[test]
fn streaming_output_equals_json_text() {
    let model = v7();
    let args = [
        "generate",
        "--model",
        p(&model),
        "--prompt",
        "héllo wörld",
        "-n",
        "30",
        "--seed",
        "3",
    ];
    let o = quill(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let j = quill(&with_json);
    let v: serde_json::Value = serde_json::from_str(&stdout(&j)).unwrap();
    let streamed = stdout(&o);
    let text = v["text"].as_str().unwrap();
    assert_eq!(streamed.trim_end_matches('\n'), text.trim_end_matches('\n'));
    assert!(stderr(&o).contains("tokens/s"), "timing goes to stderr");
}

#[test]
fn tokenize_and_info() {
    let o = quill(&[
        "tokenize",
        "--tokenizer",
        "world",
        "--text",
        "Hello, world!",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "[33155,45,40213,34]");
    let o = quill(&[
        "tokenize",
        "--tokenizer",
        "world",
        "--decode",
        "33155,45,40213,34",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()["text"],
        "Hello, world!"
    );
    let o = quill(&["tokenize", "--model", p(&v7()), "--text", "hi"]);
    assert_eq!(
        stdout(&o).trim(),
        "[104,105]",
        "a 256-row model is byte-level"
    );
    let o = quill(&["info", p(&v7()), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["version"], 7);
    assert_eq!(v["layers"], 3);
    assert_eq!(v["width"], 128);
    assert_eq!(v["heads"], 2);
    assert_eq!(v["vocab"], 256);
    assert_eq!(v["state_bytes"], 3 * (2 * 128 + 2 * 64 * 64) * 4);
    let o = quill(&["info", p(&v7())]);
    assert!(stdout(&o).contains("RWKV-7"));
}

#[test]
fn bad_input_gets_one_line_errors() {
    let m = v7();
    // Missing file.
    assert_clean_error(
        &quill(&["info", "/nonexistent/model.safetensors"]),
        "/nonexistent/model.safetensors",
    );
    // Not a safetensors file.
    let (_junk_dir, junk) = tmp("junk.safetensors");
    std::fs::write(&junk, "this is a text file, not a model\n").unwrap();
    assert_clean_error(&quill(&["info", p(&junk)]), "not a safetensors file");
    // A directory.
    assert_clean_error(&quill(&["info", p(&std::env::temp_dir())]), "directory");
    // Truncated at many points.
    let bytes = std::fs::read(&m).unwrap();
    let (_trunc_dir, trunc) = tmp("trunc.safetensors");
    for cut in [0, 4, 8, 9, 100, 1000, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&trunc, &bytes[..cut]).unwrap();
        let o = quill(&["info", p(&trunc)]);
        assert!(!o.status.success(), "truncated at {cut} loaded");
        assert!(
            !stderr(&o).contains("panicked"),
            "cut {cut}: {}",
            stderr(&o)
        );
        assert_eq!(
            stderr(&o).trim().lines().count(),
            1,
            "cut {cut}: {}",
            stderr(&o)
        );
    }
    // A header that lies about offsets.
    let (_liar_dir, liar) = tmp("liar.safetensors");
    let t = TensorOut {
        name: "emb.weight".into(),
        dtype: DType::F32,
        shape: vec![4, 4],
        data: vec![0u8; 64].into(),
    };
    let mut good = write_safetensors(&[t], &Default::default());
    let hlen = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(good[8..8 + hlen].to_vec())
        .unwrap()
        .replace("[0,64]", "[0,96]");
    let header = format!("{header:<width$}", width = hlen);
    good[8..8 + hlen].copy_from_slice(header.as_bytes());
    std::fs::write(&liar, &good).unwrap();
    assert_clean_error(&quill(&["info", p(&liar)]), "emb.weight");
    // Unknown architecture.
    let (_alien_dir, alien) = tmp("alien.safetensors");
    let ts = vec![
        TensorOut {
            name: "emb.weight".into(),
            dtype: DType::F32,
            shape: vec![2, 2],
            data: vec![0u8; 16].into(),
        },
        TensorOut {
            name: "head.weight".into(),
            dtype: DType::F32,
            shape: vec![2, 2],
            data: vec![0u8; 16].into(),
        },
        TensorOut {
            name: "blocks.0.att.mystery".into(),
            dtype: DType::F32,
            shape: vec![2],
            data: vec![0u8; 8].into(),
        },
    ];
    std::fs::write(&alien, write_safetensors(&ts, &Default::default())).unwrap();
    assert_clean_error(&quill(&["info", p(&alien)]), "architecture");
    // A tensor with the wrong shape is named.
    let wf = quill::model::weights::WeightFile::open(&m).unwrap();
    let ts: Vec<TensorOut> = wf
        .tensors
        .iter()
        .map(|(n, i)| {
            let mut shape = i.shape.clone();
            let mut data = wf.raw(i).to_vec();
            if n == "blocks.1.att.key.weight" {
                shape = vec![64, 256];
                data.truncate(64 * 256 * 4);
            }
            TensorOut {
                name: n.clone(),
                dtype: i.dtype,
                shape,
                data: data.into(),
            }
        })
        .collect();
    let (_bad_shape_dir, bad_shape) = tmp("shape.safetensors");
    std::fs::write(&bad_shape, write_safetensors(&ts, &Default::default())).unwrap();
    assert_clean_error(&quill(&["info", p(&bad_shape)]), "blocks.1.att.key.weight");
    // Token id ≥ vocab.
    assert_clean_error(
        &quill(&["logits", "--model", p(&m), "--tokens", "1,2,256"]),
        "256",
    );
    assert_clean_error(
        &quill(&["generate", "--model", p(&m), "--tokens", "999", "-n", "1"]),
        "999",
    );
    // Empty prompt.
    assert_clean_error(
        &quill(&["generate", "--model", p(&m), "--prompt", "", "-n", "5"]),
        "empty",
    );
    // Bad sampler value.
    assert_clean_error(
        &quill(&[
            "generate",
            "--model",
            p(&m),
            "--prompt",
            "hi",
            "--top-p",
            "2",
        ]),
        "top_p",
    );
    // Bad token list.
    assert_clean_error(
        &quill(&["logits", "--model", p(&m), "--tokens", "1,x"]),
        "`x`",
    );
}

#[test]
fn nan_and_inf_weights_are_refused_at_load() {
    let wf = quill::model::weights::WeightFile::open(&v7()).unwrap();
    for (bad, label) in [(f32::NAN, "nan"), (f32::INFINITY, "inf")] {
        let ts: Vec<TensorOut> = wf
            .tensors
            .iter()
            .map(|(n, i)| {
                let mut data = wf.raw(i).to_vec();
                if n == "blocks.2.ffn.value.weight" {
                    data[400..404].copy_from_slice(&bad.to_le_bytes());
                }
                TensorOut {
                    name: n.clone(),
                    dtype: i.dtype,
                    shape: i.shape.clone(),
                    data: data.into(),
                }
            })
            .collect();
        let (_path_dir, path) = tmp(&format!("{label}.safetensors"));
        std::fs::write(&path, write_safetensors(&ts, &Default::default())).unwrap();
        assert_clean_error(&quill(&["info", p(&path)]), "blocks.2.ffn.value.weight");
    }
}

#[test]
fn threads_beyond_the_bound_are_refused_naming_it() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = (4 * cpus).max(8);
    let too_many = (max + 1).to_string();
    for args in [
        vec![
            "generate",
            "--prompt",
            "Hello",
            "-n",
            "5",
            "--threads",
            "5000",
        ],
        vec![
            "generate",
            "--prompt",
            "Hello",
            "-n",
            "5",
            "--threads",
            &too_many,
        ],
        // Refused before any measurement starts.
        vec!["bench", "--threads", "5000"],
    ] {
        let o = quill(&args);
        assert_clean_error(&o, &format!("at most {max}"));
        assert!(
            stderr(&o).contains(&format!("{cpus} CPUs")),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert_clean_error(&quill(&["bench", "--threads", "0"]), "at least 1");
    // The bound itself is accepted.
    let o = quill(&[
        "generate",
        "--prompt",
        "Hello",
        "-n",
        "2",
        "--threads",
        &max.to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bench_help_shows_no_made_up_thread_default() {
    let o = quill(&["bench", "--help"]);
    assert!(o.status.success());
    let help = stdout(&o);
    let line = help
        .lines()
        .find(|l| l.contains("--threads"))
        .expect("--threads in bench --help");
    assert!(!line.contains("[default: 0]"), "{line}");
    assert!(line.contains("physical cores"), "{line}");
}

#[test]
fn negative_numbers_reach_the_options_own_checks() {
    // A negative presence penalty is a legitimate setting.
    let o = quill(&[
        "generate",
        "--prompt",
        "Hello",
        "-n",
        "3",
        "--seed",
        "1",
        "--presence",
        "-0.5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (flag, value, needle) in [
        ("--temperature", "-1", "temperature -1 must be ≥ 0"),
        ("--top-p", "-0.5", "top_p -0.5 must be in (0, 1]"),
    ] {
        let o = quill(&["generate", "--prompt", "Hello", "-n", "3", flag, value]);
        assert_clean_error(&o, needle);
    }
    let o = quill(&["chat", "--temperature", "-2"]);
    assert_clean_error(&o, "temperature -2 must be ≥ 0");
    // A count that cannot be negative: the value is refused, not taken
    // for an unknown flag.
    let o = quill(&["generate", "--prompt", "Hello", "-n", "-1"]);
    assert_clean_error(&o, "invalid value '-1'");
    assert!(
        !stderr(&o).contains("unexpected argument"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn tokenize_follows_the_default_model_and_decodes_its_own_output() {
    // No --model: the built-in model, which is byte-level, as for generate.
    let o = quill(&["tokenize", "--text", "Hi"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "[72,105]");
    // $QUILL_MODEL is the default model here too (this one does not exist,
    // so the error proves it was the one used)...
    let env = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_quill"))
            .args(args)
            .env("QUILL_MODEL", "/nonexistent/quill-env-model.safetensors")
            .output()
            .unwrap()
    };
    assert_clean_error(
        &env(&["tokenize", "--text", "Hi"]),
        "quill-env-model.safetensors",
    );
    // ...unless --tokenizer names the tokenizer outright.
    let o = env(&[
        "tokenize",
        "--tokenizer",
        "world",
        "--text",
        "Hello, world!",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    assert_eq!(printed.trim(), "[33155,45,40213,34]");
    // What encoding printed decodes back, brackets, spaces and all.
    for ids in [
        printed.trim(),
        "[33155, 45, 40213, 34]",
        " [ 33155,45,40213,34 ] ",
    ] {
        let o = quill(&["tokenize", "--tokenizer", "world", "--decode", ids]);
        assert!(o.status.success(), "{ids}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["text"], "Hello, world!", "{ids}");
    }
}

#[test]
fn an_unwritable_state_out_is_refused_before_generating() {
    let dir = TempDir::new("cli-state-out");
    let missing = dir.join("missing/story.qs");
    let file = dir.join("file.txt");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("story.qs");
    for (out, needle) in [
        (p(&missing), "does not exist"),
        (p(&under_file), "is not a folder"),
        (p(&dir), "is a folder"),
    ] {
        // One line on stderr: the prompt and generation summaries, which a
        // run prints before saving, never appear.
        let o = quill(&[
            "generate",
            "--prompt",
            "Hello",
            "-n",
            "50",
            "--state-out",
            out,
        ]);
        assert_clean_error(&o, needle);
        assert!(stdout(&o).is_empty(), "generated: {}", stdout(&o));
    }
    // convert checks its output the same way, before loading.
    let o = quill(&["convert", p(&v7()), p(&missing)]);
    assert_clean_error(&o, "does not exist");
    assert!(!missing.exists());
}

#[test]
fn errors_name_a_file_once_and_hint_at_a_tokenizer_mismatch() {
    let dir = TempDir::new("cli-wording");
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, "not a model at all").unwrap();
    let missing = dir.join("missing.safetensors");
    let out = dir.join("out.safetensors");
    for model in [&garbage, &missing] {
        for args in [
            vec!["generate", "-m", p(model), "--prompt", "hi", "-n", "1"],
            vec!["info", p(model)],
            vec!["convert", p(model), p(&out)],
            vec!["tokenize", "-m", p(model), "--text", "hi"],
        ] {
            let o = quill(&args);
            assert_clean_error(&o, p(model));
            assert_eq!(
                stderr(&o).matches(p(model)).count(),
                1,
                "{args:?}: the path is said more than once: {}",
                stderr(&o)
            );
        }
    }
    // World ids fed to the byte-level built-in model: say which option fixes it.
    let o = quill(&[
        "generate",
        "--tokenizer",
        "world",
        "--prompt",
        "Hello world",
        "-n",
        "2",
    ]);
    assert_clean_error(&o, "only 256 vocabulary rows");
    assert!(
        stderr(&o).contains("the world tokenizer (65536 ids)")
            && stderr(&o).contains("use --tokenizer bytes"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(["chat", "--tokenizer", "world", "--no-cache"])
        .env_remove("QUILL_MODEL")
        .env("QUILL_DATA_DIR", &dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_clean_error(&o, "use --tokenizer bytes");
    // Ids typed in by hand are not blamed on a tokenizer.
    let o = quill(&["generate", "--tokens", "300", "-n", "1"]);
    assert_clean_error(&o, "token id 300 is outside the vocabulary");
    assert!(!stderr(&o).contains("--tokenizer"), "{}", stderr(&o));
}

#[test]
fn usage_mistakes_are_one_line_and_help_still_prints() {
    // Missing arguments: the names and the usage stay, on one line.
    let o = quill(&["convert"]);
    assert_clean_error(&o, "<INPUT>");
    assert!(
        stderr(&o).contains("usage: quill convert"),
        "{}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(2), "clap's usage-error status");
    let o = quill(&["generate", "--no-such-flag"]);
    assert_clean_error(&o, "--no-such-flag");
    let o = quill(&["frobnicate"]);
    assert_clean_error(&o, "frobnicate");
    // Help and version are not errors: stdout, exit 0, as before.
    let o = quill(&["generate", "--help"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("Usage: quill generate"),
        "{}",
        stdout(&o)
    );
    let o = quill(&["--version"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("quill "), "{}", stdout(&o));
    // `quill` alone shows the help (on stderr, as clap does) and fails.
    let o = quill(&[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Commands:"), "{}", stderr(&o));
}
