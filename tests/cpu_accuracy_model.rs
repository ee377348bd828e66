//! The accuracy of the planner's choices for `Accurate`, on the CPU: the decode's arithmetic
//! emulated over a plan's own pieces (scores in f32, P split into bf16 P_hi + P_lo, f32
//! sums, each split request's partial results in the format `Schedule::partials_f16`
//! picks, the lse-weighted merge, the bf16 output) against the float64 reference. The
//! emulation matched the GPU's RMSE to four digits on the two `gpu_stress` cases that
//! found rows of one piece rounded twice (fifty-seventh session, `docs/ACCURACY.md`).

use etap_kernel::layout::{f16_partial_scale_exp, pow2};
use etap_kernel::plan::{pieces, PAGE_SIZE};
use flashmla_etap::check::reference_for;
use flashmla_etap::decode::{DecodeConfig, DecodePlan, Precision};
use flashmla_etap::reference::{
    generate, rmse, round_to_bf16, round_to_f16, rounding_floor_rmse, Dtype, MlaShape, D_QK, D_V,
};

/// An `Accurate` bf16 case planned for `sm_count` SMs, its scores scaled by `gain` beyond
/// 1/√576: the emulated output's RMSE over the rounding floor, with the partial results'
/// format the plan picks, or f16 where `force_f16`; and whether the plan picked f16.
fn emulated_ratio(
    (s_q, h_q, causal, gain): (usize, usize, bool, f64),
    lengths: &[i32],
    sm_count: u32,
    force_f16: bool,
) -> (f64, bool) {
    let shape = MlaShape::for_lengths(s_q, h_q, 1, PAGE_SIZE, lengths);
    let config = DecodeConfig::new(lengths.len(), h_q, shape.max_pages)
        .s_q(s_q)
        .causal(causal)
        .precision(Precision::Accurate);
    let sched = DecodePlan::schedule(&config, lengths, sm_count).unwrap();
    let planned_f16 = sched.partials_f16(Dtype::Bf16, false);
    let f16 = planned_f16 || force_f16;
    let x = generate(&shape, lengths, Dtype::Bf16, 5702).unwrap();
    let scale = (D_QK as f64).powf(-0.5) * gain;
    let reference = reference_for(&shape, &x, scale, causal).unwrap();
    // Each request's pieces, as page ranges, in the plan's order mapped back to the batch.
    let in_order = sched.lengths_by_position(lengths);
    let mut req_pieces = vec![Vec::new(); lengths.len()];
    for part in &sched.parts {
        for p in pieces(part, &in_order, PAGE_SIZE) {
            let b = sched.order[p.req as usize] as usize;
            req_pieces[b].push((p.page_begin as usize, p.page_end as usize));
        }
    }
    let scale_log2 = (scale * std::f64::consts::LOG2_E) as f32;
    let mut out = vec![0.0f64; reference.out.len()];
    for (b, ranges) in req_pieces.iter().enumerate() {
        let kv = |t: usize| {
            let block = x.block_table[b * shape.max_pages + t / PAGE_SIZE] as usize;
            &x.kv_cache[(block * PAGE_SIZE + t % PAGE_SIZE) * D_QK..][..D_QK]
        };
        for i in 0..s_q {
            let visible = if causal {
                lengths[b] as usize + 1 + i - s_q
            } else {
                lengths[b] as usize
            };
            for h in 0..h_q {
                let row = (b * s_q + i) * h_q + h;
                let q = &x.q[row * D_QK..][..D_QK];
                // (lse in log2 units, normalised values) of each piece the row sees.
                let mut merged: Vec<(f32, Vec<f32>)> = Vec::new();
                for &(begin, end) in ranges {
                    let tokens = begin * PAGE_SIZE..(end * PAGE_SIZE).min(visible);
                    if tokens.is_empty() {
                        continue;
                    }
                    let scores: Vec<f32> = tokens
                        .clone()
                        .map(|t| q.iter().zip(kv(t)).map(|(a, k)| a * k).sum::<f32>() * scale_log2)
                        .collect();
                    let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let (mut o, mut l) = (vec![0.0f32; D_V], 0.0f32);
                    for (t, s) in tokens.zip(&scores) {
                        let p = (s - m).exp2();
                        let hi = round_to_bf16(p as f64) as f32;
                        let lo = round_to_bf16((p - hi) as f64) as f32;
                        l += p;
                        for (acc, v) in o.iter_mut().zip(&kv(t)[..D_V]) {
                            *acc += hi * v + lo * v;
                        }
                    }
                    let inv = 1.0 / l;
                    let values = if f16 && ranges.len() > 1 {
                        o.chunks(D_V / 2)
                            .flat_map(|half| {
                                let top = half.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                                let k = f16_partial_scale_exp(top * inv);
                                let f = inv * pow2(-k);
                                half.iter()
                                    .map(move |v| round_to_f16((v * f) as f64) as f32 * pow2(k))
                            })
                            .collect()
                    } else {
                        o.iter().map(|v| v * inv).collect()
                    };
                    merged.push((m + l.log2(), values));
                }
                let top = merged.iter().map(|p| p.0).fold(f32::NEG_INFINITY, f32::max);
                let weights: Vec<f32> = merged.iter().map(|p| (p.0 - top).exp2()).collect();
                let total: f32 = weights.iter().sum();
                for d in 0..D_V {
                    let sum: f32 = weights.iter().zip(&merged).map(|(w, p)| w * p.1[d]).sum();
                    out[row * D_V + d] = round_to_bf16((sum / total) as f64);
                }
            }
        }
    }
    let ratio =
        rmse(&out, &reference.out).unwrap() / rounding_floor_rmse(&reference.out, Dtype::Bf16);
    (ratio, planned_f16)
}

