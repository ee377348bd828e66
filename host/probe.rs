//! `flashmla-etap probe`: how many SM cycles one `wgmma.mma_async.m64nNk16` (bf16, both
//! operands in shared memory) occupies at each N, in the two operand layouts of the ETAP
//! products, with one and with two warpgroups issuing at once (the decode has two).
//! It answers whether small-N tiles leave the tensor core partly idle, which bounds what
//! the transposed kernels can reach at h_q ≥ 64.

use crate::error::Result;
use crate::{kernel_args, launch, Gpu, Kernels, LaunchSpec};
use cudarc::driver::DevicePtrMut;
use etap_kernel::config::{probe_smem_bytes, PROBE_BATCH};

/// Dense bf16 multiply-adds ×2 one Hopper SM completes per cycle (989 TFLOPS at 132 SMs
/// and 1.83 GHz on the H100 SXM): the reference for `percent_of_peak`.
pub const PEAK_FLOP_PER_SM_CYCLE: f64 = 4096.0;

/// Batches of `PROBE_BATCH` wgmma each warpgroup issues.
const ITERS: u32 = 64;

/// One probe result.
#[derive(Debug, Clone, Copy)]
pub struct WgmmaRate {
    /// The N of m64nNk16.
    pub n: u32,
    /// A read MN-major (transposed, the Oᵀ = Vᵀ·Pᵀ layout) rather than K-major (Sᵀ = K·Qᵀ).
    pub a_mn_major: bool,
    /// Warpgroups of the CTA issuing at once.
    pub warpgroups: u32,
    /// Median over all warpgroups of all SMs of the cycles per wgmma of one warpgroup.
    pub cycles_per_wgmma: f64,
}

impl WgmmaRate {
    /// Flops the SM completes per cycle (all its warpgroups together).
    pub fn flop_per_cycle(&self) -> f64 {
        self.warpgroups as f64 * (2 * 64 * 16 * self.n) as f64 / self.cycles_per_wgmma
    }
    /// `flop_per_cycle` as a percentage of [`PEAK_FLOP_PER_SM_CYCLE`].
    pub fn percent_of_peak(&self) -> f64 {
        100.0 * self.flop_per_cycle() / PEAK_FLOP_PER_SM_CYCLE
    }
}

/// Runs every probe kernel on one CTA per SM, with 1 and 2 warpgroups per CTA.
pub fn wgmma_rates(gpu: &Gpu, kernels: &Kernels) -> Result<Vec<WgmmaRate>> {
    let s = &gpu.stream;
    let mut rates = Vec::new();
    for a_mn_major in [false, true] {
        for n in [8u32, 16, 32, 64, 128, 256] {
            for warpgroups in [1u32, 2] {
                let name = format!("probe_wgmma_{}_n{n}", if a_mn_major { "mn" } else { "k" });
                let smem = probe_smem_bytes(n, warpgroups);
                let f = kernels.function(&name)?;
                // SAFETY: `f` was just looked up in this loaded module.
                unsafe { kernels.set_max_dynamic_smem_raw(f, smem)? };
                let slots = (gpu.sm_count * warpgroups) as usize;
                let mut d_cycles = s.alloc_zeros::<u64>(slots)?;
                {
                    let (mut c, _g) = d_cycles.device_ptr_mut(s);
                    let mut iters = ITERS;
                    let mut args = kernel_args![iters, c];
                    let spec = LaunchSpec::linear(gpu.sm_count, 128 * warpgroups, smem);
                    // SAFETY: the arguments match the kernel's (u32, *mut u64); the buffer
                    // holds one slot per warpgroup of the grid and outlives the launch.
                    unsafe { launch(f, &spec, s, &mut args)? };
                }
                let mut cycles: Vec<u64> = s.clone_dtoh(&d_cycles)?;
                cycles.sort_unstable();
                let median = cycles[cycles.len() / 2] as f64;
                rates.push(WgmmaRate {
                    n,
                    a_mn_major,
                    warpgroups,
                    cycles_per_wgmma: median / (ITERS * PROBE_BATCH) as f64,
                });
            }
        }
    }
    Ok(rates)
}

/// Prints the probe table.
pub fn main(device: usize) -> Result<()> {
    let gpu = Gpu::open(device)?;
    let kernels = Kernels::load(&gpu)?;
    println!("{}", gpu.describe());
    println!(
        "wgmma.mma_async.m64nNk16 bf16, A and B in shared memory, {} wgmma per commit group, \
         one CTA per SM; peak = {PEAK_FLOP_PER_SM_CYCLE} flop/cycle/SM",
        PROBE_BATCH
    );
    println!(
        "{:<8} {:>5} {:>11} {:>14} {:>15} {:>8}",
        "A", "N", "warpgroups", "cycles/wgmma", "flop/cycle/SM", "% peak"
    );
    for r in wgmma_rates(&gpu, &kernels)? {
        println!(
            "{:<8} {:>5} {:>11} {:>14.1} {:>15.0} {:>8.1}",
            if r.a_mn_major { "MN" } else { "K" },
            r.n,
            r.warpgroups,
            r.cycles_per_wgmma,
            r.flop_per_cycle(),
            r.percent_of_peak()
        );
    }
    Ok(())
}
