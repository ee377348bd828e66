//! GPU correctness of the ETAP decode against the float64 reference (see
//! `flashmla_etap::check`). Reported as ignored, with the reason, where there is no GPU.
mod common;

use flashmla_etap::check::Case;
use flashmla_etap::decode::{Decoder, Precision};
use flashmla_etap::reference::Dtype;

fn run_all(name: &str, cases: &[Case]) {
    let gpu = require_gpu!(name);
    let decoder = Decoder::new(&gpu).unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let r = case
            .run(&decoder)
            .unwrap_or_else(|e| panic!("{}: {e}", case.describe()));
        let verdict = if r.passes() { "ok" } else { "FAIL" };
        println!("{verdict} {}: {r}", case.describe());
        if !r.passes() {
            failures.push(case.describe());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed: {failures:#?}",
        failures.len(),
        cases.len()
    );
}

fn case(dtype: Dtype, s_q: usize, h_q: usize, lengths: Vec<i32>, causal: bool) -> Case {
    Case {
        seed: 7,
        ..Case::new(dtype, s_q, h_q, lengths, causal)
    }
}

/// One eager decode call of `plan` over the uploaded inputs: (out, lse) on the host.
fn decode_to_host(
    decoder: &Decoder,
    plan: &mut flashmla_etap::decode::DecodePlan,
    dev: &flashmla_etap::check::DeviceInputs<half::bf16>,
    cache: &flashmla_etap::decode::KvCache<half::bf16>,
    shape: &flashmla_etap::reference::MlaShape,
) -> (Vec<half::bf16>, Vec<f32>) {
    let s = &decoder.gpu().stream;
    let mut out = s.alloc_zeros(shape.out_len()).unwrap();
    let mut lse = s.alloc_zeros(shape.lse_len()).unwrap();
    let (q, bt, sl) = (&dev.q, &dev.block_table, &dev.seqlens);
    decoder
        .decode(s, plan, q, cache, bt, sl, &mut out, &mut lse)
        .unwrap();
    (s.clone_dtoh(&out).unwrap(), s.clone_dtoh(&lse).unwrap())
}

/// Whether two (out, lse) results are bitwise equal.
fn bitwise_equal(a: &(Vec<half::bf16>, Vec<f32>), b: &(Vec<half::bf16>, Vec<f32>)) -> bool {
    a.0.iter()
        .zip(&b.0)
        .all(|(x, y)| x.to_bits() == y.to_bits())
        && a.1
            .iter()
            .zip(&b.1)
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

fn decode_smoke() {
    run_all("decode_smoke", &flashmla_etap::check::smoke());
}

/// Calls that read more KV than the L2 holds: the decode streams it evict-first and the
/// combine drops each partial result's L2 lines once read (`Schedule::drops_partials`);
/// every case runs twice (the second call after the first one's drops) and must match the
/// reference and itself bit for bit.
fn beyond_the_l2() {
    use flashmla_etap::decode::DecodePlan;
    let gpu = require_gpu!("beyond_the_l2");
    let cases = [
        case(Dtype::Bf16, 1, 16, vec![65536; 4], false),
        case(
            Dtype::Bf16,
            1,
            16,
            vec![40000, 3000, 61000, 17, 30000],
            false,
        ),
        Case {
            precision: Precision::Fast,
            ..case(Dtype::Bf16, 1, 64, vec![32768; 3], false)
        },
        Case {
            precision: Precision::Fast,
            ..case(Dtype::F16, 1, 32, vec![50000, 26000], false)
        },
    ];
    for c in &cases {
        let config = c.config(&c.shape());
        let schedule = DecodePlan::schedule(&config, &c.lengths, gpu.sm_count).unwrap();
        assert!(
            schedule.drops_partials(gpu.l2_bytes) && schedule.max_splits > 1,
            "{}: {} KV bytes against {} of L2, {} pieces at most: not a case for this test",
            c.describe(),
            schedule.kv_bytes,
            gpu.l2_bytes,
            schedule.max_splits
        );
    }
    drop(gpu);
    run_all("beyond_the_l2", &cases);
}

/// Pages past 2 GiB and 4 GiB of the cache, and its last pages: a bf16 cache of 80,000
/// pages (5.9 GB, 2.9 · 10^9 elements), every page NaN but those the requests own, which
/// sit at byte offsets around 2^31 and 2^32 (where 32-bit element or byte offsets would
/// wrap) and at the cache's end. Both kernel families, both precisions, against the float64
/// reference of the same pages in a compact cache.
fn pages_beyond_4_gib_of_the_cache() {
    use flashmla_etap::check::{reference_for, CaseResult};
    use flashmla_etap::decode::{DecodePlan, KvCache};
    use flashmla_etap::reference::generate;
    use half::bf16;
    const PAGES: usize = 80_000;
    const PAGE_ELEMS: usize = 64 * 576;
    const PAGE_BYTES: usize = PAGE_ELEMS * 2;
    // Runs of page ids straddling the 2^31- and 2^32-byte offsets, then the last pages.
    let page_runs = [
        ((1usize << 31) / PAGE_BYTES - 8, 18),
        ((1usize << 32) / PAGE_BYTES - 8, 18),
        (PAGES - 20, 20),
    ];
    let slots: Vec<usize> = page_runs.iter().flat_map(|&(at, n)| at..at + n).collect();
    assert!(slots
        .iter()
        .any(|&p| p * PAGE_BYTES < 1 << 32 && (p + 1) * PAGE_BYTES > 1 << 32));

    let gpu = require_gpu!("pages_beyond_4_gib_of_the_cache");
    let decoder = Decoder::new(&gpu).unwrap();
    let s = &gpu.stream;
    // SAFETY: every element is written by the NaN fill below before any read.
    let mut big = unsafe { s.alloc::<bf16>(PAGES * PAGE_ELEMS) }.unwrap();
    let nan_chunk_pages = 500;
    let nan = s
        .clone_htod(&vec![bf16::NAN; nan_chunk_pages * PAGE_ELEMS])
        .unwrap();
    let mut failures = Vec::new();
    for (h_q, precision) in [
        (16, Precision::Accurate),
        (16, Precision::Fast),
        (128, Precision::Accurate),
        (128, Precision::Fast),
    ] {
        let case = Case {
            precision,
            ..case(Dtype::Bf16, 1, h_q, vec![1000, 700, 1500], false)
        };
        let shape = case.shape();
        assert!(
            shape.num_blocks <= slots.len(),
            "{} pages",
            shape.num_blocks
        );
        let inputs = generate(&shape, &case.lengths, Dtype::Bf16, case.seed).unwrap();
        let scale = case.softmax_scale();
        let reference = reference_for(&shape, &inputs, scale, false).unwrap();
        for first in (0..PAGES).step_by(nan_chunk_pages) {
            let n = nan_chunk_pages.min(PAGES - first) * PAGE_ELEMS;
            s.memcpy_dtod(
                &nan.slice(..n),
                &mut big.slice_mut(first * PAGE_ELEMS..first * PAGE_ELEMS + n),
            )
            .unwrap();
        }
        // Compact page i (NaN-poisoned where the generator poisons it) goes to slot i.
        for (i, &slot) in slots.iter().take(shape.num_blocks).enumerate() {
            let page: Vec<bf16> = inputs.kv_cache[i * PAGE_ELEMS..(i + 1) * PAGE_ELEMS]
                .iter()
                .map(|&x| bf16::from_f32(x))
                .collect();
            s.memcpy_htod(
                &page,
                &mut big.slice_mut(slot * PAGE_ELEMS..(slot + 1) * PAGE_ELEMS),
            )
            .unwrap();
        }
        let table: Vec<i32> = inputs
            .block_table
            .iter()
            .map(|&p| match usize::try_from(p) {
                Ok(i) if i < shape.num_blocks => slots[i] as i32,
                _ => p,
            })
            .collect();
        let q: Vec<bf16> = inputs.q.iter().map(|&x| bf16::from_f32(x)).collect();
        let (q, bt, sl) = (
            s.clone_htod(&q).unwrap(),
            s.clone_htod(&table).unwrap(),
            s.clone_htod(&inputs.seqlens).unwrap(),
        );
        let cache = KvCache::new(&gpu, &big, PAGES, 1).unwrap();
        let config = case.config(&shape).softmax_scale(scale as f32);
        let mut plan = DecodePlan::new(&gpu, config, &case.lengths).unwrap();
        plan.validate_block_table(&table, PAGES).unwrap();
        let mut runs = Vec::new();
        for _ in 0..2 {
            let mut out = s.alloc_zeros::<bf16>(shape.out_len()).unwrap();
            let mut lse = s.alloc_zeros::<f32>(shape.lse_len()).unwrap();
            decoder
                .decode(s, &mut plan, &q, &cache, &bt, &sl, &mut out, &mut lse)
                .unwrap();
            runs.push((s.clone_dtoh(&out).unwrap(), s.clone_dtoh(&lse).unwrap()));
        }
        let out: Vec<f64> = runs[0].0.iter().map(|x| x.to_f64()).collect();
        let r = CaseResult::measure(
            &out,
            &runs[0].1,
            &reference,
            Dtype::Bf16,
            false,
            bitwise_equal(&runs[0], &runs[1]),
            plan.rounds_p_once(),
        )
        .unwrap();
        let verdict = if r.passes() { "ok" } else { "FAIL" };
        println!(
            "{verdict} {} on pages (first, count) {page_runs:?} of {PAGES}: {r}",
            case.describe()
        );
        if !r.passes() {
            failures.push(case.describe());
        }
    }
    assert!(failures.is_empty(), "failed: {failures:#?}");
}

fn decode_grid() {
    run_all("decode_grid", &flashmla_etap::check::grid());
}

fn moving_maxima() {
    run_all("moving_maxima", &flashmla_etap::check::moving_maxima());
}

/// The decode call is graph-capturable (no host synchronisation, no allocation), and a
/// replay of the captured graph writes exactly what the eager call wrote.
fn graph_replay_equals_eager() {
    use flashmla_etap::decode::{DecodeConfig, DecodePlan, KvCache};
    use flashmla_etap::reference::{generate, MlaShape};
    use flashmla_etap::Graph;
    use half::bf16;
    let gpu = require_gpu!("graph_replay_equals_eager");
    let decoder = Decoder::new(&gpu).unwrap();
    let s = gpu.stream.clone();
    let lengths = vec![5000, 0, 64, 1, 20000, 333];
    let shape = MlaShape::for_lengths(2, 32, 1, 64, &lengths);
    let inputs = generate(&shape, &lengths, Dtype::Bf16, 11).unwrap();
    let dev = flashmla_etap::check::upload_inputs::<bf16>(&s, &inputs).unwrap();
    let (q, bt, sl) = (&dev.q, &dev.block_table, &dev.seqlens);
    let cache = KvCache::new(&gpu, &dev.kv_cache, shape.num_blocks, 1).unwrap();
    let config = DecodeConfig::new(lengths.len(), 32, shape.max_pages)
        .s_q(2)
        .causal(true);
    let mut plan = DecodePlan::new(&gpu, config, &lengths).unwrap();
    let eager = decode_to_host(&decoder, &mut plan, &dev, &cache, &shape);
    let mut out = s.alloc_zeros::<bf16>(shape.out_len()).unwrap();
    let mut lse = s.alloc_zeros::<f32>(shape.lse_len()).unwrap();
    let graph = Graph::capture(&s, |st| {
        decoder.decode(st, &mut plan, q, &cache, bt, sl, &mut out, &mut lse)
    })
    .unwrap();
    for _ in 0..3 {
        graph.launch(&s).unwrap();
    }
    let replay = (s.clone_dtoh(&out).unwrap(), s.clone_dtoh(&lse).unwrap());
    assert!(
        bitwise_equal(&eager, &replay),
        "graph replay out or lse differs from eager"
    );
    assert!(
        replay.0.iter().any(|x| x.to_f32() != 0.0),
        "the replay wrote an output"
    );
    println!("graph replay of the decode (3 replays) is bitwise equal to the eager call");
}

/// The seesaw kernel's row chunks launched in pairs of a thread-block cluster (the default
/// where the GPU holds a pair on every SM) write exactly what separate CTAs write: the
/// cluster only places the two CTAs. h_q 128 at s_q 1 (one pair a KV head) and s_q 2 (two).
fn pair_clusters_change_no_bit() {
    use flashmla_etap::decode::{DecodeConfig, DecodePlan, KvCache};
    use flashmla_etap::reference::{generate, MlaShape};
    use half::bf16;
    let gpu = require_gpu!("pair_clusters_change_no_bit");
    let mut decoder = Decoder::new(&gpu).unwrap();
    if !decoder.set_pair_clusters(true) {
        common::skip_because(format!(
            "{} cannot hold a 2-CTA cluster on every SM",
            gpu.name
        ));
        return;
    }
    let s = gpu.stream.clone();
    for (s_q, precision) in [(1, Precision::Fast), (2, Precision::Accurate)] {
        let lengths = vec![30000, 8000, 4100, 20000];
        let shape = MlaShape::for_lengths(s_q, 128, 1, 64, &lengths);
        let inputs = generate(&shape, &lengths, Dtype::Bf16, 5).unwrap();
        let dev = flashmla_etap::check::upload_inputs::<bf16>(&s, &inputs).unwrap();
        let cache = KvCache::new(&gpu, &dev.kv_cache, shape.num_blocks, 1).unwrap();
        let config = DecodeConfig::new(lengths.len(), 128, shape.max_pages)
            .s_q(s_q)
            .causal(s_q > 1)
            .precision(precision);
        let schedule = DecodePlan::schedule(&config, &lengths, gpu.sm_count).unwrap();
        assert!(schedule.pair_cluster().is_some(), "s_q {s_q}: no pairs");
        let mut plan = DecodePlan::new(&gpu, config, &lengths).unwrap();
        let clustered = decode_to_host(&decoder, &mut plan, &dev, &cache, &shape);
        decoder.set_pair_clusters(false);
        let separate = decode_to_host(&decoder, &mut plan, &dev, &cache, &shape);
        decoder.set_pair_clusters(true);
        assert!(
            clustered.0.iter().any(|x| x.to_f32() != 0.0),
            "s_q {s_q}: no output"
        );
        assert!(
            bitwise_equal(&clustered, &separate),
            "s_q {s_q}: pair clusters changed the output"
        );
    }
    println!("pair clusters: out and lse bitwise equal to separate CTAs (s_q 1 and 2)");
}

/// Where a plan keeps its partial results as scaled f16 (`Schedule::partials_f16`: 64-row
/// tiles, bf16 output), the scale follows the values: a cache multiplied by 2^20 (values
/// past f16's 65504) or 2^-40 (below its smallest subnormal), with the softmax scale
/// divided by the same power of two, gives the same scores and so, bit for bit, the output
/// times that power and the same lse. Unscaled f16 partial results would overflow or flush
/// to zero there. s_q 1 and 2, h_q 128, both precisions (P rounded once or split), every
/// request split (one KV head: the partial results go out by bulk tensor stores,
/// `Schedule::bulk_partials`).
fn f16_partial_results_follow_the_cache_scale() {
    use flashmla_etap::decode::{DecodeConfig, DecodePlan, KvCache};
    use flashmla_etap::reference::{generate, MlaShape};
    use half::bf16;
    let gpu = require_gpu!("f16_partial_results_follow_the_cache_scale");
    let decoder = Decoder::new(&gpu).unwrap();
    let s = gpu.stream.clone();
    for (s_q, precision) in [1, 2]
        .into_iter()
        .flat_map(|s_q| [Precision::Fast, Precision::Accurate].map(|precision| (s_q, precision)))
    {
        let lengths = vec![30000, 8000, 4100, 20000];
        let shape = MlaShape::for_lengths(s_q, 128, 1, 64, &lengths);
        let inputs = generate(&shape, &lengths, Dtype::Bf16, 11).unwrap();
        let config = DecodeConfig::new(lengths.len(), 128, shape.max_pages)
            .s_q(s_q)
            .causal(s_q > 1)
            .precision(precision);
        let schedule = DecodePlan::schedule(&config, &lengths, gpu.sm_count).unwrap();
        assert!(
            schedule.bulk_partials(config.h_kv, Dtype::Bf16, false)
                && schedule.split_offsets.windows(2).all(|w| w[1] - w[0] > 1),
            "s_q {s_q} {precision:?}: not a plan of split requests with f16 partial results in bulk stores"
        );
        let base_scale = config.softmax_scale;
        let run = |gain: f32| {
            let mut scaled = inputs.clone();
            scaled.kv_cache.iter_mut().for_each(|x| *x *= gain);
            let dev = flashmla_etap::check::upload_inputs::<bf16>(&s, &scaled).unwrap();
            let cache = KvCache::new(&gpu, &dev.kv_cache, shape.num_blocks, 1).unwrap();
            let config = config.softmax_scale(base_scale / gain);
            let mut plan = DecodePlan::new(&gpu, config, &lengths).unwrap();
            decode_to_host(&decoder, &mut plan, &dev, &cache, &shape)
        };
        let base = run(1.0);
        assert!(
            base.0.iter().all(|x| x.is_finite()) && base.0.iter().any(|x| x.to_f32() != 0.0),
            "s_q {s_q} {precision:?}: base output not finite or all zero"
        );
        for gain in [2f32.powi(20), 2f32.powi(-40)] {
            let (out, lse) = run(gain);
            let mismatches = out
                .iter()
                .zip(&base.0)
                .filter(|(x, b)| x.to_bits() != bf16::from_f32(b.to_f32() * gain).to_bits())
                .count();
            assert_eq!(
                mismatches, 0,
                "s_q {s_q} {precision:?}, cache ×{gain:e}: {mismatches} outputs differ from the base × gain"
            );
            assert!(
                lse.iter()
                    .zip(&base.1)
                    .all(|(x, b)| x.to_bits() == b.to_bits()),
                "s_q {s_q} {precision:?}, cache ×{gain:e}: lse changed"
            );
        }
    }
    println!("f16 partial results: outputs scale with the cache by 2^20 and 2^-40, bit for bit");
}

/// Consecutive calls on one stream stay ordered although each kernel starts while the one
/// before it finishes (programmatic dependent launch): a call whose requests are split
/// many times (its combine writes `out` late), then one whose requests are not split (its
/// decode writes `out` directly) into the same `out` and `lse`, 20 times without a
/// synchronisation, end bitwise equal to the second call run alone.
fn back_to_back_calls_stay_ordered() {
    use flashmla_etap::decode::{DecodeConfig, DecodePlan, KvCache};
    use flashmla_etap::reference::{generate, MlaShape};
    use half::bf16;
    let gpu = require_gpu!("back_to_back_calls_stay_ordered");
    let decoder = Decoder::new(&gpu).unwrap();
    let s = gpu.stream.clone();
    let h_q = 64;
    let split_lengths = vec![30000, 20000, 25000];
    let direct_lengths = vec![64, 1, 50];
    let split_shape = MlaShape::for_lengths(1, h_q, 1, 64, &split_lengths);
    let direct_shape = MlaShape::for_lengths(1, h_q, 1, 64, &direct_lengths);
    let split_in = generate(&split_shape, &split_lengths, Dtype::Bf16, 3).unwrap();
    let direct_in = generate(&direct_shape, &direct_lengths, Dtype::Bf16, 4).unwrap();
    let split_dev = flashmla_etap::check::upload_inputs::<bf16>(&s, &split_in).unwrap();
    let direct_dev = flashmla_etap::check::upload_inputs::<bf16>(&s, &direct_in).unwrap();
    let split_cache = KvCache::new(&gpu, &split_dev.kv_cache, split_shape.num_blocks, 1).unwrap();
    let direct_cache =
        KvCache::new(&gpu, &direct_dev.kv_cache, direct_shape.num_blocks, 1).unwrap();
    let mut split_plan = DecodePlan::new(
        &gpu,
        DecodeConfig::new(3, h_q, split_shape.max_pages),
        &split_lengths,
    )
    .unwrap();
    let mut direct_plan = DecodePlan::new(
        &gpu,
        DecodeConfig::new(3, h_q, direct_shape.max_pages),
        &direct_lengths,
    )
    .unwrap();
    assert!(
        split_plan.split_offsets()[3] >= 30,
        "the first call is split many times"
    );
    assert_eq!(
        direct_plan.split_offsets()[3],
        3,
        "the second call is not split"
    );
    let len = direct_shape.out_len();
    assert_eq!(split_shape.out_len(), len);

    let (p, d) = (&split_dev, &direct_dev);
    let run = |plan: &mut DecodePlan,
               dev: &flashmla_etap::check::DeviceInputs<bf16>,
               cache: &KvCache<'_, bf16>,
               out: &mut _,
               lse: &mut _| {
        decoder
            .decode(
                &s,
                plan,
                &dev.q,
                cache,
                &dev.block_table,
                &dev.seqlens,
                out,
                lse,
            )
            .unwrap()
    };
    let mut alone_out = s.alloc_zeros::<bf16>(len).unwrap();
    let mut alone_lse = s.alloc_zeros::<f32>(direct_shape.lse_len()).unwrap();
    run(
        &mut direct_plan,
        d,
        &direct_cache,
        &mut alone_out,
        &mut alone_lse,
    );
    let mut out = s.alloc_zeros::<bf16>(len).unwrap();
    let mut lse = s.alloc_zeros::<f32>(direct_shape.lse_len()).unwrap();
    for _ in 0..20 {
        run(&mut split_plan, p, &split_cache, &mut out, &mut lse);
        run(&mut direct_plan, d, &direct_cache, &mut out, &mut lse);
    }
    let (a, b) = (
        s.clone_dtoh(&alone_out).unwrap(),
        s.clone_dtoh(&out).unwrap(),
    );
    let (la, lb) = (
        s.clone_dtoh(&alone_lse).unwrap(),
        s.clone_dtoh(&lse).unwrap(),
    );
    assert!(
        a.iter().any(|x| x.to_f32() != 0.0),
        "the call alone wrote an output"
    );
    let bad = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(bad, 0, "{bad} of {len} outputs differ from the call alone");
    assert!(
        la.iter().zip(&lb).all(|(x, y)| x.to_bits() == y.to_bits()),
        "lse differs from the call alone"
    );
    println!("20 split/unsplit call pairs on one stream: the last call's out and lse are exact");
}

/// The checked API: a used page id outside the cache, or a device length longer than the
/// block-table row, is reported with the batch index, and the kernel reads nothing
/// outside the cache meanwhile (compute-sanitizer memcheck runs this test too).
fn checked_api_reports_bad_page_ids_and_lengths() {
    use flashmla_etap::decode::{DecodeConfig, DecodePlan, KvCache};
    use flashmla_etap::reference::{generate, MlaShape};
    use flashmla_etap::Error;
    use half::bf16;
    let gpu = require_gpu!("checked_api_reports_bad_page_ids_and_lengths");
    let decoder = Decoder::new(&gpu).unwrap();
    let s = gpu.stream.clone();
    let lengths = vec![300, 100, 700, 64];
    let shape = MlaShape::for_lengths(1, 16, 1, 64, &lengths);
    let inputs = generate(&shape, &lengths, Dtype::Bf16, 5).unwrap();
    let to = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
    let q = s.clone_htod(&to(&inputs.q)).unwrap();
    let kv = s.clone_htod(&to(&inputs.kv_cache)).unwrap();
    let cache = KvCache::new(&gpu, &kv, shape.num_blocks, 1).unwrap();
    let config = DecodeConfig::new(lengths.len(), 16, shape.max_pages);
    let mut plan = DecodePlan::new(&gpu, config, &lengths).unwrap();
    let mut out = s.alloc_zeros::<bf16>(shape.out_len()).unwrap();
    let mut lse = s.alloc_zeros::<f32>(shape.lse_len()).unwrap();
    let sl = s.clone_htod(&inputs.seqlens).unwrap();

    let good = s.clone_htod(&inputs.block_table).unwrap();
    decoder
        .decode_checked(&s, &mut plan, &q, &cache, &good, &sl, &mut out, &mut lse)
        .unwrap();

    for bad_id in [i32::MAX, -5, shape.num_blocks as i32] {
        let mut table = inputs.block_table.clone();
        table[2 * shape.max_pages + 3] = bad_id;
        let bt = s.clone_htod(&table).unwrap();
        match decoder.decode_checked(&s, &mut plan, &q, &cache, &bt, &sl, &mut out, &mut lse) {
            Err(Error::InvalidArgument {
                arg: "block_table",
                rule,
            }) => {
                assert!(rule.contains("batch index 2"), "{rule}")
            }
            other => panic!("page id {bad_id}: expected a block_table error, got {other:?}"),
        }
    }
    let mut long = inputs.seqlens.clone();
    long[1] = (shape.max_pages * 64 + 1) as i32;
    let sl_long = s.clone_htod(&long).unwrap();
    match decoder.decode_checked(
        &s, &mut plan, &q, &cache, &good, &sl_long, &mut out, &mut lse,
    ) {
        Err(Error::InvalidArgument {
            arg: "cache_seqlens",
            rule,
        }) => {
            assert!(rule.contains("batch index 1"), "{rule}")
        }
        other => panic!("expected a cache_seqlens error, got {other:?}"),
    }
    // The same decode with valid inputs still succeeds afterwards (the error words reset).
    decoder
        .decode_checked(&s, &mut plan, &q, &cache, &good, &sl, &mut out, &mut lse)
        .unwrap();
    println!("checked API: bad page ids (i32::MAX, -5, num_blocks) and a too-long length reported with their batch index");
}

/// A stream, plan or buffer of another GPU is an error naming the argument, before any
/// launch (its addresses would be read as this GPU's), and the decoder works on after it.
/// Needs two GPUs: on one it reports itself skipped.
fn buffers_of_another_gpu_are_errors() {
    use flashmla_etap::decode::{DecodeConfig, DecodePlan, KvCache};
    use flashmla_etap::device::device_count;
    use flashmla_etap::reference::{generate, MlaShape};
    use flashmla_etap::{Error, Gpu};
    use half::bf16;
    let gpu = require_gpu!("buffers_of_another_gpu_are_errors");
    let n = device_count().unwrap();
    if n < 2 {
        common::skip_because(format!(
            "needs two GPUs to hand one's buffers to the other; this machine has {n}"
        ));
        return;
    }
    let other = match Gpu::open(1) {
        Ok(g) => g,
        Err(e) => {
            common::skip_because(format!("needs a second usable GPU: device 1: {e}"));
            return;
        }
    };
    let decoder = Decoder::new(&gpu).unwrap();
    let lengths = vec![300, 700];
    let shape = MlaShape::for_lengths(1, 16, 1, 64, &lengths);
    let inputs = generate(&shape, &lengths, Dtype::Bf16, 11).unwrap();
    let to = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
    // Every input on both GPUs.
    let on = |g: &Gpu| {
        let s = &g.stream;
        (
            s.clone_htod(&to(&inputs.q)).unwrap(),
            s.clone_htod(&to(&inputs.kv_cache)).unwrap(),
            s.clone_htod(&inputs.block_table).unwrap(),
            s.clone_htod(&inputs.seqlens).unwrap(),
            s.alloc_zeros::<bf16>(shape.out_len()).unwrap(),
            s.alloc_zeros::<f32>(shape.lse_len()).unwrap(),
        )
    };
    let (q, kv, bt, sl, mut out, mut lse) = on(&gpu);
    let (q1, kv1, bt1, sl1, mut out1, mut lse1) = on(&other);
    let config = DecodeConfig::new(lengths.len(), 16, shape.max_pages);
    let mut plan = DecodePlan::new(&gpu, config, &lengths).unwrap();
    let mut plan1 = DecodePlan::new(&other, config, &lengths).unwrap();
    let cache = KvCache::new(&gpu, &kv, shape.num_blocks, 1).unwrap();
    let cache1 = KvCache::new(&other, &kv1, shape.num_blocks, 1).unwrap();
    let names = |r: Result<(), Error>| match r {
        Err(Error::InvalidArgument { arg, rule }) => {
            assert!(
                rule.contains("device 0") && rule.contains("device 1"),
                "{rule}"
            );
            arg
        }
        other => panic!("expected an InvalidArgument, got {other:?}"),
    };
    match KvCache::new(&gpu, &kv1, shape.num_blocks, 1) {
        Err(Error::InvalidArgument { arg: "data", .. }) => {}
        other => panic!("expected a data error, got {:?}", other.map(|_| ())),
    }
    let s = &gpu.stream;
    let s1 = &other.stream;
    let d = &decoder;
    assert_eq!(
        names(d.decode(s1, &mut plan, &q, &cache, &bt, &sl, &mut out, &mut lse)),
        "stream"
    );
    assert_eq!(
        names(d.decode(s, &mut plan1, &q, &cache, &bt, &sl, &mut out, &mut lse)),
        "plan"
    );
    assert_eq!(
        names(d.decode(s, &mut plan, &q1, &cache, &bt, &sl, &mut out, &mut lse)),
        "q"
    );
    assert_eq!(
        names(d.decode(s, &mut plan, &q, &cache1, &bt, &sl, &mut out, &mut lse)),
        "cache"
    );
    assert_eq!(
        names(d.decode(s, &mut plan, &q, &cache, &bt1, &sl, &mut out, &mut lse)),
        "block_table"
    );
    assert_eq!(
        names(d.decode(s, &mut plan, &q, &cache, &bt, &sl1, &mut out, &mut lse)),
        "cache_seqlens"
    );
    assert_eq!(
        names(d.decode(s, &mut plan, &q, &cache, &bt, &sl, &mut out1, &mut lse)),
        "out"
    );
    assert_eq!(
        names(d.decode(s, &mut plan, &q, &cache, &bt, &sl, &mut out, &mut lse1)),
        "lse"
    );
    assert_eq!(
        names(d.decode_checked(s1, &mut plan, &q, &cache, &bt, &sl, &mut out, &mut lse)),
        "stream"
    );
    assert_eq!(
        names(d.decode_checked(s, &mut plan1, &q, &cache, &bt, &sl, &mut out, &mut lse)),
        "plan"
    );
    // Nothing was launched: the decoder's GPU decodes on, and its result is the one a
    // decoder on the other GPU computes from the same inputs.
    d.decode_checked(s, &mut plan, &q, &cache, &bt, &sl, &mut out, &mut lse)
        .unwrap();
    let d1 = Decoder::new(&other).unwrap();
    d1.decode_checked(
        s1, &mut plan1, &q1, &cache1, &bt1, &sl1, &mut out1, &mut lse1,
    )
    .unwrap();
    let here: Vec<bf16> = s.clone_dtoh(&out).unwrap();
    let there: Vec<bf16> = s1.clone_dtoh(&out1).unwrap();
    assert_eq!(
        here, there,
        "the two GPUs decode the same inputs bit for bit"
    );
    println!("buffers of another GPU: stream, plan, q, cache, block_table, cache_seqlens, out, lse and KvCache data named; both GPUs decode bit for bit alike after");
}

/// A device length the plan was not built for is reported by the checked API where the
/// plan's pieces cannot cover it (`plan::contradicts_plan`, which names the batch index
/// the decode reports; `Schedule::first_uncovered` and `DecodePlan::covers` name the same
/// on the CPU) or where the plan gave the request no pages (reported by the combine), on the 16-row kernel and on the 64-row
/// seesaw kernels in both orders; a length of the plan's page count is not, and gives the
/// output of a plan built for it, bit for bit.
fn checked_api_reports_lengths_the_plan_cannot_cover() {
    use flashmla_etap::decode::{DecodeConfig, DecodePlan, KvCache};
    use flashmla_etap::reference::{generate, MlaShape};
    use flashmla_etap::Error;
    use half::bf16;
    let gpu = require_gpu!("checked_api_reports_lengths_the_plan_cannot_cover");
    let decoder = Decoder::new(&gpu).unwrap();
    let s = gpu.stream.clone();
    // The 16-row split kernel, the split seesaw kernel and (over more than 32 pages a
    // partition) the single-rounding one in FlashMLA's order; request 1 is planned empty.
    let setups = [
        (16, vec![300, 0, 700, 64], Precision::Accurate),
        (128, vec![4096, 0, 8000, 64], Precision::Accurate),
        (128, vec![70000, 0, 70000, 64], Precision::Fast),
    ];
    for (h_q, lengths, precision) in setups {
        let shape = MlaShape::for_lengths(1, h_q, 1, 64, &lengths);
        let inputs = generate(&shape, &lengths, Dtype::Bf16, 11).unwrap();
        let to = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
        let q = s.clone_htod(&to(&inputs.q)).unwrap();
        let kv = s.clone_htod(&to(&inputs.kv_cache)).unwrap();
        let cache = KvCache::new(&gpu, &kv, shape.num_blocks, 1).unwrap();
        let bt = s.clone_htod(&inputs.block_table).unwrap();
        let config = DecodeConfig::new(lengths.len(), h_q, shape.max_pages).precision(precision);
        let mut plan = DecodePlan::new(&gpu, config, &lengths).unwrap();
        let schedule = DecodePlan::schedule(&config, &lengths, gpu.sm_count).unwrap();
        let mut out = s.alloc_zeros::<bf16>(shape.out_len()).unwrap();
        let mut lse = s.alloc_zeros::<f32>(shape.lse_len()).unwrap();
        let mut grown = lengths.clone();
        grown[3] += 1; // one page more for the last request (64 tokens)
        let mut shrunk = lengths.clone();
        shrunk[2] = 64; // a long request down to one page
        let mut appeared = lengths.clone();
        appeared[1] = 64; // the request planned empty
        for (what, device, b) in [
            ("grown", grown, 3),
            ("shrunk", shrunk, 2),
            ("appeared", appeared, 1),
        ] {
            assert_eq!(
                schedule.first_uncovered(shape.max_pages, &device),
                Some(b),
                "{what}"
            );
            match plan.covers(&device) {
                Err(Error::InvalidArgument { rule, .. }) => {
                    assert!(
                        rule.contains(&format!("batch index {b}:")),
                        "{what}: {rule}"
                    )
                }
                other => panic!("{what}: covers gave {other:?}"),
            }
            let sl = s.clone_htod(&device).unwrap();
            match decoder.decode_checked(&s, &mut plan, &q, &cache, &bt, &sl, &mut out, &mut lse) {
                Err(Error::InvalidArgument {
                    arg: "cache_seqlens",
                    rule,
                }) => assert!(
                    rule.contains(&format!("batch index {b}:")),
                    "{what}: {rule}"
                ),
                other => panic!(
                    "h_q {h_q}, {what} {device:?}: expected a cache_seqlens error, got {other:?}"
                ),
            }
        }
        // Within the plan's page counts: no error, and the output of a plan built for
        // the device lengths.
        let mut within = lengths.clone();
        within[0] -= 1;
        within[2] -= 30;
        plan.covers(&within).unwrap();
        let sl = s.clone_htod(&within).unwrap();
        decoder
            .decode_checked(&s, &mut plan, &q, &cache, &bt, &sl, &mut out, &mut lse)
            .unwrap();
        let stale = (s.clone_dtoh(&out).unwrap(), s.clone_dtoh(&lse).unwrap());
        let mut fresh = DecodePlan::new(&gpu, config, &within).unwrap();
        decoder
            .decode_checked(&s, &mut fresh, &q, &cache, &bt, &sl, &mut out, &mut lse)
            .unwrap();
        let fresh = (s.clone_dtoh(&out).unwrap(), s.clone_dtoh(&lse).unwrap());
        assert!(
            stale
                .0
                .iter()
                .zip(&fresh.0)
                .all(|(x, y)| x.to_bits() == y.to_bits())
                && stale
                    .1
                    .iter()
                    .zip(&fresh.1)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
            "h_q {h_q}: lengths within the plan's pages gave another output than a fresh plan"
        );
        println!(
            "h_q {h_q} {precision:?} ({}): grown, shrunk and appeared lengths reported, lengths within the plan's pages exact",
            schedule.decode_kernel_name(Dtype::Bf16, false)
        );
    }
}

/// On the accuracy cases of ANCHORS.md, `Accurate`'s RMSE / rounding-floor ratio is at most
/// FlashMLA's on the same kind of case. `Fast` runs them too, held to its own bound
/// (`check::RMSE_FACTOR`): it rounds P once as FlashMLA does, and on these draws it
/// reads within about 1 % of FlashMLA's figures, which came from FlashMLA's own draws of
/// inputs and lengths, so they do not bound it case by case (`docs/ACCURACY.md`). Every
/// case runs before the verdict, so a failure report lists them all.
fn accuracy_not_worse_than_flashmla() {
    let gpu = require_gpu!("accuracy_not_worse_than_flashmla");
    let decoder = Decoder::new(&gpu).unwrap();
    let mut failed = Vec::new();
    for (case, flashmla_ratio) in flashmla_etap::check::anchor_accuracy_cases() {
        for precision in [Precision::Accurate, Precision::Fast] {
            let case = Case {
                precision,
                ..case.clone()
            };
            let r = case.run(&decoder).unwrap();
            let line = format!(
                "{}: {} (FlashMLA ratio {flashmla_ratio:.3})",
                case.describe(),
                r.summary()
            );
            println!("{line}");
            let worse = precision == Precision::Accurate && r.ratio() > flashmla_ratio;
            if !r.passes() || worse {
                failed.push(line);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "failing their bound, or Accurate worse than FlashMLA:\n{}",
        failed.join("\n")
    );
}

test_main!(
    decode_smoke,
    decode_grid,
    moving_maxima,
    beyond_the_l2,
    pages_beyond_4_gib_of_the_cache,
    graph_replay_equals_eager,
    pair_clusters_change_no_bit,
    f16_partial_results_follow_the_cache_scale,
    back_to_back_calls_stay_ordered,
    checked_api_reports_bad_page_ids_and_lengths,
    checked_api_reports_lengths_the_plan_cannot_cover,
    buffers_of_another_gpu_are_errors,
    accuracy_not_worse_than_flashmla,
);
