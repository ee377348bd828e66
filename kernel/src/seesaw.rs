//! The 64-row decode mainloop in FlashMLA's orientation, with a "seesaw" schedule of the
//! two consumer warpgroups.
//!
//! At 64 rows per KV head the query rows fill the wgmma M dimension without padding, so
//! S = Q·Kᵀ (M = 64 rows, N = 64 tokens) and O += P·V (N = 256 dims a warpgroup) run at the
//! tensor core's full rate, where the transposed tile's N = 32 runs at 66 % of it (see
//! `flashmla-etap probe`). The consumer warpgroups take a piece's tiles in pairs: warpgroup
//! 0 computes S and the softmax of the even tile `a` (stage 0), warpgroup 1 of the odd tile
//! `b` (stage 1). Each holds O for all 64 rows and half of the V dims, so each multiplies
//! both tiles' P into its half: its own P from registers, the other's from shared memory
//! (the stage's RoPE block, free once S is done, and a split P's low half in a spare buffer
//! of its own; with P rounded once, P_b takes the spare buffer, so that stage 1's RoPE
//! block reloads with warpgroup 1's V half, before warpgroup 0 is done with P_b: H200,
//! h_q 128 at 1K-16K 1-4 % faster). Per pair:
//!
//! ```text
//! wg 0: softmax(S_a), P_a out → O_L = O_L·s_a + P_a·V_aL → [P_b]
//!       → O_L = O_L·s_b + P_b·V_bL → S_a+2
//! wg 1: [P_a] O_R = O_R·s_a + P_a·V_aR, under it softmax(S_b) → P_b out
//!       → O_R = O_R·s_b + P_b·V_bR → S_b+2
//! ```
//!
//! The running max passes from one warpgroup's softmax to the other's through shared
//! memory with the rescale factor s of each tile, so both halves of O see the same
//! factors. That is the P_a-first order (`pa_first_pair_wg0`), which the split-P schedule
//! (`Precision::Accurate`: P ≈ P_hi + P_lo, twice the P·V products, one buffer for either
//! warpgroup's P_lo in turn) always runs. With P rounded once, FlashMLA's order
//! (`softmax_first_pair_wg0`: warpgroup 1's softmax first, issuing P_b·V_bR a chunk of k16
//! steps at a time as P_b comes out of the exponent; warpgroup 0 stores P_a scaled by s_b
//! where it moved) runs where two or more row chunks share each tile over long shares; the
//! plan picks (`plan::seesaw_pa_first`): the P_a-first order keeps the tensor cores busy under
//! warpgroup 1's softmax (P_a·V_aL and P_a·V_aR, not P_a·V_aL alone) and frees stage 0
//! sooner, FlashMLA's frees stage 1's V_R sooner, which the long power-capped h_q 128
//! calls favour (H200, thirty-fifth session: h_q 64 1-3 % and h_q 128 up to 8K 1-2 %
//! faster P_a-first, h_q 128 from 16K 1-4 % slower).
//!
//! As in the transposed kernel, a row's running max moves only where a tile's score passes
//! it by more than `SOFTMAX_SLACK` (P ≤ 2^8), so after a piece's first tiles the factors
//! are almost always exactly 1: each softmax ends with a warp vote on whether any of the
//! warp's 16 rows moved, published beside the factors (warp w of either warpgroup holds the
//! same rows), and O's 128-multiply rescales are skipped where none did (a branch uniform
//! over the warp; no barrier). H200: 2-4 % faster at h_q 64/128 from 4K with split P
//! (ninth session); with P rounded once, where it first measured level, 0.3-1.4 % faster
//! at h_q 128 below the power cap since the softmax is on the pair's critical path
//! (twenty-second session).
//!
//! A stage's halves are reloaded by the warpgroup that reads them last
//! (`seesaw_half_blocks`) as soon as its wgmma on them are done, each column block on its
//! own mbarrier, so the next pair's KV streams in under this pair's products and S starts
//! on the first blocks to land. A reload is issued ahead of a wait for the other
//! warpgroup, or after an arrival it waits for, so that its issue (hundreds of cycles) is
//! off the other warpgroup's path (H200: h_q 64 2-4 % faster). In the P_a-first order
//! stage 0's V_R half is the exception: warpgroup 1 reads it last (P_a·V_aR) but would
//! reach its reload only after storing P_b and issuing P_b·V_bR, while warpgroup 0 idles
//! until P_b is out, so warpgroup 0 reloads it once warpgroup 1 reports P_a·V_aR retired
//! (`NamedBarrier::VaRFree`; H200, sixty-first session: `Accurate` 0.982 over 12 points,
//! `Fast`'s P_a-first plans ~1 % faster). There is no producer
//! warpgroup: the CTA is the two consumer warpgroups (`SEESAW_THREADS`), 255 registers a
//! thread.
use crate::config::*;
use crate::decode::{enter, row_lse, DecodeArgs, OutputTarget, B16_BYTES, F32_BYTES};
use crate::element::{Element, F16};
use crate::layout::{
    a_fragment_pair, acc_coord, desc_add, f16_partial_scale_exp, p_rows_store_coord, pow2,
    smem_desc, swizzled_offset, Major, SWIZZLE_ROW_BYTES,
};
use crate::plan::{clamped_piece, contradicts_plan, length_fits, piece_begin, PartWork};
use crate::ptx::wgmma::{self, MmaShape, N256, N64};
use crate::ptx::{
    atomic, barrier, cp_async, fence, global, griddep, ids, math, mbarrier, opaque, smem, stmatrix,
    tma, warp,
};
use crate::tile::load_swizzled;

/// log2(e): the softmax runs in base 2 on scores pre-multiplied by scale·log2(e).
const LOG2_E: f32 = core::f32::consts::LOG2_E;
/// Bytes of one k16 step across rows of a swizzled block (MN-major operands: 16 rows).
const MN_STEP_BYTES: u32 = 16 * SWIZZLE_ROW_BYTES;

// The schedule pairs the two stages with the two consumer warpgroups (tile a in stage 0 for
// warpgroup 0, tile b in stage 1 for warpgroup 1), and a tile's P (64 rows × 64 tokens)
// takes exactly one column block, as do Q's 64 rows (its blocks are `BLOCK_BYTES` apart).
const _: () = {
    assert!(STAGES == 2 && CONSUMER_WARPGROUPS == 2);
    assert!(SEESAW_ROWS == TILE_TOKENS && SEESAW_ROWS * SWIZZLE_ROW_BYTES == BLOCK_BYTES);
    assert!(PV_STEPS % PB_CHUNK_STEPS == 0);
    // The bulk stores' staging: both warpgroups' V blocks of O within Q's column blocks.
    assert!(CONSUMER_WARPGROUPS * SEESAW_V_BLOCKS <= K_BLOCKS);
};

/// S of one tile: 64 rows × 64 tokens.
type Scores = <N64 as MmaShape>::Acc;
/// One warpgroup's half of O: 64 rows × 256 dims.
type OutHalf = <N256 as MmaShape>::Acc;
/// P of one tile as the wgmma A fragment: four k16 steps of four packed pairs.
type PFragment = [[u32; 4]; 4];

/// The seesaw decode kernel body for element type `T` (one CTA: 64 query rows of one KV
/// head over one partition of the plan); `SPLIT_P`: P split into P_hi + P_lo; `PA_FIRST`:
/// the pairs in the P_a-first order (required with `SPLIT_P`), else in FlashMLA's;
/// `F16_PARTIALS`: partial results as scaled f16 (`config::PARTIAL_SCALES_BYTE`), else f32.
#[inline(always)]
pub unsafe fn decode<
    T: Element,
    const SPLIT_P: bool,
    const PA_FIRST: bool,
    const F16_PARTIALS: bool,
