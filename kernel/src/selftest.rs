//! Self-test kernels: each proves one Hopper primitive against an expectation the host
//! computes with the same layout math (`crate::layout`). They are small, single-purpose
//! and not used by the decode.
use crate::config::{
    handoff_word, NamedBarrier, BLOCK_BYTES, CONSUMER_WARPS, HANDOFF_BARRIERS, HANDOFF_ROUNDS,
    K_BLOCKS, QK_STEPS, SEESAW_THREADS, TILE_BYTES, V_BLOCKS,
};
use crate::element::{Bf16, Element, F16};
use crate::layout::{acc_coord, smem_desc, Major};
use crate::ptx::wgmma::{self, MmaShape, N128, N16, N32, N64};
use crate::ptx::{atomic, barrier, cp_async, fence, ids, mbarrier, opaque, regs, smem, tma, warp};
use crate::tile::load_swizzled;

/// Loads `n_pages` KV pages (ids in `pages`) of kv head `head` through the tensor map
/// `map` (rank 2: [rows, 576]; rank 3: [rows, h_kv, 576]) into shared memory and copies
/// the raw, swizzled bytes to `out`. One CTA; `n_pages` · 72 KB + 8 bytes of shared memory.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn selftest_tma_paged(
    map: *const u8,
    pages: *const i32,
    n_pages: u32,
    rank: u32,
    head: u32,
    out: *mut u32,
) {
    let base = smem::base();
    let bar = base + n_pages * TILE_BYTES;
    if ids::thread() == 0 {
        mbarrier::init(bar, 1);
        fence::mbarrier_init();
    }
    barrier::sync_cta();
    if ids::thread() == 0 {
        mbarrier::arrive_expect_tx(bar, n_pages * TILE_BYTES);
        for p in 0..n_pages {
            let row = *pages.add(p as usize) * 64;
            for c in 0..K_BLOCKS {
                let dst = base + p * TILE_BYTES + c * BLOCK_BYTES;
                let col = (c * 64) as i32;
                if rank == 2 {
                    tma::load_2d(dst, map, bar, col, row);
                } else {
                    tma::load_3d(dst, map, bar, col, head as i32, row);
                }
            }
        }
    }
    mbarrier::wait(bar, 0);
    let words = n_pages * TILE_BYTES / 4;
    let mut w = ids::thread();
    while w < words {
        *out.add(w as usize) = smem::ld_u32(base + 4 * w);
        w += 128;
    }
}

/// C[64×N] = A[64×576]·B[N×576]ᵀ, both operands K-major in swizzled shared memory: the
/// shape of Sᵀ = K·Qᵀ. One warpgroup.
#[inline(always)]
unsafe fn gemm_kmajor<T: Element, S: MmaShape>(a: *const u16, b: *const u16, c: *mut f32) {
    let n = S::N as u32;
    let base = smem::base();
    let (sa, sb) = (base, base + K_BLOCKS * BLOCK_BYTES);
    let t = ids::thread();
    load_swizzled(64, K_BLOCKS, sa, BLOCK_BYTES, t, 128, |r| {
        Some(a.add((r * 576) as usize))
    });
    load_swizzled(n, K_BLOCKS, sb, n * 128, t, 128, |r| {
        Some(b.add((r * 576) as usize))
    });
    cp_async::wait_all();
    fence::proxy_async_shared();
    barrier::sync_cta();
    let mut acc = S::zero();
    wgmma::fence();
    for k in 0..QK_STEPS {
        let (blk, koff) = (k / 4, (k % 4) * 32);
        let da = smem_desc(sa + blk * BLOCK_BYTES + koff, Major::K, 0);
        let db = smem_desc(sb + blk * n * 128 + koff, Major::K, 0);
        T::mma::<S>(&mut acc, da, db, k > 0);
    }
    wgmma::commit();
    wgmma::wait_all();
    for (i, v) in acc.as_ref().iter().enumerate() {
        let (row, col) = acc_coord(t, i as u32);
        *c.add((row * n + col) as usize) = *v;
    }
}

