//! `quill bench`: prefill and decode speed as ratios to the machine's own
//! measured limits (read bandwidth, FMA peak).

use std::path::PathBuf;

use anyhow::Result;
use quill::bench::{self, BenchOptions, PrefetchReport, SyntheticSize};
use quill::kernels::WeightDtype;

/// Arguments of `quill bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Model file to measure (default: --synthetic 0.4b).
    #[arg(short, long, value_name = "FILE", conflicts_with = "synthetic")]
    model: Option<PathBuf>,
    /// Random weights at a released RWKV-7 shape, built in memory: 0.1b, 0.4b or 1.5b.
    #[arg(long, value_name = "SIZE")]
    synthetic: Option<SyntheticSize>,
    /// Weight dtype: f32, f16, bf16 or int8 (default: as stored; bf16 for synthetic).
    #[arg(long)]
    dtype: Option<WeightDtype>,
    /// Kernel threads (default: physical cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Prompt tokens for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    prompt: usize,
    /// Generated tokens for the decode measurement.
    #[arg(long, default_value_t = 128)]
    gen: usize,
    /// Measure N rounds (prefill, decode, then the probes, each round) and
    /// report medians: on a shared machine bandwidth drifts within minutes,
    /// and each round's ratios compare the engine with the machine as it
    /// was then.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=100))]
    rounds: u16,
    /// Also measure the same model with this dtype in every round (the two
    /// decode in alternating blocks of 8 tokens) and report how many times
    /// faster the main dtype is (e.g. --dtype int8 --compare bf16): both
    /// measured under the same machine conditions, which separate runs are
    /// not.
    #[arg(long, value_name = "DTYPE")]
    compare: Option<WeightDtype>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    // 0 asks the library for one thread per physical core.
    let threads = a.threads.map(super::load::check_threads).transpose()?;
    let opts = BenchOptions {
        synthetic: if a.model.is_none() {
            Some(a.synthetic.unwrap_or(SyntheticSize::B0p4))
        } else {
            None
        },
        model: a.model,
        dtype: a.dtype,
        threads: threads.unwrap_or(0),
        prompt_tokens: a.prompt,
        gen_tokens: a.gen,
        rounds: a.rounds as usize,
        compare: a.compare,
    };
    let r = bench::run(&opts, |phase| eprintln!("bench: {phase}"))?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "model              {} ({}, {} threads, {} kernels)",
        r.model, r.dtype, r.threads, r.kernels
    );
    println!(
        "prefill            {:.1} tokens/s ({} tokens)",
        r.prefill_tokens_per_s, r.prompt_tokens
    );
    println!(
        "decode             {:.2} tokens/s ({} tokens)",
        r.decode_tokens_per_s, r.gen_tokens
    );
    println!(
        "weights per token  {:.1} MB",
        r.bytes_per_token as f64 / 1e6
    );
    println!(
        "bandwidth          {:.1} GB/s of {:.1} GB/s measured read bandwidth = {:.0}%",
        r.bandwidth_gbs,
        r.probe_bandwidth_gbs,
        100.0 * r.bandwidth_ratio
    );
    println!(
        "prefill compute    {:.1} GFLOP/s of {:.1} GFLOP/s measured FMA peak = {:.0}%",
        r.prefill_gflops,
        r.probe_peak_gflops,
        100.0 * r.peak_ratio
    );
    println!("decode prefetch    {}", prefetch_line(&r.prefetch));
    if r.rounds > 1 {
        let pct = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{:.0}%", 100.0 * x))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "rounds             {} (medians above); bandwidth ratios {}; peak ratios {}",
            r.rounds,
            pct(&r.bandwidth_ratio_rounds),
            pct(&r.peak_ratio_rounds)
        );
    }
    if let Some(c) = &r.compare {
        let times = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}×"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "compared with {:<5}decode {:.2} tokens/s ({:.0}% of the probe): {} decodes {:.2}× as fast{}",
            c.dtype,
            c.decode_tokens_per_s,
            100.0 * c.bandwidth_ratio,
            r.dtype,
            c.decode_speedup,
            if r.rounds > 1 {
                format!(" (rounds {})", times(&c.decode_speedup_rounds))
            } else {
                String::new()
            }
        );
        println!(
            "                   prefill {:.1} tokens/s ({:.0}% of the peak): {} prefills {:.2}× as fast",
            c.prefill_tokens_per_s,
            100.0 * c.peak_ratio,
            r.dtype,
            c.prefill_speedup
        );
        println!("                   prefetch {}", prefetch_line(&c.prefetch));
    }
    println!(
        "peak memory        {:.1} MB resident ({:.2}× the weights' {:.1} MB)",
        r.peak_rss_bytes as f64 / 1e6,
        r.rss_ratio,
        r.file_bytes as f64 / 1e6
    );
    Ok(())
}

/// The decode prefetch setting in words: e.g. `8 KiB ahead (tuned: with
/// it 1.41× as fast as without)`, `off (QUILL_PREFETCH=off)`.
fn prefetch_line(p: &PrefetchReport) -> String {
    let setting = if p.prefetch_bytes == 0 {
        "off".to_string()
    } else {
        format!("{} KiB ahead", p.prefetch_bytes / 1024)
    };
    match (p.prefetch_mode.as_str(), p.prefetch_speedup) {
        ("auto", Some(x)) => format!("{setting} (tuned: with it {x:.2}× as fast as without)"),
        ("auto", None) => format!("{setting} (not tuned: too few decode steps for a trial)"),
        (fixed, _) => format!("{setting} (QUILL_PREFETCH={fixed})"),
    }
}
