//! The ETAP decode mainloop for tiles of 16 and 32 query rows: per 64-token KV tile of a
//! request,
//!   load (TMA) → Sᵀ = K·Qᵀ → online softmax down the columns (over tokens)
//!   → Pᵀ to shared memory → Oᵀ += Vᵀ·Pᵀ,
//! with the KV length as the wgmma M dimension and the CTA's query rows as N.
//!
//! The softmax takes the exact cross-warp column max only on a piece's first tile, on
//! masked tiles and when a one-barrier vote finds a score more than `SOFTMAX_SLACK` above a
//! column's running max; otherwise P is taken against the running max as it stands. With a
//! split P (`Precision::Accurate`) P is rounded to two 16-bit terms, P_hi + P_lo, stacked as
//! N more columns of Pᵀ; the `Fast` kernels round it once (N as wide as Sᵀ's: H200, 2–11 %
//! faster at h_q 32 and on the 32-row tiles of h_q 64/128). (64-row tiles run the seesaw
//! kernels of `crate::seesaw`.)
//!
//! Warpgroup 0 is the producer (one thread issues the TMA loads of each page, a block group
//! at a time: `KV_GROUP_BLOCKS`); warpgroups 1 and 2 each own half of the CTA's query rows
//! (N = rows/2) and all 512 dims of Oᵀ, and take turns issuing their wgmma phases (`Turn`),
//! so one's softmax overlaps the other's GEMMs. Sᵀ starts on the first block group to land,
//! and each group goes back to the producer as soon as both warpgroups' products on it
//! retire (the RoPE block's after Sᵀ, the V groups one by one during Oᵀ's update), so the
//! next load into a stage starts before the whole tile is done with. A CTA works on one
//! partition of the plan (`crate::plan::PartWork`) for one chunk of query rows of one KV
//! head; requests split over several partitions write partial
//! (O, lse) pairs that `crate::combine` merges. Page ids outside the cache and lengths past
//! the block-table row are reported in the error words and never read past the cache.
use crate::config::*;
use crate::element::Element;
use crate::layout::{
    acc_coord, desc_add, p_store_coord, p_store_pair, pair_store_dim, pair_store_is_high,
    smem_desc, swizzled_offset, Major,
};
use crate::plan::{clamped_piece, contradicts_plan, length_fits, piece_begin, PartWork};
use crate::ptx::wgmma::{self, MmaShape};
use crate::ptx::{
    atomic, barrier, cp_async, fence, global, griddep, ids, math, mbarrier, opaque, regs, smem,
    stmatrix, tma, warp,
};
use crate::tile::load_swizzled;

/// log2(e): softmax runs in base 2 on scores pre-multiplied by scale·log2(e).
const LOG2_E: f32 = core::f32::consts::LOG2_E;

/// Arguments of one decode launch (the kernel parameters, gathered).
#[derive(Clone, Copy)]
pub struct DecodeArgs {
    /// Tensor map of the cache: dims (576, h_kv, num_blocks·64), box (64, 1, 64), 128B swizzle.
    pub kv_map: *const u8,
    /// q [batch, s_q, h_q, 576].
    pub q: *const u16,
    /// block_table [batch, max_pages].
    pub block_table: *const i32,
    /// cache_seqlens [batch].
    pub seqlens: *const i32,
    /// The plan: one `PartWork` per grid column; its `begin_req..=end_req` are positions
    /// in `order` where `FLAG_ORDERED` is set, else requests.
    pub parts: *const PartWork,
    /// The plan's request order [batch]: the request at each position (`FLAG_ORDERED`).
    pub order: *const i32,
    /// Exclusive prefix sum of pieces per request [batch + 1].
    pub split_offsets: *const i32,
    /// out [batch, s_q, h_q, 512] in the input dtype, or f32 with `FLAG_OUT_F32`.
    pub out: *mut u8,
    /// lse [batch, h_q, s_q] (natural log).
    pub lse: *mut f32,
    /// Partial outputs [slots, s_q·h_q, 512] (normalised per piece).
    pub o_accum: *mut f32,
    /// Partial lse [slots, s_q·h_q].
    pub lse_accum: *mut f32,
    pub s_q: u32,
    pub h_q: u32,
    pub h_kv: u32,
    pub max_pages: u32,
    /// Pages in the cache: page ids must lie in 0..num_blocks.
    pub num_blocks: u32,
    /// `ERROR_WORDS` i32 holding i32::MAX at the launch; the kernel lowers them to the
    /// smallest batch index with a bad page id (`ERROR_PAGE_ID`), a length its block-table
    /// row cannot hold (`ERROR_LENGTH`) or one that contradicts the plan (`ERROR_PLAN`).
    pub errors: *mut i32,
    /// Row chunks per KV head (grid y = chunks · h_kv).
    pub row_chunks: u32,
    pub softmax_scale: f32,
    /// `FLAG_CAUSAL` | `FLAG_OUT_F32` | ... (`config::FLAG_*`).
    pub flags: u32,
    /// With `FLAG_BULK_PARTIALS`: tensor map of the f16 partial results, dims (512,
    /// s_q·h_q, slots) at the slots' row stride (`PARTIAL_ROW_BYTES`), box (64, 64, 1),
    /// 128B swizzle; else unused (null).
    pub o_accum_map: *const u8,
}

impl DecodeArgs {
    /// The request at position `pos` of the plan's order.
    #[inline(always)]
    pub unsafe fn request(&self, pos: i32) -> i32 {
        if self.flags & FLAG_ORDERED != 0 {
            *self.order.add(pos as usize)
        } else {
            pos
        }
    }
}

