//! CPU tests of the split-KV planner (`etap_kernel::plan`).
//!
//! Guarantee checked on every plan: with `O` the fixed cost of a piece (the plan's fixed cost:
//! FIXED_OVERHEAD_PAGES for `plan`, any value given to `plan_with_overhead`, e.g.
//! FIXED_OVERHEAD_PAGES_64_ROWS for 64-row plans; or 0 when
//! `ceil(pages / N) <= SHORT_SHARE_PAGES`), `T = Σ_{r: pages_r > 0} (pages_r + O)`
//! and `N = num_parts`, every partition costs at most `ceil(T / N) + O` (cost = Σ over its
//! pieces of pages + O), and every active partition except the last one costs at least
//! `ceil(T / N)`.
use etap_kernel::config::{
    COMBINE_MAX_DIM_SLICES, COMBINE_NARROW_MAX_SPLITS, COMBINE_WIDE_MIN_SPLITS, MAX_ROWS_PER_CTA,
};
use etap_kernel::plan::{
    charged_makespan, clamped_piece, combine_class_max_pieces, combine_dim_slices,
    contradicts_plan, fixed_overhead_pages, for_each_piece, has_one_piece_rows, keeps_alt_plan,
    keeps_narrow_fill, keeps_ordered_plan, last_piece_start, length_fits, max_pieces,
    max_split_slots, modelled_makespan, most_pieces, narrow_fill_part_counts, num_pages,
    num_parts_for, num_splits, ordered_fixed_pages, partial_slot, piece_of, pieces, plan,
    plan_keeping_tails, plan_with_overhead, row_tiling, seesaw_pa_first, split_p_for, PartWork,
    PieceCosts, PlanError, PlanStats, ALT_PLAN_SLACK_HALF_PAGES, FILL_OVERHEADS_64_ROWS,
    FIXED_OVERHEAD_PAGES, FIXED_OVERHEAD_PAGES_64_ROWS, LONG_SHARE_PAGES, NARROW_FILL_SLACK_PAGES,
    NARROW_TILE_MAX_SHARE, ORDERED_FIXED_PAGES, ORDERED_FIXED_PAGES_64_ROWS, PAGE_SIZE,
    SHORT_SHARE_PAGES, SPLIT_PIECE_HALF_PAGES, WHOLE_PIECE_HALF_PAGES,
};
use proptest::prelude::*;

/// Runs the planner with `plan`'s fixed cost (FIXED_OVERHEAD_PAGES) and exactly sized
/// buffers (pre-filled with junk) and checks every invariant. Returns the stats and the plan.
fn plan_and_check(
    seqlens: &[i32],
    page_size: usize,
    num_parts: usize,
) -> (PlanStats, Vec<PartWork>, Vec<i32>) {
    plan_and_check_with(seqlens, page_size, num_parts, FIXED_OVERHEAD_PAGES)
}

/// `plan_and_check` with fixed cost `fixed` (`plan_with_overhead`).
fn plan_and_check_with(
    seqlens: &[i32],
    page_size: usize,
    num_parts: usize,
    fixed: u32,
) -> (PlanStats, Vec<PartWork>, Vec<i32>) {
    let max_pages = seqlens
        .iter()
        .map(|&l| num_pages(l, page_size) as usize)
        .max()
        .unwrap_or(0);
    let junk = PartWork {
        begin_req: 7,
        begin_page: 7,
        end_req: 9,
        end_page: 9,
        first_split: 3,
        _pad: [1, 2, 3],
    };
    let mut parts = vec![junk; num_parts];
    let mut offsets = vec![-77; seqlens.len() + 1];
    let stats = plan_with_overhead(
        seqlens,
        max_pages,
        page_size,
        num_parts,
        fixed,
        &mut parts,
        &mut offsets,
    )
    .unwrap_or_else(|e| panic!("plan failed: {e} (seqlens {seqlens:?}, parts {num_parts})"));
    check(
        seqlens, page_size, num_parts, fixed, 1, &parts, &offsets, &stats,
    );
    (stats, parts, offsets)
}

