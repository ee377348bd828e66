//! CPU tests of the float64 reference (`flashmla_etap::reference`).
use flashmla_etap::reference::{
    generate, reference_decode, rmse, round_to_bf16, round_to_f16, rounding_floor_rmse, Dtype,
    Inputs, MlaShape, SplitMix64, D_QK, D_V,
};

/// An independent, naive formulation: per (b, i, h), weights `exp(s_t - lse)` with
/// `lse = ln Σ exp(s_t)` computed by a max-shifted log-sum-exp; token by token lookups.
fn naive(s: &MlaShape, x: &Inputs, scale: f64, causal: bool) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; s.batch * s.s_q * s.h_q * D_V];
    let mut lse = vec![0.0; s.batch * s.h_q * s.s_q];
    for b in 0..s.batch {
        let len = x.seqlens[b] as i64;
        for i in 0..s.s_q {
            let last = if causal {
                len - s.s_q as i64 + i as i64 // inclusive
            } else {
                len - 1
            };
            for h in 0..s.h_q {
                let kvh = h / (s.h_q / s.h_kv);
                let qv = &x.q[((b * s.s_q + i) * s.h_q + h) * D_QK..][..D_QK];
                let row = |t: i64| -> &[f32] {
                    let t = t as usize;
                    let page = x.block_table[b * s.max_pages + t / s.page_size] as usize;
                    let r = (page * s.page_size + t % s.page_size) * s.h_kv + kvh;
                    &x.kv_cache[r * D_QK..][..D_QK]
                };
                let scores: Vec<f64> = (0..=last)
                    .map(|t| {
                        scale
                            * row(t)
                                .iter()
                                .zip(qv)
                                .map(|(&k, &q)| k as f64 * q as f64)
                                .sum::<f64>()
                    })
                    .collect();
                let li = (b * s.h_q + h) * s.s_q + i;
                if scores.is_empty() {
                    lse[li] = f64::INFINITY;
                    continue;
                }
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let l = m + scores.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
                lse[li] = l;
                let o = &mut out[((b * s.s_q + i) * s.h_q + h) * D_V..][..D_V];
                for (t, &sc) in scores.iter().enumerate() {
                    let w = (sc - l).exp();
                    for (d, &v) in o.iter_mut().zip(&row(t as i64)[..D_V]) {
                        *d += w * v as f64;
                    }
                }
            }
        }
    }
    (out, lse)
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| if x == y { 0.0 } else { (x - y).abs() })
        .fold(0.0, f64::max)
}

fn run(s: &MlaShape, x: &Inputs, scale: f64, causal: bool) -> flashmla_etap::reference::Reference {
    reference_decode(
        s,
        &x.q,
        &x.kv_cache,
        &x.block_table,
        &x.seqlens,
        scale,
        causal,
    )
    .unwrap()
}

fn compare_with_naive(s: &MlaShape, x: &Inputs, scale: f64, causal: bool) {
    let r = run(s, x, scale, causal);
    let (out, lse) = naive(s, x, scale, causal);
    assert!(
        max_abs_diff(&r.out, &out) < 1e-13,
        "out differs: {}",
        max_abs_diff(&r.out, &out)
    );
    assert!(
        max_abs_diff(&r.lse, &lse) < 1e-12,
        "lse differs: {}",
        max_abs_diff(&r.lse, &lse)
    );
    // lse is +inf exactly where a query sees nothing; everything is finite otherwise.
    for b in 0..s.batch {
        for h in 0..s.h_q {
            for i in 0..s.s_q {
                let vis = s.visible(x.seqlens[b] as usize, i, causal);
                let l = r.lse[(b * s.h_q + h) * s.s_q + i];
                let o = &r.out[((b * s.s_q + i) * s.h_q + h) * D_V..][..D_V];
                if vis == 0 {
                    assert_eq!(l, f64::INFINITY);
                    assert!(o.iter().all(|&v| v == 0.0));
                } else {
                    assert!(l.is_finite());
                    assert!(o.iter().all(|v| v.is_finite()));
                }
            }
        }
    }
}

fn scale() -> f64 {
    1.0 / (D_QK as f64).sqrt()
}

