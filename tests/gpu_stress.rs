//! GPU stress tests of the decode (reported as ignored, with the reason, where there is no
//! GPU):
//!
//! - `stress_random_shapes`: many random cases (dtype, s_q, causal, h_kv, h_q, batch and
//!   lengths drawn deterministically), each checked against the float64 reference with
//!   `check::Case::run_pooled` (two runs, bitwise equal, within the project's bounds;
//!   single-rounding cases with few output values judged over several draws of inputs).
//!   `ETAP_STRESS_CASES` sets the number of cases (default 10000), `ETAP_STRESS_SEED` the
//!   seed of the draw.
//! - `stress_streams_and_layers`: several streams decoding at once (each result bitwise
//!   equal to the same decode run alone), and one plan reused over several layers (each
//!   layer checked against the reference, repeated steps bitwise identical).
mod common;

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use flashmla_etap::check::{
    reference_for, upload_inputs, Case, CaseResult, DeviceInputs, FromF32, ToF64,
};
use flashmla_etap::decode::{
    DecodeConfig, DecodePlan, Decoder, KvCache, KvElement, OutElement, Precision,
};
use flashmla_etap::reference::{generate, Dtype, Inputs, MlaShape, Reference, SplitMix64, D_QK};
use std::sync::Arc;
use std::time::Instant;

/// Cases of `stress_random_shapes` unless `ETAP_STRESS_CASES` says otherwise.
const DEFAULT_CASES: usize = 10_000;
/// Float64 reference work (flops) allowed for an ordinary case; one case in
/// [`BIG_CASE_EVERY`] may use [`BIG_CASE_FLOPS`]. Keeps the mean near 3e7 flops.
const CASE_FLOPS: f64 = 1e8;
const BIG_CASE_FLOPS: f64 = 2e9;
const BIG_CASE_EVERY: u64 = 200;
/// Head counts drawn more often than the others (odd, small and the TP shards).
const HEADS: [usize; 8] = [1, 3, 16, 32, 63, 64, 126, 128];
/// Lengths around page boundaries, drawn as often as one uniform draw from 0..=2000.
const LENGTHS: [i32; 8] = [0, 1, 63, 64, 65, 127, 128, 129];

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// Multiply-adds of the float64 reference, ×2: every query row against every key (K 576
/// dims, V 512).
fn reference_flops(case: &Case) -> f64 {
    let tokens: f64 = case.lengths.iter().map(|&l| l as f64).sum();
    tokens * (case.s_q * case.h_q) as f64 * 2.0 * (D_QK + 512) as f64
}

/// One random case, not bounded in cost.
fn draw_once(rng: &mut SplitMix64) -> Case {
    let dtype = if rng.below(2) == 0 {
        Dtype::Bf16
    } else {
        Dtype::F16
    };
    let s_q = 1 + rng.below(4) as usize;
    let causal = rng.below(2) == 0;
    let h_kv = if rng.below(8) == 0 { 2 } else { 1 };
    let h_q = if rng.below(2) == 0 {
        HEADS[rng.below(HEADS.len() as u64) as usize]
    } else {
        1 + rng.below(128) as usize
    };
    let h_q = (h_q / h_kv).max(1) * h_kv;
    let batch = if rng.below(16) == 0 {
        1 + rng.below(64) as usize
    } else {
        1 + rng.below(8) as usize
    };
    let length = |rng: &mut SplitMix64| {
        let k = rng.below(LENGTHS.len() as u64 + 1) as usize;
        if k < LENGTHS.len() {
            LENGTHS[k]
        } else {
            rng.below(2001) as i32
        }
    };
    let mut lengths: Vec<i32> = if rng.below(4) == 0 {
        vec![length(rng); batch]
    } else {
        (0..batch).map(|_| length(rng)).collect()
    };
    if rng.below(20) == 0 {
        // The most the block table allows: MlaShape::for_lengths sizes it for the longest
        // request, so a full last page.
        let max = lengths.iter().copied().max().unwrap_or(0);
        let full = (max.max(1) as usize).div_ceil(64) * 64;
        lengths[rng.below(batch as u64) as usize] = full as i32;
    }
    Case {
        h_kv,
        out_f32: rng.below(16) == 0,
        seed: rng.next_u64(),
        precision: if rng.below(4) == 0 {
            Precision::Fast
        } else {
            Precision::Accurate
        },
        ..Case::new(dtype, s_q, h_q, lengths, causal)
    }
}