/// Checks a plan of `plan_keeping_tails` for `s_q` causal positions (`s_q = 1`:
/// `plan_with_overhead`'s). Where `s_q > 1` a partition may end before its budget, and a
/// piece may leave its request's next piece to start past `last_piece_start` only as its
/// partition's first piece, starting there or later (nothing earlier to end the partition
/// at).
#[allow(clippy::too_many_arguments)]
fn check(
    seqlens: &[i32],
    page_size: usize,
    num_parts: usize,
    fixed: u32,
    s_q: usize,
    parts: &[PartWork],
    offsets: &[i32],
    stats: &PlanStats,
) {
    let batch = seqlens.len();
    let np: Vec<u64> = seqlens.iter().map(|&l| num_pages(l, page_size)).collect();
    let total_pages: u64 = np.iter().sum();
    let nonzero = np.iter().filter(|&&p| p > 0).count() as u64;
    let o = if total_pages.div_ceil(num_parts as u64) <= SHORT_SHARE_PAGES {
        0
    } else {
        fixed as u64
    };
    let total_cost: u64 = total_pages + o * nonzero;
    let payload = total_cost.div_ceil(num_parts as u64) + o;
    assert_eq!(stats.total_pages, total_pages);
    assert_eq!(stats.overhead, o);
    assert_eq!(stats.payload, payload);

    // split_offsets: exclusive prefix sum, starts at 0, non-decreasing.
    assert_eq!(offsets.len(), batch + 1);
    assert_eq!(offsets[0], 0);
    for r in 0..batch {
        assert!(offsets[r + 1] >= offsets[r], "offsets {offsets:?}");
    }
    let total_slots = offsets[batch] as u64;
    assert_eq!(total_slots, stats.num_splits_total as u64);
    assert!(total_slots as usize <= batch + num_parts);
    assert!(total_slots as usize <= max_split_slots(batch, num_parts));

    // Partitions: active ones first, idle ones canonical and last.
    let active = parts[..num_parts]
        .iter()
        .take_while(|p| !p.is_idle())
        .count();
    assert_eq!(active as u32, stats.active_parts);
    for p in &parts[active..num_parts] {
        assert_eq!(*p, PartWork::IDLE);
    }
    assert_eq!(active == 0, total_pages == 0);
    if active > 0 {
        // Each partition ends with at most one split.
        assert!(total_slots < nonzero + active as u64);
    }

    // Pieces, in partition order, must tile the (request, page) sequence exactly once.
    let mut per_req: Vec<Vec<(i32, i32, i32)>> = vec![Vec::new(); batch];
    let mut prev: Option<(i32, i32)> = None; // (req, page_end) of the previous piece
    let mut max_cost = 0u64;
    for (pi, p) in parts[..active].iter().enumerate() {
        assert!(p.begin_req <= p.end_req);
        assert!(np[p.begin_req as usize] > 0 && np[p.end_req as usize] > 0);
        let list: Vec<_> = pieces(p, seqlens, page_size).collect();
        let mut via_closure = Vec::new();
        for_each_piece(p, seqlens, page_size, |x| via_closure.push(x));
        assert_eq!(list, via_closure);
        assert!(
            !list.is_empty(),
            "active partition {pi} without pieces: {p:?}"
        );
        assert_eq!(list[0].req, p.begin_req);
        assert_eq!(list.last().unwrap().req, p.end_req);
        let mut cost = 0u64;
        for (k, x) in list.iter().enumerate() {
            assert!(x.page_begin < x.page_end, "empty piece {x:?}");
            let last = last_piece_start(np[x.req as usize], s_q, page_size);
            if (x.page_end as u64) < np[x.req as usize] && x.page_end as u64 > last {
                assert!(
                    k == 0 && x.page_begin as u64 >= last,
                    "piece {x:?} of partition {pi} leaves a tail of {s_q} positions"
                );
            }
            assert!(x.page_begin >= 0 && x.page_end as u64 <= np[x.req as usize]);
            assert_eq!(
                piece_of(p, x.req, seqlens, page_size),
                (x.page_begin, x.page_end)
            );
            if page_size == PAGE_SIZE {
                // The kernels' clamped view agrees wherever the length fits its row.
                let len = seqlens[x.req as usize];
                let row = np[x.req as usize] as u32;
                assert!(length_fits(len, row));
                assert_eq!(
                    clamped_piece(p, x.req, len, row),
                    (x.page_begin as u32, x.page_end as u32)
                );
            }
            // Contiguity in global order.
            match prev {
                None => assert_eq!((x.req, x.page_begin), (first_nonzero(&np), 0)),
                Some((r, e)) if x.req == r => assert_eq!(x.page_begin, e),
                Some((r, e)) => {
                    assert_eq!(e as u64, np[r as usize], "request {r} left unfinished");
                    assert_eq!(x.page_begin, 0);
                    assert!(x.req > r);
                    assert!(
                        np[(r + 1) as usize..x.req as usize].iter().all(|&n| n == 0),
                        "skipped a request with pages"
                    );
                }
            }
            prev = Some((x.req, x.page_end));
            per_req[x.req as usize].push((x.page_begin, x.page_end, x.split_index));
            cost += (x.page_end - x.page_begin) as u64 + o;
        }
        // The plan's own lengths never contradict it, whatever the block-table width.
        if page_size == PAGE_SIZE {
            let row = np.iter().copied().max().unwrap_or(0) as u32;
            for r in p.begin_req..=p.end_req {
                let split_idx = if r == p.begin_req { p.first_split } else { 0 };
                let len = seqlens[r as usize];
                let splits = num_splits(offsets, r);
                assert!(!contradicts_plan(p, r, len, row, split_idx, splits));
                assert!(!contradicts_plan(p, r, len, row + 3, split_idx, splits));
            }
        }
        // piece_of is empty for every request of the partition's range without a piece,
        // and outside the range.
        for r in -1..=batch as i32 {
            if !list.iter().any(|x| x.req == r) {
                assert_eq!(piece_of(p, r, seqlens, page_size), (0, 0));
            }
        }
        assert!(
            cost <= payload,
            "partition {pi} costs {cost} > bound {payload} (seqlens {seqlens:?}, parts {num_parts})"
        );
        if pi + 1 < active && s_q <= 1 {
            assert!(
                cost + o >= payload,
                "partition {pi} costs {cost}, less than ceil(T/N) = {}",
                payload - o
            );
        }
        max_cost = max_cost.max(cost);
    }
    assert_eq!(max_cost, stats.max_part_cost);
    if let Some((r, e)) = prev {
        assert_eq!(e as u64, np[r as usize]);
        assert!(np[r as usize + 1..].iter().all(|&n| n == 0));
    }
    for p in &parts[active..num_parts] {
        assert_eq!(pieces(p, seqlens, page_size).count(), 0);
        for r in -1..=batch as i32 {
            assert_eq!(piece_of(p, r, seqlens, page_size), (0, 0));
        }
    }

    // Split numbering and slots.
    let mut slots = std::collections::HashSet::new();
    for r in 0..batch {
        let list = &per_req[r];
        assert_eq!(num_splits(offsets, r as i32) as usize, list.len());
        if np[r] == 0 {
            assert!(list.is_empty());
            continue;
        }
        for (k, &(_, _, split)) in list.iter().enumerate() {
            assert_eq!(split as usize, k, "request {r}: pieces {list:?}");
            let slot = partial_slot(offsets, r as i32, split);
            if list.len() == 1 {
                assert_eq!(slot, None);
            } else {
                let slot = slot.expect("split request needs a slot");
                assert!(slot >= 0 && (slot as u64) < total_slots);
                assert!(slots.insert(slot), "slot {slot} used twice");
            }
        }
    }
}

fn first_nonzero(np: &[u64]) -> i32 {
    np.iter().position(|&n| n > 0).unwrap() as i32
}

#[test]
fn part_work_layout() {
    assert_eq!(std::mem::size_of::<PartWork>(), 32);
    assert_eq!(std::mem::align_of::<PartWork>(), 4);
    assert!(PartWork::IDLE.is_idle());
    assert!(!PartWork::default().is_idle());
    assert_eq!(PAGE_SIZE, 64);
    assert_eq!(FIXED_OVERHEAD_PAGES, 5);
}

#[test]
fn fast_plans_split_p_only_on_16_row_tiles_over_long_shares() {
    for rows in [16, 32, 64] {
        for share in [0, 1, SHORT_SHARE_PAGES, SHORT_SHARE_PAGES + 1, 1 << 20] {
            assert!(
                split_p_for(true, rows, share),
                "asked, {rows} rows, {share} pages"
            );
            let long_16 = rows == 16 && share > SHORT_SHARE_PAGES;
            assert_eq!(
                split_p_for(false, rows, share),
                long_16,
                "{rows} rows, {share}"
            );
        }
    }
}

#[test]
fn seesaw_runs_pa_first_with_split_p_one_row_chunk_or_a_short_share() {
    for share in [1, SHORT_SHARE_PAGES, SHORT_SHARE_PAGES + 1, 248] {
        let short = share <= SHORT_SHARE_PAGES;
        for chunks in [1, 2, 4] {
            assert!(
                seesaw_pa_first(64, true, chunks, share),
                "split, {chunks}, {share}"
            );
            assert_eq!(
                seesaw_pa_first(64, false, chunks, share),
                chunks == 1 || short,
                "Fast, {chunks} chunks, {share} pages"
            );
            for rows in [16, 32] {
                assert!(!seesaw_pa_first(rows, true, chunks, share));
                assert!(!seesaw_pa_first(rows, false, chunks, share));
            }
        }
    }
}

