//! The SM cycle counter and the global nanosecond timer (PTX ISA: special registers,
//! %clock64 and %globaltimer).
use core::arch::asm;

/// %clock64: cycles of this SM's clock, read where the instruction issues.
#[inline(always)]
pub fn cycles() -> u64 {
    let c: u64;
    unsafe { asm!("mov.u64 {c}, %clock64;", c = out(reg64) c, options(nomem, nostack)) };
    c
}

/// %globaltimer: nanoseconds of the GPU's global timer, which advances in steps (their
/// size depends on the GPU and driver) whatever the SM clock.
#[inline(always)]
pub fn nanos() -> u64 {
    let t: u64;
    unsafe { asm!("mov.u64 {t}, %globaltimer;", t = out(reg64) t, options(nomem, nostack)) };
    t
}
