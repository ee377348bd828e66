//! Thread, warp and warpgroup indices (PTX ISA: special registers %tid, %ctaid).
use core::arch::nvptx;

/// Threads in a warp.
pub const WARP: u32 = 32;
/// Threads in a warpgroup (the unit of wgmma and setmaxnreg).
pub const WARPGROUP: u32 = 128;

/// %tid.x
#[inline(always)]
pub fn thread() -> u32 {
    unsafe { nvptx::_thread_idx_x() as u32 }
}
/// %ctaid.x
#[inline(always)]
pub fn block_x() -> u32 {
    unsafe { nvptx::_block_idx_x() as u32 }
}
/// %ctaid.y
#[inline(always)]
pub fn block_y() -> u32 {
    unsafe { nvptx::_block_idx_y() as u32 }
}
/// %ctaid.z
#[inline(always)]
pub fn block_z() -> u32 {
    unsafe { nvptx::_block_idx_z() as u32 }
}
/// %nctaid.z
#[inline(always)]
pub fn grid_z() -> u32 {
    unsafe { nvptx::_grid_dim_z() as u32 }
}
/// %ntid.x
#[inline(always)]
pub fn block_threads() -> u32 {
    unsafe { nvptx::_block_dim_x() as u32 }
}
/// Lane within the warp.
#[inline(always)]
pub fn lane() -> u32 {
    thread() % WARP
}
/// Warpgroup index within the CTA.
#[inline(always)]
pub fn warpgroup() -> u32 {
    thread() / WARPGROUP
}
