//! `flashmla-etap`: command-line front end (device info, demo, benchmark, correctness check).

mod demo;

use clap::{Parser, Subcommand};
use flashmla_etap::module::{self, ImageKind, Kernels};
use flashmla_etap::{Error, Gpu};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "flashmla-etap",
    version,
    about = "FlashMLA-ETAP: transposed MLA decode attention for Hopper, device code in Rust"
)]
struct Cli {
    /// CUDA device ordinal.
    #[arg(long, global = true, default_value_t = 0)]
    device: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the GPU (or why there is none), the embedded kernels and ptxas's resource report.
    Info,
    /// Run one DeepSeek-V3-shaped MLA decode step (h_q 16, batch 16, 8K context), check it
    /// against the float64 CPU reference and report time, bandwidth and error.
    Demo(demo::DemoArgs),
    /// Benchmark the decode kernel on the anchor sweep and compare with FlashMLA / ETAP.
    Bench(flashmla_etap::bench::BenchArgs),
    /// Run the correctness grid on the GPU against the float64 CPU reference.
    Check(demo::CheckArgs),
    /// Measure the cycles one wgmma takes at each N in the decode's operand layouts.
    Probe,
    /// Compare `bench --json` reports of two builds point by point (A-B runs; no GPU needed).
    Compare(flashmla_etap::compare::CompareArgs),
    /// Redraw the SVG plot of a `bench --json` report (no GPU needed).
    Plot(flashmla_etap::plot::PlotArgs),
    /// Show how the decode plans bench points: kernel, partitions, pieces, combine (no GPU
    /// needed).
    Plan(flashmla_etap::explain::PlanArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(cli.device),
        Command::Demo(args) => return demo::demo(cli.device, &args),
        Command::Bench(args) => flashmla_etap::bench::main(cli.device, &args),
        Command::Check(args) => return demo::check(cli.device, &args),
        Command::Probe => flashmla_etap::probe::main(cli.device),
        Command::Compare(args) => flashmla_etap::compare::main(&args),
        Command::Plot(args) => flashmla_etap::plot::main(&args),
        Command::Plan(args) => flashmla_etap::explain::main(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info(device: usize) -> Result<(), Error> {
    println!("flashmla-etap {}", env!("CARGO_PKG_VERSION"));
    let names = module::kernel_names();
    println!(
        "embedded device code: PTX {} bytes, cubin {}, {} kernel(s): {}",
        module::PTX.len(),
        match module::CUBIN {
            Some(c) => format!(
                "{} bytes (sm_90a, ptxas --maxrregcount={})",
                c.len(),
                module::MAX_REGS
            ),
            None =>
                "absent (ptxas was not available at build time; PTX will be JIT-compiled)".into(),
        },
        names.len(),
        names.join(", ")
    );
    let mut failed = None;
    match Gpu::open(device) {
        Ok(gpu) => {
            println!("{}", flashmla_etap::power::describe_card(&gpu));
            match Kernels::load(&gpu) {
                Ok(k) => {
                    println!(
                        "module loaded from {}",
                        match k.image_kind() {
                            ImageKind::Cubin => "the embedded cubin",
                            ImageKind::PtxJit => "the PTX (driver JIT)",
                        }
                    );
                    println!(
                        "{:<40} {:>5} {:>12} {:>12} {:>11}",
                        "kernel", "regs", "local bytes", "static smem", "max threads"
                    );
                    for name in &names {
                        match k.attributes(name) {
                            Ok(a) => println!(
                                "{:<40} {:>5} {:>12} {:>12} {:>11}",
                                name, a.regs, a.local_bytes, a.static_smem, a.max_threads
                            ),
                            Err(e) => {
                                println!("{name:<40} attributes unavailable: {e}");
                                failed.get_or_insert(e);
                            }
                        }
                    }
                }
                Err(e) => {
                    println!("loading the kernels failed: {e}");
                    failed = Some(e);
                }
            }
        }
        Err(e) if e.is_no_gpu() => println!("no usable GPU: {e}"),
        Err(e) => {
            println!("opening device {device} failed: {e}");
            failed = Some(e);
        }
    }
    println!(
        "\nptxas -v report (build time):\n{}",
        module::PTXAS_REPORT.trim_end()
    );
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
