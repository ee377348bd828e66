//! Warpgroup matrix multiply-accumulate (PTX ISA: wgmma.mma_async, wgmma.fence,
//! wgmma.commit_group, wgmma.wait_group). A and B come from shared memory through
//! matrix descriptors (`crate::layout::smem_desc`); D is a per-thread f32 fragment.
use core::arch::asm;

/// One m64nNk16 shape: its accumulator fragment and the instruction for each dtype.
/// `mma_*` computes D (+)= A·B with A 64×16 and B 16×N; `_ta` reads A MN-major
/// (transposed), `_tb` reads B MN-major, otherwise A and B are K-major; `_rs_tb` takes A
/// from registers (the m64k16 A fragment: four packed pairs a thread) and B MN-major.
/// `accumulate = false` ignores D's input.
pub trait MmaShape {
    const N: usize;
    type Acc: Copy + AsMut<[f32]> + AsRef<[f32]>;
    fn zero() -> Self::Acc;
    unsafe fn mma_bf16(acc: &mut Self::Acc, a: u64, b: u64, accumulate: bool);
    unsafe fn mma_bf16_ta(acc: &mut Self::Acc, a: u64, b: u64, accumulate: bool);
    unsafe fn mma_f16(acc: &mut Self::Acc, a: u64, b: u64, accumulate: bool);
    unsafe fn mma_f16_ta(acc: &mut Self::Acc, a: u64, b: u64, accumulate: bool);
    unsafe fn mma_bf16_tb(acc: &mut Self::Acc, a: u64, b: u64, accumulate: bool);
    unsafe fn mma_f16_tb(acc: &mut Self::Acc, a: u64, b: u64, accumulate: bool);
    unsafe fn mma_bf16_rs_tb(acc: &mut Self::Acc, a: [u32; 4], b: u64, accumulate: bool);
    unsafe fn mma_f16_rs_tb(acc: &mut Self::Acc, a: [u32; 4], b: u64, accumulate: bool);
}

include!(concat!(env!("OUT_DIR"), "/wgmma_gen.rs"));

/// wgmma.fence: orders register/shared accesses before the next wgmma reads them.
#[inline(always)]
pub fn fence() {
    unsafe { asm!("wgmma.fence.sync.aligned;", options(nostack)) };
}

/// wgmma.commit_group: closes the group of wgmma issued since the last commit.
#[inline(always)]
pub fn commit() {
    unsafe { asm!("wgmma.commit_group.sync.aligned;", options(nostack)) };
}

/// wgmma.wait_group 0: waits until every committed group has completed.
#[inline(always)]
pub fn wait_all() {
    unsafe { asm!("wgmma.wait_group.sync.aligned 0;", options(nostack)) };
}

/// wgmma.wait_group N: waits until at most `N` committed groups are still in flight.
#[inline(always)]
pub fn wait<const N: u32>() {
    unsafe { asm!("wgmma.wait_group.sync.aligned {n};", n = const N, options(nostack)) };
}

/// `wait::<n>` for an `n` that is a constant once the caller's loop is unrolled (at most
/// 7; more waits for every group). `n` must be the same in every thread of the warpgroup.
#[inline(always)]
pub fn wait_for_at_most(n: u32) {
    match n {
        0 => wait::<0>(),
        1 => wait::<1>(),
        2 => wait::<2>(),
        3 => wait::<3>(),
        4 => wait::<4>(),
        5 => wait::<5>(),
        6 => wait::<6>(),
        7 => wait::<7>(),
        _ => wait_all(),
    }
}
