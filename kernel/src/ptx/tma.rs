//! Bulk tensor copies between global and shared memory (PTX ISA: cp.async.bulk.tensor,
//! cp.async.bulk.commit_group, cp.async.bulk.wait_group, prefetch.tensormap). Tensor maps
//! live in global memory: Rust kernels have no `__grid_constant__` parameters.
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

/// Stores shared `src` to the 3-D box at (`c0`, `c1`, `c2`) of tensor map `map` (coordinates
/// outside the tensor are not written) in the thread's current bulk async-group, only
/// where `pred` holds, without a branch.
#[inline(always)]
pub unsafe fn store_3d_if(pred: bool, map: *const u8, src: u32, c0: i32, c1: i32, c2: i32) {
    asm!(
        "{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p cp.async.bulk.tensor.3d.global.shared::cta.tile.bulk_group [{m}, {{{c0}, {c1}, {c2}}}], [{s}]; }}",
        pr = in(reg32) pred as u32, m = in(reg64) map, s = in(reg32) src, c0 = in(reg32) c0,
        c1 = in(reg32) c1, c2 = in(reg32) c2,
        options(nostack)
    );
}

/// Closes the thread's current bulk async-group (the stores issued since the last commit).
#[inline(always)]
pub unsafe fn commit_group() {
    asm!("cp.async.bulk.commit_group;", options(nostack));
}

/// Waits until every bulk async-group this thread committed has read its shared-memory
/// source (a no-op for a thread that committed none).
#[inline(always)]
pub unsafe fn wait_group_read_all() {
    asm!("cp.async.bulk.wait_group.read 0;", options(nostack));
}

/// Brings a tensor map into the TMA unit's cache ahead of its first use.
#[inline(always)]
pub unsafe fn prefetch_map(map: *const u8) {
    asm!("prefetch.tensormap [{m}];", m = in(reg64) map, options(nostack));
}

/// An L2 eviction policy for the `.L2::cache_hint` loads below: evict-first where
/// `evict_first`, else evict-normal (PTX ISA: createpolicy).
#[inline(always)]
pub unsafe fn l2_policy(evict_first: bool) -> u64 {
    let policy: u64;
    asm!(
        "{{ .reg .pred p; .reg .b64 f, n; createpolicy.fractional.L2::evict_first.b64 f, 1.0; createpolicy.fractional.L2::evict_normal.b64 n, 1.0; setp.ne.u32 p, {e}, 0; selp.b64 {pol}, f, n, p; }}",
        e = in(reg32) evict_first as u32, pol = out(reg64) policy,
        options(nostack, pure, nomem)
    );
    policy
}

/// `load_3d` with the L2 eviction policy `policy` (`l2_policy`), issued only where `pred`
/// holds, without a branch: a warp stays converged around it (a branch on the lane lets
/// the optimiser duplicate the `.aligned` wgmma instructions after it into divergent
/// paths).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn load_3d_hint_if(
    pred: bool,
    dst: u32,
    map: *const u8,
    bar: u32,
    c0: i32,
    c1: i32,
    c2: i32,
    policy: u64,
) {
    asm!(
        "{{ .reg .pred p; setp.ne.u32 p, {pr}, 0; @p cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint [{d}], [{m}, {{{c0}, {c1}, {c2}}}], [{b}], {pol}; }}",
        pr = in(reg32) pred as u32, d = in(reg32) dst, m = in(reg64) map, b = in(reg32) bar, c0 = in(reg32) c0, c1 = in(reg32) c1, c2 = in(reg32) c2, pol = in(reg64) policy,
        options(nostack)
    );
}
