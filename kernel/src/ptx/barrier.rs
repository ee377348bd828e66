//! CTA-level barriers (PTX ISA: barrier.sync). The non-`.aligned` form is used on purpose:
//! the optimiser may duplicate a barrier into both sides of a branch, and `.aligned`
//! (`bar.sync`) then deadlocks a warp whose lanes reach different copies.
use core::arch::asm;

/// Waits for all threads of the CTA (barrier 0).
#[inline(always)]
pub fn sync_cta() {
    unsafe { asm!("barrier.sync 0;", options(nostack)) };
}

/// Waits for `threads` threads (a multiple of 32) on named barrier `id` (1..=15).
#[inline(always)]
pub fn sync_named(id: u32, threads: u32) {
    unsafe {
        asm!("barrier.sync {id}, {n};", id = in(reg32) id, n = in(reg32) threads, options(nostack))
    };
}

/// Arrives on named barrier `id` (expecting `threads` in all) without waiting for it.
#[inline(always)]
pub fn arrive_named(id: u32, threads: u32) {
    unsafe {
        asm!("barrier.arrive {id}, {n};", id = in(reg32) id, n = in(reg32) threads, options(nostack))
    };
}

/// Waits for `threads` threads on named barrier `id` and returns whether any of them passed
/// `pred = true` (PTX ISA: barrier.red.or.pred).
#[inline(always)]
pub fn sync_named_any(id: u32, threads: u32, pred: bool) -> bool {
    let any: u32;
    unsafe {
        asm!(
            "{{ .reg .pred p, q; setp.ne.u32 p, {c}, 0; barrier.red.or.pred q, {id}, {n}, p; selp.u32 {r}, 1, 0, q; }}",
            id = in(reg32) id, n = in(reg32) threads, c = in(reg32) pred as u32, r = out(reg32) any,
            options(nostack)
        )
    };
    any != 0
}
