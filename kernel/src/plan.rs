//! Split-KV planner: spreads the (request, page) work of one decode call over `num_parts`
//! partitions (one CTA column of the grid each), in the manner of FlashMLA's
//! `get_mla_metadata`.
//!
//! Pure `core` code: no allocation, no floats, no recursion, no indexing that can panic.
//! It builds for the host (unit tests, host-side planning) and for `nvptx64`, where the
//! same function can run in a single GPU thread (graph-capturable planning).
//!
//! # Model
//!
//! Request `r` has `num_pages(r) = ceil(seqlens[r] / page_size)` pages. The work of a
//! partition is a contiguous range of the (request, page) sequence taken in request order;
//! the part of one request that lies in one partition is a *piece*. A piece is never empty,
//! and requests with 0 pages have no pieces at all (and 0 splits).
//!
//! Cost of a piece = its pages + `O`, the fixed cost of a piece in pages
//! ([`piece_overhead`]: [`FIXED_OVERHEAD_PAGES`], [`FIXED_OVERHEAD_PAGES_64_ROWS`] for
//! 64-row tiles, or 0 when the partitions' share of the pages is at most
//! [`SHORT_SHARE_PAGES`]). With
//! `T = Σ_{r: num_pages(r) > 0} (num_pages(r) + O)` and `N = num_parts`, the planner
//! hands every partition a budget `payload = ceil(T / N) + O` and fills the partitions
//! greedily:
//! a whole remaining request if it fits in what is left of the budget, otherwise a split
//! piece that uses the budget up exactly (if at least one page fits after the overhead).
//!
//! # Guarantees (tested in `tests/cpu_plan.rs`)
//!
//! - Balance: every partition's cost (Σ over its pieces of pages + O) is at most
//!   `payload = ceil(T / N) + O` ([`PlanStats::payload`]).
//! - Completion: all pages are placed within the `N` partitions. (Proof: count the remaining
//!   work as Σ over unfinished requests of remaining pages + overhead, starting at `T`. A
//!   partition that is not the last one with work removes at least `payload - overhead =
//!   ceil(T/N)` of it: a split piece removes only its pages, `remain - overhead`, and uses the
//!   budget up; a partition that stops because the next piece does not fit and no split is
//!   possible has at most `overhead` of its budget left. `N · ceil(T/N) ≥ T`.)
//! - Splits: each partition ends with at most one split, so the number of pieces (= partial
//!   result slots, `split_offsets[batch]`) is at most `nonzero_requests + active_parts - 1
//!   ≤ batch + num_parts - 1`.
//! - Every partition with work holds at least one page; the partitions with work come first
//!   and idle ones (encoded as [`PartWork::IDLE`]) last.
//!
//! [`plan_keeping_tails`] with causal `s_q > 1` keeps Balance and the last two, not
//! Completion (it may return [`PlanError::Internal`]).

use crate::config::{
    row_tile_for, COMBINE_MAX_DIM_SLICES, COMBINE_NARROW_MAX_SPLITS, COMBINE_WIDE_MIN_SPLITS,
    MAX_ROWS_PER_CTA, ROW_TILES,
};

/// Tokens per page of the paged KV cache (FlashMLA's block size).
pub const PAGE_SIZE: usize = 64;
/// Cost of starting a request piece, in page units (FlashMLA's `fixed_overhead_num_blocks`),
/// for plans of 16/32-row tiles and for [`plan`].
pub const FIXED_OVERHEAD_PAGES: u32 = 5;

/// The same for plans of 64-row tiles (the seesaw kernels), whose pieces cost more: each
/// starts its Q and KV loads and its first S only after the last piece's products, and ends
/// with 128 KB of partial results a CTA. H200, two A-B-B-A rounds against 5 (h_q 64/128,
/// Fast): 8 took b 32, h_q 128, 16K 277.2 → 267.0 µs, b 128, h_q 128, 4K varlen 316.4 →
/// 309.6 and b 16, s_q 2, h_q 128, 16K 257.8 → 250.3, no point slower; 12 was mixed.
pub const FIXED_OVERHEAD_PAGES_64_ROWS: u32 = 8;

/// The fixed cost of a piece, in pages, for a plan of `rows_per_cta`-row tiles.
#[inline]
pub const fn fixed_overhead_pages(rows_per_cta: u32) -> u32 {
    if rows_per_cta == MAX_ROWS_PER_CTA {
        FIXED_OVERHEAD_PAGES_64_ROWS
    } else {
        FIXED_OVERHEAD_PAGES
    }
}

/// The other fixed cost a plan of 16/32-row tiles over long shares is tried with
/// ([`keeps_alt_plan`] picks by [`modelled_makespan`]): cheaper pieces pack more short
/// requests into a partition.
pub const FIXED_OVERHEAD_PAGES_ALT: u32 = 2;

/// The fixed cost of a piece, in pages, at which plans of uneven lengths on 16/32-row
/// tiles are also made in the requests' own order (`order::plan_ordered`; kept by
/// [`keeps_ordered_plan`]). H200, A-B-B-A against 4 over 13 varlen points (b 16-256, h_q
/// 16/32, 512-8K, s_q 1-2): 3 `Fast` 0.981 (b 64, h_q 16, 512 0.930; b 128, s_q 2, h_q 16,
/// 512 0.965), `Accurate` 0.980, none more than 1 % slower; 5 1.005 and 2 1.016 slower.
pub const ORDERED_FIXED_PAGES: u32 = 3;

/// The same for plans of 64-row tiles over short shares, whose pieces cost more. H200,
/// A-B-B-A against 4 (with [`PieceCosts::ROWS_64`]) over 24 varlen points (b 16-256, h_q
/// 64/128 and s_q 2, 512-8K): 6 `Fast` 0.937 with none slower, `Accurate` 0.961; 5 0.950, 7
/// 0.936 with one point 1.8 % slower, 8 (with the transposed kernels' costs) 0.981 with
/// four up to 30 % slower.
pub const ORDERED_FIXED_PAGES_64_ROWS: u32 = 6;

/// The ordered plans' fixed cost of a piece, in pages, for `rows_per_cta`-row tiles.
#[inline]
pub const fn ordered_fixed_pages(rows_per_cta: u32) -> u32 {
    if rows_per_cta == MAX_ROWS_PER_CTA {
        ORDERED_FIXED_PAGES_64_ROWS
    } else {
        ORDERED_FIXED_PAGES
    }
}

