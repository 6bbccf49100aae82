//! `quill write`: a story written in one run, the same story killed after
//! chapter 1 and resumed, extended, or branched give the same bytes where
//! they should; bad prompt files and unwritable folders are refused with
//! one clear line and nothing lost.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quill"));
    c.args(args)
        .env_remove("QUILL_MODEL")
        .env_remove("QUILL_TEST_PAUSE_BEFORE_RENAME_MS");
    c
}

fn quill(args: &[&str]) -> Output {
    cmd(args).output().expect("run quill")
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "quill failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Asserts a refusal: non-zero exit, one line on stderr, no panic.
fn refused(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "accepted: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    err
}

/// Asserts a failure once writing began: progress lines may come first,
/// then exactly one error line, last.
fn failed(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "accepted: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("quill: error"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(err.trim().lines().last(), Some(errors[0]), "{err}");
    errors[0].to_string()
}

fn tmpdir(tag: &str) -> TempDir {
    TempDir::new(&format!("write-{tag}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn rand_model() -> PathBuf {
    random_dir().join("rand-v7.safetensors")
}

/// Three chapters (one with guidance and a stop string), penalties on,
/// non-greedy; one `[[extra]]` chapter for --extend.
const TALE: &str = r#"title = "The Lighthouse"
premise = """
The keeper had not seen a ship in forty days.
"""

[sampler]
temperature = 1.0
top_p = 0.9
presence = 0.4
frequency = 0.4

[[chapter]]
heading = "The Storm"
length = 40

[[chapter]]
heading = "The Letter"
guidance = "A letter arrives, soaked through."
length = 30
stop = ["zzq"]

[[chapter]]
heading = "Morning"
length = 35
"#;

const EPILOGUE: &str = r#"
[[extra]]
heading = "Epilogue"
length = 25
"#;

fn put(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn manifest(story: &Path) -> serde_json::Value {
    serde_json::from_slice(&read(&story.join("manifest.json"))).unwrap()
}

/// Chapters the manifest lists (0 while it is absent or being replaced).
fn done(story: &Path) -> usize {
    std::fs::read(story.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["chapters"].as_array().map(Vec::len))
        .unwrap_or(0)
}

fn chapter(story: &Path, n: usize) -> String {
    String::from_utf8(read(&story.join(format!("chapter-{n:02}.md")))).unwrap()
}

/// Every file of a folder with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                read(&e.path()),
            )
        })
        .collect()
}

fn fnv(bytes: &[u8]) -> String {
    let mut h = quill::hash::Fnv64::default();
    h.update(bytes);
    h.hex()
}

fn assert_same_chapters(a: &Path, b: &Path, n: usize, what: &str) {
    for k in 1..=n {
        assert_eq!(chapter(a, k), chapter(b, k), "{what}: chapter {k} differs");
    }
    assert_eq!(
        read(&a.join("story.md")),
        read(&b.join("story.md")),
        "{what}: story.md differs"
    );
    // The states match too, not just the text.
    let sa = quill::snapshot::Snapshot::load(&a.join(format!("chapter-{n:02}.qs"))).unwrap();
    let sb = quill::snapshot::Snapshot::load(&b.join(format!("chapter-{n:02}.qs"))).unwrap();
    assert_eq!(
        quill::snapshot::diff(&sa, &sb),
        None,
        "{what}: snapshots differ"
    );
}

