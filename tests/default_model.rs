//! The built-in model: every command works without `--model`, the engine
//! reproduces the trainer's held-out loss, and samples are mostly words.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use quill::model::default::load_default;

fn heldout() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/train/heldout.txt"))
        .unwrap()
}

#[test]
fn engine_reproduces_the_trainers_heldout_loss() {
    let model = load_default().unwrap();
    let info = model.info();
    assert_eq!(info.metadata["tokenizer"], "bytes");
    assert_eq!(info.metadata["rwkv_version"], "7");
    let trainer: f64 = info.metadata["heldout_nats_per_byte"].parse().unwrap();
    assert!(
        trainer <= 1.7,
        "the issue asks for at most 1.7 nats/byte, trainer says {trainer}"
    );
    let tokens: Vec<u32> = heldout().bytes().map(u32::from).collect();
    let r = quill::eval::perplexity(&model, &tokens, 1024, |_| {}).unwrap();
    let rel = (r.mean_nll - trainer).abs() / trainer;
    eprintln!(
        "held-out: quill {:.5} nats/byte, trainer {trainer}",
        r.mean_nll
    );
    assert!(
        rel < 0.01,
        "quill {} vs trainer {trainer}: {:.3}% apart",
        r.mean_nll,
        rel * 100.0
    );
}

#[test]
fn samples_at_temperature_0_8_are_mostly_words() {
    let vocab: HashSet<String> = heldout()
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let o = Command::new(env!("CARGO_BIN_EXE_quill"))
        .args([
            "generate",
            "--prompt",
            "\n\nACT I.\n\nScene I. ",
            "-n",
            "600",
            "--temperature",
            "0.8",
            "--top-p",
            "1",
        ])
        .args([
            "--presence",
            "0",
            "--frequency",
            "0",
            "--seed",
            "1",
            "--json",
        ])
        .env_remove("QUILL_MODEL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = v["text"].as_str().unwrap();
    let words: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() > 1)
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let known = words.iter().filter(|w| vocab.contains(*w)).count();
    eprintln!("{known}/{} words known; sample: {text:?}", words.len());
    assert!(words.len() >= 60, "too few words: {text:?}");
    assert!(
        known * 100 >= words.len() * 70,
        "only {known}/{} real words: {text:?}",
        words.len()
    );
}

#[test]
fn every_command_works_without_a_model_flag() {
    let q = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_quill"))
            .args(args)
            .env_remove("QUILL_MODEL")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(q(&["info"]).contains("built-in"));
    assert!(q(&["generate", "--prompt", "To be", "-n", "20", "--seed", "2"]).len() > 10);
    assert!(q(&["logits", "--tokens", "84,111"]).starts_with("{\"logits\""));
    let dir = common::TempDir::new("default");
    let f = dir.join("t.txt");
    std::fs::write(&f, "What light through yonder window breaks?").unwrap();
    assert!(q(&["perplexity", f.to_str().unwrap()]).contains("perplexity"));
}

/// The built-in model is shown by name everywhere a model file's name
/// would be: the chat banner, `/show`, `/sessions`, a snapshot's model
/// field and a story manifest's `model` (it once showed as
/// `quill-default.safetensors)`, the tail of a name holding a `/`).
#[test]
fn the_built_in_models_name_shows_whole() {
    const NAME: &str = "built-in quill-default";
    let stray = |what: &str, text: &str| {
        assert!(
            !text.contains("safetensors)") && !text.contains("quill-default)"),
            "{what}: stray parenthesis: {text}"
        );
    };
    let dir = common::TempDir::new("default-name");
    let run = |args: &[&str], stdin: &[u8]| {
        use std::io::Write as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_quill"))
            .args(args)
            .env_remove("QUILL_MODEL")
            .env("QUILL_DATA_DIR", dir.join("data"))
            .env("QUILL_CACHE_DIR", dir.join("cache"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mut all = String::from_utf8_lossy(&o.stdout).into_owned();
        all.push_str(&String::from_utf8_lossy(&o.stderr));
        all
    };
    let chat = run(&["chat", "--seed", "1"], b"/show\n/save s1\n/sessions\n");
    stray("chat", &chat);
    assert!(
        chat.contains(&format!("quill chat: {NAME} (")),
        "banner: {chat}"
    );
    assert!(
        chat.contains(&format!("model      {NAME} (")),
        "/show: {chat}"
    );
    let listed = chat.lines().find(|l| l.trim_start().starts_with("s1 "));
    assert!(
        listed.is_some_and(|l| l.contains(NAME)),
        "/sessions: {chat}"
    );
    let snap = dir.join("s.qs");
    let snap = snap.to_str().unwrap();
    run(
        &["generate", "--prompt", "Hi", "-n", "3", "--state-out", snap],
        b"",
    );
    let info = run(&["state", "info", snap], b"");
    stray("state info", &info);
    assert!(
        info.lines()
            .any(|l| l.starts_with("x.model") && l.trim_end().ends_with(NAME)),
        "snapshot model field: {info}"
    );
    let prompt = dir.join("p.toml");
    std::fs::write(
        &prompt,
        "title = \"T\"\npremise = \"x\"\n[[chapter]]\nheading = \"One\"\nlength = 3\n",
    )
    .unwrap();
    let out = dir.join("stories");
    run(
        &[
            "write",
            prompt.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--seed",
            "1",
        ],
        b"",
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("p/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["model"], NAME);
}
