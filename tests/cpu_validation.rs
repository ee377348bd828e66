//! CPU tests of every host-side validation rule (issue 5): each bad input gives a typed
//! `Error::InvalidArgument` naming the argument, before anything reaches the GPU.
//!
//! Rules and where they are checked:
//! - dtype mismatch between q, cache and out: prevented by the types (`Decoder::decode` is
//!   generic over one `T: KvElement`; out is `T` or f32) — nothing to test at run time;
//! - batch, s_q, h_q, h_kv, max_pages, softmax_scale ranges: `DecodeConfig::validate`;
//! - head dims 576/512 and buffer sizes: `DecodeConfig::check_buffers` (what `decode` runs);
//! - page size: fixed at 64, the cache is given as a page count: `KvCache::check_shape`;
//! - a plan used with another shape / cache: `check_buffers` against the plan's config;
//! - cache_seqlens negative or beyond the block table: `DecodePlan::schedule` (the planner,
//!   what `DecodePlan::new` runs), naming the batch index;
//! - page ids out of range among the used pages: `validate_block_table` (the checked API);
//! - device lengths a plan cannot cover: `Schedule::first_uncovered` (`DecodePlan::covers`).
use etap_kernel::config::{COMBINE_WIDE_MIN_SPLITS, SEESAW_ROWS};
use etap_kernel::plan::{
    max_pieces, max_split_slots, modelled_makespan, pieces, plan_with_overhead, PartWork,
    PieceCosts, FIXED_OVERHEAD_PAGES, FIXED_OVERHEAD_PAGES_64_ROWS, FIXED_OVERHEAD_PAGES_ALT,
    PAGE_SIZE,
};
use flashmla_etap::decode::{
    validate_block_table, BufferLens, CombineLaunch, DecodeConfig, DecodePlan, KvCache, Precision,
    MAX_BATCH, MAX_PAGES, MAX_SM_COUNT, MAX_S_Q,
};
use flashmla_etap::Error;
use proptest::prelude::*;

/// Asserts an `InvalidArgument` for `arg` whose rule mentions every one of `words`.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, Error>, arg: &str, words: &[&str]) {
    match r {
        Err(Error::InvalidArgument { arg: a, rule }) => {
            assert_eq!(a, arg, "wrong argument named (rule: {rule})");
            for w in words {
                assert!(rule.contains(w), "rule {rule:?} does not mention {w:?}");
            }
        }
        other => panic!("expected InvalidArgument({arg}), got {other:?}"),
    }
}

fn cfg() -> DecodeConfig {
    DecodeConfig::new(4, 16, 8)
}

/// Exact buffer lengths for `c` (cache h_kv = c.h_kv).
fn lens(c: &DecodeConfig) -> BufferLens {
    BufferLens {
        q: c.batch * c.s_q * c.h_q * 576,
        out: c.batch * c.s_q * c.h_q * 512,
        lse: c.batch * c.h_q * c.s_q,
        block_table: c.batch * c.max_pages,
        cache_seqlens: c.batch,
        cache_h_kv: c.h_kv,
    }
}

// ---- DecodeConfig::validate ----

#[test]
fn default_config_is_valid() {
    cfg().validate().unwrap();
    let c = cfg();
    assert!((c.softmax_scale - 576f32.powf(-0.5)).abs() < 1e-9);
    assert_eq!((c.s_q, c.h_kv, c.causal), (1, 1, false));
    for s_q in 1..=MAX_S_Q {
        cfg().s_q(s_q).causal(true).validate().unwrap();
    }
    DecodeConfig::new(MAX_BATCH, 64, 1).validate().unwrap();
    DecodeConfig::new(1, 1, 1).validate().unwrap();
}

/// The kernels index q, out, the block table and the partial outputs in 32 bits: shapes
/// whose element counts reach 2^32 are refused (found by review: 65535 requests of 128
/// heads passed and would have wrapped).
#[test]
fn element_counts_fit_32_bit_indexing() {
    assert_invalid(
        DecodeConfig::new(MAX_BATCH, 128, 1).validate(),
        "batch",
        &["576", "2^32"],
    );
    assert_invalid(
        DecodeConfig::new(MAX_BATCH, 16, 65538).validate(),
        "max_pages",
        &["block-table", "2^32"],
    );
    // 65535 · 65537 = 2^32 - 1.
    DecodeConfig::new(MAX_BATCH, 16, 65537).validate().unwrap();
    // The partial outputs, (batch + partitions) · s_q · h_q · 512 elements, stay below q's
    // count (partitions · s_q · h_q ≤ SMs · 64) at large accepted shapes.
    for (batch, h_q, s_q) in [(MAX_BATCH, 64, 1), (1, 16383, 4), (7000, 256, 4)] {
        let c = DecodeConfig::new(batch, h_q, 1).s_q(s_q);
        c.validate().unwrap();
        let s = DecodePlan::schedule(&c, &vec![64; batch], 132).unwrap();
        let slots = max_split_slots(batch, s.num_parts);
        assert!(
            ((slots * s_q * h_q * 512) as u64) < 1 << 32,
            "{batch} {h_q} {s_q}"
        );
    }
}

