//! The `.pth` reader against real torch.save output (the reference random
//! models in `tests/fixtures/random/`), against files built here in torch.save's
//! layout (shared storages, offsets, dtypes, ZIP64), and against hostile or
//! damaged input, which must give one clear error and never panic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quill::model::weights::{Backing, DType, WeightFile};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/random")
        .join(name)
}

fn load(bytes: Vec<u8>) -> quill::Result<Arc<WeightFile>> {
    WeightFile::from_backing(Backing::Owned(bytes), "test.pth".into())
}

fn load_err(bytes: Vec<u8>) -> String {
    match load(bytes) {
        Ok(w) => panic!("expected an error, loaded {} tensors", w.tensors.len()),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line message: {msg}");
            msg
        }
    }
}

/// bf16 bits of `x` rounded to nearest, ties to even (what torch's
/// `.bfloat16()` does).
fn bf16_rne(x: f32) -> u32 {
    let b = x.to_bits();
    if x.is_nan() {
        return (b | 0x0040_0000) & 0xFFFF_0000;
    }
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1))) & 0xFFFF_0000
}

/// Checks every tensor of a bf16 `.pth` against the bf16 rounding of the
/// same tensor in the f32 safetensors file.
fn compare_pth_to_f32(pth: &Path, f32_file: &Path) {
    let p = WeightFile::open(pth).unwrap_or_else(|e| panic!("{}: {e}", pth.display()));
    let s = WeightFile::open(f32_file).unwrap();
    let names_p: Vec<_> = p.tensors.keys().collect();
    let names_s: Vec<_> = s.tensors.keys().collect();
    assert_eq!(names_p, names_s, "{}: tensor names differ", pth.display());
    for (name, info) in &p.tensors {
        let want = &s.tensors[name];
        assert_eq!(info.shape, want.shape, "{name}: shape");
        assert_eq!(info.dtype, DType::BF16, "{name}: dtype");
        assert_eq!(want.dtype, DType::F32, "{name}: reference dtype");
        let got = p.to_f32(name).unwrap();
        let reference = s.to_f32(name).unwrap();
        assert_eq!(got.len(), reference.len());
        for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
            assert_eq!(
                g.to_bits(),
                bf16_rne(*r),
                "{}: {name}[{i}] = {g}, expected bf16({r})",
                pth.display()
            );
        }
    }
}

#[test]
fn reference_random_bf16_pth_equals_rounded_f32() {
    for v in 4..=7 {
        compare_pth_to_f32(
            &fixture(&format!("rand-v{v}-bf16.pth")),
            &fixture(&format!("rand-v{v}.safetensors")),
        );
    }
}

#[test]
fn reference_trained_bf16_pth_equals_rounded_f32_when_present() {
    let dir = Path::new("/work/shared/reference/trained");
    let mut checked = 0;
    for v in 4..=7 {
        let pth = dir.join(format!("trained-v{v}-bf16.pth"));
        let f32_file = dir.join(format!("trained-v{v}.safetensors"));
        if pth.exists() && f32_file.exists() {
            compare_pth_to_f32(&pth, &f32_file);
            checked += 1;
        }
    }
    eprintln!("checked {checked} trained .pth checkpoints");
    if checked == 0 {
        eprintln!(
            "\n!!!!! WARNING: {} not found: the trained .pth checks were SKIPPED !!!!!\n",
            dir.display()
        );
    }
}

// ---------------------------------------------------------------------------
// A tiny writer in torch.save's layout
// ---------------------------------------------------------------------------

/// A zip writer like torch's (miniz): stored entries, local extra fields
/// padding data to 64 bytes, optional ZIP64 end records.
struct ZipWriter {
    out: Vec<u8>,
    central: Vec<u8>,
    count: u64,
}