/// Query columns a consumer thread owns in the accumulator fragment (N/4 at the widest N).
const MAX_COLS_PER_THREAD: usize = (STACKED_SPLIT_MAX_ROWS / CONSUMER_WARPGROUPS / 4) as usize;

/// stmatrix calls per P store at the widest N: a thread's fragment holds N/4 8×8 blocks
/// (as many as its owned columns), stored 4 at a time.
const MAX_P_STORES: usize = MAX_COLS_PER_THREAD / 4;

/// Index c = 2j + e, among a thread's owned columns (8j + 2(lane%4) + e), of the column
/// of accumulator element `i` (= 4j + 2h + e): a constant once loops are unrolled.
#[inline(always)]
const fn column_slot(i: usize) -> usize {
    2 * (i / 4) + i % 2
}

/// Stage and phase parity of the `it`-th tile a CTA streams.
#[inline(always)]
fn stage_of(it: u32) -> (u32, u32) {
    (it % STAGES, (it / STAGES) & 1)
}

/// The decode kernel body for element type `T` and N = `S::N` query rows per consumer
/// warpgroup (the CTA handles 2·N rows). Oᵀ is an `O`-shaped accumulator: twice as wide as
/// `S` for a split P (its low half stacked under the high half as N more columns of Pᵀ),
/// as wide as `S` for P rounded once.
#[inline(always)]
pub unsafe fn decode<T: Element, S: MmaShape, O: MmaShape>(a: &DecodeArgs) {
    const {
        assert!((O::N == 2 * S::N || O::N == S::N) && O::N as u32 <= STACKED_SPLIT_MAX_ROWS);
    }
    let rows_cta = 2 * S::N as u32;
    let lay = DecodeSmem::new(rows_cta);
    let base = smem::base();
    // mbarriers of block group g of stage s.
    let full = |s: u32, g: u32| base + lay.bars + 8 * (s * KV_GROUPS + g);
    let empty = |s: u32, g: u32| base + lay.bars + 8 * ((STAGES + s) * KV_GROUPS + g);
    let Some(part) = enter(a, |_| {
        for s in 0..STAGES {
            for g in 0..KV_GROUPS {
                mbarrier::init(full(s, g), 1);
                mbarrier::init(empty(s, g), CONSUMER_WARPS);
            }
        }
    }) else {
        return;
    };

    let chunk = ids::block_y() % a.row_chunks;
    let head = ids::block_y() / a.row_chunks;
    if ids::warpgroup() == PRODUCER_WARPGROUP {
        regs::release_to_40();
        if ids::thread() == 0 {
            produce(
                a,
                &part,
                head,
                base + lay.kv,
                rows_cta,
                kv_box_tokens(a.flags),
                full,
                empty,
            );
        }
    } else {
        regs::claim_232();
        consume::<T, S, O>(a, &part, chunk, head, &lay, base, full, empty);
        // The combine may launch once every CTA is here. Any earlier and its many small
        // CTAs crowd onto the few SMs free at that moment (measured slower at b 16, h_q 16).
        griddep::launch_dependents();
    }
}

/// The start of a decode CTA: its partition of the plan (`None` when it has no work), with
/// `set_up` run on thread 0 (the mbarriers' initialisation, and what else needs only the
/// partition) and the whole CTA past the wait for the previous grid.
#[inline(always)]
pub unsafe fn enter(a: &DecodeArgs, set_up: impl FnOnce(&PartWork)) -> Option<PartWork> {
    let part = *a.parts.add(ids::block_x() as usize);
    if part.begin_req > part.end_req {
        return None;
    }
    if ids::thread() == 0 {
        set_up(&part);
        fence::mbarrier_init();
        tma::prefetch_map(a.kv_map);
    }
    // Launched as a programmatic dependent of the previous grid on the stream (the last
    // call's combine): the launch and the set-up above overlap its tail. The set-up reads
    // the plan and at most the inputs it was built from (lengths, block table), which no
    // kernel may still be writing when the decode is launched (see `Decoder::decode`).
    // Everything after reads inputs a previous kernel may write (Q, the cache), or writes
    // what the combine reads.
    griddep::wait();
    barrier::sync_cta();
    Some(part)
}

