//! GPU tests of the Hopper primitives, each against an expectation computed on the CPU
//! with the layout math the kernels use (`etap_kernel::layout`): a paged TMA load into
//! swizzled shared memory, wgmma in the two ETAP shapes, the warp-specialised
//! producer/consumer pipeline, the seesaw kernels' hand-offs between warpgroups, and the
//! SM clock probe the bench runs. Reported as ignored, with the reason, where there is
//! no GPU.
mod common;

use cudarc::driver::{sys, DevicePtr, DevicePtrMut};
use etap_kernel::config::{
    handoff_word, SeesawSmem, BLOCK_BYTES, HANDOFF_BARRIERS, HANDOFF_NAMED_ROUNDS, HANDOFF_ROUNDS,
    K_BLOCKS, SEESAW_THREADS, TILE_BYTES,
};
use etap_kernel::layout::swizzled_offset;
use flashmla_etap::probe::{ClockProbe, CLOCK_PROBE_NS};
use flashmla_etap::reference::SplitMix64;
use flashmla_etap::{
    encode_tiled, kernel_args, launch, Gpu, Kernels, LaunchSpec, Swizzle, TmaDtype,
};

fn random_values(n: usize, seed: u64, f16: bool) -> (Vec<u16>, Vec<f64>) {
    let mut rng = SplitMix64(seed);
    (0..n)
        .map(|_| {
            let x = (rng.next_unit() * 2.0 - 1.0) as f32;
            if f16 {
                let h = half::f16::from_f32(x);
                (h.to_bits(), h.to_f64())
            } else {
                let h = half::bf16::from_f32(x);
                (h.to_bits(), h.to_f64())
            }
        })
        .unzip()
}

fn tma_paged(gpu: &Gpu, k: &Kernels, rank: u32) {
    let (num_blocks, h_kv, head) = if rank == 2 {
        (9usize, 1usize, 0u32)
    } else {
        (9, 3, 2)
    };
    let n = num_blocks * 64 * h_kv * 576;
    let cache: Vec<u16> = (0..n)
        .map(|i| (i as u64).wrapping_mul(0x9e37_79b9) as u16)
        .collect();
    let pages = [7i32, 2];
    let s = &gpu.stream;
    let d_cache = s.clone_htod(&cache).unwrap();
    let d_pages = s.clone_htod(&pages).unwrap();
    let mut d_out = s.alloc_zeros::<u32>((2 * TILE_BYTES / 4) as usize).unwrap();
    let (base, _g) = d_cache.device_ptr(s);
    let rows = (num_blocks * 64) as u64;
    let map = if rank == 2 {
        encode_tiled(
            TmaDtype::Bf16,
            base,
            &[576, rows],
            &[1152],
            &[64, 64],
            Swizzle::B128,
        )
    } else {
        let row = (h_kv * 1152) as u64;
        encode_tiled(
            TmaDtype::Bf16,
            base,
            &[576, h_kv as u64, rows],
            &[1152, row],
            &[64, 1, 64],
            Swizzle::B128,
        )
    }
    .unwrap();
    let d_map = map.upload(gpu).unwrap();
    let smem = 2 * TILE_BYTES + 8;
    k.set_max_dynamic_smem("selftest_tma_paged", smem).unwrap();
    let f = k.function("selftest_tma_paged").unwrap();
    {
        let (mut m, _a) = d_map.device_ptr(s);
        let (mut p, _b) = d_pages.device_ptr(s);
        let (mut o, _c) = d_out.device_ptr_mut(s);
        let (mut np, mut rk, mut hd) = (2u32, rank, head);
        let mut args = kernel_args![m, p, np, rk, hd, o];
        unsafe { launch(f, &LaunchSpec::linear(1, 128, smem), s, &mut args).unwrap() };
    }
    let out: Vec<u32> = s.clone_dtoh(&d_out).unwrap();
    let bytes: &[u8] = bytemuck::cast_slice(&out);
    let mut mismatches = 0;
    for (p, &page) in pages.iter().enumerate() {
        for c in 0..K_BLOCKS {
            for tok in 0..64u32 {
                for d in 0..64u32 {
                    let off = p * TILE_BYTES as usize
                        + (c * BLOCK_BYTES + swizzled_offset(tok, d)) as usize;
                    let got = u16::from_le_bytes([bytes[off], bytes[off + 1]]);
                    let row = page as usize * 64 + tok as usize;
                    let want = cache[(row * h_kv + head as usize) * 576 + (c * 64 + d) as usize];
                    if got != want {
                        mismatches += 1;
                    }
                }
            }
        }
    }
    assert_eq!(
        mismatches, 0,
        "rank-{rank} paged TMA load: {mismatches} elements not where the swizzle math puts them"
    );
    println!(
        "rank-{rank} paged TMA: 2 pages (ids {pages:?}) × 9 boxes landed exactly as predicted"
    );
}

