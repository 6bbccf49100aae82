//! Temporary: prefill only, for profiling.
use quill::kernels;
use quill::model::{LoadOptions, Logits, Model};
fn main() {
    kernels::set_threads(2);
    let int8 = std::env::args().nth(1).as_deref() == Some("int8");
    let file = quill::bench::synthetic_model(
        quill::bench::SyntheticSize::B0p4,
        quill::model::weights::DType::BF16,
        1,
    )
    .unwrap();
    let model = Model::from_file_with(
        file,
        &LoadOptions {
            dtype: if int8 {
                Some(kernels::WeightDtype::Int8)
            } else {
                None
            },
        },
    )
    .unwrap();
    let toks: Vec<u32> = (0..512u32).map(|i| (i * 7919) % 65536).collect();
    eprintln!("go");
    let t0 = std::time::Instant::now();
    let n: usize = std::env::var("N").map(|s| s.parse().unwrap()).unwrap_or(6);
    for _ in 0..n {
        let mut st = model.new_state();
        model.forward(&toks, &mut st, Logits::Last).unwrap();
    }
    let flops = 2.0 * model.block_macs_per_token() as f64 * 512.0 * n as f64;
    eprintln!(
        "{:.1} tok/s {:.1} GFLOP/s",
        (512 * n) as f64 / t0.elapsed().as_secs_f64(),
        flops / t0.elapsed().as_secs_f64() / 1e9
    );
}