#[test]
fn row_tiling_keeps_17_to_32_rows_on_32_row_tiles_at_every_share() {
    // h_q 32 over 132 partitions from 1 to 62 pages a partition (b 32 at 64K is 32768
    // pages, 249), with one or two KV heads; 24 rows too; requests of 16 pages (where 64
    // rows may narrow) or 1024.
    for pages in [132, 2048, 2113, 3072, 8192, 32768] {
        for h_kv in [1, 2] {
            for longest in [16, 1024] {
                assert_eq!(row_tiling(32, pages, 132, h_kv, longest), (32, 1));
                assert_eq!(row_tiling(24, pages, 132, h_kv, longest), (32, 1));
            }
        }
    }
}

#[test]
fn row_tiling_narrows_64_row_tiles_only_at_one_page_a_partition_before_the_wide_combine() {
    assert_eq!(NARROW_TILE_MAX_SHARE, 1);
    assert_eq!(COMBINE_WIDE_MIN_SPLITS, 16);
    // Up to 32 rows: the tile that holds them, whatever the lengths.
    assert_eq!(row_tiling(0, 8, 132, 1, 16), (16, 1));
    assert_eq!(row_tiling(16, 8, 132, 1, 16), (16, 1));
    assert_eq!(row_tiling(16, 1 << 20, 132, 1, 16), (16, 1));
    assert_eq!(row_tiling(17, 8, 132, 1, 16), (32, 1));
    assert_eq!(row_tiling(32, 1 << 20, 132, 1, 16), (32, 1));
    // 64 rows over 132 partitions (one row chunk): 128 pages (b 8 at 1K) and 132 are 1
    // page a partition, so a 16-page request is 16 pieces (the wide combine) on 64-row
    // tiles and 8 on 32-row ones: 32-row tiles; 133 pages are 2 and 1024 (b 16 at 4K) 8,
    // wide.
    assert_eq!(row_tiling(64, 128, 132, 1, 16), (32, 2));
    assert_eq!(row_tiling(64, 132, 132, 1, 16), (32, 2));
    assert_eq!(row_tiling(64, 133, 132, 1, 16), (64, 1));
    assert_eq!(row_tiling(64, 1024, 132, 1, 16), (64, 1));
    // At one page a partition the 64-row tile stays where its pieces keep to the narrow
    // or medium combine (b 16 at 512: 8 pages a request) or where the narrow plan's go
    // wide too (b 4 at 2K: 32 pages, 16 pieces or more; b 1 at 8K: 128); the narrow plan
    // cuts 16-29 pages into at most 15 pieces.
    assert_eq!(row_tiling(64, 128, 132, 1, 8), (64, 1));
    assert_eq!(row_tiling(64, 128, 132, 1, 15), (64, 1));
    assert_eq!(row_tiling(64, 128, 132, 1, 29), (32, 2));
    assert_eq!(row_tiling(64, 128, 132, 1, 30), (64, 1));
    assert_eq!(row_tiling(64, 128, 132, 1, 32), (64, 1));
    assert_eq!(row_tiling(64, 128, 132, 1, 128), (64, 1));
    // Where the narrow plan has one page a partition too, its pieces go wide as well and
    // the 64-row tile stays: b 4 at 1K (64 pages over 66 narrow partitions), b 1 at 1K.
    assert_eq!(row_tiling(64, 64, 132, 1, 16), (64, 1));
    assert_eq!(row_tiling(64, 16, 132, 1, 16), (64, 1));
    assert_eq!(row_tiling(64, 67, 132, 1, 16), (32, 2));
    // The share is counted over the 64-row plan's partitions: 128 rows are 2 CTAs per KV
    // head, so 66 partitions; 66 pages are 1 a partition, 67 pages 2. The narrow plan's 33
    // partitions hold 2 pages each from 34 pages; b 1 and b 2 at 1K (16 and 32) stay.
    assert_eq!(row_tiling(128, 16, 132, 1, 16), (64, 2));
    assert_eq!(row_tiling(128, 33, 132, 1, 16), (64, 2));
    assert_eq!(row_tiling(128, 34, 132, 1, 16), (32, 4));
    assert_eq!(row_tiling(128, 66, 132, 1, 16), (32, 4));
    assert_eq!(row_tiling(128, 67, 132, 1, 16), (64, 2));
    assert_eq!(row_tiling(128, 64, 132, 1, 8), (64, 2));
    // Two KV heads halve the partitions again (66 for one row chunk: 66 pages are 1 a
    // partition, 67 pages 2); 48 rows still count as a 64-row tile.
    assert_eq!(row_tiling(64, 66, 132, 2, 16), (32, 2));
    assert_eq!(row_tiling(64, 67, 132, 2, 16), (64, 1));
    assert_eq!(row_tiling(48, 100, 132, 1, 20), (32, 2));
    // s_q 2, h_q 128 at 16K (b 16): 256 rows, 4096 pages, wide.
    assert_eq!(row_tiling(256, 4096, 132, 1, 256), (64, 4));
}

#[test]
fn most_pieces_bounds_the_planned_pieces_of_a_request() {
    assert_eq!(most_pieces(0, 2), 0);
    assert_eq!(most_pieces(1, 2), 1);
    assert_eq!(most_pieces(2, 2), 2);
    assert_eq!(most_pieces(16, 1), 16);
    assert_eq!(most_pieces(16, 0), 16);
    assert_eq!(most_pieces(16, 2), 9);
    assert_eq!(most_pieces(29, 2), 15);
    assert_eq!(most_pieces(30, 2), 16);
    // Partitions of exactly `share` pages (a lead request puts ours at each offset, a
    // trailing one fills the last partition): never more pieces than the bound, and the
    // bound where ours starts on a partition's last page.
    for share in 1..=6u64 {
        for len in 1..=40u64 {
            for lead in 0..share {
                let num_parts = (lead + len).div_ceil(share);
                let pad = num_parts * share - lead - len;
                let seqlens = [lead, len, pad].map(|pages| (pages * PAGE_SIZE as u64) as i32);
                let mut parts = vec![PartWork::IDLE; num_parts as usize];
                let mut offsets = vec![0i32; 4];
                plan_with_overhead(
                    &seqlens,
                    64,
                    PAGE_SIZE,
                    num_parts as usize,
                    0,
                    &mut parts,
                    &mut offsets,
                )
                .unwrap();
                let pieces = (offsets[2] - offsets[1]) as u64;
                let bound = most_pieces(len, share);
                assert!(
                    pieces <= bound,
                    "share {share}, {len} pages at {lead}: {pieces}"
                );
                if lead == share - 1 {
                    assert_eq!(pieces, bound, "share {share}, {len} pages at {lead}");
                }
            }
        }
    }
}

