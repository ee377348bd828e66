//! A request order for split-KV plans of uneven lengths.
//!
//! `plan::plan_with_overhead` fills the partitions with requests in batch order, so at
//! uneven lengths nearly every partition boundary falls inside a request and splits it
//! (b 128, h_q 128, 4K varlen: 185 pieces for 128 requests over 66 partitions). Each piece
//! costs its partition a fixed overhead and the combine a partial result. [`plan_ordered`]
//! fills each partition with the largest remaining request that fits whole, and splits a
//! request only where none does; the partitions stay contiguous ranges, of positions in
//! that order, so the kernels read `order[pos]` for the request where they took `pos`
//! before (`config::FLAG_ORDERED`). On the bench's b 128, h_q 128, 4K varlen lengths that
//! makes the busiest partition 147 pages a piece at 8 pages against 153, with 137 pieces.
//! The other plans (16/32-row tiles; 64-row tiles over short shares, whose pieces the
//! batch-order fill charges nothing) take it where their modelled time drops
//! (`plan::keeps_ordered_plan`): on an H200, b 16, h_q 32, 4K varlen 41.4 → 28.8 µs and
//! b 64, s_q 2, h_q 32, 1K varlen 46.2 → 36.8.

use crate::decode::MAX_SM_COUNT;
use etap_kernel::plan::{
    last_piece_start, modelled_makespan, num_pages, num_splits, PartWork, PieceCosts,
};
use std::collections::BTreeSet;

/// A plan whose partitions take requests in `order`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderedPlan {
    /// One per partition; `begin_req..=end_req` are positions in `order`.
    pub parts: Vec<PartWork>,
    /// Exclusive prefix sum over the requests (batch order) of their pieces.
    pub split_offsets: Vec<i32>,
    /// The request at each position: every request once, those without pages last.
    pub order: Vec<i32>,
    /// The budget the fill met: no partition costs more (pages + `fixed` a piece).
    pub payload: u64,
}

/// `seqlens` (by request) at the positions of `order`, as `plan::pieces` and the plan's
/// costs read a partition's lengths; a request past `seqlens` reads as empty.
pub fn lengths_by_position(order: &[i32], seqlens: &[i32]) -> Vec<i32> {
    order
        .iter()
        .map(|&r| seqlens.get(r as usize).copied().unwrap_or(0))
        .collect()
}

/// `split_offsets` (by request) over the positions of `order` instead: the prefix sum of
/// the pieces of `order[0]`, `order[1]`, …, the form `plan::modelled_makespan` takes with
/// the lengths by position.
pub fn split_offsets_by_position(order: &[i32], split_offsets: &[i32]) -> Vec<i32> {
    // A request outside `split_offsets` (none in a plan of this module) has no pieces.
    let prefix = order.iter().scan(0i32, |total, &r| {
        *total = total.saturating_add(num_splits(split_offsets, r));
        Some(*total)
    });
    std::iter::once(0).chain(prefix).collect()
}

/// `plan::modelled_makespan` of a plan whose partitions take requests in `order`, given
/// its `split_offsets` and `seqlens` by request (the batch order where `order` is it).
pub fn modelled_makespan_in_order(
    parts: &[PartWork],
    split_offsets: &[i32],
    order: &[i32],
    seqlens: &[i32],
    page_size: usize,
    costs: PieceCosts,
) -> u64 {
    let by_pos = lengths_by_position(order, seqlens);
    let offsets_by_pos = split_offsets_by_position(order, split_offsets);
    modelled_makespan(parts, &offsets_by_pos, &by_pos, page_size, costs)
}

impl OrderedPlan {
    /// [`split_offsets_by_position`] of this plan.
    pub fn split_offsets_by_position(&self) -> Vec<i32> {
        split_offsets_by_position(&self.order, &self.split_offsets)
    }
}

