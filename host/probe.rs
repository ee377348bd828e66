//! Measurement probes.
//!
//! - `flashmla-etap probe`: how many SM cycles one `wgmma.mma_async.m64nNk16` (bf16, both
//!   operands in shared memory) occupies at each N, in the two operand layouts of the ETAP
//!   products, with one and with two warpgroups issuing at once (the decode has two). It
//!   answers whether small-N tiles leave the tensor core partly idle, which bounds what
//!   the transposed kernels can reach at h_q ≥ 64.
//! - [`ClockProbe`]: the SM clock the card runs at, counted on the GPU (`bench` runs it
//!   after each timed replay). NVML's clock and power readings lag the load by up to
//!   ~100 ms on an H200, so a point whose replays take less than that reads as unthrottled
//!   there even where the power cap slowed it.

use crate::error::{Error, Result};
use crate::{kernel_args, launch, Gpu, Kernels, LaunchSpec};
use cudarc::driver::sys;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut};
use etap_kernel::config::{probe_smem_bytes, PROBE_BATCH};
use std::marker::PhantomData;
use std::sync::Arc;

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
    println!("{}", crate::power::describe_card(&gpu));
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

/// Global-timer time the SM clock probe counts cycles over, ns: with the timer's steps at
/// both ends, a few cycles of a loop iteration are its whole error (~0.1 %).
pub const CLOCK_PROBE_NS: u64 = 20_000;

/// The SM clock, MHz, from `cycles` counted over `ns` nanoseconds; `None` where no time
/// passed or nothing was counted (a slot the probe never wrote).
pub fn clock_mhz(cycles: u64, ns: u64) -> Option<f64> {
    (ns > 0 && cycles > 0).then(|| 1e3 * cycles as f64 / ns as f64)
}

/// The `probe_sm_clock` kernel and a device slot for each reading, on one GPU's stream:
/// [`ClockProbe::run`] queues a reading there, [`ClockProbe::read_mhz`] copies them all
/// back once. The borrow of the [`Kernels`] keeps the kernel's module loaded while the
/// probe lives.
pub struct ClockProbe<'k> {
    func: sys::CUfunction,
    stream: Arc<CudaStream>,
    slots: CudaSlice<u64>,
    _module: PhantomData<&'k Kernels>,
}

impl<'k> ClockProbe<'k> {
    /// A probe with room for `readings` readings on `gpu`'s stream, from `kernels` (loaded
    /// on `gpu`). Its slots start empty.
    pub fn new(gpu: &Gpu, kernels: &'k Kernels, readings: usize) -> Result<ClockProbe<'k>> {
        if readings == 0 {
            return Err(Error::invalid("readings", "at least one reading"));
        }
        Ok(ClockProbe {
            func: kernels.function("probe_sm_clock")?,
            stream: gpu.stream.clone(),
            slots: gpu.stream.alloc_zeros::<u64>(2 * readings)?,
            _module: PhantomData,
        })
    }

    /// Readings the probe has room for.
    pub fn readings(&self) -> usize {
        self.slots.len() / 2
    }

    /// Queues reading `i` on the probe's stream: one warp on one SM, about
    /// [`CLOCK_PROBE_NS`] long, after whatever the stream ran before.
    pub fn run(&mut self, i: usize) -> Result<()> {
        if i >= self.readings() {
            return Err(Error::invalid(
                "i",
                format!("a reading below {}", self.readings()),
            ));
        }
        let (base, _g) = self.slots.device_ptr_mut(&self.stream);
        let mut out = base + (16 * i) as u64;
        let mut spin = CLOCK_PROBE_NS;
        let mut args = kernel_args![spin, out];
        // SAFETY: the arguments match `probe_sm_clock(u64, *mut u64)`; `out` is two u64 of
        // `slots` (i < readings), which outlives the launch (it is freed only with `self`);
        // the function's module outlives `self` ('k), and the stream is the slots'.
        unsafe {
            launch(
                self.func,
                &LaunchSpec::linear(1, 32, 0),
                &self.stream,
                &mut args,
            )
        }
    }

    /// Every reading as written, `(cycles, ns)`, after the stream's work so far; `(0, 0)`
    /// for a reading not run since [`ClockProbe::new`].
    pub fn read_raw(&self) -> Result<Vec<(u64, u64)>> {
        let raw: Vec<u64> = self.stream.clone_dtoh(&self.slots)?;
        Ok(raw.chunks(2).map(|c| (c[0], c[1])).collect())
    }

    /// Every reading's SM clock, MHz (`None` for a reading not run since
    /// [`ClockProbe::new`]), after the stream's work so far.
    pub fn read_mhz(&self) -> Result<Vec<Option<f64>>> {
        Ok(self
            .read_raw()?
            .into_iter()
            .map(|(cycles, ns)| clock_mhz(cycles, ns))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_from_cycles_and_nanoseconds() {
        assert_eq!(clock_mhz(39_600, 20_000), Some(1980.0));
        assert_eq!(clock_mhz(27_540, 20_000), Some(1377.0));
        assert_eq!(clock_mhz(0, 20_000), None);
        assert_eq!(clock_mhz(1, 0), None);
    }
}
