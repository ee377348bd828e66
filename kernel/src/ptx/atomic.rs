//! Global-memory atomics (PTX ISA: red).
use core::arch::asm;

/// red.global.add.u64: adds `v` to `*ptr`.
#[inline(always)]
pub unsafe fn add_u64(ptr: *mut u64, v: u64) {
    asm!("red.global.add.u64 [{p}], {v};", p = in(reg64) ptr, v = in(reg64) v, options(nostack));
}

/// red.global.min.s32: lowers `*ptr` to `v` if `v` is smaller.
#[inline(always)]
pub unsafe fn min_i32(ptr: *mut i32, v: i32) {
    asm!("red.global.min.s32 [{p}], {v};", p = in(reg64) ptr, v = in(reg32) v, options(nostack));
}

/// `min_i32` only where `pred` holds, without a branch (see `tma::load_3d_if`).
#[inline(always)]
pub unsafe fn min_i32_if(pred: bool, ptr: *mut i32, v: i32) {
    asm!("{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p red.global.min.s32 [{p}], {v}; }}",
        pr = in(reg32) pred as u32, p = in(reg64) ptr, v = in(reg32) v, options(nostack));
}
