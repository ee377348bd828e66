//! Global-memory stores under a guard predicate (PTX ISA: st, with `@p`). The output
//! epilogues store every element this way rather than behind a branch: a branch per
//! element (row past the last; partial, f32 or 16-bit output), unswitched by LLVM into a
//! copy of the loop per output kind, is code a CTA runs once per piece, cold, and it sat on
//! the latency of every short decode (H200, one-page CTAs of 16 rows: 2.0 µs from the row
//! sums to the last store, 1.0 µs with guarded stores).
use core::arch::asm;

/// st.global.f32 where `pred` holds.
#[inline(always)]
pub unsafe fn st_f32_if(pred: bool, addr: u64, v: f32) {
    asm!("{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p st.global.f32 [{a}], {v}; }}",
        pr = in(reg32) pred as u32, a = in(reg64) addr, v = in(reg32) v, options(nostack));
}

/// st.global.b16 where `pred` holds.
#[inline(always)]
pub unsafe fn st_b16_if(pred: bool, addr: u64, v: u16) {
    asm!("{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p st.global.b16 [{a}], {v}; }}",
        pr = in(reg32) pred as u32, a = in(reg64) addr, v = in(reg16) v, options(nostack));
}

/// st.global.v2.f32 (8 bytes, `addr` 8-byte aligned) where `pred` holds.
#[inline(always)]
pub unsafe fn st_v2_f32_if(pred: bool, addr: u64, v: [f32; 2]) {
    asm!("{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p st.global.v2.f32 [{a}], {{{x}, {y}}}; }}",
        pr = in(reg32) pred as u32, a = in(reg64) addr, x = in(reg32) v[0], y = in(reg32) v[1],
        options(nostack));
}

/// st.global.b32 (`addr` 4-byte aligned) where `pred` holds.
#[inline(always)]
pub unsafe fn st_b32_if(pred: bool, addr: u64, v: u32) {
    asm!("{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p st.global.b32 [{a}], {v}; }}",
        pr = in(reg32) pred as u32, a = in(reg64) addr, v = in(reg32) v, options(nostack));
}

/// st.global.v4.f32 (16 bytes, `addr` 16-byte aligned) where `pred` holds.
#[inline(always)]
pub unsafe fn st_v4_f32_if(pred: bool, addr: u64, v: [f32; 4]) {
    asm!("{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p st.global.v4.f32 [{a}], {{{x}, {y}, {z}, {w}}}; }}",
        pr = in(reg32) pred as u32, a = in(reg64) addr,
        x = in(reg32) v[0], y = in(reg32) v[1], z = in(reg32) v[2], w = in(reg32) v[3],
        options(nostack));
}

/// st.global.v2.b32 (8 bytes, `addr` 8-byte aligned) where `pred` holds.
#[inline(always)]
pub unsafe fn st_v2_b32_if(pred: bool, addr: u64, v: [u32; 2]) {
    asm!("{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p st.global.v2.b32 [{a}], {{{x}, {y}}}; }}",
        pr = in(reg32) pred as u32, a = in(reg64) addr, x = in(reg32) v[0], y = in(reg32) v[1],
        options(nostack));
}