/// Plans `seqlens` over `num_parts` partitions at `fixed` pages a piece in the order
/// described in the module doc, at the smallest budget from the balanced one
/// (`ceil(Σ (pages + fixed) / num_parts)`) up to `max_payload` at which every page is
/// placed. `None` where none is; where `fixed` is 0 (pieces then cost nothing to split),
/// `num_parts` or `page_size` is 0, no request has pages, `num_parts` passes the decode's
/// [`MAX_SM_COUNT`] (a partition an SM: its vectors are built once a budget), or the batch
/// passes `i32::MAX` (the kernels' positions are `i32`).
pub fn plan_ordered(
    seqlens: &[i32],
    page_size: usize,
    num_parts: usize,
    fixed: u32,
    max_payload: u64,
) -> Option<OrderedPlan> {
    plan_ordered_keeping_tails(seqlens, page_size, num_parts, fixed, 1, max_payload)
}

/// [`plan_ordered`] for causal requests of `s_q` query positions: a piece that would leave
/// the request's next one to start past `plan::last_piece_start` ends at that page
/// instead where it keeps a page, so that no query row merges one piece alone
/// (`plan::has_one_piece_rows`) unless a request is too short to split so; the moved
/// pages may take a larger budget. The first budget that places every page is kept even
/// where such a piece remains: searching on for a budget without one found plans that
/// fill fewer partitions (H200, A-B-B-A: b 32, s_q 2, h_q 128, 256 varlen 1.095 and b 96,
/// s_q 4, h_q 64, 256 varlen 1.049 slower, fifty-ninth session).
pub fn plan_ordered_keeping_tails(
    seqlens: &[i32],
    page_size: usize,
    num_parts: usize,
    fixed: u32,
    s_q: usize,
    max_payload: u64,
) -> Option<OrderedPlan> {
    if num_parts == 0 || fixed == 0 || page_size == 0 {
        return None;
    }
    if num_parts > MAX_SM_COUNT as usize || seqlens.len() > i32::MAX as usize {
        return None;
    }
    let pages: Vec<u64> = seqlens.iter().map(|&l| num_pages(l, page_size)).collect();
    let total: u64 = pages
        .iter()
        .filter(|&&p| p > 0)
        .map(|&p| p + u64::from(fixed))
        .sum();
    if total == 0 {
        return None;
    }
    let lowest = total.div_ceil(num_parts as u64);
    let last: Vec<u64> = pages
        .iter()
        .map(|&p| last_piece_start(p, s_q, page_size))
        .collect();
    (lowest..=max_payload).find_map(|payload| fill(&pages, &last, num_parts, fixed, payload))
}

/// The pages a piece of a request of `pages` pages from page `begin` takes: `take`, or
/// `last - begin` where a split after `begin + take` would start the next piece past
/// `last` (its `plan::last_piece_start`) and the shorter piece keeps a page.
fn keep_tail(begin: u64, take: u64, pages: u64, last: u64) -> u64 {
    if begin + take < pages && begin + take > last && last > begin {
        last - begin
    } else {
        take
    }
}