#[test]
fn one_piece_rows_are_flagged_where_a_second_piece_starts_in_the_causal_tail() {
    let parts_for = |seqlens: &[i32], num_parts: usize| {
        let mut parts = vec![PartWork::IDLE; num_parts];
        let mut offsets = vec![0i32; seqlens.len() + 1];
        plan_with_overhead(
            seqlens,
            64,
            PAGE_SIZE,
            num_parts,
            0,
            &mut parts,
            &mut offsets,
        )
        .unwrap();
        parts
    };
    // 65 tokens as two 1-page pieces: the second holds token 65, which position 0 of
    // s_q 2 or more does not see.
    let two = parts_for(&[65], 2);
    assert!(has_one_piece_rows(&two, &[65], 4, PAGE_SIZE));
    assert!(has_one_piece_rows(&two, &[65], 2, PAGE_SIZE));
    assert!(!has_one_piece_rows(&two, &[65], 1, PAGE_SIZE));
    // A full last page: flagged too, as any length with those pages (from 65) could run.
    assert!(has_one_piece_rows(
        &parts_for(&[128], 2),
        &[128],
        2,
        PAGE_SIZE
    ));
    // 4 pages split 2 + 2: the second piece starts 65 tokens or more before the end.
    let even = parts_for(&[256], 2);
    assert!(!has_one_piece_rows(&even, &[256], 4, PAGE_SIZE));
    assert!(!has_one_piece_rows(&even, &[256], 65, PAGE_SIZE));
    assert!(has_one_piece_rows(&even, &[256], 66, PAGE_SIZE));
    // Unsplit requests, and a request's third piece in its tail: no row merges one piece.
    assert!(!has_one_piece_rows(
        &parts_for(&[65, 65], 2),
        &[65, 65],
        4,
        PAGE_SIZE
    ));
    let three = parts_for(&[129], 3);
    assert!(!has_one_piece_rows(&three, &[129], 4, PAGE_SIZE));
    assert!(!has_one_piece_rows(&[PartWork::IDLE], &[65], 4, PAGE_SIZE));
}

#[test]
fn fills_keeping_tails_end_pieces_where_every_causal_row_sees_the_next() {
    // The first of s_q positions sees all but the last s_q - 1 tokens, for any length
    // with the request's pages.
    assert_eq!(last_piece_start(3, 1, PAGE_SIZE), 2);
    assert_eq!(last_piece_start(3, 2, PAGE_SIZE), 1);
    assert_eq!(last_piece_start(3, 65, PAGE_SIZE), 1);
    assert_eq!(last_piece_start(3, 66, PAGE_SIZE), 0);
    assert_eq!(last_piece_start(1, 2, PAGE_SIZE), 0);
    assert_eq!(last_piece_start(0, 2, PAGE_SIZE), 0);
    assert_eq!(last_piece_start(5, 2, 0), 3);
    let fill = |seqlens: &[i32], num_parts: usize, s_q: usize| {
        let mut parts = vec![PartWork::IDLE; num_parts];
        let mut offsets = vec![0i32; seqlens.len() + 1];
        plan_keeping_tails(
            seqlens,
            3,
            PAGE_SIZE,
            num_parts,
            0,
            s_q,
            &mut parts,
            &mut offsets,
        )
        .map(|_| parts)
    };
    // 129 tokens over 2 partitions: the plain fill leaves the last page alone, unseen by
    // position 0 of 2; keeping the tail splits 1 + 2.
    let plain = fill(&[129], 2, 1).unwrap();
    assert_eq!((plain[1].begin_page, plain[1].end_page), (2, 3));
    assert!(has_one_piece_rows(&plain, &[129], 2, PAGE_SIZE));
    let kept = fill(&[129], 2, 2).unwrap();
    assert_eq!(
        (kept[0].end_page, kept[1].begin_page, kept[1].end_page),
        (1, 1, 3)
    );
    assert!(!has_one_piece_rows(&kept, &[129], 2, PAGE_SIZE));
    // 70 positions see no page past the first of 129 tokens: the partition holding an
    // earlier request ends before it, which leaves work after the last partition ...
    let internal = PlanError::Internal {
        reason: "work left after the last partition",
    };
    assert_eq!(fill(&[64, 129], 2, 70), Err(internal));
    // ... or, with a partition more, its own partition splits it where it must.
    let three = fill(&[64, 129], 3, 70).unwrap();
    assert_eq!((three[0].end_req, three[0].end_page), (0, 1));
    assert_eq!(
        (three[1].begin_req, three[1].begin_page, three[1].end_page),
        (1, 0, 2)
    );
    assert!(has_one_piece_rows(&three, &[64, 129], 70, PAGE_SIZE));
    // A piece ended early leaves its partition below the budget, and the stats say so:
    // 92 + 72 pages at 9 a piece over 2 partitions (budget 100), the first cut at page 90.
    let lens = [5854, 4598];
    let (mut parts, mut offsets) = (vec![PartWork::IDLE; 2], vec![0i32; 3]);
    let stats =
        plan_keeping_tails(&lens, 92, PAGE_SIZE, 2, 9, 2, &mut parts, &mut offsets).unwrap();
    check(&lens, PAGE_SIZE, 2, 9, 2, &parts, &offsets, &stats);
    assert_eq!(
        (parts[0].end_page, stats.payload, stats.max_part_cost),
        (90, 100, 99)
    );
}

#[test]
fn combine_slices_only_wide_merges_of_small_grids() {
    let wide = COMBINE_WIDE_MIN_SPLITS;
    // b 1, h_q 16: 16 rows; 4 slices make 64 CTAs, within half of 132 SMs.
    assert_eq!(combine_dim_slices(64, 16, 132), COMBINE_MAX_DIM_SLICES);
    assert_eq!(combine_dim_slices(wide, 16, 132), 4);
    // 32 rows: 2 slices (64 CTAs); 64 rows (b 4, h_q 16): none.
    assert_eq!(combine_dim_slices(64, 32, 132), 2);
    assert_eq!(combine_dim_slices(64, 64, 132), 1);
    assert_eq!(combine_dim_slices(64, 4096, 132), 1);
    // Requests split fewer times take the narrow or medium combine, unsliced.
    assert_eq!(combine_dim_slices(wide - 1, 16, 132), 1);
    assert_eq!(combine_dim_slices(0, 0, 0), 1);
    // Always a power of two dividing the cap, whatever the input.
    for splits in [0, 1, wide, 100, u32::MAX] {
        for ctas in [0, 1, 16, 17, 33, 66, 67, u64::MAX] {
            for sms in [0, 1, 8, 132, 1024] {
                let z = combine_dim_slices(splits, ctas, sms);
                assert!(z.is_power_of_two() && COMBINE_MAX_DIM_SLICES.is_multiple_of(z));
            }
        }
    }
}