/// Hand-built inputs: one kv head, page size 2, identity block table.
fn hand_inputs(s_q: usize, rows: &[[f32; 2]], q0: f32, len: i32) -> (MlaShape, Inputs) {
    let page_size = 2;
    let pages = rows.len().div_ceil(page_size);
    let s = MlaShape {
        batch: 1,
        s_q,
        h_q: 1,
        h_kv: 1,
        page_size,
        max_pages: pages,
        num_blocks: pages,
    };
    let mut q = vec![0.0f32; s.q_len()];
    for i in 0..s_q {
        q[i * D_QK] = q0;
    }
    let mut kv = vec![f32::NAN; s.kv_len()];
    for (t, r) in rows.iter().enumerate() {
        let row = &mut kv[t * D_QK..(t + 1) * D_QK];
        row.fill(0.0);
        row[0] = r[0]; // key dim 0 (also V dim 0)
        row[1] = r[1]; // V dim 1 (and key dim 1, q is 0 there)
    }
    let x = Inputs {
        dtype: Dtype::Bf16,
        q,
        kv_cache: kv,
        block_table: (0..pages as i32).collect(),
        seqlens: vec![len],
    };
    (s, x)
}

#[test]
fn one_token_gives_its_v_row_exactly() {
    let s = MlaShape::for_lengths(1, 2, 1, 64, &[1]);
    let x = generate(&s, &[1], Dtype::Bf16, 7).unwrap();
    let r = run(&s, &x, scale(), false);
    let page = x.block_table[0] as usize;
    let k = &x.kv_cache[page * 64 * D_QK..][..D_QK];
    for h in 0..2 {
        let v: Vec<f64> = k[..D_V].iter().map(|&v| v as f64).collect();
        assert_eq!(&r.out[h * D_V..(h + 1) * D_V], &v[..]);
        let qk: f64 = x.q[h * D_QK..(h + 1) * D_QK]
            .iter()
            .zip(k)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        assert!((r.lse[h] - scale() * qk).abs() < 1e-15);
    }
}

#[test]
fn two_tokens_by_hand() {
    // q = e0; k0 = (1, v=3), k1 = (0, v=-1); scale 1: s = (1, 0).
    let (s, x) = hand_inputs(1, &[[1.0, 3.0], [0.0, -1.0]], 1.0, 2);
    let r = run(&s, &x, 1.0, false);
    let e = 1f64.exp();
    let (w0, w1) = (e / (e + 1.0), 1.0 / (e + 1.0));
    assert!((r.lse[0] - (e + 1.0).ln()).abs() < 1e-15);
    assert!((r.out[0] - w0).abs() < 1e-15); // v dim 0 = k dim 0
    assert!((r.out[1] - (3.0 * w0 - w1)).abs() < 1e-15);
    assert!(r.out[2..D_V].iter().all(|&v| v == 0.0));
}

#[test]
fn causal_masking_by_hand() {
    // 3 tokens, s_q = 2: query 0 sees tokens 0..=1, query 1 sees 0..=2.
    let (s, x) = hand_inputs(2, &[[0.0, 1.0], [0.0, 2.0], [0.0, 30.0]], 1.0, 3);
    let r = run(&s, &x, 1.0, true);
    // All scores are 0 (q·k = q0 * k0 = 0): uniform weights.
    assert!((r.out[1] - 1.5).abs() < 1e-15);
    assert!((r.out[D_V + 1] - 11.0).abs() < 1e-14);
    assert!((r.lse[0] - 2f64.ln()).abs() < 1e-15);
    assert!((r.lse[1] - 3f64.ln()).abs() < 1e-15);
    let r = run(&s, &x, 1.0, false);
    assert!((r.out[1] - 11.0).abs() < 1e-14);
    assert!((r.out[D_V + 1] - 11.0).abs() < 1e-14);
}

#[test]
fn causal_with_fewer_keys_than_queries() {
    // L = 1, s_q = 3: queries 0 and 1 see nothing, query 2 sees key 0.
    let (s, x) = hand_inputs(3, &[[0.5, 2.0]], 1.0, 1);
    let r = run(&s, &x, 1.0, true);
    assert_eq!(r.lse[..2], [f64::INFINITY, f64::INFINITY]);
    assert!(r.out[..2 * D_V].iter().all(|&v| v == 0.0));
    assert_eq!(r.lse[2], 0.5);
    assert_eq!(r.out[2 * D_V + 1], 2.0);
    compare_with_naive(&s, &x, 1.0, true);
}

