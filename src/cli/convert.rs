//! `quill convert`: any supported checkpoint to safetensors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use quill::model::convert::write_converted;
use quill::model::weights::DType;
use quill::model::Model;
use quill::tokenizer::TokenizerKind;

use super::PathContext;

/// Arguments of `quill convert`.
#[derive(clap::Args)]
pub struct Args {
    /// Input checkpoint (.pth or .safetensors).
    input: PathBuf,
    /// Output .safetensors file (written atomically).
    output: PathBuf,
    /// Element type of the output: f32, f16 or bf16 (default: as stored);
    /// or int8: the weight matrices quantised as `--dtype int8` does at
    /// load, everything else as stored (a 0.4B bf16 file: 905 → 547 MB).
    #[arg(long, value_parser = parse_dtype)]
    dtype: Option<DType>,
    /// Tokenizer to record in the metadata (default: inferred from the model).
    #[arg(long)]
    tokenizer: Option<TokenizerKind>,
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(DType::F32),
        "f16" | "fp16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "int8" | "i8" => Ok(DType::I8),
        other => Err(format!(
            "unknown dtype `{other}` (use f32, f16, bf16 or int8)"
        )),
    }
}

pub fn run(a: Args) -> Result<()> {
    if same_file(&a.input, &a.output) {
        anyhow::bail!(
            "{} is the input file itself: converting would overwrite it; choose another output file",
            a.output.display()
        );
    }
    super::check_output_path(&a.output, "the output")?;
    // Loading validates the checkpoint fully before anything is written.
    // With the scalar kernels, which read matrices in place, row-major:
    // the SIMD sets' load would copy every matrix into panels first, memory
    // this one-off pass has no use for (0.4B bf16 to int8, peak resident
    // by GNU time: 1,039,692 KiB loaded with the AVX2 set's copies,
    // 311,180 KiB with the scalar set's, `write_converted` handing each
    // tensor's pages back once written; the same output file).
    let model = quill::kernels::with_kernels("scalar", || Model::load(&a.input))?
        .path_context("loading", &a.input)?;
    let tokenizer = super::load::choose_tokenizer(&model, a.tokenizer)?;
    let info = model.info();
    let mut meta: BTreeMap<String, String> = info.metadata.clone();
    meta.insert("tokenizer".into(), tokenizer.to_string());
    meta.insert("rwkv_version".into(), info.version.number().to_string());
    meta.insert(
        "converted_by".into(),
        format!("quill {}", env!("CARGO_PKG_VERSION")),
    );
    let int8: BTreeSet<String> = model.matrix_tensors().iter().cloned().collect();
    if a.dtype == Some(DType::I8) {
        meta.insert(
            "quill.int8_block".into(),
            quill::kernels::I8_BLOCK.to_string(),
        );
    }
    write_converted(model.weight_file(), &a.output, a.dtype, &int8, &meta)?;
    eprintln!(
        "wrote {} ({}, {} tensors, {})",
        a.output.display(),
        info.version,
        model.weight_file().tensors.len(),
        a.dtype
            .map(|d| d.to_string())
            .unwrap_or_else(|| "dtypes as stored".into())
    );
    Ok(())
}

/// Whether `output` names the file `input` is (spelled another way, or
/// through a symbolic link): the output is written by renaming over it, so
/// the input would be gone. An output that does not exist yet is compared
/// by its folder's real path.
fn same_file(input: &Path, output: &Path) -> bool {
    let Ok(input) = std::fs::canonicalize(input) else {
        // Loading reports a missing input.
        return false;
    };
    let output = std::fs::canonicalize(output).ok().or_else(|| {
        let name = output.file_name()?;
        let folder = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Some(std::fs::canonicalize(folder).ok()?.join(name))
    });
    output.is_some_and(|o| o == input)
}