>(
    a: &DecodeArgs,
) {
    const { assert!(PA_FIRST || !SPLIT_P) };
    let lay = SeesawSmem::new();
    let base = smem::base();
    let Some(part) = enter(a, |part| {
        for b in 0..STAGES * K_BLOCKS {
            mbarrier::init(base + lay.bars + 8 * b, 1);
        }
        Lead::read(a, part, part.begin_req).store(base + lay.lead);
        smem::st_u32(base + lay.first_split, part.first_split as u32);
        // The partial results' map, made with the plan: fetched now rather than by the
        // first bulk store, on its path.
        if F16_PARTIALS && a.flags & FLAG_BULK_PARTIALS != 0 {
            tma::prefetch_map(a.o_accum_map);
        }
    }) else {
        return;
    };
    let chunk = ids::block_y() % a.row_chunks;
    let head = ids::block_y() / a.row_chunks;
    let wg = warp::uniform(ids::warpgroup());
    let t = ids::thread() % 128;
    let (warp_id, lane) = (t / 32, t % 32);
    let c = Cta {
        a,
        head,
        base,
        lay,
        wg,
        t,
        lane,
        leader: (warp_id == 0) & warp::elect_one(),
        rows: [16 * warp_id + lane / 4, 16 * warp_id + lane / 4 + 8],
        row0: chunk * SEESAW_ROWS,
        heads_per_kv: a.h_q / a.h_kv,
        scale_log2: a.softmax_scale * LOG2_E,
        policy: tma::l2_policy(a.flags & FLAG_KV_EVICT_FIRST != 0),
    };
    consume::<T, SPLIT_P, PA_FIRST, F16_PARTIALS>(&c, &part);
    griddep::launch_dependents();
}

/// A request's length and the page ids of its piece's first `STAGES` tiles (0 past the
/// block-table row: such tiles are never loaded). The partition's first request's lead
/// is read before the wait for the previous grid, so that its first TMA loads follow the
/// wait at once (H200: h_q 64/128 at 512-2K 1-3 % faster; read ahead the same way, the
/// transposed kernels measured 1-3 % slower at b 16, h_q 16, 1K-2K, so they read after it).
#[derive(Clone, Copy)]
struct Lead {
    seqlen: i32,
    ids: [i32; STAGES as usize],
}

impl Lead {
    /// Reads the lead of the request at position `pos` of the plan's order for partition
    /// `part` from global memory.
    #[inline(always)]
    unsafe fn read(a: &DecodeArgs, part: &PartWork, pos: i32) -> Lead {
        let r = a.request(pos);
        let pages = a.block_table.add((r as u32 * a.max_pages) as usize);
        let begin = piece_begin(part, pos, a.max_pages);
        Lead {
            seqlen: *a.seqlens.add(r as usize),
            ids: core::array::from_fn(|k| {
                let page = begin + k as u32;
                if page < a.max_pages {
                    *pages.add(page as usize)
                } else {
                    0
                }
            }),
        }
    }

    /// Shared address of page id `k` in the lead at `slot` (the length is word 0).
    fn id_at(slot: u32, k: usize) -> u32 {
        slot + 4 * (1 + k as u32)
    }

    /// Stores the lead at `slot` in shared memory (`LEAD_WORDS` words).
    #[inline(always)]
    unsafe fn store(&self, slot: u32) {
        smem::st_u32(slot, self.seqlen as u32);
        for (k, id) in self.ids.iter().enumerate() {
            smem::st_u32(Lead::id_at(slot, k), *id as u32);
        }
    }

    /// The lead at position `pos`: for the partition's first request the copy stored at
    /// `slot` before the wait, else read now.
    #[inline(always)]
    unsafe fn of(a: &DecodeArgs, part: &PartWork, pos: i32, slot: u32) -> Lead {
        if pos == part.begin_req {
            Lead {
                seqlen: smem::ld_u32(slot) as i32,
                ids: core::array::from_fn(|k| smem::ld_u32(Lead::id_at(slot, k)) as i32),
            }
        } else {
            Lead::read(a, part, pos)
        }
    }
}

/// What a consumer thread knows of its CTA.
struct Cta<'a> {
    a: &'a DecodeArgs,
    head: u32,
    base: u32,
    lay: SeesawSmem,
    /// Consumer warpgroup (0 or 1).
    wg: u32,
    /// Thread within the warpgroup.
    t: u32,
    lane: u32,
    /// The thread of the warpgroup that issues its TMA loads: the lane `elect.sync` picks
    /// in warp 0. Predicated on `t == 0`, ptxas wraps each load in a loop over the lanes'
    /// operand values (16 SASS instructions a load against 2-7 elected). H200: elected,
    /// P rounded once P_a-first 1-2 % faster (forty-third session), the split kernel 0.978
    /// in medians over 13 points and FlashMLA's order 0.976-0.994 over 10, none slower
    /// (sixty-second session).
    leader: bool,
    /// This thread's two accumulator rows (within the CTA's 64).
    rows: [u32; 2],
    /// First query row (of the KV head's s_q·h_q/h_kv) of the CTA.
    row0: u32,
    heads_per_kv: u32,
    scale_log2: f32,
    /// L2 eviction policy of the KV loads: evict-first with `FLAG_KV_EVICT_FIRST`, else
    /// evict-normal (one form of the load: no branch ahead of the wgmma).
    policy: u64,
}

/// The request piece a CTA is working on.
struct Piece {
    /// Request index.
    r: i32,
    seqlen: i32,
    /// First page and number of pages (tiles).
    first: u32,
    n: u32,
    /// The request's block-table row.
    pages: *const i32,
    /// Last visible key of the first query row (the length, or its causal limit): tiles
    /// reaching past it are masked.
    first_limit: i32,
    /// Last visible key of this thread's two rows.
    lim: [i32; 2],
}

