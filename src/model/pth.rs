//! Reader for official PyTorch `.pth` checkpoints, read in place.
//!
//! `torch.save` writes a zip archive whose entries are *stored* (not
//! compressed): `<folder>/data.pkl`, a pickle describing the object saved
//! (for a model, a dict of tensor name → tensor), and `<folder>/data/<key>`,
//! one raw little-endian storage per key. Tensors refer to their storage
//! through a pickle *persistent id*. The folder name varies (`archive`, or
//! the file's stem).
//!
//! This module has two halves:
//! - a zip reader that only locates entries (it never decompresses), with
//!   every offset and length checked against the buffer;
//! - a pickle interpreter for the subset torch writes for a state dict. It
//!   only builds values: a `GLOBAL` is looked up in a short allow-list of
//!   harmless names and anything else is refused, so no pickle can run code.
//!
//! The result is a table of [`TensorInfo`] pointing into the original bytes,
//! so a memory-mapped checkpoint is never copied.
//!
//! References: PKWARE's APPNOTE.TXT (zip, sections cited inline) and the
//! opcode table of CPython's `Lib/pickletools.py` (pickle protocols 0–5).

use std::collections::{BTreeMap, HashMap};

use super::weights::{DType, TensorInfo};
use crate::error::{QuillError, Result};

/// Reads the tensor table of a torch zip checkpoint.
///
/// `bytes` is the whole file and `origin` names it in messages. Returns the
/// tensors by name (each pointing into `bytes`) and an empty metadata map:
/// a `.pth` has no string metadata comparable to safetensors'.
pub fn read_tensors(
    bytes: &[u8],
    origin: &str,
) -> Result<(BTreeMap<String, TensorInfo>, BTreeMap<String, String>)> {
    let zip = Zip::parse(bytes, origin)?;
    let (pkl_name, prefix) = zip.find_pickle()?;
    let byteorder = format!("{prefix}byteorder");
    if zip.entries.contains_key(byteorder.as_bytes()) {
        let (start, len) = zip.data(&byteorder)?;
        let order = bytes[start..start + len].trim_ascii();
        if order != b"little" {
            return Err(QuillError::format(
                origin,
                format!(
                    "`{byteorder}` says `{}`: Quill reads little-endian checkpoints only; re-save it on a little-endian machine or convert it to safetensors",
                    String::from_utf8_lossy(order)
                ),
            ));
        }
    }
    let (start, len) = zip.data(&pkl_name)?;
    if len > MAX_PICKLE {
        return Err(QuillError::format(
            origin,
            format!(
                "`{pkl_name}` is {len} bytes, more than the {MAX_PICKLE} a state dict's pickle ever needs (it only names the tensors); this is not a torch.save checkpoint Quill can read, convert it to safetensors with a tool you trust"
            ),
        ));
    }
    let mut machine = Machine {
        data: &bytes[start..start + len],
        pos: 0,
        objs: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        storages: HashMap::new(),
        zip: &zip,
        prefix: &prefix,
        pkl_name: &pkl_name,
    };
    let root = machine.run()?;
    let tensors = collect_tensors(&machine.objs, root, origin)?;
    Ok((tensors, BTreeMap::new()))
}

// ---------------------------------------------------------------------------
// Zip
// ---------------------------------------------------------------------------

/// Reads `N` little-endian bytes at `off`, or `None` past the end.
fn le<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    le::<2>(b, off).map(u16::from_le_bytes)
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    le::<4>(b, off).map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    le::<8>(b, off).map(u64::from_le_bytes)
}

/// Signatures (APPNOTE 4.3.7, 4.3.12, 4.3.14–4.3.16).
const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
/// Fixed sizes of the records above.
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_LEN: usize = 56;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;

/// What the central directory says about one entry (APPNOTE 4.3.12).
#[derive(Debug, Clone, Copy)]
struct Entry {
    flags: u16,
    method: u16,
    compressed: u64,
    size: u64,
    local_offset: u64,
}

/// The entries of a zip archive, by name; nothing is read until asked for.
struct Zip<'a> {
    bytes: &'a [u8],
    origin: &'a str,
    entries: BTreeMap<&'a [u8], Entry>,
}

impl<'a> Zip<'a> {
    fn bad(&self, reason: impl Into<String>) -> QuillError {
        QuillError::format(self.origin, reason)
    }

    /// Finds the end-of-central-directory record (and its ZIP64 variant)
    /// and reads the central directory.
    fn parse(bytes: &'a [u8], origin: &'a str) -> Result<Zip<'a>> {
        let damaged = |what: &str| {
            QuillError::format(
                origin,
                format!("damaged zip: {what} (truncated or incomplete download? fetch the checkpoint again)"),
            )
        };
        // APPNOTE 4.3.16: the EOCD record ends the file, followed only by a
        // comment of at most 65,535 bytes, so search backwards that far.
        if bytes.len() < EOCD_LEN {
            return Err(damaged(
                "too short to hold an end-of-central-directory record",
            ));
        }
        let last = bytes.len() - EOCD_LEN;
        let first = last.saturating_sub(0xFFFF);
        let eocd = (first..=last)
            .rev()
            .find(|&i| {
                u32_at(bytes, i) == Some(EOCD_SIG)
                    && u16_at(bytes, i + 20)
                        .is_some_and(|c| i + EOCD_LEN + c as usize <= bytes.len())
            })
            .ok_or_else(|| damaged("no end-of-central-directory record"))?;
        let field16 = |off| u16_at(bytes, eocd + off).unwrap_or(0);
        let field32 = |off| u32_at(bytes, eocd + off).unwrap_or(0);
        let (disk, cd_disk) = (field16(4), field16(6));
        let mut total = u64::from(field16(10));
        let mut cd_size = u64::from(field32(12));
        let mut cd_offset = u64::from(field32(16));
        // The central directory must end before the records that follow it.
        let mut cd_limit = eocd;
        let mut multi_disk = disk != 0 || cd_disk != 0;

