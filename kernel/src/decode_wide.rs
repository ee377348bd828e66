//! The 64-row decode (`etap_decode_*_r64*`), for s_q·h_q/h_kv ≥ 33 query rows per KV head.
//! The rows fill a whole wgmma N of 64, so the consumer warpgroups share the work per tile
//! rather than per row: they take alternate KV tiles' Sᵀ = K·Qᵀ (all 64 rows) and softmax,
//! and both run Oᵀ += Vᵀ·Pᵀ of every tile, each over half of the V dims (N = 64 both
//! times). Each wgmma reads 2 KB of A for 2 KB of B, where two warpgroups of N = 32 over
//! all dims re-read the whole tile.
//!
//! Tile `it` belongs to warpgroup `it % 2`:
//! - owner: Sᵀ(it) → P = 2^(s·scale − m) against the running max after tile it−1 (shared
//!   memory; raised where the tile needs it, `crate::decode`'s softmax rule) → publishes the
//!   new max and Pᵀ(it), in the stage's RoPE block (Sᵀ(it) no longer reads it), and
//!   arrives on `PReady` → Oᵀ(it) over its dims;
//! - the other: waits on `PReady`, rescales its Oᵀ and sums if the max moved → Oᵀ(it) over
//!   its dims → issues Sᵀ(it+1), its own next tile, while the owner moves on.
//!
//! A split P (`Precision::Accurate`) adds a second k pass against P_lo, kept in one shared
//! buffer: the owner of a tile overwrites it once the other warpgroup's Oᵀ of the tile
//! before is complete (`PvDone`).
use crate::config::*;
use crate::decode::{
    column_slot, issue_pv, issue_qk, output_slot, stage_of, start_cta, store_output, store_p,
    valid_tokens, zero_v_rows, DecodeArgs, Stages,
};
use crate::element::Element;
use crate::layout::{acc_coord, p_store_coord, swizzled_offset};
use crate::plan::{clamped_piece, PartWork};
use crate::ptx::wgmma::{self, MmaShape, N64};
use crate::ptx::{barrier, cp_async, fence, ids, math, mbarrier, opaque_u32, regs, smem, warp};
use crate::tile::load_swizzled;

/// The accumulator shape of both GEMMs: the CTA's `WIDE_ROWS` query rows as N.
type Wide = N64;
/// Query columns a consumer thread owns in a `Wide` fragment (N/4).
const COLS: usize = WIDE_ROWS as usize / 4;
/// stmatrix calls per Pᵀ store: 4 blocks of 8×8 each.
const P_STORES: usize = COLS / 4;
/// Bytes of one warpgroup's reduction scratch (4 warps × `WIDE_ROWS` f32).
const RED_BYTES: u32 = 4 * WIDE_ROWS * 4;

/// The wide decode kernel body for element type `T`; `SPLIT_P` splits P into two 16-bit
/// terms.
#[inline(always)]
pub unsafe fn decode_wide<T: Element, const SPLIT_P: bool>(a: &DecodeArgs) {
    let lay = WideSmem::new(SPLIT_P);
    if let Some(w) = start_cta(a, lay.kv, lay.bars) {
        regs::claim_232();
        consume::<T, SPLIT_P>(a, &w.part, w.chunk, w.head, &lay, w.base, &w.stages);
    }
}

/// The offset a column's P is taken against: its running max, or 0 while it has seen no key.
#[inline(always)]
fn max_offset(m: f32) -> f32 {
    if m == f32::NEG_INFINITY {
        0.0
    } else {
        m
    }
}