/// One random case whose reference cost fits the budget (redrawn until it does).
fn draw_case(rng: &mut SplitMix64) -> Case {
    let budget = if rng.below(BIG_CASE_EVERY) == 0 {
        BIG_CASE_FLOPS
    } else {
        CASE_FLOPS
    };
    loop {
        let case = draw_once(rng);
        if reference_flops(&case) <= budget {
            return case;
        }
    }
}

/// The draw itself (no GPU): deterministic, covers every dimension, and its mean reference
/// cost stays within the stress test's time budget.
fn stress_draw_is_deterministic_and_cheap() {
    let draw = |n: usize| {
        let mut rng = SplitMix64(1);
        (0..n).map(|_| draw_case(&mut rng)).collect::<Vec<_>>()
    };
    let (a, b) = (draw(DEFAULT_CASES), draw(DEFAULT_CASES));
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| x.describe() == y.describe() && x.seed == y.seed));
    let mean = a.iter().map(reference_flops).sum::<f64>() / a.len() as f64;
    assert!(mean < 5e7, "mean reference cost {mean:.2e} flops per case");
    let has = |f: &dyn Fn(&Case) -> bool| a.iter().any(f);
    assert!(has(&|c| c.h_kv == 2) && has(&|c| c.out_f32) && has(&|c| c.causal));
    assert!(has(&|c| c.precision == Precision::Fast));
    assert!(has(&|c| c.dtype == Dtype::F16) && has(&|c| c.s_q == 4));
    assert!(has(&|c| c.h_q == 128) && has(&|c| c.h_q == 63) && has(&|c| c.batch() > 32));
    assert!(has(&|c| c.lengths.contains(&0)) && has(&|c| c.lengths.contains(&65)));
    assert!(has(&|c| c.lengths.iter().any(|&l| l > 1000 && l % 64 == 0)));
    println!(
        "stress draw: {} cases, mean reference cost {mean:.2e} flops",
        a.len()
    );
}