/// Whether an ordered plan of [`ordered_fixed_pages`] (modelled time `ordered`) replaces
/// the batch-order one (`batch`): wherever it models faster. H200, A-B-B-A, varlen,
/// `Fast` / `Accurate` medians: at 3 pages a piece the 16/32-row plans this takes beyond a
/// sixteenth's gain (the rule at 4 pages) ran 0.979 / 0.986 over 12 points (b 128, s_q 2,
/// h_q 16, 2K 0.937 / 0.924; b 256, h_q 32, 2K 0.940 / 0.963), one 0.9 % slower (b 128,
/// h_q 16, 2K); at 4 pages a piece a 0.7 % modelled gain had run 1 % slower (b 128, h_q 16,
/// 4K, which models level at 3 and keeps the batch order). Modelled 8-34 % faster ran 6-34
/// % faster (b 16, h_q 32, 4K 0.694 / 0.660).
pub const fn keeps_ordered_plan(ordered: u64, batch: u64) -> bool {
    ordered < batch
}

/// Modelled cost, in half pages, of a piece that holds a whole request (no partial result):
/// each CTA's end time grows by 1.2–1.6 pages a piece (H200, `%globaltimer` per CTA,
/// twenty-fourth session in docs/PERFORMANCE.md).
pub const WHOLE_PIECE_HALF_PAGES: u64 = 3;

/// Modelled cost, in half pages, of a piece of a split request: the decode's share above
/// plus its partial result and merge. From 3 to 4.5 pages it picks the plans the H200
/// measured faster (b 128, h_q 16, 4K varlen at 2 pages a piece: 163.9 → 159.6 µs; b 32,
/// h_q 16, 16K and b 128, h_q 16, 8K at 5: 148.6 against 150.1, 286.1 against 293.1).
pub const SPLIT_PIECE_HALF_PAGES: u64 = 7;

/// What [`modelled_makespan`] charges a piece, in half pages, besides its pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceCosts {
    /// A piece that holds a whole request.
    pub whole: u64,
    /// A piece of a split request.
    pub split: u64,
}

impl PieceCosts {
    /// The transposed (16/32-row) kernels' pieces, where the costs were fitted.
    pub const TRANSPOSED: PieceCosts = PieceCosts {
        whole: WHOLE_PIECE_HALF_PAGES,
        split: SPLIT_PIECE_HALF_PAGES,
    };
    /// The seesaw (64-row) kernels' pieces: a split piece at the
    /// [`FIXED_OVERHEAD_PAGES_64_ROWS`] their fill charges, a whole one at half that. With
    /// the transposed costs the model put ordered 64-row plans over short shares 8-32 %
    /// faster where they measured 17-36 % (fifty-first session), and models b 64, s_q 2,
    /// h_q 64, 2K varlen's batch order faster, which the ordered plan of
    /// [`ORDERED_FIXED_PAGES_64_ROWS`] beats by 13 % (H200, `Fast`; `Accurate` 9 %).
    pub const ROWS_64: PieceCosts = PieceCosts {
        // Half pages: 8 pages a split piece, 4 a whole one.
        whole: FIXED_OVERHEAD_PAGES_64_ROWS as u64,
        split: 2 * FIXED_OVERHEAD_PAGES_64_ROWS as u64,
    };

    /// The costs for `rows_per_cta`-row tiles.
    #[inline]
    pub const fn for_rows(rows_per_cta: u32) -> PieceCosts {
        if rows_per_cta == MAX_ROWS_PER_CTA {
            PieceCosts::ROWS_64
        } else {
            PieceCosts::TRANSPOSED
        }
    }
}

/// The cost of a plan's busiest partition, in pages: its pages plus `fixed` per piece, the
/// cost the greedy fill of [`plan_with_overhead`] balances only to within its payload's
/// rounding. Where a request splits unevenly (b 32, h_q 128, 8K at 8 pages a piece: 66 and
/// 62 of 128 pages over 64 partitions) another `fixed` for the fill evens it out.
pub fn charged_makespan(parts: &[PartWork], seqlens: &[i32], page_size: usize, fixed: u32) -> u64 {
    parts
        .iter()
        .map(|part| {
            pieces(part, seqlens, page_size)
                .map(|p| (p.page_end - p.page_begin) as u64 + fixed as u64)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// The fixed costs a 64-row plan over long shares is also filled with (from
/// [`FIXED_OVERHEAD_PAGES_64_ROWS`] down): the plan of the smallest [`charged_makespan`] at
/// [`FIXED_OVERHEAD_PAGES_64_ROWS`] a piece is kept, then of the fewest pieces, then the
/// first. b 32, h_q 128, 8K then runs 64 pages a partition instead of 66 or 62 (H200, A-B-B-A,
/// fastest replays: Fast 127.4 → 125.4 µs, Accurate 164.3 → 160.9), and 32K one piece
/// fewer.
pub const FILL_OVERHEADS_64_ROWS: core::ops::RangeInclusive<u32> = 4..=FIXED_OVERHEAD_PAGES_64_ROWS;

/// Partitions a 64-row plan over long shares may leave idle, at most one in this many, to
/// keep its requests to the narrow combine's pieces ([`narrow_fill_part_counts`]).
pub const NARROW_FILL_IDLE_DIVISOR: usize = 32;

/// What a 64-row plan gains by keeping its requests to the narrow combine, in pages of its
/// busiest partition ([`keeps_narrow_fill`]; mostly the combine's time, by ncu: 2–3 µs at
/// b 16, h_q 128, 32K, the decodes level). H200, A-B-B-A against the plans of 5 pieces a
/// request, fastest replays: one page more (b 16, h_q 128, 32K on 64 of 66 partitions:
/// Fast 227.5 → 223.3 µs, Accurate 309.0 → 305.9; b 32, h_q 64, 32K on 128 of 132: Fast
/// 296.3 → 289.2, Accurate 358.7 → 341.1) was 1-5 % faster, five more (the same at 64K)
/// level within ±1 %.
pub const NARROW_FILL_SLACK_PAGES: u64 = 4;

/// The partition counts, most first, over which a 64-row plan over long shares whose
/// requests have more pieces than the narrow combine takes is also filled, with pages
/// balanced alone (no piece cost): `num_parts` down to
/// `num_parts - num_parts / NARROW_FILL_IDLE_DIVISOR`.
pub fn narrow_fill_part_counts(num_parts: usize) -> impl Iterator<Item = usize> {
    (num_parts - num_parts / NARROW_FILL_IDLE_DIVISOR..=num_parts).rev()
}

/// The most pieces a request may have in a plan whose requests have at most `max_pieces`
/// and keep to the same kind of combine: the narrow one's (pairs included), the medium
/// one's (below [`COMBINE_WIDE_MIN_SPLITS`]), or any.
pub const fn combine_class_max_pieces(max_pieces: u32) -> u32 {
    if max_pieces <= COMBINE_NARROW_MAX_SPLITS {
        COMBINE_NARROW_MAX_SPLITS
    } else if max_pieces < COMBINE_WIDE_MIN_SPLITS {
        COMBINE_WIDE_MIN_SPLITS - 1
    } else {
        u32::MAX
    }
}

/// Most pieces of any request of a plan (its `split_offsets`, `batch + 1` entries).
pub fn max_pieces(split_offsets: &[i32]) -> u32 {
    split_offsets
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]).max(0) as u32)
        .max()
        .unwrap_or(0)
}

