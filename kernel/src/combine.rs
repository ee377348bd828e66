//! Merges the partial (O, lse) of requests split over several partitions, and writes the
//! empty result (out = 0, lse = +inf) of requests with no KV at all. One CTA per
//! (query row, request); requests handled in one piece were written by the decode. The
//! `_wide` kernels, for requests split many times, run `COMBINE_WIDE_GROUPS` groups of 128
//! threads that each take every `COMBINE_WIDE_GROUPS`-th partial result and meet in shared
//! memory. The `_sliced` kernels are the wide ones over one slice of a row's dims (grid z
//! slices, `COMBINE_MAX_DIM_SLICES` at most): a group is then 128 / slices threads, and a
//! CTA's 512 threads make that many more groups.
use crate::config::{COMBINE_GROUP_THREADS, COMBINE_WIDE_GROUPS, D_V, ERROR_WORDS, FLAG_OUT_F32};
use crate::element::{Bf16, Element, F16};
use crate::ptx::{barrier, griddep, ids, math, smem};

const LOG2_E: f32 = core::f32::consts::LOG2_E;
/// V dims per thread of a group.
const DIMS_PER_THREAD: u32 = D_V / COMBINE_GROUP_THREADS;
/// Partial results a thread loads before combining them.
const SPLIT_BATCH: usize = 8;

