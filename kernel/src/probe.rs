//! Throughput probes: the cycles one `wgmma.mma_async.m64nNk16` (bf16, both operands in
//! shared memory) occupies at each N, in the two ETAP operand layouts: A K-major (Sᵀ =
//! K·Qᵀ) and A MN-major (Oᵀ = Vᵀ·Pᵀ). Every warpgroup of the CTA issues back-to-back
//! batches against one shared A block and a B block of its own, as the decode's consumer
//! warpgroups do. Measurement kernels for `flashmla-etap probe`; the decode does not use them.
use crate::config::{probe_smem_bytes, BLOCK_BYTES, PROBE_BATCH};
use crate::element::{Bf16, Element};
use crate::layout::{desc_add, smem_desc, Major};
use crate::ptx::wgmma::{self, MmaShape, N128, N16, N256, N32, N64, N8};
use crate::ptx::{barrier, clock, fence, ids, opaque, smem};

/// Runs `iters` batches of `PROBE_BATCH` wgmma in every warpgroup and writes each
/// warpgroup's elapsed cycles to `cycles[block · warpgroups + warpgroup]`.
#[inline(always)]
unsafe fn wgmma_rate<S: MmaShape, const A_MN: bool>(iters: u32, cycles: *mut u64) {
    let n = S::N as u32;
    let warpgroups = ids::block_threads() / 128;
    let wg = ids::warpgroup();
    let base = smem::base();
    // ±1.0 in bf16, so the sums stay small and finite.
    let words = probe_smem_bytes(n, warpgroups) / 4;
    let mut w = ids::thread();
    while w < words {
        smem::st_u32(base + 4 * w, 0x3f80_bf80);
        w += ids::block_threads();
    }
    fence::proxy_async_shared();
    barrier::sync_cta();

    let a = if A_MN {
        smem_desc(base, Major::MN, BLOCK_BYTES)
    } else {
        smem_desc(base, Major::K, 0)
    };
    let b = smem_desc(base + BLOCK_BYTES + wg * n * 128, Major::K, 0);
    let mut acc = S::zero();
    let start = clock::cycles();
    for _ in 0..iters {
        let (a, b) = (opaque(a), opaque(b));
        wgmma::fence();
        for i in 0..PROBE_BATCH {
            let k = i % 4;
            let db = desc_add(b, k * 32);
            if A_MN {
                Bf16::mma_ta::<S>(&mut acc, desc_add(a, k * 16 * 128), db, true);
            } else {
                Bf16::mma::<S>(&mut acc, desc_add(a, k * 32), db, true);
            }
        }
        wgmma::commit();
        wgmma::wait_all();
    }
    let elapsed = clock::cycles() - start;
    // The products are ±1 sums, never NaN: reading them keeps ptxas from dropping the wgmma.
    let sum: f32 = acc.as_ref().iter().sum();
    if ids::thread() % 128 == 0 || sum.is_nan() {
        *cycles.add((ids::block_x() * warpgroups + wg) as usize) = elapsed;
    }
}

macro_rules! probe_kernels {
    ($($k:ident $mn:ident $s:ty;)*) => {$(
        /// K-major A (the Sᵀ layout); see `wgmma_rate`.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $k(iters: u32, cycles: *mut u64) {
            wgmma_rate::<$s, false>(iters, cycles)
        }
        /// MN-major A (the Oᵀ layout); see `wgmma_rate`.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $mn(iters: u32, cycles: *mut u64) {
            wgmma_rate::<$s, true>(iters, cycles)
        }
    )*};
}

probe_kernels! {
    probe_wgmma_k_n8 probe_wgmma_mn_n8 N8;
    probe_wgmma_k_n16 probe_wgmma_mn_n16 N16;
    probe_wgmma_k_n32 probe_wgmma_mn_n32 N32;
    probe_wgmma_k_n64 probe_wgmma_mn_n64 N64;
    probe_wgmma_k_n128 probe_wgmma_mn_n128 N128;
    probe_wgmma_k_n256 probe_wgmma_mn_n256 N256;
}

/// The SM clock now: thread 0 counts this SM's cycles between two steps of the global
/// timer at least `spin_ns` apart and writes `[cycles, ns]` to `out`. Starting and ending
/// on a step of the timer, the error is a loop iteration at each end, not a timer step.
/// `flashmla-etap bench` runs it after each timed replay (one CTA of one warp).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn probe_sm_clock(spin_ns: u64, out: *mut u64) {
    if ids::thread() != 0 {
        return;
    }
    let t0 = clock::nanos();
    let mut t1 = clock::nanos();
    while t1 == t0 {
        t1 = clock::nanos();
    }
    let c1 = clock::cycles();
    let end = t1.saturating_add(spin_ns.max(1));
    let mut t2 = t1;
    while t2 < end {
        t2 = clock::nanos();
    }
    let c2 = clock::cycles();
    *out = c2.wrapping_sub(c1);
    *out.add(1) = t2 - t1;
}
