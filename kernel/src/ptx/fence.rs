//! Memory-proxy fences (PTX ISA: membar/fence, fence.proxy.async, fence.mbarrier_init).
use core::arch::asm;

/// Makes this thread's generic-proxy shared-memory writes visible to the async proxy
/// (wgmma operands, TMA) once followed by a barrier.
#[inline(always)]
pub fn proxy_async_shared() {
    unsafe { asm!("fence.proxy.async.shared::cta;", options(nostack)) };
}

/// Makes mbarrier initialisation visible to the async proxy (TMA completions).
#[inline(always)]
pub fn mbarrier_init() {
    unsafe { asm!("fence.mbarrier_init.release.cluster;", options(nostack)) };
}