        // APPNOTE 4.3.15: a ZIP64 locator sits right before the EOCD and
        // points at the ZIP64 EOCD record (4.3.14), which holds 64-bit
        // counts and offsets. torch's writer emits it even for small files;
        // where present, its values replace the saturated 16/32-bit ones.
        if eocd >= ZIP64_LOCATOR_LEN
            && u32_at(bytes, eocd - ZIP64_LOCATOR_LEN) == Some(ZIP64_LOCATOR_SIG)
        {
            let loc = eocd - ZIP64_LOCATOR_LEN;
            let rec = u64_at(bytes, loc + 8)
                .and_then(|r| usize::try_from(r).ok())
                .filter(|&r| r.checked_add(ZIP64_EOCD_LEN).is_some_and(|end| end <= loc))
                .filter(|&r| u32_at(bytes, r) == Some(ZIP64_EOCD_SIG))
                .ok_or_else(|| damaged("the ZIP64 locator points outside the file"))?;
            multi_disk |=
                u32_at(bytes, loc + 4) != Some(0) || u32_at(bytes, loc + 16).is_some_and(|n| n > 1);
            multi_disk |= u32_at(bytes, rec + 16) != Some(0) || u32_at(bytes, rec + 20) != Some(0);
            total = u64_at(bytes, rec + 32).unwrap_or(0);
            cd_size = u64_at(bytes, rec + 40).unwrap_or(0);
            cd_offset = u64_at(bytes, rec + 48).unwrap_or(0);
            cd_limit = rec;
        }
        if multi_disk {
            return Err(QuillError::format(
                origin,
                "multi-part (spanned) zip archives are not supported; join the parts into one .pth file",
            ));
        }
        let cd_start = usize::try_from(cd_offset).ok().filter(|&s| s <= cd_limit);
        let cd_end = cd_start
            .zip(usize::try_from(cd_size).ok())
            .and_then(|(s, n)| s.checked_add(n))
            .filter(|&e| e <= cd_limit);
        let (Some(cd_start), Some(cd_end)) = (cd_start, cd_end) else {
            return Err(damaged(&format!(
                "the central directory ({cd_size} bytes at offset {cd_offset}) does not fit the {}-byte file",
                bytes.len()
            )));
        };
        let cd = &bytes[cd_start..cd_end];
        // Every central header is at least 46 bytes, so the directory's own
        // size caps the entry count: a record claiming 2^32 entries cannot
        // make us loop or allocate beyond what the buffer holds.
        let max_entries = (cd.len() / CENTRAL_LEN) as u64;
        if total > max_entries {
            return Err(damaged(&format!(
                "the central directory claims {total} entries but its {} bytes hold at most {max_entries}",
                cd.len()
            )));
        }
        let mut entries = BTreeMap::new();
        let mut p = 0usize;
        for index in 0..total {
            let broken = || {
                damaged(&format!(
                    "central directory entry {index} is cut short or malformed"
                ))
            };
            if u32_at(cd, p) != Some(CENTRAL_SIG) {
                return Err(broken());
            }
            let flags = u16_at(cd, p + 8).ok_or_else(broken)?;
            let method = u16_at(cd, p + 10).ok_or_else(broken)?;
            let mut compressed = u64::from(u32_at(cd, p + 20).ok_or_else(broken)?);
            let mut size = u64::from(u32_at(cd, p + 24).ok_or_else(broken)?);
            let name_len = usize::from(u16_at(cd, p + 28).ok_or_else(broken)?);
            let extra_len = usize::from(u16_at(cd, p + 30).ok_or_else(broken)?);
            let comment_len = usize::from(u16_at(cd, p + 32).ok_or_else(broken)?);
            let disk_start = u16_at(cd, p + 34).ok_or_else(broken)?;
            let mut local_offset = u64::from(u32_at(cd, p + 42).ok_or_else(broken)?);
            let name_start = p + CENTRAL_LEN;
            let extra_start = name_start + name_len;
            let next = extra_start + extra_len + comment_len;
            let name = cd.get(name_start..extra_start).ok_or_else(broken)?;
            let extra = cd
                .get(extra_start..extra_start + extra_len)
                .ok_or_else(broken)?;
            if next > cd.len() {
                return Err(broken());
            }
            // APPNOTE 4.5.3: the ZIP64 extended-information extra field
            // (id 0x0001) holds, in this order and only for the fields whose
            // 32-bit value is saturated, the uncompressed size, compressed
            // size, local header offset and disk number.
            let mut x = extra;
            while let (Some(id), Some(len)) = (u16_at(x, 0), u16_at(x, 2)) {
                let Some(body) = x.get(4..4 + usize::from(len)) else {
                    break;
                };
                if id == 0x0001 {
                    let mut q = 0;
                    let mut take = |field: &mut u64| {
                        if *field == 0xFFFF_FFFF {
                            if let Some(v) = u64_at(body, q) {
                                *field = v;
                                q += 8;
                            }
                        }
                    };
                    take(&mut size);
                    take(&mut compressed);
                    take(&mut local_offset);
                }
                x = &x[4 + usize::from(len)..];
            }
            if disk_start != 0 && disk_start != 0xFFFF {
                return Err(QuillError::format(
                    origin,
                    "multi-part (spanned) zip archives are not supported; join the parts into one .pth file",
                ));
            }
            let entry = Entry {
                flags,
                method,
                compressed,
                size,
                local_offset,
            };
            if entries.insert(name, entry).is_some() {
                return Err(QuillError::format(
                    origin,
                    format!(
                        "zip entry `{}` appears twice; the archive is ambiguous (damaged or hand-edited), re-save it with torch.save",
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
            p = next;
        }
        Ok(Zip {
            bytes,
            origin,
            entries,
        })
    }

    /// Finds the one `data.pkl` at the archive's top level and returns its
    /// name and the folder prefix (with trailing `/`) that its storages use.
    fn find_pickle(&self) -> Result<(String, String)> {
        let found: Vec<&[u8]> = self
            .entries
            .keys()
            .copied()
            .filter(|name| {
                name == b"data.pkl"
                    || name
                        .strip_suffix(b"/data.pkl")
                        .is_some_and(|folder| !folder.is_empty() && !folder.contains(&b'/'))
            })
            .collect();
        match found.as_slice() {
            [] => Err(self.bad(
                "zip archive without a `data.pkl` entry: not a PyTorch checkpoint (Quill reads torch.save output or safetensors)",
            )),
            [one] => {
                let name = std::str::from_utf8(one)
                    .map_err(|_| self.bad("the `data.pkl` entry name is not UTF-8 (damaged archive)"))?;
                let prefix = &name[..name.len() - "data.pkl".len()];
                Ok((name.to_string(), prefix.to_string()))
            }
            many => Err(self.bad(format!(
                "zip archive holds {} `data.pkl` entries (e.g. `{}`), so it is not one torch.save checkpoint; save one model per file",
                many.len(),
                String::from_utf8_lossy(many[0])
            ))),
        }
    }

    /// Locates a stored entry's bytes: `(start, len)` within the file.
    ///
    /// Only method 0 (stored) is accepted, so no decompression ever happens
    /// and nothing is allocated in proportion to a declared size.
    fn data(&self, name: &str) -> Result<(usize, usize)> {
        let entry = self.entries.get(name.as_bytes()).ok_or_else(|| {
            self.bad(format!(
                "zip entry `{name}` is missing (truncated or damaged checkpoint; fetch it again)"
            ))
        })?;
        self.locate(name, entry)
    }

    fn locate(&self, name: &str, entry: &Entry) -> Result<(usize, usize)> {
        let damaged = |what: String| {
            self.bad(format!(
                "zip entry `{name}`: {what} (truncated or damaged checkpoint; fetch it again)"
            ))
        };
        // APPNOTE 4.4.4, bit 0: encrypted.
        if entry.flags & 1 != 0 {
            return Err(self.bad(format!(
                "zip entry `{name}` is encrypted; Quill reads plain torch.save output, so decrypt or re-save the checkpoint"
            )));
        }
        let compressed_error = |method: u16| {
            self.bad(format!(
                "compressed zip entry `{name}` (method {method}): Quill reads torch.save output, which stores entries uncompressed; re-save with torch.save or convert to safetensors"
            ))
        };
        // APPNOTE 4.4.5: method 0 is "stored".
        if entry.method != 0 {
            return Err(compressed_error(entry.method));
        }
        if entry.compressed != entry.size {
            return Err(damaged(format!(
                "stored entry has compressed size {} but size {}",
                entry.compressed, entry.size
            )));
        }
        // APPNOTE 4.3.7: the data follows the local header, whose name and
        // extra-field lengths may differ from the central directory's (torch
        // pads the local extra field to align storages).
        let header = usize::try_from(entry.local_offset)
            .ok()
            .filter(|&h| u32_at(self.bytes, h) == Some(LOCAL_SIG))
            .ok_or_else(|| damaged(format!("no local header at offset {}", entry.local_offset)))?;
        let method = u16_at(self.bytes, header + 8).unwrap_or(0);
        if method != 0 {
            return Err(compressed_error(method));
        }
        let (Some(name_len), Some(extra_len)) = (
            u16_at(self.bytes, header + 26),
            u16_at(self.bytes, header + 28),
        ) else {
            return Err(damaged("local header is cut short".into()));
        };
        let start = header + LOCAL_LEN + usize::from(name_len) + usize::from(extra_len);
        let len = usize::try_from(entry.size).ok();
        match len.and_then(|len| start.checked_add(len)) {
            Some(end) if end <= self.bytes.len() => Ok((start, end - start)),
            _ => Err(damaged(format!(
                "its {} bytes at offset {start} run past the end of the {}-byte file",
                entry.size,
                self.bytes.len()
            ))),
        }
    }
}

// ---------------------------------------------------------------------------
// Pickle
// ---------------------------------------------------------------------------

/// Deepest MARK nesting accepted. A state dict nests three deep; Python's
/// own pickler cannot nest much beyond its recursion limit (~1000).
const MAX_MARK_DEPTH: usize = 1000;

/// Largest `data.pkl` accepted. The pickle only names tensors (about 150
/// bytes each), so 16 MiB is room for some 100,000 of them, while an RWKV
/// checkpoint has a few thousand. Every opcode adds at most one object to
/// the arena (tens of bytes), so this also bounds the interpreter's memory
/// whatever a hostile pickle does.
const MAX_PICKLE: usize = 16 << 20;

/// Most dimensions a tensor may have. Checked before a size or stride is
/// read, so a tensor claiming a million dimensions costs nothing to refuse.
const MAX_DIMS: usize = 32;

/// Index of an object in [`Machine::objs`].
type Id = usize;

/// The element type named by a storage class such as `torch.HalfStorage`.
#[derive(Debug, Clone, Copy)]
enum StorageType<'a> {
    Supported(DType),
    /// A real torch storage class whose dtype Quill does not read.
    Other(&'a str),
}

/// The few Python callables a state dict needs; all are interpreted here.
#[derive(Debug, Clone, Copy)]
enum Global<'a> {
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2` (true) or `_rebuild_tensor`.
    RebuildTensor {
        v2: bool,
    },
    /// `torch._utils._rebuild_parameter[_with_state]`: returns its tensor.
    RebuildParameter,
    Storage(StorageType<'a>),
}

/// Torch's storage classes (`torch/storage.py`, legacy typed storages).
const STORAGE_CLASSES: &[&str] = &[
    "DoubleStorage",
    "FloatStorage",
    "HalfStorage",
    "BFloat16Storage",
    "LongStorage",
    "IntStorage",
    "ShortStorage",
    "CharStorage",
    "ByteStorage",
    "BoolStorage",
    "ComplexDoubleStorage",
    "ComplexFloatStorage",
    "QUInt8Storage",
    "QInt8Storage",
    "QInt32Storage",
    "QUInt4x2Storage",
    "QUInt2x4Storage",
];

impl Global<'static> {
    /// The allow-list. Everything not here is refused by name.
    fn lookup(module: &str, name: &str) -> Option<Global<'static>> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor { v2: true },
            ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor { v2: false },
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                Global::RebuildParameter
            }
            ("torch", "BFloat16Storage") => Global::Storage(StorageType::Supported(DType::BF16)),
            ("torch", "HalfStorage") => Global::Storage(StorageType::Supported(DType::F16)),
            ("torch", "FloatStorage") => Global::Storage(StorageType::Supported(DType::F32)),
            ("torch", other) => {
                let class = STORAGE_CLASSES.iter().find(|c| **c == other)?;
                Global::Storage(StorageType::Other(class))
            }
            _ => return None,
        })
    }
}

/// One storage entry, resolved in the zip when its persistent id is loaded.
#[derive(Debug, Clone)]
struct Storage<'a> {
    kind: StorageType<'a>,
    /// The zip entry's name, borrowed from the file: a storage loaded a
    /// million times through the memo allocates no copy of it.
    entry: &'a str,
    start: usize,
    len: usize,
}

/// A `_rebuild_tensor[_v2]` call, kept as its arguments: the tensor is
/// checked when the tensor table is collected, so a call repeated through
/// the memo costs one small object, and only the tensor reported formats
/// an error message.
#[derive(Debug, Clone, Copy)]
struct Rebuild {
    /// The argument tuple.
    args: Id,
    /// `_rebuild_tensor_v2` rather than `_rebuild_tensor`.
    v2: bool,
}

/// A value built by the interpreter. Containers hold ids, not values, so
/// the memo shares objects like Python does and dropping the arena never
/// recurses, however deep a hostile pickle nests.
#[derive(Debug)]
enum Obj<'a> {
    None,
    // Booleans, floats and byte strings only fill slots (requires_grad,
    // metadata) that Quill ignores, so their values are not kept.
    Bool,
    Int(i64),
    Float,
    Str(&'a str),
    Bytes,
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Global(Global<'a>),
    Storage(Box<Storage<'a>>),
    /// A tensor to rebuild; it is checked (and any error reported with its
    /// name) once the state dict is complete.
    Tensor(Rebuild),
}

impl Obj<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool => "bool",
            Obj::Int(_) => "int",
            Obj::Float => "float",
            Obj::Str(_) => "str",
            Obj::Bytes => "bytes",
            Obj::Tuple(_) => "tuple",
            Obj::List(_) => "list",
            Obj::Dict(_) => "dict",
            Obj::Global(_) => "class or function",
            Obj::Storage(_) => "storage",
            Obj::Tensor(_) => "tensor",
        }
    }
}

/// The pickle virtual machine: a stack, a mark stack and a memo, over an
/// arena of objects. Every opcode consumes at least one input byte and adds
/// at most one object, stack slot or memo entry, so all of them, and the
/// total work, are bounded by the pickle's length.
struct Machine<'a, 'z> {
    data: &'a [u8],
    pos: usize,
    objs: Vec<Obj<'a>>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
    /// Storages already located, by the address and length of their key
    /// string (a key reused through the memo is the same slice), so a
    /// hostile pickle cannot make every BINPERSID format a long name.
    storages: HashMap<(usize, usize), (&'a str, usize, usize)>,
    zip: &'z Zip<'a>,
    prefix: &'z str,
    pkl_name: &'z str,
}

impl<'a> Machine<'a, '_> {
    fn err(&self, what: impl std::fmt::Display) -> QuillError {
        QuillError::format(
            self.zip.origin,
            format!(
                "`{}` at byte {}: {what}; the checkpoint's pickle is damaged or not a torch.save state dict",
                self.pkl_name, self.pos
            ),
        )
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let data: &'a [u8] = self.data;
        match self
            .pos
            .checked_add(n)
            .and_then(|end| data.get(self.pos..end))
        {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(self.err(format!("an argument of {n} bytes runs past the end"))),
        }
    }

    fn take_arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    /// Reads a length prefix and then that many bytes. The length is
    /// checked against the remaining input before anything is sliced.
    fn take_len(&mut self, len: u64) -> Result<&'a [u8]> {
        match usize::try_from(len) {
            Ok(n) => self.take(n),
            Err(_) => Err(self.err(format!("a length of {len} bytes runs past the end"))),
        }
    }

    fn take_line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err("a GLOBAL name has no terminating newline"));
        };
        let line = self.take(n + 1)?;
        std::str::from_utf8(&line[..n]).map_err(|_| self.err("a GLOBAL name is not UTF-8"))
    }

    fn str(&self, b: &'a [u8]) -> Result<&'a str> {
        std::str::from_utf8(b).map_err(|_| self.err("a string is not valid UTF-8"))
    }

    /// Adds a new object to the arena and pushes it.
    fn push(&mut self, obj: Obj<'a>) {
        self.objs.push(obj);
        self.stack.push(self.objs.len() - 1);
    }

    /// Pops one value; a pop may not reach below the innermost MARK
    /// (Python keeps marked-off items on a separate stack).
    fn pop(&mut self) -> Result<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.pop().expect("checked non-empty"))
    }

    fn top(&self) -> Result<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        Ok(*self.stack.last().expect("checked non-empty"))
    }

    /// Pops everything above the innermost MARK, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Id>> {
        let Some(mark) = self.marks.pop() else {
            return Err(self.err("an opcode needs a MARK but none is open"));
        };
        Ok(self.stack.split_off(mark))
    }

    fn put(&mut self, index: u64) -> Result<()> {
        let top = self.top()?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn get(&mut self, index: u64) -> Result<()> {
        let id = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.err(format!("memo entry {index} is read before it is written")))?;
        self.stack.push(id);
        Ok(())
    }

    fn int(&mut self, v: i64) {
        self.push(Obj::Int(v));
    }

    /// LONG1/LONG4: little-endian two's complement of `n` bytes.
    fn long(&mut self, n: u64) -> Result<()> {
        let bytes = self.take_len(n)?;
        if bytes.len() > 8 {
            return Err(self.err(format!("an integer of {} bytes is too large", bytes.len())));
        }
        let mut buf = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
            [0xFF; 8]
        } else {
            [0; 8]
        };
        buf[..bytes.len()].copy_from_slice(bytes);
        self.int(i64::from_le_bytes(buf));
        Ok(())
    }

    fn global(&mut self, module: &'a str, name: &'a str) -> Result<()> {
        let Some(g) = Global::lookup(module, name) else {
            return Err(QuillError::format(
                self.zip.origin,
                format!(
                    "refusing pickle global `{module}.{name}` in `{}`: Quill only rebuilds tensors from a checkpoint and never runs code from it; convert the file to safetensors with a tool you trust",
                    self.pkl_name
                ),
            ));
        };
        self.push(Obj::Global(g));
        Ok(())
    }

    /// Runs until STOP and returns the object it yields.
    fn run(&mut self) -> Result<Id> {
        loop {
            let Some(&op) = self.data.get(self.pos) else {
                return Err(self.err("the pickle ends without a STOP opcode"));
            };
            self.pos += 1;
            match op {
                // PROTO: protocol number; 0–5 are defined.
                0x80 => {
                    let [v] = self.take_arr::<1>()?;
                    if v > 5 {
                        return Err(self.err(format!("unknown pickle protocol {v}")));
                    }
                }
                // FRAME (protocol 4): an 8-byte frame length, a hint only.
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'}' => self.push(Obj::Dict(Vec::new())),
                b']' => self.push(Obj::List(Vec::new())),
                b')' => self.push(Obj::Tuple(Vec::new())),
                b'N' => self.push(Obj::None),
                // NEWTRUE, NEWFALSE.
                0x88 | 0x89 => self.push(Obj::Bool),
                b'(' => {
                    if self.marks.len() >= MAX_MARK_DEPTH {
                        return Err(self.err(format!("MARKs nest more than {MAX_MARK_DEPTH} deep")));
                    }
                    self.marks.push(self.stack.len());
                }
                // POP, POP_MARK, DUP.
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.stack.push(top);
                }
                // BINPUT, LONG_BINPUT, MEMOIZE.
                b'q' => {
                    let [i] = self.take_arr::<1>()?;
                    self.put(u64::from(i))?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.take_arr()?);
                    self.put(u64::from(i))?;
                }
                0x94 => self.put(self.memo.len() as u64)?,
                // BINGET, LONG_BINGET.
                b'h' => {
                    let [i] = self.take_arr::<1>()?;
                    self.get(u64::from(i))?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.take_arr()?);
                    self.get(u64::from(i))?;
                }
                // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8.
                0x8c | b'X' | 0x8d => {
                    let len = match op {
                        0x8c => u64::from(self.take_arr::<1>()?[0]),
                        b'X' => u64::from(u32::from_le_bytes(self.take_arr()?)),
                        _ => u64::from_le_bytes(self.take_arr()?),
                    };
                    let b = self.take_len(len)?;
                    let s = self.str(b)?;
                    self.push(Obj::Str(s));
                }
                // SHORT_BINSTRING, BINSTRING: Python 2 `str`; torch.load
                // decodes them as UTF-8.
                b'U' | b'T' => {
                    let len = if op == b'U' {
                        i64::from(self.take_arr::<1>()?[0])
                    } else {
                        i64::from(i32::from_le_bytes(self.take_arr()?))
                    };
                    let len = u64::try_from(len).map_err(|_| self.err("negative string length"))?;
                    let b = self.take_len(len)?;
                    let s = self.str(b)?;
                    self.push(Obj::Str(s));
                }
                // SHORT_BINBYTES, BINBYTES, BINBYTES8.
                b'C' | b'B' | 0x8e => {
                    let len = match op {
                        b'C' => u64::from(self.take_arr::<1>()?[0]),
                        b'B' => u64::from(u32::from_le_bytes(self.take_arr()?)),
                        _ => u64::from_le_bytes(self.take_arr()?),
                    };
                    self.take_len(len)?;
                    self.push(Obj::Bytes);
                }
                // BININT, BININT1, BININT2, LONG1, LONG4.
                b'J' => {
                    let v = i32::from_le_bytes(self.take_arr()?);
                    self.int(i64::from(v));
                }
                b'K' => {
                    let [v] = self.take_arr::<1>()?;
                    self.int(i64::from(v));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take_arr()?);
                    self.int(i64::from(v));
                }
                0x8a => {
                    let [n] = self.take_arr::<1>()?;
                    self.long(u64::from(n))?;
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.take_arr()?);
                    let n = u64::try_from(n).map_err(|_| self.err("negative integer length"))?;
                    self.long(n)?;
                }
                // BINFLOAT: a big-endian IEEE double.
                b'G' => {
                    self.take(8)?;
                    self.push(Obj::Float);
                }
                // TUPLE (from the mark), TUPLE1–3.
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = vec![0; n];
                    for slot in items.iter_mut().rev() {
                        *slot = self.pop()?;
                    }
                    self.push(Obj::Tuple(items));
                }
                // LIST and DICT (from the mark).
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push(Obj::Dict(pairs));
                }
                // GLOBAL: "module\nname\n"; STACK_GLOBAL: two strings.
                b'c' => {
                    let module = self.take_line()?;
                    let name = self.take_line()?;
                    self.global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Obj::Str(module), Obj::Str(name)) = (&self.objs[module], &self.objs[name])
                    else {
                        return Err(self.err("STACK_GLOBAL needs two strings"));
                    };
                    let (module, name) = (*module, *name);
                    self.global(module, name)?;
                }
                // REDUCE: callable(*args); NEWOBJ: cls.__new__(cls, *args).
                // Both only ever reach the allow-listed globals.
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let obj = self.call(callable, args)?;
                    self.push(obj);
                }
                // BINPERSID: torch's persistent id names a storage.
                b'Q' => {
                    let pid = self.pop()?;
                    let obj = self.persistent_load(pid)?;
                    self.push(obj);
                }
                // BUILD: sets an object's state. Dicts and tensors carry
                // only metadata there (an OrderedDict's `_metadata`), so the
                // state is dropped.
                b'b' => {
                    let _state = self.pop()?;
                    let target = self.top()?;
                    if !matches!(self.objs[target], Obj::Dict(_) | Obj::Tensor(_)) {
                        return Err(self.err(format!(
                            "BUILD on a {}, which a state dict never needs",
                            self.objs[target].kind()
                        )));
                    }
                }
                // SETITEM, SETITEMS.
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![(key, value)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.set_items(pairs)?;
                }
                // APPEND, APPENDS.
                b'a' => {
                    let value = self.pop()?;
                    self.append(vec![value])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                _ => {
                    return Err(self.err(format!(
                        "unsupported pickle opcode 0x{op:02x} (Quill reads the subset torch.save writes)"
                    )));
                }
            }
        }
    }

    fn pairs(&self, items: Vec<Id>) -> Result<Vec<(Id, Id)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("a dict is built from an odd number of items"));
        }
        Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
    }

    fn set_items(&mut self, pairs: Vec<(Id, Id)>) -> Result<()> {
        let target = self.top()?;
        match &mut self.objs[target] {
            Obj::Dict(d) => {
                d.extend(pairs);
                Ok(())
            }
            other => {
                let kind = other.kind();
                Err(self.err(format!("SETITEM(S) on a {kind}, not a dict")))
            }
        }
    }

    fn append(&mut self, items: Vec<Id>) -> Result<()> {
        let target = self.top()?;
        match &mut self.objs[target] {
            Obj::List(l) => {
                l.extend(items);
                Ok(())
            }
            other => {
                let kind = other.kind();
                Err(self.err(format!("APPEND(S) on a {kind}, not a list")))
            }
        }
    }

    fn call(&mut self, callable: Id, args_id: Id) -> Result<Obj<'a>> {
        let Obj::Global(g) = self.objs[callable] else {
            return Err(self.err(format!(
                "REDUCE calls a {}, which is not a function",
                self.objs[callable].kind()
            )));
        };
        let Obj::Tuple(args) = &self.objs[args_id] else {
            return Err(self.err("REDUCE arguments are not a tuple"));
        };
        match g {
            Global::OrderedDict if args.is_empty() => Ok(Obj::Dict(Vec::new())),
            Global::OrderedDict => Err(self.err("OrderedDict is built with arguments")),
            Global::RebuildParameter => {
                let tensor = args.first().map(|&t| &self.objs[t]);
                match tensor {
                    Some(Obj::Tensor(t)) => Ok(Obj::Tensor(*t)),
                    _ => Err(self.err("_rebuild_parameter without a tensor")),
                }
            }
            Global::RebuildTensor { v2 } => Ok(Obj::Tensor(Rebuild { args: args_id, v2 })),
            Global::Storage(_) => Err(self.err("a storage class is called directly")),
        }
    }

    /// torch's `persistent_load`: the id is the tuple
    /// `('storage', storage_type, key, location, numel)`; the bytes live in
    /// the zip entry `<folder>/data/<key>`.
    fn persistent_load(&mut self, pid: Id) -> Result<Obj<'a>> {
        let Obj::Tuple(items) = &self.objs[pid] else {
            return Err(self.err("a persistent id is not a tuple"));
        };
        let field = |i: usize| items.get(i).map(|&id| &self.objs[id]);
        let (
            Some(Obj::Str("storage")),
            Some(Obj::Global(Global::Storage(kind))),
            Some(Obj::Str(key)),
        ) = (field(0), field(1), field(2))
        else {
            return Err(
                self.err("a persistent id is not ('storage', storage_type, key, location, numel)")
            );
        };
        let (kind, key) = (*kind, *key);
        let slot = (key.as_ptr() as usize, key.len());
        let (entry, start, len) = match self.storages.get(&slot) {
            Some(&found) => found,
            None => {
                let name = format!("{}data/{key}", self.prefix);
                let (start, len) = self.zip.data(&name)?;
                let (&stored, _) = self
                    .zip
                    .entries
                    .get_key_value(name.as_bytes())
                    .expect("data() found it");
                // Same bytes as `name`, which is UTF-8.
                let entry = std::str::from_utf8(stored).expect("UTF-8 like the key");
                self.storages.insert(slot, (entry, start, len));
                (entry, start, len)
            }
        };
        Ok(Obj::Storage(Box::new(Storage {
            kind,
            entry,
            start,
            len,
        })))
    }
}

fn usize_of(objs: &[Obj<'_>], id: Id) -> Option<usize> {
    match objs[id] {
        Obj::Int(v) => usize::try_from(v).ok(),
        _ => None,
    }
}

/// A name from the file as shown in a message: at most 80 characters, so
/// a 64 KiB entry name cannot make the message unreadable.
fn shorten(name: &str) -> std::borrow::Cow<'_, str> {
    match name.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &name[..cut]).into(),
        None => name.into(),
    }
}

/// A tuple or list of non-negative ints, of at most [`MAX_DIMS`] items.
fn usizes_of(objs: &[Obj<'_>], id: Id) -> Option<Vec<usize>> {
    match &objs[id] {
        Obj::Tuple(items) | Obj::List(items) => {
            if items.len() > MAX_DIMS {
                return None;
            }
            items.iter().map(|&i| usize_of(objs, i)).collect()
        }
        _ => None,
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride,
/// requires_grad, backward_hooks[, metadata])` or the older
/// `_rebuild_tensor(storage, storage_offset, size, stride)`.
///
/// `storage_offset` counts elements. The tensor must be row-major
/// contiguous (it is read in place) and lie within its storage.
fn rebuild_tensor(
    objs: &[Obj<'_>],
    args: &[Id],
    v2: bool,
) -> std::result::Result<TensorInfo, String> {
    let arity_ok = if v2 {
        (6..=7).contains(&args.len())
    } else {
        args.len() == 4
    };
    if !arity_ok {
        return Err(format!(
            "the pickle rebuilds it with {} arguments, not torch's (damaged file)",
            args.len()
        ));
    }
    let Obj::Storage(storage) = &objs[args[0]] else {
        return Err("the pickle gives it no storage (damaged file)".into());
    };
    let dtype = match storage.kind {
        StorageType::Supported(d) => d,
        StorageType::Other(class) => {
            return Err(format!(
                "dtype {class} is not supported (Quill reads float32, float16 and bfloat16 weights); convert the checkpoint, e.g. with tensor.bfloat16()"
            ))
        }
    };
    let (Some(offset), Some(shape), Some(stride)) = (
        usize_of(objs, args[1]),
        usizes_of(objs, args[2]),
        usizes_of(objs, args[3]),
    ) else {
        return Err(
            "its offset, size or stride is not a list of at most 32 non-negative integers (damaged file)"
                .into(),
        );
    };
    if stride.len() != shape.len() {
        return Err(format!(
            "size {shape:?} and stride {stride:?} differ in length (damaged file)"
        ));
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("size {shape:?} overflows (damaged file)"))?;
    // Row-major contiguity: each stride is the product of the sizes
    // after it. Torch ignores the stride of a dimension of size 1, and
    // an empty tensor has no layout to speak of.
    if numel > 0 {
        let mut expected = 1usize;
        for (&size, &st) in shape.iter().zip(&stride).rev() {
            if size != 1 && st != expected {
                return Err(format!(
                    "stride {stride:?} for size {shape:?} is not row-major contiguous; Quill reads tensors in place, so re-save with contiguous tensors (e.g. {{k: v.contiguous() for k, v in sd.items()}})"
                ));
            }
            expected = expected.saturating_mul(size);
        }
    }
    let elem = dtype.size();
    if storage.len % elem != 0 {
        return Err(format!(
            "storage `{}` holds {} bytes, not a whole number of {dtype} elements (damaged file)",
            shorten(storage.entry),
            storage.len
        ));
    }
    let storage_numel = storage.len / elem;
    match offset.checked_add(numel) {
        Some(end) if end <= storage_numel => {}
        _ => {
            return Err(format!(
                "storage shorter than its tensor: `{}` holds {storage_numel} {dtype} elements but the tensor needs {numel} from element {offset} (truncated or damaged file)",
                shorten(storage.entry)
            ))
        }
    }
    // In bounds: offset * elem <= storage.len, so this cannot overflow.
    Ok(TensorInfo {
        dtype,
        shape,
        start: storage.start + offset * elem,
    })
}

/// Turns the unpickled root into the tensor table: a dict (or OrderedDict)
/// of name → tensor; non-tensor values are skipped. A dict holding no
/// tensors itself but one nested dict of only tensors (`{"state_dict": …}`,
/// `{"model": …}`) is unwrapped one level.
fn collect_tensors(
    objs: &[Obj<'_>],
    root: Id,
    origin: &str,
) -> Result<BTreeMap<String, TensorInfo>> {
    let Obj::Dict(items) = &objs[root] else {
        return Err(QuillError::format(
            origin,
            format!(
                "the checkpoint holds a {}, not a dict of tensors; save model.state_dict() with torch.save",
                objs[root].kind()
            ),
        ));
    };
    type Found<'o> = Vec<(&'o str, Rebuild)>;
    let tensors_in = |items: &[(Id, Id)]| -> Found<'_> {
        items
            .iter()
            .filter_map(|&(k, v)| match (&objs[k], &objs[v]) {
                (Obj::Str(name), Obj::Tensor(t)) => Some((*name, *t)),
                _ => None,
            })
            .collect()
    };
    let mut found = tensors_in(items);
    if found.is_empty() {
        // Nested dicts whose values are all tensors. Each dict is looked
        // at once: through the memo, a hostile root could name the same
        // large dict under a million keys.
        let mut seen = std::collections::HashSet::new();
        let mut nested: Vec<(&str, Found<'_>)> = items
            .iter()
            .filter(|&&(_, v)| seen.insert(v))
            .filter_map(|&(k, v)| match (&objs[k], &objs[v]) {
                (Obj::Str(key), Obj::Dict(inner)) => {
                    let t = tensors_in(inner);
                    (!t.is_empty() && t.len() == inner.len()).then_some((*key, t))
                }
                _ => None,
            })
            .collect();
        let preferred = ["state_dict", "model", "module", "params"];
        let pick = if nested.len() == 1 {
            Some(0)
        } else {
            preferred
                .iter()
                .find_map(|p| nested.iter().position(|(k, _)| k == p))
        };
        match pick {
            Some(i) => found = nested.swap_remove(i).1,
            None => {
                return Err(QuillError::format(
                    origin,
                    "the checkpoint's dict holds no tensors (nor one nested dict of tensors); save model.state_dict() with torch.save",
                ))
            }
        }
    }
    let mut out = BTreeMap::new();
    // One check per distinct call, however often the memo repeats it.
    let mut checked: HashMap<Id, TensorInfo> = HashMap::new();
    for (name, t) in found {
        let result = match checked.get(&t.args) {
            Some(info) => Ok(info.clone()),
            None => {
                // REDUCE only makes a Rebuild from a tuple, and a tuple
                // never changes; still, no panic on a file's say-so.
                match &objs[t.args] {
                    Obj::Tuple(args) => rebuild_tensor(objs, args, t.v2),
                    _ => Err("the pickle rebuilds it from no argument tuple (damaged file)".into()),
                }
            }
        };
        match result {
            Ok(info) => {
                checked.insert(t.args, info.clone());
                out.insert(name.to_string(), info);
            }
            Err(reason) => {
                return Err(QuillError::format(
                    origin,
                    format!("tensor `{name}`: {reason}"),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a pickle body (after PROTO 2) with no zip behind it.
    fn run(body: &[u8]) -> (Result<Id>, Vec<String>) {
        let zip = Zip {
            bytes: &[],
            origin: "unit",
            entries: BTreeMap::new(),
        };
        let mut data = vec![0x80, 2];
        data.extend_from_slice(body);
        let mut m = Machine {
            data: &data,
            pos: 0,
            objs: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            storages: HashMap::new(),
            zip: &zip,
            prefix: "archive/",
            pkl_name: "archive/data.pkl",
        };
        let r = m.run();
        let shown = m.objs.iter().map(|o| format!("{o:?}")).collect();
        (r, shown)
    }

    #[test]
    fn long1_is_twos_complement() {
        for (bytes, want) in [
            (&[0x8a, 0][..], 0i64),
            (&[0x8a, 1, 0xFF], -1),
            (&[0x8a, 2, 0x00, 0x80], -32768),
            (&[0x8a, 2, 0xFF, 0x00], 255),
            (&[0x8a, 8, 0, 0, 0, 0, 0, 0, 0, 0x80], i64::MIN),
        ] {
            let mut body = bytes.to_vec();
            body.push(b'.');
            let (r, shown) = run(&body);
            assert_eq!(shown[r.unwrap()], format!("Int({want})"));
        }
        let (r, _) = run(&[0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'.']);
        assert!(r.unwrap_err().to_string().contains("too large"));
    }

    #[test]
    fn memo_shares_objects_like_python() {
        // l = []; memo[0] = l; l.append(memo[0]); l.append(1) → l has 2 items
        // and the first is l itself.
        let (r, shown) = run(&[b']', b'q', 0, b'h', 0, b'a', b'K', 1, b'a', b'.']);
        let id = r.unwrap();
        assert_eq!(shown[id], format!("List([{id}, 1])"));
    }

    #[test]
    fn pops_never_reach_below_a_mark() {
        let (r, _) = run(b"N(0.");
        assert!(r.unwrap_err().to_string().contains("stack underflow"));
        let (r, _) = run(&[b'N', b'(', 0x85, b'.']);
        assert!(r.unwrap_err().to_string().contains("stack underflow"));
    }

    #[test]
    fn allow_list() {
        assert!(Global::lookup("torch._utils", "_rebuild_tensor_v2").is_some());
        assert!(Global::lookup("torch", "BFloat16Storage").is_some());
        assert!(matches!(
            Global::lookup("torch", "LongStorage"),
            Some(Global::Storage(StorageType::Other("LongStorage")))
        ));
        for (m, n) in [
            ("torch", "load"),
            ("torch", "Storage\nos"),
            ("builtins", "eval"),
            ("__builtin__", "set"),
            ("torch.storage", "_load_from_bytes"),
            ("collections", "defaultdict"),
        ] {
            assert!(Global::lookup(m, n).is_none(), "{m}.{n}");
        }
    }

    #[test]
    fn zip_needs_an_end_record() {
        for bytes in [&b""[..], b"PK\x03\x04", &[0u8; 100]] {
            assert!(Zip::parse(bytes, "unit").is_err());
        }
        // An empty archive (just the EOCD) parses, and has no data.pkl.
        let mut eocd = vec![0u8; 22];
        eocd[..4].copy_from_slice(&EOCD_SIG.to_le_bytes());
        let zip = Zip::parse(&eocd, "unit").unwrap();
        assert!(zip.entries.is_empty());
        assert!(zip.find_pickle().is_err());
    }
}