/// Whether a fill that keeps every request to the narrow combine (`narrow_charged` pages of
/// its busiest partition by [`charged_makespan`]) replaces the chosen plan
/// (`chosen_charged`): where it costs at most [`NARROW_FILL_SLACK_PAGES`] more.
pub const fn keeps_narrow_fill(narrow_charged: u64, chosen_charged: u64) -> bool {
    narrow_charged <= chosen_charged.saturating_add(NARROW_FILL_SLACK_PAGES)
}

/// The modelled time of a plan, in half pages: the largest over its partitions of two per
/// page plus `costs.whole` or `costs.split` per piece. `split_offsets` and `seqlens` are
/// indexed as the partitions' ranges are: by request for a plan in batch order, by position
/// for one in an order of its own.
pub fn modelled_makespan(
    parts: &[PartWork],
    split_offsets: &[i32],
    seqlens: &[i32],
    page_size: usize,
    costs: PieceCosts,
) -> u64 {
    let mut worst = 0;
    for part in parts {
        let mut cost = 0;
        for p in pieces(part, seqlens, page_size) {
            let piece = if num_splits(split_offsets, p.req) == 1 {
                costs.whole
            } else {
                costs.split
            };
            cost += 2 * (p.page_end - p.page_begin) as u64 + piece;
        }
        worst = worst.max(cost);
    }
    worst
}

/// Pages a partition above which the plan of cheaper pieces is kept even when its modelled
/// time is up to [`ALT_PLAN_SLACK_HALF_PAGES`] worse ([`keeps_alt_plan`]). Over such shares a
/// split piece costs less than [`SPLIT_PIECE_HALF_PAGES`] says: at b 32, h_q 16, 32K the
/// partitions of two pieces and 121 pages ended ~15 µs before those of one piece and 126
/// (H200, per-CTA end times, twenty-fourth session).
pub const LONG_SHARE_PAGES: u64 = 2 * SHORT_SHARE_PAGES;

/// The slack of [`LONG_SHARE_PAGES`], in half pages. H200, A-B-B-A on two cards (b 32,
/// h_q 16, 32K / 64K: 125 / 249 pages a one-piece partition instead of 126 / 250): Fast
/// 0.998-0.999 / 0.997-0.999; Accurate 0.998 / 0.997-0.999, and b 32, h_q 32, 32K / 64K
/// (the split 32-row kernel) 0.984-0.992 / 0.985-0.987; no point slower.
pub const ALT_PLAN_SLACK_HALF_PAGES: u64 = 1;

/// Whether the plan of cheaper pieces ([`FIXED_OVERHEAD_PAGES_ALT`], modelled time `alt`)
/// replaces the other (`main`) at `share` pages a partition: where it is faster by the
/// model, or over long shares no more than [`ALT_PLAN_SLACK_HALF_PAGES`] slower.
pub const fn keeps_alt_plan(share: u64, alt: u64, main: u64) -> bool {
    if share > LONG_SHARE_PAGES {
        alt <= main.saturating_add(ALT_PLAN_SLACK_HALF_PAGES)
    } else {
        alt < main
    }
}

/// Share of the pages per partition (`ceil(pages / num_parts)`) up to which pieces are
/// charged no fixed cost: with little work per SM, spreading it over every partition beats
/// saving pieces (measured on the H200 at b 16/32, 512..8K: up to 1.3x faster), while longer
/// contexts gain ~1-3 % from fewer pieces.
pub const SHORT_SHARE_PAGES: u64 = 32;

/// Pages per partition, rounded up, of `total_pages` pages over `num_parts` partitions
/// (`num_parts = 0` counts as 1).
#[inline]
pub const fn share_per_part(total_pages: u64, num_parts: u64) -> u64 {
    total_pages.div_ceil(if num_parts == 0 { 1 } else { num_parts })
}

/// The fixed cost of a piece, in pages, that the planner charges for `total_pages` pages
/// over `num_parts` partitions: `fixed` (e.g. [`FIXED_OVERHEAD_PAGES`]), or 0 when the share
/// per partition is at most [`SHORT_SHARE_PAGES`] (`num_parts = 0` counts as 1).
#[inline]
pub const fn piece_overhead(total_pages: u64, num_parts: usize, fixed: u32) -> u64 {
    if share_per_part(total_pages, num_parts as u64) <= SHORT_SHARE_PAGES {
        0
    } else {
        fixed as u64
    }
}

/// The work of one partition, read by the kernel (32 bytes).
///
/// `begin_req`, `end_req` and every `r` of the functions below that take a partition are
/// positions in the plan's request order: the request indices themselves for the plans of
/// this module (batch order); where the host orders the requests otherwise
/// (`order::plan_ordered`, `FLAG_ORDERED`), the kernels read the request at each position,
/// and the lengths these functions take are the lengths by position.
///
/// The partition processes requests `begin_req ..= end_req` in order; for request `r` its
/// pages are `[ (r == begin_req ? begin_page : 0), (r == end_req ? end_page : num_pages(r)) )`
/// (see [`piece_of`]). Requests with 0 pages strictly inside the range have empty ranges and
/// are skipped; `begin_req` and `end_req` themselves always have pages.
/// `first_split` is the index of this partition's piece of `begin_req` among that request's
/// pieces; pieces of later requests in the partition are their piece 0.
///
/// An idle partition has `begin_req > end_req`; the planner writes [`PartWork::IDLE`]
/// (`begin_req = 0, end_req = -1`, everything else 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartWork {
    /// First request (position in the plan's order) of the partition (always has pages
    /// unless idle).
    pub begin_req: i32,
    /// First page of `begin_req` this partition processes.
    pub begin_page: i32,
    /// Last request (position) of the partition (inclusive); `-1` when idle.
    pub end_req: i32,
    /// End page (exclusive) of `end_req` in this partition.
    pub end_page: i32,
    /// Piece index of this partition's piece of `begin_req` (its partial slot offset).
    pub first_split: i32,
    /// Padding to 32 bytes (the layout the kernel and the host agree on); always 0.
    pub _pad: [i32; 3],
}

const _: () = assert!(core::mem::size_of::<PartWork>() == 32);

impl PartWork {
    /// Canonical encoding of a partition without work.
    pub const IDLE: PartWork = PartWork {
        begin_req: 0,
        begin_page: 0,
        end_req: -1,
        end_page: 0,
        first_split: 0,
        _pad: [0; 3],
    };