#[test]
fn batch_range() {
    assert_invalid(
        DecodeConfig::new(0, 16, 8).validate(),
        "batch",
        &["0", "1..="],
    );
    assert_invalid(
        DecodeConfig::new(MAX_BATCH + 1, 16, 8).validate(),
        "batch",
        &["65536"],
    );
}

#[test]
fn s_q_range() {
    assert_invalid(cfg().s_q(0).validate(), "s_q", &["1..=4"]);
    assert_invalid(cfg().s_q(MAX_S_Q + 1).validate(), "s_q", &["5", "1..=4"]);
}

#[test]
fn h_kv_at_least_one() {
    assert_invalid(cfg().h_kv(0).validate(), "h_kv", &["at least 1"]);
}

#[test]
fn h_q_positive_multiple_of_h_kv() {
    assert_invalid(DecodeConfig::new(4, 0, 8).validate(), "h_q", &["multiple"]);
    assert_invalid(cfg().h_kv(3).validate(), "h_q", &["16", "h_kv = 3"]);
    cfg().h_kv(2).validate().unwrap();
    cfg().h_kv(16).validate().unwrap();
}

#[test]
fn rows_per_call_bounded() {
    assert_invalid(
        DecodeConfig::new(1, 16384, 1).s_q(4).validate(),
        "h_q",
        &["65535"],
    );
    DecodeConfig::new(1, 16383, 1).s_q(4).validate().unwrap();
}

/// Found by `fuzz/` (validate target): `s_q · h_q` overflowed for a huge h_q (a panic in
/// debug builds; in release 4 · 2^62 wrapped to 0 and passed).
#[test]
fn huge_h_q_does_not_overflow() {
    for h_q in [usize::MAX, 1 << 62, usize::MAX / 2 + 1] {
        assert_invalid(
            DecodeConfig::new(1, h_q, 1).s_q(4).validate(),
            "h_q",
            &["65535"],
        );
    }
}

#[test]
fn max_pages_range() {
    assert_invalid(
        DecodeConfig::new(4, 16, 0).validate(),
        "max_pages",
        &["1..="],
    );
    assert_invalid(
        DecodeConfig::new(4, 16, (i32::MAX as usize) / 64 + 1).validate(),
        "max_pages",
        &["33554432 is not in 1..=33554431"],
    );
    assert_eq!(MAX_PAGES, (1 << 25) - 1);
    DecodeConfig::new(4, 16, MAX_PAGES).validate().unwrap();
}

#[test]
fn softmax_scale_finite_positive() {
    // f32::MAX is finite, but the kernels' scale · log2(e) would not be.
    for bad in [
        0.0,
        -1.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
    ] {
        assert_invalid(
            cfg().softmax_scale(bad).validate(),
            "softmax_scale",
            &["finite"],
        );
    }
    cfg().softmax_scale(1e-3).validate().unwrap();
    cfg().softmax_scale(1e38).validate().unwrap();
}

// ---- buffer sizes and head dims (DecodeConfig::check_buffers, run by Decoder::decode) ----

#[test]
fn exact_buffers_pass() {
    for c in [
        cfg(),
        cfg().s_q(4),
        DecodeConfig::new(3, 32, 5).h_kv(2).s_q(2),
    ] {
        c.check_buffers(&lens(&c)).unwrap();
    }
}

#[test]
fn head_dims_show_as_buffer_lengths() {
    let c = cfg();
    // q with head dim 512 instead of 576, out with 576 instead of 512.
    let l = BufferLens {
        q: c.batch * c.h_q * 512,
        ..lens(&c)
    };
    assert_invalid(c.check_buffers(&l), "q", &["576", "needs"]);
    let l = BufferLens {
        out: c.batch * c.h_q * 576,
        ..lens(&c)
    };
    assert_invalid(c.check_buffers(&l), "out", &["512", "needs"]);
}

#[test]
fn every_buffer_too_small_or_too_large() {
    let c = cfg().s_q(2);
    let good = lens(&c);
    type Field = fn(&mut BufferLens) -> &mut usize;
    let fields: [(&str, Field); 5] = [
        ("q", |l| &mut l.q),
        ("out", |l| &mut l.out),
        ("lse", |l| &mut l.lse),
        ("block_table", |l| &mut l.block_table),
        ("cache_seqlens", |l| &mut l.cache_seqlens),
    ];
    for (name, field) in fields {
        for delta in [-1i64, 1] {
            let mut l = good;
            let f = field(&mut l);
            *f = (*f as i64 + delta) as usize;
            assert_invalid(c.check_buffers(&l), name, &["elements", "needs"]);
        }
        let mut l = good;
        *field(&mut l) = 0;
        assert_invalid(c.check_buffers(&l), name, &[]);
    }
}

#[test]
fn plan_used_with_another_shape() {
    // Buffers sized for batch 8 / h_q 32 / s_q 2 against a plan for batch 4, h_q 16, s_q 1.
    let plan_cfg = cfg();
    for other in [
        DecodeConfig::new(8, 16, 8),
        DecodeConfig::new(4, 32, 8),
        cfg().s_q(2),
    ] {
        assert_invalid(plan_cfg.check_buffers(&lens(&other)), "q", &[]);
    }
    // A block table of another width.
    assert_invalid(
        plan_cfg.check_buffers(&lens(&DecodeConfig::new(4, 16, 9))),
        "block_table",
        &["max_pages"],
    );
}

