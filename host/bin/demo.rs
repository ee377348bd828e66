//! `flashmla-etap demo` and `flashmla-etap check`: the README's main command (one
//! DeepSeek-V3-shaped decode step checked against the float64 reference, timed through a
//! CUDA graph) and the correctness grid on the GPU.

use flashmla_etap::check::{self, Case, CaseResult, LSE_TOLERANCE};
use flashmla_etap::decode::{DecodeConfig, DecodePlan, Decoder, KvCache, Precision};
use flashmla_etap::reference::{generate, Dtype, MlaShape, SplitMix64, D_QK, D_V};
use flashmla_etap::{Error, Gpu, GpuTimer, Graph};
use half::bf16;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

/// Exit code when there is no usable GPU (distinct from a failed check, 1).
pub const EXIT_NO_GPU: u8 = 2;

/// Options of `demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Requests in the batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Query heads (DeepSeek-V3's 128 split 8 ways by tensor parallelism: 16).
    #[arg(long, default_value_t = 16)]
    pub heads: usize,
    /// Cached tokens per request.
    #[arg(long, default_value_t = 8192)]
    pub seqlen: i32,
    /// Draw each length uniformly from [seqlen/2, seqlen] instead of all equal.
    #[arg(long)]
    pub varlen: bool,
    /// Decode calls captured in the CUDA graph.
    #[arg(long, default_value_t = 20)]
    pub calls: usize,
    /// Timed replays of the graph (the median is reported).
    #[arg(long, default_value_t = 15)]
    pub replays: usize,
    /// Seed of the generated inputs.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// How P is rounded for the P·V GEMM: `accurate` (two 16-bit terms, the library's
    /// default) or `fast` (one, as FlashMLA).
    #[arg(long, value_enum, default_value_t = Precision::Accurate)]
    pub precision: Precision,
}

/// Options of `check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// A small subset of the grid (every 7th case plus h_kv = 2 and f32 output: about 30).
    #[arg(long)]
    pub quick: bool,
    /// Only the cases whose description contains this text (e.g. "fp16", "h_q=128").
    #[arg(long)]
    pub filter: Option<String>,
}

/// Explains why nothing can run here and how to run it on a GPU machine.
fn no_gpu(what: &str, e: &Error) -> ExitCode {
    eprintln!("cannot run `flashmla-etap {what}` here: no usable GPU: {e}");
    eprintln!(
        "It needs an NVIDIA Hopper GPU (H100/H200/H20/H800, compute capability 9.0) and a driver\n\
         for CUDA 12.8 or newer. To run it on one:\n\
         \x20 - on the GPU machine itself, if it has a Rust toolchain:\n\
         \x20     cargo run --release -- {what}    (for the demo: scripts/demo.sh)\n\
         \x20 - otherwise build here and carry the binaries over (the GPU machine needs no Rust):\n\
         \x20     1. here:  scripts/build-gpu-bundle.sh   (builds dist/: the CLI and test binaries)\n\
         \x20     2. copy dist/ to the GPU machine\n\
         \x20     3. there: dist/flashmla-etap {what}"
    );
    ExitCode::from(EXIT_NO_GPU)
}

