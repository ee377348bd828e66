//! Shared-memory transaction barriers (PTX ISA: mbarrier).
use core::arch::asm;

/// mbarrier.init: `count` arrivals complete a phase.
#[inline(always)]
pub unsafe fn init(bar: u32, count: u32) {
    asm!("mbarrier.init.shared::cta.b64 [{b}], {c};", b = in(reg32) bar, c = in(reg32) count, options(nostack));
}

/// mbarrier.arrive: one arrival on the current phase.
#[inline(always)]
pub unsafe fn arrive(bar: u32) {
    asm!("mbarrier.arrive.shared::cta.b64 _, [{b}];", b = in(reg32) bar, options(nostack));
}

/// `arrive` only where `pred` holds, without a branch: LLVM may duplicate the `.aligned`
/// wgmma waits that follow a branch into both of its sides, and a warp that runs two
/// copies of an aligned instruction diverged hangs.
#[inline(always)]
pub unsafe fn arrive_if(pred: bool, bar: u32) {
    asm!("{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p mbarrier.arrive.shared::cta.b64 _, [{b}]; }}",
        pr = in(reg32) pred as u32, b = in(reg32) bar, options(nostack));
}

/// mbarrier.arrive.expect_tx: one arrival that also expects `bytes` of async transactions.
#[inline(always)]
pub unsafe fn arrive_expect_tx(bar: u32, bytes: u32) {
    asm!("mbarrier.arrive.expect_tx.shared::cta.b64 _, [{b}], {n};", b = in(reg32) bar, n = in(reg32) bytes, options(nostack));
}

/// `arrive_expect_tx` only where `pred` holds, without a branch (see `tma::load_3d_if`).
#[inline(always)]
pub unsafe fn arrive_expect_tx_if(pred: bool, bar: u32, bytes: u32) {
    asm!("{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p mbarrier.arrive.expect_tx.shared::cta.b64 _, [{b}], {n}; }}",
        pr = in(reg32) pred as u32, b = in(reg32) bar, n = in(reg32) bytes, options(nostack));
}

/// mbarrier.try_wait.parity: true once the phase of parity `parity` has completed.
#[inline(always)]
pub unsafe fn try_wait(bar: u32, parity: u32) -> bool {
    let done: u32;
    asm!(
        "{{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [{b}], {ph}; selp.u32 {d}, 1, 0, p; }}",
        b = in(reg32) bar, ph = in(reg32) parity, d = out(reg32) done, options(nostack)
    );
    done != 0
}

/// Blocks until the phase of parity `parity` has completed.
#[inline(always)]
pub unsafe fn wait(bar: u32, parity: u32) {
    while !try_wait(bar, parity) {}
}

/// `wait` for code with wgmma in flight: the loop exits on a warp-wide vote, so ptxas sees
/// uniform control flow and does not serialise the wgmma around it.
#[inline(always)]
pub unsafe fn wait_warp(bar: u32, parity: u32) {
    while !crate::ptx::warp::all(try_wait(bar, parity)) {}
}