#[test]
fn cache_h_kv_must_match_the_plan() {
    let c = cfg();
    let l = BufferLens {
        cache_h_kv: 2,
        ..lens(&c)
    };
    assert_invalid(c.check_buffers(&l), "cache", &["h_kv = 2", "h_kv = 1"]);
}

// ---- the cache (KvCache::check_shape, run by KvCache::new): page size 64 ----

#[test]
fn kv_cache_shape() {
    let per_page = 64 * 576;
    KvCache::<half::bf16>::check_shape(10 * per_page, 10, 1).unwrap();
    KvCache::<half::f16>::check_shape(10 * per_page * 2, 10, 2).unwrap();
    assert_invalid(
        KvCache::<half::bf16>::check_shape(10 * per_page, 10, 0),
        "h_kv",
        &[],
    );
    assert_invalid(
        KvCache::<half::bf16>::check_shape(0, 0, 1),
        "num_blocks",
        &["1..="],
    );
    assert_invalid(
        KvCache::<half::bf16>::check_shape(0, (i32::MAX as usize) / 64 + 1, 1),
        "num_blocks",
        &[],
    );
    // A cache of 20 pages of 32 tokens, passed with its page count, has the wrong element
    // count for 64-token pages (page size is not a parameter: it is always 64).
    assert_invalid(
        KvCache::<half::bf16>::check_shape(20 * 32 * 576, 20, 1),
        "kv_cache",
        &["64", "576"],
    );
    assert_invalid(
        KvCache::<half::bf16>::check_shape(10 * 64 * 512, 10, 1),
        "kv_cache",
        &["needs"],
    );
    assert_invalid(
        KvCache::<half::bf16>::check_shape(10 * per_page + 1, 10, 1),
        "kv_cache",
        &[],
    );
    // Found by `fuzz/` (validate target): a huge h_kv overflowed `64 · h_kv · 576`.
    assert_invalid(
        KvCache::<half::bf16>::check_shape(0, 10, usize::MAX / 1000),
        "kv_cache",
        &["overflows"],
    );
}

// ---- lengths (DecodePlan::schedule, run by DecodePlan::new) ----

#[test]
fn schedule_accepts_valid_lengths() {
    let c = cfg();
    let s = DecodePlan::schedule(&c, &[0, 1, 64, 512], 132).unwrap();
    assert_eq!(s.split_offsets.len(), 5);
    assert_eq!(s.parts.len(), s.num_parts);
    assert!(s.num_parts >= 1);
}

/// `Schedule::check_coverage`: a schedule covers the lengths it was planned for; the error
/// names the request whose pages a schedule leaves out, runs past or reads twice or out of
/// order, and says so of an order that is not a permutation, of lengths for another batch
/// and of split counts that do not match (without overflowing on corrupt offsets).
#[test]
fn schedule_coverage_names_the_request_it_breaks() {
    let lengths = [300, 0, 4000, 64, 1000];
    for h_q in [16, 128] {
        let c = DecodeConfig::new(5, h_q, 125);
        let s = DecodePlan::schedule(&c, &lengths, 132).unwrap();
        s.check_coverage(&lengths).unwrap();
        let error = |l: &[i32], s: &flashmla_etap::decode::Schedule| {
            s.check_coverage(l).unwrap_err().to_string()
        };
        let names = |l: &[i32], s: &flashmla_etap::decode::Schedule, what: &str| {
            let e = error(l, s);
            assert!(e.contains(what), "h_q {h_q}: {e}");
        };
        let mut grown = lengths;
        grown[3] += 64;
        names(&grown, &s, "request 3:");
        let mut shrunk = lengths;
        shrunk[2] = 64;
        names(&shrunk, &s, "request 2:");
        names(
            &lengths[..4],
            &s,
            "5 positions and 6 split offsets for 4 requests",
        );
        let mut repeated = s.clone();
        repeated.order[1] = repeated.order[0];
        names(&lengths, &repeated, "not a permutation");
        // The first partition's pieces twice: its first request's pages are read again.
        let mut twice = s.clone();
        let first = *twice.parts.iter().find(|p| !p.is_idle()).unwrap();
        twice.parts.push(first);
        let r = twice.order[first.begin_req as usize];
        let e = error(&lengths, &twice);
        assert!(
            e.starts_with(&format!("planning failed: request {r}: piece ")),
            "h_q {h_q}: {e}"
        );
        // Two positions swapped: their lengths no longer fit the pieces planned for them.
        let mut swapped = s.clone();
        swapped.order.swap(0, 2);
        let e = error(&lengths, &swapped);
        assert!(e.starts_with("planning failed: request "), "h_q {h_q}: {e}");
        let mut corrupt = s.clone();
        corrupt.split_offsets[5] = i32::MIN;
        names(&lengths, &corrupt, "request 4:");
    }
}