#[test]
fn num_parts_for_cases() {
    assert_eq!(num_parts_for(132, 1), 132);
    assert_eq!(num_parts_for(132, 2), 66);
    assert_eq!(num_parts_for(132, 3), 44);
    assert_eq!(num_parts_for(132, 200), 1);
    assert_eq!(num_parts_for(0, 1), 1);
    assert_eq!(num_parts_for(132, 0), 132);
}

#[test]
fn exhaustive_small() {
    let lens = [0, 1, 2, 63, 64, 65, 127, 128, 129, 320, 1000];
    let mut n = 0;
    for page_size in [1usize, 3, 64] {
        for batch in 1..=3usize {
            let combos = lens.len().pow(batch as u32);
            for c in 0..combos {
                let mut x = c;
                let seqlens: Vec<i32> = (0..batch)
                    .map(|_| {
                        let l = lens[x % lens.len()];
                        x /= lens.len();
                        l
                    })
                    .collect();
                for num_parts in 1..=12 {
                    plan_and_check(&seqlens, page_size, num_parts);
                    n += 1;
                }
            }
        }
    }
    assert!(n > 40_000);
}

#[test]
fn single_request_spreads_over_all_parts() {
    // 64K tokens = 1024 pages over 132 partitions: 8 pages a partition, a short share, so
    // pieces cost no overhead: payload = ceil(1024/132) = 8, and 128 partitions are busy.
    let (stats, parts, offsets) = plan_and_check(&[65536], 64, 132);
    assert_eq!(stats.overhead, 0);
    assert_eq!(stats.active_parts, 128);
    assert_eq!(stats.max_part_cost, 8);
    assert_eq!(offsets, vec![0, 128]);
    for (i, p) in parts[..128].iter().enumerate() {
        assert_eq!((p.begin_req, p.end_req, p.first_split), (0, 0, i as i32));
    }
}

#[test]
fn sixty_four_row_plans_charge_their_own_piece_overhead() {
    assert_eq!((FIXED_OVERHEAD_PAGES, FIXED_OVERHEAD_PAGES_64_ROWS), (5, 8));
    assert_eq!(fixed_overhead_pages(64), FIXED_OVERHEAD_PAGES_64_ROWS);
    for rows in [16, 32] {
        assert_eq!(fixed_overhead_pages(rows), FIXED_OVERHEAD_PAGES);
    }
    // 16 requests of 512 pages over 132 partitions at 8 pages a piece: T = 16 · 520,
    // payload = ceil(8320 / 132) + 8 = 72, and fewer pieces than at 5 (payload 68).
    let run = |fixed| {
        let (stats, _, offsets) = plan_and_check_with(&[512 * 64; 16], PAGE_SIZE, 132, fixed);
        (stats, offsets[16])
    };
    let (stats, pieces_8) = run(FIXED_OVERHEAD_PAGES_64_ROWS);
    assert_eq!((stats.overhead, stats.payload), (8, 72));
    let (stats, pieces_5) = run(FIXED_OVERHEAD_PAGES);
    assert_eq!((stats.overhead, stats.payload), (5, 68));
    assert!(
        pieces_8 < pieces_5,
        "{pieces_8} pieces at 8, {pieces_5} at 5"
    );
    // Short shares charge nothing, whatever the fixed cost.
    let (stats, ..) = plan_and_check_with(&[32 * 64; 132], PAGE_SIZE, 132, 8);
    assert_eq!(stats.overhead, 0);
}

#[test]
fn long_shares_charge_the_piece_overhead() {
    // 16 requests of 512 pages over 132 partitions: 63 pages a partition, so each piece costs
    // FIXED_OVERHEAD_PAGES more: T = 16 · 517, payload = ceil(8272/132) + 5 = 68.
    let (stats, _, offsets) = plan_and_check(&[512 * 64; 16], 64, 132);
    assert_eq!(stats.overhead, FIXED_OVERHEAD_PAGES as u64);
    assert_eq!(stats.payload, 68);
    // Exactly SHORT_SHARE_PAGES a partition still counts as short.
    let (stats, ..) = plan_and_check(&[32 * 64; 132], 64, 132);
    assert_eq!(stats.overhead, 0);
    assert!(offsets[16] >= 16);
}

#[test]
fn short_requests_are_not_split() {
    // 16 requests of 1 page over 132 partitions: a short share, no piece overhead, payload
    // = ceil(16/132) = 1, so one request per partition, none split.
    let (stats, parts, offsets) = plan_and_check(&[64; 16], 64, 132);
    assert_eq!(stats.active_parts, 16);
    assert_eq!(stats.num_splits_total, 16);
    assert_eq!(offsets, (0..=16).collect::<Vec<i32>>());
    for (i, p) in parts[..16].iter().enumerate() {
        assert_eq!(
            *p,
            PartWork {
                begin_req: i as i32,
                begin_page: 0,
                end_req: i as i32,
                end_page: 1,
                first_split: 0,
                _pad: [0; 3]
            }
        );
    }
}

#[test]
fn all_zero_lengths() {
    let (stats, parts, offsets) = plan_and_check(&[0, 0, 0], 64, 4);
    assert_eq!(stats.active_parts, 0);
    assert_eq!(stats.max_part_cost, 0);
    assert_eq!(offsets, vec![0, 0, 0, 0]);
    assert!(parts.iter().all(|p| *p == PartWork::IDLE));
    let (stats, _, offsets) = plan_and_check(&[], 64, 4);
    assert_eq!(stats.active_parts, 0);
    assert_eq!(offsets, vec![0]);
}

#[test]
fn zero_length_requests_between() {
    let (_, parts, offsets) = plan_and_check(&[64, 0, 0, 64, 0], 64, 1);
    assert_eq!(offsets, vec![0, 1, 1, 1, 2, 2]);
    assert_eq!((parts[0].begin_req, parts[0].end_req), (0, 3));
    let p: Vec<_> = pieces(&parts[0], &[64, 0, 0, 64, 0], 64).collect();
    assert_eq!(p.len(), 2);
    assert_eq!(piece_of(&parts[0], 1, &[64, 0, 0, 64, 0], 64), (0, 0));
}

#[test]
fn huge_lengths() {
    let l = i32::MAX;
    plan_and_check(&[l, l, 0, l], 1, 7);
    plan_and_check(&[l, l, 1, l], 64, 132);
    plan_and_check(&[l; 40], 1, 1);
}