#[test]
fn zero_length_gives_zero_and_inf() {
    for causal in [false, true] {
        let lens = [0, 70, 0];
        let s = MlaShape::for_lengths(2, 4, 1, 64, &lens);
        let x = generate(&s, &lens, Dtype::Bf16, 1).unwrap();
        let r = run(&s, &x, scale(), causal);
        for b in [0usize, 2] {
            let o = &r.out[b * 2 * 4 * D_V..][..2 * 4 * D_V];
            assert!(o.iter().all(|&v| v == 0.0));
            assert!(r.lse[b * 8..b * 8 + 8].iter().all(|&l| l == f64::INFINITY));
        }
        compare_with_naive(&s, &x, scale(), causal);
    }
}

#[test]
fn matches_naive_varied_shapes() {
    let cases: &[(usize, usize, usize, usize, &[i32])] = &[
        // (s_q, h_q, h_kv, page_size, lengths)
        (1, 16, 1, 64, &[1, 63, 64, 65, 200]),
        (2, 8, 1, 64, &[1, 2, 130, 0]),
        (3, 5, 1, 16, &[2, 3, 4, 33]),
        (4, 4, 2, 64, &[100, 3]),
        (1, 6, 3, 8, &[17, 0, 64]),
        (2, 24, 1, 64, &[300]),
    ];
    for &(s_q, h_q, h_kv, ps, lens) in cases {
        let s = MlaShape::for_lengths(s_q, h_q, h_kv, ps, lens);
        for dtype in [Dtype::Bf16, Dtype::F16] {
            let x = generate(&s, lens, dtype, 42 + s_q as u64).unwrap();
            for causal in [false, true] {
                compare_with_naive(&s, &x, scale(), causal);
                compare_with_naive(&s, &x, 0.37, causal);
            }
        }
    }
}

#[test]
fn kv_head_grouping() {
    // h_q = 4, h_kv = 2: heads 0,1 use kv head 0; heads 2,3 use kv head 1.
    let lens = [90];
    let s = MlaShape::for_lengths(1, 4, 2, 64, &lens);
    let x = generate(&s, &lens, Dtype::Bf16, 3).unwrap();
    let base = run(&s, &x, scale(), false);
    let mut y = x.clone();
    // Change kv head 1 of token 5.
    let page = y.block_table[0] as usize;
    let row = (page * 64 + 5) * 2 + 1;
    for v in &mut y.kv_cache[row * D_QK..(row + 1) * D_QK] {
        *v = -*v + 0.25;
    }
    let r = run(&s, &y, scale(), false);
    assert_eq!(r.out[..2 * D_V], base.out[..2 * D_V]);
    assert_eq!(r.lse[..2], base.lse[..2]);
    assert!(max_abs_diff(&r.out[2 * D_V..], &base.out[2 * D_V..]) > 1e-6);
    assert!(r.lse[2] != base.lse[2] && r.lse[3] != base.lse[3]);
    compare_with_naive(&s, &y, scale(), false);
}