    /// The eight `i32` words the kernel reads, in field order (the host uploads these).
    pub const fn words(&self) -> [i32; 8] {
        let [a, b, c] = self._pad;
        [
            self.begin_req,
            self.begin_page,
            self.end_req,
            self.end_page,
            self.first_split,
            a,
            b,
            c,
        ]
    }

    /// Index of request `r`'s piece in this partition among the request's pieces:
    /// `first_split` for the partition's first request, else 0.
    #[inline(always)]
    pub const fn split_index(&self, r: i32) -> i32 {
        if r == self.begin_req {
            self.first_split
        } else {
            0
        }
    }

    /// True if the partition has no work (`begin_req > end_req`).
    #[inline]
    pub const fn is_idle(&self) -> bool {
        self.begin_req > self.end_req
    }
}

/// Why [`plan`] refused its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// `seqlens[batch_index] = len < 0`.
    NegativeLength {
        /// Index of the offending request.
        batch_index: usize,
        /// Its length.
        len: i32,
    },
    /// `seqlens[batch_index] = len` exceeds `capacity = max_pages_per_seq * page_size` tokens.
    TooLong {
        /// Index of the offending request.
        batch_index: usize,
        /// Its length.
        len: i32,
        /// Tokens its block-table row can hold.
        capacity: u64,
    },
    /// Zero partitions, `page_size == 0`, output buffers too small, or counts that do not fit
    /// the kernel's `i32` fields.
    BadShape {
        /// Which check failed.
        reason: &'static str,
    },
    /// Not reachable (the greedy provably places all work); reported instead of panicking.
    Internal {
        /// Which invariant broke.
        reason: &'static str,
    },
}

impl core::fmt::Display for PlanError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            PlanError::NegativeLength { batch_index, len } => {
                write!(f, "seqlens[{batch_index}] = {len} is negative")
            }
            PlanError::TooLong {
                batch_index,
                len,
                capacity,
            } => write!(
                f,
                "seqlens[{batch_index}] = {len} exceeds the block table's capacity of {capacity} tokens"
            ),
            PlanError::BadShape { reason } => write!(f, "bad planner shape: {reason}"),
            PlanError::Internal { reason } => write!(f, "planner internal error: {reason}"),
        }
    }
}

#[cfg(not(target_arch = "nvptx64"))]
impl std::error::Error for PlanError {}

/// Summary of a plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Σ num_pages(r).
    pub total_pages: u64,
    /// Largest partition cost (Σ over its pieces of pages + `overhead`).
    pub max_part_cost: u64,
    /// Number of pieces = partial-result slots = `split_offsets[batch]`.
    pub num_splits_total: u32,
    /// The per-partition budget `ceil(T / num_parts) + overhead`, which bounds
    /// `max_part_cost` (`T` = Σ over requests with pages of pages + overhead).
    pub payload: u64,
    /// The fixed cost of a piece charged by this plan ([`piece_overhead`]).
    pub overhead: u64,
    /// Partitions with work (they come first).
    pub active_parts: u32,
}

/// Pages of a request of `len` tokens: `ceil(len / page_size)`, 0 for `len <= 0` or
/// `page_size == 0`.
#[inline]
pub const fn num_pages(len: i32, page_size: usize) -> u64 {
    if len <= 0 || page_size == 0 {
        0
    } else {
        let ps = page_size as u64;
        (len as u64).div_ceil(ps)
    }
}

/// Partitions for a grid of `sm_count` SMs when one partition occupies `ctas_per_part` CTAs
/// (row chunks × h_kv: every CTA of a partition reads the same KV range for a different set of
/// query rows): `max(1, sm_count / ctas_per_part)`; `ctas_per_part = 0` counts as 1.
#[inline]
pub const fn num_parts_for(sm_count: u32, ctas_per_part: u32) -> usize {
    let per = if ctas_per_part == 0 { 1 } else { ctas_per_part };
    let n = sm_count / per;
    if n == 0 {
        1
    } else {
        n as usize
    }
}

/// Pages per partition up to which more than 32 query rows per KV head may run as 32-row
/// tiles rather than 64-row ones, in both precisions: twice the CTAs per KV head, each
/// carrying half the Q rows and half the partial results, and each reading every page its
/// KV head's other row chunks read (the 32-row tile stacks a split P's two halves into N
/// at about no cost, where the 64-row tile doubles its P·V products). [`row_tiling`]
/// narrows at this share only where the 64-row plan would send a request to the wide
/// combine and the narrow one would not.
///
/// History: 4 with a split P (tenth session: b 32, h_q 64, 2K 50.5 → 43.1 µs against 8),
/// 2 with P rounded once (twentieth session, once the seesaw kernel loaded Q first: b 16,
/// h_q 64, 2K 25.7 → 25.2 µs against 4; 1 then lost, b 32, h_q 64, 512 16.9 → 17.9). The
/// seesaw kernel has since gained its wide output stores and FlashMLA's order; H200,
/// A-B-B-A, two rounds each (thirty-ninth session): Accurate at 0 ran the 2-4 page
/// h_q 64/128 points 2.6-10 % faster on the 64-row tile (b 16, h_q 128, 1K 25.3 → 22.8
/// µs) and the 1-page one 4 % slower (b 16, h_q 64, 512 13.6 → 14.2); Fast at 1 the
/// 2-page points 5-10 % faster (b 16, h_q 128, 512 16.6 → 15.0; b 16, h_q 64, 1K 16.7 →
/// 15.3), at 0 the 1-page one 3 % slower. Narrow tiles at every share lost 1.44x
/// (Accurate) and 1.75x (Fast) over the h_q 64/128 points from 2K. Since the 64-row
/// kernels' f16 partial results by bulk stores (fifty-fourth and fifty-sixth sessions)
/// 64-row tiles at one page a partition ran 6 of 7 points 8-13 % faster in both
/// precisions (H200, A-B-B-A: b 16, h_q 64, 512 13.8 → 12.2 µs `Accurate`, 13.2 → 11.5
/// `Fast`; b 8, h_q 128, 512 13.7 → 12.4; b 4, h_q 64, 2K 14.7 → 13.4) and b 8, h_q 64, 1K
/// 20 % slower (13.8 → 16.5 µs), where its 16 pieces a request took the wide combine and
/// the narrow plan's 8 the medium one. `Accurate` took 32-row tiles at one page a
/// partition again for one session after two random cases on 64-row ones measured 1.020
/// of the rounding floor, a cause now kept to f32 partial results ([`row_tiling`],
/// [`has_one_piece_rows`]).
pub const NARROW_TILE_MAX_SHARE: u64 = 1;

