//! Copying 16-bit row-major matrices from global memory into 128B-swizzled shared-memory
//! blocks with per-thread cp.async (used for Q and by the self-test kernels; the KV stream
//! uses TMA).
use crate::layout::SWIZZLE_ROW_BYTES;
use crate::ptx::cp_async;

/// 16-byte units in one swizzled row.
const UNITS_PER_ROW: u32 = SWIZZLE_ROW_BYTES / 16;

/// Copies `rows` rows of `blocks`·64 16-bit elements into `blocks` swizzled column blocks
/// at `dst` (block `c` at `dst + c·block_stride`, rows 128 bytes apart). Row `r` is read
/// from global memory at `row_ptr(r)`, or stored as zeros where that is `None`. Work is
/// spread over `nthreads` threads, this one being `tid`; the copies are asynchronous: call
/// `cp_async::wait_all` (then fence and barrier) before the data is used.
#[inline(always)]
pub unsafe fn load_swizzled(
    rows: u32,
    blocks: u32,
    dst: u32,
    block_stride: u32,
    tid: u32,
    nthreads: u32,
    row_ptr: impl Fn(u32) -> Option<*const u16>,
) {
    let units = rows * blocks * UNITS_PER_ROW;
    let mut v = tid;
    while v < units {
        let row = v / (blocks * UNITS_PER_ROW);
        let u = v % (blocks * UNITS_PER_ROW);
        let (block, unit) = (u / UNITS_PER_ROW, u % UNITS_PER_ROW);
        let src = row_ptr(row);
        let off = row * SWIZZLE_ROW_BYTES + ((unit ^ (row % 8)) * 16);
        let dst = dst + block * block_stride + off;
        match src {
            Some(p) => cp_async::copy16(dst, p.add((u * 8) as usize) as *const u8, true),
            None => cp_async::copy16(dst, core::ptr::null(), false),
        }
        v += nthreads;
    }
}
