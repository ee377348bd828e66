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
/// spread over `nthreads` threads (a multiple of 8), this one being `tid`: it copies 16-byte
/// unit `tid % 8` of every block of rows `tid / 8`, `tid / 8 + nthreads / 8`, ..., so
/// `row_ptr` runs once per row a thread visits and a warp's copies of a block are four
/// whole 128-byte rows. The copies are asynchronous: call `cp_async::wait_all` (then fence
/// and barrier) before the data is used.
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
    let unit = tid % UNITS_PER_ROW;
    let mut row = tid / UNITS_PER_ROW;
    while row < rows {
        let src = row_ptr(row);
        let first = match src {
            Some(p) => p.add((unit * 8) as usize) as *const u8,
            None => core::ptr::null(),
        };
        let dst_row = dst + row * SWIZZLE_ROW_BYTES + ((unit ^ (row % 8)) * 16);
        for block in 0..blocks {
            let from = first.wrapping_add((block * SWIZZLE_ROW_BYTES) as usize);
            cp_async::copy16(dst_row + block * block_stride, from, src.is_some());
        }
        row += nthreads / UNITS_PER_ROW;
    }
}