/// How to write one central-directory entry.
#[derive(Clone, Copy, Default)]
struct EntryOpts {
    method: u16,
    /// Write sizes and offset as 0xFFFFFFFF with a ZIP64 extra field.
    zip64_extra: bool,
    /// Override the sizes written to the central directory.
    fake_size: Option<u64>,
}

impl ZipWriter {
    fn new() -> Self {
        ZipWriter {
            out: Vec::new(),
            central: Vec::new(),
            count: 0,
        }
    }

    fn add(&mut self, name: &str, data: &[u8], opts: EntryOpts) {
        let offset = self.out.len() as u64;
        let base = self.out.len() + 30 + name.len() + 4;
        let pad = (64 - base % 64) % 64;
        let o = &mut self.out;
        o.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        o.extend_from_slice(&[0, 0, 0, 0]); // version, flags
        o.extend_from_slice(&opts.method.to_le_bytes());
        o.extend_from_slice(&[0; 4]); // time, date
        o.extend_from_slice(&[0; 4]); // crc (not checked by Quill)
        o.extend_from_slice(&(data.len() as u32).to_le_bytes());
        o.extend_from_slice(&(data.len() as u32).to_le_bytes());
        o.extend_from_slice(&(name.len() as u16).to_le_bytes());
        o.extend_from_slice(&((4 + pad) as u16).to_le_bytes());
        o.extend_from_slice(name.as_bytes());
        o.extend_from_slice(b"FB");
        o.extend_from_slice(&(pad as u16).to_le_bytes());
        o.extend_from_slice(&vec![b'Z'; pad]);
        o.extend_from_slice(data);

        let size = opts.fake_size.unwrap_or(data.len() as u64);
        let c = &mut self.central;
        c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        c.extend_from_slice(&[0x1e, 0x03, 0x2d, 0, 0, 0]); // made by, needed, flags
        c.extend_from_slice(&opts.method.to_le_bytes());
        c.extend_from_slice(&[0; 8]); // time, date, crc
        let extra: Vec<u8> = if opts.zip64_extra {
            let mut e = vec![1, 0, 24, 0];
            e.extend_from_slice(&size.to_le_bytes());
            e.extend_from_slice(&size.to_le_bytes());
            e.extend_from_slice(&offset.to_le_bytes());
            c.extend_from_slice(&[0xFF; 8]);
            e
        } else {
            c.extend_from_slice(&(size as u32).to_le_bytes());
            c.extend_from_slice(&(size as u32).to_le_bytes());
            Vec::new()
        };
        c.extend_from_slice(&(name.len() as u16).to_le_bytes());
        c.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        c.extend_from_slice(&[0; 6]); // comment len, disk, internal attrs
        c.extend_from_slice(&[0; 4]); // external attrs
        let off32 = if opts.zip64_extra {
            0xFFFF_FFFF
        } else {
            offset as u32
        };
        c.extend_from_slice(&off32.to_le_bytes());
        c.extend_from_slice(name.as_bytes());
        c.extend_from_slice(&extra);
        self.count += 1;
    }

    /// Appends the central directory and the end records.
    fn finish(mut self, zip64: bool) -> Vec<u8> {
        let cd_offset = self.out.len() as u64;
        let cd_size = self.central.len() as u64;
        self.out.extend_from_slice(&self.central);
        if zip64 {
            let rec = self.out.len() as u64;
            let o = &mut self.out;
            o.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
            o.extend_from_slice(&44u64.to_le_bytes());
            o.extend_from_slice(&[0x1e, 0x03, 0x2d, 0]);
            o.extend_from_slice(&[0; 8]); // disks
            o.extend_from_slice(&self.count.to_le_bytes());
            o.extend_from_slice(&self.count.to_le_bytes());
            o.extend_from_slice(&cd_size.to_le_bytes());
            o.extend_from_slice(&cd_offset.to_le_bytes());
            o.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
            o.extend_from_slice(&0u32.to_le_bytes());
            o.extend_from_slice(&rec.to_le_bytes());
            o.extend_from_slice(&1u32.to_le_bytes());
        }
        let o = &mut self.out;
        o.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        o.extend_from_slice(&[0; 4]);
        o.extend_from_slice(&(self.count as u16).to_le_bytes());
        o.extend_from_slice(&(self.count as u16).to_le_bytes());
        o.extend_from_slice(&(cd_size as u32).to_le_bytes());
        o.extend_from_slice(&(cd_offset as u32).to_le_bytes());
        o.extend_from_slice(&[0, 0]);
        self.out
    }
}