/// Producer: streams every page of the partition through the stages, in order, one block
/// group at a time as the consumers hand it back, in boxes of `box_tokens` tokens (the box
/// of the tensor map the host passes, `FLAG_KV_HALF_BOXES`), the groups of a stage in
/// `kv_load_order` for `rows_cta` rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn produce(
    a: &DecodeArgs,
    part: &PartWork,
    head: u32,
    kv: u32,
    rows_cta: u32,
    box_tokens: u32,
    full: impl Fn(u32, u32) -> u32,
    empty: impl Fn(u32, u32) -> u32,
) {
    let mut it = 0;
    let evict_first = a.flags & FLAG_KV_EVICT_FIRST != 0;
    let policy = tma::l2_policy(true);
    for pos in part.begin_req..=part.end_req {
        let r = a.request(pos);
        // The page id of the next tile is read one tile ahead, so its latency overlaps the
        // wait for a free stage; the first one alongside the length, which it does not
        // depend on (its entry lies in the row whatever the length).
        let pages = a.block_table.add((r as u32 * a.max_pages) as usize);
        let begin = piece_begin(part, pos, a.max_pages);
        let mut next_id = if begin < a.max_pages {
            *pages.add(begin as usize)
        } else {
            0
        };
        let seqlen = *a.seqlens.add(r as usize);
        if !length_fits(seqlen, a.max_pages) {
            atomic::min_i32(a.errors.add(ERROR_LENGTH), r);
        }
        let (first, last) = clamped_piece(part, pos, seqlen, a.max_pages);
        for page in first..last {
            // A page id outside the cache is reported and loaded as all-out-of-bounds
            // boxes (TMA fills them with zeros): nothing outside the cache is read.
            let token0 = if next_id >= 0 && (next_id as u32) < a.num_blocks {
                next_id * PAGE_SIZE as i32
            } else {
                atomic::min_i32(a.errors.add(ERROR_PAGE_ID), r);
                -(TILE_TOKENS as i32)
            };
            if page + 1 < last {
                next_id = *pages.add(page as usize + 1);
            }
            let (s, phase) = stage_of(it);
            for i in 0..KV_GROUPS {
                let g = kv_load_order(rows_cta, i);
                let (first_block, end_block) = kv_group_blocks(g);
                let bar = full(s, g);
                mbarrier::wait(empty(s, g), phase ^ 1);
                mbarrier::arrive_expect_tx(bar, (end_block - first_block) * BLOCK_BYTES);
                for c in first_block..end_block {
                    for b in 0..TILE_TOKENS / box_tokens {
                        let row0 = b * box_tokens;
                        let dst = kv
                            + s * TILE_BYTES
                            + c * BLOCK_BYTES
                            + row0 * (BLOCK_BYTES / TILE_TOKENS);
                        let x = (c * COL_BLOCK) as i32;
                        let token = token0 + row0 as i32;
                        // No hint at all below the L2 size: an evict-normal one measured
                        // slower.
                        if evict_first {
                            tma::load_3d_hint_if(
                                true,
                                dst,
                                a.kv_map,
                                bar,
                                x,
                                head as i32,
                                token,
                                policy,
                            );
                        } else {
                            tma::load_3d(dst, a.kv_map, bar, x, head as i32, token);
                        }
                    }
                }
            }
            it += 1;
        }
    }
}