/// `Schedule::first_uncovered` (what `DecodePlan::covers` and, on the device,
/// `Decoder::decode_checked` report): lengths of the plan's page counts are covered; a last
/// request grown by a page, a long one shrunk to a page and pages for a request planned
/// empty are not, each named by its batch index; on the 16-row and 64-row plans.
#[test]
fn schedule_names_the_lengths_it_cannot_cover() {
    for (h_q, lengths) in [(16, [300, 0, 700, 64]), (128, [4096, 0, 8000, 64])] {
        let max_pages = 125;
        let c = DecodeConfig::new(4, h_q, max_pages);
        let s = DecodePlan::schedule(&c, &lengths, 132).unwrap();
        let with = |r: usize, len: i32| {
            let mut l = lengths;
            l[r] = len;
            s.first_uncovered(max_pages, &l)
        };
        assert_eq!(s.first_uncovered(max_pages, &lengths), None);
        assert_eq!(with(0, lengths[0] - 1), None, "h_q {h_q}: same pages");
        assert_eq!(with(2, lengths[2] - 30), None, "h_q {h_q}: same pages");
        assert_eq!(with(3, 65), Some(3), "h_q {h_q}: last request grown");
        assert_eq!(with(2, 64), Some(2), "h_q {h_q}: long request shrunk");
        assert_eq!(
            with(1, 64),
            Some(1),
            "h_q {h_q}: planned empty, now with pages"
        );
    }
}

/// Scaled f16 partial results only on 64-row tiles with bf16 output, where P is rounded
/// once or split over short shares: f16 or f32 output, the 16/32-row kernels and the split
/// P over long shares keep f32.
#[test]
fn f16_partial_results_only_for_bf16_output_of_64_row_plans() {
    use flashmla_etap::reference::Dtype;
    // 4 requests of 128 pages: 8 pages a partition at h_q 64 and 128 (132 SMs); 32
    // requests: 32 at h_q 64, 62 at h_q 128 (two row chunks, 66 partitions each).
    for (batch, h_q, precision, f16) in [
        (4, 128, Precision::Fast, true),
        (4, 64, Precision::Fast, true),
        (4, 128, Precision::Accurate, true),
        (4, 64, Precision::Accurate, true),
        (32, 64, Precision::Accurate, true),
        (32, 128, Precision::Accurate, false),
        (32, 128, Precision::Fast, true),
        (4, 16, Precision::Fast, false),
        (4, 32, Precision::Fast, false),
        (4, 32, Precision::Accurate, false),
    ] {
        let c = DecodeConfig::new(batch, h_q, 128).precision(precision);
        let s = DecodePlan::schedule(&c, &vec![8192; batch], 132).unwrap();
        let share = s.total_pages.div_ceil(s.num_parts as u64);
        assert_eq!(
            s.split_p,
            precision == Precision::Accurate,
            "h_q {h_q} {precision:?}"
        );
        assert_eq!(
            s.partials_f16(Dtype::Bf16, false),
            f16,
            "b {batch}, h_q {h_q} {precision:?}: {share} pages a partition"
        );
        assert!(!s.partials_f16(Dtype::Bf16, true), "h_q {h_q}: f32 output");
        assert!(!s.partials_f16(Dtype::F16, false), "h_q {h_q}: f16 output");
        if f16 {
            // The plan runs the `_p16` kernel of its order.
            let name = s.decode_kernel_name(Dtype::Bf16, false);
            assert!(name.ends_with("_p16"), "{name}");
            assert_eq!(name.contains("_split"), s.split_p, "{name}");
        }
    }
    // 40,000 requests of h_q 128 pass the q bound (576 elements a row below 2^32) but their
    // f16 partial slots (1024 a row) would not fit the kernels' 32-bit offsets: f32.
    let lengths = vec![64; 40_000];
    let c = DecodeConfig::new(lengths.len(), 128, 1).precision(Precision::Fast);
    let s = DecodePlan::schedule(&c, &lengths, 132).unwrap();
    assert!(s.rows_per_cta == 64 && !s.split_p);
    assert!(s.slot_rows * 1024 > 1 << 32, "{} slot rows", s.slot_rows);
    assert!(!s.partials_f16(Dtype::Bf16, false));
}

/// The error bounds `docs/ACCURACY.md` gives for a value `v` of a partial row half whose
/// largest magnitude is `top`, stored as f16(v · 2^-k) and read back times 2^k: relative
/// ≤ 2^-11 from 2^-28 of `top` up, and absolute ≤ 2^-39 of `top` below it (f16's
/// subnormals), which passes v's own bf16 rounding (2^-9) only below 2^-30 of `top`.
#[test]
fn f16_partial_values_keep_the_documented_error_bounds() {
    use etap_kernel::layout::{f16_partial_scale_exp, pow2};
    use half::f16;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..200_000 {
        let r = next();
        // The half's largest magnitude anywhere a normal f32 maps to a normal 2^k.
        let top = f32::from_bits(0x0d00_0000 + (r as u32 % 0x6a00_0000));
        let k = f16_partial_scale_exp(top);
        // A value from the top down to 2^-45 of it.
        let v =
            top * pow2(-((r >> 32) as i32 % 46)) * (0.5 + (r >> 40) as f32 / (1u64 << 25) as f32);
        let v = v.min(top);
        let back = f16::from_f32(v * pow2(-k)).to_f32() * pow2(k);
        let err = (back as f64 - v as f64).abs();
        if v as f64 >= top as f64 * 2f64.powi(-28) {
            assert!(
                err <= v as f64 * 2f64.powi(-11),
                "top {top:e} v {v:e} back {back:e}"
            );
        } else {
            assert!(
                err <= top as f64 * 2f64.powi(-39),
                "top {top:e} v {v:e} back {back:e}"
            );
        }
        if v as f64 >= top as f64 * 2f64.powi(-30) {
            assert!(
                err <= v as f64 * 2f64.powi(-9),
                "top {top:e} v {v:e} back {back:e}"
            );
        }
    }
}