#[test]
fn accurate_plans_keep_causal_rows_within_the_bound() {
    // (s_q, h_q, lengths, SMs, least ratio with f16 partial results forced). Rows of one
    // piece: the two stress cases' shapes (one page a partition: 64-row tiles, f32 by
    // `Schedule::one_piece_rows`) and
    // causal requests split just before a last page of one token at two pages a partition
    // (some of them; f32). Every row merging: requests split 2 + 2 pages, 200 tokens
    // over 33 partitions, and two of the grid's causal plans that the fills keeping tails
    // make (batch order, the requests' own; f16).
    let one_piece_rows = [
        (4, 128, vec![65], 132, 1.015),
        (4, 26, vec![65, 65], 132, 1.015),
        (4, 16, vec![129; 70], 132, 1.01),
        (2, 64, vec![129; 44], 132, 1.01),
    ];
    for (s_q, h_q, lengths, sms, least) in &one_piece_rows {
        let (ratio, f16) = emulated_ratio((*s_q, *h_q, true, 1.0), lengths, *sms, false);
        assert!(
            !f16 && ratio < 1.001,
            "s_q {s_q}, h_q {h_q}: {ratio} (f16 {f16})"
        );
        // The same plans with f16 partial results: the rows of one piece round twice.
        let (forced, _) = emulated_ratio((*s_q, *h_q, true, 1.0), lengths, *sms, true);
        assert!(
            forced > *least,
            "s_q {s_q}, h_q {h_q}, f16 forced: {forced}"
        );
    }
    for (s_q, h_q, lengths, sms) in [
        (4, 16, vec![256; 66], 132),
        (3, 32, vec![200; 24], 33),
        (2, 128, vec![731, 82, 300, 70], 16),
        (2, 64, vec![808, 448, 1078], 16),
    ] {
        let (ratio, f16) = emulated_ratio((s_q, h_q, true, 1.0), &lengths, sms, false);
        assert!(
            f16 && (1.001..1.012).contains(&ratio),
            "s_q {s_q}, h_q {h_q}: {ratio}"
        );
    }
}

/// Non-causal rows see every piece; attention held by few tokens (scores scaled up 50 and
/// 400 times) leaves the merged rows off f16's grid all the same.
#[test]
fn accurate_plans_keep_peaked_attention_within_the_bound() {
    for gain in [50.0, 400.0] {
        let (ratio, f16) = emulated_ratio((1, 64, false, gain), &[2000; 8], 132, false);
        assert!(f16 && ratio < 1.012, "scores x{gain}: {ratio} (f16 {f16})");
    }
}