/// Consumer warpgroup: for each request piece of the partition, the online-softmax
/// attention of its N query rows over the piece's pages, then the (partial) output.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn consume<T: Element, S: MmaShape, O: MmaShape>(
    a: &DecodeArgs,
    part: &PartWork,
    chunk: u32,
    head: u32,
    lay: &DecodeSmem,
    base: u32,
    full: impl Fn(u32, u32) -> u32,
    empty: impl Fn(u32, u32) -> u32,
) {
    let n = S::N as u32;
    let cols = (n / 4) as usize;
    let wg = warp::uniform(ids::warpgroup()) - 1;
    let t = ids::thread() % 128;
    let (warp_id, lane) = (t / 32, t % 32);
    let group_bar = NamedBarrier::ConsumerGroup0 as u32 + wg;
    let heads_per_kv = a.h_q / a.h_kv;
    let rows_total = a.s_q * heads_per_kv;
    let row0 = chunk * 2 * n + wg * n;
    let q_smem = base + lay.q + wg * n * 128;
    let q_block_stride = 2 * n * 128;
    // This warpgroup's Pᵀ: N rows of P_hi, then N rows of P_lo.
    let p_smem = base + lay.p + wg * 2 * n * 128;
    let red = base + lay.red + wg * 4 * n * 4;
    let scale_log2 = a.softmax_scale * LOG2_E;
    let causal = a.flags & FLAG_CAUSAL != 0;
    // Query row ↔ (s index, head) of this warpgroup's column `col`.
    let row_of = |col: u32| row0 + col;
    let query_of = |row: u32| (row / heads_per_kv, head * heads_per_kv + row % heads_per_kv);

    // This lane's row offset in a Pᵀ buffer for each stmatrix call of `store_p`.
    // (All MAX_P_STORES of them, unused ones included: a loop of run-time length would
    // leave the array in local memory.)
    let p_groups = (n as usize / 4).div_ceil(4);
    let p_rows: [u32; MAX_P_STORES] = core::array::from_fn(|g| {
        let (col, tok) = p_store_coord(t, g as u32);
        swizzled_offset(col, tok)
    });

    let turn = Turn::new(wg);
    let mut it = 0;
    for pos in part.begin_req..=part.end_req {
        let r = a.request(pos);
        let seqlen = *a.seqlens.add(r as usize);
        let split_begin = *a.split_offsets.add(r as usize);
        let split_end = *a.split_offsets.add(r as usize + 1);

        // Q rows of this warpgroup → swizzled shared memory (zeros past the last row).
        // They depend on the request only, so they are on their way while the loads
        // above complete.
        load_swizzled(n, K_BLOCKS, q_smem, q_block_stride, t, 128, |rr| {
            let row = row0 + rr;
            (row < rows_total).then(|| {
                let (s, h) = query_of(row);
                a.q.add((((r as u32 * a.s_q + s) * a.h_q + h) * D_QK) as usize)
            })
        });
        let splits = split_end - split_begin;
        let split_idx = part.split_index(pos);
        // A device length the plan's pieces cannot cover is reported (Q's loads are on
        // their way).
        let stale = contradicts_plan(part, pos, seqlen, a.max_pages, split_idx, splits);
        atomic::min_i32_if(wg == 0 && t == 0 && stale, a.errors.add(ERROR_PLAN), r);
        let (first, last) = clamped_piece(part, pos, seqlen, a.max_pages);
        if first >= last {
            // A request with no pages inside the range: the combine writes its result.
            cp_async::wait_all();
            continue;
        }
        cp_async::wait_all();
        fence::proxy_async_shared();
        barrier::sync_named(group_bar, 128);

        // Last visible key of a column: the length, or its query's causal limit.
        let limit_of = |col: u32| {
            let causal_limit = seqlen - a.s_q as i32 + (row_of(col) / heads_per_kv) as i32;
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
        let mut o = [O::zero(); V_BLOCKS as usize];
        // Per owned column c = 2j + e: running max (base-2 scaled) and this thread's sum.
        let mut m_buf = [f32::NEG_INFINITY; MAX_COLS_PER_THREAD];
        let mut l_buf = [0.0f32; MAX_COLS_PER_THREAD];
        let (m, l) = (&mut m_buf[..cols], &mut l_buf[..cols]);

        // The shared address of a tile's KV; on the request's partial last page, once its
        // V has landed, the rows past the length are made harmless.
        let prepare = |page: u32, s: u32, phase: u32| {
            let kv = warp::uniform(base + lay.kv + s * TILE_BYTES);
            let valid = (seqlen - (page * PAGE_SIZE) as i32).min(TILE_TOKENS as i32) as u32;
            if valid < TILE_TOKENS {
                for g in 0..ROPE_GROUP {
                    mbarrier::wait(full(s, g), phase);
                }
                zero_v_rows(kv, valid, ids::thread() - 128);
                fence::proxy_async_shared();
                barrier::sync_named(NamedBarrier::Consumers as u32, 256);
            }
            kv
        };

        // Hands block group g of stage s back to the producer (one arrival per warp).
        let release = |s: u32, g: u32| {
            warp::sync();
            mbarrier::arrive_if(lane == 0, empty(s, g));
        };

        // The two warpgroups take turns issuing their GEMMs (Sᵀ, then Oᵀ), so that one's
        // softmax runs while the other's wgmma keep the tensor core busy.
        for page in first..last {
            let (s, phase) = stage_of(it);
            let kv = prepare(page, s, phase);
            let mut st = S::zero();
            turn.wait();
            issue_qk::<T, S>(&mut st, kv, q_smem, q_block_stride, |g| {
                mbarrier::wait_warp(full(s, g), phase)
            });
            wgmma::commit();
            turn.pass();
            wgmma::wait_all();
            release(s, ROPE_GROUP);

            // On the tiles that reach past a column's last visible key (the length, or
            // the causal limit), mask the keys beyond it. Every later tile of the piece is
            // then such a tile too.
            let sv = st.as_mut();
            let boundary = (page * PAGE_SIZE + TILE_TOKENS) as i32 > first_limit + 1;
            if boundary {
                for (i, x) in sv.iter_mut().enumerate() {
                    let (tok, col) = acc_coord(t, i as u32);
                    if (page * PAGE_SIZE + tok) as i32 > limit_of(col) {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }

            // Most tiles raise no column's score more than SOFTMAX_SLACK above its running
            // max: P is then taken against the running max as it stands, after one vote
            // instead of a cross-warp max. The first tile of a piece (no max yet) and the
            // masked ones always take the exact path.
            let exact = page == first || boundary || {
                let mut over = false;
                for c in 0..cols {
                    let (j, e) = (c / 2, c % 2);
                    let mx = sv[4 * j + e].max(sv[4 * j + 2 + e]);
                    over |= math::fma(mx, scale_log2, -m[c]) > SOFTMAX_SLACK;
                }
                barrier::sync_named_any(group_bar, 128, over)
            };
            if exact {
                exact_softmax::<S, O>(sv, m, l, &mut o, red, group_bar, scale_log2);
            } else {
                for c in 0..cols {
                    let (j, e) = (c / 2, c % 2);
                    let p0 = math::exp2(math::fma(sv[4 * j + e], scale_log2, -m[c]));
                    let p1 = math::exp2(math::fma(sv[4 * j + 2 + e], scale_log2, -m[c]));
                    l[c] += p0 + p1;
                    sv[4 * j + e] = p0;
                    sv[4 * j + 2 + e] = p1;
                }
            }

            // Pᵀ → shared memory as the K-major B operand (row = query column, 64 tokens),
            // 8×8 blocks at a time, P_lo under P_hi.
            store_p::<T>(
                sv,
                p_smem,
                (O::N == 2 * S::N).then_some(p_smem + n * 128),
                &p_rows[..p_groups],
            );
            fence::proxy_async_shared();
            barrier::sync_named(group_bar, 128);

            turn.wait();
            issue_pv::<T, O>(&mut o, kv, p_smem);
            turn.pass();
            // Each V group goes back as its products retire (one commit group each).
            for g in 0..ROPE_GROUP {
                wgmma::wait_for_at_most(ROPE_GROUP - 1 - g);
                release(s, g);
            }
            it += 1;
        }

        // Row sums: the 8 lanes sharing lane%4, then the 4 warps.
        for c in 0..cols {
            let (j, e) = (c / 2, c % 2);
            let sum = warp::sum_over_fragment_rows(l[c]);
            if lane < 4 {
                smem::st_f32(
                    red + 4 * (warp_id * n + 8 * j as u32 + 2 * lane + e as u32),
                    sum,
                );
            }
        }
        barrier::sync_named(group_bar, 128);
        for c in 0..cols {
            let (j, e) = (c / 2, c % 2);
            let col = 8 * j as u32 + 2 * (lane % 4) + e as u32;
            let mut sum = 0.0;
            for w in 0..4 {
                sum += smem::ld_f32(red + 4 * (w * n + col));
            }
            l[c] = sum;
        }
        barrier::sync_named(group_bar, 128);

        store_output::<T, S, O>(
            a,
            &o,
            m,
            l,
            r as u32,
            splits,
            (split_begin + split_idx) as u32,
            row0,
            rows_total,
            &query_of,
        );
    }
    turn.finish(wg);
}

/// Fences and issues Sᵀ = K·Qᵀ for one tile: 64 tokens × N query rows, K = 576 (K-major
/// A and B), each block group's products (in `kv_load_order`) once `ready(group)` has waited
/// for it to land.
#[inline(always)]
unsafe fn issue_qk<T: Element, S: MmaShape>(
    st: &mut S::Acc,
    kv: u32,
    q: u32,
    q_block_stride: u32,
    ready: impl Fn(u32),
) {
    let k_desc = opaque(smem_desc(kv, Major::K, 0));
    let q_desc = opaque(smem_desc(q, Major::K, 0));
    for i in 0..KV_GROUPS {
        let g = kv_load_order(2 * S::N as u32, i);
        ready(g);
        wgmma::fence();
        let (first_block, end_block) = kv_group_blocks(g);
        for blk in first_block..end_block {
            for kk in 0..COL_BLOCK / 16 {
                let koff = kk * K_STEP_BYTES;
                let da = desc_add(k_desc, blk * BLOCK_BYTES + koff);
                let db = desc_add(q_desc, blk * q_block_stride + koff);
                T::mma::<S>(st, da, db, i > 0 || blk > first_block || kk > 0);
            }
        }
    }
}

/// Fences and issues Oᵀ += Vᵀ·Pᵀ for one tile: per 64-dim block of V (A, MN-major), K = 64
/// tokens; one commit group per V block group, in order.
#[inline(always)]
unsafe fn issue_pv<T: Element, S: MmaShape>(o: &mut [S::Acc; V_BLOCKS as usize], kv: u32, p: u32) {
    let v_desc = opaque(smem_desc(kv, Major::MN, BLOCK_BYTES));
    let p_desc = opaque(smem_desc(p, Major::K, 0));
    wgmma::fence();
    for g in 0..ROPE_GROUP {
        let (first_block, end_block) = kv_group_blocks(g);
        for mb in first_block..end_block {
            for k in 0..PV_STEPS {
                let da = desc_add(v_desc, mb * BLOCK_BYTES + k * 16 * 128);
                T::mma_ta::<S>(&mut o[mb as usize], da, desc_add(p_desc, k * 32), true);
            }
        }
        wgmma::commit();
    }
}

/// The exact online-softmax step of a tile: column maxima over the 64 tokens (the 2 rows of
/// a thread, the 8 lanes sharing lane%4, then the 4 warps through `red`), the running max
/// `m` raised to them, Oᵀ and the sums `l` rescaled where it moved, and `sv` turned into
/// P = 2^(s·scale·log2e − m).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn exact_softmax<S: MmaShape, O: MmaShape>(
    sv: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    o: &mut [O::Acc; V_BLOCKS as usize],
    red: u32,
    group_bar: u32,
    scale_log2: f32,
) {
    let n = S::N as u32;
    let lane = ids::thread() % 32;
    let warp_id = (ids::thread() % 128) / 32;
    let cols = m.len();
    // Every lane stores: the 8 lanes sharing lane%4 hold the same maximum.
    for c in 0..cols {
        let (j, e) = (c / 2, c % 2);
        let mx = warp::max_over_fragment_rows(sv[4 * j + e].max(sv[4 * j + 2 + e]));
        smem::st_f32(
            red + 4 * (warp_id * n + 8 * j as u32 + 2 * (lane % 4) + e as u32),
            mx,
        );
    }
    barrier::sync_named(group_bar, 128);
    let mut alpha = [1.0f32; MAX_COLS_PER_THREAD];
    let mut rescale = false;
    for c in 0..cols {
        let (j, e) = (c / 2, c % 2);
        let col = 8 * j as u32 + 2 * (lane % 4) + e as u32;
        let mut tile_max = f32::NEG_INFINITY;
        for w in 0..4 {
            tile_max = tile_max.max(smem::ld_f32(red + 4 * (w * n + col)));
        }
        let m_new = m[c].max(tile_max * scale_log2);
        // A column that has seen no key yet keeps max -inf: use 0 as its offset.
        let m_use = if m_new == f32::NEG_INFINITY {
            0.0
        } else {
            m_new
        };
        if m_new != m[c] {
            alpha[c] = math::exp2(m[c] - m_use);
            rescale = true;
        }
        m[c] = m_new;
        let p0 = math::exp2(math::fma(sv[4 * j + e], scale_log2, -m_use));
        let p1 = math::exp2(math::fma(sv[4 * j + 2 + e], scale_log2, -m_use));
        l[c] = l[c] * alpha[c] + p0 + p1;
        sv[4 * j + e] = p0;
        sv[4 * j + 2 + e] = p1;
    }
    // Oᵀ columns whose max moved are rescaled.
    if rescale {
        for ob in o.iter_mut() {
            for (i, v) in ob.as_mut().iter_mut().enumerate() {
                *v *= alpha[column_slot(i % (S::N / 2))];
            }
        }
    }
}

/// Stores P (this thread's fragment `sv` of the 64 × N tile) rounded to `T` as the
/// K-major Pᵀ operand at `p`, with one `stmatrix .trans` per 4 blocks of 8×8; `rows` holds
/// this lane's row offset for each call (`p_store_coord`). For a split P the rounding
/// remainder P − P_hi goes to `p_lo`, rounded to `T` as well.
#[inline(always)]
unsafe fn store_p<T: Element>(sv: &[f32], p: u32, p_lo: Option<u32>, rows: &[u32]) {
    let hi = |k: u32| {
        let i = p_store_pair(k) as usize;
        T::pack2(sv[i], sv[i + 1])
    };
    let lo = |k: u32| {
        let i = p_store_pair(k) as usize;
        let h = hi(k);
        T::pack2(
            sv[i] - T::to_f32(h as u16),
            sv[i + 1] - T::to_f32((h >> 16) as u16),
        )
    };
    store_fragment(sv.len(), p, rows, hi);
    if let Some(p_lo) = p_lo {
        store_fragment(sv.len(), p_lo, rows, lo);
    }
}

/// The stmatrix calls of `store_p` for one buffer: `pair(k)` is the packed element pair of
/// matrix k; `len` is the fragment's element count (4 at N = 8: two matrices).
#[inline(always)]
unsafe fn store_fragment(len: usize, base: u32, rows: &[u32], pair: impl Fn(u32) -> u32) {
    if len == 4 {
        stmatrix::store_x2_trans(base + rows[0], [pair(0), pair(1)]);
    } else {
        for (g, &row) in rows.iter().enumerate() {
            let k = 4 * g as u32;
            stmatrix::store_x4_trans(base + row, [pair(k), pair(k + 1), pair(k + 2), pair(k + 3)]);
        }
    }
}

/// Ping-pong between the two consumer warpgroups: a warpgroup issues its next wgmma batch
/// only after the other has issued its previous one (named barriers `Turn0 + wg`).
struct Turn {
    mine: u32,
    other: u32,
}

impl Turn {
    /// Warpgroup 0 goes first: warpgroup 1 opens its turn once.
    #[inline(always)]
    fn new(wg: u32) -> Self {
        let turn = Turn {
            mine: NamedBarrier::Turn0 as u32 + wg,
            other: NamedBarrier::Turn0 as u32 + 1 - wg,
        };
        if wg == 1 {
            barrier::arrive_named(turn.other, 256);
        }
        turn
    }
    /// Waits until it is this warpgroup's turn to issue.
    #[inline(always)]
    fn wait(&self) {
        barrier::sync_named(self.mine, 256);
    }
    /// Hands the turn to the other warpgroup.
    #[inline(always)]
    fn pass(&self) {
        barrier::arrive_named(self.other, 256);
    }
    /// Warpgroup 0 consumes warpgroup 1's last hand-over, so no barrier is left half-arrived.
    #[inline(always)]
    fn finish(&self, wg: u32) {
        if wg == 0 {
            barrier::sync_named(self.mine, 256);
        }
    }
}

/// Zeroes V rows `valid..64` of a tile (all 8 V blocks): rows past a sequence's length may
/// hold anything (NaN), and 0·NaN would poison Oᵀ. Spread over the 256 consumer threads.
#[inline(always)]
unsafe fn zero_v_rows(kv: u32, valid: u32, ct: u32) {
    let units = (TILE_TOKENS - valid) * V_BLOCKS * 8;
    let mut u = ct;
    while u < units {
        let row = valid + u / (V_BLOCKS * 8);
        let blk = (u / 8) % V_BLOCKS;
        smem::st_v4(kv + blk * BLOCK_BYTES + row * 128 + (u % 8) * 16, [0; 4]);
        u += 256;
    }
}

/// The lse (natural log) of a row from its running max `m` (base 2, scaled) and sum `l`; a
/// row that saw no key gets +inf as a final result and -inf as a partial (weight 0 in the
/// combine).
#[inline(always)]
pub fn row_lse(m: f32, l: f32, final_out: bool) -> f32 {
    if l > 0.0 {
        (m + math::log2(l)) * core::f32::consts::LN_2
    } else if final_out {
        f32::INFINITY
    } else {
        f32::NEG_INFINITY
    }
}

/// Bytes of an f32 output element (partial results, f32 output).
pub const F32_BYTES: u64 = core::mem::size_of::<f32>() as u64;
/// Bytes of a 16-bit output element.
pub const B16_BYTES: u64 = core::mem::size_of::<u16>() as u64;

/// Where a piece's output elements go: `out` when the request is not split, else its
/// partial results. Partial results and f32 output take 4-byte elements (`wide`), 16-bit
/// output 2-byte ones, and a kernel with f16 partial results writes them as scaled f16
/// (`f16_partial`) in their f32 rows' slots; element `d` of row `i` lies at
/// `base + (i · row_elems + d) · elem_bytes`.
pub struct OutputTarget {
    pub base: u64,
    pub row_elems: u32,
    pub elem_bytes: u64,
    pub wide: bool,
    pub f16_partial: bool,
}

impl OutputTarget {
    /// The target of a piece whose request is not split (`final_out`) or is, from a kernel
    /// whose partial results are scaled f16 (`f16_partials`) or f32.
    #[inline(always)]
    pub fn of(a: &DecodeArgs, final_out: bool, f16_partials: bool) -> OutputTarget {
        let f16_partial = !final_out && f16_partials;
        let wide = if final_out {
            a.flags & FLAG_OUT_F32 != 0
        } else {
            !f16_partial
        };
        let elem_bytes = if wide { F32_BYTES } else { B16_BYTES };
        OutputTarget {
            base: if final_out {
                a.out as u64
            } else {
                a.o_accum as u64
            },
            row_elems: if f16_partial {
                PARTIAL_ROW_BYTES / B16_BYTES as u32
            } else {
                D_V
            },
            elem_bytes,
            wide,
            f16_partial,
        }
    }
}

/// Writes this warpgroup's normalised Oᵀ columns and their lse: straight to `out`/`lse`
/// when the request is not split, else to its partial slot. Everything that depends only
/// on the column (its query row, 1/l, the row's offset) is worked out once per owned
/// column; the elements then go out as guarded stores, without a branch (see
/// `ptx::global`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn store_output<T: Element, S: MmaShape, O: MmaShape>(
    a: &DecodeArgs,
    o: &[O::Acc; V_BLOCKS as usize],
    m: &[f32],
    l: &[f32],
    r: u32,
    splits: i32,
    slot: u32,
    row0: u32,
    rows_total: u32,
    query_of: &impl Fn(u32) -> (u32, u32),
) {
    let t = ids::thread() % 128;
    let lane = t % 32;
    let final_out = splits == 1;
    let rows_per_req = a.s_q * a.h_q;
    let OutputTarget {
        base,
        elem_bytes,
        wide,
        ..
    } = OutputTarget::of(a, final_out, false);
    // Per owned column c = 2j + e (column 8j + 2(lane%4) + e): the element offset of its
    // output row (u32::MAX past the last row), 1/l, and its lse.
    let mut row_at = [u32::MAX; MAX_COLS_PER_THREAD];
    let mut inv = [0.0f32; MAX_COLS_PER_THREAD];
    for c in 0..m.len() {
        let col = 8 * (c as u32 / 2) + 2 * (lane % 4) + c as u32 % 2;
        let row = row0 + col;
        if row >= rows_total {
            continue;
        }
        let (s, h) = query_of(row);
        let qrow = s * a.h_q + h;
        let req_row = if final_out { r } else { slot } * rows_per_req + qrow;
        row_at[c] = req_row * D_V;
        inv[c] = if l[c] > 0.0 { 1.0 / l[c] } else { 0.0 };
        // Threads 0..4 of warp 0 hold every column once (rows 0 and 8 of the fragment).
        if t < 4 {
            let lse = row_lse(m[c], l[c], final_out);
            if final_out {
                *a.lse.add(((r * a.h_q + h) * a.s_q + s) as usize) = lse;
            } else {
                *a.lse_accum.add(req_row as usize) = lse;
            }
        }
    }
    // A stacked split P's Oᵀ holds each column twice (high, then low half, N/2 elements
    // further on); they add up to the column's result. Its kernels store an element a lane:
    // with the pair shuffle below they measured 0.6 % slower (H200, thirty-fourth session).
    let half = S::N / 2;
    let out = Outputs {
        base,
        elem_bytes,
        row_at: &row_at,
        inv: &inv,
    };
    // One branch-free copy of each loop per element size (a single copy with both widths'
    // guarded stores spilled in `_r32_split`), in which `elem_bytes` is a constant.
    let stacked = O::N > S::N;
    match (stacked, wide) {
        (true, true) => out.elements(o, half, t, |p, at, v| global::st_f32_if(p, at, v)),
        (true, false) => out.elements(o, half, t, |p, at, v| {
            global::st_b16_if(p, at, T::from_f32(v))
        }),
        (false, true) => out.pairs(o, half, t, |p, at, v| global::st_v2_f32_if(p, at, v)),
        (false, false) => out.pairs(o, half, t, |p, at, v| {
            global::st_b32_if(p, at, T::pack2(v[0], v[1]))
        }),
    }
}

/// Where a thread's owned columns go: each gets one 64-bit address (a row past the last
/// wraps its address harmlessly, as its stores are off); its elements lie a constant
/// distance from it, which the stores take as an immediate offset.
struct Outputs<'a> {
    base: u64,
    elem_bytes: u64,
    /// Element offset of each owned column's output row (u32::MAX past the last row).
    row_at: &'a [u32; MAX_COLS_PER_THREAD],
    /// 1/l of each owned column.
    inv: &'a [f32; MAX_COLS_PER_THREAD],
}

