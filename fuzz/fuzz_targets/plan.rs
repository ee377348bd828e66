//! Fuzzes `etap_kernel::plan::plan_with_overhead`: arbitrary lengths, block-table widths,
//! page sizes, partition counts, fixed piece costs and output-buffer sizes. It must never
//! panic, never report `PlanError::Internal`, and on success the plan must cover every
//! (request, page) exactly once and respect the balance bound documented in
//! `kernel/src/plan.rs`.
#![no_main]

use etap_kernel::plan::{
    max_split_slots, num_pages, num_splits, partial_slot, pieces, plan_with_overhead, PartWork,
    PlanError, FIXED_OVERHEAD_PAGES, FIXED_OVERHEAD_PAGES_64_ROWS, PAGE_SIZE, SHORT_SHARE_PAGES,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// A length: mostly small (a few pages), sometimes arbitrary (negative, huge).
fn seqlen(u: &mut Unstructured) -> Result<i32> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => 0,
        1..=5 => u.int_in_range(0..=4096)?,
        6 => u.int_in_range(0..=1 << 20)?,
        _ => u.arbitrary()?,
    })
}

/// A size that is mostly `typical`-sized, sometimes off by a little, rarely arbitrary.
fn size_near(u: &mut Unstructured, typical: usize, cap: usize) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=7)? {
        0..=4 => typical,
        5 | 6 => typical
            .saturating_add(u.int_in_range(0..=2)?)
            .saturating_sub(u.int_in_range(0..=2)?),
        _ => u.int_in_range(0..=cap)?,
    })
}

struct Input {
    seqlens: Vec<i32>,
    max_pages: usize,
    page_size: usize,
    num_parts: usize,
    parts_len: usize,
    offsets_len: usize,
    fixed: u32,
}

