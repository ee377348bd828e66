//! The SM cycle counter (PTX ISA: special registers, %clock64).
use core::arch::asm;

/// %clock64: cycles of this SM's clock, read where the instruction issues.
#[inline(always)]
pub fn cycles() -> u64 {
    let c: u64;
    unsafe { asm!("mov.u64 {c}, %clock64;", c = out(reg64) c, options(nomem, nostack)) };
    c
}