impl Outputs<'_> {
    /// The address of each owned column's dim `dim0`.
    #[inline(always)]
    fn col_addr(&self, dim0: u32) -> [u64; MAX_COLS_PER_THREAD] {
        core::array::from_fn(|c| {
            self.base
                .wrapping_add(self.row_at[c].wrapping_add(dim0) as u64 * self.elem_bytes)
        })
    }

    /// Stores each element of a stacked Oᵀ (the sum of its high and low halves, `half`
    /// elements apart) on its own.
    #[inline(always)]
    unsafe fn elements<A: AsRef<[f32]>>(
        &self,
        o: &[A],
        half: usize,
        t: u32,
        put: impl Fn(bool, u64, f32),
    ) {
        // This thread's first dim of every owned column (fragment rows l/4 and l/4 + 8).
        let (dim0, _) = acc_coord(t, 0);
        let col_addr = self.col_addr(dim0);
        for (mb, ob) in o.iter().enumerate() {
            let v = ob.as_ref();
            for i in 0..half {
                let c = column_slot(i);
                let (dim, _) = acc_coord(t, i as u32);
                let step = (mb as u32 * 64 + dim - dim0) as u64 * self.elem_bytes;
                put(
                    self.row_at[c] != u32::MAX,
                    col_addr[c].wrapping_add(step),
                    (v[i] + v[i + half]) * self.inv[c],
                );
            }
        }
    }

    /// Stores an unstacked Oᵀ two adjacent dims a lane. A column's 16 dims of a warp per V
    /// block lie in 8 lanes (dims l/4 and l/4 + 8 of lane l): lanes l/4 = 2d and 2d + 1
    /// swap one element in a shuffle, so that a warp's store covers 4 rows × 16 dims, half
    /// the instructions and lines of one element a lane (as the seesaw's stores,
    /// thirty-third session).
    #[inline(always)]
    unsafe fn pairs<A: AsRef<[f32]>>(
        &self,
        o: &[A],
        half: usize,
        t: u32,
        put: impl Fn(bool, u64, [f32; 2]),
    ) {
        let lane = t % 32;
        let high = pair_store_is_high(lane);
        let col_addr = self.col_addr(16 * (t / 32) + pair_store_dim(lane));
        for (mb, ob) in o.iter().enumerate() {
            let v = ob.as_ref();
            let step = (mb as u32 * 64) as u64 * self.elem_bytes;
            for c in 0..half / 2 {
                // Elements 4j + e (dim l/4) and 4j + 2 + e (dim l/4 + 8) of column c = 2j + e.
                let (j, e) = (c / 2, c % 2);
                let x = [v[4 * j + e] * self.inv[c], v[4 * j + 2 + e] * self.inv[c]];
                let got = warp::shfl_xor(if high { x[0] } else { x[1] }, 4);
                let pair = if high { [got, x[1]] } else { [x[0], got] };
                put(
                    self.row_at[c] != u32::MAX,
                    col_addr[c].wrapping_add(step),
                    pair,
                );
            }
        }
    }
}

