//! CTA-level barriers (PTX ISA: bar.sync / barrier.sync).
use core::arch::asm;

/// Waits for all threads of the CTA (barrier 0).
#[inline(always)]
pub fn sync_cta() {
    unsafe { asm!("bar.sync 0;", options(nostack)) };
}

/// Waits for `threads` threads (a multiple of 32) on named barrier `id` (1..=15).
#[inline(always)]
pub fn sync_named(id: u32, threads: u32) {
    unsafe { asm!("bar.sync {id}, {n};", id = in(reg32) id, n = in(reg32) threads, options(nostack)) };
}
