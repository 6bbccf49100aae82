//! Bad input, file kind by file kind: every way a model, a `.pth`, a
//! snapshot, a persona or a prompt file can be cut short, mislabelled or
//! lie about its sizes must end in a clean refusal: a non-zero exit,
//! exactly one line on stderr, no panic, in bounded time and memory (the
//! binary runs under `ulimit -v` and a deadline).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use quill::model::weights::WeightFile;
use quill::sampler::{Sampler, SamplerSettings};
use quill::snapshot::Snapshot;

/// Address space allowed to one run (KiB): a loader that believed a size
/// field of 2^60 would die here instead of paging the machine to death.
const ULIMIT_KIB: u64 = 4 << 20;
/// Longest one run may take on a loaded machine; a refusal takes
/// milliseconds, so only a hang or a runaway loop gets near it.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs the binary under `ulimit -v` and the deadline, with `stdin` piped.
fn run_with(args: &[&str], stdin: &[u8], envs: &[(&str, &Path)]) -> Output {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("ulimit -v {ULIMIT_KIB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_quill"))
        .args(args)
        .env_remove("QUILL_MODEL")
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("run quill");
    let mut input = child.stdin.take().unwrap();
    // A refusal may come before stdin is read: a closed pipe is fine.
    let _ = input.write_all(stdin);
    drop(input);
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("quill {args:?} ran past {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn run(args: &[&str]) -> Output {
    run_with(args, b"", &[])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The contract: non-zero exit, exactly one line on stderr, no panic, and
/// the line mentions `needle` (case-insensitive).
#[track_caller]
fn refused(o: &Output, needle: &str, what: &str) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "{what}: accepted; stderr: {err}");
    assert!(!err.contains("panicked"), "{what}: panic: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "{what}: not exactly one line on stderr: {err:?}"
    );
    assert!(err.starts_with("quill: error: "), "{what}: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: error should mention `{needle}`: {err}"
    );
    err
}