fn tma_paged_load_lands_swizzled_as_predicted() {
    let gpu = require_gpu!("tma_paged_load_lands_swizzled_as_predicted");
    let k = Kernels::load(&gpu).unwrap();
    tma_paged(&gpu, &k, 2);
    tma_paged(&gpu, &k, 3);
}

/// Runs one wgmma self-test GEMM; returns (max |err| / Σ|a·b| bound ratio, max abs err).
fn gemm(gpu: &Gpu, k: &Kernels, kind: &str, f16: bool, n: usize) -> f64 {
    let s = &gpu.stream;
    let (m, kdim, a_len, b_len) = if kind == "k" {
        (64, 576, 64 * 576, n * 576)
    } else {
        (512, 64, 64 * 512, n * 64)
    };
    let (a_bits, a) = random_values(a_len, 1 + n as u64, f16);
    let (b_bits, b) = random_values(b_len, 100 + n as u64, f16);
    let d_a = s.clone_htod(&a_bits).unwrap();
    let d_b = s.clone_htod(&b_bits).unwrap();
    let mut d_c = s.alloc_zeros::<f32>(m * n).unwrap();
    let name = format!(
        "selftest_gemm_{kind}_{}_n{n}",
        if f16 { "f16" } else { "bf16" }
    );
    let smem = if kind == "k" {
        (K_BLOCKS * BLOCK_BYTES) as usize + n * 1152
    } else {
        8 * BLOCK_BYTES as usize + n * 128
    };
    k.set_max_dynamic_smem(&name, smem as u32).unwrap();
    let f = k.function(&name).unwrap();
    {
        let (mut pa, _a) = d_a.device_ptr(s);
        let (mut pb, _b) = d_b.device_ptr(s);
        let (mut pc, _c) = d_c.device_ptr_mut(s);
        let mut args = kernel_args![pa, pb, pc];
        unsafe { launch(f, &LaunchSpec::linear(1, 128, smem as u32), s, &mut args).unwrap() };
    }
    let c: Vec<f32> = s.clone_dtoh(&d_c).unwrap();
    let mut worst = 0.0f64;
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for t in 0..kdim {
                let (x, y) = if kind == "k" {
                    (a[i * 576 + t], b[j * 576 + t])
                } else {
                    (a[t * 512 + i], b[j * 64 + t])
                };
                exact += x * y;
                mag += (x * y).abs();
            }
            let err = (c[i * n + j] as f64 - exact).abs() / (mag + 1e-30);
            worst = worst.max(err);
        }
    }
    // f32 accumulation of exactly-representable products: error far below 1e-4·Σ|a·b|;
    // a wrong layout or descriptor gives errors of order 1.
    assert!(
        worst < 1e-4,
        "{name}: max |C - exact| / Σ|a·b| = {worst:.3e}"
    );
    worst
}