#[test]
fn schedule_reports_the_most_pieces_of_a_request() {
    // One request of 4K tokens (64 pages) over 132 partitions: one page a piece, so the
    // decode launches the wide combine (COMBINE_WIDE_MIN_SPLITS).
    let c = DecodeConfig::new(1, 16, 64);
    let s = DecodePlan::schedule(&c, &[4096], 132).unwrap();
    assert_eq!(s.max_splits, 64);
    assert!(s.max_splits >= COMBINE_WIDE_MIN_SPLITS);
    // Sixteen requests of 512 tokens: 128 pages over 132 partitions, one a piece, 8 a request.
    let c = DecodeConfig::new(16, 16, 8);
    let s = DecodePlan::schedule(&c, &[512; 16], 132).unwrap();
    assert_eq!(s.max_splits, 8);
    assert!(s.max_splits < COMBINE_WIDE_MIN_SPLITS);
    // The largest count over the batch, from the split offsets; 0 when nothing has pages.
    let s = DecodePlan::schedule(&cfg(), &[0, 1, 64, 512], 132).unwrap();
    let most = s
        .split_offsets
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap();
    assert_eq!(s.max_splits, most as u32);
    assert_eq!(
        DecodePlan::schedule(&cfg(), &[0; 4], 132)
            .unwrap()
            .max_splits,
        0
    );
}

#[test]
fn schedule_counts_the_partitions_with_work() {
    // 64 pages over 132 partitions: one page each for the first 64, the rest idle; the
    // decode grid launches only the active ones.
    let c = DecodeConfig::new(1, 16, 64);
    let s = DecodePlan::schedule(&c, &[4096], 132).unwrap();
    assert_eq!(s.active_parts, 64);
    assert!(s.parts[..64].iter().all(|p| !p.is_idle()));
    assert!(s.parts[64..].iter().all(|p| p.is_idle()));
    // 1024 pages in 8-page budgets: 128 partitions with work, first; and none at all.
    let c = DecodeConfig::new(16, 16, 64);
    let s = DecodePlan::schedule(&c, &[4096; 16], 132).unwrap();
    assert_eq!(s.active_parts, 128);
    assert_eq!(s.parts.iter().filter(|p| !p.is_idle()).count(), 128);
    assert!(s.parts[..128].iter().all(|p| !p.is_idle()));
    assert_eq!(
        DecodePlan::schedule(&cfg(), &[0; 4], 132)
            .unwrap()
            .active_parts,
        0
    );
}

#[test]
fn schedule_charges_the_row_tiles_piece_overhead() {
    // b 16 at 32K: 64-row tiles (h_q 64) plan with the seesaw kernels' piece cost, 16-row
    // tiles (h_q 16) with the transposed kernels'; both are long shares.
    for (h_q, rows, fixed) in [
        (64, 64, FIXED_OVERHEAD_PAGES_64_ROWS),
        (16, 16, FIXED_OVERHEAD_PAGES),
    ] {
        let c = DecodeConfig::new(16, h_q, 512);
        let s = DecodePlan::schedule(&c, &[32768; 16], 132).unwrap();
        assert_eq!(s.rows_per_cta, rows);
        let mut parts = vec![PartWork::IDLE; s.num_parts];
        let mut offsets = vec![0i32; 17];
        let stats = plan_with_overhead(
            &[32768; 16],
            512,
            PAGE_SIZE,
            s.num_parts,
            fixed,
            &mut parts,
            &mut offsets,
        )
        .unwrap();
        assert_eq!(stats.overhead, fixed as u64);
        assert_eq!((s.parts, s.split_offsets), (parts, offsets), "h_q {h_q}");
    }
}

/// The plan of `lens` (at most 512 pages each) over 132 partitions at `fixed` pages a
/// piece, with its modelled time.
fn plan_at(lens: &[i32], fixed: u32) -> (Vec<PartWork>, Vec<i32>, u64) {
    let mut parts = vec![PartWork::IDLE; 132];
    let mut offsets = vec![0i32; lens.len() + 1];
    plan_with_overhead(lens, 512, PAGE_SIZE, 132, fixed, &mut parts, &mut offsets).unwrap();
    let time = modelled_makespan(&parts, &offsets, lens, PAGE_SIZE, PieceCosts::TRANSPOSED);
    (parts, offsets, time)
}

