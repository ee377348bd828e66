//! L2 cache maintenance (PTX ISA: discard).
use core::arch::asm;

/// Bytes of one L2 line that `discard_l2_if` drops.
pub const L2_LINE_BYTES: u32 = 128;

/// Drops the 128-byte L2 line at `addr` (128-byte aligned) without writing it back, where
/// `pred` holds: its contents become indeterminate (discard.global.L2).
#[inline(always)]
pub unsafe fn discard_l2_if(pred: bool, addr: u64) {
    asm!("{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p discard.global.L2 [{a}], {n}; }}",
        pr = in(reg32) pred as u32, a = in(reg64) addr, n = const L2_LINE_BYTES, options(nostack));
}