fn wgmma_gemms_in_both_etap_shapes() {
    let gpu = require_gpu!("wgmma_gemms_in_both_etap_shapes");
    let k = Kernels::load(&gpu).unwrap();
    for kind in ["k", "mn"] {
        for f16 in [false, true] {
            for n in [16, 32, 64, 128] {
                let w = gemm(&gpu, &k, kind, f16, n);
                println!(
                    "wgmma {} {} N={n}: max |err|/Σ|ab| = {w:.2e}",
                    if kind == "k" {
                        "Sᵀ=K·Qᵀ (K-major A,B)"
                    } else {
                        "Oᵀ=Vᵀ·Pᵀ (MN-major A)"
                    },
                    if f16 { "fp16" } else { "bf16" }
                );
            }
        }
    }
}

fn warp_specialized_pipeline_checksum() {
    let gpu = require_gpu!("warp_specialized_pipeline_checksum");
    let k = Kernels::load(&gpu).unwrap();
    let s = &gpu.stream;
    let rows = 4096usize;
    let data: Vec<u16> = (0..rows * 64)
        .map(|i| ((i as u64 * 2654435761) >> 7) as u16)
        .collect();
    let d_data = s.clone_htod(&data).unwrap();
    let (base, _g) = d_data.device_ptr(s);
    let map = encode_tiled(
        TmaDtype::Bf16,
        base,
        &[64, rows as u64],
        &[128],
        &[64, 64],
        Swizzle::B128,
    )
    .unwrap();
    let d_map = map.upload(&gpu).unwrap();
    let n_tiles = 3001u32;
    let tiles_per_pass = rows / 64;
    let tile_sum = |t: usize| -> u64 {
        let r0 = (t % tiles_per_pass) * 64;
        data[r0 * 64..(r0 + 64) * 64]
            .iter()
            .map(|&v| v as u64)
            .sum()
    };
    let want: u64 = (0..n_tiles as usize).map(tile_sum).sum();
    let smem = 3 * 64 * 128 + 6 * 8;
    k.set_max_dynamic_smem("selftest_pipeline", smem).unwrap();
    let f = k.function("selftest_pipeline").unwrap();
    for run in 0..20 {
        let mut d_out = s.alloc_zeros::<u64>(1).unwrap();
        {
            let (mut m, _a) = d_map.device_ptr(s);
            let (mut o, _b) = d_out.device_ptr_mut(s);
            let (mut nt, mut r) = (n_tiles, rows as u32);
            let mut args = kernel_args![m, nt, r, o];
            unsafe { launch(f, &LaunchSpec::linear(1, 384, smem), s, &mut args).unwrap() };
        }
        let got = s.clone_dtoh(&d_out).unwrap()[0];
        assert_eq!(got, want, "run {run}: checksum over {n_tiles} tiles");
    }
    println!("pipeline: 1 producer warp, 2 consumer warpgroups, 3 stages, {n_tiles} tiles: checksum {want} exact in 20 runs");
}

/// The seesaw kernels' barriers without their arithmetic (`selftest_seesaw_handoff`) over
/// the first `region_bytes` of shared memory, the rounds in `named_rounds` at named
/// barriers and the others through mbarriers. Run alone under compute-sanitizer's
/// racecheck, at the seesaw kernels' size and at a small one, with both kinds of barrier
/// or one, it tells a fault of the tool on kernels of this shape from a race of the
/// decode's own, and which barrier the fault needs.
fn seesaw_handoff(test_name: &str, region_bytes: u32, named_rounds: u32) {
    let gpu = require_gpu!(test_name);
    let k = Kernels::load(&gpu).unwrap();
    let s = &gpu.stream;
    let words = region_bytes / 4;
    let smem = region_bytes + 8 * HANDOFF_BARRIERS;
    k.set_max_dynamic_smem("selftest_seesaw_handoff", smem)
        .unwrap();
    let f = k.function("selftest_seesaw_handoff").unwrap();
    let mut d_out = s.alloc_zeros::<u64>(HANDOFF_ROUNDS as usize).unwrap();
    {
        let (mut o, _g) = d_out.device_ptr_mut(s);
        let (mut bytes, mut named) = (region_bytes, named_rounds);
        let mut args = kernel_args![bytes, named, o];
        let spec = LaunchSpec::linear(1, SEESAW_THREADS, smem);
        unsafe { launch(f, &spec, s, &mut args).unwrap() };
    }
    let got = s.clone_dtoh(&d_out).unwrap();
    for (r, &sum) in got.iter().enumerate() {
        let want: u64 = (0..words).map(|w| handoff_word(r as u32, w) as u64).sum();
        assert_eq!(sum, want, "round {r}: the reader's sum over {words} words");
    }
    let by_named = (named_rounds & ((1 << HANDOFF_ROUNDS) - 1)).count_ones();
    let by_mbarrier = HANDOFF_ROUNDS - by_named;
    println!(
        "seesaw hand-off: {smem} bytes of shared memory, {by_named} rounds through named barriers and {by_mbarrier} through mbarriers, every sum exact"
    );
}

