//! Runs `quill::bench::run` and prints the report as JSON (one object per
//! line), until the `quill bench` subcommand is wired.
//!
//! ```text
//! cargo run --release --example bench -- --synthetic 0.4b --dtype bf16 --threads 2
//! cargo run --release --example bench -- --model FILE [--dtype int8] [--prompt 512] [--gen 128]
//! ```

use quill::bench::{self, BenchOptions};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = BenchOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => opts.model = Some(value()?.into()),
            "--synthetic" => opts.synthetic = Some(value()?.parse()?),
            "--dtype" => opts.dtype = Some(value()?.parse()?),
            "--threads" => opts.threads = value()?.parse()?,
            "--prompt" => opts.prompt_tokens = value()?.parse()?,
            "--gen" => opts.gen_tokens = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if opts.model.is_none() && opts.synthetic.is_none() {
        opts.synthetic = Some("0.4b".parse()?);
    }
    let report = bench::run(&opts, |phase| eprintln!("bench: {phase}"))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