#[test]
fn nan_poison_is_never_read() {
    let lens = [1, 64, 65, 0, 129, 1000];
    for (s_q, h_kv) in [(1, 1), (2, 1), (3, 2)] {
        let s = MlaShape::for_lengths(s_q, 8, h_kv, 64, &lens);
        let x = generate(&s, &lens, Dtype::F16, 11).unwrap();
        // The generator poisons exactly the invisible rows and unused block-table entries.
        let mut visible_rows = vec![false; s.num_blocks * s.page_size];
        for (b, &l) in lens.iter().enumerate() {
            let used = (l as usize).div_ceil(64);
            for p in 0..s.max_pages {
                let id = x.block_table[b * s.max_pages + p];
                if p < used {
                    assert!((0..s.num_blocks as i32).contains(&id));
                    for t in 0..64 {
                        visible_rows[id as usize * 64 + t] = p * 64 + t < l as usize;
                    }
                } else {
                    assert_eq!(id, i32::MAX);
                }
            }
        }
        for (row, &vis) in visible_rows.iter().enumerate() {
            let vals = &x.kv_cache[row * h_kv * D_QK..(row + 1) * h_kv * D_QK];
            if vis {
                assert!(vals.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
            } else {
                assert!(vals.iter().all(|v| v.is_nan()), "row {row} not poisoned");
            }
        }
        for causal in [false, true] {
            compare_with_naive(&s, &x, scale(), causal);
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let lens = [100, 10];
    let s = MlaShape::for_lengths(1, 4, 1, 64, &lens);
    let x = generate(&s, &lens, Dtype::Bf16, 5).unwrap();
    let call = |bt: &[i32], sl: &[i32], q: &[f32]| {
        reference_decode(&s, q, &x.kv_cache, bt, sl, 1.0, false)
    };
    assert!(call(&x.block_table, &x.seqlens, &x.q).is_ok());
    // Out-of-range page among used pages.
    let mut bt = x.block_table.clone();
    bt[1] = s.num_blocks as i32;
    let e = call(&bt, &x.seqlens, &x.q).unwrap_err().to_string();
    assert!(e.contains("block_table[0][1]"), "{e}");
    let mut bt = x.block_table.clone();
    bt[s.max_pages] = -1;
    assert!(call(&bt, &x.seqlens, &x.q).is_err());
    // Garbage past the last used page is fine.
    let mut bt = x.block_table.clone();
    bt[s.max_pages + 1] = -12345;
    assert!(call(&bt, &x.seqlens, &x.q).is_ok());
    // Lengths.
    assert!(call(&x.block_table, &[100, -1], &x.q)
        .unwrap_err()
        .to_string()
        .contains("seqlens[1]"));
    assert!(call(&x.block_table, &[129, 10], &x.q)
        .unwrap_err()
        .to_string()
        .contains("seqlens[0]"));
    // Sizes and head grouping.
    assert!(call(&x.block_table, &x.seqlens, &x.q[1..]).is_err());
    assert!(call(&x.block_table[1..], &x.seqlens, &x.q).is_err());
    let s3 = MlaShape { h_kv: 3, ..s };
    assert!(reference_decode(
        &s3,
        &x.q,
        &x.kv_cache,
        &x.block_table,
        &x.seqlens,
        1.0,
        false
    )
    .is_err());
}

#[test]
fn generator_is_deterministic_and_distributed() {
    let lens = [300, 5, 64];
    let s = MlaShape::for_lengths(2, 16, 1, 64, &lens);
    let a = generate(&s, &lens, Dtype::Bf16, 9).unwrap();
    let b = generate(&s, &lens, Dtype::Bf16, 9).unwrap();
    let c = generate(&s, &lens, Dtype::Bf16, 10).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.q), bits(&b.q));
    assert_eq!(bits(&a.kv_cache), bits(&b.kv_cache));
    assert_eq!(a.block_table, b.block_table);
    assert_ne!(bits(&a.q), bits(&c.q));
    // Values are exact in the dtype, within [-1, 1], with std ≈ 0.1.
    for (dtype, round) in [
        (Dtype::Bf16, round_to_bf16 as fn(f64) -> f64),
        (Dtype::F16, round_to_f16),
    ] {
        let x = generate(&s, &lens, dtype, 1).unwrap();
        let vals: Vec<f64> =
            x.q.iter()
                .chain(&x.kv_cache)
                .filter(|v| !v.is_nan())
                .map(|&v| v as f64)
                .collect();
        assert!(vals.iter().all(|&v| round(v) == v && v.abs() <= 1.0));
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(
            mean.abs() < 0.003 && (sd - 0.1).abs() < 0.003,
            "mean {mean} sd {sd}"
        );
    }
    // Distinct pages across all requests.
    let mut used: Vec<i32> = a
        .block_table
        .iter()
        .copied()
        .filter(|&p| p != i32::MAX)
        .collect();
    let n = used.len();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), n);
    assert_eq!(n, 5 + 1 + 1);
}