/// A protocol-2 pickle writer with the opcodes torch.save emits.
struct Pickle {
    b: Vec<u8>,
}

impl Pickle {
    fn new() -> Self {
        Pickle { b: vec![0x80, 2] }
    }
    fn op(&mut self, op: u8) -> &mut Self {
        self.b.push(op);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.b.push(b'X');
        self.b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.b.extend_from_slice(s.as_bytes());
        self
    }
    fn int(&mut self, v: i64) -> &mut Self {
        match v {
            0..=255 => {
                self.b.extend_from_slice(&[b'K', v as u8]);
            }
            _ => {
                self.b.push(b'J');
                self.b.extend_from_slice(&(v as i32).to_le_bytes());
            }
        }
        self
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.b.push(b'c');
        self.b
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }
    fn tuple(&mut self, items: &[i64]) -> &mut Self {
        self.op(b'(');
        for &v in items {
            self.int(v);
        }
        self.op(b't')
    }
    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`
    fn tensor(&mut self, t: &T) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
        self.op(b'(')
            .str("storage")
            .global("torch", t.class)
            .str(t.key)
            .str("cpu")
            .int(t.storage_numel)
            .op(b't')
            .op(b'Q');
        self.int(t.offset).tuple(&t.size).tuple(&t.stride);
        self.op(0x89)
            .global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b't')
            .op(b'R')
    }
    fn finish(&mut self) -> Vec<u8> {
        self.op(b'.');
        std::mem::take(&mut self.b)
    }
}

/// One tensor for the writer.
struct T {
    name: &'static str,
    class: &'static str,
    key: &'static str,
    storage_numel: i64,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

fn t(name: &'static str, key: &'static str, offset: i64, size: &[i64]) -> T {
    let mut stride = vec![1i64; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * size[i + 1];
    }
    T {
        name,
        class: "BFloat16Storage",
        key,
        storage_numel: 0,
        offset,
        size: size.to_vec(),
        stride,
    }
}

/// `{name: tensor, ...}` as torch pickles a state dict.
fn state_dict_pickle(tensors: &[T]) -> Vec<u8> {
    let mut p = Pickle::new();
    p.op(b'}').op(b'(');
    for t in tensors {
        p.str(t.name).tensor(t);
    }
    p.op(b'u').finish()
}

/// A whole checkpoint: `<prefix>/data.pkl`, `byteorder`, the storages and
/// `version`, in torch's order.
fn torch_file(prefix: &str, pickle: &[u8], storages: &[(&str, Vec<u8>)], zip64: bool) -> Vec<u8> {
    let mut z = ZipWriter::new();
    z.add(&format!("{prefix}/data.pkl"), pickle, EntryOpts::default());
    z.add(
        &format!("{prefix}/byteorder"),
        b"little",
        EntryOpts::default(),
    );
    for (key, data) in storages {
        z.add(&format!("{prefix}/data/{key}"), data, EntryOpts::default());
    }
    z.add(&format!("{prefix}/version"), b"3\n", EntryOpts::default());
    z.finish(zip64)
}

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| ((bf16_rne(*v) >> 16) as u16).to_le_bytes())
        .collect()
}

fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 * 0.5 - 3.0).collect()
}

// ---------------------------------------------------------------------------
// Layouts torch writes
// ---------------------------------------------------------------------------

#[test]
fn shared_storage_with_element_offset() {
    let values = ramp(20);
    let mut a = t("a.weight", "0", 0, &[2, 3]);
    let mut b = t("b.weight", "0", 7, &[4]);
    let mut c = t("c.weight", "0", 2, &[3, 1]); // overlaps `a`
    for x in [&mut a, &mut b, &mut c] {
        x.storage_numel = 20;
    }
    let pickle = state_dict_pickle(&[a, b, c]);
    for zip64 in [false, true] {
        let file = torch_file("archive", &pickle, &[("0", bf16_bytes(&values))], zip64);
        let w = load(file).unwrap();
        assert_eq!(w.tensors.len(), 3);
        assert_eq!(w.tensors["a.weight"].shape, vec![2, 3]);
        assert_eq!(w.to_f32("a.weight").unwrap(), values[0..6]);
        assert_eq!(w.to_f32("b.weight").unwrap(), values[7..11]);
        assert_eq!(w.to_f32("c.weight").unwrap(), values[2..5]);
        let start_a = w.tensors["a.weight"].start;
        assert_eq!(w.tensors["b.weight"].start, start_a + 7 * 2);
        assert!(w.metadata.is_empty());
    }
}

#[test]
fn f32_and_f16_storages_any_prefix_zip64_extra_fields() {
    let f32_values = ramp(6);
    let f16_values = [1.0f32, -2.5, 0.125, 65504.0];
    let f16_bytes: Vec<u8> = f16_values
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
        .collect();
    let mut x = t("x", "3", 1, &[5]);
    x.class = "FloatStorage";
    let mut y = t("y", "7", 0, &[2, 2]);
    y.class = "HalfStorage";
    // A scalar (0-d) tensor and a size-1 dimension with an odd stride.
    let mut z = t("z", "3", 0, &[]);
    z.class = "FloatStorage";
    let mut u = t("u", "3", 0, &[1, 2]);
    u.class = "FloatStorage";
    u.stride = vec![99, 1];
    let pickle = state_dict_pickle(&[x, y, z, u]);
    let mut zw = ZipWriter::new();
    let z64 = EntryOpts {
        zip64_extra: true,
        ..EntryOpts::default()
    };
    zw.add("my model v2/data.pkl", &pickle, z64);
    zw.add("my model v2/data/3", &f32_bytes(&f32_values), z64);
    zw.add("my model v2/data/7", &f16_bytes, EntryOpts::default());
    zw.add("my model v2/.data/serialization_id", b"123", z64);
    let w = load(zw.finish(true)).unwrap();
    assert_eq!(w.tensors["x"].dtype, DType::F32);
    assert_eq!(w.to_f32("x").unwrap(), f32_values[1..6]);
    assert_eq!(w.tensors["y"].dtype, DType::F16);
    assert_eq!(w.tensors["y"].shape, vec![2, 2]);
    assert_eq!(w.to_f32("y").unwrap(), f16_values);
    assert_eq!(w.tensors["z"].shape, Vec::<usize>::new());
    assert_eq!(w.to_f32("z").unwrap(), vec![f32_values[0]]);
    assert_eq!(w.to_f32("u").unwrap(), f32_values[0..2]);
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn nested_state_dict_parameters_and_non_tensor_values() {
    // {"epoch": 3, "state_dict": OrderedDict(w=Parameter(tensor)), "lr": 0.5}
    // with an OrderedDict BUILD carrying `_metadata`, as torch writes it.
    let mut w = t("w", "0", 0, &[2]);
    w.storage_numel = 2;
    let mut p = Pickle::new();
    p.op(b'}').op(b'q').op(0).op(b'(');
    p.str("epoch").int(3);
    p.str("lr")
        .op(b'G')
        .b
        .extend_from_slice(&0.5f64.to_be_bytes());
    p.str("state_dict")
        .global("collections", "OrderedDict")
        .op(b')')
        .op(b'R')
        .op(b'q')
        .op(1);
    p.str("w")
        .global("torch._utils", "_rebuild_parameter")
        .op(b'(');
    p.tensor(&w).op(0x88).global("collections", "OrderedDict");
    p.op(b')').op(b'R').op(b't').op(b'R').op(b's');
    // state: {'_metadata': OrderedDict({'': {'version': 1}})}
    p.op(b'}')
        .str("_metadata")
        .global("collections", "OrderedDict");
    p.op(b')')
        .op(b'R')
        .str("")
        .op(b'}')
        .str("version")
        .int(1)
        .op(b's');
    p.op(b's').op(b's').op(b'b');
    p.op(b'u');
    let pickle = p.finish();
    let file = torch_file("ckpt", &pickle, &[("0", bf16_bytes(&[1.5, -2.0]))], false);
    let wf = load(file).unwrap();
    assert_eq!(wf.tensors.keys().collect::<Vec<_>>(), vec!["w"]);
    assert_eq!(wf.to_f32("w").unwrap(), vec![1.5, -2.0]);
}

#[test]
fn protocol_4_opcodes_frame_memoize_stack_global() {
    // {"a": tensor} written with FRAME, SHORT_BINUNICODE, STACK_GLOBAL,
    // MEMOIZE, LONG1 and BINGET, as protocol 4 would.
    let mut b = vec![0x80, 4, 0x95];
    b.extend_from_slice(&100u64.to_le_bytes());
    let sbu = |b: &mut Vec<u8>, s: &str| {
        b.push(0x8c);
        b.push(s.len() as u8);
        b.extend_from_slice(s.as_bytes());
        b.push(0x94);
    };
    b.extend_from_slice(&[b'}', 0x94, b'(']);
    sbu(&mut b, "a");
    sbu(&mut b, "torch._utils");
    sbu(&mut b, "_rebuild_tensor_v2");
    b.extend_from_slice(&[0x93, 0x94, b'(', b'(']);
    sbu(&mut b, "storage");
    sbu(&mut b, "torch");
    sbu(&mut b, "FloatStorage");
    b.extend_from_slice(&[0x93, 0x94]);
    sbu(&mut b, "0");
    sbu(&mut b, "cpu");
    b.extend_from_slice(&[0x8a, 1, 4, b't', 0x94, b'Q', 0x94]); // numel 4 as LONG1
    b.extend_from_slice(&[0x8a, 1, 1]); // offset 1
    b.extend_from_slice(&[b'K', 3, 0x85, b'K', 1, 0x85, 0x89]); // (3,), (1,), False
    b.extend_from_slice(&[b'h', 1, b'0']); // BINGET memo 1 ("a"), POP
    b.extend_from_slice(b"NtRu.");
    let file = torch_file(
        "archive",
        &b,
        &[("0", f32_bytes(&[9.0, 1.0, 2.0, 3.0]))],
        false,
    );
    let w = load(file).unwrap();
    assert_eq!(w.to_f32("a").unwrap(), vec![1.0, 2.0, 3.0]);
}

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

fn one_tensor_file(tensor: T, storage: Vec<u8>) -> Vec<u8> {
    let key = tensor.key;
    torch_file(
        "archive",
        &state_dict_pickle(&[tensor]),
        &[(key, storage)],
        false,
    )
}

#[test]
fn compressed_entry_is_refused_by_name() {
    let mut z = ZipWriter::new();
    let pickle = state_dict_pickle(&[t("w", "3", 0, &[2])]);
    z.add("archive/data.pkl", &pickle, EntryOpts::default());
    z.add(
        "archive/data/3",
        &[0; 4],
        EntryOpts {
            method: 8,
            ..EntryOpts::default()
        },
    );
    let msg = load_err(z.finish(false));
    assert!(
        msg.contains("compressed zip entry `archive/data/3` (method 8)"),
        "{msg}"
    );

    let mut z = ZipWriter::new();
    z.add(
        "archive/data.pkl",
        &pickle,
        EntryOpts {
            method: 8,
            ..EntryOpts::default()
        },
    );
    let msg = load_err(z.finish(false));
    assert!(
        msg.contains("`archive/data.pkl`") && msg.contains("compressed"),
        "{msg}"
    );
}

#[test]
fn unknown_globals_are_refused_and_nothing_runs() {
    let marker = std::env::temp_dir().join(format!("quill-pth-pwned-{}", std::process::id()));
    let cmd = format!("touch {}", marker.display());
    // os.system("touch ...") via GLOBAL + REDUCE.
    let mut p = Pickle::new();
    p.global("os", "system").str(&cmd).op(0x85).op(b'R');
    let msg = load_err(torch_file("archive", &p.finish(), &[], false));
    assert!(msg.contains("refusing pickle global `os.system`"), "{msg}");
    // builtins.eval via STACK_GLOBAL, nested inside the dict.
    let mut p = Pickle::new();
    p.op(b'}').str("x").str("builtins").str("eval").op(0x93);
    p.str(&format!("__import__('os').system('{cmd}')"))
        .op(0x85)
        .op(b'R')
        .op(b's');
    let msg = load_err(torch_file("archive", &p.finish(), &[], false));
    assert!(
        msg.contains("refusing pickle global `builtins.eval`"),
        "{msg}"
    );
    // A torch function outside the allow-list.
    let mut p = Pickle::new();
    p.global("torch.storage", "_load_from_bytes");
    let msg = load_err(torch_file("archive", &p.finish(), &[], false));
    assert!(msg.contains("`torch.storage._load_from_bytes`"), "{msg}");
    assert!(!marker.exists(), "a pickle ran code");
}

#[test]
fn storage_shorter_than_its_tensor() {
    let mut w = t("blocks.0.att.key.weight", "0", 3, &[2, 2]);
    w.storage_numel = 6;
    let msg = load_err(one_tensor_file(w, bf16_bytes(&ramp(6))));
    assert!(msg.contains("tensor `blocks.0.att.key.weight`"), "{msg}");
    assert!(msg.contains("storage shorter than its tensor"), "{msg}");
    // An offset so large that offset + numel overflows.
    let mut w = t("emb.weight", "0", 0, &[2]);
    w.offset = i32::MAX as i64;
    let msg = load_err(one_tensor_file(w, bf16_bytes(&ramp(6))));
    assert!(
        msg.contains("tensor `emb.weight`: storage shorter"),
        "{msg}"
    );
}

#[test]
fn non_contiguous_strides_are_refused() {
    let mut w = t("head.weight", "0", 0, &[3, 2]);
    w.stride = vec![1, 3]; // a transpose
    let msg = load_err(one_tensor_file(w, bf16_bytes(&ramp(6))));
    assert!(msg.contains("tensor `head.weight`"), "{msg}");
    assert!(msg.contains("contiguous"), "{msg}");
}

#[test]
fn unsupported_dtype_names_tensor_and_dtype() {
    let mut w = t("steps", "0", 0, &[1]);
    w.class = "LongStorage";
    let msg = load_err(one_tensor_file(w, vec![0; 8]));
    assert!(
        msg.contains("tensor `steps`") && msg.contains("LongStorage"),
        "{msg}"
    );
}

#[test]
fn big_endian_and_missing_pickle_are_refused() {
    let mut z = ZipWriter::new();
    z.add(
        "archive/data.pkl",
        &state_dict_pickle(&[]),
        EntryOpts::default(),
    );
    z.add("archive/byteorder", b"big", EntryOpts::default());
    let msg = load_err(z.finish(false));
    assert!(msg.contains("little-endian"), "{msg}");

    let mut z = ZipWriter::new();
    z.add("notes.txt", b"hello", EntryOpts::default());
    let msg = load_err(z.finish(false));
    assert!(msg.contains("data.pkl"), "{msg}");

    let mut z = ZipWriter::new();
    z.add("a/data.pkl", &state_dict_pickle(&[]), EntryOpts::default());
    z.add("b/data.pkl", &state_dict_pickle(&[]), EntryOpts::default());
    let msg = load_err(z.finish(false));
    assert!(msg.contains("2 `data.pkl` entries"), "{msg}");

    // A storage the pickle names but the archive lacks.
    let mut w = t("w", "9", 0, &[1]);
    w.storage_numel = 1;
    let file = torch_file("archive", &state_dict_pickle(&[w]), &[], false);
    let msg = load_err(file);
    assert!(msg.contains("`archive/data/9` is missing"), "{msg}");

    // An empty dict.
    let msg = load_err(torch_file("archive", &state_dict_pickle(&[]), &[], false));
    assert!(msg.contains("no tensors"), "{msg}");
}

#[test]
fn zip_bombs_and_lying_sizes_are_refused() {
    let mut w = t("w", "0", 0, &[2]);
    w.storage_numel = 2;
    let good = one_tensor_file(w, bf16_bytes(&[1.0, 2.0]));
    assert!(load(good.clone()).is_ok());
    let n = good.len();
    let eocd = n - 22;

    // EOCD claims 65,535 entries.
    let mut f = good.clone();
    f[eocd + 8..eocd + 12].copy_from_slice(&[0xFF; 4]);
    let msg = load_err(f);
    assert!(msg.contains("claims 65535 entries"), "{msg}");

    // EOCD claims a 4 GiB central directory at offset 0xFFFFFFF0.
    let mut f = good.clone();
    f[eocd + 12..eocd + 20].copy_from_slice(&[0xF0, 0xFF, 0xFF, 0xFF, 0xF0, 0xFF, 0xFF, 0xFF]);
    load_err(f);

    // A ZIP64 record claiming 2^32 entries, then 2^64-1 entries and a
    // central directory of 2^64-1 bytes.
    let mut wz = ZipWriter::new();
    wz.add(
        "archive/data.pkl",
        &state_dict_pickle(&[]),
        EntryOpts::default(),
    );
    let good64 = wz.finish(true);
    assert!(load_err(good64.clone()).contains("no tensors"));
    let rec = good64.len() - 22 - 20 - 56;
    for (field, value) in [
        (32, 1u64 << 32),
        (32, u64::MAX),
        (40, u64::MAX),
        (48, u64::MAX),
    ] {
        let mut f = good64.clone();
        f[rec + field..rec + field + 8].copy_from_slice(&value.to_le_bytes());
        load_err(f);
    }
    // The locator points past the file.
    let mut f = good64.clone();
    let loc = good64.len() - 22 - 20;
    f[loc + 8..loc + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(load_err(f).contains("ZIP64 locator"));

    // An entry whose central-directory size (via the ZIP64 extra field)
    // is 2^64-1 or 2^32, far beyond the file.
    for size in [u64::MAX, 1 << 32, 0xFFFF_FFFE] {
        let mut z = ZipWriter::new();
        let mut w = t("w", "0", 0, &[2]);
        w.storage_numel = 2;
        z.add(
            "archive/data.pkl",
            &state_dict_pickle(&[w]),
            EntryOpts::default(),
        );
        z.add(
            "archive/data/0",
            &bf16_bytes(&[1.0, 2.0]),
            EntryOpts {
                zip64_extra: size > 0xFFFF_FFFF,
                fake_size: Some(size),
                ..EntryOpts::default()
            },
        );
        let msg = load_err(z.finish(true));
        assert!(msg.contains("archive/data/0"), "{msg}");
    }
}

#[test]
fn every_truncation_of_a_real_file_is_an_error() {
    for v in 4..=7 {
        let bytes = std::fs::read(fixture(&format!("rand-v{v}-bf16.pth"))).unwrap();
        let n = bytes.len();
        // 50 cuts spread over the file, plus every cut in the last 300 bytes
        // (the central directory's tail and the end records).
        let cuts = (1..50).map(|i| n * i / 50).chain(n - 300..n);
        for cut in cuts {
            let r = load(bytes[..cut].to_vec());
            assert!(r.is_err(), "v{v} cut at {cut} of {n} loaded");
        }
    }
}

/// A small deterministic generator for the corruption tests.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn corrupted_central_directory_and_pickle_never_panic() {
    let bytes = std::fs::read(fixture("rand-v4-bf16.pth")).unwrap();
    let n = bytes.len();
    // Central directory + end records are the last ~4.3 KB; data.pkl the
    // first ~3.9 KB. Corrupt 1–3 bytes at a time in both.
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut errors = 0;
    for round in 0..3000 {
        let mut f = bytes.clone();
        for _ in 0..1 + round % 3 {
            let span = 4400;
            let r = rng.next() as usize % (2 * span);
            let pos = if r < span { 64 + r } else { n - (r - span) - 1 };
            f[pos] = rng.next() as u8;
        }
        if load(f).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 0);
}

#[test]
fn pickle_bombs_are_refused() {
    let run = |body: &[u8]| {
        let mut pkl = vec![0x80, 2];
        pkl.extend_from_slice(body);
        load_err(torch_file("archive", &pkl, &[], false))
    };
    // A million nested MARKs.
    let msg = run(&[b'('; 1_000_000]);
    assert!(msg.contains("MARKs nest more than"), "{msg}");
    // A million Nones then STOP: bounded by the input, refused as no dict.
    let mut body = vec![b'N'; 1_000_000];
    body.push(b'.');
    assert!(run(&body).contains("not a dict"));
    // A million nested 1-tuples: no recursion when building or dropping.
    let mut body = vec![b'N'];
    body.extend_from_slice(&[0x85; 1_000_000]);
    body.push(b'.');
    assert!(run(&body).contains("tuple"));
    // A list appended into itself a million times.
    let mut body = vec![b']', b'q', 0];
    for _ in 0..100_000 {
        body.extend_from_slice(&[b'h', 0, b'a']);
    }
    body.push(b'.');
    assert!(run(&body).contains("list"));
    // Lengths far beyond the input.
    assert!(run(&[0x8d, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).contains("past the end"));
    assert!(run(&[b'X', 0xFF, 0xFF, 0xFF, 0x7F]).contains("past the end"));
    assert!(run(&[0x8b, 0xFF, 0xFF, 0xFF, 0x7F]).contains("past the end"));
    // Memo reads before writes, stack underflows, missing STOP, bad opcodes.
    assert!(run(&[b'j', 0xFF, 0xFF, 0xFF, 0xFF]).contains("memo"));
    assert!(run(b"(u.").contains("underflow"));
    assert!(run(b"R").contains("underflow"));
    assert!(run(b"}").contains("STOP"));
    assert!(run(b"i__builtin__\nobject\n").contains("unsupported pickle opcode"));
    assert!(run(&[0x80, 9]).contains("protocol"));
}

#[test]
fn random_pickle_bytes_never_panic() {
    let mut w = t("w", "0", 1, &[2, 2]);
    w.storage_numel = 5;
    let pickle = state_dict_pickle(&[w]);
    let storage = bf16_bytes(&ramp(5));
    assert!(load(torch_file(
        "archive",
        &pickle,
        &[("0", storage.clone())],
        false
    ))
    .is_ok());
    let mut rng = XorShift(42);
    for _ in 0..3000 {
        let mut p = pickle.clone();
        for _ in 0..1 + rng.next() % 4 {
            let i = rng.next() as usize % p.len();
            p[i] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(4) {
            let cut = rng.next() as usize % p.len();
            p.truncate(cut);
        }
        let _ = load(torch_file("archive", &p, &[("0", storage.clone())], false));
    }
}