fn stress_random_shapes() {
    let gpu = require_gpu!("stress_random_shapes");
    let decoder = Decoder::new(&gpu).unwrap();
    let n = env_u64("ETAP_STRESS_CASES").unwrap_or(DEFAULT_CASES as u64) as usize;
    let seed = env_u64("ETAP_STRESS_SEED").unwrap_or(1);
    println!(
        "stress: {n} random cases (seed {seed}) on {}",
        gpu.describe()
    );
    let mut rng = SplitMix64(seed);
    let (mut passed, mut worst_ratio, mut max_lse) = (0usize, 0.0f64, 0.0f64);
    let mut worst_case = String::new();
    let mut failures = Vec::new();
    let t = Instant::now();
    for i in 0..n {
        let case = draw_case(&mut rng);
        let label = || format!("#{i} {} seed {}", case.describe(), case.seed);
        match case.run_pooled(&decoder) {
            Ok(r) => {
                if r.ratio() > worst_ratio {
                    worst_ratio = r.ratio();
                    worst_case = format!("{}: {r}", label());
                }
                if r.lse_rel_err.is_finite() {
                    max_lse = max_lse.max(r.lse_rel_err);
                }
                if r.passes() {
                    passed += 1;
                } else {
                    failures.push(format!("{}: {r}", label()));
                }
            }
            Err(e) => failures.push(format!("{}: error: {e}", label())),
        }
        if (i + 1) % 1000 == 0 && i + 1 < n {
            println!(
                "stress: {}/{n} cases, {} failed so far ({:.0} s)",
                i + 1,
                failures.len(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "stress: {n} cases, {passed} passed, {} failed; worst rmse/floor ratio {worst_ratio:.3}; \
         max lse err {max_lse:.1e} ({:.0} s)",
        failures.len(),
        t.elapsed().as_secs_f64()
    );
    if !worst_case.is_empty() {
        println!("stress: worst case {worst_case}");
    }
    for f in failures.iter().take(10) {
        println!("stress FAIL {f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {n} random cases failed (ETAP_STRESS_SEED={seed}); first: {}",
        failures.len(),
        failures[0]
    );
}

/// One decode problem with its host inputs, device inputs and reference.
struct Work<T: DeviceRepr> {
    shape: MlaShape,
    causal: bool,
    inputs: Inputs,
    dev: DeviceInputs<T>,
    reference: Reference,
}

impl<T: DeviceRepr + FromF32> Work<T> {
    fn new(
        stream: &Arc<CudaStream>,
        dtype: Dtype,
        (s_q, h_q, causal): (usize, usize, bool),
        lengths: &[i32],
        seed: u64,
    ) -> Work<T> {
        let shape = MlaShape::for_lengths(s_q, h_q, 1, 64, lengths);
        let inputs = generate(&shape, lengths, dtype, seed).unwrap();
        let reference = reference_for(&shape, &inputs, scale(), causal).unwrap();
        let dev = upload_inputs::<T>(stream, &inputs).unwrap();
        Work {
            shape,
            causal,
            inputs,
            dev,
            reference,
        }
    }
    fn config(&self) -> DecodeConfig {
        DecodeConfig::new(self.shape.batch, self.shape.h_q, self.shape.max_pages)
            .s_q(self.shape.s_q)
            .causal(self.causal)
            .softmax_scale(scale() as f32)
    }
}

fn scale() -> f64 {
    (D_QK as f64).powf(-0.5)
}

/// out and lse as bit patterns (bitwise comparison: NaN equals itself, -0 differs from +0).
type Bits = (Vec<u64>, Vec<u32>);

fn read_bits<O: DeviceRepr + ToF64>(
    stream: &Arc<CudaStream>,
    out: &CudaSlice<O>,
    lse: &CudaSlice<f32>,
) -> Bits {
    let o: Vec<O> = stream.clone_dtoh(out).unwrap();
    let l: Vec<f32> = stream.clone_dtoh(lse).unwrap();
    (
        o.iter().map(|x| x.to_f64().to_bits()).collect(),
        l.iter().map(|x| x.to_bits()).collect(),
    )
}

/// Checks `bits` (the output of `work`'s decode) against its float64 reference.
fn check_against_reference<T: DeviceRepr>(what: &str, work: &Work<T>, dtype: Dtype, bits: &Bits) {
    let out: Vec<f64> = bits.0.iter().map(|&b| f64::from_bits(b)).collect();
    let lse: Vec<f32> = bits.1.iter().map(|&b| f32::from_bits(b)).collect();
    let r = CaseResult::measure(
        &out,
        &lse,
        &work.reference,
        dtype,
        false,
        true,
        // `Work::config` leaves the precision at its default, which splits P.
        false,
    )
    .unwrap();
    println!("{what}: {r}");
    assert!(r.passes(), "{what} differs from the reference: {r}");
}

/// Decodes `work` once on `stream` into fresh outputs.
fn decode_fresh<T: KvElement + DeviceRepr, O: OutElement<T> + ValidAsZeroBits>(
    decoder: &Decoder,
    stream: &Arc<CudaStream>,
    plan: &mut DecodePlan,
    work: &Work<T>,
    cache: &KvCache<'_, T>,
) -> (CudaSlice<O>, CudaSlice<f32>) {
    let mut out = stream.alloc_zeros::<O>(work.shape.out_len()).unwrap();
    let mut lse = stream.alloc_zeros::<f32>(work.shape.lse_len()).unwrap();
    decoder
        .decode(
            stream,
            plan,
            &work.dev.q,
            cache,
            &work.dev.block_table,
            &work.dev.seqlens,
            &mut out,
            &mut lse,
        )
        .unwrap();
    (out, lse)
}

fn stress_streams_and_layers() {
    use half::{bf16, f16};
    let gpu = require_gpu!("stress_streams_and_layers");
    let decoder = Decoder::new(&gpu).unwrap();
    let main = gpu.stream.clone();

    // --- Several streams at once -------------------------------------------------------
    // Different shapes per stream, each with its own inputs, plan and outputs.
    let specs: [((usize, usize, bool), Vec<i32>); 4] = [
        ((1, 16, false), vec![5000, 3, 1200, 64]),
        ((2, 32, true), vec![777; 6]),
        ((4, 128, true), vec![2000, 0, 129]),
        ((1, 3, false), (0..40).map(|i| i * 97 % 900).collect()),
    ];
    let works: Vec<Work<bf16>> = specs
        .iter()
        .enumerate()
        .map(|(k, (shape, lengths))| Work::new(&main, Dtype::Bf16, *shape, lengths, 50 + k as u64))
        .collect();
    let caches: Vec<KvCache<'_, bf16>> = works
        .iter()
        .map(|w| KvCache::new(&gpu, &w.dev.kv_cache, w.shape.num_blocks, 1).unwrap())
        .collect();
    let mut plans: Vec<DecodePlan> = works
        .iter()
        .map(|w| DecodePlan::new(&gpu, w.config(), &w.inputs.seqlens).unwrap())
        .collect();

    // Alone, one after the other on the library's stream.
    let mut alone = Vec::new();
    for (k, w) in works.iter().enumerate() {
        let (out, lse) = decode_fresh::<bf16, bf16>(&decoder, &main, &mut plans[k], w, &caches[k]);
        let bits = read_bits(&main, &out, &lse);
        check_against_reference(&format!("stream workload {k} alone"), w, Dtype::Bf16, &bits);
        alone.push(bits);
    }
    main.synchronize().unwrap();

    // Concurrently: each workload on its own stream, launches interleaved round-robin,
    // several decodes per stream into the same outputs.
    let streams: Vec<_> = works
        .iter()
        .map(|_| gpu.ctx.new_stream().unwrap())
        .collect();
    for round in 0..3 {
        let mut outs: Vec<(CudaSlice<bf16>, CudaSlice<f32>)> = works
            .iter()
            .zip(&streams)
            .map(|(w, st)| {
                (
                    st.alloc_zeros(w.shape.out_len()).unwrap(),
                    st.alloc_zeros(w.shape.lse_len()).unwrap(),
                )
            })
            .collect();
        for _ in 0..4 {
            for (k, w) in works.iter().enumerate() {
                let (out, lse) = &mut outs[k];
                decoder
                    .decode(
                        &streams[k],
                        &mut plans[k],
                        &w.dev.q,
                        &caches[k],
                        &w.dev.block_table,
                        &w.dev.seqlens,
                        out,
                        lse,
                    )
                    .unwrap();
            }
        }
        for (k, st) in streams.iter().enumerate() {
            let bits = read_bits(st, &outs[k].0, &outs[k].1);
            assert!(
                bits == alone[k],
                "round {round}: workload {k} on its own stream (4 streams at once) differs \
                 from the same decode run alone"
            );
        }
    }
    println!(
        "{} streams decoding at once (3 rounds × 4 calls each): bitwise equal to each decode \
         run alone",
        streams.len()
    );

    // --- One plan, many layers ---------------------------------------------------------
    const LAYERS: usize = 8;
    let lengths = vec![1500, 0, 65, 700, 2048, 1];
    let layers: Vec<Work<f16>> = (0..LAYERS)
        .map(|l| Work::new(&main, Dtype::F16, (2, 32, true), &lengths, 900 + l as u64))
        .collect();
    let layer_caches: Vec<KvCache<'_, f16>> = layers
        .iter()
        .map(|w| KvCache::new(&gpu, &w.dev.kv_cache, w.shape.num_blocks, 1).unwrap())
        .collect();
    let mut plan = DecodePlan::new(&gpu, layers[0].config(), &lengths).unwrap();
    let mut step = |order: &[usize]| -> Vec<Bits> {
        let mut outs: Vec<Option<(CudaSlice<f16>, CudaSlice<f32>)>> =
            (0..LAYERS).map(|_| None).collect();
        for &l in order {
            outs[l] = Some(decode_fresh::<f16, f16>(
                &decoder,
                &main,
                &mut plan,
                &layers[l],
                &layer_caches[l],
            ));
        }
        outs.iter()
            .map(|o| {
                let (out, lse) = o.as_ref().unwrap();
                read_bits(&main, out, lse)
            })
            .collect()
    };
    let forward: Vec<usize> = (0..LAYERS).collect();
    let first = step(&forward);
    for (l, bits) in first.iter().enumerate() {
        check_against_reference(
            &format!("layer {l} (one plan)"),
            &layers[l],
            Dtype::F16,
            bits,
        );
    }
    for rep in 0..3 {
        assert!(
            step(&forward) == first,
            "repeat {rep}: a layer's output differs bitwise from the first step"
        );
    }
    let backward: Vec<usize> = (0..LAYERS).rev().collect();
    assert!(
        step(&backward) == first,
        "layers decoded in reverse order differ bitwise from the forward step"
    );
    println!(
        "one plan over {LAYERS} layers: every layer matches the reference; 4 more steps \
         (one in reverse layer order) bitwise identical"
    );
}

test_main!(
    stress_draw_is_deterministic_and_cheap,
    stress_random_shapes,
    stress_streams_and_layers,
);