/// C[512×N] = Aᵀ·Bᵀ with A[64 tokens × 512] stored token-major (so Aᵀ is MN-major) and
/// B[N × 64 tokens] K-major: the shape of Oᵀ = Vᵀ·Pᵀ. One warpgroup, one m64 block at a
/// time.
#[inline(always)]
unsafe fn gemm_mnmajor<T: Element, S: MmaShape>(a: *const u16, b: *const u16, c: *mut f32) {
    let n = S::N as u32;
    let base = smem::base();
    let (sa, sb) = (base, base + V_BLOCKS * BLOCK_BYTES);
    let t = ids::thread();
    load_swizzled(64, V_BLOCKS, sa, BLOCK_BYTES, t, 128, |r| {
        Some(a.add((r * 512) as usize))
    });
    load_swizzled(n, 1, sb, 0, t, 128, |r| Some(b.add((r * 64) as usize)));
    cp_async::wait_all();
    fence::proxy_async_shared();
    barrier::sync_cta();
    // One m64 block at a time, not unrolled: at N = 128 an unrolled loop spills.
    for mb in 0..opaque(V_BLOCKS as u64) as u32 {
        let mut acc = S::zero();
        wgmma::fence();
        for k in 0..4 {
            let da = smem_desc(sa + mb * BLOCK_BYTES + k * 16 * 128, Major::MN, BLOCK_BYTES);
            let db = smem_desc(sb + k * 32, Major::K, 0);
            T::mma_ta::<S>(&mut acc, da, db, k > 0);
        }
        wgmma::commit();
        wgmma::wait_all();
        for (i, v) in acc.as_ref().iter().enumerate() {
            let (row, col) = acc_coord(t, i as u32);
            *c.add(((mb * 64 + row) * n + col) as usize) = *v;
        }
    }
}

macro_rules! gemm_kernels {
    ($($k:ident $mn:ident $t:ty, $s:ty;)*) => {$(
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $k(a: *const u16, b: *const u16, c: *mut f32) {
            gemm_kmajor::<$t, $s>(a, b, c)
        }
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $mn(a: *const u16, b: *const u16, c: *mut f32) {
            gemm_mnmajor::<$t, $s>(a, b, c)
        }
    )*};
}

gemm_kernels! {
    selftest_gemm_k_bf16_n16 selftest_gemm_mn_bf16_n16 Bf16, N16;
    selftest_gemm_k_bf16_n32 selftest_gemm_mn_bf16_n32 Bf16, N32;
    selftest_gemm_k_bf16_n64 selftest_gemm_mn_bf16_n64 Bf16, N64;
    selftest_gemm_k_bf16_n128 selftest_gemm_mn_bf16_n128 Bf16, N128;
    selftest_gemm_k_f16_n16 selftest_gemm_mn_f16_n16 F16, N16;
    selftest_gemm_k_f16_n32 selftest_gemm_mn_f16_n32 F16, N32;
    selftest_gemm_k_f16_n64 selftest_gemm_mn_f16_n64 F16, N64;
    selftest_gemm_k_f16_n128 selftest_gemm_mn_f16_n128 F16, N128;
}

/// Stages of the pipeline self-test.
pub const PIPELINE_STAGES: u32 = 3;
/// Bytes of one pipeline self-test tile: a 64×64 box of 16-bit values.
pub const PIPELINE_TILE_BYTES: u32 = 64 * 128;