/// One fill at `payload` (`last`: each request's `plan::last_piece_start`); `None` where
/// pages are left over after the last partition.
fn fill(
    pages: &[u64],
    last: &[u64],
    num_parts: usize,
    fixed: u32,
    payload: u64,
) -> Option<OrderedPlan> {
    let fixed = u64::from(fixed);
    if payload <= fixed {
        return None;
    }
    let mut left: BTreeSet<(u64, usize)> = pages
        .iter()
        .enumerate()
        .filter(|(_, &p)| p > 0)
        .map(|(r, &p)| (p, r))
        .collect();
    let mut pieces = vec![0i32; pages.len()];
    let mut order: Vec<i32> = Vec::with_capacity(pages.len());
    let mut parts = vec![PartWork::IDLE; num_parts];
    // A request split at the end of the last partition: its position and pages placed.
    let mut carry: Option<(usize, u64)> = None;
    for part in parts.iter_mut() {
        if carry.is_none() && left.is_empty() {
            break;
        }
        let mut room = payload;
        let mut w = PartWork::IDLE;
        if let Some((pos, done)) = carry.take() {
            let r = order[pos] as usize;
            let take = keep_tail(done, (pages[r] - done).min(room - fixed), pages[r], last[r]);
            (w.begin_req, w.begin_page, w.first_split) = (pos as i32, done as i32, pieces[r]);
            (w.end_req, w.end_page) = (pos as i32, (done + take) as i32);
            pieces[r] += 1;
            room -= take + fixed;
            if done + take < pages[r] {
                carry = Some((pos, done + take));
            }
        } else {
            w.begin_req = order.len() as i32;
        }
        while carry.is_none() && room > fixed {
            // The largest request that fits whole, else the largest split to fit.
            let whole = left.range(..(room - fixed + 1, 0)).next_back().copied();
            let Some((p, r)) = whole.or_else(|| left.last().copied()) else {
                break;
            };
            left.remove(&(p, r));
            let take = keep_tail(0, p.min(room - fixed), p, last[r]);
            order.push(r as i32);
            pieces[r] = 1;
            (w.end_req, w.end_page) = (order.len() as i32 - 1, take as i32);
            room -= take + fixed;
            if take < p {
                carry = Some((order.len() - 1, take));
            }
        }
        *part = w;
    }
    if carry.is_some() || !left.is_empty() {
        return None;
    }
    order.extend(
        (0..pages.len())
            .filter(|&r| pages[r] == 0)
            .map(|r| r as i32),
    );
    let mut split_offsets = Vec::with_capacity(pages.len() + 1);
    split_offsets.push(0i32);
    for &n in &pieces {
        split_offsets.push(split_offsets.last().copied().unwrap_or(0) + n);
    }
    Some(OrderedPlan {
        parts,
        split_offsets,
        order,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etap_kernel::plan::{charged_makespan, has_one_piece_rows, pieces, PAGE_SIZE};

    /// A xorshift generator from `seed`: each call a value below its argument.
    fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut x = seed;
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    }

    /// Lengths of pages `p` (full pages of 64 tokens, the last one partly).
    fn lens(p: &[u64]) -> Vec<i32> {
        p.iter()
            .map(|&n| (n * 64).saturating_sub(3) as i32)
            .collect()
    }

    /// Checks that `plan` covers every page of every request exactly once, in pieces whose
    /// indices and slots agree, within its payload.
    fn check(plan: &OrderedPlan, seqlens: &[i32], fixed: u32) {
        let by_pos = lengths_by_position(&plan.order, seqlens);
        let mut sorted = plan.order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..seqlens.len() as i32).collect::<Vec<_>>());
        let mut covered = vec![0u64; seqlens.len()];
        let mut next_split = vec![0i32; seqlens.len()];
        let mut seen_idle = false;
        for part in &plan.parts {
            if part.is_idle() {
                seen_idle = true;
                continue;
            }
            assert!(!seen_idle, "idle partitions come last");
            for piece in pieces(part, &by_pos, PAGE_SIZE) {
                let r = plan.order[piece.req as usize] as usize;
                assert_eq!(piece.page_begin as u64, covered[r], "pieces in page order");
                covered[r] = piece.page_end as u64;
                assert_eq!(part.split_index(piece.req), next_split[r]);
                next_split[r] += 1;
            }
        }
        for (r, &len) in seqlens.iter().enumerate() {
            assert_eq!(covered[r], num_pages(len, PAGE_SIZE), "request {r}");
            let n = plan.split_offsets[r + 1] - plan.split_offsets[r];
            assert_eq!(n, next_split[r], "request {r}'s pieces");
        }
        assert!(charged_makespan(&plan.parts, &by_pos, PAGE_SIZE, fixed) <= plan.payload);
    }

    #[test]
    fn whole_requests_fill_partitions_where_they_fit() {
        // 100 + 30, 90 + 40, 70 + 60 over 3 partitions of 146 at 8 a piece: no split.
        let seqlens = lens(&[100, 90, 70, 60, 40, 30]);
        let plan = plan_ordered(&seqlens, PAGE_SIZE, 3, 8, 200).unwrap();
        check(&plan, &seqlens, 8);
        assert_eq!(plan.payload, 146);
        assert_eq!(plan.split_offsets, [0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn long_requests_split_across_consecutive_partitions() {
        // 500 pages and two short ones over 4 partitions: the long one is cut.
        let seqlens = lens(&[3, 500, 0, 5]);
        let plan = plan_ordered(&seqlens, PAGE_SIZE, 4, 8, 1000).unwrap();
        check(&plan, &seqlens, 8);
        assert!(plan.split_offsets[2] - plan.split_offsets[1] >= 4);
        assert_eq!(
            *plan.order.last().unwrap(),
            2,
            "the empty request goes last"
        );
    }

    #[test]
    fn random_lengths_are_covered_within_the_budget() {
        let mut rand = xorshift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..300 {
            let batch = 1 + rand(200) as usize;
            let parts = 1 + rand(140) as usize;
            let seqlens: Vec<i32> = (0..batch).map(|_| rand(20_000) as i32).collect();
            for fixed in [4, 8] {
                if let Some(plan) = plan_ordered(&seqlens, PAGE_SIZE, parts, fixed, 1 << 20) {
                    check(&plan, &seqlens, fixed);
                } else {
                    assert!(seqlens.iter().all(|&l| l == 0), "{seqlens:?} over {parts}");
                }
            }
        }
    }

    #[test]
    fn fills_keeping_tails_start_later_pieces_where_every_causal_row_sees_them() {
        let mut rand = xorshift(0x2545_F491_4F6C_DD1D);
        let mut moved = 0;
        for _ in 0..300 {
            let batch = 1 + rand(100) as usize;
            let parts = 1 + rand(140) as usize;
            let seqlens: Vec<i32> = (0..batch).map(|_| rand(4_000) as i32).collect();
            let plain = plan_ordered(&seqlens, PAGE_SIZE, parts, 6, 1 << 20);
            let same = plan_ordered_keeping_tails(&seqlens, PAGE_SIZE, parts, 6, 1, 1 << 20);
            assert_eq!(plain, same);
            for s_q in [2, 4] {
                let Some(plan) =
                    plan_ordered_keeping_tails(&seqlens, PAGE_SIZE, parts, 6, s_q, 1 << 20)
                else {
                    assert!(seqlens.iter().all(|&l| l == 0), "{seqlens:?} over {parts}");
                    continue;
                };
                check(&plan, &seqlens, 6);
                // A piece starts past its request's last start only where the one before
                // began there or later (it could end no earlier).
                let by_pos = lengths_by_position(&plan.order, &seqlens);
                let mut begun = vec![0u64; seqlens.len()];
                for piece in plan
                    .parts
                    .iter()
                    .flat_map(|p| pieces(p, &by_pos, PAGE_SIZE))
                {
                    let pos = piece.req as usize;
                    let last = last_piece_start(num_pages(by_pos[pos], PAGE_SIZE), s_q, PAGE_SIZE);
                    let begin = piece.page_begin as u64;
                    assert!(begin <= last || begun[pos] >= last, "{piece:?}, s_q {s_q}");
                    begun[pos] = begin;
                }
                let tails = |p: &OrderedPlan| {
                    let by_pos = lengths_by_position(&p.order, &seqlens);
                    has_one_piece_rows(&p.parts, &by_pos, s_q, PAGE_SIZE)
                };
                if plain.as_ref().is_some_and(tails) && !tails(&plan) {
                    moved += 1;
                }
            }
        }
        assert!(moved > 10, "only {moved} fills kept their tails");
    }

    #[test]
    fn split_offsets_by_position_follow_the_order() {
        // 500 pages split over the partitions, then whole short requests: the long one
        // (request 1) comes first in the order and holds every split piece.
        let seqlens = lens(&[3, 500, 0, 5]);
        let plan = plan_ordered(&seqlens, PAGE_SIZE, 4, 8, 1000).unwrap();
        let by_pos = plan.split_offsets_by_position();
        assert_eq!(by_pos.len(), seqlens.len() + 1);
        for (pos, &r) in plan.order.iter().enumerate() {
            let r = r as usize;
            assert_eq!(
                by_pos[pos + 1] - by_pos[pos],
                plan.split_offsets[r + 1] - plan.split_offsets[r],
                "position {pos} (request {r})"
            );
        }
        assert_eq!(by_pos.last(), plan.split_offsets.last());
        assert_ne!(by_pos, plan.split_offsets);
        // Requests outside `split_offsets` (a hand-built order) count no pieces.
        assert_eq!(
            split_offsets_by_position(&[-1, 7, 0], &plan.split_offsets),
            [0, 0, 0, plan.split_offsets[1]]
        );
    }

    /// `modelled_makespan` over an ordered plan, fed by position, charges each piece by
    /// how many pieces its own request has.
    #[test]
    fn the_modelled_time_of_an_ordered_plan_charges_each_request_its_pieces() {
        use etap_kernel::plan::{
            modelled_makespan, PieceCosts, SPLIT_PIECE_HALF_PAGES, WHOLE_PIECE_HALF_PAGES,
        };
        let seqlens = lens(&[3, 500, 0, 5, 40, 7, 120, 1]);
        let plan = plan_ordered(&seqlens, PAGE_SIZE, 5, 4, 1000).unwrap();
        let by_pos = lengths_by_position(&plan.order, &seqlens);
        let split = |r: usize| plan.split_offsets[r + 1] - plan.split_offsets[r] > 1;
        let expected = plan
            .parts
            .iter()
            .map(|part| {
                pieces(part, &by_pos, PAGE_SIZE)
                    .map(|p| {
                        let r = plan.order[p.req as usize] as usize;
                        let fixed = if split(r) {
                            SPLIT_PIECE_HALF_PAGES
                        } else {
                            WHOLE_PIECE_HALF_PAGES
                        };
                        2 * (p.page_end - p.page_begin) as u64 + fixed
                    })
                    .sum::<u64>()
            })
            .max()
            .unwrap();
        let offsets = plan.split_offsets_by_position();
        assert_eq!(
            modelled_makespan(
                &plan.parts,
                &offsets,
                &by_pos,
                PAGE_SIZE,
                PieceCosts::TRANSPOSED
            ),
            expected
        );
        // By request instead, the split request (1) would be charged as the one first in
        // the order is not.
        assert_ne!(
            modelled_makespan(
                &plan.parts,
                &plan.split_offsets,
                &by_pos,
                PAGE_SIZE,
                PieceCosts::TRANSPOSED
            ),
            expected
        );
    }

    #[test]
    fn nothing_to_order() {
        assert_eq!(plan_ordered(&[0, 0], PAGE_SIZE, 4, 8, 100), None);
        assert_eq!(plan_ordered(&[640], PAGE_SIZE, 0, 8, 100), None);
        assert_eq!(plan_ordered(&[640], PAGE_SIZE, 2, 0, 100), None);
        assert_eq!(plan_ordered(&[640], PAGE_SIZE, usize::MAX, 8, 100), None);
        // More partitions than any GPU has SMs: no plan, rather than gigabytes of them.
        let too_many = MAX_SM_COUNT as usize + 1;
        assert_eq!(plan_ordered(&[640], PAGE_SIZE, too_many, 8, 100), None);
        // A budget below the balanced one finds no plan.
        assert_eq!(plan_ordered(&lens(&[100, 100]), PAGE_SIZE, 2, 8, 100), None);
    }
}