macro_rules! decode_kernels {
    ($($name:ident => $body:expr;)*) => {$(
        /// Decode kernel entry point; see `DecodeArgs` for the parameters.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            kv_map: *const u8,
            q: *const u16,
            block_table: *const i32,
            seqlens: *const i32,
            parts: *const PartWork,
            order: *const i32,
            split_offsets: *const i32,
            out: *mut u8,
            lse: *mut f32,
            o_accum: *mut f32,
            lse_accum: *mut f32,
            s_q: u32,
            h_q: u32,
            h_kv: u32,
            max_pages: u32,
            num_blocks: u32,
            errors: *mut i32,
            row_chunks: u32,
            softmax_scale: f32,
            flags: u32,
            o_accum_map: *const u8,
        ) {
            ($body)(&DecodeArgs {
                kv_map, q, block_table, seqlens, parts, order, split_offsets, out, lse, o_accum,
                lse_accum,
                s_q, h_q, h_kv, max_pages,
                num_blocks,
                errors,
                row_chunks, softmax_scale, flags, o_accum_map,
            })
        }
    )*};
}

use crate::element::{Bf16, F16};
use crate::ptx::wgmma::{N16, N32, N8};
use crate::seesaw;
// 64-row tiles run the seesaw kernel in FlashMLA's orientation; 16- and 32-row tiles the
// transposed one. `_split`: P split into two 16-bit terms (`Precision::Accurate` on the
// host, and `Fast` on 16-row tiles over long shares: `plan::split_p_for`); the transposed
// tiles stack the low half as N more columns of Pᵀ. `_pa_first`: the 64-row pairs with P
// rounded once in the split kernel's order (`plan::seesaw_pa_first`). `_p16`: the 64-row
// kernels writing scaled f16 partial results, for bf16 output (`Schedule::partials_f16`).
// Kernels of their own rather than a flag: a run-time branch around the wgmma batches
// makes ptxas spill the accumulators, and one between the two seesaw orders made the
// kernel 2-30 % slower (H200, thirty-fifth session); a run-time f16 store path cost the
// f32 one 1-3 % (forty-eighth).
decode_kernels! {
    etap_decode_bf16_r64 => seesaw::decode::<Bf16, false, false, false>;
    etap_decode_f16_r64 => seesaw::decode::<F16, false, false, false>;
    etap_decode_bf16_r64_pa_first => seesaw::decode::<Bf16, false, true, false>;
    etap_decode_f16_r64_pa_first => seesaw::decode::<F16, false, true, false>;
    etap_decode_bf16_r64_split => seesaw::decode::<Bf16, true, true, false>;
    etap_decode_f16_r64_split => seesaw::decode::<F16, true, true, false>;
    etap_decode_bf16_r64_p16 => seesaw::decode::<Bf16, false, false, true>;
    etap_decode_bf16_r64_pa_first_p16 => seesaw::decode::<Bf16, false, true, true>;
    etap_decode_bf16_r64_split_p16 => seesaw::decode::<Bf16, true, true, true>;
    etap_decode_bf16_r16 => decode::<Bf16, N8, N8>;
    etap_decode_bf16_r32 => decode::<Bf16, N16, N16>;
    etap_decode_f16_r16 => decode::<F16, N8, N8>;
    etap_decode_f16_r32 => decode::<F16, N16, N16>;
    etap_decode_bf16_r16_split => decode::<Bf16, N8, N16>;
    etap_decode_bf16_r32_split => decode::<Bf16, N16, N32>;
    etap_decode_f16_r16_split => decode::<F16, N8, N16>;
    etap_decode_f16_r32_split => decode::<F16, N16, N32>;
}