fn input(u: &mut Unstructured) -> Result<Input> {
    let batch = u.int_in_range(0..=96)?;
    let seqlens = (0..batch).map(|_| seqlen(u)).collect::<Result<Vec<_>>>()?;
    let page_size = match u.int_in_range(0u8..=7)? {
        0..=5 => PAGE_SIZE,
        6 => u.int_in_range(0..=256)?,
        _ => u.arbitrary()?,
    };
    let max_pages = match u.int_in_range(0u8..=7)? {
        0..=5 => {
            // Wide enough for every valid length most of the time.
            let most = seqlens
                .iter()
                .map(|&l| num_pages(l, page_size))
                .max()
                .unwrap_or(0);
            usize::try_from(most).unwrap_or(usize::MAX)
        }
        6 => u.int_in_range(0..=1 << 16)?,
        _ => u.arbitrary()?,
    };
    let num_parts = match u.int_in_range(0u8..=7)? {
        0..=6 => u.int_in_range(1..=300)?,
        _ => u.int_in_range(0..=2048)?,
    };
    let parts_len = size_near(u, num_parts, 4096)?;
    let offsets_len = size_near(u, batch + 1, 4096)?;
    let fixed = match u.int_in_range(0u8..=7)? {
        0..=3 => FIXED_OVERHEAD_PAGES,
        4..=5 => FIXED_OVERHEAD_PAGES_64_ROWS,
        _ => u.arbitrary()?,
    };
    Ok(Input {
        seqlens,
        max_pages,
        page_size,
        num_parts,
        parts_len,
        offsets_len,
        fixed,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(inp) = input(&mut Unstructured::new(data)) else {
        return;
    };
    let Input {
        ref seqlens,
        max_pages,
        page_size,
        num_parts,
        parts_len,
        offsets_len,
        fixed,
    } = inp;
    let batch = seqlens.len();
    let mut parts = vec![PartWork::IDLE; parts_len];
    let mut split_offsets = vec![-7i32; offsets_len];
    let result = plan_with_overhead(
        seqlens,
        max_pages,
        page_size,
        num_parts,
        fixed,
        &mut parts,
        &mut split_offsets,
    );
    let stats = match result {
        Ok(s) => s,
        Err(PlanError::Internal { reason }) => panic!("planner internal error: {reason}"),
        Err(PlanError::NegativeLength { batch_index, len }) => {
            assert_eq!(seqlens[batch_index], len);
            assert!(len < 0);
            return;
        }
        Err(PlanError::TooLong {
            batch_index,
            len,
            capacity,
        }) => {
            assert_eq!(seqlens[batch_index], len);
            assert!(len as u64 > capacity);
            return;
        }
        Err(PlanError::BadShape { .. }) => {
            assert!(
                num_parts == 0
                    || page_size == 0
                    || parts_len < num_parts
                    || offsets_len <= batch
                    || batch + num_parts > i32::MAX as usize
            );
            return;
        }
    };

    // Accepted input: the shape was valid and every length in 0..=capacity.
    assert!(num_parts >= 1 && page_size >= 1 && parts_len >= num_parts && offsets_len > batch);
    let capacity = (max_pages as u64).saturating_mul(page_size as u64);
    assert!(seqlens.iter().all(|&l| l >= 0 && l as u64 <= capacity));

    let np: Vec<u64> = seqlens.iter().map(|&l| num_pages(l, page_size)).collect();
    let total: u64 = np.iter().sum();
    // The fixed cost of a piece: none while the share per partition is short.
    let overhead = if total.div_ceil(num_parts as u64) <= SHORT_SHARE_PAGES {
        0
    } else {
        fixed as u64
    };
    assert_eq!(stats.overhead, overhead);
    let t: u64 = np.iter().filter(|&&p| p > 0).map(|&p| p + overhead).sum();
    assert_eq!(stats.total_pages, total);
    // The balance bound of plan.rs: payload = ceil(T / N) + overhead bounds every partition.
    assert_eq!(stats.payload, t.div_ceil(num_parts as u64) + overhead);
    assert!(stats.max_part_cost <= stats.payload);

    // Prefix sums of pieces: monotone, starting at 0, ending at num_splits_total.
    assert_eq!(split_offsets[0], 0);
    assert_eq!(split_offsets[batch], stats.num_splits_total as i32);
    for w in split_offsets[..=batch].windows(2) {
        assert!(w[0] <= w[1]);
    }
    let nonzero = np.iter().filter(|&&p| p > 0).count();
    let active = stats.active_parts as usize;
    assert!(active <= num_parts);
    assert!(stats.num_splits_total as usize <= max_split_slots(batch, num_parts));
    if nonzero > 0 {
        assert!(active >= 1);
        assert!(stats.num_splits_total as usize <= nonzero + active - 1);
    } else {
        assert_eq!(active, 0);
        assert_eq!(stats.num_splits_total, 0);
    }

    // Every piece of every partition: (request, page range, split index).
    let mut by_req: Vec<Vec<(u64, u64, i32)>> = vec![Vec::new(); batch];
    let mut max_cost = 0u64;
    for (i, part) in parts[..num_parts].iter().enumerate() {
        if i >= active {
            assert_eq!(*part, PartWork::IDLE, "idle partitions come last");
            continue;
        }
        assert!(!part.is_idle(), "active partitions come first");
        assert_eq!(part._pad, [0; 3]);
        let mut cost = 0u64;
        let mut pages = 0u64;
        for p in pieces(part, seqlens, page_size) {
            assert!(p.page_begin < p.page_end && p.page_begin >= 0);
            let r = p.req as usize;
            assert!((p.page_end as u64) <= np[r]);
            by_req[r].push((p.page_begin as u64, p.page_end as u64, p.split_index));
            let n = (p.page_end - p.page_begin) as u64;
            pages += n;
            cost += n + overhead;
            // Where the piece's result goes matches the split count of its request.
            match partial_slot(&split_offsets, p.req, p.split_index) {
                None => assert_eq!(num_splits(&split_offsets, p.req), 1),
                Some(slot) => {
                    assert!(slot >= split_offsets[r] && slot < split_offsets[r + 1]);
                }
            }
        }
        assert!(pages >= 1, "a partition with work holds at least one page");
        assert!(
            cost <= stats.payload,
            "partition {i} costs {cost} > {}",
            stats.payload
        );
        max_cost = max_cost.max(cost);
    }
    assert_eq!(max_cost, stats.max_part_cost);

    // Exactly-once coverage: the pieces of request r, sorted, tile 0..np[r] without gaps or
    // overlaps, and their split indices are 0..n in page order.
    for (r, ps) in by_req.iter_mut().enumerate() {
        ps.sort_unstable();
        assert_eq!(num_splits(&split_offsets, r as i32) as usize, ps.len());
        let mut next = 0u64;
        for (k, &(b, e, split)) in ps.iter().enumerate() {
            assert_eq!(
                b, next,
                "request {r}: pages {next}..{b} missing or overlapping"
            );
            assert_eq!(split as usize, k, "request {r}: piece order");
            next = e;
        }
        assert_eq!(
            next, np[r],
            "request {r}: pages {next}..{} not covered",
            np[r]
        );
    }
});