fn seesaw_handoff_at_the_seesaw_size() {
    seesaw_handoff(
        "seesaw_handoff_at_the_seesaw_size",
        SeesawSmem::new().bars,
        HANDOFF_NAMED_ROUNDS,
    );
}

fn seesaw_handoff_in_16_kib() {
    seesaw_handoff("seesaw_handoff_in_16_kib", 16 * 1024, HANDOFF_NAMED_ROUNDS);
}

fn seesaw_handoff_by_named_barriers_only() {
    seesaw_handoff("seesaw_handoff_by_named_barriers_only", 16 * 1024, !0);
}

fn seesaw_handoff_by_mbarriers_only() {
    seesaw_handoff("seesaw_handoff_by_mbarriers_only", 16 * 1024, 0);
}

fn sm_clock_probe_counts_a_plausible_clock() {
    let gpu = require_gpu!("sm_clock_probe_counts_a_plausible_clock");
    let k = Kernels::load(&gpu).unwrap();
    let max_khz = gpu
        .ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)
        .unwrap();
    let max_mhz = f64::from(max_khz) * 1e-3;
    let mut probe = ClockProbe::new(&gpu, &k, 4).unwrap();
    for i in 0..3 {
        probe.run(i).unwrap();
    }
    assert!(
        probe.run(4).is_err(),
        "a reading past the slots is an error"
    );
    let raw = probe.read_raw().unwrap();
    let mhz = probe.read_mhz().unwrap();
    for (i, &(cycles, ns)) in raw[..3].iter().enumerate() {
        // From one timer step to the first at least CLOCK_PROBE_NS later: a few µs over
        // at most, whatever the step; swapped slots hold tens of thousands of cycles here.
        assert!(
            (CLOCK_PROBE_NS..CLOCK_PROBE_NS + 5_000).contains(&ns),
            "reading {i}: {cycles} cycles over {ns} ns"
        );
        // An idle card runs near its top clock (1980 MHz on an H100 or H200, which read
        // 1979-1981): the timer read as the cycle counter would give 1000.
        let m = mhz[i].unwrap();
        assert!(
            (0.7 * max_mhz..=1.02 * max_mhz).contains(&m),
            "reading {i}: {m} MHz against a top clock of {max_mhz} MHz"
        );
    }
    assert_eq!(raw[3], (0, 0), "the reading not run stays empty");
    assert_eq!(mhz[3], None);
    println!("SM clock probe: {mhz:?} MHz (top clock {max_mhz} MHz)");
}

test_main!(
    tma_paged_load_lands_swizzled_as_predicted,
    wgmma_gemms_in_both_etap_shapes,
    warp_specialized_pipeline_checksum,
    seesaw_handoff_at_the_seesaw_size,
    seesaw_handoff_in_16_kib,
    seesaw_handoff_by_named_barriers_only,
    seesaw_handoff_by_mbarriers_only,
    sm_clock_probe_counts_a_plausible_clock,
);