#[test]
fn rounding_matches_half_on_f32() {
    let mut rng = SplitMix64(123);
    let specials = [
        0.0f32,
        -0.0,
        1.0,
        f32::MIN_POSITIVE,
        1e-40,
        -1e-45,
        65504.0,
        65519.99,
        65520.0,
        3.0e38,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        5.96e-8,
        2.98e-8,
        2.99e-8,
    ];
    let randoms = (0..200_000).map(|_| f32::from_bits(rng.next_u64() as u32));
    for x in specials.into_iter().chain(randoms) {
        if x.is_nan() {
            continue;
        }
        let b = half::bf16::from_f32(x).to_f64();
        let h = half::f16::from_f32(x).to_f64();
        assert_eq!(
            round_to_bf16(x as f64).to_bits(),
            b.to_bits(),
            "bf16 of {x:e}"
        );
        assert_eq!(
            round_to_f16(x as f64).to_bits(),
            h.to_bits(),
            "f16 of {x:e}"
        );
    }
    assert!(round_to_bf16(f64::NAN).is_nan());
}

#[test]
fn rounding_is_single_and_ties_to_even() {
    let p = |e: i32| 2f64.powi(e);
    // Ties to even.
    assert_eq!(round_to_bf16(1.0 + p(-8)), 1.0);
    assert_eq!(round_to_bf16(1.0 + 3.0 * p(-8)), 1.0 + p(-6));
    assert_eq!(round_to_f16(1.0 + p(-11)), 1.0);
    assert_eq!(round_to_f16(1.0 + 3.0 * p(-11)), 1.0 + p(-9));
    // Just above a tie, by less than f32 can hold: a detour through f32 would round down.
    assert_eq!(round_to_bf16(1.0 + p(-8) + p(-40)), 1.0 + p(-7));
    assert_eq!(round_to_f16(1.0 + p(-11) + p(-40)), 1.0 + p(-10));
    // Overflow and subnormals.
    assert_eq!(round_to_f16(65519.0), 65504.0);
    assert_eq!(round_to_f16(65520.0), f64::INFINITY);
    assert_eq!(round_to_f16(-1e6), f64::NEG_INFINITY);
    assert_eq!(round_to_f16(p(-25)), 0.0);
    assert_eq!(round_to_f16(p(-25) * 1.0001), p(-24));
    assert_eq!(round_to_bf16(p(-134) * 1.5), p(-133));
    assert_eq!(round_to_bf16(1e-300), 0.0);
    assert_eq!(round_to_bf16(-1e-320).to_bits(), (-0.0f64).to_bits());
}

#[test]
fn rmse_and_rounding_floor() {
    let rmse = |a: &[f64], b: &[f64]| rmse(a, b).unwrap();
    assert_eq!(rmse(&[], &[]), 0.0);
    assert_eq!(rmse(&[1.0, 2.0], &[1.0, 4.0]), 2f64.sqrt());
    assert_eq!(rmse(&[f64::INFINITY, 1.0], &[f64::INFINITY, 1.0]), 0.0);
    assert!(rmse(&[f64::INFINITY], &[1.0]).is_infinite());
    assert!(rmse(&[f64::NAN], &[1.0]).is_nan());
    let exact = [0.5, -0.25, 1.0 + 2f64.powi(-7)];
    assert_eq!(rounding_floor_rmse(&exact, Dtype::Bf16), 0.0);
    let x = 1.0 + 2f64.powi(-9);
    assert_eq!(rounding_floor_rmse(&[x], Dtype::Bf16), 2f64.powi(-9));
    assert_eq!(rounding_floor_rmse(&[x], Dtype::F16), 0.0);
    // A real output: the floor is positive and far below the values' scale.
    let lens = [500, 77];
    let s = MlaShape::for_lengths(1, 16, 1, 64, &lens);
    let inp = generate(&s, &lens, Dtype::Bf16, 2).unwrap();
    let r = run(&s, &inp, scale(), false);
    let fb = rounding_floor_rmse(&r.out, Dtype::Bf16);
    let fh = rounding_floor_rmse(&r.out, Dtype::F16);
    let rms = (r.out.iter().map(|v| v * v).sum::<f64>() / r.out.len() as f64).sqrt();
    assert!(fb > 0.0 && fb < rms * 4e-3, "bf16 floor {fb}, rms {rms}");
    assert!(fh > 0.0 && fh < fb / 4.0, "f16 floor {fh}, bf16 floor {fb}");
}

#[test]
fn larger_case_runs_in_parallel_and_is_consistent() {
    // Enough tasks to use several threads; compare a sample with the naive formulation.
    let lens = [4096, 1000, 0, 3000];
    let s = MlaShape::for_lengths(2, 32, 1, 64, &lens);
    let x = generate(&s, &lens, Dtype::Bf16, 77).unwrap();
    compare_with_naive(&s, &x, scale(), true);
}

