//! Dynamic shared memory: its base address and typed loads/stores by 32-bit shared address
//! (PTX ISA: state spaces, .shared; ld/st).
use core::arch::{asm, global_asm};

global_asm!(".extern .shared .align 1024 .b8 SMEM[];");

/// 32-bit shared-window address of the dynamic shared memory (1024-byte aligned).
#[inline(always)]
pub fn base() -> u32 {
    let r: u32;
    unsafe { asm!("mov.u32 {r}, SMEM;", r = out(reg32) r, options(nomem, nostack, pure)) };
    r
}

/// st.shared.f32
#[inline(always)]
pub unsafe fn st_f32(addr: u32, v: f32) {
    asm!("st.shared.f32 [{a}], {v};", a = in(reg32) addr, v = in(reg32) v, options(nostack));
}
/// ld.shared.f32
#[inline(always)]
pub unsafe fn ld_f32(addr: u32) -> f32 {
    let v: f32;
    asm!("ld.shared.f32 {v}, [{a}];", a = in(reg32) addr, v = out(reg32) v, options(nostack, readonly));
    v
}
/// ld.shared.b32
#[inline(always)]
pub unsafe fn ld_u32(addr: u32) -> u32 {
    let v: u32;
    asm!("ld.shared.b32 {v}, [{a}];", a = in(reg32) addr, v = out(reg32) v, options(nostack, readonly));
    v
}
/// st.shared.b32
#[inline(always)]
pub unsafe fn st_u32(addr: u32, v: u32) {
    asm!("st.shared.b32 [{a}], {v};", a = in(reg32) addr, v = in(reg32) v, options(nostack));
}
/// st.shared.v4.b32: 16 bytes, `addr` 16-byte aligned.
#[inline(always)]
pub unsafe fn st_v4(addr: u32, v: [u32; 4]) {
    asm!("st.shared.v4.b32 [{a}], {{{x}, {y}, {z}, {w}}};", a = in(reg32) addr,
        x = in(reg32) v[0], y = in(reg32) v[1], z = in(reg32) v[2], w = in(reg32) v[3], options(nostack));
}
