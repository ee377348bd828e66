//! Merges the partial (O, lse) of requests split over several partitions, and writes the
//! empty result (out = 0, lse = +inf) of requests with no KV at all. One CTA per
//! (query row, request); requests handled in one piece were written by the decode.
use crate::config::{COMBINE_THREADS, D_V, ERROR_WORDS, FLAG_OUT_F32};
use crate::element::{Bf16, Element, F16};
use crate::ptx::{ids, math};

const LOG2_E: f32 = core::f32::consts::LOG2_E;
const DIMS_PER_THREAD: u32 = D_V / COMBINE_THREADS;
/// Partial results a thread loads before combining them.
const SPLIT_BATCH: usize = 8;

/// Combine body: grid (s_q·h_q, batch), `COMBINE_THREADS` threads.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn combine<T: Element>(
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
    let (row, r) = (ids::block_x(), ids::block_y());
    if row == 0 && r == 0 && ids::thread() == 0 {
        // The decode has finished: publish its error words and re-arm them for the next
        // call, which saves a memset per call.
        for w in 0..ERROR_WORDS {
            *errors.add(ERROR_WORDS + w) = *errors.add(w);
            *errors.add(w) = i32::MAX;
        }
    }
    let first = *split_offsets.add(r as usize);
    let splits = *split_offsets.add(r as usize + 1) - first;
    if splits == 1 {
        return;
    }
    let rows = s_q * h_q;
    let (s, h) = (row / h_q, row % h_q);
    let t = ids::thread();
    let slot_lse = |i: i32| *lse_accum.add(((first + i) as u32 * rows + row) as usize);
    // This thread's 4 dims of partial result `i` (16-byte aligned: D_V and 4·t are multiples of 4).
    let slot_o = |i: i32| {
        *(o_accum.add((((first + i) as u32 * rows + row) * D_V + t * DIMS_PER_THREAD) as usize)
            as *const [f32; DIMS_PER_THREAD as usize])
    };

    // Splits are read in batches of SPLIT_BATCH independent loads, so their latencies
    // overlap instead of adding up (a single long request can have ~100 splits).
    let mut max = f32::NEG_INFINITY;
    let mut i = 0;
    while i < splits {
        let mut lse_batch = [f32::NEG_INFINITY; SPLIT_BATCH];
        for (k, l) in lse_batch.iter_mut().enumerate() {
            if i + (k as i32) < splits {
                *l = slot_lse(i + k as i32);
            }
        }
        for l in lse_batch.iter() {
            max = max.max(*l);
        }
        i += SPLIT_BATCH as i32;
    }
    let mut acc = [0.0f32; DIMS_PER_THREAD as usize];
    let mut total = 0.0f32;
    if max != f32::NEG_INFINITY {
        let mut i = 0;
        while i < splits {
            let mut lse_batch = [f32::NEG_INFINITY; SPLIT_BATCH];
            let mut o_batch = [[0.0f32; DIMS_PER_THREAD as usize]; SPLIT_BATCH];
            for k in 0..SPLIT_BATCH {
                if i + (k as i32) < splits {
                    lse_batch[k] = slot_lse(i + k as i32);
                    o_batch[k] = slot_o(i + k as i32);
                }
            }
            for k in 0..SPLIT_BATCH {
                let w = math::exp2((lse_batch[k] - max) * LOG2_E);
                total += w;
                for (d, a) in acc.iter_mut().enumerate() {
                    *a += w * o_batch[k][d];
                }
            }
            i += SPLIT_BATCH as i32;
        }
    }
    let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
    let dst = ((r * rows + row) * D_V + t * DIMS_PER_THREAD) as usize;
    for (d, a) in acc.iter().enumerate() {
        if flags & FLAG_OUT_F32 != 0 {
            *(out as *mut f32).add(dst + d) = *a * inv;
        } else {
            *(out as *mut u16).add(dst + d) = T::from_f32(*a * inv);
        }
    }
    if t == 0 {
        let l = if total > 0.0 {
            max + math::log2(total) * core::f32::consts::LN_2
        } else {
            f32::INFINITY
        };
        *lse.add(((r * h_q + h) * s_q + s) as usize) = l;
    }
}

macro_rules! combine_kernels {
    ($($name:ident $t:ty;)*) => {$(
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
            combine::<$t>(o_accum, lse_accum, split_offsets, out, lse, errors, s_q, h_q, flags)
        }
    )*};
}

combine_kernels! {
    etap_combine_bf16 Bf16;
    etap_combine_f16 F16;
}