fn tmpdir(tag: &str) -> TempDir {
    TempDir::new(&format!("bad-{tag}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn v4() -> PathBuf {
    random_dir().join("rand-v4.safetensors")
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

fn le16(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as usize
}

/// Byte offsets where a safetensors file's sections end: the length prefix,
/// the header, and every tensor (in file order).
fn safetensors_boundaries(bytes: &[u8]) -> (usize, Vec<usize>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut ends: Vec<usize> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| 8 + n + v["data_offsets"][1].as_u64().unwrap() as usize)
        .collect();
    ends.sort();
    (8 + n, ends)
}

// ---------------------------------------------------------------------------
// safetensors models
// ---------------------------------------------------------------------------

#[test]
fn safetensors_truncated_at_every_section_boundary() {
    let d = tmpdir("st-cut");
    let bytes = std::fs::read(v4()).unwrap();
    let (header_end, ends) = safetensors_boundaries(&bytes);
    let mut cuts: Vec<(usize, &str)> = vec![
        (0, "too short"),
        (3, "too short"), // inside the length prefix
        (7, "too short"),
        (8, "header length"), // the prefix and nothing else
        (8 + (header_end - 8) / 2, "header length"), // inside the JSON
        (header_end - 1, "header length"),
        (header_end, "truncated"), // the header and no data
    ];
    // At every tensor boundary but the last (which is the whole file), and
    // one byte into the next tensor.
    for &e in &ends[..ends.len() - 1] {
        cuts.push((e, "truncated"));
        cuts.push((e + 1, "truncated"));
    }
    cuts.push((bytes.len() - 1, "truncated"));
    assert_eq!(*ends.last().unwrap(), bytes.len());
    for (cut, needle) in cuts {
        let f = put(&d, "cut.safetensors", &bytes[..cut]);
        refused(&run(&["info", s(&f)]), needle, &format!("cut at {cut}"));
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn safetensors_wrong_magic_and_oversized_lengths() {
    let d = tmpdir("st-lies");
    let bytes = std::fs::read(v4()).unwrap();
    // Another format's magic where the length prefix should be.
    let mut gguf = bytes.clone();
    gguf[..8].copy_from_slice(b"GGUF\x03\0\0\0");
    let f = put(&d, "gguf.safetensors", &gguf);
    refused(
        &run(&["info", s(&f)]),
        "not a safetensors file",
        "GGUF magic",
    );
    // A zip's magic on a safetensors body: read as a zip, and refused as one.
    let mut zip = bytes.clone();
    zip[..4].copy_from_slice(b"PK\x03\x04");
    let f = put(&d, "zip.safetensors", &zip);
    refused(&run(&["info", s(&f)]), "damaged zip", "zip magic");
    // A header claiming 2^60 bytes.
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let f = put(&d, "huge.safetensors", &huge);
    refused(&run(&["info", s(&f)]), "header length", "2^60 header");
    // A tensor claiming 2^60 bytes of data, and one whose shape overflows.
    for (header, needle) in [
        (
            r#"{"emb.weight":{"dtype":"F32","shape":[268435456,1073741824],"data_offsets":[0,1152921504606846976]}}"#,
            "outside the file",
        ),
        (
            r#"{"emb.weight":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}}"#,
            "overflows",
        ),
        (
            r#"{"emb.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}}"#,
            "outside the file",
        ),
        (
            r#"{"emb.weight":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
            "not supported",
        ),
        // Regression: the layer count was `i + 1` of this index, an
        // overflow panic in builds with overflow checks.
        (
            r#"{"emb.weight":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]},"head.weight":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"blocks.0.att.k_k":{"dtype":"F32","shape":[0],"data_offsets":[16,16]},"blocks.18446744073709551615.x":{"dtype":"F32","shape":[0],"data_offsets":[16,16]}}"#,
            "blocks.0.att.r_k",
        ),
        (r#"[1,2,3]"#, "not a JSON object"),
        (r#"{"a": "#, "not valid JSON"),
    ] {
        let mut f = Vec::new();
        f.extend_from_slice(&(header.len() as u64).to_le_bytes());
        f.extend_from_slice(header.as_bytes());
        f.extend_from_slice(&[0u8; 16]);
        let p = put(&d, "liar.safetensors", &f);
        refused(&run(&["info", s(&p)]), needle, header);
    }
    // A header that is not UTF-8.
    let mut f = 4u64.to_le_bytes().to_vec();
    f.extend_from_slice(b"{\xff\xfe}");
    let p = put(&d, "latin.safetensors", &f);
    refused(&run(&["info", s(&p)]), "not UTF-8", "non-UTF-8 header");
    // Nothing at all, and a directory.
    let p = put(&d, "empty.safetensors", b"");
    refused(&run(&["info", s(&p)]), "too short", "empty file");
    refused(&run(&["info", s(&d)]), "directory", "a directory");
    let _ = std::fs::remove_dir_all(&d);
}

/// Overwrites the first element of `tensor` with a NaN/Inf bit pattern of
/// its dtype, in a copy of `path`.
fn poison(path: &Path, tensor: &str, inf: bool, out: &Path) {
    let file = WeightFile::open(path).unwrap();
    let info = file.info(tensor).unwrap().clone();
    let mut bytes = file.bytes().to_vec();
    let pattern: &[u8] = match (info.dtype.size(), inf) {
        (4, false) => &[0x00, 0x00, 0xC0, 0x7F],
        (4, true) => &[0x00, 0x00, 0x80, 0xFF],
        // bf16 0x7FC0 / 0xFF80; for f16 0x7E00 / 0xFC00.
        (_, false) if info.dtype == quill::model::weights::DType::BF16 => &[0xC0, 0x7F],
        (_, true) if info.dtype == quill::model::weights::DType::BF16 => &[0x80, 0xFF],
        (_, false) => &[0x00, 0x7E],
        (_, true) => &[0x00, 0xFC],
    };
    bytes[info.start..info.start + pattern.len()].copy_from_slice(pattern);
    std::fs::write(out, bytes).unwrap();
}

#[test]
fn nan_and_inf_weights_are_refused_naming_the_tensor() {
    let d = tmpdir("nan");
    for (model, tensor) in [
        ("rand-v4.safetensors", "blocks.1.att.key.weight"),
        ("rand-v5.safetensors", "blocks.0.att.time_decay"),
        // The .pth path reads the same table from a zip.
        ("rand-v4-bf16.pth", "blocks.1.ffn.value.weight"),
        ("rand-v7-bf16.pth", "head.weight"),
    ] {
        for inf in [false, true] {
            let out = d.join(format!("poisoned-{model}"));
            poison(&random_dir().join(model), tensor, inf, &out);
            let o = run(&["info", s(&out)]);
            refused(&o, tensor, &format!("{model} {tensor} inf={inf}"));
            assert!(stderr(&o).contains("NaN or infinity"), "{}", stderr(&o));
            let o = run(&["generate", "-m", s(&out), "--prompt", "hi", "-n", "1"]);
            refused(&o, tensor, &format!("generate {model}"));
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// A copy of `rand-v5.safetensors` with each tensor passed through `edit`
/// (`None` drops it), as a file in `dir`.
fn v5_variant(
    dir: &Path,
    name: &str,
    edit: impl Fn(&str, Vec<usize>, Vec<f32>) -> Option<(Vec<usize>, Vec<f32>)>,
) -> PathBuf {
    use quill::model::weights::{f32_bytes, write_safetensors, DType, TensorOut};
    let file = WeightFile::open(&random_dir().join("rand-v5.safetensors")).unwrap();
    let mut out = Vec::new();
    for (tensor, info) in &file.tensors {
        let values = file.to_f32(tensor).unwrap();
        if let Some((shape, values)) = edit(tensor, info.shape.clone(), values) {
            out.push(TensorOut {
                name: tensor.clone(),
                dtype: DType::F32,
                shape,
                data: f32_bytes(&values).into(),
            });
        }
    }
    put(dir, name, &write_safetensors(&out, &Default::default()))
}

/// RWKV-5.0 (`ln_x`, no gate) and 5.1 (a gate, one decay per head) are
/// refused by name, not as an unknown layout or a shape error deep in the
/// loader.
#[test]
fn rwkv_5_0_and_5_1_are_refused_by_name() {
    let d = tmpdir("v5x");
    let v50 = v5_variant(&d, "v5.0.safetensors", |name, shape, v| {
        (!name.ends_with("att.gate.weight")).then_some((shape, v))
    });
    refused(&run(&["info", s(&v50)]), "RWKV-5.0", "a v5.0 file");
    let v51 = v5_variant(&d, "v5.1.safetensors", |name, shape, v| {
        if name.ends_with("att.time_decay") {
            // (H, N) → (H,): the first channel's decay stands for its head.
            let n = shape[1..].iter().product::<usize>();
            Some((vec![shape[0]], v.chunks(n).map(|h| h[0]).collect()))
        } else {
            Some((shape, v))
        }
    });
    let err = refused(&run(&["info", s(&v51)]), "RWKV-5.1", "a v5.1 file");
    assert!(err.contains("time_decay"), "{err}");
    // The untouched copy still loads: the edits, not the rewriting, matter.
    let same = v5_variant(&d, "v5.2.safetensors", |_, shape, v| Some((shape, v)));
    let o = run(&["info", s(&same)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------------------
// .pth (zip + pickle)
// ---------------------------------------------------------------------------

/// Offsets in a zip: every local header (and its name length), the central
/// directory, the ZIP64 end record and locator if any, and the end record.
struct ZipMap {
    /// (offset, name length, name) of each local header.
    locals: Vec<(usize, usize, String)>,
    cd: (usize, usize),
    zip64: Option<(usize, usize)>,
    eocd: usize,
}

fn map_zip(b: &[u8]) -> ZipMap {
    let eocd = b.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    let loc = eocd
        .checked_sub(20)
        .filter(|&l| &b[l..l + 4] == b"PK\x06\x07");
    let (total, cd_size, cd_off, zip64) = match loc {
        Some(l) => {
            let rec = u64::from_le_bytes(b[l + 8..l + 16].try_into().unwrap()) as usize;
            let q =
                |o: usize| u64::from_le_bytes(b[rec + o..rec + o + 8].try_into().unwrap()) as usize;
            (q(32), q(40), q(48), Some((rec, l)))
        }
        None => (
            le16(b, eocd + 10),
            le32(b, eocd + 12),
            le32(b, eocd + 16),
            None,
        ),
    };
    let mut locals = Vec::new();
    let mut p = cd_off;
    for _ in 0..total {
        assert_eq!(&b[p..p + 4], b"PK\x01\x02");
        let (name, extra, comment) = (le16(b, p + 28), le16(b, p + 30), le16(b, p + 32));
        let local = le32(b, p + 42);
        assert_ne!(local, 0xFFFF_FFFF, "small fixture, no ZIP64 offsets");
        let entry = String::from_utf8_lossy(&b[p + 46..p + 46 + name]).into_owned();
        locals.push((local, le16(b, local + 26), entry));
        p += 46 + name + extra + comment;
    }
    ZipMap {
        locals,
        cd: (cd_off, cd_size),
        zip64,
        eocd,
    }
}

#[test]
fn pth_truncated_at_every_section_boundary() {
    let d = tmpdir("pth-cut");
    let bytes = std::fs::read(random_dir().join("rand-v4-bf16.pth")).unwrap();
    let z = map_zip(&bytes);
    let mut cuts = vec![0, 2, 10];
    for &(off, name_len, _) in &z.locals {
        cuts.extend([off, off + 10, off + 30 + name_len / 2]); // inside each local header
    }
    cuts.extend([z.cd.0, z.cd.0 + 10, z.cd.0 + z.cd.1 / 2, z.cd.0 + z.cd.1]);
    if let Some((rec, loc)) = z.zip64 {
        cuts.extend([rec + 10, loc, loc + 10]);
    }
    cuts.extend([z.eocd, z.eocd + 10, bytes.len() - 1]);
    for cut in cuts {
        let f = put(&d, "cut.pth", &bytes[..cut]);
        let o = run(&["info", s(&f)]);
        // Cut before the zip magic is complete, it is no zip at all.
        let needle = if cut < 4 { "too short" } else { "damaged zip" };
        refused(&o, needle, &format!("cut at {cut}"));
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn pth_damaged_sections_with_the_end_record_intact() {
    let d = tmpdir("pth-damage");
    let bytes = std::fs::read(random_dir().join("rand-v4-bf16.pth")).unwrap();
    let z = map_zip(&bytes);
    let check = |b: &[u8], needle: &str, what: &str| {
        let f = put(&d, "damaged.pth", b);
        refused(&run(&["info", s(&f)]), needle, what);
    };
    // Each local header's signature gone: the entry's data cannot be found
    // (the first one is the file's magic: then it is not read as a zip).
    // Only the entries Quill reads: `version` and the like are never used.
    let read =
        |n: &str| n.ends_with("data.pkl") || n.ends_with("byteorder") || n.contains("/data/");
    for (off, _, _) in z.locals[1..].iter().filter(|(_, _, n)| read(n)) {
        let off = *off;
        let mut b = bytes.clone();
        b[off..off + 4].copy_from_slice(b"XXXX");
        check(&b, "no local header", &format!("local header at {off}"));
    }
    // The central directory's first entry broken.
    let mut b = bytes.clone();
    b[z.cd.0..z.cd.0 + 4].copy_from_slice(b"XXXX");
    check(&b, "central directory entry 0", "central directory");
    // The end record pointing past the file (and the ZIP64 one, if any),
    // or claiming 2^32 − 1 / 2^62 entries.
    let mut b = bytes.clone();
    match z.zip64 {
        Some((rec, _)) => {
            b[rec + 48..rec + 56].copy_from_slice(&(1u64 << 62).to_le_bytes());
            check(&b, "does not fit", "ZIP64 directory offset 2^62");
            let mut b = bytes.clone();
            b[rec + 40..rec + 48].copy_from_slice(&(1u64 << 62).to_le_bytes());
            check(&b, "does not fit", "ZIP64 directory size 2^62");
            let mut b = bytes.clone();
            b[rec + 32..rec + 40].copy_from_slice(&(1u64 << 62).to_le_bytes());
            check(&b, "claims", "ZIP64 2^62 entries");
        }
        None => {
            b[z.eocd + 16..z.eocd + 20].copy_from_slice(&u32::MAX.to_le_bytes());
            check(&b, "does not fit", "directory offset past the end");
            let mut b = bytes.clone();
            b[z.eocd + 10..z.eocd + 12].copy_from_slice(&u16::MAX.to_le_bytes());
            check(&b, "claims", "65535 entries");
        }
    }
    // Wrong magic: no longer a zip, and no safetensors either.
    let mut b = bytes.clone();
    b[..4].copy_from_slice(b"PX\x03\x04");
    check(&b, "not a safetensors file", "wrong magic");
    let _ = std::fs::remove_dir_all(&d);
}

/// A one-entry zip whose central directory says `archive/data.pkl` holds
/// `declared` bytes (through a ZIP64 extra field), over 8 real bytes.
fn zip_claiming(declared: u64) -> Vec<u8> {
    let name = b"archive/data.pkl";
    let data = b"\x80\x02}q\x00.\0\0";
    let mut z = Vec::new();
    // Local header (APPNOTE 4.3.7).
    z.extend_from_slice(b"PK\x03\x04");
    z.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    z.extend_from_slice(&(data.len() as u32).to_le_bytes());
    z.extend_from_slice(&(data.len() as u32).to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z.extend_from_slice(name);
    z.extend_from_slice(data);
    // Central directory entry with sizes 0xFFFFFFFF and a ZIP64 extra
    // field holding `declared` for both.
    let cd = z.len();
    z.extend_from_slice(b"PK\x01\x02");
    z.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    z.extend_from_slice(&u32::MAX.to_le_bytes());
    z.extend_from_slice(&u32::MAX.to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&20u16.to_le_bytes()); // extra length
    z.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
    z.extend_from_slice(&[0; 4]); // external attributes
    z.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    z.extend_from_slice(name);
    z.extend_from_slice(&1u16.to_le_bytes());
    z.extend_from_slice(&16u16.to_le_bytes());
    z.extend_from_slice(&declared.to_le_bytes());
    z.extend_from_slice(&declared.to_le_bytes());
    let cd_len = z.len() - cd;
    // End record.
    z.extend_from_slice(b"PK\x05\x06");
    z.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
    z.extend_from_slice(&(cd_len as u32).to_le_bytes());
    z.extend_from_slice(&(cd as u32).to_le_bytes());
    z.extend_from_slice(&[0, 0]);
    z
}

#[test]
fn pth_entry_claiming_2_to_the_62_bytes() {
    let d = tmpdir("pth-huge");
    // The honest version parses as a zip (and then holds no tensors).
    let f = put(&d, "ok.pth", &zip_claiming(8));
    refused(&run(&["info", s(&f)]), "no tensors", "honest zip");
    let f = put(&d, "huge.pth", &zip_claiming(1 << 62));
    refused(&run(&["info", s(&f)]), "run past the end", "2^62 entry");
    let f = put(&d, "max.pth", &zip_claiming(u64::MAX));
    refused(&run(&["info", s(&f)]), "run past the end", "2^64-1 entry");
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------------------
// snapshots
// ---------------------------------------------------------------------------

/// A fresh snapshot of the random v4 model after a short prompt.
fn make_snapshot(d: &Path) -> PathBuf {
    let snap = d.join("base.qs");
    let o = run(&[
        "generate",
        "-m",
        s(&v4()),
        "--prompt",
        "Once upon a time",
        "-n",
        "5",
        "--seed",
        "1",
        "--state-out",
        s(&snap),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    snap
}

#[test]
fn snapshots_truncated_mislabelled_or_damaged() {
    let d = tmpdir("snap");
    let base = make_snapshot(&d);
    let bytes = std::fs::read(&base).unwrap();
    let (header_end, ends) = safetensors_boundaries(&bytes);
    let mut cuts = vec![(0, "too short"), (5, "too short"), (8, "header length")];
    cuts.push((8 + (header_end - 8) / 2, "header length"));
    cuts.push((header_end, "truncated"));
    for &e in &ends[..ends.len() - 1] {
        cuts.push((e, "truncated"));
        cuts.push((e + 3, "truncated"));
    }
    cuts.push((bytes.len() - 1, "truncated"));
    for (cut, needle) in cuts {
        let f = put(&d, "cut.qs", &bytes[..cut]);
        refused(
            &run(&["state", "info", s(&f)]),
            needle,
            &format!("cut at {cut}"),
        );
        let o = run(&["generate", "-m", s(&v4()), "--state-in", s(&f), "-n", "1"]);
        refused(&o, needle, &format!("--state-in cut at {cut}"));
    }
    // Wrong magic in the metadata, a flipped data byte, a 2^60 header.
    let at = bytes
        .windows(14)
        .position(|w| w == b"quill-snapshot")
        .unwrap();
    let mut b = bytes.clone();
    b[at + 13] = b'T';
    let f = put(&d, "magic.qs", &b);
    refused(
        &run(&["state", "info", s(&f)]),
        "not a Quill snapshot",
        "format",
    );
    let mut b = bytes.clone();
    let last = b.len() - 2;
    b[last] ^= 0x40;
    let f = put(&d, "flip.qs", &b);
    refused(&run(&["state", "info", s(&f)]), "checksum", "flipped byte");
    let mut b = bytes.clone();
    b[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let f = put(&d, "huge.qs", &b);
    refused(
        &run(&["state", "info", s(&f)]),
        "header length",
        "2^60 header",
    );
    // A model file is no snapshot.
    let o = run(&["state", "info", s(&v4())]);
    refused(&o, "not a Quill snapshot", "a model as a snapshot");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sealed_snapshots_that_lie_are_refused() {
    // These carry a correct checksum (written by the library), so only the
    // checks after it stand between them and the engine.
    let d = tmpdir("snap-lies");
    let base = Snapshot::load(&make_snapshot(&d)).unwrap();
    let write = |name: &str, snap: &Snapshot| put(&d, name, &snap.to_bytes());

    // Dims sized for 2^40 floats per layer with zero layers: the old check
    // multiplied by n_layer and let State::new allocate one such layer.
    let mut liar = base.clone_for_test();
    liar.meta.n_layer = 0;
    liar.meta.n_embd = 1 << 40;
    liar.state.layers.clear();
    let f = write("dims.qs", &liar);
    refused(
        &run(&["state", "info", s(&f)]),
        "dims",
        "zero layers, 2^40 wide",
    );
    let mut liar = base.clone_for_test();
    liar.meta.n_embd = usize::MAX / 2;
    let f = write("wide.qs", &liar);
    refused(&run(&["state", "info", s(&f)]), "dims", "usize::MAX/2 wide");

    // NaN in the logits, infinity in the state.
    let mut liar = base.clone_for_test();
    liar.logits.as_mut().unwrap()[3] = f32::NAN;
    let f = write("nan-logits.qs", &liar);
    let o = run(&["generate", "-m", s(&v4()), "--state-in", s(&f), "-n", "2"]);
    refused(&o, "logits", "NaN logits");
    let mut liar = base.clone_for_test();
    liar.state.layers[1].ffn_x[0] = f32::INFINITY;
    let f = write("inf-state.qs", &liar);
    refused(
        &run(&["state", "info", s(&f)]),
        "blocks.1.ffn.x",
        "infinite state",
    );

    // Sampler settings no command line would accept.
    let mut liar = base.clone_for_test();
    liar.sampler.settings.top_p = 7.0;
    let f = write("top-p.qs", &liar);
    refused(&run(&["state", "info", s(&f)]), "top_p", "top_p 7");

    // Every token banned: nothing can be sampled, yet nothing panics.
    let mut odd = base.clone_for_test();
    odd.sampler.settings.banned = (0..256).collect();
    let f = write("banned.qs", &odd);
    let o = run(&["generate", "-m", s(&v4()), "--state-in", s(&f), "-n", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

/// `Snapshot` is not `Clone`; a round trip through bytes is a copy.
trait CloneForTest {
    fn clone_for_test(&self) -> Snapshot;
}

impl CloneForTest for Snapshot {
    fn clone_for_test(&self) -> Snapshot {
        Snapshot::from_bytes(&self.to_bytes(), "copy").unwrap()
    }
}

#[test]
fn sampler_with_nothing_to_pick_returns_an_id() {
    // Regression: all-NaN logits (or every id banned) left no candidate and
    // the sampler indexed an empty list.
    for settings in [
        SamplerSettings::default(),
        SamplerSettings {
            min_p: 0.1,
            top_k: 3,
            ..SamplerSettings::default()
        },
    ] {
        let mut s = Sampler::new(settings.clone(), 1);
        let id = s.sample(&[f32::NAN; 8]);
        assert!(id < 8);
        let mut s = Sampler::new(
            SamplerSettings {
                banned: (0..8).collect(),
                ..settings
            },
            1,
        );
        assert!(s.sample(&[1.0; 8]) < 8);
        assert!(s.sample(&[f32::NEG_INFINITY; 8]) < 8);
    }
}

// ---------------------------------------------------------------------------
// prompts: generate and chat
// ---------------------------------------------------------------------------

#[test]
fn empty_whitespace_and_non_utf8_prompts() {
    let d = tmpdir("prompts");
    let m = v4();
    for (prompt, needle) in [
        ("", "empty"),
        ("   ", "whitespace"),
        ("\n\t \r\n", "whitespace"),
    ] {
        let o = run(&["generate", "-m", s(&m), "--prompt", prompt, "-n", "3"]);
        refused(&o, needle, &format!("--prompt {prompt:?}"));
        let f = put(&d, "p.txt", prompt.as_bytes());
        let o = run(&["generate", "-m", s(&m), "--prompt-file", s(&f), "-n", "3"]);
        refused(&o, needle, &format!("--prompt-file {prompt:?}"));
    }
    let o = run(&["generate", "-m", s(&m), "--tokens", "", "-n", "3"]);
    refused(&o, "empty", "--tokens ''");
    let o = run(&["generate", "-m", s(&m), "--tokens", " , ", "-n", "3"]);
    refused(&o, "empty", "--tokens ' , '");
    // Invalid UTF-8: refused with where and what to do, before the model
    // is even loaded (the model path here does not exist).
    let f = put(&d, "latin1.txt", b"caf\xe9\nau lait");
    let o = run(&[
        "generate",
        "-m",
        "/nonexistent.safetensors",
        "--prompt-file",
        s(&f),
    ]);
    let err = refused(&o, "not valid UTF-8", "latin-1 prompt file");
    assert!(
        err.contains("byte 3") && err.contains("save it as UTF-8"),
        "{err}"
    );
    let o = run(&[
        "generate",
        "-m",
        s(&m),
        "--prompt-file",
        s(&d.join("absent.txt")),
    ]);
    refused(&o, "absent.txt", "missing prompt file");
    // Whitespace appended to a snapshot is a legitimate continuation.
    let snap = make_snapshot(&d);
    let o = run(&[
        "generate",
        "-m",
        s(&m),
        "--state-in",
        s(&snap),
        "--prompt",
        "\n\n",
        "-n",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn piped_chat_with_blank_or_bad_input() {
    let d = tmpdir("chat");
    let envs: [(&str, &Path); 2] = [("QUILL_DATA_DIR", &d), ("QUILL_CACHE_DIR", &d)];
    let m = v4();
    // Blank lines are skipped as at the interactive prompt, and an empty
    // stdin is a chat with nothing said (it also warms the opening cache):
    // both end normally, with no reply and no error.
    for input in [&b""[..], b"\n", b"   \n\t\n\n"] {
        let o = run_with(&["chat", "-m", s(&m), "-n", "3"], input, &envs);
        let err = stderr(&o);
        assert!(o.status.success(), "{input:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
        assert!(o.stdout.is_empty(), "a reply to nothing: {:?}", o.stdout);
    }
    // Invalid UTF-8 on stdin: one error line, after the banner.
    let o = run_with(&["chat", "-m", s(&m), "-n", "3"], b"hi \xff there\n", &envs);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("quill: error"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("UTF-8"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------------------
// persona and prompt-file TOML
// ---------------------------------------------------------------------------

/// Every prefix of `text` cut at a line boundary or inside a quoted string.
fn toml_cuts(text: &str) -> Vec<usize> {
    let mut cuts: Vec<usize> = text.match_indices('\n').map(|(i, _)| i + 1).collect();
    cuts.extend(text.match_indices('"').map(|(i, _)| i + 1));
    cuts.extend(text.match_indices('=').map(|(i, _)| i + 1));
    cuts.push(0);
    cuts.sort();
    cuts.dedup();
    cuts.retain(|&c| c < text.len() && text.is_char_boundary(c));
    cuts
}

#[test]
fn persona_files_cut_short_or_not_utf8() {
    use quill::chat::Persona;
    let d = tmpdir("persona");
    let envs: [(&str, &Path); 2] = [("QUILL_DATA_DIR", &d), ("QUILL_CACHE_DIR", &d)];
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/cowriter.toml"),
    )
    .unwrap();
    let mut rejected = 0;
    for cut in toml_cuts(&text) {
        // Every cut the parser refuses gets a one-line message naming the
        // file; the binary is run on a sample of them (each loads a model).
        if let Err(e) = Persona::parse(&text[..cut], "cut.toml", "cut") {
            let msg = e.to_string();
            assert!(!msg.contains('\n') && msg.contains("cut.toml"), "{msg}");
            rejected += 1;
            if rejected % 8 == 1 {
                let f = put(&d, "cut.toml", &text.as_bytes()[..cut]);
                let o = run_with(&["chat", "-m", s(&v4()), "--persona", s(&f)], b"", &envs);
                refused(&o, "cut.toml", &format!("persona cut at {cut}"));
            }
        }
    }
    assert!(rejected > 5, "only {rejected} cuts were refused");
    let f = put(&d, "latin1.toml", b"name = \"caf\xe9\"\n");
    let o = run_with(&["chat", "-m", s(&v4()), "--persona", s(&f)], b"", &envs);
    refused(&o, "latin1.toml", "latin-1 persona");
    assert!(stderr(&o).contains("UTF-8"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn prompt_files_cut_short_or_not_utf8() {
    use quill::writer::Prompt;
    let d = tmpdir("prompt-file");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/lighthouse.toml"),
    )
    .unwrap();
    let out = d.join("out");
    let mut rejected = 0;
    for cut in toml_cuts(&text) {
        let f = put(&d, "cut.toml", &text.as_bytes()[..cut]);
        if Prompt::parse_toml(&f, &text[..cut]).is_err() {
            rejected += 1;
            // Refused before any model is loaded or file written.
            let o = run(&[
                "write",
                s(&f),
                "-m",
                "/nonexistent.safetensors",
                "--out",
                s(&out),
            ]);
            refused(&o, "cut.toml", &format!("prompt cut at {cut}"));
            assert!(!out.exists(), "cut at {cut}: something was written");
        }
    }
    assert!(rejected > 5, "only {rejected} cuts were refused");
    for (name, bytes, needle) in [
        ("latin1.toml", &b"title = \"caf\xe9\"\n"[..], "UTF-8"),
        ("latin1.txt", b"Once upon a time\n\xff\xfe", "latin1.txt:2:"),
        ("empty.toml", b"", "empty"),
        ("blank.txt", b" \n\t\n", "empty"),
    ] {
        let f = put(&d, name, bytes);
        let o = run(&[
            "write",
            s(&f),
            "-m",
            "/nonexistent.safetensors",
            "--out",
            s(&out),
        ]);
        refused(&o, needle, name);
        assert!(!out.exists(), "{name}: something was written");
    }
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------------------
// quill write into a full folder
// ---------------------------------------------------------------------------

const TALE: &str = r#"title = "Full"
premise = "The disk was nearly full."

[[chapter]]
heading = "One"
length = 12

[[chapter]]
heading = "Two"
length = 12
"#;

/// Unmounts the tmpfs even when an assertion fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Stories are written chapter by chapter; a disk that fills up before the
/// next chapter must fail that chapter with one clear line that says what
/// to do, and leave the finished chapters and the manifest as they were.
/// A full disk is a 128 KiB tmpfs (mounting needs root; without it the test
/// says loudly that it did not run).
#[test]
fn write_into_a_full_folder_keeps_earlier_chapters() {
    let d = tmpdir("full");
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=128k", "tmpfs", s(&mnt)])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!("!!! cannot mount a tmpfs here (not root?): the full-disk test DID NOT RUN !!!");
        return;
    }
    let _guard = Mount(mnt.clone());
    let prompt = put(&d, "full.toml", TALE.as_bytes());
    let m = v4();
    let o = run(&[
        "write",
        s(&prompt),
        "-m",
        s(&m),
        "--out",
        s(&mnt),
        "--seed",
        "5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let story = mnt.join("full");
    let files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let before = files(&story);
    // Fill the disk: everything but a few hundred bytes.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 512];
        while f.write_all(&block).and_then(|_| f.sync_all()).is_ok() {}
    }
    let extend = [
        "write",
        s(&prompt),
        "-m",
        s(&m),
        "--out",
        s(&mnt),
        "--extend",
        "1",
    ];
    let o = run(&extend);
    let err = stderr(&o);
    assert!(!o.status.success(), "wrote into a full disk: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("quill: error"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(err.lines().last(), Some(errors[0]), "{err}");
    assert!(
        errors[0].contains("No space left") && errors[0].contains("free some space"),
        "{err}"
    );
    assert_eq!(files(&story), before, "the finished chapters changed");
    // Space again: the extension goes through.
    std::fs::remove_file(&filler).unwrap();
    let o = run(&extend);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(story.join("chapter-03.md").exists());
    for (name, bytes) in &before {
        if name.starts_with("chapter-0") {
            assert_eq!(&std::fs::read(story.join(name)).unwrap(), bytes, "{name}");
        }
    }
    drop(_guard);
    let _ = std::fs::remove_dir_all(&d);
}

/// A stored zip of `entries` (no ZIP64, no compression).
fn zip_of(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut z = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = z.len() as u32;
        let mut common = Vec::new();
        common.extend_from_slice(&[0u8; 12]); // flags, method 0, time, date, crc
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(name.len() as u16).to_le_bytes());
        common.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(b"PK\x03\x04\x14\x00");
        z.extend_from_slice(&common);
        z.extend_from_slice(name);
        z.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00");
        central.extend_from_slice(&common);
        central.extend_from_slice(&[0u8; 10]); // comment, disk, attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
    }
    let cd = z.len() as u32;
    z.extend_from_slice(&central);
    z.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    z.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    z.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    z.extend_from_slice(&(central.len() as u32).to_le_bytes());
    z.extend_from_slice(&cd.to_le_bytes());
    z.extend_from_slice(&[0, 0]);
    z
}

/// Regression (found reading the pickle interpreter for the fuzz targets):
/// a pickle that repeats one tensor rebuild, or one storage load, through
/// the memo used to allocate a message or a name copy per repetition — a
/// 60 KB storage name × 300,000 repetitions is 18 GB from a 2 MB file. It
/// must be refused in bounded memory, with the name cut short.
#[test]
fn pth_pickle_repeating_itself_through_the_memo_stays_small() {
    let d = tmpdir("pth-memo");
    let key = "k".repeat(60_000);
    let mut p: Vec<u8> = vec![0x80, 2, b'}', b'q', 0];
    // Storage: persistent id ('storage', torch.FloatStorage, key, 'cpu', 1).
    p.push(b'(');
    let unicode = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    unicode(&mut p, "storage");
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    unicode(&mut p, &key);
    unicode(&mut p, "cpu");
    p.extend_from_slice(&[b'K', 1, b't', b'Q', b'q', 1, b'0']);
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n");
    p.extend_from_slice(&[b'q', 2, b'0']);
    // Arguments: (storage, 0, (1,), (1,), False, {}).
    p.extend_from_slice(&[
        b'(', b'h', 1, b'K', 0, b'K', 1, 0x85, b'K', 1, 0x85, 0x89, b'}',
    ]);
    p.extend_from_slice(&[b't', b'q', 3, b'0']);
    for _ in 0..300_000 {
        // Rebuild the tensor and load the storage again, and drop both.
        p.extend_from_slice(&[b'h', 2, b'h', 3, b'R', b'0']);
        p.extend_from_slice(&[b'h', 1, b'0']);
    }
    unicode(&mut p, "w");
    p.extend_from_slice(&[b'h', 2, b'h', 3, b'R', b's', b'.']);
    // Three bytes: not a whole f32, so every rebuild is an error.
    let name = format!("archive/data/{key}");
    let zip = zip_of(&[(b"archive/data.pkl", &p), (name.as_bytes(), b"abc")]);
    let f = put(&d, "memo.pth", &zip);
    let start = Instant::now();
    let err = refused(&run(&["info", s(&f)]), "not a whole number", "memo bomb");
    assert!(
        err.len() < 1000,
        "the 60 KB name was not cut short: {} bytes",
        err.len()
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// Regression: `println!` panics on a closed pipe, so `quill tokenize …
/// | head -c 10` (or `quill info M | head -1`) ended in a panic message.
/// A reader that stops reading is done, not an error: exit 0, quietly.
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    use std::io::Read;
    let d = tmpdir("pipe");
    // About 1 MB of ids: far more than a pipe buffers.
    let f = put(&d, "big.txt", "word ".repeat(200_000).as_bytes());
    for args in [
        vec!["tokenize", "--tokenizer", "world", "--file", s(&f)],
        vec!["info", s(&v4())],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quill"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 4];
        out.read_exact(&mut first).unwrap();
        drop(out);
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert!(o.status.success(), "{args:?}: {:?} {err}", o.status);
        assert!(err.is_empty(), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Regression (fuzz target `prompt`, crash-56e02ec9…): a prompt file whose
/// invalid UTF-8 sits in a quoted table name holding `\n` made the error's
/// field path, and so its message, two lines. The library's message must
/// be one line by itself (the binary also joins lines, so check both).
#[test]
fn a_prompt_error_naming_a_key_with_a_line_break_is_one_line() {
    let d = tmpdir("prompt-key");
    let bytes = b"# Not every storo1\n [\"\\n##\xff\xff\xff\xff\xff\xff\xff\xff \"]";
    let f = put(&d, "key.toml", bytes);
    let e = quill::writer::Prompt::load(&f, None).unwrap_err();
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg:?}");
    assert!(msg.contains("\\n##") && msg.contains("UTF-8"), "{msg}");
    let o = run(&["write", s(&f), "-m", "/nonexistent.safetensors"]);
    refused(&o, "key.toml:2:", "key with a line break");
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------------------
// Values that used to be accepted and then silently did nothing (or the
// wrong thing)
// ---------------------------------------------------------------------------

#[test]
fn bans_outside_the_vocabulary_empty_stops_and_empty_ids_are_refused() {
    let d = tmpdir("silent");
    let gen = |extra: &[&str]| {
        let mut args = vec!["generate", "--prompt", "Hello", "-n", "5"];
        args.extend_from_slice(extra);
        run(&args)
    };
    // The built-in model has 256 tokens.
    refused(
        &gen(&["--ban", "99999"]),
        "banned token id 99999",
        "--ban 99999",
    );
    refused(&gen(&["--ban", "1,256"]), "size 256", "--ban 1,256");
    refused(&gen(&["--stop", ""]), "--stop \"\" is empty", "--stop ''");
    refused(
        &gen(&["--stop", "x", "--stop", ""]),
        "empty",
        "a second --stop ''",
    );
    for ids in ["1,,2", "1,2,", ",1"] {
        let o = run(&["generate", "--tokens", ids, "-n", "1"]);
        refused(&o, "empty item", &format!("--tokens {ids}"));
        let o = run(&["logits", "--tokens", ids]);
        refused(&o, "empty item", &format!("logits --tokens {ids}"));
    }
    let text = put(&d, "t.txt", b"What light through yonder window breaks?");
    refused(
        &run(&["perplexity", "--chunk", "0", s(&text)]),
        "--chunk must be at least 1",
        "--chunk 0",
    );
    // The same through files: a prompt file's and a persona's ban list,
    // a prompt file's stop list. Nothing is written.
    let out = d.join("out");
    let story = |extra: &str| {
        format!(
            "title = \"T\"\npremise = \"x\"\n{extra}\n[[chapter]]\nheading = \"One\"\nlength = 5\n"
        )
    };
    let f = put(
        &d,
        "ban.toml",
        story("[sampler]\nbanned = [999]\n").as_bytes(),
    );
    let o = run(&["write", s(&f), "--out", s(&out)]);
    let err = refused(&o, "banned token id 999", "prompt file banned = [999]");
    assert!(err.contains("ban.toml"), "{err}");
    assert!(!out.exists(), "something was written");
    let f = put(
        &d,
        "stop.toml",
        format!("{}stop = [\"a\", \"\"]\n", story("")).as_bytes(),
    );
    let o = run(&["write", s(&f), "--out", s(&out)]);
    refused(
        &o,
        "stop.toml:7: field `chapter[1].stop[2]`: is empty",
        "stop = [\"\"]",
    );
    assert!(!out.exists(), "something was written");
    let persona = put(
        &d,
        "p.toml",
        b"[sampler]\nbanned = [999]\n\n[[opening]]\nuser = \"Hi\"\nassistant = \"Hello.\"\n",
    );
    let o = run_with(
        &["chat", "--persona", s(&persona), "--no-cache"],
        b"Hi\n",
        &[("QUILL_DATA_DIR", &*d)],
    );
    refused(&o, "banned token id 999", "persona banned = [999]");
}
