//! Warp-wide stores of 8×8 16-bit matrices from mma fragments (PTX ISA: stmatrix).
use core::arch::asm;

/// stmatrix .x4 .trans: four 8×8 b16 matrices, each stored transposed. Lane l supplies the
/// address of row l%8 of matrix l/8; register m holds this lane's element pair (row l/4,
/// columns 2(l%4), 2(l%4)+1) of matrix m, which lands in memory rows 2(l%4) and 2(l%4)+1.
#[inline(always)]
pub unsafe fn store_x4_trans(addr: u32, m: [u32; 4]) {
    asm!("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [{a}], {{{r0}, {r1}, {r2}, {r3}}};",
        a = in(reg32) addr, r0 = in(reg32) m[0], r1 = in(reg32) m[1], r2 = in(reg32) m[2],
        r3 = in(reg32) m[3], options(nostack));
}

/// stmatrix .x2 .trans: as `store_x4_trans` for two matrices (lanes 0..16 supply addresses).
#[inline(always)]
pub unsafe fn store_x2_trans(addr: u32, m: [u32; 2]) {
    asm!("stmatrix.sync.aligned.m8n8.x2.trans.shared.b16 [{a}], {{{r0}, {r1}}};",
        a = in(reg32) addr, r0 = in(reg32) m[0], r1 = in(reg32) m[1], options(nostack));
}

/// stmatrix .x4: four 8×8 b16 matrices, as `store_x4_trans` but not transposed: register m's
/// pair (row l/4, columns 2(l%4), 2(l%4)+1) lands in memory row l/4 of matrix m.
#[inline(always)]
pub unsafe fn store_x4(addr: u32, m: [u32; 4]) {
    asm!("stmatrix.sync.aligned.m8n8.x4.shared.b16 [{a}], {{{r0}, {r1}, {r2}, {r3}}};",
        a = in(reg32) addr, r0 = in(reg32) m[0], r1 = in(reg32) m[1], r2 = in(reg32) m[2],
        r3 = in(reg32) m[3], options(nostack));
}