/// Whether a plan's decode kernel splits P (P ≈ P_hi + P_lo) for `rows_per_cta`-row tiles
/// of `share` pages a partition, where `split_asked` says whether the caller asked for it
/// (`Precision::Accurate`): always then, and also for 16-row tiles over long shares (more
/// than [`SHORT_SHARE_PAGES`]), where the split kernel is both the more accurate and the
/// faster one. H200, 41db079, h_q 16, Fast and Accurate sweeps alternated (four each):
/// 62–248 pages a partition (b 16 from 32K, b 32 from 16K, b 128 at 4K varlen) 0.9–2.0 %
/// faster split; 31 pages within ±0.3 %; 4–16 pages 1–7 % slower split.
pub const fn split_p_for(split_asked: bool, rows_per_cta: u32, share: u64) -> bool {
    split_asked || (rows_per_cta == ROW_TILES[0] && share > SHORT_SHARE_PAGES)
}

/// Whether a plan's 64-row (seesaw) kernel runs its pairs in the P_a-first order (warpgroup
/// 1 multiplies P_a under its softmax of S_b) rather than FlashMLA's (`seesaw` module
/// docs): always with `split_p`, and with P rounded once where a KV head has one row chunk
/// or a partition at most [`SHORT_SHARE_PAGES`] pages. H200, A-B-B-A, same card
/// (thirty-fifth session, fastest replays): P_a-first h_q 64 at every length 0.5-3.2 %
/// faster, h_q 128 at 1K-8K (16-32 pages) 0.7-2.2 % faster, h_q 128 at 63-248 pages
/// 0.4-4.1 % slower (b 32, 8K 1.004; 16K 1.020; 64K 1.041; b 16, s_q 2, 16K 1.018).
pub const fn seesaw_pa_first(
    rows_per_cta: u32,
    split_p: bool,
    row_chunks: u32,
    share: u64,
) -> bool {
    rows_per_cta == MAX_ROWS_PER_CTA && (split_p || row_chunks == 1 || share <= SHORT_SHARE_PAGES)
}

/// Query rows per CTA and CTAs per KV head for `rows_per_kv` query rows per KV head
/// (`s_q · h_q / h_kv`), given the plan's `total_pages` over `sm_count` SMs and `h_kv` KV
/// heads and the pages of the longest request (`longest_pages`). The widest tile that
/// holds the rows ([`row_tile_for`]), but a 64-row tile becomes 32-row tiles where the
/// 64-row plan would give each partition at most [`NARROW_TILE_MAX_SHARE`] pages and cut
/// the longest request into at least `COMBINE_WIDE_MIN_SPLITS` pieces (the wide combine)
/// while the narrow plan, over half the partitions, would cut it into fewer
/// ([`most_pieces`]): requests of 16-29 pages where the narrow plan has two pages a
/// partition, none where it has one too (b 1, h_q 128, 1K). 64-row tiles at one page a
/// partition ran 5-10 % faster than 32-row ones (H200, A-B-B-A, single rounding: b 1,
/// h_q 128, 1K 10.6 → 9.6 µs; b 2, h_q 64, 1K 10.8 → 9.7).
///
/// Split-P plans took 32-row tiles at one page a partition for a session: two of 3,000
/// random cases there (`gpu_stress` seed 5702: bf16, s_q 4, causal, 65 tokens) measured
/// 1.020 of the rounding floor. Their cause, query rows that merge one piece alone and
/// so round twice, is kept to f32 partial results at every share
/// ([`has_one_piece_rows`]), so both precisions share this rule.
///
/// 17–32 rows stay on a 32-row tile at every share in both precisions. Until the
/// thirty-first session `Fast` plans ran them as one zero-padded 64-row tile over more
/// than 16 pages a partition; with the KV tensor maps' 128-byte L2 fills the 32-row tile
/// is the faster one there (H200, two cards, two A-B-B-A rounds each, h_q 32 and s_q 2 ×
/// h_q 16 from 8K: 0.987 of the time over 7 points, one slower, and 0.983 over 8, none
/// slower; b 32, h_q 32, 64K 577.9 → 555.5 µs, 32K 294.3 → 282.0): the padding rows'
/// tensor work drew power the 32-row kernel does not.
pub const fn row_tiling(
    rows_per_kv: u32,
    total_pages: u64,
    sm_count: u32,
    h_kv: u32,
    longest_pages: u64,
) -> (u32, u32) {
    let rows = if rows_per_kv == 0 { 1 } else { rows_per_kv };
    let tile = row_tile_for(rows);
    let chunks = rows.div_ceil(tile);
    if tile == MAX_ROWS_PER_CTA {
        let share = share_per_part(total_pages, parts_for_chunks(sm_count, chunks, h_kv));
        if share <= NARROW_TILE_MAX_SHARE {
            let narrow = ROW_TILES[ROW_TILES.len() - 2];
            let narrow_chunks = rows.div_ceil(narrow);
            let narrow_share =
                share_per_part(total_pages, parts_for_chunks(sm_count, narrow_chunks, h_kv));
            let wide = COMBINE_WIDE_MIN_SPLITS as u64;
            if most_pieces(longest_pages, share) >= wide
                && most_pieces(longest_pages, narrow_share) < wide
            {
                return (narrow, narrow_chunks);
            }
        }
    }
    (tile, chunks)
}

/// Partitions of a plan whose KV heads each take `chunks` CTAs (`num_parts_for`).
const fn parts_for_chunks(sm_count: u32, chunks: u32, h_kv: u32) -> u64 {
    num_parts_for(sm_count, chunks.saturating_mul(h_kv)) as u64
}

/// The most pieces a request of `pages` pages can be cut into by partitions of `share`
/// pages each, wherever it starts among them: its first page may end a partition, and
/// each further `share` pages fill one (0 for no pages; a share of 0 counts as 1).
pub const fn most_pieces(pages: u64, share: u64) -> u64 {
    if pages == 0 {
        0
    } else {
        (pages - 1).div_ceil(if share == 0 { 1 } else { share }) + 1
    }
}

/// The last page at which a later piece of a request of `pages` pages may start so that
/// each of `s_q` causal query positions sees a key of it, for every length with those
/// pages (the device lengths may differ from the plan's within a page): the first position
/// sees all but the last `s_q - 1` tokens, so a piece starting at token `a` is seen by all
/// where `a + s_q - 1` is at most the first token of the last page. `pages - 1` (any
/// page) for `s_q <= 1`; 0 (no later piece) where the first position may see no token
/// past the first page; `page_size = 0` counts as 1.
#[inline]
pub const fn last_piece_start(pages: u64, s_q: usize, page_size: usize) -> u64 {
    let page = if page_size == 0 { 1 } else { page_size as u64 };
    let first_of_last = pages.saturating_sub(1).saturating_mul(page);
    let s_q = if s_q == 0 { 1 } else { s_q as u64 };
    first_of_last.saturating_add(1).saturating_sub(s_q) / page
}

