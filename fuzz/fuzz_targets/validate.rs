//! Fuzzes the host-side argument checks with arbitrary shapes and buffer lengths:
//! `DecodeConfig::validate`, `DecodeConfig::check_buffers`, `KvCache::check_shape`,
//! `decode::validate_block_table` and `DecodePlan::schedule`. None of them may panic; what
//! they accept must be consistent with each other, and a schedule (in batch order or its
//! own request order) must cover every page of every request once.
#![no_main]

use flashmla_etap::decode::{
    validate_block_table, BufferLens, DecodeConfig, DecodePlan, KvCache, Precision, MAX_BATCH,
};
use half::bf16;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// A dimension: mostly small, sometimes 0 or arbitrary.
fn dim(u: &mut Unstructured, small: usize) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => 0,
        1..=5 => u.int_in_range(1..=small)?,
        6 => u.int_in_range(0..=1 << 20)?,
        _ => u.arbitrary()?,
    })
}

/// A buffer length: usually the one the shape needs, sometimes off or arbitrary.
fn len(u: &mut Unstructured, dims: &[usize]) -> Result<usize> {
    let exact = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    Ok(match (u.int_in_range(0u8..=7)?, exact) {
        (0..=5, Some(n)) => n,
        (6, Some(n)) => n.wrapping_add(u.int_in_range(0..=2)?).wrapping_sub(1),
        _ => u.arbitrary()?,
    })
}

/// `n` i32: mostly in `0..=max`, sometimes arbitrary (negative, huge).
fn ints(u: &mut Unstructured, n: usize, max: i32) -> Result<Vec<i32>> {
    (0..n)
        .map(|_| {
            Ok(match u.int_in_range(0u8..=3)? {
                0 => u.arbitrary()?,
                _ => u.int_in_range(0..=max)?,
            })
        })
        .collect()
}

fn run(u: &mut Unstructured) -> Result<()> {
    let config = DecodeConfig {
        batch: dim(u, 8)?,
        s_q: dim(u, 5)?,
        h_q: dim(u, 160)?,
        h_kv: dim(u, 3)?,
        max_pages: dim(u, 8)?,
        causal: u.arbitrary()?,
        softmax_scale: match u.int_in_range(0u8..=3)? {
            0 => u.arbitrary()?,
            _ => 0.0416,
        },
        precision: if u.arbitrary()? {
            Precision::Fast
        } else {
            Precision::Accurate
        },
    };
    let valid = config.validate().is_ok();
    if valid {
        assert!(config.batch >= 1 && config.batch <= MAX_BATCH);
        assert!(config.h_q % config.h_kv == 0);
    }

    let (b, s_q, h_q) = (config.batch, config.s_q, config.h_q);
    let lens = BufferLens {
        q: len(u, &[b, s_q, h_q, 576])?,
        out: len(u, &[b, s_q, h_q, 512])?,
        lse: len(u, &[b, h_q, s_q])?,
        block_table: len(u, &[b, config.max_pages])?,
        cache_seqlens: len(u, &[b])?,
        cache_h_kv: if u.arbitrary()? {
            config.h_kv
        } else {
            dim(u, 3)?
        },
    };
    let _ = config.check_buffers(&lens);

    let num_blocks = dim(u, 64)?;
    let h_kv = if u.arbitrary()? {
        config.h_kv
    } else {
        dim(u, 3)?
    };
    let cache_len = len(u, &[num_blocks, 64, h_kv, 576])?;
    let _ = KvCache::<bf16>::check_shape(cache_len, num_blocks, h_kv);

    // Host arrays stay small; their lengths may disagree with the shape.
    let n = if b <= 64 && u.arbitrary()? {
        b
    } else {
        u.int_in_range(0..=64)?
    };
    let seqlens = ints(u, n, 600)?;
    let bt_len = match b.checked_mul(config.max_pages) {
        Some(n) if n <= 4096 && u.arbitrary()? => n,
        _ => u.int_in_range(0..=256)?,
    };
    let block_table = ints(u, bt_len, 64)?;
    let _ = validate_block_table(&config, &seqlens, &block_table, num_blocks);

    // The planner allocates one partition per SM: keep the SM count realistic.
    let sm_count = u.int_in_range(0..=1024)?;
    match DecodePlan::schedule(&config, &seqlens, sm_count) {
        Ok(s) => {
            assert!(valid, "schedule accepted a config that validate rejects");
            assert_eq!(s.split_offsets.len(), b + 1);
            assert_eq!(s.parts.len(), s.num_parts);
            assert!(s.num_parts >= 1);
            // The request order is a permutation and the pieces cover every page once.
            if let Err(e) = s.check_coverage(&seqlens) {
                panic!("{e}");
            }
            assert_eq!(s.first_uncovered(config.max_pages, &seqlens), None);
        }
        Err(_) => {}
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