#[test]
fn errors_name_the_batch_index() {
    let mut parts = vec![PartWork::IDLE; 8];
    let mut offs = vec![0; 8];
    assert_eq!(
        plan(&[10, 20, -3, -4], 10, 64, 8, &mut parts, &mut offs),
        Err(PlanError::NegativeLength {
            batch_index: 2,
            len: -3
        })
    );
    let e = plan(&[10, 641, 20], 10, 64, 8, &mut parts, &mut offs).unwrap_err();
    assert_eq!(
        e,
        PlanError::TooLong {
            batch_index: 1,
            len: 641,
            capacity: 640
        }
    );
    let msg = e.to_string();
    assert!(msg.contains("seqlens[1]") && msg.contains("641"), "{msg}");
    assert!(plan(&[10, 640, 20], 10, 64, 8, &mut parts, &mut offs).is_ok());
    let msg = PlanError::NegativeLength {
        batch_index: 5,
        len: -1,
    }
    .to_string();
    assert!(msg.contains("seqlens[5]"), "{msg}");
    // Errors are std errors on the host.
    let _: Box<dyn std::error::Error> = Box::new(e);
}

#[test]
fn bad_shapes() {
    let mut parts = vec![PartWork::IDLE; 8];
    let mut offs = vec![0; 4];
    let bad = |r: Result<PlanStats, PlanError>| matches!(r, Err(PlanError::BadShape { .. }));
    assert!(bad(plan(&[1, 2, 3], 10, 64, 0, &mut parts, &mut offs)));
    assert!(bad(plan(&[1, 2, 3], 10, 0, 8, &mut parts, &mut offs)));
    assert!(bad(plan(&[1, 2, 3], 10, 64, 9, &mut parts, &mut offs)));
    assert!(bad(plan(&[1, 2, 3], 10, 64, 8, &mut parts, &mut offs[..3])));
    assert!(plan(&[1, 2, 3], 10, 64, 8, &mut parts, &mut offs).is_ok());
    // Larger buffers are fine; the extra entries are not touched.
    let mut parts = vec![PartWork::default(); 10];
    let mut offs = vec![-5; 6];
    plan(&[1, 2, 3], 10, 64, 8, &mut parts, &mut offs).unwrap();
    assert_eq!(parts[8..], [PartWork::default(); 2]);
    assert_eq!(offs[4..], [-5, -5]);
}

#[test]
fn helpers_tolerate_garbage() {
    let seqlens = [100, 200];
    let weird = [
        PartWork {
            begin_req: -5,
            begin_page: -3,
            end_req: 10,
            end_page: 99,
            first_split: 0,
            _pad: [0; 3],
        },
        PartWork {
            begin_req: i32::MAX - 1,
            begin_page: 0,
            end_req: i32::MAX,
            end_page: i32::MAX,
            first_split: 0,
            _pad: [0; 3],
        },
        PartWork {
            begin_req: 0,
            begin_page: 5,
            end_req: 0,
            end_page: 2,
            first_split: 0,
            _pad: [0; 3],
        },
    ];
    for p in &weird {
        for x in pieces(p, &seqlens, 64) {
            assert!(x.page_begin < x.page_end);
            assert!(x.page_end as u64 <= num_pages(seqlens[x.req as usize], 64));
        }
        for r in [-1, 0, 1, 2, i32::MAX, i32::MIN] {
            let (b, e) = piece_of(p, r, &seqlens, 64);
            assert!(b <= e);
        }
    }
    assert_eq!(num_splits(&[0, 2], 5), 0);
    assert_eq!(num_splits(&[0, 2], -1), 0);
    assert_eq!(partial_slot(&[0, 2], 1, 0), None);
    assert_eq!(partial_slot(&[0, 2], 0, 1), Some(1));
    assert_eq!(partial_slot(&[0, 1], 0, 0), None);
}

