//! Global-memory atomics (PTX ISA: atom).
use core::arch::asm;

/// atom.global.add.u64: adds `v` to `*ptr`.
#[inline(always)]
pub unsafe fn add_u64(ptr: *mut u64, v: u64) {
    asm!("red.global.add.u64 [{p}], {v};", p = in(reg64) ptr, v = in(reg64) v, options(nostack));
}