/// Whether a causal plan of `s_q` query positions (`s_q > 1`) may leave some query row of
/// a split request with a single piece to merge: where a request's second piece starts
/// past [`last_piece_start`], in the tokens its first position does not see, so that
/// position's rows see the first piece alone and the merge passes that piece's partial
/// result through unchanged. `seqlens_in_order` are the lengths at the plan's positions
/// (`PartWork::begin_req`). [`plan_keeping_tails`] avoids such pieces; it keeps them only
/// for a request too short for its first position to see a second piece
/// (`last_piece_start` 0) that it must split: at the start of a partition in batch order,
/// anywhere in `order::plan_ordered_keeping_tails`.
///
/// f16 partial results round such a row twice (to f16, then to the bf16 output): its
/// values then lie on f16's grid, and those that land on a midpoint between two bf16
/// values round to even, half of them away from the exact value, 3/64 of the output
/// rounding's variance (RMSE/floor ~1.024), where a merge of several pieces adds the f16
/// rounding's 1/64 (~1.008). Two causal `gpu_stress` cases (s_q 4, 65 tokens, a piece a
/// page) read 1.020 so (fifty-seventh session; `docs/ACCURACY.md`).
pub fn has_one_piece_rows(
    parts: &[PartWork],
    seqlens_in_order: &[i32],
    s_q: usize,
    page_size: usize,
) -> bool {
    if s_q < 2 {
        return false;
    }
    let mut last_req = -1;
    parts.iter().any(|p| {
        if p.is_idle() || p.begin_page <= 0 || p.begin_req == last_req {
            return false;
        }
        // The request's first piece to start past page 0 is its second.
        last_req = p.begin_req;
        let len = seqlens_in_order
            .get(p.begin_req as usize)
            .copied()
            .unwrap_or(0);
        let pages = num_pages(len, page_size);
        pages > 0 && p.begin_page as u64 > last_piece_start(pages, s_q, page_size)
    })
}

/// Slices of a row's V dims for the combine (its grid's z) of a plan whose most-split
/// request has `max_splits` pieces, over `combine_ctas` (s_q · h_q · batch) CTAs on
/// `sm_count` SMs. A wide combine (at least `COMBINE_WIDE_MIN_SPLITS` pieces) takes the
/// most slices, halving from `COMBINE_MAX_DIM_SLICES`, that keep its grid within half the
/// SMs: H200, b 1, h_q 16 (16 CTAs), 4 slices 0.91-0.95 of one; b 4 (64 CTAs), 4 slices
/// 1.15 and 2 slices 1.03. Otherwise 1.
pub const fn combine_dim_slices(max_splits: u32, combine_ctas: u64, sm_count: u32) -> u32 {
    let mut slices = 1;
    if max_splits >= COMBINE_WIDE_MIN_SPLITS {
        slices = COMBINE_MAX_DIM_SLICES;
        while slices > 1 && combine_ctas.saturating_mul(slices as u64) > (sm_count / 2) as u64 {
            slices /= 2;
        }
    }
    slices
}

/// Upper bound on partial-result slots (`split_offsets[batch]`) for any plan of `batch`
/// requests over `num_parts` partitions: size the partial `out`/`lse` buffers with it.
#[inline]
pub const fn max_split_slots(batch: usize, num_parts: usize) -> usize {
    batch.saturating_add(num_parts)
}

#[inline]
fn set(split_offsets: &mut [i32], i: usize, v: u64) {
    if let Some(s) = split_offsets.get_mut(i) {
        *s = v as i32;
    }
}

/// Plans the split-KV decomposition, a piece charged [`FIXED_OVERHEAD_PAGES`] on long
/// shares (the decode calls [`plan_with_overhead`] with [`fixed_overhead_pages`]).
///
/// - `seqlens`: `[batch]` cached tokens per request (0 allowed).
/// - `max_pages_per_seq`: block-table width; a length above `max_pages_per_seq * page_size`
///   is an error.
/// - `parts_out[..num_parts]`: written with every partition's [`PartWork`].
/// - `split_offsets_out[..=batch]`: exclusive prefix sum of the number of pieces of each
///   request. A request with exactly one piece is written straight to the output; one with
///   `n ≥ 2` pieces writes piece `i` into partial slot `split_offsets[r] + i` and a combine
///   step merges the `n` slots.
///
/// On error nothing useful is in the output buffers (they may be partly written).
///
/// ```rust
/// use etap_kernel::plan::{plan, PartWork, FIXED_OVERHEAD_PAGES, PAGE_SIZE};
/// // Two requests of 80 and 8 pages over 2 partitions: 44 pages a partition, more than
/// // SHORT_SHARE_PAGES, so a piece costs FIXED_OVERHEAD_PAGES more.
/// let seqlens = [80 * 64, 8 * 64 - 5];
/// let mut parts = [PartWork::IDLE; 2];
/// let mut split_offsets = [0i32; 3];
/// let stats = plan(&seqlens, 128, PAGE_SIZE, 2, &mut parts, &mut split_offsets).unwrap();
/// assert_eq!(stats.total_pages, 88);
/// assert_eq!((FIXED_OVERHEAD_PAGES, stats.overhead), (5, 5));
/// // T = (80 + 5) + (8 + 5) = 98: each partition may cost ceil(98 / 2) + 5 = 54.
/// assert_eq!(stats.payload, 54);
/// assert!(stats.max_part_cost <= stats.payload);
/// // Partition 0 takes pages 0..49 of request 0 (49 pages + 5 overhead = 54) ...
/// assert_eq!((parts[0].begin_req, parts[0].end_req, parts[0].end_page), (0, 0, 49));
/// // ... partition 1 the rest of request 0 (as its piece 1) and all of request 1.
/// assert_eq!((parts[1].begin_req, parts[1].begin_page, parts[1].first_split), (0, 49, 1));
/// assert_eq!((parts[1].end_req, parts[1].end_page), (1, 8));
/// // Request 0 has 2 pieces (partial slots 0 and 1), request 1 one (written directly).
/// assert_eq!(split_offsets, [0, 2, 3]);
/// ```
pub fn plan(
    seqlens: &[i32],
    max_pages_per_seq: usize,
    page_size: usize,
    num_parts: usize,
    parts_out: &mut [PartWork],
    split_offsets_out: &mut [i32],
) -> Result<PlanStats, PlanError> {
    plan_with_overhead(
        seqlens,
        max_pages_per_seq,
        page_size,
        num_parts,
        FIXED_OVERHEAD_PAGES,
        parts_out,
        split_offsets_out,
    )
}