fn length() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => Just(0),
        1 => Just(1),
        1 => 63..=65i32,
        1 => 127..=129i32,
        2 => 0..=2_000i32,
        3 => 0..=200_000i32,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, .. ProptestConfig::default() })]

    #[test]
    fn random_plans(
        seqlens in prop::collection::vec(length(), 1..=300),
        num_parts in 1..=200usize,
        page_size in prop_oneof![4 => Just(64usize), 1 => 1..=130usize],
        fixed in prop_oneof![
            2 => Just(FIXED_OVERHEAD_PAGES),
            1 => Just(FIXED_OVERHEAD_PAGES_64_ROWS),
            1 => 0..=64u32,
        ],
    ) {
        plan_and_check_with(&seqlens, page_size, num_parts, fixed);
    }

    /// The fill that keeps causal tails: `s_q = 1` is `plan_with_overhead`'s fill; with more
    /// positions every plan it makes covers every page once within its budget, and splits
    /// a request in its tail only where its partition has nothing before to end at.
    #[test]
    fn random_plans_keeping_tails(
        seqlens in prop::collection::vec(length(), 1..=300),
        num_parts in 1..=200usize,
        page_size in prop_oneof![4 => Just(64usize), 1 => 1..=130usize],
        fixed in prop_oneof![Just(0u32), Just(FIXED_OVERHEAD_PAGES_64_ROWS), 0..=16u32],
        s_q in prop_oneof![Just(1usize), 2..=5usize, 60..=200usize],
    ) {
        let max_pages = seqlens.iter().map(|&l| num_pages(l, page_size) as usize).max().unwrap_or(0);
        let mut parts = vec![PartWork::IDLE; num_parts];
        let mut offsets = vec![0i32; seqlens.len() + 1];
        let kept = plan_keeping_tails(
            &seqlens, max_pages, page_size, num_parts, fixed, s_q, &mut parts, &mut offsets,
        );
        if s_q == 1 {
            let (stats, plain, plain_offsets) =
                plan_and_check_with(&seqlens, page_size, num_parts, fixed);
            prop_assert_eq!(kept, Ok(stats));
            prop_assert_eq!((&parts, &offsets), (&plain, &plain_offsets));
        } else if let Ok(stats) = kept {
            check(&seqlens, page_size, num_parts, fixed, s_q, &parts, &offsets, &stats);
        } else {
            prop_assert_eq!(kept, Err(PlanError::Internal { reason: "work left after the last partition" }));
        }
    }

    /// A device length other than the plan's: `contradicts_plan` flags a request at one of
    /// its pieces exactly where the kernels, which take each piece's pages from
    /// `clamped_piece`, would read other pages than the length's or leave a planned piece
    /// unwritten (requests outside every partition's range, which no decode CTA sees, are
    /// left out).
    #[test]
    fn stale_lengths_are_flagged_where_they_change_the_output(
        seqlens in prop::collection::vec(0..=20 * 64i32, 1..=40),
        num_parts in 1..=60usize,
        fixed in prop_oneof![Just(0u32), Just(FIXED_OVERHEAD_PAGES), Just(FIXED_OVERHEAD_PAGES_64_ROWS)],
        at in any::<prop::sample::Index>(),
        new_len in 0..=20 * 64i32,
    ) {
        let (_, parts, offsets) = plan_and_check_with(&seqlens, PAGE_SIZE, num_parts, fixed);
        let max_pages = 20;
        let mut device = seqlens.clone();
        device[at.index(seqlens.len())] = new_len;
        for r in 0..seqlens.len() as i32 {
            let in_range: Vec<&PartWork> = parts
                .iter()
                .filter(|p| !p.is_idle() && p.begin_req <= r && r <= p.end_req)
                .collect();
            if in_range.is_empty() {
                continue;
            }
            let len = device[r as usize];
            let splits = num_splits(&offsets, r);
            let pages = num_pages(len, PAGE_SIZE) as u32;
            let (mut flagged, mut read, mut empty_planned, mut unplanned) =
                (false, Vec::new(), false, false);
            for p in in_range {
                let split_idx = if r == p.begin_req { p.first_split } else { 0 };
                flagged |= contradicts_plan(p, r, len, max_pages, split_idx, splits);
                let (first, last) = clamped_piece(p, r, len, max_pages);
                if first < last {
                    unplanned |= splits == 0;
                    read.extend(first..last);
                } else {
                    empty_planned |= splits > 0;
                }
            }
            read.sort_unstable();
            let wrong = unplanned || empty_planned || read != (0..pages).collect::<Vec<_>>();
            prop_assert_eq!(
                flagged, wrong,
                "request {} planned {} device {} (splits {}, read {:?})",
                r, seqlens[r as usize], len, splits, read
            );
        }
    }

    #[test]
    fn random_errors(
        mut seqlens in prop::collection::vec(length(), 1..=50),
        at in any::<prop::sample::Index>(),
        bad in prop_oneof![i32::MIN..0, 12_801..=i32::MAX],
    ) {
        let i = at.index(seqlens.len());
        for l in seqlens.iter_mut() {
            *l = (*l).min(12_800);
        }
        seqlens[i] = bad;
        let mut parts = vec![PartWork::IDLE; 16];
        let mut offs = vec![0; seqlens.len() + 1];
        let r = plan(&seqlens, 200, 64, 16, &mut parts, &mut offs);
        if bad < 0 {
            prop_assert_eq!(r, Err(PlanError::NegativeLength { batch_index: i, len: bad }));
        } else {
            prop_assert_eq!(r, Err(PlanError::TooLong { batch_index: i, len: bad, capacity: 12_800 }));
        }
    }

    /// Arbitrary input, arbitrary (often too small) buffers: never panics, and any plan it
    /// returns is valid.
    #[test]
    fn fuzz_no_panic(
        seqlens in prop::collection::vec(prop_oneof![any::<i32>(), length()], 0..=40),
        max_pages in prop_oneof![Just(usize::MAX), 0..=5_000usize, any::<usize>()],
        page_size in prop_oneof![Just(0usize), 1..=100usize, any::<usize>()],
        num_parts in 0..=300usize,
        parts_len in 0..=310usize,
        offs_extra in -2..=2i64,
        fixed in prop_oneof![Just(FIXED_OVERHEAD_PAGES), Just(FIXED_OVERHEAD_PAGES_64_ROWS), any::<u32>()],
    ) {
        let offs_len = (seqlens.len() as i64 + 1 + offs_extra).max(0) as usize;
        let mut parts = vec![PartWork::IDLE; parts_len];
        let mut offs = vec![0; offs_len];
        if let Ok(stats) = plan_with_overhead(
            &seqlens, max_pages, page_size, num_parts, fixed, &mut parts, &mut offs,
        ) {
            let offsets = &offs[..seqlens.len() + 1];
            check(&seqlens, page_size, num_parts, fixed, 1, &parts, offsets, &stats);
        }
    }
}

/// The grid's seesaw cases with a partial row chunk (`check::grid`, seeds 5103 and 5104:
/// 126 query rows per KV head) run 64-row tiles on a 132-SM card.
#[test]
fn grid_partial_chunk_cases_reach_the_seesaw_kernels() {
    let pages = |lengths: &[u32]| lengths.iter().map(|l| l.div_ceil(64) as u64).sum::<u64>();
    assert_eq!(
        row_tiling(126, pages(&[20000, 9000, 3001]), 132, 1, 313),
        (64, 2)
    );
    assert_eq!(row_tiling(126, pages(&[40000, 3000]), 132, 1, 625), (64, 2));
}

#[test]
fn long_shares_keep_the_cheaper_piece_plan_within_the_slack() {
    // Up to LONG_SHARE_PAGES only a smaller modelled time wins (a tie keeps the main plan).
    assert!(keeps_alt_plan(LONG_SHARE_PAGES, 258, 259));
    assert!(!keeps_alt_plan(LONG_SHARE_PAGES, 259, 259));
    assert!(!keeps_alt_plan(LONG_SHARE_PAGES, 260, 259));
    // Above it, up to the slack worse.
    let long = LONG_SHARE_PAGES + 1;
    assert!(keeps_alt_plan(long, 259 + ALT_PLAN_SLACK_HALF_PAGES, 259));
    assert!(!keeps_alt_plan(long, 260 + ALT_PLAN_SLACK_HALF_PAGES, 259));
    assert!(keeps_alt_plan(long, 200, 259));
}

#[test]
fn ordered_plans_replace_batch_order_plans_that_model_slower() {
    assert!(keeps_ordered_plan(145, 146));
    assert!(keeps_ordered_plan(8, 9));
    // A tie keeps the batch order (b 128, h_q 16, 4K varlen models 146 either way).
    assert!(!keeps_ordered_plan(146, 146));
    assert!(!keeps_ordered_plan(147, 146));
    assert!(!keeps_ordered_plan(0, 0));
}

#[test]
fn combine_classes_bound_the_pieces_of_an_ordered_plan() {
    // Pairs and the narrow combine are one class; the medium one runs to the wide one's
    // threshold; the wide (or sliced) one takes any count.
    for pieces in 0..=COMBINE_NARROW_MAX_SPLITS {
        assert_eq!(combine_class_max_pieces(pieces), COMBINE_NARROW_MAX_SPLITS);
    }
    for pieces in COMBINE_NARROW_MAX_SPLITS + 1..COMBINE_WIDE_MIN_SPLITS {
        assert_eq!(
            combine_class_max_pieces(pieces),
            COMBINE_WIDE_MIN_SPLITS - 1
        );
    }
    assert_eq!(combine_class_max_pieces(COMBINE_WIDE_MIN_SPLITS), u32::MAX);
    assert_eq!(combine_class_max_pieces(u32::MAX), u32::MAX);
}