fn resume_after_kill_equals_single_run(model: &Path, tag: &str) {
    let d = tmpdir(tag);
    let prompt = put(&d, "tale.toml", TALE.as_bytes());
    let base = ["write", s(&prompt), "--model", s(model), "--seed", "11"];

    let whole_out = d.join("whole");
    let mut args = base.to_vec();
    args.extend(["--out", s(&whole_out)]);
    ok(quill(&args));
    let whole = whole_out.join("tale");

    // The folder: chapters, snapshots, story.md, and a manifest that
    // records them with checksums.
    let m = manifest(&whole);
    assert_eq!(m["seed"], 11);
    assert_eq!(m["target_chapters"], 3);
    assert_eq!(m["title"], "The Lighthouse");
    assert!(!m["model_fingerprint"].as_str().unwrap().is_empty());
    let chapters = m["chapters"].as_array().unwrap();
    assert_eq!(chapters.len(), 3);
    let mut story =
        String::from("# The Lighthouse\n\nThe keeper had not seen a ship in forty days.\n\n");
    let mut parts = Vec::new();
    for (i, c) in chapters.iter().enumerate() {
        let n = i + 1;
        assert_eq!(c["number"], n);
        assert!(c["tokens"].as_u64().unwrap() > 0);
        assert!(c["seconds"].as_f64().is_some());
        let md = read(&whole.join(format!("chapter-{n:02}.md")));
        let qs = read(&whole.join(format!("chapter-{n:02}.qs")));
        assert_eq!(c["file_fnv64"], fnv(&md));
        assert_eq!(c["snapshot_fnv64"], fnv(&qs));
        parts.push(String::from_utf8(md).unwrap());
    }
    assert!(parts[1].starts_with("## The Letter\n\n"), "{:?}", parts[1]);
    story.push_str(&parts.join("\n"));
    assert_eq!(
        String::from_utf8(read(&whole.join("story.md"))).unwrap(),
        story
    );

    // The same run, killed (-9) right after chapter 1 is recorded: every
    // atomic write pauses, so the kill lands while chapter 2 is under way.
    let split_out = d.join("split");
    let split = split_out.join("tale");
    let mut args = base.to_vec();
    args.extend(["--out", s(&split_out)]);
    let mut child = cmd(&args)
        .env("QUILL_TEST_PAUSE_BEFORE_RENAME_MS", "400")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done(&split) < 1 {
        assert!(Instant::now() < deadline, "chapter 1 never finished");
        assert!(child.try_wait().unwrap().is_none(), "quill exited early");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(done(&split), 1, "the kill came after chapter 2");
    let first = manifest(&split)["chapters"][0].clone();
    let ch1_time = std::fs::metadata(split.join("chapter-01.md"))
        .unwrap()
        .modified()
        .unwrap();
    // Files a crash left beyond the manifest do not count.
    put(&split, "chapter-02.md", b"stale");
    put(&split, "chapter-03.qs", b"stale");

    // Rerunning without --resume is refused, saying what to do.
    let mut args = base.to_vec();
    args.extend(["--out", s(&split_out)]);
    let err = refused(&quill(&args));
    assert!(err.contains("--resume") && err.contains("1 of 3"), "{err}");

    // --resume with the weights converted at load would continue from
    // chapter 1's state with other logits: refused, saying why.
    let before = files(&split);
    let mut args = base.to_vec();
    args.extend(["--out", s(&split_out), "--resume", "--dtype", "int8"]);
    let err = failed(&quill(&args));
    assert!(err.contains("leave out --dtype"), "{err}");
    assert_eq!(files(&split), before);

    // --resume (the seed comes from the manifest) finishes it.
    let args = [
        "write",
        s(&prompt),
        "--model",
        s(model),
        "--out",
        s(&split_out),
        "--resume",
    ];
    let o = ok(quill(&args));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("continuing after chapter 1"), "{log}");
    assert!(
        !log.contains("chapter 1/3"),
        "chapter 1 written again: {log}"
    );
    assert_same_chapters(&whole, &split, 3, tag);
    // Chapter 1 was not rewritten.
    assert_eq!(manifest(&split)["chapters"][0], first);
    let t = std::fs::metadata(split.join("chapter-01.md"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(t, ch1_time, "chapter-01.md was rewritten");

    // --resume on a finished story does nothing; a plain rerun is refused.
    let before = files(&split);
    let o = ok(quill(&args));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to do"));
    assert_eq!(files(&split), before);
    let mut args = base.to_vec();
    args.extend(["--out", s(&split_out)]);
    let err = refused(&quill(&args));
    assert!(
        err.contains("finished story") && err.contains("--extend"),
        "{err}"
    );
    assert_eq!(files(&split), before);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn resume_after_kill_equals_single_run_random_v7() {
    resume_after_kill_equals_single_run(&rand_model(), "kill-v7");
}

#[test]
fn resume_after_kill_equals_single_run_trained_v7() {
    let Some(dir) = trained_dir() else {
        eprintln!("!!! trained-v7 absent: the trained-model story test DID NOT RUN !!!");
        return;
    };
    resume_after_kill_equals_single_run(&dir.join("trained-v7.safetensors"), "kill-tv7");
}

#[test]
fn extend_equals_a_longer_single_run() {
    let d = tmpdir("extend");
    let model = rand_model();
    let tale = put(&d, "tale.toml", format!("{TALE}{EPILOGUE}").as_bytes());
    let out = d.join("out");
    let run = |extra: &[&str], prompt: &Path| {
        let mut args = vec![
            "write",
            s(prompt),
            "--model",
            s(&model),
            "--out",
            s(&out),
            "--seed",
            "5",
        ];
        args.extend(extra);
        quill(&args)
    };
    ok(run(&[], &tale));
    // Chapter 4 is the prompt's [[extra]], chapter 5 made up ("Chapter 5",
    // -n tokens).
    ok(run(&["--extend", "2", "-n", "20"], &tale));
    let extended = out.join("tale");
    assert_eq!(done(&extended), 5);
    assert!(chapter(&extended, 4).starts_with("## Epilogue\n"));
    assert!(chapter(&extended, 5).starts_with("## Chapter 5\n"));

    // The same five chapters written in one run.
    let long = put(
        &d,
        "long.toml",
        format!(
            "{TALE}{}\n[[chapter]]\nheading = \"Chapter 5\"\nlength = 20\n",
            EPILOGUE.replace("[[extra]]", "[[chapter]]")
        )
        .as_bytes(),
    );
    ok(run(&[], &long));
    assert_same_chapters(&out.join("long"), &extended, 5, "extend");

    // --extend needs a finished story to extend.
    let err = refused(&run(
        &["--extend", "1"],
        &put(&d, "new.toml", TALE.as_bytes()),
    ));
    assert!(
        err.contains("no story") && err.contains("write it first"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn branch_shares_chapters_up_to_n_then_differs() {
    let d = tmpdir("branch");
    let model = rand_model();
    let tale = put(&d, "tale.toml", TALE.as_bytes());
    let out = d.join("out");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "write",
            s(&tale),
            "--model",
            s(&model),
            "--out",
            s(&out),
            "--seed",
            "9",
        ];
        args.extend(extra);
        quill(&args)
    };
    ok(run(&[]));
    let main = out.join("tale");
    let main_files = files(&main);
    ok(run(&["--branch", "alt", "--from-chapter", "1"]));
    let alt = out.join("tale--alt");
    assert_eq!(done(&alt), 3);
    assert_eq!(chapter(&alt, 1), chapter(&main, 1));
    assert_eq!(
        read(&alt.join("chapter-01.qs")),
        read(&main.join("chapter-01.qs"))
    );
    assert_ne!(
        chapter(&alt, 2),
        chapter(&main, 2),
        "the branch is no alternative"
    );
    assert_ne!(chapter(&alt, 3), chapter(&main, 3));
    // Same headings: the same story, another continuation.
    assert!(chapter(&alt, 2).starts_with("## The Letter\n"));
    let m = manifest(&alt);
    assert_eq!(m["branch"]["name"], "alt");
    assert_eq!(m["branch"]["from_chapter"], 1);
    // The story itself is untouched.
    assert_eq!(files(&main), main_files);

    // Another name, another continuation; the same name again is refused.
    ok(run(&["--branch", "other", "--from-chapter", "2"]));
    let other = out.join("tale--other");
    assert_eq!(chapter(&other, 2), chapter(&main, 2));
    assert_ne!(chapter(&other, 3), chapter(&main, 3));
    assert_ne!(chapter(&other, 3), chapter(&alt, 3));
    let err = refused(&run(&["--branch", "alt", "--from-chapter", "1"]));
    assert!(err.contains("finished story"), "{err}");
    let err = refused(&run(&["--branch", "x", "--from-chapter", "4"]));
    assert!(err.contains("--from-chapter 4"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_prompt_files_are_rejected_with_file_line_and_field() {
    let d = tmpdir("bad");
    let model = rand_model();
    let out = d.join("out");
    let minus = |from: &str, to: &str| TALE.replacen(from, to, 1).into_bytes();
    // (file name, contents, "file:line:", field, words of the message)
    let cases: Vec<(&str, Vec<u8>, usize, &str, &str)> = vec![
        (
            "missing.toml",
            minus("heading = \"The Letter\"\n", ""),
            16,
            "`chapter[2].heading`",
            "missing field",
        ),
        (
            "missing-title.toml",
            minus("title = \"The Lighthouse\"\n", ""),
            1,
            "`title`",
            "missing field",
        ),
        (
            "type.toml",
            minus("length = 40", "length = \"long\""),
            14,
            "`chapter[1].length`",
            "invalid type",
        ),
        (
            "type-sampler.toml",
            minus("top_p = 0.9", "top_p = \"high\""),
            8,
            "`sampler.top_p`",
            "invalid type",
        ),
        (
            "unknown.toml",
            minus("premise", "colour = \"red\"\npremise"),
            2,
            "`colour`",
            "unknown field",
        ),
        (
            "unknown-chapter.toml",
            minus("length = 35", "lenght = 35"),
            24,
            "`chapter[3].lenght`",
            "unknown field",
        ),
        (
            "none.toml",
            TALE.as_bytes()[..TALE.find("[[chapter]]").unwrap()].to_vec(),
            1,
            "`chapter`",
            "no chapters",
        ),
        (
            "negative.toml",
            minus("length = 30", "length = -30"),
            19,
            "`chapter[2].length`",
            "positive",
        ),
        (
            "zero.toml",
            minus("length = 35", "length = 0"),
            24,
            "`chapter[3].length`",
            "positive",
        ),
        (
            "utf8.toml",
            {
                let mut b = TALE.as_bytes().to_vec();
                let at = TALE.find("forty").unwrap();
                b[at] = 0xff;
                b
            },
            3,
            "`premise`",
            "UTF-8",
        ),
        ("empty.toml", Vec::new(), 1, "", "empty"),
        ("empty.txt", b" \n\n".to_vec(), 1, "", "empty"),
        ("latin1.txt", b"caf\xe9\n".to_vec(), 1, "", "UTF-8"),
    ];
    for (name, text, line, field, words) in cases {
        let p = put(&d, name, &text);
        let o = quill(&["write", s(&p), "--model", s(&model), "--out", s(&out)]);
        let err = refused(&o);
        assert!(
            err.contains(&format!("{}:{line}:", p.display())),
            "{name}: no file:line {line}: {err}"
        );
        assert!(
            err.contains(field),
            "{name}: field {field} not named: {err}"
        );
        assert!(err.contains(words), "{name}: {err}");
        assert!(!out.exists(), "{name}: something was written");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_unwritable_folder_is_refused_and_earlier_chapters_stay() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let d = tmpdir("readonly");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let model = rand_model();
    let one = put(
        &d,
        "one.toml",
        TALE.replacen("length = 40", "length = 20", 1).as_bytes(),
    );
    let out = d.join("out");
    ok(quill(&[
        "write",
        s(&one),
        "--model",
        s(&model),
        "--out",
        s(&out),
        "--seed",
        "3",
    ]));
    let story = out.join("one");
    let before = files(&story);
    let ro = std::fs::Permissions::from_mode(0o555);
    std::fs::set_permissions(&story, ro.clone()).unwrap();
    let fresh_out = d.join("fresh");
    std::fs::create_dir(&fresh_out).unwrap();
    std::fs::set_permissions(&fresh_out, ro).unwrap();
    // Root ignores permission bits: then run quill as `nobody`, to whom
    // they apply.
    let privileged = std::fs::write(story.join("probe"), b"").is_ok();
    let _ = std::fs::remove_file(story.join("probe"));
    let run = |args: &[&str]| -> Option<Output> {
        let mut c = cmd(args);
        if privileged {
            c.uid(65534).gid(65534);
        }
        match c.output() {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("!!! cannot run quill as nobody ({e}): the read-only folder test DID NOT RUN !!!");
                None
            }
        }
    };
    let Some(o) = run(&[
        "write",
        s(&one),
        "--model",
        s(&model),
        "--out",
        s(&out),
        "--extend",
        "1",
    ]) else {
        return;
    };
    let err = failed(&o);
    assert!(
        err.contains("cannot write") && err.contains(s(&story)) && err.contains("denied"),
        "{err}"
    );
    assert!(err.contains("--resume"), "{err}");
    assert_eq!(files(&story), before, "the story folder changed");
    // A read-only --out for a new story: the same clear refusal.
    let o = run(&[
        "write",
        s(&one),
        "--model",
        s(&model),
        "--out",
        s(&fresh_out),
    ])
    .unwrap();
    let err = failed(&o);
    assert!(
        err.contains("cannot write") && err.contains(s(&fresh_out)),
        "{err}"
    );
    // Writable again: the extension goes through.
    for p in [&story, &fresh_out] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    ok(quill(&[
        "write",
        s(&one),
        "--model",
        s(&model),
        "--out",
        s(&out),
        "--extend",
        "1",
    ]));
    assert_eq!(done(&story), 4);
    for n in 1..=3 {
        let name = format!("chapter-{n:02}.md");
        assert_eq!(read(&story.join(&name)), before[&name]);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn several_prompts_in_parallel_match_single_runs() {
    let d = tmpdir("jobs");
    let model = rand_model();
    let tale = put(&d, "tale.toml", TALE.as_bytes());
    let note = put(&d, "note.txt", b"Dear Margaret,\nThe lamp is lit again.\n");
    let both = d.join("both");
    let o = ok(quill(&[
        "write",
        s(&tale),
        s(&note),
        "--model",
        s(&model),
        "--out",
        s(&both),
        "--seed",
        "3",
        "-n",
        "30",
        "--jobs",
        "2",
    ]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("[done]"));
    let single = d.join("single");
    for p in [&tale, &note] {
        ok(quill(&[
            "write",
            s(p),
            "--model",
            s(&model),
            "--out",
            s(&single),
            "--seed",
            "3",
            "-n",
            "30",
        ]));
    }
    assert_same_chapters(&single.join("tale"), &both.join("tale"), 3, "tale");
    assert_same_chapters(&single.join("note"), &both.join("note"), 1, "note");
    // A plain-text prompt is continued as it is: no title, no heading.
    let story = String::from_utf8(read(&both.join("note/story.md"))).unwrap();
    assert!(
        story.starts_with("Dear Margaret,\nThe lamp is lit again."),
        "{story:?}"
    );
    assert_eq!(manifest(&both.join("note"))["chapters"][0]["length"], 30);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn shipped_prompt_files_parse() {
    // prompts/ holds both story prompt files and chat personas; every file
    // must be one or the other.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if quill::chat::persona::Persona::load(&p).is_ok() {
            continue;
        }
        let prompt = quill::writer::Prompt::load(&p, None)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(!prompt.chapters.is_empty());
        n += 1;
    }
    assert!(n >= 3, "expected several example prompts in prompts/");
}
