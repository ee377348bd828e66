//! Per-thread asynchronous global→shared copies (PTX ISA: cp.async, cp.async.commit_group,
//! cp.async.wait_all): many 16-byte copies in flight per thread, none waited on one by one.
use core::arch::asm;

/// Copies 16 bytes from global `src` to shared `dst`; with `valid == false` nothing is read
/// and `dst` is zero-filled (source size 0).
#[inline(always)]
pub unsafe fn copy16(dst: u32, src: *const u8, valid: bool) {
    asm!(
        "cp.async.cg.shared.global [{d}], [{s}], 16, {n};",
        d = in(reg32) dst, s = in(reg64) src, n = in(reg32) if valid { 16u32 } else { 0 },
        options(nostack)
    );
}

/// Waits until all of this thread's cp.async copies have landed.
#[inline(always)]
pub fn wait_all() {
    unsafe { asm!("cp.async.wait_all;", options(nostack)) };
}