/// [`plan`] with `fixed_overhead` pages as the fixed cost of a piece on long shares
/// ([`piece_overhead`]; see [`fixed_overhead_pages`] for the decode's choice by row tile).
pub fn plan_with_overhead(
    seqlens: &[i32],
    max_pages_per_seq: usize,
    page_size: usize,
    num_parts: usize,
    fixed_overhead: u32,
    parts_out: &mut [PartWork],
    split_offsets_out: &mut [i32],
) -> Result<PlanStats, PlanError> {
    plan_keeping_tails(
        seqlens,
        max_pages_per_seq,
        page_size,
        num_parts,
        fixed_overhead,
        1,
        parts_out,
        split_offsets_out,
    )
}

/// [`plan_with_overhead`] for causal requests of `s_q` query positions: where a
/// partition's piece would leave the next one to start past the request's
/// [`last_piece_start`], the piece ends at that page instead, or, where it would then be
/// empty and the partition holds an earlier request, the partition ends there. Only a
/// request's second piece decides [`has_one_piece_rows`]; the rule holds for every later
/// one too, as measured (it needs no piece index; fifty-ninth session). The
/// pages moved go to the later partitions, so the fill may leave work after the last one
/// ([`PlanError::Internal`]); such a split is kept where neither applies. `s_q <= 1` is
/// [`plan_with_overhead`]'s fill.
#[allow(clippy::too_many_arguments)]
pub fn plan_keeping_tails(
    seqlens: &[i32],
    max_pages_per_seq: usize,
    page_size: usize,
    num_parts: usize,
    fixed_overhead: u32,
    s_q: usize,
    parts_out: &mut [PartWork],
    split_offsets_out: &mut [i32],
) -> Result<PlanStats, PlanError> {
    let batch = seqlens.len();
    if num_parts == 0 {
        return Err(PlanError::BadShape {
            reason: "num_parts is 0",
        });
    }
    if page_size == 0 {
        return Err(PlanError::BadShape {
            reason: "page_size is 0",
        });
    }
    if parts_out.len() < num_parts {
        return Err(PlanError::BadShape {
            reason: "parts_out is shorter than num_parts",
        });
    }
    if split_offsets_out.len() <= batch {
        return Err(PlanError::BadShape {
            reason: "split_offsets_out is shorter than batch + 1",
        });
    }
    match batch.checked_add(num_parts) {
        Some(n) if n <= i32::MAX as usize => {}
        _ => {
            return Err(PlanError::BadShape {
                reason: "batch + num_parts does not fit i32",
            })
        }
    }

    // Validation, totals.
    let capacity = (max_pages_per_seq as u64).saturating_mul(page_size as u64);
    let mut total_pages: u64 = 0;
    let mut nonzero: u64 = 0;
    let mut i = 0usize;
    while i < batch {
        let len = match seqlens.get(i) {
            Some(&l) => l,
            None => break,
        };
        if len < 0 {
            return Err(PlanError::NegativeLength {
                batch_index: i,
                len,
            });
        }
        if len as u64 > capacity {
            return Err(PlanError::TooLong {
                batch_index: i,
                len,
                capacity,
            });
        }
        let p = num_pages(len, page_size);
        if p > 0 {
            total_pages += p;
            nonzero += 1;
        }
        i += 1;
    }
    let overhead = piece_overhead(total_pages, num_parts, fixed_overhead);
    let total_cost = total_pages + overhead * nonzero;
    let payload = total_cost.div_ceil(num_parts as u64) + overhead;

    // Greedy fill. State: request `r`, its first unplaced page `page`, the index `split` of
    // its next piece, and `cum` = pieces of all finished requests.
    let mut r = 0usize;
    let mut page: u64 = 0;
    let mut split: u64 = 0;
    let mut cum: u64 = 0;
    let mut max_cost: u64 = 0;
    let mut active: u32 = 0;
    set(split_offsets_out, 0, 0);

    let mut part = 0usize;
    while part < num_parts {
        // Skip requests without pages (0 pieces).
        while let Some(&len) = seqlens.get(r) {
            if num_pages(len, page_size) != 0 {
                break;
            }
            r += 1;
            set(split_offsets_out, r, cum);
        }
        let mut w = PartWork::IDLE;
        if r < batch {
            w.begin_req = r as i32;
            w.begin_page = page as i32;
            w.first_split = split as i32;
            let mut took_any = false;
            let mut remain = payload;
            while let Some(&len) = seqlens.get(r) {
                let np = num_pages(len, page_size);
                if np == 0 {
                    r += 1;
                    set(split_offsets_out, r, cum);
                    continue;
                }
                let rest = np - page; // >= 1: page < np always holds here
                if remain >= rest + overhead {
                    remain -= rest + overhead;
                    cum += split + 1;
                    w.end_req = r as i32;
                    w.end_page = np as i32;
                    took_any = true;
                    r += 1;
                    page = 0;
                    split = 0;
                    set(split_offsets_out, r, cum);
                } else {
                    // < np, since remain < rest + overhead.
                    let mut end = page + remain.saturating_sub(overhead);
                    let last = last_piece_start(np, s_q, page_size);
                    if end > last && last > page {
                        end = last;
                    } else if end > last && took_any {
                        end = page;
                    }
                    if end > page {
                        remain -= end - page + overhead;
                        page = end;
                        split += 1;
                        w.end_req = r as i32;
                        w.end_page = page as i32;
                        took_any = true;
                    }
                    break;
                }
            }
            if !took_any {
                return Err(PlanError::Internal {
                    reason: "a partition with work left got no piece",
                });
            }
            let cost = payload - remain;
            if cost > max_cost {
                max_cost = cost;
            }
            active += 1;
        }
        match parts_out.get_mut(part) {
            Some(slot) => *slot = w,
            None => {
                return Err(PlanError::BadShape {
                    reason: "parts_out is shorter than num_parts",
                })
            }
        }
        part += 1;
    }
    // Trailing requests without pages.
    while let Some(&len) = seqlens.get(r) {
        if num_pages(len, page_size) != 0 {
            return Err(PlanError::Internal {
                reason: "work left after the last partition",
            });
        }
        r += 1;
        set(split_offsets_out, r, cum);
    }

    Ok(PlanStats {
        total_pages,
        max_part_cost: max_cost,
        num_splits_total: cum as u32,
        payload,
        overhead,
        active_parts: active,
    })
}

/// One request piece of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Request index (its position in the plan's order; see [`PartWork`]).
    pub req: i32,
    /// First page (inclusive) of the request processed by this piece.
    pub page_begin: i32,
    /// End page (exclusive); `page_begin < page_end`.
    pub page_end: i32,
    /// Index of this piece among the request's pieces.
    pub split_index: i32,
}