/// The `arg` of the `InvalidArgument` that `result` must be.
fn invalid_arg<T: std::fmt::Debug>(result: flashmla_etap::Result<T>) -> &'static str {
    match result {
        Err(flashmla_etap::Error::InvalidArgument { arg, .. }) => arg,
        other => panic!("expected Error::InvalidArgument, got {other:?}"),
    }
}

/// An lse size that overflows is an error even where q's and out's sizes are 0 (s_q = 0).
#[test]
fn reference_lse_size_overflow_is_an_error() {
    let shape = MlaShape {
        batch: 2,
        s_q: 0,
        h_q: usize::MAX,
        h_kv: 1,
        page_size: 64,
        max_pages: 1,
        num_blocks: 1,
    };
    let kv = vec![0.0f32; 64 * 576];
    let result = reference_decode(&shape, &[], &kv, &[0, 0], &[0, 0], 1.0, false);
    assert_eq!(invalid_arg(result), "shape");
}

/// Bad shapes and lengths are errors naming the argument, checked before anything is
/// allocated (the overflowing shapes would not fit in memory).
#[test]
fn generate_rejects_bad_inputs() {
    let lens = [100, 10];
    let s = MlaShape::for_lengths(1, 4, 1, 64, &lens);
    assert!(generate(&s, &lens, Dtype::Bf16, 5).is_ok());
    let gen = |s: &MlaShape, lens: &[i32]| generate(s, lens, Dtype::Bf16, 5);
    assert_eq!(invalid_arg(gen(&s, &[100, -1])), "lengths");
    assert_eq!(invalid_arg(gen(&s, &[100])), "lengths");
    assert_eq!(invalid_arg(gen(&s, &[100, 10, 1])), "lengths");
    // Past max_pages · page_size = 128.
    assert_eq!(invalid_arg(gen(&s, &[129, 10])), "lengths");
    let zero_pages = MlaShape { page_size: 0, ..s };
    assert_eq!(invalid_arg(gen(&zero_pages, &lens)), "shape.page_size");
    // 3 pages needed, 2 in the cache.
    let small = MlaShape { num_blocks: 2, ..s };
    assert_eq!(invalid_arg(gen(&small, &lens)), "shape.num_blocks");
    // Page ids past i32 (the cache itself would fit the address space).
    let many = MlaShape {
        num_blocks: i32::MAX as usize + 1,
        page_size: 1,
        max_pages: 128,
        ..s
    };
    assert_eq!(invalid_arg(gen(&many, &lens)), "shape.num_blocks");
    // Element counts that overflow usize, or memory.
    for huge in [
        MlaShape {
            max_pages: usize::MAX,
            ..s
        },
        MlaShape {
            max_pages: usize::MAX / 4,
            ..s
        },
        MlaShape {
            num_blocks: usize::MAX / 64,
            ..s
        },
        MlaShape {
            h_q: usize::MAX / 2,
            ..s
        },
        MlaShape { s_q: 1 << 55, ..s },
        // A cache page too large even with no pages.
        MlaShape {
            num_blocks: 0,
            page_size: usize::MAX / 2,
            h_kv: 1 << 20,
            ..s
        },
    ] {
        assert_eq!(invalid_arg(huge.check()), "shape", "{huge:?}");
        assert_eq!(invalid_arg(gen(&huge, &lens)), "shape", "{huge:?}");
    }
    assert!(s.check().is_ok());
    assert_eq!(
        MlaShape {
            max_pages: usize::MAX,
            ..s
        }
        .block_table_len(),
        usize::MAX
    );
    assert_eq!(
        MlaShape {
            batch: 0,
            max_pages: usize::MAX,
            ..s
        }
        .block_table_len(),
        0
    );
}

