//! One small wrapper per PTX instruction family used by the kernels (device only).
pub mod atomic;
pub mod barrier;
pub mod cache;
pub mod clock;
pub mod cp_async;
pub mod fence;
pub mod global;
pub mod griddep;
pub mod ids;
pub mod math;
pub mod mbarrier;
pub mod regs;
pub mod smem;
pub mod stmatrix;
pub mod tma;
pub mod warp;
pub mod wgmma;

/// Returns `x` unchanged, opaquely to the optimiser. Called inside a loop, it keeps values
/// derived from `x` (wgmma descriptors) from being hoisted out and held live in registers
/// across the whole loop, which would make the accumulators spill.
#[inline(always)]
pub fn opaque(x: u64) -> u64 {
    let mut x = x;
    unsafe { core::arch::asm!("/* {x} */", x = inout(reg64) x, options(nomem, nostack)) };
    x
}