/// Page range `[begin, end)` of request `r` in partition `part`; `(0, 0)` when the partition
/// holds no piece of `r` (idle partition, `r` outside `begin_req..=end_req`, `r` out of
/// `seqlens`, or a request without pages). `end` is clamped to `num_pages(r)`.
#[inline]
pub fn piece_of(part: &PartWork, r: i32, seqlens: &[i32], page_size: usize) -> (i32, i32) {
    if part.is_idle() || r < part.begin_req || r > part.end_req || r < 0 {
        return (0, 0);
    }
    let np = match seqlens.get(r as usize) {
        Some(&len) => num_pages(len, page_size),
        None => return (0, 0),
    };
    let np = if np > i32::MAX as u64 {
        i32::MAX
    } else {
        np as i32
    };
    let b = if r == part.begin_req {
        part.begin_page
    } else {
        0
    };
    let e = if r == part.end_req { part.end_page } else { np };
    let e = if e > np { np } else { e };
    if b < 0 || b >= e {
        (0, 0)
    } else {
        (b, e)
    }
}

/// The kernels' view of [`piece_of`] with 64-token pages: pages `[begin, end)` of request
/// `r` in partition `part`, from the request's device length `seqlen`, never past the
/// block-table row (`max_pages`) nor below 0, whatever the device lengths hold. Equal to
/// `piece_of` whenever the lengths are the plan's and fit their rows; `begin >= end` means
/// no piece.
#[inline(always)]
pub fn clamped_piece(part: &PartWork, r: i32, seqlen: i32, max_pages: u32) -> (u32, u32) {
    let pages = device_pages(seqlen);
    let end = if r == part.end_req {
        part.end_page.max(0) as u32
    } else {
        pages
    };
    (piece_begin(part, r, max_pages), end.min(max_pages))
}

/// Pages of a device length as the kernels count them (a negative length has none).
#[inline(always)]
pub fn device_pages(seqlen: i32) -> u32 {
    (seqlen.max(0) as u32).div_ceil(crate::config::PAGE_SIZE)
}

/// Whether request `r`'s device length `seqlen` contradicts the plan at its piece of
/// `part` (piece `split_idx` of the request's `splits` planned pieces) in a way that
/// changes the output: the plan gave the request no pages but the length has some (its
/// result would land in another request's partial-result slot), the planned piece holds no
/// page of the length (its partial result, or the output, stays unwritten), or the
/// request's last planned piece, at the end of its partition's range, does not end at the
/// length's last page (keys would be left out, or pages past the length read). Any other
/// length is harmless, as the kernels mask keys by the device length: one of the plan's
/// page count, or one that leaves every planned piece a page where the request's last
/// piece is not at the end of its partition's range (that partition reads the request
/// up to its device length).
#[inline(always)]
pub fn contradicts_plan(
    part: &PartWork,
    r: i32,
    seqlen: i32,
    max_pages: u32,
    split_idx: i32,
    splits: i32,
) -> bool {
    let (first, last) = clamped_piece(part, r, seqlen, max_pages);
    let pages = device_pages(seqlen).min(max_pages);
    let last_piece = r == part.end_req && split_idx.wrapping_add(1) == splits;
    (splits == 0) != (first >= last) || (last_piece && pages != last)
}

/// The first page of [`clamped_piece`], which does not depend on the length: the kernels
/// read its page id while the length is still loading.
#[inline(always)]
pub fn piece_begin(part: &PartWork, r: i32, max_pages: u32) -> u32 {
    let begin = if r == part.begin_req {
        part.begin_page.max(0) as u32
    } else {
        0
    };
    begin.min(max_pages)
}

/// Whether a request of length `seqlen` fits a block-table row of `max_pages` 64-token pages.
#[inline(always)]
pub fn length_fits(seqlen: i32, max_pages: u32) -> bool {
    seqlen >= 0 && (seqlen as u32).div_ceil(crate::config::PAGE_SIZE) <= max_pages
}

/// Iterator over the non-empty pieces of a partition, in order (see [`pieces`]).
#[derive(Clone, Debug)]
pub struct Pieces<'a> {
    part: PartWork,
    seqlens: &'a [i32],
    page_size: usize,
    next: i32,
}

impl Iterator for Pieces<'_> {
    type Item = Piece;
    #[inline]
    fn next(&mut self) -> Option<Piece> {
        // Requests past `seqlens` have no pieces: a part naming them ends there.
        while self.next <= self.part.end_req
            && self.next >= 0
            && (self.next as usize) < self.seqlens.len()
        {
            let r = self.next;
            self.next = if r == i32::MAX { -1 } else { r + 1 };
            let (b, e) = piece_of(&self.part, r, self.seqlens, self.page_size);
            if b < e {
                return Some(Piece {
                    req: r,
                    page_begin: b,
                    page_end: e,
                    split_index: self.part.split_index(r),
                });
            }
        }
        None
    }
}

/// The non-empty pieces of `part` in processing order.
#[inline]
pub fn pieces<'a>(part: &PartWork, seqlens: &'a [i32], page_size: usize) -> Pieces<'a> {
    Pieces {
        part: *part,
        seqlens,
        page_size,
        next: if part.is_idle() || part.begin_req < 0 {
            -1
        } else {
            part.begin_req
        },
    }
}

/// Calls `f` for every non-empty piece of `part`, in processing order.
#[inline]
pub fn for_each_piece(
    part: &PartWork,
    seqlens: &[i32],
    page_size: usize,
    mut f: impl FnMut(Piece),
) {
    for p in pieces(part, seqlens, page_size) {
        f(p);
    }
}

/// Number of pieces of request `r` (`split_offsets[r+1] - split_offsets[r]`), 0 when `r` is
/// out of range.
#[inline]
pub fn num_splits(split_offsets: &[i32], r: i32) -> i32 {
    if r < 0 {
        return 0;
    }
    let r = r as usize;
    match (
        split_offsets.get(r),
        r.checked_add(1).and_then(|n| split_offsets.get(n)),
    ) {
        (Some(&a), Some(&b)) => b.wrapping_sub(a),
        _ => 0,
    }
}

/// Where a piece's result goes: `None` when the request has a single piece (write the final
/// output directly), otherwise `Some(slot)` = `split_offsets[r] + split_index`, the partial
/// (out, lse) slot that the combine step reads. Also `None` for an out-of-range `r`.
#[inline]
pub fn partial_slot(split_offsets: &[i32], r: i32, split_index: i32) -> Option<i32> {
    if num_splits(split_offsets, r) < 2 {
        return None;
    }
    split_offsets
        .get(r as usize)
        .map(|&base| base.wrapping_add(split_index))
}