#[test]
fn schedule_keeps_the_plan_with_the_smaller_modelled_time() {
    // b 128 of 40-55 or 40-103 pages (long shares: 47 or 70 pages a partition): cheaper
    // pieces pack the short requests better; over the wider spread the plan in the
    // requests' own order models faster still. b 128 of 128 pages: at 5 pages a piece each
    // partition takes one whole request; at 2 every request would be split in two.
    let narrow: Vec<i32> = (0..128).map(|i| (40 + (i * 37) % 16) * 64).collect();
    let varied: Vec<i32> = (0..128).map(|i| (40 + (i * 37) % 64) * 64).collect();
    let even = vec![128 * 64; 128];
    for (lens, alt_wins, ordered) in [
        (narrow, true, false),
        (varied, true, true),
        (even, false, false),
    ] {
        let main = plan_at(&lens, FIXED_OVERHEAD_PAGES);
        let alt = plan_at(&lens, FIXED_OVERHEAD_PAGES_ALT);
        assert_eq!(alt.2 < main.2, alt_wins, "{} against {}", alt.2, main.2);
        let pick = if alt_wins { alt } else { main };
        let s = DecodePlan::schedule(&DecodeConfig::new(128, 16, 512), &lens, 132).unwrap();
        assert_eq!((s.rows_per_cta, s.ordered), (16, ordered));
        if !ordered {
            assert_eq!((s.parts, s.split_offsets), (pick.0, pick.1));
            continue;
        }
        // The ordered plan replaces the picked one where it models faster still.
        let ordered = modelled_makespan(
            &s.parts,
            &s.split_offsets_by_position(),
            &s.lengths_by_position(&lens),
            PAGE_SIZE,
            PieceCosts::TRANSPOSED,
        );
        assert!(ordered < pick.2, "{ordered} against {}", pick.2);
    }
}

#[test]
fn long_shares_take_the_cheaper_piece_plan_within_the_slack() {
    // b 32 of 512 pages on 132 SMs (124 pages a partition): at 5 pages a piece the
    // one-piece partitions hold 126 pages and the plan models one half page faster than at
    // 2, where they hold 125; over so long a share the cheaper pieces are kept.
    let lens = vec![512 * 64; 32];
    let (main, alt) = (
        plan_at(&lens, FIXED_OVERHEAD_PAGES),
        plan_at(&lens, FIXED_OVERHEAD_PAGES_ALT),
    );
    assert_eq!(alt.2, main.2 + 1);
    // The most pages a one-piece partition holds.
    let widest = |parts: &[PartWork]| {
        parts
            .iter()
            .filter(|p| !p.is_idle())
            .filter_map(
                |p| match pieces(p, &lens, PAGE_SIZE).collect::<Vec<_>>()[..] {
                    [q] => Some(q.page_end - q.page_begin),
                    _ => None,
                },
            )
            .max()
    };
    assert_eq!((widest(&main.0), widest(&alt.0)), (Some(126), Some(125)));
    let s = DecodePlan::schedule(&DecodeConfig::new(32, 16, 512), &lens, 132).unwrap();
    assert_eq!((s.parts, s.split_offsets), (alt.0, alt.1));
}

#[test]
fn schedule_validates_the_config() {
    assert_invalid(
        DecodePlan::schedule(&cfg().s_q(9), &[1; 4], 132),
        "s_q",
        &[],
    );
}

#[test]
fn schedule_names_an_sm_count_out_of_range() {
    for bad in [0, MAX_SM_COUNT + 1, u32::MAX] {
        assert_invalid(
            DecodePlan::schedule(&cfg(), &[64; 4], bad),
            "sm_count",
            &["not in 1..=4096"],
        );
    }
    DecodePlan::schedule(&cfg(), &[64; 4], MAX_SM_COUNT).unwrap();
}

/// The largest KV a valid config can name (128 requests of 2^31 - 64 tokens, 5826 KV
/// heads) has an L2 footprint near 2^61: the evict-first rule compares it without
/// overflowing, whatever the L2 size.
#[test]
fn the_l2_rule_holds_for_the_largest_footprints() {
    let config = DecodeConfig::new(128, 5826, MAX_PAGES).h_kv(5826);
    let s = DecodePlan::schedule(&config, &[(MAX_PAGES * 64) as i32; 128], 132).unwrap();
    assert!(s.l2_footprint > 1 << 60, "{}", s.l2_footprint);
    assert!(s.kv_evict_first(60 << 20));
    assert!(!s.kv_evict_first(u64::MAX));
}

#[test]
fn schedule_seqlens_count() {
    assert_invalid(
        DecodePlan::schedule(&cfg(), &[1, 2, 3], 132),
        "cache_seqlens",
        &["3 entries", "batch 4"],
    );
}

#[test]
fn schedule_negative_length_names_batch_index() {
    assert_invalid(
        DecodePlan::schedule(&cfg(), &[10, 20, -1, 5], 132),
        "cache_seqlens",
        &["seqlens[2]", "-1", "negative"],
    );
}

#[test]
fn schedule_too_long_names_batch_index() {
    // max_pages 8 holds 512 tokens.
    DecodePlan::schedule(&cfg(), &[512, 0, 0, 0], 132).unwrap();
    assert_invalid(
        DecodePlan::schedule(&cfg(), &[512, 0, 0, 513], 132),
        "cache_seqlens",
        &["seqlens[3]", "513", "512"],
    );
    assert_invalid(
        DecodePlan::schedule(&cfg(), &[i32::MAX, 0, 0, 0], 132),
        "cache_seqlens",
        &["seqlens[0]"],
    );
}

// ---- page ids (validate_block_table, the checked API) ----