#[test]
fn charged_makespan_counts_pages_and_a_fixed_cost_a_piece() {
    // The same plan: partition 0 holds 68 pages in one piece, partition 1 32 + 10 + 10 in
    // three.
    let seqlens = [100 * 64, 10 * 64, 10 * 64];
    let (_, parts, _) = plan_and_check(&seqlens, PAGE_SIZE, 2);
    // At 8 a piece both cost 76 (68 + 8 and 52 + 3 · 8).
    assert_eq!(charged_makespan(&parts, &seqlens, PAGE_SIZE, 8), 76);
    assert_eq!(charged_makespan(&parts, &seqlens, PAGE_SIZE, 0), 68);
    assert_eq!(charged_makespan(&parts, &seqlens, PAGE_SIZE, 9), 52 + 27);
    assert_eq!(charged_makespan(&[PartWork::IDLE], &[0], PAGE_SIZE, 8), 0);
    // The range of fills starts at the seesaw plans' own piece cost.
    assert_eq!(*FILL_OVERHEADS_64_ROWS.end(), FIXED_OVERHEAD_PAGES_64_ROWS);
}

#[test]
fn narrow_fills_try_up_to_one_partition_in_32_fewer() {
    assert_eq!(
        narrow_fill_part_counts(66).collect::<Vec<_>>(),
        [66, 65, 64]
    );
    assert_eq!(
        narrow_fill_part_counts(132).collect::<Vec<_>>(),
        [132, 131, 130, 129, 128]
    );
    assert_eq!(narrow_fill_part_counts(1).collect::<Vec<_>>(), [1]);
    // 16 requests of 512 pages: balanced over 66 or 65 partitions (payloads 125 and 127) a
    // request takes more than 4 pieces, over 64 four of 128 pages, a partition one piece.
    let seqlens = [512 * 64; 16];
    let pieces_over = |n: usize| {
        let (_, parts, offsets) = plan_and_check_with(&seqlens, PAGE_SIZE, n, 0);
        (
            max_pieces(&offsets),
            charged_makespan(&parts, &seqlens, PAGE_SIZE, 8),
        )
    };
    assert!(pieces_over(66).0 > 4 && pieces_over(65).0 > 4);
    assert_eq!(pieces_over(64), (4, 136));
    // Kept within the slack of the chosen plan's charged cost, not beyond.
    assert!(keeps_narrow_fill(136, 135));
    assert!(keeps_narrow_fill(135 + NARROW_FILL_SLACK_PAGES, 135));
    assert!(!keeps_narrow_fill(136 + NARROW_FILL_SLACK_PAGES, 135));
    // The most pieces of any request; none for an empty batch, garbage counts as 0.
    assert_eq!(max_pieces(&[0, 2, 7, 8]), 5);
    assert_eq!(max_pieces(&[0]), 0);
    assert_eq!(max_pieces(&[5, 3]), 0);
}

#[test]
fn modelled_makespan_counts_pages_and_pieces() {
    assert_eq!((WHOLE_PIECE_HALF_PAGES, SPLIT_PIECE_HALF_PAGES), (3, 7));
    assert_eq!(
        PieceCosts::TRANSPOSED,
        PieceCosts {
            whole: WHOLE_PIECE_HALF_PAGES,
            split: SPLIT_PIECE_HALF_PAGES
        }
    );
    // 64-row pieces: a split one at the fill's 8 pages, a whole one at 4 (16 and 8 half
    // pages).
    assert_eq!(
        PieceCosts::ROWS_64,
        PieceCosts {
            whole: 8,
            split: 16
        }
    );
    assert_eq!(PieceCosts::for_rows(MAX_ROWS_PER_CTA), PieceCosts::ROWS_64);
    for rows in [16, 32] {
        assert_eq!(PieceCosts::for_rows(rows), PieceCosts::TRANSPOSED);
    }
    // Requests of 100, 10 and 10 pages over 2 partitions at 5 a piece (payload 73):
    // partition 0 holds 68 pages of request 0 (split), partition 1 its other 32 and both
    // short requests whole.
    let seqlens = [100 * 64, 10 * 64, 10 * 64];
    let (_, parts, offsets) = plan_and_check(&seqlens, PAGE_SIZE, 2);
    assert_eq!((parts[0].end_page, parts[1].begin_page), (68, 68));
    assert_eq!(offsets, [0, 2, 3, 4]);
    let model = |costs| modelled_makespan(&parts, &offsets, &seqlens, PAGE_SIZE, costs);
    let p1 = 2 * (32 + 10 + 10) + 7 + 2 * 3;
    assert_eq!(model(PieceCosts::TRANSPOSED), p1.max(2 * 68 + 7));
    // At 64-row costs partition 1's three pieces cost 32 half pages, partition 0's one 16.
    let p1 = 2 * (32 + 10 + 10) + 16 + 2 * 8;
    assert_eq!(model(PieceCosts::ROWS_64), p1.max(2 * 68 + 16));
    assert_eq!((p1, 2 * 68 + 16), (136, 152));
    for costs in [PieceCosts::TRANSPOSED, PieceCosts::ROWS_64] {
        assert_eq!(
            modelled_makespan(&[PartWork::IDLE], &[0, 0], &[0], PAGE_SIZE, costs),
            0
        );
    }
}

#[test]
fn ordered_plans_cost_a_piece_by_its_tiles() {
    assert_eq!(
        ordered_fixed_pages(MAX_ROWS_PER_CTA),
        ORDERED_FIXED_PAGES_64_ROWS
    );
    for rows in [16, 32] {
        assert_eq!(ordered_fixed_pages(rows), ORDERED_FIXED_PAGES);
    }
    // The measured optima: 3 pages a piece on 16/32-row tiles, 6 on 64-row ones.
    assert_eq!((ORDERED_FIXED_PAGES, ORDERED_FIXED_PAGES_64_ROWS), (3, 6));
}

/// A part naming requests past the lengths given (a corrupt or foreign `PartWork`) yields
/// the pieces of the requests that exist and stops there (it used to walk on to `end_req`:
/// 2^31 steps, ~23 s in a debug build); the plan comparisons saturate where a sum with
/// their slack would wrap.
#[test]
fn plan_helpers_stay_bounded_on_extreme_arguments() {
    let part = PartWork {
        begin_req: 0,
        begin_page: 0,
        end_req: i32::MAX,
        end_page: 1,
        first_split: 0,
        _pad: [0; 3],
    };
    let lens = [64, 64];
    let found: Vec<_> = pieces(&part, &lens, 64).map(|p| p.req).collect();
    assert_eq!(found, [0, 1]);
    assert!(keeps_narrow_fill(1000, u64::MAX));
    assert!(keeps_alt_plan(u64::MAX, 1000, u64::MAX));
    assert!(!keeps_alt_plan(0, u64::MAX, 0));
}
