//! Bulk tensor copies from global to shared memory (PTX ISA: cp.async.bulk.tensor,
//! prefetch.tensormap). Tensor maps live in global memory: Rust kernels have no
//! `__grid_constant__` parameters.
use core::arch::asm;

/// Loads the 2-D box at (`c0`, `c1`) of tensor map `map` into shared `dst`; completion is
/// signalled on mbarrier `bar` as transaction bytes.
#[inline(always)]
pub unsafe fn load_2d(dst: u32, map: *const u8, bar: u32, c0: i32, c1: i32) {
    asm!(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{d}], [{m}, {{{c0}, {c1}}}], [{b}];",
        d = in(reg32) dst, m = in(reg64) map, b = in(reg32) bar, c0 = in(reg32) c0, c1 = in(reg32) c1,
        options(nostack)
    );
}

/// Loads the 3-D box at (`c0`, `c1`, `c2`) of tensor map `map` into shared `dst`;
/// completion is signalled on mbarrier `bar` as transaction bytes.
#[inline(always)]
pub unsafe fn load_3d(dst: u32, map: *const u8, bar: u32, c0: i32, c1: i32, c2: i32) {
    asm!(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{d}], [{m}, {{{c0}, {c1}, {c2}}}], [{b}];",
        d = in(reg32) dst, m = in(reg64) map, b = in(reg32) bar, c0 = in(reg32) c0, c1 = in(reg32) c1, c2 = in(reg32) c2,
        options(nostack)
    );
}

/// Brings a tensor map into the TMA unit's cache ahead of its first use.
#[inline(always)]
pub unsafe fn prefetch_map(map: *const u8) {
    asm!("prefetch.tensormap [{m}];", m = in(reg64) map, options(nostack));
}

/// `load_3d` issued only where `pred` holds, without a branch: a warp stays converged
/// around it (a branch on the lane lets the optimiser duplicate the `.aligned` wgmma
/// instructions after it into divergent paths).
#[inline(always)]
pub unsafe fn load_3d_if(
    pred: bool,
    dst: u32,
    map: *const u8,
    bar: u32,
    c0: i32,
    c1: i32,
    c2: i32,
) {
    asm!(
        "{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{d}], [{m}, {{{c0}, {c1}, {c2}}}], [{b}]; }}",
        pr = in(reg32) pred as u32, d = in(reg32) dst, m = in(reg64) map, b = in(reg32) bar, c0 = in(reg32) c0, c1 = in(reg32) c1, c2 = in(reg32) c2,
        options(nostack)
    );
}