/// A valid table for `seqlens` with `max_pages` columns: distinct pages, garbage past the end.
fn table(seqlens: &[i32], max_pages: usize) -> (Vec<i32>, usize) {
    let mut bt = vec![i32::MAX; seqlens.len() * max_pages];
    let mut next = 0;
    for (b, &l) in seqlens.iter().enumerate() {
        for p in 0..(l.max(0) as usize).div_ceil(64) {
            bt[b * max_pages + p] = next;
            next += 1;
        }
    }
    (bt, next as usize)
}

#[test]
fn block_table_valid_with_garbage_past_the_used_pages() {
    let c = cfg();
    let seqlens = [0, 1, 64, 65];
    let (bt, n) = table(&seqlens, c.max_pages);
    validate_block_table(&c, &seqlens, &bt, n).unwrap();
    // Unused entries may be anything, even negative.
    let mut bt2 = bt.clone();
    bt2[0] = -7; // request 0 has no pages
    bt2[c.max_pages + 1] = -7; // request 1 uses page 0 only
    validate_block_table(&c, &seqlens, &bt2, n).unwrap();
}

#[test]
fn block_table_page_out_of_range_names_batch_and_page() {
    let c = cfg();
    let seqlens = [0, 1, 64, 65];
    let (bt, n) = table(&seqlens, c.max_pages);
    for (b, p, id) in [
        (1, 0, n as i32),
        (3, 1, -1),
        (2, 0, i32::MAX),
        (3, 0, i32::MIN),
    ] {
        let mut bad = bt.clone();
        bad[b * c.max_pages + p] = id;
        assert_invalid(
            validate_block_table(&c, &seqlens, &bad, n),
            "block_table",
            &[
                &format!("block_table[{b}][{p}]"),
                &format!("{id}"),
                &format!("0..{n}"),
                &format!("batch index {b}"),
            ],
        );
    }
}

#[test]
fn block_table_shape_and_lengths() {
    let c = cfg();
    let seqlens = [1, 1, 1, 1];
    let (bt, n) = table(&seqlens, c.max_pages);
    assert_invalid(
        validate_block_table(&c, &seqlens, &bt[1..], n),
        "block_table",
        &["max_pages"],
    );
    // The shape itself is checked first: an empty batch is no table to accept.
    assert_invalid(
        validate_block_table(&DecodeConfig::new(0, 16, 8), &[], &[], n),
        "batch",
        &[],
    );
    assert_invalid(
        validate_block_table(&c, &seqlens[1..], &bt, n),
        "cache_seqlens",
        &[],
    );
    assert_invalid(
        validate_block_table(&c, &[1, 1, -3, 1], &bt, n),
        "cache_seqlens",
        &["cache_seqlens[2]", "-3"],
    );
    assert_invalid(
        validate_block_table(&c, &[1, 1, 1, 8 * 64 + 1], &bt, n),
        "cache_seqlens",
        &["cache_seqlens[3]"],
    );
    // num_blocks = 0: every used entry is out of range.
    assert_invalid(
        validate_block_table(&c, &seqlens, &bt, 0),
        "block_table",
        &["block_table[0][0]"],
    );
}

// ---- properties ----