/// Consumer warpgroup: for each request piece of the partition, Sᵀ and softmax of every
/// other tile, Oᵀ over its half of the dims for every tile, then its half of the output.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn consume<T: Element, const SPLIT_P: bool>(
    a: &DecodeArgs,
    part: &PartWork,
    chunk: u32,
    head: u32,
    lay: &WideSmem,
    base: u32,
    stages: &Stages,
) {
    let wg = warp::uniform(ids::warpgroup()) - 1;
    let t = ids::thread() % 128;
    let (warp_id, lane) = (t / 32, t % 32);
    let group_bar = NamedBarrier::ConsumerGroup0 as u32 + wg;
    let p_ready_mine = NamedBarrier::PReady0 as u32 + wg;
    let p_ready_other = NamedBarrier::PReady0 as u32 + 1 - wg;
    let pv_done_mine = NamedBarrier::PvDone0 as u32 + wg;
    let pv_done_other = NamedBarrier::PvDone0 as u32 + 1 - wg;
    let heads_per_kv = a.h_q / a.h_kv;
    let rows_total = a.s_q * heads_per_kv;
    let row0 = chunk * WIDE_ROWS;
    let q_smem = base + lay.q;
    let q_block_stride = WIDE_ROWS * 128;
    let red = base + lay.red;
    let p_lo = SPLIT_P.then_some(base + lay.p_lo);
    // This warpgroup's V blocks within a tile.
    let dims = wg * WIDE_V_BLOCKS * BLOCK_BYTES;
    let scale_log2 = a.softmax_scale * core::f32::consts::LOG2_E;
    let causal = a.flags & FLAG_CAUSAL != 0;
    let query_of = |row: u32| (row / heads_per_kv, head * heads_per_kv + row % heads_per_kv);
    // Byte offset of owned column slot c = 2j + e (column 8j + 2(lane%4) + e) in a row of
    // f32 per column: this lane's part `lb` = 8(lane%4) plus a constant.
    let col_bytes = |c: usize| 4 * (8 * (c as u32 / 2) + c as u32 % 2);
    // Running max of column slot c after tile `it`; whether tile `it` moved any.
    let max_at =
        |lb: u32, it: u32, c: usize| base + lay.max + (it % 2) * WIDE_ROWS * 4 + lb + col_bytes(c);
    let moved_at = |it: u32| base + lay.flags + (it % 2) * 4;
    // Reduction scratch of warp w (0..4 this warpgroup's, 4..8 both) for column slot c.
    let red_at = |lb: u32, w: u32, c: usize| red + 4 * w * WIDE_ROWS + lb + col_bytes(c);

    // Hands a consumed stage back to the producer (one arrival per warp).
    let release = |it: u32| {
        warp::sync();
        if lane == 0 {
            mbarrier::arrive(stages.empty(stage_of(it).0));
        }
    };

    let mut it = 0;
    let mut st = Wide::zero();
    for r in part.begin_req..=part.end_req {
        let seqlen = *a.seqlens.add(r as usize);
        let (first, last) = clamped_piece(part, r, seqlen, a.max_pages);
        if first >= last {
            // A request with no pages inside the range: the combine writes its result.
            continue;
        }
        let (splits, slot) = output_slot(a, part, r);

        // Q: each warpgroup loads half of the rows (zeros past the last), both read all.
        // The previous piece's Sᵀ are complete: each warpgroup waited for its own, and
        // for the other's through `PReady`.
        let half = WIDE_ROWS / 2;
        load_swizzled(
            half,
            K_BLOCKS,
            q_smem + wg * half * 128,
            q_block_stride,
            t,
            128,
            |rr| {
                let row = row0 + wg * half + rr;
                (row < rows_total).then(|| {
                    let (s, h) = query_of(row);
                    a.q.add((((r as u32 * a.s_q + s) * a.h_q + h) * D_QK) as usize)
                })
            },
        );
        cp_async::wait_all();
        fence::proxy_async_shared();
        barrier::sync_named(NamedBarrier::Consumers as u32, 256);

        // Last visible key of a column: the length, or its query's causal limit.
        let limit_of = |col: u32| {
            let causal_limit = seqlen - a.s_q as i32 + ((row0 + col) / heads_per_kv) as i32;
            if causal {
                causal_limit.min(seqlen - 1)
            } else {
                seqlen - 1
            }
        };
        let first_limit = if causal {
            seqlen - a.s_q as i32
        } else {
            seqlen - 1
        };
        let mut o = [Wide::zero(); WIDE_V_BLOCKS as usize];
        // This thread's share of each owned column's sum, at the current running max.
        let mut l = [0.0f32; COLS];
        // This warpgroup's Oᵀ of tile it−1 has been issued and not yet waited for.
        let mut pv_pending = false;
        // Sᵀ of this warpgroup's next tile has been issued (during the other's tile).
        let mut s_issued = false;

        for page in first..last {
            // Per-thread values used in the loop are worked out from an opaque copy of the
            // thread index, so that they are recomputed here rather than held (spilled).
            let tq = opaque_u32(t);
            let lb = 8 * (tq % 4);
            let (s, phase) = stage_of(it);
            let kv = warp::uniform(stages.tile(s));
            let p_hi = kv + ROPE_BLOCK * BLOCK_BYTES;
            if it % 2 == wg {
                // This warpgroup's tile: Sᵀ, softmax, Pᵀ for both. The stage of tile it−1
                // goes back as soon as this warpgroup's Oᵀ of it is done (before Sᵀ(it)
                // when that was issued after it), so the load of tile it+1 starts early.
                if pv_pending {
                    if s_issued {
                        wgmma::wait_all_but_last();
                    } else {
                        wgmma::wait_all();
                    }
                    release(it - 1);
                }
                if !s_issued {
                    mbarrier::wait(stages.full(s), phase);
                    issue_scores::<T>(&mut st, kv, q_smem, q_block_stride);
                }
                s_issued = false;
                wgmma::wait_all();

                // Keys past a column's last visible one (the length, or its causal limit)
                // are masked on the tiles that reach past it.
                let sv = st.as_mut();
                let boundary = (page * PAGE_SIZE + TILE_TOKENS) as i32 > first_limit + 1;
                if boundary {
                    for (i, x) in sv.iter_mut().enumerate() {
                        let (tok, col) = acc_coord(tq, i as u32);
                        if (page * PAGE_SIZE + tok) as i32 > limit_of(col) {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }

                // The running max after the other warpgroup's tile (shared memory, read where
                // needed rather than held in registers); raised to the exact column max on a
                // piece's first tile, on masked tiles, and when a vote finds a score more
                // than SOFTMAX_SLACK above it. The new max goes to the buffer of tile `it`.
                let first_tile = page == first;
                let m_prev = |c: usize| {
                    if first_tile {
                        f32::NEG_INFINITY
                    } else {
                        smem::ld_f32(max_at(lb, it - 1, c))
                    }
                };
                let exact = first_tile || boundary || {
                    let mut over = false;
                    for c in 0..COLS {
                        let (j, e) = (c / 2, c % 2);
                        let mx = sv[4 * j + e].max(sv[4 * j + 2 + e]);
                        over |= math::fma(mx, scale_log2, -m_prev(c)) > SOFTMAX_SLACK;
                    }
                    barrier::sync_named_any(group_bar, 128, over)
                };
                if exact {
                    for c in 0..COLS {
                        let (j, e) = (c / 2, c % 2);
                        let mx = warp::max_over_fragment_rows(sv[4 * j + e].max(sv[4 * j + 2 + e]));
                        smem::st_f32(red_at(lb, warp_id + 4 * wg, c), mx);
                    }
                    barrier::sync_named(group_bar, 128);
                    for (c, lc) in l.iter_mut().enumerate() {
                        let mut tile_max = f32::NEG_INFINITY;
                        for w in 0..4 {
                            tile_max = tile_max.max(smem::ld_f32(red_at(lb, w + 4 * wg, c)));
                        }
                        let m_old = m_prev(c);
                        let m_new = m_old.max(tile_max * scale_log2);
                        let alpha = math::exp2(m_old - max_offset(m_new));
                        *lc *= alpha;
                        scale_column(&mut o, c, alpha);
                        // Every thread owning the column writes the same value.
                        smem::st_f32(max_at(lb, it, c), m_new);
                    }
                } else if t < 4 {
                    // Threads 0..4 hold every column once.
                    for c in 0..COLS {
                        smem::st_f32(max_at(lb, it, c), m_prev(c));
                    }
                }
                let m_of = |c: usize| smem::ld_f32(max_at(lb, if exact { it } else { it - 1 }, c));
                for (c, lc) in l.iter_mut().enumerate() {
                    let (j, e) = (c / 2, c % 2);
                    let off = max_offset(m_of(c));
                    let p0 = math::exp2(math::fma(sv[4 * j + e], scale_log2, -off));
                    let p1 = math::exp2(math::fma(sv[4 * j + 2 + e], scale_log2, -off));
                    *lc += p0 + p1;
                    sv[4 * j + e] = p0;
                    sv[4 * j + 2 + e] = p1;
                }
                if t == 0 {
                    smem::st_u32(moved_at(it), (exact && !first_tile) as u32);
                }

                // Rows past the length may hold anything (NaN); Sᵀ is done with them.
                let valid = valid_tokens(seqlen, page);
                if valid < TILE_TOKENS {
                    zero_v_rows(kv, valid, tq, 128);
                }
                if SPLIT_P && it > 0 {
                    barrier::sync_named(pv_done_other, 256);
                }
                let mut p_rows = [0u32; P_STORES];
                for (g, row) in p_rows.iter_mut().enumerate() {
                    let (col, tok) = p_store_coord(tq, g as u32);
                    *row = swizzled_offset(col, tok);
                }
                store_p::<T>(sv, p_hi, p_lo, &p_rows);
                fence::proxy_async_shared();
                barrier::sync_named(group_bar, 128);
                barrier::arrive_named(p_ready_mine, 256);

                issue_pv::<T, Wide>(&mut o, kv + dims, p_hi, p_lo);
                wgmma::commit();
                pv_pending = true;
            } else {
                // The other warpgroup's tile: Oᵀ from its Pᵀ, then Sᵀ of the next tile.
                // (Unconditional: ptxas serialises wgmma that it cannot prove waited for.)
                wgmma::wait_all();
                if pv_pending {
                    release(it - 1);
                    if SPLIT_P {
                        barrier::arrive_named(pv_done_mine, 256);
                    }
                }
                barrier::sync_named(p_ready_other, 256);
                if smem::ld_u32(moved_at(it)) != 0 {
                    for (c, lc) in l.iter_mut().enumerate() {
                        let m_old = smem::ld_f32(max_at(lb, it - 1, c));
                        let m_new = smem::ld_f32(max_at(lb, it, c));
                        let alpha = math::exp2(m_old - max_offset(m_new));
                        *lc *= alpha;
                        scale_column(&mut o, c, alpha);
                    }
                }
                issue_pv::<T, Wide>(&mut o, kv + dims, p_hi, p_lo);
                wgmma::commit();
                pv_pending = true;
                if page + 1 < last {
                    let (s1, phase1) = stage_of(it + 1);
                    mbarrier::wait(stages.full(s1), phase1);
                    issue_scores::<T>(&mut st, stages.tile(s1), q_smem, q_block_stride);
                    s_issued = true;
                }
            }
            it += 1;
        }
        wgmma::wait_all();
        if pv_pending {
            release(it - 1);
            if SPLIT_P && (it - 1) % 2 == wg {
                barrier::arrive_named(pv_done_mine, 256);
            }
        }

        // The sums: over the 8 lanes sharing lane%4, then per column over the 8 warps
        // (one thread a column), then back to every thread that owns the column. The final
        // max is the buffer of the last tile.
        let lb = 8 * (opaque_u32(lane) % 4);
        for (c, &lc) in l.iter().enumerate() {
            let sum = warp::sum_over_fragment_rows(lc);
            if lane < 4 {
                smem::st_f32(red_at(lb, warp_id + 4 * wg, c), sum);
            }
        }
        barrier::sync_named(NamedBarrier::Consumers as u32, 256);
        let total_at = |col: u32| red + 4 * col;
        let col = ids::thread() - 128;
        let mut total = 0.0;
        if col < WIDE_ROWS {
            for w in 0..2 * 4 {
                total += smem::ld_f32(red + 4 * (w * WIDE_ROWS + col));
            }
        }
        barrier::sync_named(NamedBarrier::Consumers as u32, 256);
        if col < WIDE_ROWS {
            smem::st_f32(total_at(col), total);
        }
        barrier::sync_named(NamedBarrier::Consumers as u32, 256);
        let mut m = [0.0f32; COLS];
        for (c, (mc, lc)) in m.iter_mut().zip(l.iter_mut()).enumerate() {
            *mc = smem::ld_f32(max_at(lb, it - 1, c));
            *lc = smem::ld_f32(red + lb + col_bytes(c));
        }

        store_output::<T, Wide, Wide>(
            a,
            &o,
            wg * WIDE_V_BLOCKS,
            wg == 0,
            &m,
            &l,
            r as u32,
            splits,
            slot,
            row0,
            rows_total,
            &query_of,
        );
    }
    // The owner of the tile after the CTA's last would have taken the last `PvDone`.
    if SPLIT_P && it > 0 && it % 2 == wg {
        barrier::sync_named(pv_done_other, 256);
    }
}

/// Fences, issues and commits Sᵀ = K·Qᵀ of the tile at `kv` for all `WIDE_ROWS` rows.
#[inline(always)]
unsafe fn issue_scores<T: Element>(st: &mut [f32; 32], kv: u32, q: u32, q_block_stride: u32) {
    // The wgmma reads its accumulators even when it overwrites them: a fresh zero keeps
    // the previous tile's scores from staying live (in registers) until here.
    *st = Wide::zero();
    wgmma::fence();
    issue_qk::<T, Wide>(st, kv, q, q_block_stride);
    wgmma::commit();
}

/// Multiplies owned column slot `c` of the Oᵀ blocks `o` by `alpha`.
#[inline(always)]
fn scale_column(o: &mut [<Wide as MmaShape>::Acc], c: usize, alpha: f32) {
    for ob in o.iter_mut() {
        for (i, v) in ob.iter_mut().enumerate() {
            if column_slot(i) == c {
                *v *= alpha;
            }
        }
    }
}