/// Combine body: grid (s_q·h_q, batch, dim slices), `GROUPS` · `COMBINE_GROUP_THREADS`
/// threads; `SLICED`: the grid's z slices a row's dims (else it is 1).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn combine<T: Element, const GROUPS: u32, const SLICED: bool>(
    o_accum: *const f32,
    lse_accum: *const f32,
    split_offsets: *const i32,
    out: *mut u8,
    lse: *mut f32,
    errors: *mut i32,
    s_q: u32,
    h_q: u32,
    flags: u32,
) {
    // Launched as a programmatic dependent of the decode: let the next decode start its
    // set-up now. The split offsets are the plan's, written before the decode.
    griddep::launch_dependents();
    let (row, r) = (ids::block_x(), ids::block_y());
    let (slices, slice) = if SLICED {
        (ids::grid_z(), ids::block_z())
    } else {
        (1, 0)
    };
    let first = *split_offsets.add(r as usize);
    let splits = *split_offsets.add(r as usize + 1) - first;
    let publishes_errors = row == 0 && r == 0 && slice == 0;
    if splits == 1 && !publishes_errors {
        // Written by the decode. (One CTA always waits for it below, so the combine
        // never completes before the decode.)
        return;
    }
    griddep::wait();
    if publishes_errors && ids::thread() == 0 {
        // The decode has finished: publish its error words and re-arm them for the next
        // call, which saves a memset per call.
        for w in 0..ERROR_WORDS {
            *errors.add(ERROR_WORDS + w) = *errors.add(w);
            *errors.add(w) = i32::MAX;
        }
    }
    if splits == 1 {
        return;
    }
    let rows = s_q * h_q;
    let (s, h) = (row / h_q, row % h_q);
    // A group covers the CTA's slice of the dims; the CTA's groups stride over the splits.
    let (dims, groups) = (D_V / slices, GROUPS * slices);
    let group_threads = COMBINE_GROUP_THREADS / slices;
    let (group, t) = (ids::thread() / group_threads, ids::thread() % group_threads);
    let dim0 = slice * dims + t * DIMS_PER_THREAD;
    // Shared memory: per group its max, its sum of weights, then its weighted dims.
    let base = smem::base();
    let max_at = |g: u32| base + 4 * g;
    let total_at = |g: u32| base + 4 * (groups + g);
    let acc_at = |g: u32, d: u32| base + 4 * (2 * groups + g * dims + t * DIMS_PER_THREAD + d);
    let slot_lse = |i: i32| *lse_accum.add(((first + i) as u32 * rows + row) as usize);
    // This thread's 4 dims of partial result `i` (16-byte aligned: D_V and 4·t are multiples of 4).
    let slot_o = |i: i32| {
        *(o_accum.add((((first + i) as u32 * rows + row) * D_V + dim0) as usize)
            as *const [f32; DIMS_PER_THREAD as usize])
    };
    // The partial results of this group, SPLIT_BATCH at a time: independent loads, so their
    // latencies overlap instead of adding up (a long request can have ~100 splits). One
    // pass with a running max (the sums rescaled when it rises), so the O loads do not
    // wait for a separate pass over the lse values.
    let stride = groups as i32;
    let batch_of = |i: i32, k: usize| i + stride * k as i32;
    let mut max = f32::NEG_INFINITY;
    let mut acc = [0.0f32; DIMS_PER_THREAD as usize];
    let mut total = 0.0f32;
    let mut i = group as i32;
    while i < splits {
        let mut lse_batch = [f32::NEG_INFINITY; SPLIT_BATCH];
        let mut o_batch = [[0.0f32; DIMS_PER_THREAD as usize]; SPLIT_BATCH];
        for k in 0..SPLIT_BATCH {
            if batch_of(i, k) < splits {
                lse_batch[k] = slot_lse(batch_of(i, k));
                o_batch[k] = slot_o(batch_of(i, k));
            }
        }
        let batch_max = lse_batch.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
        // Pieces with no visible key (lse = -inf) weigh nothing.
        if batch_max != f32::NEG_INFINITY {
            if batch_max > max {
                let alpha = math::exp2((max - batch_max) * LOG2_E);
                total *= alpha;
                for a in acc.iter_mut() {
                    *a *= alpha;
                }
                max = batch_max;
            }
            for k in 0..SPLIT_BATCH {
                let w = math::exp2((lse_batch[k] - max) * LOG2_E);
                total += w;
                for (d, a) in acc.iter_mut().enumerate() {
                    *a += w * o_batch[k][d];
                }
            }
        }
        i += stride * SPLIT_BATCH as i32;
    }
    if groups > 1 {
        // The groups meet at the largest of their maxima.
        if t == 0 {
            smem::st_f32(max_at(group), max);
        }
        barrier::sync_cta();
        let mut top = max;
        for g in 0..groups {
            top = top.max(smem::ld_f32(max_at(g)));
        }
        let scale = if max == f32::NEG_INFINITY {
            0.0
        } else {
            math::exp2((max - top) * LOG2_E)
        };
        max = top;
        total *= scale;
        for a in acc.iter_mut() {
            *a *= scale;
        }
        if group > 0 {
            for (d, a) in acc.iter().enumerate() {
                smem::st_f32(acc_at(group, d as u32), *a);
            }
            if t == 0 {
                smem::st_f32(total_at(group), total);
            }
        }
        barrier::sync_cta();
        if group > 0 {
            return;
        }
        for g in 1..groups {
            for (d, a) in acc.iter_mut().enumerate() {
                *a += smem::ld_f32(acc_at(g, d as u32));
            }
            total += smem::ld_f32(total_at(g));
        }
    }

    let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
    let dst = ((r * rows + row) * D_V + dim0) as usize;
    for (d, a) in acc.iter().enumerate() {
        if flags & FLAG_OUT_F32 != 0 {
            *(out as *mut f32).add(dst + d) = *a * inv;
        } else {
            *(out as *mut u16).add(dst + d) = T::from_f32(*a * inv);
        }
    }
    if t == 0 && slice == 0 {
        let l = if total > 0.0 {
            max + math::log2(total) * core::f32::consts::LN_2
        } else {
            f32::INFINITY
        };
        *lse.add(((r * h_q + h) * s_q + s) as usize) = l;
    }
}

macro_rules! combine_kernels {
    ($($name:ident $t:ty, $groups:expr, $sliced:expr;)*) => {$(
        /// Combine kernel entry point.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            o_accum: *const f32,
            lse_accum: *const f32,
            split_offsets: *const i32,
            out: *mut u8,
            lse: *mut f32,
            errors: *mut i32,
            s_q: u32,
            h_q: u32,
            flags: u32,
        ) {
            combine::<$t, { $groups }, $sliced>(
                o_accum, lse_accum, split_offsets, out, lse, errors, s_q, h_q, flags,
            )
        }
    )*};
}

combine_kernels! {
    etap_combine_bf16 Bf16, 1, false;
    etap_combine_f16 F16, 1, false;
    etap_combine_bf16_wide Bf16, COMBINE_WIDE_GROUPS, false;
    etap_combine_f16_wide F16, COMBINE_WIDE_GROUPS, false;
    etap_combine_bf16_sliced Bf16, COMBINE_WIDE_GROUPS, true;
    etap_combine_f16_sliced F16, COMBINE_WIDE_GROUPS, true;
}