/// `key_offset` is `None` outside the shape and the block table, and for page ids that
/// are not pages of the cache; otherwise the row's offset.
#[test]
fn key_offset_is_none_outside_the_table() {
    let s = MlaShape {
        batch: 2,
        s_q: 1,
        h_q: 2,
        h_kv: 2,
        page_size: 4,
        max_pages: 2,
        num_blocks: 3,
    };
    let bt = [2, -1, 0, 3];
    assert_eq!(
        s.key_offset(&bt, 0, 1, 1),
        Some(((2 * 4 + 1) * 2 + 1) * D_QK)
    );
    assert_eq!(s.key_offset(&bt, 1, 3, 0), Some(3 * 2 * D_QK));
    assert_eq!(s.key_offset(&bt, 0, 4, 0), None, "negative page id");
    assert_eq!(s.key_offset(&bt, 1, 4, 0), None, "page id past num_blocks");
    assert_eq!(s.key_offset(&bt, 2, 0, 0), None, "request past the batch");
    assert_eq!(
        s.key_offset(&bt, 0, 8, 0),
        None,
        "token past max_pages · page_size"
    );
    assert_eq!(s.key_offset(&bt, 0, 0, 2), None, "KV head past h_kv");
    assert_eq!(s.key_offset(&bt[..3], 1, 4, 0), None, "short block table");
    let no_pages = MlaShape { page_size: 0, ..s };
    assert_eq!(no_pages.key_offset(&bt, 0, 0, 0), None, "page_size 0");
}

#[test]
fn rmse_rejects_different_lengths() {
    assert_eq!(invalid_arg(rmse(&[1.0, 2.0], &[1.0])), "b");
    assert_eq!(invalid_arg(rmse(&[], &[1.0])), "b");
}

/// `CaseResult::measure` compares whole results: a short or long `out` or `lse` is an
/// error, not a comparison of the part that is there.
#[test]
fn measure_rejects_partial_results() {
    use flashmla_etap::check::CaseResult;
    let lens = [70, 3];
    let s = MlaShape::for_lengths(2, 4, 1, 64, &lens);
    let x = generate(&s, &lens, Dtype::Bf16, 8).unwrap();
    let r = run(&s, &x, scale(), true);
    let lse: Vec<f32> = r.lse.iter().map(|&l| l as f32).collect();
    let measure = |out: &[f64], lse: &[f32]| {
        CaseResult::measure(out, lse, &r, Dtype::Bf16, false, true, false)
    };
    let m = measure(&r.out, &lse).unwrap();
    assert_eq!((m.rmse, m.bad_values, m.values), (0.0, 0, r.out.len()));
    assert!(m.passes());
    assert_eq!(invalid_arg(measure(&r.out, &lse[1..])), "lse");
    assert_eq!(
        invalid_arg(measure(&r.out, &[lse.clone(), vec![0.0]].concat())),
        "lse"
    );
    assert_eq!(invalid_arg(measure(&r.out[..r.out.len() - 1], &lse)), "out");
    assert_eq!(invalid_arg(measure(&[], &lse)), "out");
}

/// `late_max_moves` and `Case::validate` reject the cases the decode would, naming the
/// argument, instead of dividing by zero or indexing out of bounds.
#[test]
fn late_max_moves_rejects_bad_cases() {
    use flashmla_etap::check::{late_max_moves, Case};
    let ok = Case::new(Dtype::Bf16, 1, 4, vec![200, 0, 65], false);
    assert!(ok.validate().is_ok());
    assert!(late_max_moves(&ok, 0.0).unwrap() > 0);
    let bad = |case: Case| {
        let arg = invalid_arg(case.validate());
        assert_eq!(invalid_arg(late_max_moves(&case, 0.0)), arg);
        arg
    };
    assert_eq!(
        bad(Case {
            h_kv: 8,
            ..ok.clone()
        }),
        "h_q"
    );
    assert_eq!(
        bad(Case {
            h_kv: 0,
            ..ok.clone()
        }),
        "h_kv"
    );
    assert_eq!(
        bad(Case {
            h_q: 0,
            ..ok.clone()
        }),
        "h_q"
    );
    assert_eq!(
        bad(Case {
            s_q: 0,
            ..ok.clone()
        }),
        "s_q"
    );
    assert_eq!(
        bad(Case {
            lengths: vec![200, -1],
            ..ok.clone()
        }),
        "lengths"
    );
    assert_eq!(
        bad(Case {
            lengths: vec![],
            ..ok.clone()
        }),
        "batch"
    );
    assert_eq!(
        bad(Case {
            score_gain: 0.0,
            ..ok.clone()
        }),
        "score_gain"
    );
    assert_eq!(
        bad(Case {
            score_gain: f64::NAN,
            ..ok.clone()
        }),
        "score_gain"
    );
    assert_eq!(
        bad(Case {
            lengths: vec![i32::MAX],
            ..ok.clone()
        }),
        "max_pages"
    );
    // Each request fits the block table, all of them not one cache.
    let long = vec![i32::MAX / 2; 3];
    assert_eq!(
        bad(Case {
            lengths: long,
            ..ok.clone()
        }),
        "lengths"
    );
}