/// Opens the GPU, or returns the exit code after explaining why it cannot.
fn open(device: usize, what: &str) -> std::result::Result<Gpu, ExitCode> {
    match Gpu::open(device) {
        Ok(gpu) => Ok(gpu),
        Err(e) if e.is_no_gpu() => Err(no_gpu(what, &e)),
        Err(e) => {
            eprintln!("error: opening device {device} failed: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// `flashmla-etap demo`.
pub fn demo(device: usize, args: &DemoArgs) -> ExitCode {
    println!(
        "FlashMLA-ETAP demo: one MLA decode step shaped like DeepSeek-V3 under 8-way tensor \
         parallelism\n  h_q = {}, h_kv = 1, s_q = 1, batch {}, {} tokens {}, head dims 576/512, \
         bf16, paged KV cache (64-token pages in random order)",
        args.heads,
        args.batch,
        args.seqlen,
        if args.varlen {
            "at most (varlen)"
        } else {
            "each"
        }
    );
    if let Err(e) = check_demo_args(args) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let gpu = match open(device, "demo") {
        Ok(g) => g,
        Err(code) => return code,
    };
    println!("{}", flashmla_etap::power::describe_card(&gpu));
    match run_demo(&gpu, args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("demo: the output does NOT match the float64 reference (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Most decode calls a demo graph captures, and most timed replays of it.
const MAX_DEMO_CALLS: usize = 10_000;
const MAX_DEMO_REPLAYS: usize = 100_000;

/// The demo's options checked before the GPU is opened or any input is drawn: the shape
/// by `DecodeConfig::validate` at the longest length `--seqlen` allows.
fn check_demo_args(args: &DemoArgs) -> Result<(), Error> {
    if !(1..=MAX_DEMO_CALLS).contains(&args.calls) {
        return Err(Error::invalid(
            "--calls",
            format!("must be in 1..={MAX_DEMO_CALLS}"),
        ));
    }
    if !(1..=MAX_DEMO_REPLAYS).contains(&args.replays) {
        return Err(Error::invalid(
            "--replays",
            format!("must be in 1..={MAX_DEMO_REPLAYS}"),
        ));
    }
    if args.seqlen < 0 {
        return Err(Error::invalid("--seqlen", "must be at least 0"));
    }
    let max_pages = (args.seqlen as usize).div_ceil(64).max(1);
    DecodeConfig::new(args.batch, args.heads, max_pages)
        .precision(args.precision)
        .validate()
}

fn run_demo(gpu: &Gpu, args: &DemoArgs) -> Result<bool, Error> {
    let (batch, h_q, s_q) = (args.batch, args.heads, 1usize);
    let mut rng = SplitMix64(args.seed);
    let lengths: Vec<i32> = (0..batch)
        .map(|_| {
            if args.varlen {
                let lo = args.seqlen / 2;
                lo + rng.below((args.seqlen - lo) as u64 + 1) as i32
            } else {
                args.seqlen
            }
        })
        .collect();
    let shape = MlaShape::for_lengths(s_q, h_q, 1, 64, &lengths);
    let config = DecodeConfig::new(batch, h_q, shape.max_pages).precision(args.precision);
    config.validate()?;
    let scale = config.softmax_scale as f64;

    let t = Instant::now();
    let inputs = generate(&shape, &lengths, Dtype::Bf16, args.seed)?;
    let reference = check::reference_for(&shape, &inputs, scale, false)?;
    println!(
        "inputs and float64 CPU reference: {:.1} s ({} pages of KV, {:.1} MiB)",
        t.elapsed().as_secs_f64(),
        shape.num_blocks,
        (shape.kv_len() * 2) as f64 / (1u64 << 20) as f64
    );

    let s = &gpu.stream;
    let drv = |what: &'static str| move |e| Error::driver(format!("demo: {what}"), e);
    let dev = check::upload_inputs::<bf16>(s, &inputs)?;
    let (q, bt, sl) = (&dev.q, &dev.block_table, &dev.seqlens);
    let mut out = s
        .alloc_zeros::<bf16>(shape.out_len())
        .map_err(drv("allocating out"))?;
    let mut lse = s
        .alloc_zeros::<f32>(shape.lse_len())
        .map_err(drv("allocating lse"))?;

    let decoder = Decoder::new(gpu)?;
    let cache = KvCache::new(gpu, &dev.kv_cache, shape.num_blocks, 1)?;
    let mut plan = DecodePlan::new(gpu, config, &lengths)?;
    // The checked API: every used block-table entry is a valid page id.
    plan.validate_block_table(&inputs.block_table, shape.num_blocks)?;
    println!(
        "plan: {} partitions over {} SMs, {} partial results",
        plan.num_parts(),
        gpu.sm_count,
        plan.split_offsets().last().copied().unwrap_or(0)
    );

    // Eager run, then the check.
    decoder.decode(s, &mut plan, q, &cache, bt, sl, &mut out, &mut lse)?;
    let out_eager: Vec<bf16> = s.clone_dtoh(&out).map_err(drv("reading out"))?;
    let lse_eager: Vec<f32> = s.clone_dtoh(&lse).map_err(drv("reading lse"))?;
    let out_f64: Vec<f64> = out_eager.iter().map(|x| x.to_f64()).collect();
    // Determinism is judged below, as the graph replays' equality with this eager run.
    let accuracy = CaseResult::measure(
        &out_f64,
        &lse_eager,
        &reference,
        Dtype::Bf16,
        false,
        true,
        plan.rounds_p_once(),
    )?;
    let (err, floor, lse_err, bad) = (
        accuracy.rmse,
        accuracy.floor,
        accuracy.lse_rel_err,
        accuracy.bad_values,
    );

    // Timing: `calls` decode calls in one CUDA graph, median over replays.
    let graph = Graph::capture(s, |st| {
        for _ in 0..args.calls {
            decoder.decode(st, &mut plan, q, &cache, bt, sl, &mut out, &mut lse)?;
        }
        Ok(())
    })?;
    graph.upload()?;
    graph.launch(s)?; // warm-up
    let timer = GpuTimer::new(s)?;
    let mut per_call_us = Vec::with_capacity(args.replays);
    for _ in 0..args.replays {
        timer.start()?;
        graph.launch(s)?;
        timer.stop()?;
        per_call_us.push(timer.elapsed_ms()? as f64 * 1e3 / args.calls as f64);
    }
    per_call_us.sort_by(f64::total_cmp);
    let median_us = per_call_us[per_call_us.len() / 2];
    let out_graph: Vec<bf16> = s.clone_dtoh(&out).map_err(drv("reading out"))?;
    let lse_graph: Vec<f32> = s.clone_dtoh(&lse).map_err(drv("reading lse"))?;
    let replay_equal = out_graph
        .iter()
        .zip(&out_eager)
        .all(|(a, b)| a.to_bits() == b.to_bits())
        && lse_graph
            .iter()
            .zip(&lse_eager)
            .all(|(a, b)| a.to_bits() == b.to_bits());

    let tokens: u64 = lengths.iter().map(|&l| l as u64).sum();
    let bytes = tokens * (D_QK as u64 * 2)
        + (batch * s_q * h_q * D_QK * 2) as u64
        + (batch * s_q * h_q * D_V * 2) as u64;
    let gbps = bytes as f64 / (median_us * 1e-6) / 1e9;
    let passed = accuracy.passes() && replay_equal;
    println!(
        "time per decode call: {median_us:.2} us (median of {} graph replays of {} calls; \
         min {:.2}, max {:.2})",
        args.replays,
        args.calls,
        per_call_us[0],
        per_call_us[per_call_us.len() - 1]
    );
    println!(
        "bandwidth: {gbps:.0} GB/s ({:.1} MB moved: {} tokens × 1152 B of KV + q + out)",
        bytes as f64 / 1e6,
        tokens
    );
    println!(
        "accuracy vs float64 reference: RMSE {err:.3e}, bf16 rounding floor {floor:.3e} \
         (ratio {:.3}, bound {}, P {:?}{}); lse rel. error {lse_err:.1e} (bound {LSE_TOLERANCE:.0e}); \
         non-finite/mismatched values {bad}; graph replay == eager: {}",
        accuracy.ratio(),
        accuracy.bound(),
        config.precision,
        if config.rounds_p_once() && !accuracy.p_rounded_once {
            ", split by the plan"
        } else {
            ""
        },
        if replay_equal { "bitwise" } else { "NO" }
    );
    println!("check: {}", if passed { "PASSED" } else { "FAILED" });
    Ok(passed)
}

/// The `--quick` subset of the grid: every 7th case (7 is coprime with the grid's loops,
/// so dtypes, heads, s_q, causal and fixed/varlen all vary) plus the h_kv = 2 and f32-output
/// ones.
fn quick_cases() -> Vec<Case> {
    check::grid()
        .into_iter()
        .enumerate()
        .filter(|(i, c)| i % 7 == 0 || c.h_kv > 1 || c.out_f32)
        .map(|(_, c)| c)
        .collect()
}

/// `flashmla-etap check`.
pub fn check(device: usize, args: &CheckArgs) -> ExitCode {
    let mut cases = if args.quick {
        quick_cases()
    } else {
        check::grid()
    };
    if let Some(f) = &args.filter {
        cases.retain(|c| c.describe().contains(f.as_str()));
        if cases.is_empty() {
            eprintln!(
                "error: {}",
                Error::invalid("--filter", format!("no case of the grid contains {f:?}"))
            );
            return ExitCode::FAILURE;
        }
    }
    let gpu = match open(device, "check") {
        Ok(g) => g,
        Err(code) => return code,
    };
    println!("{}", flashmla_etap::power::describe_card(&gpu));
    let decoder = match Decoder::new(&gpu) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: loading the kernels: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} case(s){}",
        cases.len(),
        if args.quick { " (--quick)" } else { "" }
    );
    let (mut passed, mut failed) = (0usize, 0usize);
    let t = Instant::now();
    for (i, case) in cases.iter().enumerate() {
        let line = match case.run(&decoder) {
            Ok(r) if r.passes() => {
                passed += 1;
                format!("ok   {}: {}", case.describe(), r.summary())
            }
            Ok(r) => {
                failed += 1;
                format!("FAIL {}: {}", case.describe(), r.summary())
            }
            Err(e) => {
                failed += 1;
                format!("FAIL {}: error: {e}", case.describe())
            }
        };
        println!("[{:>3}/{}] {line}", i + 1, cases.len());
        let _ = std::io::stdout().flush();
    }
    println!(
        "{passed} passed, {failed} failed ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