proptest! {
    /// Any config either validates or is rejected with InvalidArgument; the accepted ones
    /// satisfy every rule.
    #[test]
    fn validate_is_exactly_the_rules(
        batch in 0usize..70000,
        s_q in 0usize..7,
        h_q in 0usize..300,
        h_kv in 0usize..5,
        max_pages in 0usize..100,
        scale in prop_oneof![Just(f32::NAN), Just(0.0f32), -1.0f32..1.0],
    ) {
        let c = DecodeConfig::new(batch, h_q, max_pages).s_q(s_q).h_kv(h_kv).softmax_scale(scale);
        let ok = (1..=MAX_BATCH).contains(&batch)
            && (1..=MAX_S_Q).contains(&s_q)
            && h_kv >= 1
            && h_q >= 1
            && h_q % h_kv == 0
            && s_q * h_q <= 65535
            && max_pages >= 1
            && ((batch * s_q * h_q * 576) as u64) < 1 << 32
            && ((batch * max_pages) as u64) < 1 << 32
            && scale.is_finite()
            && scale > 0.0;
        match c.validate() {
            Ok(()) => prop_assert!(ok),
            Err(Error::InvalidArgument { .. }) => prop_assert!(!ok),
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }

    /// The block-table check accepts exactly the tables whose used entries are in range,
    /// and names the first bad (batch, page) in row-major order.
    #[test]
    fn block_table_check_finds_the_first_bad_entry(
        seqlens in proptest::collection::vec(0i32..=8 * 64, 1..6),
        poison in proptest::collection::vec((0usize..6, 0usize..8, -3i32..3), 0..4),
    ) {
        let c = DecodeConfig::new(seqlens.len(), 16, 8);
        let (mut bt, n) = table(&seqlens, 8);
        for &(b, p, off) in &poison {
            if b < seqlens.len() {
                // off < 0: a negative id; off ≥ 0: num_blocks + off (out of range).
                bt[b * 8 + p] = if off < 0 { off } else { n as i32 + off };
            }
        }
        let first_bad = seqlens.iter().enumerate().find_map(|(b, &l)| {
            (0..(l as usize).div_ceil(64))
                .find(|&p| {
                    let id = bt[b * 8 + p];
                    id < 0 || id as usize >= n
                })
                .map(|p| (b, p))
        });
        match (validate_block_table(&c, &seqlens, &bt, n), first_bad) {
            (Ok(()), None) => {}
            (Err(Error::InvalidArgument { arg: "block_table", rule }), Some((b, p))) => {
                let needle = format!("block_table[{b}][{p}]");
                prop_assert!(rule.contains(&needle), "{}", rule);
            }
            (r, want) => prop_assert!(false, "got {r:?}, expected first bad entry {want:?}"),
        }
    }

    /// Valid lengths always schedule; a negative or too long one is reported with its index.
    #[test]
    fn schedule_reports_the_bad_length(
        mut seqlens in proptest::collection::vec(0i32..=512, 1..40),
        bad in proptest::option::of((0usize..40, prop_oneof![-1000i32..0, 513i32..100000])),
        sm_count in 1u32..200,
    ) {
        let c = DecodeConfig::new(seqlens.len(), 16, 8);
        let mut want = None;
        if let Some((i, v)) = bad {
            if i < seqlens.len() {
                seqlens[i] = v;
                want = Some(i);
            }
        }
        match (DecodePlan::schedule(&c, &seqlens, sm_count), want) {
            (Ok(s), None) => {
                prop_assert_eq!(s.split_offsets.len(), seqlens.len() + 1);
                prop_assert!(s.num_parts >= 1);
            }
            (Err(Error::InvalidArgument { arg: "cache_seqlens", rule }), Some(i)) => {
                let needle = format!("seqlens[{i}]");
                prop_assert!(rule.contains(&needle), "{}", rule);
            }
            (r, w) => prop_assert!(false, "got {:?}, expected bad index {:?}", r.map(|_| ()), w),
        }
    }
}

/// Schedules of uneven lengths on 16-, 32- and 64-row tiles over many SM counts, in either
/// precision: where a schedule takes
/// requests in its own order (`Schedule::ordered`) the order is a permutation, the pieces
/// over it cover every page of every request once, in page order, as many pieces as
/// `split_offsets` counts, and the planned lengths are covered; a device length that
/// changes the output is named by its batch index. Some draws of either kind of tile must
/// be ordered.
#[test]
fn ordered_schedules_cover_every_request_once() {
    let mut rng = flashmla_etap::reference::SplitMix64(50);
    let (mut ordered_64, mut ordered_transposed) = (0, 0);
    for _ in 0..600 {
        let batch = 1 + rng.below(64) as usize;
        let h_q = [16, 32, 64, 128][rng.below(4) as usize];
        let s_q = 1 + rng.below(2) as usize;
        let sm_count = 8 + rng.below(125) as u32;
        let longest = [2_000, 40_000][rng.below(2) as usize];
        let lengths: Vec<i32> = (0..batch).map(|_| rng.below(longest) as i32).collect();
        let max_pages = 40_000usize.div_ceil(PAGE_SIZE);
        let precision = [Precision::Fast, Precision::Accurate][rng.below(2) as usize];
        let config = DecodeConfig::new(batch, h_q, max_pages)
            .s_q(s_q)
            .precision(precision);
        let s = DecodePlan::schedule(&config, &lengths, sm_count).unwrap();
        let mut sorted = s.order.clone();
        sorted.sort_unstable();
        assert!(sorted.iter().copied().eq(0..batch as i32));
        if !s.ordered {
            assert!(s.order.iter().copied().eq(0..batch as i32));
            continue;
        }
        if s.rows_per_cta == SEESAW_ROWS {
            ordered_64 += 1;
        } else {
            ordered_transposed += 1;
        }
        // What the schedule derives from its pieces follows the ordered plan's.
        let max_splits = max_pieces(&s.split_offsets);
        assert_eq!(s.max_splits, max_splits);
        assert_eq!(
            s.combine,
            CombineLaunch::new(max_splits, (batch * s_q * h_q) as u64, sm_count)
        );
        assert_eq!(
            s.slot_rows,
            s.split_offsets[batch] as u64 * (s_q * h_q) as u64
        );
        assert_eq!(
            s.active_parts,
            s.parts.iter().filter(|p| !p.is_idle()).count()
        );
        s.check_coverage(&lengths).unwrap();
        assert_eq!(s.first_uncovered(max_pages, &lengths), None);
        // A request's device length changed: an emptied one is named by its batch index
        // (its planned pieces would stay unwritten); a grown one too, or it is harmless (its
        // last piece is inside its partition's range, which reads up to the device length).
        let r = rng.below(batch as u64) as usize;
        if lengths[r] > 0 {
            let mut emptied = lengths.clone();
            emptied[r] = 0;
            assert_eq!(s.first_uncovered(max_pages, &emptied), Some(r));
        }
        if lengths[r] + 64 <= 40_000 {
            let mut grown = lengths.clone();
            grown[r] += 64;
            let named = s.first_uncovered(max_pages, &grown);
            assert!(
                named.is_none() || named == Some(r),
                "{named:?} for request {r}"
            );
        }
    }
    assert!(
        ordered_64 >= 30 && ordered_transposed >= 30,
        "{ordered_64} draws ordered on 64-row tiles, {ordered_transposed} on 16/32-row tiles of 600"
    );
}
