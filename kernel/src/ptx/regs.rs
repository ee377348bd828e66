//! Per-warpgroup register reallocation (PTX ISA: setmaxnreg).
use core::arch::asm;

/// setmaxnreg.dec: this warpgroup gives registers back to the CTA pool, down to 40 a thread.
#[inline(always)]
pub fn release_to_40() {
    unsafe { asm!("setmaxnreg.dec.sync.aligned.u32 40;", options(nostack)) };
}

/// setmaxnreg.inc: this warpgroup takes registers from the CTA pool, up to 232 a thread.
#[inline(always)]
pub fn claim_232() {
    unsafe { asm!("setmaxnreg.inc.sync.aligned.u32 232;", options(nostack)) };
}