/// Warp-specialised pipeline: warpgroup 0 (one elected thread) streams `n_tiles` 64×64
/// boxes of the 2-D tensor map `map` (tile t = rows (64·t) mod `rows`) through
/// `PIPELINE_STAGES` mbarrier stages; warpgroups 1 and 2 sum every 16-bit value of every
/// tile into `out`. 384 threads; setmaxnreg moves registers to the consumers.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn selftest_pipeline(
    map: *const u8,
    n_tiles: u32,
    rows: u32,
    out: *mut u64,
) {
    let base = smem::base();
    let full = |s: u32| base + PIPELINE_STAGES * PIPELINE_TILE_BYTES + 8 * s;
    let empty = |s: u32| full(PIPELINE_STAGES + s);
    if ids::thread() == 0 {
        for s in 0..PIPELINE_STAGES {
            mbarrier::init(full(s), 1);
            mbarrier::init(empty(s), CONSUMER_WARPS);
        }
        fence::mbarrier_init();
    }
    barrier::sync_cta();
    if ids::warpgroup() == 0 {
        regs::release_to_40();
        if ids::thread() == 0 {
            tma::prefetch_map(map);
            for t in 0..n_tiles {
                let (s, phase) = (t % PIPELINE_STAGES, (t / PIPELINE_STAGES) & 1);
                mbarrier::wait(empty(s), phase ^ 1);
                mbarrier::arrive_expect_tx(full(s), PIPELINE_TILE_BYTES);
                let row = ((t * 64) % rows) as i32;
                tma::load_2d(base + s * PIPELINE_TILE_BYTES, map, full(s), 0, row);
            }
        }
    } else {
        regs::claim_232();
        let ct = ids::thread() - 128;
        let words_per_thread = PIPELINE_TILE_BYTES / 4 / 256;
        let mut sum = 0u64;
        for t in 0..n_tiles {
            let (s, phase) = (t % PIPELINE_STAGES, (t / PIPELINE_STAGES) & 1);
            mbarrier::wait(full(s), phase);
            for w in 0..words_per_thread {
                let v =
                    smem::ld_u32(base + s * PIPELINE_TILE_BYTES + 4 * (ct * words_per_thread + w));
                sum += (v & 0xffff) as u64 + (v >> 16) as u64;
            }
            warp::sync();
            if ids::lane() == 0 {
                mbarrier::arrive(empty(s));
            }
        }
        atomic::add_u64(out, sum);
    }
}

/// The seesaw kernels' shape without their arithmetic: two warpgroups (256 threads) hand
/// the first `region_bytes` of dynamic shared memory (followed by `HANDOFF_BARRIERS`
/// mbarriers) back and forth `HANDOFF_ROUNDS` times, round r through the named barriers the
/// pair uses (`ScaleA` / `ScaleB`: one warpgroup arrives, the other syncs) where bit r of
/// `named_rounds` is set (`HANDOFF_NAMED_ROUNDS` as the seesaw kernels mix them), else
/// through an mbarrier (128 arrivals, a parity wait). The reader of each round adds up
/// every word into `out[round]`. Run at the seesaw kernels' size (`config::SeesawSmem`)
/// and at a small one, it tells a fault of compute-sanitizer's racecheck on kernels of
/// this shape from a race of the decode's own.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn selftest_seesaw_handoff(
    region_bytes: u32,
    named_rounds: u32,
    out: *mut u64,
) {
    let base = smem::base();
    let words = region_bytes / 4;
    let bar = |b: u32| base + region_bytes + 8 * b;
    if ids::thread() == 0 {
        for b in 0..HANDOFF_BARRIERS {
            mbarrier::init(bar(b), 128);
        }
        fence::mbarrier_init();
    }
    barrier::sync_cta();
    let (wg, t) = (ids::warpgroup(), ids::thread() % 128);
    // Phases each writer's mbarrier has completed so far (its wait parity).
    let mut phases = [0u32; 2];
    for r in 0..HANDOFF_ROUNDS {
        let (writer, by_named) = (r % 2, named_rounds & (1 << r) != 0);
        let named = if writer == 0 {
            NamedBarrier::ScaleA
        } else {
            NamedBarrier::ScaleB
        } as u32;
        if wg == writer {
            let mut w = t;
            while w < words {
                smem::st_u32(base + 4 * w, handoff_word(r, w));
                w += 128;
            }
            if by_named {
                barrier::arrive_named(named, SEESAW_THREADS);
            } else {
                mbarrier::arrive(bar(writer));
            }
        } else {
            if by_named {
                barrier::sync_named(named, SEESAW_THREADS);
            } else {
                mbarrier::wait(bar(writer), phases[writer as usize] & 1);
            }
            let (mut w, mut sum) = (t, 0u64);
            while w < words {
                sum += smem::ld_u32(base + 4 * w) as u64;
                w += 128;
            }
            atomic::add_u64(out.add(r as usize), sum);
        }
        if !by_named {
            phases[writer as usize] += 1;
        }
        // The hand-offs alone order the rounds (the next writer is this reader, and this
        // writer reads only what the next round hands over); the warpgroup's own barrier
        // is there because the seesaw kernels' warpgroups have one too.
        barrier::sync_named(NamedBarrier::ConsumerGroup0 as u32 + wg, 128);
    }
    barrier::sync_named(NamedBarrier::Consumers as u32, SEESAW_THREADS);
}