impl Cta<'_> {
    /// Shared address of KV stage `s`.
    fn stage(&self, s: u32) -> u32 {
        self.base + self.lay.kv + s * TILE_BYTES
    }
    /// mbarrier of column block `c` of stage `s`.
    fn bar(&self, s: u32, c: u32) -> u32 {
        self.base + self.lay.bars + 8 * (s * K_BLOCKS + c)
    }
    /// P of stage `s`'s tile: its RoPE block.
    fn p_buf(&self, s: u32) -> u32 {
        self.stage(s) + ROPE_BLOCK * BLOCK_BYTES
    }
    /// The spare buffer: the low half of a split P (either warpgroup's, in turn), or P_b
    /// when P is rounded once.
    fn p_lo_buf(&self) -> u32 {
        self.base + self.lay.p_lo
    }
    /// Stores this warpgroup's P fragments for the other warpgroup: the high half at `hi`
    /// (a stage's RoPE block or the spare buffer), the low half (`SPLIT_P`) in the spare
    /// buffer, then makes them visible to the async proxy, i.e. to the other warpgroup's
    /// wgmma once the barrier that follows has published them.
    unsafe fn store_p<const SPLIT_P: bool>(&self, p: &[PFragment; 2], hi: u32) {
        store_fragment(&p[0], hi, self.t);
        if SPLIT_P {
            store_fragment(&p[1], self.p_lo_buf(), self.t);
        }
        fence::proxy_async_shared();
    }
    /// P_b in the P_a-first order: stage 1's RoPE block with a split P, else the spare
    /// buffer (so that stage 1's RoPE block reloads with warpgroup 1's V half, as in
    /// `seesaw_half_blocks`).
    fn pb_buf<const SPLIT_P: bool>(&self) -> u32 {
        if SPLIT_P {
            self.p_buf(1)
        } else {
            self.p_lo_buf()
        }
    }
    /// This warpgroup's V blocks of stage `s`.
    fn v_half(&self, s: u32) -> u32 {
        self.stage(s) + self.wg * SEESAW_V_BLOCKS * BLOCK_BYTES
    }
    /// Running max of CTA row `row`.
    fn m_at(&self, row: u32) -> u32 {
        self.base + self.lay.m + 4 * row
    }
    /// Rescale factor of warpgroup `wg`'s last tile for CTA row `row`.
    fn scale_at(&self, wg: u32, row: u32) -> u32 {
        self.base + self.lay.scale + 4 * (wg * SEESAW_ROWS + row)
    }
    /// Whether warpgroup `wg`'s last softmax moved the running max of one of this warp's
    /// rows (a warp-uniform flag: all of the warp's lanes store the same value).
    fn moved_at(&self, wg: u32) -> u32 {
        self.base + self.lay.moved + 4 * (wg * (CONSUMER_WARPS / CONSUMER_WARPGROUPS) + self.warp())
    }
    /// Warp within the warpgroup: its lanes hold rows 16·warp to 16·warp + 15.
    fn warp(&self) -> u32 {
        self.t / 32
    }
    /// Reads warpgroup `wg`'s flag for this warp's rows (once a barrier has published its
    /// last softmax).
    unsafe fn moved(&self, wg: u32) -> bool {
        smem::ld_u32(self.moved_at(wg)) != 0
    }
    /// Warpgroup `wg`'s row sum of CTA row `row` at the end of a piece.
    fn l_at(&self, wg: u32, row: u32) -> u32 {
        self.base + self.lay.l + 4 * (wg * SEESAW_ROWS + row)
    }
    /// Query (s index, head) of CTA row `row` (within `row0..`).
    fn query_of(&self, row: u32) -> (u32, u32) {
        let row = self.row0 + row;
        (
            row / self.heads_per_kv,
            self.head * self.heads_per_kv + row % self.heads_per_kv,
        )
    }

    /// Index of the piece at position `pos` in this partition among its request's pieces:
    /// the partition's first piece index for its first position, else 0. Kept in shared
    /// memory rather than in a register through the piece (read from the plan before the
    /// output stores, its latency sat ahead of them: 0.4 µs, H200 stamps).
    unsafe fn split_index(&self, part: &PartWork, pos: i32) -> i32 {
        if pos == part.begin_req {
            smem::ld_u32(self.base + self.lay.first_split) as i32
        } else {
            0
        }
    }

    /// Page id of tile `tile` of the piece (read early: its latency hides behind the pair).
    unsafe fn page_id(&self, pc: &Piece, tile: u32) -> i32 {
        *pc.pages.add((pc.first + tile) as usize)
    }

    /// Issues the TMA loads of half `half` of stage `s` from page `id`, one mbarrier per
    /// column block (from the warpgroup's `leader` only, without a branch: see
    /// `tma::load_3d_hint_if`). A page id outside the cache is reported and loaded as an
    /// all-out-of-bounds box (zeros).
    unsafe fn load_half<const SPLIT_P: bool>(&self, pc: &Piece, s: u32, half: u32, id: i32) {
        let a = self.a;
        let leader = self.leader;
        let bad = id < 0 || id as u32 >= a.num_blocks;
        atomic::min_i32_if(leader && bad, a.errors.add(ERROR_PAGE_ID), pc.r);
        let token0 = if bad {
            -(TILE_TOKENS as i32)
        } else {
            id * PAGE_SIZE as i32
        };
        let blocks = seesaw_half_blocks(s, half, SPLIT_P);
        for blk in 0..K_BLOCKS {
            if blocks & (1 << blk) != 0 {
                let (dst, bar) = (self.stage(s) + blk * BLOCK_BYTES, self.bar(s, blk));
                let x = (blk * COL_BLOCK) as i32;
                mbarrier::arrive_expect_tx_if(leader, bar, BLOCK_BYTES);
                tma::load_3d_hint_if(
                    leader,
                    dst,
                    a.kv_map,
                    bar,
                    x,
                    self.head as i32,
                    token0,
                    self.policy,
                );
            }
        }
    }

    /// Zeroes this warpgroup's V rows past the length in tile `tile` of the piece (in stage
    /// `tile % STAGES`), if it is the request's partial last page: those rows may hold
    /// anything (NaN), and 0·NaN would poison O.
    unsafe fn zero_tail_v(&self, pc: &Piece, tile: u32) {
        let valid = pc.seqlen - ((pc.first + tile) * PAGE_SIZE) as i32;
        if valid < TILE_TOKENS as i32 {
            let (valid, v) = (valid.max(0) as u32, self.v_half(tile % STAGES));
            let units = (TILE_TOKENS - valid) * SEESAW_V_BLOCKS * 8;
            let mut u = self.t;
            while u < units {
                let row = valid + u / (SEESAW_V_BLOCKS * 8);
                let blk = (u / 8) % SEESAW_V_BLOCKS;
                smem::st_v4(v + blk * BLOCK_BYTES + row * 128 + (u % 8) * 16, [0; 4]);
                u += 128;
            }
            fence::proxy_async_shared();
            barrier::sync_named(NamedBarrier::ConsumerGroup0 as u32 + self.wg, 128);
        }
    }

    /// The online-softmax step of tile `tile` on this warpgroup's S: keys past a row's
    /// limit masked, row maxima (the 4 lanes of a row), the running max raised from
    /// `m_old` only where the tile passes it by more than `SOFTMAX_SLACK` (P ≤ 2^8, as in
    /// the transposed kernel), S turned into P = 2^(s·scale·log2e − m), and a vote of the
    /// warp on whether any of its rows' max moved: after a piece's first tiles it rarely
    /// does, and O's rescale by factors of 1 is then skipped. Row by row, with the vote
    /// after the exponentials: as `tile_max` + `softmax_max` + `exp_chunk` (both rows'
    /// maxima and the vote first) it measured 1-3 % slower (H200, thirty-eighth session).
    fn softmax(&self, st: &mut Scores, pc: &Piece, tile: u32, m_old: [f32; 2]) -> SoftmaxStep {
        self.mask(st, pc, tile);
        let mut out = SoftmaxStep::default();
        for h in 0..2 {
            let (m_new, m_use) = running_max(self.row_tile_max(st, h), m_old[h]);
            let mut sum = 0.0;
            for j in 0..8 {
                for e in 0..2 {
                    let i = 4 * j + 2 * h + e;
                    st[i] = math::exp2(math::fma(st[i], self.scale_log2, -m_use));
                    sum += st[i];
                }
            }
            out.m[h] = m_new;
            out.scale[h] = row_scale(m_new, m_use, m_old[h]);
            out.sum[h] = sum;
        }
        out.moved = warp::any(out.scale[0] != 1.0 || out.scale[1] != 1.0);
        out
    }

    /// The masking and each row's max over tile `tile` (scaled to base 2): the part of
    /// `softmax` that needs no running max, so that warpgroup 1 runs it before it waits
    /// for warpgroup 0's.
    fn tile_max(&self, st: &mut Scores, pc: &Piece, tile: u32) -> [f32; 2] {
        self.mask(st, pc, tile);
        [self.row_tile_max(st, 0), self.row_tile_max(st, 1)]
    }

    /// `softmax` from the tile's row maxima `mx` up to the exponent: the new running max,
    /// the factors and the vote (the sums left 0), and each row's offset for `exp_chunk`,
    /// so that the caller can publish the factors and start P·V while P is still being
    /// computed.
    fn softmax_max(&self, mx: [f32; 2], m_old: [f32; 2]) -> (SoftmaxStep, [f32; 2]) {
        let mut out = SoftmaxStep::default();
        let mut m_use = [0.0; 2];
        for h in 0..2 {
            let (m_new, m_row) = running_max(mx[h], m_old[h]);
            m_use[h] = m_row;
            out.m[h] = m_new;
            out.scale[h] = row_scale(m_new, m_row, m_old[h]);
        }
        out.moved = warp::any(out.scale[0] != 1.0 || out.scale[1] != 1.0);
        (out, m_use)
    }

    /// The rest of `softmax` for the 16 tokens of k16 step `kk` (A-fragment pairs
    /// `a_fragment_pair(kk, ..)`): S → P there, this thread's part of the rows' sums added
    /// to `sum`.
    fn exp_chunk(&self, st: &mut Scores, kk: usize, m_use: [f32; 2], sum: &mut [f32; 2]) {
        for i in 8 * kk..8 * kk + 8 {
            let h = (i / 2) % 2;
            st[i] = math::exp2(math::fma(st[i], self.scale_log2, -m_use[h]));
            sum[h] += st[i];
        }
    }

    /// Keys of tile `tile` past a row's limit set to −∞ (only on tiles that reach past the
    /// first row's limit).
    fn mask(&self, st: &mut Scores, pc: &Piece, tile: u32) {
        let tok0 = (pc.first + tile) * PAGE_SIZE;
        if (tok0 + TILE_TOKENS) as i32 > pc.first_limit + 1 {
            for (i, x) in st.iter_mut().enumerate() {
                let (h, col) = ((i / 2) % 2, acc_coord(self.t, i as u32).1);
                if (tok0 + col) as i32 > pc.lim[h] {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
    }

    /// Row `h`'s max over the tile (the 4 lanes of a row), scaled to base 2.
    fn row_tile_max(&self, st: &Scores, h: usize) -> f32 {
        let mut mx = f32::NEG_INFINITY;
        for j in 0..8 {
            mx = mx.max(st[4 * j + 2 * h]).max(st[4 * j + 2 * h + 1]);
        }
        mx = mx.max(warp::shfl_xor(mx, 1));
        mx = mx.max(warp::shfl_xor(mx, 2));
        mx * self.scale_log2
    }

    /// Loads a per-row f32 of this thread's two rows.
    unsafe fn rows_f32(&self, at: impl Fn(u32) -> u32) -> [f32; 2] {
        [
            smem::ld_f32(at(self.rows[0])),
            smem::ld_f32(at(self.rows[1])),
        ]
    }

    /// Publishes the running max, this warpgroup's rescale factor of its rows and whether
    /// any of them moved.
    unsafe fn publish(&self, step: &SoftmaxStep) {
        // The four lanes of a row read the old max before any of them overwrites it; the
        // shuffles between do not order shared memory (racecheck's warp-level WAR).
        warp::sync();
        // The four lanes of a row hold the same values and all store them (and every
        // thread the same flag): no branch on the lane ahead of the wgmma (see
        // `tma::load_3d_hint_if`).
        for h in 0..2 {
            smem::st_f32(self.m_at(self.rows[h]), step.m[h]);
            smem::st_f32(self.scale_at(self.wg, self.rows[h]), step.scale[h]);
        }
        smem::st_u32(self.moved_at(self.wg), step.moved as u32);
    }
}

/// The new running max of a row whose tile max is `mx` (raised from `m_old` only past
/// `SOFTMAX_SLACK`) and the offset P is taken against.
#[inline(always)]
fn running_max(mx: f32, m_old: f32) -> (f32, f32) {
    let m_new = if mx > m_old + SOFTMAX_SLACK {
        mx
    } else {
        m_old
    };
    // A row that has seen no key yet keeps max -inf: use 0 as its offset.
    let m_use = if m_new == f32::NEG_INFINITY {
        0.0
    } else {
        m_new
    };
    (m_new, m_use)
}

/// The factor that rescales a row accumulated against `m_old` once its max is `m_new`
/// (offset `m_use`): exactly 1 where the max did not move.
#[inline(always)]
fn row_scale(m_new: f32, m_use: f32, m_old: f32) -> f32 {
    if m_new == m_old {
        1.0
    } else {
        math::exp2(m_old - m_use)
    }
}

/// What a softmax step returns for this thread's two rows.
#[derive(Default)]
struct SoftmaxStep {
    /// The new running max (base-2 scaled).
    m: [f32; 2],
    /// The factor that rescales what was accumulated against the old max.
    scale: [f32; 2],
    /// This thread's part of the row sums of P.
    sum: [f32; 2],
    /// Whether any of the warp's rows moved its max (the same in all its lanes).
    moved: bool,
}

/// P (f32, in place of S) times a per-row factor, rounded to `T` as the A fragment; with
/// `SPLIT_P` also the rounding remainder, rounded to `T` (P ≈ hi + lo).
#[inline(always)]
fn pack_p<T: Element, const SPLIT_P: bool>(st: &Scores, scale: [f32; 2]) -> [PFragment; 2] {
    let pair = |kk: usize, m: usize| a_fragment_pair(kk as u32, m as u32) as usize;
    let x = |kk: usize, m: usize, e: usize| st[pair(kk, m) + e] * scale[m % 2];
    let hi: PFragment = core::array::from_fn(|kk| pack_step::<T>(st, kk, scale));
    let lo: PFragment = core::array::from_fn(|kk| {
        core::array::from_fn(|m| {
            if !SPLIT_P {
                return 0;
            }
            let h = hi[kk][m];
            T::pack2(
                x(kk, m, 0) - T::to_f32(h as u16),
                x(kk, m, 1) - T::to_f32((h >> 16) as u16),
            )
        })
    });
    [hi, lo]
}

/// k16 step `kk` of P scaled by the rows' `scale`, packed as the wgmma A fragment (P
/// rounded once: `pack_p`'s high half).
#[inline(always)]
fn pack_step<T: Element>(st: &Scores, kk: usize, scale: [f32; 2]) -> [u32; 4] {
    core::array::from_fn(|m| {
        let i = a_fragment_pair(kk as u32, m as u32) as usize;
        T::pack2(st[i] * scale[m % 2], st[i + 1] * scale[m % 2])
    })
}

/// Stores a P fragment row-major (row = query row, 64 tokens, swizzled) at `buf`: the
/// K-major A operand of the other warpgroup's O += P·V.
#[inline(always)]
unsafe fn store_fragment(p: &PFragment, buf: u32, t: u32) {
    for (kk, regs) in p.iter().enumerate() {
        store_fragment_step(regs, kk as u32, buf, t);
    }
}

/// Stores k16 step `kk` of a P fragment (see `store_fragment`).
#[inline(always)]
unsafe fn store_fragment_step(regs: &[u32; 4], kk: u32, buf: u32, t: u32) {
    let (row, col) = p_rows_store_coord(t, kk);
    stmatrix::store_x4(buf + swizzled_offset(row, col), *regs);
}

/// O rows scaled by this thread's two row factors, where a max moved: `moved` is uniform
/// over the warp (a vote or a published flag), so the branch around the 128 multiplies is
/// too.
#[inline(always)]
fn rescale(o: &mut OutHalf, f: [f32; 2], moved: bool) {
    if moved {
        for (i, v) in o.iter_mut().enumerate() {
            *v *= f[(i / 2) % 2];
        }
    }
}

/// Issues S (+)= Q·Kᵀ over the column blocks `blocks` (bit c = block c) of stage `stage` (A = Q,
/// B = K, both K-major), each as soon as its mbarrier completes phase `phase`, so the
/// products follow the blocks in; `zero` starts S afresh.
#[inline(always)]
unsafe fn issue_s<T: Element>(
    c: &Cta,
    st: &mut Scores,
    stage: u32,
    blocks: u32,
    phase: u32,
    zero: bool,
) {
    let q_desc = opaque(smem_desc(c.base + c.lay.q, Major::K, 0));
    let k_desc = opaque(smem_desc(c.stage(stage), Major::K, 0));
    let mut accumulate = !zero;
    for blk in 0..K_BLOCKS {
        if blocks & (1 << blk) != 0 {
            mbarrier::wait_warp(c.bar(stage, blk), phase);
            wgmma::fence();
            for k in 0..COL_BLOCK / 16 {
                let off = blk * BLOCK_BYTES + k * K_STEP_BYTES;
                T::mma::<N64>(st, desc_add(q_desc, off), desc_add(k_desc, off), accumulate);
                accumulate = true;
            }
        }
    }
}

/// Fences and issues O += P·V over this warpgroup's V blocks at `v` (B, MN-major), with P
/// from registers (`p[1]`, the low half, too with `SPLIT_P`).
#[inline(always)]
unsafe fn issue_pv_own<T: Element, const SPLIT_P: bool>(
    o: &mut OutHalf,
    p: &[PFragment; 2],
    v: u32,
) {
    let v_desc = opaque(smem_desc(v, Major::MN, BLOCK_BYTES));
    wgmma::fence();
    for kk in 0..PV_STEPS as usize {
        let vk = desc_add(v_desc, kk as u32 * MN_STEP_BYTES);
        T::mma_rs_tb::<N256>(o, p[0][kk], vk, true);
        if SPLIT_P {
            T::mma_rs_tb::<N256>(o, p[1][kk], vk, true);
        }
    }
}

/// Fences and issues O += P·V with P from shared memory at `p` (A, K-major), and its low
/// half at `p_lo` with `SPLIT_P`.
#[inline(always)]
unsafe fn issue_pv_other<T: Element, const SPLIT_P: bool>(
    o: &mut OutHalf,
    p: u32,
    p_lo: u32,
    v: u32,
) {
    let p_desc = opaque(smem_desc(p, Major::K, 0));
    let lo_desc = opaque(smem_desc(p_lo, Major::K, 0));
    let v_desc = opaque(smem_desc(v, Major::MN, BLOCK_BYTES));
    wgmma::fence();
    for kk in 0..PV_STEPS {
        let vk = desc_add(v_desc, kk * MN_STEP_BYTES);
        T::mma_tb::<N256>(o, desc_add(p_desc, kk * K_STEP_BYTES), vk, true);
        if SPLIT_P {
            T::mma_tb::<N256>(o, desc_add(lo_desc, kk * K_STEP_BYTES), vk, true);
        }
    }
}

/// A consumer warpgroup's state over a piece.
struct State {
    o: OutHalf,
    st: Scores,
    /// This thread's part of its two rows' sums of P (of this warpgroup's tiles).
    l: [f32; 2],
    /// Parity of the next load of this warpgroup's stage.
    phase: u32,
}

impl State {
    /// Softmax of this warpgroup's S (tile `tile` of the piece) against the running max,
    /// the new max and factor published for the other warpgroup, and O and the row sums
    /// rescaled: warpgroup 0's first step of a pair.
    #[inline(always)]
    unsafe fn softmax_rescaled(&mut self, c: &Cta, pc: &Piece, tile: u32) {
        let m_old = c.rows_f32(|row| c.m_at(row));
        let step = c.softmax(&mut self.st, pc, tile, m_old);
        c.publish(&step);
        rescale(&mut self.o, step.scale, step.moved);
        for h in 0..2 {
            self.l[h] = self.l[h] * step.scale[h] + step.sum[h];
        }
    }

    /// O and the row sums rescaled by this thread's two row factors (O only if `moved`).
    #[inline(always)]
    fn rescale(&mut self, f: [f32; 2], moved: bool) {
        rescale(&mut self.o, f, moved);
        for h in 0..2 {
            self.l[h] *= f[h];
        }
    }

    /// Issues S of the next tile of stage `STAGE` (this warpgroup's) in two commit groups:
    /// the half this warpgroup loads itself, then the other's; `between` runs after the
    /// first. The stage's next load phase is then due.
    #[inline(always)]
    unsafe fn issue_next_s<T: Element, const SPLIT_P: bool, const STAGE: u32>(
        &mut self,
        c: &Cta,
        between: impl FnOnce(),
    ) {
        let (own, other) = (
            seesaw_half_blocks(STAGE, STAGE, SPLIT_P),
            seesaw_half_blocks(STAGE, 1 - STAGE, SPLIT_P),
        );
        issue_s::<T>(c, &mut self.st, STAGE, own, self.phase, true);
        wgmma::commit();
        between();
        issue_s::<T>(c, &mut self.st, STAGE, other, self.phase, false);
        wgmma::commit();
        self.phase ^= 1;
    }
}

/// Consumer warpgroup: for each request piece of the partition, the attention of the CTA's
/// 64 query rows over the piece's pages, then this warpgroup's 256 dims of the output.
#[inline(always)]
unsafe fn consume<
    T: Element,
    const SPLIT_P: bool,
    const PA_FIRST: bool,
    const F16_PARTIALS: bool,
>(
    c: &Cta,
    part: &PartWork,
) {
    let a = c.a;
    let consumers = NamedBarrier::Consumers as u32;
    let rows_total = a.s_q * c.heads_per_kv;
    let causal = a.flags & FLAG_CAUSAL != 0;
    let q_smem = c.base + c.lay.q;
    let mut s = State {
        o: N256::zero(),
        st: N64::zero(),
        l: [0.0; 2],
        phase: 0,
    };
    for pos in part.begin_req..=part.end_req {
        let r = a.request(pos);
        // The page ids of the piece's first two tiles do not depend on the length: they
        // load alongside it (ids past the piece's end lie in the row and go unused).
        let pages = a.block_table.add((r as u32 * a.max_pages) as usize);
        let Lead {
            seqlen,
            ids: first_ids,
        } = Lead::of(a, part, pos, c.base + c.lay.lead);
        let split_begin = *a.split_offsets.add(r as usize);
        let split_end = *a.split_offsets.add(r as usize + 1);
        let misfit = c.wg == 0 && c.t == 0 && !length_fits(seqlen, a.max_pages);
        atomic::min_i32_if(misfit, a.errors.add(ERROR_LENGTH), r);
        // A device length the plan's pieces cannot cover is reported: for an empty piece
        // here, else once its first loads are issued, off their path.
        let report_stale = || {
            let (split_idx, splits) = (c.split_index(part, pos), split_end - split_begin);
            let stale = contradicts_plan(part, pos, seqlen, a.max_pages, split_idx, splits);
            atomic::min_i32_if(c.wg == 0 && c.t == 0 && stale, a.errors.add(ERROR_PLAN), r);
        };
        let (first, last) = clamped_piece(part, pos, seqlen, a.max_pages);
        if first >= last {
            // A request with no pages inside the range: the combine writes its result.
            report_stale();
            continue;
        }
        // Last visible key of a CTA row: the length, or its query's causal limit.
        let limit_of = |row: u32| {
            let causal_limit = seqlen - a.s_q as i32 + ((c.row0 + row) / c.heads_per_kv) as i32;
            if causal {
                causal_limit.min(seqlen - 1)
            } else {
                seqlen - 1
            }
        };
        let pc = Piece {
            r,
            seqlen,
            first,
            n: last - first,
            pages,
            first_limit: if causal {
                seqlen - a.s_q as i32
            } else {
                seqlen - 1
            },
            lim: [limit_of(c.rows[0]), limit_of(c.rows[1])],
        };
        // The last piece is done with every buffer (both warpgroups waited on their wgmma,
        // and its bulk stores, if any, have read their staging in Q's shared memory).
        if F16_PARTIALS {
            tma::wait_group_read_all();
        }
        barrier::sync_named(consumers, 256);
        // Q rows → swizzled shared memory (zeros past the last row), then the first two
        // tiles' TMA loads, and the running max. Q goes first: every S needs all of Q, and
        // loads land about in issue order; behind the tiles' 144 KB (and the first warp's 18
        // TMA issues) Q landed 2.6 µs later (H200, twentieth session in PERFORMANCE.md).
        let ct = c.wg * 128 + c.t;
        load_swizzled(
            SEESAW_ROWS,
            K_BLOCKS,
            q_smem,
            SEESAW_ROWS * 128,
            ct,
            256,
            |rr| {
                (c.row0 + rr < rows_total).then(|| {
                    let (sq, h) = c.query_of(rr);
                    a.q.add((((r as u32 * a.s_q + sq) * a.h_q + h) * D_QK) as usize)
                })
            },
        );
        if c.wg == 0 {
            for (tile, &id) in first_ids.iter().enumerate() {
                let tile = tile as u32;
                if tile < pc.n {
                    c.load_half::<SPLIT_P>(&pc, tile, 0, id);
                    c.load_half::<SPLIT_P>(&pc, tile, 1, id);
                }
            }
        }
        if ct < SEESAW_ROWS {
            smem::st_f32(c.m_at(ct), f32::NEG_INFINITY);
        }
        report_stale();
        cp_async::wait_all();
        fence::proxy_async_shared();
        barrier::sync_named(consumers, 256);

        s.o = N256::zero();
        s.l = [0.0; 2];
        // S of the piece's first tile of each warpgroup.
        if c.wg < pc.n {
            issue_s::<T>(c, &mut s.st, c.wg, (1 << K_BLOCKS) - 1, s.phase, true);
            wgmma::commit();
            wgmma::wait_all();
            s.phase ^= 1;
        }

        // Pairs of tiles: all four of a, b, a+2, b+2 in the loop, then the tail.
        let mut tile = 0;
        if c.wg == 0 {
            while tile + 3 < pc.n {
                pair_wg0::<T, SPLIT_P, PA_FIRST, true, true, true>(c, &pc, tile, &mut s);
                tile += 2;
            }
            match pc.n - tile {
                3 => {
                    pair_wg0::<T, SPLIT_P, PA_FIRST, true, true, false>(c, &pc, tile, &mut s);
                    pair_wg0::<T, SPLIT_P, PA_FIRST, false, false, false>(c, &pc, tile + 2, &mut s);
                }
                2 => pair_wg0::<T, SPLIT_P, PA_FIRST, true, false, false>(c, &pc, tile, &mut s),
                _ => pair_wg0::<T, SPLIT_P, PA_FIRST, false, false, false>(c, &pc, tile, &mut s),
            }
        } else {
            while tile + 3 < pc.n {
                pair_wg1::<T, SPLIT_P, PA_FIRST, true, true, true>(c, &pc, tile, &mut s);
                tile += 2;
            }
            match pc.n - tile {
                3 => {
                    pair_wg1::<T, SPLIT_P, PA_FIRST, true, true, false>(c, &pc, tile, &mut s);
                    pair_wg1::<T, SPLIT_P, PA_FIRST, false, false, false>(c, &pc, tile + 2, &mut s);
                }
                2 => pair_wg1::<T, SPLIT_P, PA_FIRST, true, false, false>(c, &pc, tile, &mut s),
                _ => pair_wg1::<T, SPLIT_P, PA_FIRST, false, false, false>(c, &pc, tile, &mut s),
            }
        }

        // Row sums: the 4 lanes of a row, then both warpgroups'.
        for h in 0..2 {
            let sum = s.l[h] + warp::shfl_xor(s.l[h], 1);
            s.l[h] = sum + warp::shfl_xor(sum, 2);
        }
        for h in 0..2 {
            smem::st_f32(c.l_at(c.wg, c.rows[h]), s.l[h]);
        }
        barrier::sync_named(consumers, 256);
        let l = [
            smem::ld_f32(c.l_at(0, c.rows[0])) + smem::ld_f32(c.l_at(1, c.rows[0])),
            smem::ld_f32(c.l_at(0, c.rows[1])) + smem::ld_f32(c.l_at(1, c.rows[1])),
        ];
        let m = c.rows_f32(|row| c.m_at(row));
        let split_idx = c.split_index(part, pos);
        let (splits, slot) = (split_end - split_begin, (split_begin + split_idx) as u32);
        if F16_PARTIALS && splits > 1 && a.flags & FLAG_BULK_PARTIALS != 0 {
            store_partials_in_bulk(c, &s.o, m, l, slot, rows_total);
        } else {
            store_output::<T, F16_PARTIALS>(c, &s.o, m, l, r as u32, splits, slot, rows_total);
        }
    }
    // The CTA's shared memory must outlive the reads of its last bulk stores.
    if F16_PARTIALS {
        tma::wait_group_read_all();
    }
}

/// Warpgroup 0's part of a pair, in the P_a-first order or FlashMLA's.
#[inline(always)]
unsafe fn pair_wg0<
    T: Element,
    const SPLIT_P: bool,
    const PA_FIRST: bool,
    const B: bool,
    const A2: bool,
    const B2: bool,
>(
    c: &Cta,
    pc: &Piece,
    ta: u32,
    s: &mut State,
) {
    if PA_FIRST {
        pa_first_pair_wg0::<T, SPLIT_P, B, A2, B2>(c, pc, ta, s)
    } else {
        softmax_first_pair_wg0::<T, B, A2, B2>(c, pc, ta, s)
    }
}

/// Warpgroup 1's part of a pair, in the P_a-first order or FlashMLA's.
#[inline(always)]
unsafe fn pair_wg1<
    T: Element,
    const SPLIT_P: bool,
    const PA_FIRST: bool,
    const B: bool,
    const A2: bool,
    const B2: bool,
>(
    c: &Cta,
    pc: &Piece,
    ta: u32,
    s: &mut State,
) {
    if PA_FIRST {
        pa_first_pair_wg1::<T, SPLIT_P, B, A2, B2>(c, pc, ta, s)
    } else {
        softmax_first_pair_wg1::<T, B, A2, B2>(c, pc, ta, s)
    }
}

/// Warpgroup 0's part of a pair in the P_a-first order of the module docs: tile a = `ta`,
/// and b = `ta + 1` if `B`; `A2` / `B2`: tiles a + 2 / a + 3 exist. On entry S_a is in
/// `s.st`; on exit S_{a+2} (if `A2`). With `SPLIT_P` one buffer holds either warpgroup's
/// low half in turn (warpgroup 1 has read P_a before it stores P_b); with P rounded once
/// P_b takes the spare buffer (`Cta::pb_buf`).
#[inline(always)]
unsafe fn pa_first_pair_wg0<
    T: Element,
    const SPLIT_P: bool,
    const B: bool,
    const A2: bool,
    const B2: bool,
>(
    c: &Cta,
    pc: &Piece,
    ta: u32,
    s: &mut State,
) {
    let id_a2 = if A2 { c.page_id(pc, ta + 2) } else { 0 };
    let id_b2 = if B2 { c.page_id(pc, ta + 3) } else { 0 };
    // Softmax of S_a against the running max; P_a to shared memory for warpgroup 1.
    s.softmax_rescaled(c, pc, ta);
    let p = pack_p::<T, SPLIT_P>(&s.st, [1.0; 2]);
    c.store_p::<SPLIT_P>(&p, c.p_buf(0));
    barrier::arrive_named(NamedBarrier::ScaleA as u32, 256);

    // O_L = O_L·scale_a + P_a·V_aL.
    if !B {
        c.zero_tail_v(pc, ta);
    }
    issue_pv_own::<T, SPLIT_P>(&mut s.o, &p, c.v_half(0));
    wgmma::commit();

    // O_L = O_L·scale_b + P_b·V_bL, once warpgroup 1 has P_b out.
    if B {
        // Stage 0's V_L is done with once P_a·V_aL has run: it takes tile a+2 (issued
        // while warpgroup 1's softmax of S_b runs).
        wgmma::wait::<0>();
        if A2 {
            c.load_half::<SPLIT_P>(pc, 0, 0, id_a2);
            // Stage 0's V_R half too, once warpgroup 1 reports P_a·V_aR retired: idle until
            // P_b is out, warpgroup 0 issues it ~1.3 K cycles sooner than warpgroup 1 could,
            // and off warpgroup 1's path to P_b.
            barrier::sync_named(NamedBarrier::VaRFree as u32, 256);
            c.load_half::<SPLIT_P>(pc, 0, 1, id_a2);
        }
        barrier::sync_named(NamedBarrier::ScaleB as u32, 256);
        let scale_b = c.rows_f32(|row| c.scale_at(1, row));
        if !A2 {
            c.zero_tail_v(pc, ta + 1);
        }
        s.rescale(scale_b, c.moved(1));
        issue_pv_other::<T, SPLIT_P>(&mut s.o, c.pb_buf::<SPLIT_P>(), c.p_lo_buf(), c.v_half(1));
        wgmma::commit();
    }

    // S_{a+2}: the V_L half (loaded above) first, then the half warpgroup 1 loads.
    if A2 {
        s.issue_next_s::<T, SPLIT_P, 0>(c, || {
            if B2 {
                // O_L += P_b·V_bL is done: stage 1's V_L and P_b may take tile b+2.
                wgmma::wait::<1>();
                c.load_half::<SPLIT_P>(pc, 1, 0, id_b2);
            }
        });
    }
    wgmma::wait_all();
}

/// Warpgroup 1's part of a pair (see `pa_first_pair_wg0`). On entry S_b is in `s.st` (if
/// `B`); on exit S_{b+2} (if `B2`).
#[inline(always)]
unsafe fn pa_first_pair_wg1<
    T: Element,
    const SPLIT_P: bool,
    const B: bool,
    const A2: bool,
    const B2: bool,
>(
    c: &Cta,
    pc: &Piece,
    ta: u32,
    s: &mut State,
) {
    let id_b2 = if B2 { c.page_id(pc, ta + 3) } else { 0 };
    // O_R = O_R·scale_a + P_a·V_aR, with P_a from warpgroup 0.
    barrier::sync_named(NamedBarrier::ScaleA as u32, 256);
    let scale_a = c.rows_f32(|row| c.scale_at(0, row));
    s.rescale(scale_a, c.moved(0));
    if !B {
        c.zero_tail_v(pc, ta);
    }
    issue_pv_other::<T, SPLIT_P>(&mut s.o, c.p_buf(0), c.p_lo_buf(), c.v_half(0));
    wgmma::commit();

    if B {
        // Softmax of S_b (against warpgroup 0's max of S_a) while that runs.
        let m_old = c.rows_f32(|row| c.m_at(row));
        let step_b = c.softmax(&mut s.st, pc, ta + 1, m_old);
        c.publish(&step_b);
        for h in 0..2 {
            s.l[h] = s.l[h] * step_b.scale[h] + step_b.sum[h];
        }
        let p = pack_p::<T, SPLIT_P>(&s.st, [1.0; 2]);
        // P_a·V_aR is done: O_R may be rescaled, and with a split P, P_a's buffers take
        // P_b (for warpgroup 0, waiting for it).
        wgmma::wait::<0>();
        if A2 {
            // Stage 0's V_R half is free: warpgroup 0 reloads it with tile a+2.
            barrier::arrive_named(NamedBarrier::VaRFree as u32, 256);
        }
        c.store_p::<SPLIT_P>(&p, c.pb_buf::<SPLIT_P>());
        barrier::arrive_named(NamedBarrier::ScaleB as u32, 256);

        // O_R = O_R·scale_b + P_b·V_bR.
        rescale(&mut s.o, step_b.scale, step_b.moved);
        if !A2 {
            c.zero_tail_v(pc, ta + 1);
        }
        issue_pv_own::<T, SPLIT_P>(&mut s.o, &p, c.v_half(1));
        wgmma::commit();

        // Stage 1's V_R is done with once that has run: it takes tile b+2; then S_{b+2}.
        if B2 {
            wgmma::wait::<0>();
            c.load_half::<SPLIT_P>(pc, 1, 1, id_b2);
            s.issue_next_s::<T, SPLIT_P, 1>(c, || {});
        }
    }
    wgmma::wait_all();
}

/// Warpgroup 0's part of a pair with P rounded once (tile a = `ta`, and b = `ta + 1` if
/// `B`; `A2` / `B2`: tiles a + 2 / a + 3 exist) in FlashMLA's order. Unlike the P_a-first
/// order, warpgroup 1 runs its softmax first and multiplies P_a after its own P_b, so
/// warpgroup 0 stores P_a scaled by s_b (rounded once from f32) and both halves of O see
/// the same factors. Stage 1's V_R is then free earlier, and S_{b+2} waits less for its
/// load (see the module docs for where the plan runs it).
#[inline(always)]
unsafe fn softmax_first_pair_wg0<T: Element, const B: bool, const A2: bool, const B2: bool>(
    c: &Cta,
    pc: &Piece,
    ta: u32,
    s: &mut State,
) {
    let id_a2 = if A2 { c.page_id(pc, ta + 2) } else { 0 };
    let id_b2 = if B2 { c.page_id(pc, ta + 3) } else { 0 };
    // Softmax of S_a against the running max.
    s.softmax_rescaled(c, pc, ta);
    let p = pack_p::<T, false>(&s.st, [1.0; 2]);
    barrier::arrive_named(NamedBarrier::ScaleA as u32, 256);

    // O_L += P_a·V_aL.
    if !B {
        c.zero_tail_v(pc, ta);
    }
    issue_pv_own::<T, false>(&mut s.o, &p, c.v_half(0));
    wgmma::commit();
    wgmma::wait_all();

    // Stage 0's V_L, read only by this warpgroup's P·V (done), takes tile a+2 (issued
    // while warpgroup 1's softmax of S_b runs); once that is done, P_a goes out, scaled by
    // its factor where that moved.
    if A2 {
        c.load_half::<false>(pc, 0, 0, id_a2);
    }
    barrier::sync_named(NamedBarrier::ScaleB as u32, 256);
    // Where no row of this warp moved its max with S_b (almost always), s_b is exactly 1
    // and P_a goes out as packed for P_a·V_aL (done): no rescale and repacking on the way
    // to warpgroup 1's P_a·V_aR (H200, 10 h_q 128 points: medians 0.991, fastest 0.9997).
    if B && c.moved(1) {
        let scale_b = c.rows_f32(|row| c.scale_at(1, row));
        c.store_p::<false>(&pack_p::<T, false>(&s.st, scale_b), c.p_buf(0));
    } else {
        c.store_p::<false>(&p, c.p_buf(0));
    }
    barrier::arrive_named(NamedBarrier::PaReady as u32, 256);

    // O_L = O_L·scale_b + P_b·V_bL.
    if B {
        barrier::sync_named(NamedBarrier::PbIssued as u32, 256);
        if !A2 {
            c.zero_tail_v(pc, ta + 1);
        }
        // s_b re-read: the loads keep these 128 multiplies after the barrier, where the
        // compiler would otherwise hoist them ahead of publishing P_a (H200: 1-3 % faster
        // at h_q 128 from 16K).
        s.rescale(c.rows_f32(|row| c.scale_at(1, row)), c.moved(1));
        issue_pv_other::<T, false>(&mut s.o, c.p_lo_buf(), c.p_lo_buf(), c.v_half(1));
        wgmma::commit();
    }

    // S_{a+2}: the V_L half (loaded above) first, then the half warpgroup 1 loads.
    if A2 {
        s.issue_next_s::<T, false, 0>(c, || {
            if B2 {
                // O_L += P_b·V_bL is done: stage 1's V_L may take tile b+2.
                wgmma::wait::<1>();
                c.load_half::<false>(pc, 1, 0, id_b2);
            }
        });
    }
    wgmma::wait_all();
}

/// Warpgroup 1's part of a pair with P rounded once (see `softmax_first_pair_wg0`).
#[inline(always)]
unsafe fn softmax_first_pair_wg1<T: Element, const B: bool, const A2: bool, const B2: bool>(
    c: &Cta,
    pc: &Piece,
    ta: u32,
    s: &mut State,
) {
    let id_a2 = if A2 { c.page_id(pc, ta + 2) } else { 0 };
    let id_b2 = if B2 { c.page_id(pc, ta + 3) } else { 0 };
    // Softmax of S_b against warpgroup 0's max of S_a: S_b's own row maxima first, while
    // warpgroup 0's softmax runs, so that only the running max is left after ScaleA
    // (H200, 11 Fast points at h_q 64/128, with the moved flag read early: medians 0.994,
    // fastest replays 0.998; the P_a-first order did not gain from it: `docs/PERFORMANCE.md`).
    let mx_b = if B {
        c.tile_max(&mut s.st, pc, ta + 1)
    } else {
        [0.0; 2]
    };
    barrier::sync_named(NamedBarrier::ScaleA as u32, 256);
    let scale_a = c.rows_f32(|row| c.scale_at(0, row));
    // Warpgroup 0 publishes its next flag only after ScaleB: read before arriving, with
    // the other loads that follow ScaleA.
    let moved_a = c.moved(0);
    if B {
        let m_old = c.rows_f32(|row| c.m_at(row));
        let (step_b, m_use) = c.softmax_max(mx_b, m_old);
        c.publish(&step_b);
        let moved = moved_a || step_b.moved;
        // Warpgroup 0 waits at ScaleB to scale P_a, the start of the chain to P_a·V_aR
        // and stage 0's V_R reload: arrive as soon as s_b is out, ahead of this
        // warpgroup's own rescale and packing (H200: h_q 128 from 8K about 1 % faster).
        barrier::arrive_named(NamedBarrier::ScaleB as u32, 256);
        let f = [scale_a[0] * step_b.scale[0], scale_a[1] * step_b.scale[1]];
        rescale(&mut s.o, f, moved);
        if !A2 {
            c.zero_tail_v(pc, ta + 1);
        }
        // O_R += P_b·V_bR in chunks of k16 steps, each as soon as its tokens of P_b are out
        // of the exponent (a fence before each: its A registers were just written), so
        // the tensor cores start under this softmax, where in FlashMLA's order only
        // P_a·V_aL runs (H200, 10 h_q 128 points and an h_q 64 one: one step a chunk
        // medians 0.981, fastest replays 0.997; two steps, against one, medians 0.988 on
        // two cards; 16 bytes spilled).
        const CHUNK: usize = PB_CHUNK_STEPS as usize;
        let v_desc = opaque(smem_desc(c.v_half(1), Major::MN, BLOCK_BYTES));
        let mut sum = [0.0; 2];
        for chunk in 0..PV_STEPS as usize / CHUNK {
            let mut pk = [[0u32; 4]; CHUNK];
            for (j, pkj) in pk.iter_mut().enumerate() {
                let kk = CHUNK * chunk + j;
                c.exp_chunk(&mut s.st, kk, m_use, &mut sum);
                *pkj = pack_step::<T>(&s.st, kk, [1.0; 2]);
                // This step of P_b → shared memory for warpgroup 0, before its wgmma: the
                // A registers of a wgmma in flight must not be accessed, not even read.
                store_fragment_step(pkj, kk as u32, c.p_lo_buf(), c.t);
            }
            wgmma::fence();
            for (j, pkj) in pk.iter().enumerate() {
                let vk = desc_add(v_desc, (CHUNK * chunk + j) as u32 * MN_STEP_BYTES);
                T::mma_rs_tb::<N256>(&mut s.o, *pkj, vk, true);
            }
        }
        wgmma::commit();
        fence::proxy_async_shared();
        for h in 0..2 {
            s.l[h] = s.l[h] * f[h] + sum[h];
        }
    } else {
        s.rescale(scale_a, moved_a);
        barrier::arrive_named(NamedBarrier::ScaleB as u32, 256);
    }

    // O_R += P_a·V_aR, with P_a from warpgroup 0 (already scaled by scale_b).
    barrier::sync_named(NamedBarrier::PaReady as u32, 256);
    if !B {
        c.zero_tail_v(pc, ta);
    }
    issue_pv_other::<T, false>(&mut s.o, c.p_buf(0), c.p_lo_buf(), c.v_half(0));
    wgmma::commit();
    if B {
        barrier::arrive_named(NamedBarrier::PbIssued as u32, 256);
    }

    // Reload the halves this warpgroup read last, each as soon as its products retire:
    // tile b+2's once P_b·V_bR is done (tile a+3 implies b: it is the older group in
    // flight), then tile a+2's; then S_{b+2}, which waited ~1,100 cycles a pair for its own
    // half when it went out second (H200, thirty-fourth session: h_q 128 from 8K 2-5 %
    // faster, h_q 64 from 4K 0.7-2 % slower; a run-time choice by row chunks kept the loss).
    if B2 {
        wgmma::wait::<1>();
        c.load_half::<false>(pc, 1, 1, id_b2);
    }
    if A2 {
        wgmma::wait::<0>();
        c.load_half::<false>(pc, 0, 1, id_a2);
    }
    if B2 {
        s.issue_next_s::<T, false, 1>(c, || {});
    }
    wgmma::wait_all();
}

/// Writes this warpgroup's 256 dims of the normalised O rows as a scaled f16 partial result
/// to slot `slot` (of `rows_total` rows), and from warpgroup 0 the rows' lse, by bulk
/// tensor stores (`FLAG_BULK_PARTIALS`: one KV head, so the CTA's rows are rows `row0..` of
/// the slot, and the map leaves out those past the request). The four 64 × 64 blocks go
/// into Q's shared memory (free once both warpgroups passed the piece's last barrier) by
/// `stmatrix`, as a P fragment does, then out as one bulk store a block issued by one
/// thread; the next piece, and the CTA's exit, wait for the stores to have read them.
/// Against `store_output`'s ~1,250 instructions a warp of shuffles and register stores,
/// H200: `Fast` h_q 64/128 points of few pages a partition 2-6 % faster (b 16, h_q 64, 2K
/// 20.6 → 19.4 µs), long ones level. f32 partial results staged the same way (in the KV
/// stages) measured from 6.7 % slower to 2.6 % faster: staging 128 KB a CTA through shared
/// memory costs about what their register stores do.
#[inline(always)]
unsafe fn store_partials_in_bulk(
    c: &Cta,
    o: &OutHalf,
    m: [f32; 2],
    l: [f32; 2],
    slot: u32,
    rows_total: u32,
) {
    let a = c.a;
    let mut inv = [0.0f32; 2];
    for h in 0..2 {
        let row = c.row0 + c.rows[h];
        let valid = row < rows_total;
        let slot_row = slot * rows_total + row;
        if c.wg == 0 && c.lane % 4 == 0 && valid {
            *a.lse_accum.add(slot_row as usize) = row_lse(m[h], l[h], false);
        }
        let (factor, k) = f16_partial_factors(o, h, l[h]);
        inv[h] = factor;
        global::st_f32_if(
            valid && c.lane % 4 == 0,
            a.o_accum as u64
                + (slot_row * PARTIAL_ROW_BYTES + PARTIAL_SCALES_BYTE) as u64
                + c.wg as u64 * F32_BYTES,
            pow2(k),
        );
    }
    let blocks = c.base + c.lay.q + c.wg * SEESAW_V_BLOCKS * BLOCK_BYTES;
    for b in 0..SEESAW_V_BLOCKS {
        // Dims 64b..64b+63 of the half: accumulator elements 32b.., laid out as an S tile's.
        let block: Scores = core::array::from_fn(|i| o[(32 * b) as usize + i]);
        let p: PFragment = core::array::from_fn(|kk| pack_step::<F16>(&block, kk, inv));
        store_fragment(&p, blocks + b * BLOCK_BYTES, c.t);
    }
    fence::proxy_async_shared();
    barrier::sync_named(NamedBarrier::ConsumerGroup0 as u32 + c.wg, 128);
    // The first block's address and dim through `opaque`: worked out here, rather than
    // hoisted out of the piece loop as a register a block and spilled through the pairs.
    let src = opaque(blocks as u64) as u32;
    let dim = opaque((c.wg * SEESAW_HALF_DV) as u64) as u32;
    for b in 0..SEESAW_V_BLOCKS {
        tma::store_3d_if(
            c.t == 0,
            a.o_accum_map,
            src + b * BLOCK_BYTES,
            (dim + b * COL_BLOCK) as i32,
            c.row0 as i32,
            slot as i32,
        );
    }
    tma::commit_group();
}

/// The factor that normalises and scales row `h` (of this thread's two) of an f16 partial
/// result, and the exponent k of the power of two its values are stored divided by: the
/// row's largest magnitude in this warpgroup's dims (over the row's 4 lanes) sets it.
#[inline(always)]
fn f16_partial_factors(o: &OutHalf, h: usize, l: f32) -> (f32, i32) {
    let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
    let mut top = [0.0f32; 2];
    for j in 0..(SEESAW_HALF_DV / 8) as usize {
        for (e, t) in top.iter_mut().enumerate() {
            *t = t.max(o[4 * j + 2 * h + e].abs());
        }
    }
    let top = top[0].max(top[1]);
    let top = top.max(warp::shfl_xor(top, 1));
    let top = top.max(warp::shfl_xor(top, 2));
    let k = f16_partial_scale_exp(top * inv);
    (inv * pow2(-k), k)
}

/// Writes this warpgroup's 256 dims of the normalised O rows and, from warpgroup 0, the
/// rows' lse: straight to `out`/`lse` when the request is not split, else to its partial
/// slot `slot` (as f16 with a scale per row and warpgroup if `F16_PARTIALS`). The
/// elements go out as guarded stores, without a branch (see `ptx::global`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn store_output<T: Element, const F16_PARTIALS: bool>(
    c: &Cta,
    o: &OutHalf,
    m: [f32; 2],
    l: [f32; 2],
    r: u32,
    splits: i32,
    slot: u32,
    rows_total: u32,
) {
    let a = c.a;
    let final_out = splits == 1;
    let rows_per_req = a.s_q * a.h_q;
    let OutputTarget {
        base,
        row_elems,
        elem_bytes,
        wide,
        f16_partial,
    } = OutputTarget::of(a, final_out, F16_PARTIALS);
    for h in 0..2 {
        let valid = c.row0 + c.rows[h] < rows_total;
        let (sq, hq) = c.query_of(c.rows[h]);
        let req_row = if final_out { r } else { slot } * rows_per_req + sq * a.h_q + hq;
        if c.wg == 0 && c.lane % 4 == 0 && valid {
            let lse = row_lse(m[h], l[h], final_out);
            if final_out {
                *a.lse.add(((r * a.h_q + hq) * a.s_q + sq) as usize) = lse;
            } else {
                *a.lse_accum.add(req_row as usize) = lse;
            }
        }
        let mut inv = if l[h] > 0.0 { 1.0 / l[h] } else { 0.0 };
        if f16_partial {
            let (factor, k) = f16_partial_factors(o, h, l[h]);
            inv = factor;
            let row_base = base + (req_row * row_elems) as u64 * elem_bytes;
            global::st_f32_if(
                valid && c.lane % 4 == 0,
                row_base + PARTIAL_SCALES_BYTE as u64 + c.wg as u64 * F32_BYTES,
                pow2(k),
            );
        }
        let pack = |x: f32, y: f32| {
            if f16_partial {
                F16::pack2(x, y)
            } else {
                T::pack2(x, y)
            }
        };
        // The row's 256 dims in spans of 16 (two 8-dim groups j, j+1 of the fragment), each
        // lane storing 4 contiguous elements (16 or 8 bytes) of a span: the four lanes of
        // the row swap element pairs in two shuffles, so that a warp's store covers 8 rows
        // × 64 or 32 bytes, half the lines per byte of storing each lane's own pairs
        // (those stores took 3.7 / 5.3 µs to issue at a piece boundary, H200 stamps).
        // In shuffle k lane s publishes group j's pair if s % 2 == k, else group j+1's;
        // lane q takes from the lanes holding span elements 4q..4q+3.
        let q = c.lane % 4;
        let group = c.lane - q;
        let src = [
            group + 2 * (q % 2) + (q / 2) % 2,
            group + 2 * (q % 2) + (1 + q / 2) % 2,
        ];
        let first = req_row * row_elems + c.wg * SEESAW_HALF_DV + 4 * q;
        let row_addr = base + first as u64 * elem_bytes;
        for m in 0..(SEESAW_HALF_DV / 16) as usize {
            let pair = |j: usize| [o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv];
            let (a, b) = (pair(2 * m), pair(2 * m + 1));
            let publish = [
                if q % 2 == 0 { a } else { b },
                if q % 2 == 1 { a } else { b },
            ];
            let got = [0, 1].map(|k| publish[k].map(|v| warp::shfl_idx(v, src[k])));
            let (x, y) = if q < 2 {
                (got[0], got[1])
            } else {
                (got[1], got[0])
            };
            let span = 16 * m as u64;
            global::st_v4_f32_if(
                valid && wide,
                row_addr + span * F32_BYTES,
                [x[0], x[1], y[0], y[1]],
            );
            global::st_v2_b32_if(
                valid && !wide,
                row_addr + span * B16_BYTES,
                [pack(x[0], x[1]), pack(y[0], y[1])],
            );
        }
    }
}