/// `check::moving_maxima` (run on the GPU by `tests/gpu_decode.rs`) is there to move rows'
/// running max past the kernels' `SOFTMAX_SLACK` after a request's first tile: each of its
/// cases does, where inputs drawn as ANCHORS.md draws them do not.
#[test]
fn moving_maxima_cases_move_the_max() {
    use flashmla_etap::check::{late_max_moves, moving_maxima, Case};
    let slack = etap_kernel::config::SOFTMAX_SLACK as f64;
    for case in moving_maxima() {
        let moves = late_max_moves(&case, slack).unwrap();
        println!("{}: {moves} late moves", case.describe());
        assert!(moves > 0, "{}: no late move of a max", case.describe());
    }
    let plain = Case::new(Dtype::Bf16, 1, 16, vec![9000, 4100, 700], false);
    assert_eq!(late_max_moves(&plain, slack).unwrap(), 0);
}

/// The error f16 partial results add to a bf16 output, as the split kernel stores them
/// (`layout::f16_partial_scale_exp`: each 256-dim row half scaled so that its largest
/// magnitude sits in [2^14, 2^15), then rounded to f16) and the merge reads them back:
/// a row merged from several pieces takes the f16 rounding's 1/64 of the output
/// rounding's variance; a row whose only piece passes through unchanged is rounded twice,
/// and its values that f16 put on a midpoint between two bf16 values round to even, half
/// of them the wrong way: 3/64. `Schedule::partials_f16` keeps f32 for split-P plans
/// that can have such rows (`plan::has_one_piece_rows`).
#[test]
fn f16_partial_results_round_a_row_of_one_piece_twice() {
    use etap_kernel::layout::{f16_partial_scale_exp, pow2};
    let mut normal = flashmla_etap::reference::Normal::new(57);
    let mut half_row = || -> Vec<f64> {
        (0..256)
            .map(|_| round_to_f32(0.0125 * normal.sample()))
            .collect()
    };
    let stored = |xs: &[f64]| -> Vec<f64> {
        let top = xs.iter().fold(0.0f64, |a, x| a.max(x.abs())) as f32;
        let k = f16_partial_scale_exp(top);
        xs.iter()
            .map(|&x| round_to_f16(x * pow2(-k) as f64) * pow2(k) as f64)
            .collect()
    };
    // Excess of the output's squared error over the rounding floor's, as a share of it.
    let excess = |pairs: &[(f64, f64)]| {
        let err: f64 = pairs.iter().map(|(out, x)| (out - x).powi(2)).sum();
        let floor: f64 = pairs
            .iter()
            .map(|(_, x)| (round_to_bf16(*x) - x).powi(2))
            .sum();
        err / floor - 1.0
    };
    let (w1, w2) = (64.0 / 65.0, 1.0 / 65.0);
    let (mut one, mut merged, mut exact) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..2048 {
        let (a, b) = (half_row(), half_row());
        let (sa, sb) = (stored(&a), stored(&b));
        for d in 0..256 {
            one.push((round_to_bf16(sa[d]), a[d]));
            let x = round_to_f32(w1 * a[d] + w2 * b[d]);
            let out = round_to_f32(w1 * sa[d] + w2 * sb[d]);
            merged.push((round_to_bf16(out), x));
            exact.push((round_to_bf16(x), x));
        }
    }
    let (one, merged, exact) = (excess(&one), excess(&merged), excess(&exact));
    assert!((0.035..0.06).contains(&one), "one piece: {one}");
    assert!((0.008..0.025).contains(&merged), "merged: {merged}");
    assert!(exact.abs() < 1e-12, "f32 partial results: {exact}");
}

fn round_to_f32(x: f64) -> f64 {
    x as f32 as f64
}
