//! Merges the partial (O, lse) of requests split over several partitions, and writes the
//! empty result (out = 0, lse = +inf) of requests with no KV at all; requests handled in
//! one piece were written by the decode. The more pieces a request has, the more threads
//! merge a row, so that they have all its loads in flight:
//! - narrow (`etap_combine_*`, up to `COMBINE_NARROW_MAX_SPLITS` pieces): a warp a
//!   (request, query row), 16 of its dims a lane, `COMBINE_NARROW_ROWS` rows a CTA;
//!   `_pair` the same for up to `COMBINE_PAIR_MAX_SPLITS` pieces, loading only that many;
//! - `_medium` (up to `COMBINE_WIDE_MIN_SPLITS` - 1): `COMBINE_MEDIUM_TEAM` threads a row,
//!   a row a CTA;
//! - `_wide`: one CTA a row, `COMBINE_WIDE_GROUPS` groups of 128 threads that each take
//!   every `COMBINE_WIDE_GROUPS`-th partial result and meet in shared memory;
//! - `_sliced`: the wide kernel over one slice of a row's dims (grid z slices,
//!   `COMBINE_MAX_DIM_SLICES` at most): a group is then 128 / slices threads, and a CTA's
//!   512 threads make that many more groups.
//!
//! The `_p16` kernels (bf16 only) read the 64-row decode's scaled f16 partial results
//! (`config::PARTIAL_SCALES_BYTE`), the others f32 ones.
use crate::config::{
    COMBINE_GROUP_THREADS, COMBINE_MEDIUM_TEAM, COMBINE_NARROW_MAX_SPLITS, COMBINE_PAIR_MAX_SPLITS,
    COMBINE_WIDE_GROUPS, D_V, ERROR_EMPTY_PLANNED, ERROR_WORDS, FLAG_DROP_PARTIALS, FLAG_OUT_F32,
    PARTIAL_ROW_BYTES, PARTIAL_SCALES_BYTE, PARTIAL_SCALE_DIMS,
};
use crate::element::{Bf16, Element, F16};
use crate::ptx::cache::{self, L2_LINE_BYTES};
use crate::ptx::{atomic, barrier, griddep, ids, math, smem, warp};

const LOG2_E: f32 = core::f32::consts::LOG2_E;
/// V dims of one load of a partial result (16 bytes).
const CHUNK: u32 = 4;
/// Chunks of a row a narrow thread merges (loads of a partial result): a warp a row.
const NARROW_CHUNKS: usize = (D_V / (32 * CHUNK)) as usize;
/// Chunks of a row a medium thread merges.
const MEDIUM_CHUNKS: usize = (D_V / (COMBINE_MEDIUM_TEAM * CHUNK)) as usize;
/// Partial results a narrow thread loads before merging them: all of a request's.
const NARROW_BATCH: usize = COMBINE_NARROW_MAX_SPLITS as usize;
/// The same for the `_pair` kernels.
const PAIR_BATCH: usize = COMBINE_PAIR_MAX_SPLITS as usize;
/// Partial results a medium thread loads before merging them.
const MEDIUM_BATCH: usize = 8;
/// Partial results a wide group's thread (one chunk) loads before merging them.
const WIDE_BATCH: usize = 8;

/// One chunk of f32 dims as a single 16-byte access (`ld/st.global.v4.f32`): the type's
/// alignment is what lets the compiler vectorise it.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct F32x4([f32; CHUNK as usize]);
/// One chunk of 16-bit dims as a single 8-byte access.
#[repr(C, align(8))]
struct Packed4([u32; 2]);
/// A scaled f16 partial row's two scales as a single 8-byte load.
#[repr(C, align(8))]
struct F32x2([f32; 2]);

/// The kernels' arguments.
#[derive(Clone, Copy)]
struct Args {
    o_accum: *const f32,
    lse_accum: *const f32,
    split_offsets: *const i32,
    /// cache_seqlens [batch] (the device lengths).
    seqlens: *const i32,
    out: *mut u8,
    lse: *mut f32,
    errors: *mut i32,
    s_q: u32,
    h_q: u32,
    flags: u32,
}

/// A thread's part of one row's merge: chunks of `CHUNK` dims, the first at `dim0`,
/// `stride` dims apart.
struct Part {
    /// Request and query row (within the request's s_q · h_q).
    r: u32,
    row: u32,
    dim0: u32,
    stride: u32,
}

/// What a thread has merged of its row: the largest lse seen, the sum of the weights
/// `exp(lse - max)` and the weighted sum of its dims.
struct Merged<const C: usize> {
    max: f32,
    total: f32,
    acc: [[f32; CHUNK as usize]; C],
}

/// The start every combine kernel shares: lets the next decode start its set-up, reads
/// request `r`'s pieces and, once the decode is done, publishes its error words from the
/// CTA that `publishes_errors`. `None` where request `r` needs no merge (one piece: the
/// decode wrote it).
#[inline(always)]
unsafe fn enter(a: &Args, r: u32, publishes_errors: bool) -> Option<(i32, i32)> {
    // Launched as a programmatic dependent of the decode. The split offsets are the
    // plan's, written before the decode.
    griddep::launch_dependents();
    let first = *a.split_offsets.add(r as usize);
    let splits = *a.split_offsets.add(r as usize + 1) - first;
    if splits == 1 && !publishes_errors {
        // (One CTA always waits for the decode below, so the combine never completes
        // before it.)
        return None;
    }
    griddep::wait();
    if publishes_errors && ids::thread() == 0 {
        // The decode has finished: publish its error words and re-arm them for the next
        // call, which saves a memset per call.
        for w in 0..ERROR_WORDS {
            *a.errors.add(ERROR_WORDS + w) = *a.errors.add(w);
            *a.errors.add(w) = i32::MAX;
        }
    }
    // A request the plan gave no pages must have none on the device either: the decode
    // reads it only if it lies inside a partition's range, and its output is the empty
    // result written here.
    let planned_empty = splits == 0 && ids::thread() == 0;
    if planned_empty && *a.seqlens.add(r as usize) > 0 {
        atomic::min_i32(a.errors.add(ERROR_EMPTY_PLANNED), r as i32);
    }
    (splits != 1).then_some((first, splits))
}

/// Merges partial results `i0`, `i0 + stride`, ... below `splits` (slots from `first`) of
/// this thread's part, `BATCH` at a time: independent loads, so their latencies overlap
/// instead of adding up (a long request can have ~100 splits). One pass with a running
/// max (the sums rescaled when it rises), so the O loads do not wait for a separate pass
/// over the lse values.
///
/// `P16`: the partial results are scaled f16 (the `_p16` kernels), else f32.
///
/// With `FLAG_DROP_PARTIALS` the partial results' L2 lines are dropped once read: the next
/// call's KV stream would otherwise write them back to memory, between its reads. The
/// lanes that read a line are in one warp, so it is dropped after a warp barrier.
#[inline(always)]
unsafe fn merge<const C: usize, const BATCH: usize, const P16: bool>(
    a: &Args,
    p: &Part,
    first: i32,
    splits: i32,
    i0: i32,
    stride: i32,
) -> Merged<C> {
    let rows = a.s_q * a.h_q;
    let slot_row = |i: i32| (first + i) as u32 * rows + p.row;
    let slot_lse = |i: i32| *a.lse_accum.add(slot_row(i) as usize);
    // Partial results as scaled f16 (`P16`) or f32, in rows of `PARTIAL_ROW_BYTES`; a chunk
    // is 8 or 16 bytes, aligned as such (D_V and the dims are multiples of 4, and the host
    // allocates `o_accum` aligned).
    let elem_bytes = if P16 { 2 } else { 4 };
    let chunk_dim = |c: usize| p.dim0 + c as u32 * p.stride;
    let row_at = |i: i32| {
        (a.o_accum as *const u8).wrapping_add(slot_row(i) as usize * PARTIAL_ROW_BYTES as usize)
    };
    let chunk_at = |i: i32, c: usize| {
        if P16 {
            row_at(i).wrapping_add((chunk_dim(c) * elem_bytes) as usize)
        } else {
            a.o_accum
                .wrapping_add((slot_row(i) * D_V + chunk_dim(c)) as usize)
                .cast()
        }
    };
    let slot_o = |i: i32, c: usize| {
        if P16 {
            let Packed4(h) = *(chunk_at(i, c) as *const Packed4);
            [
                h[0] as u16,
                (h[0] >> 16) as u16,
                h[1] as u16,
                (h[1] >> 16) as u16,
            ]
            .map(F16::to_f32)
        } else {
            (*(chunk_at(i, c) as *const F32x4)).0
        }
    };
    // The scale of each chunk's half (f16 partial results only).
    let slot_scales = |i: i32| {
        let [low, high] =
            (*(row_at(i).wrapping_add(PARTIAL_SCALES_BYTE as usize) as *const F32x2)).0;
        core::array::from_fn::<f32, C, _>(|c| {
            if chunk_dim(c) < PARTIAL_SCALE_DIMS {
                low
            } else {
                high
            }
        })
    };
    let mut m = Merged {
        max: f32::NEG_INFINITY,
        total: 0.0,
        acc: [[0.0; CHUNK as usize]; C],
    };
    let discard = a.flags & FLAG_DROP_PARTIALS != 0;
    let dims_per_line = L2_LINE_BYTES / elem_bytes;
    let mut i = i0;
    while i < splits {
        let mut lse_batch = [f32::NEG_INFINITY; BATCH];
        let mut o_batch = [[[0.0f32; CHUNK as usize]; C]; BATCH];
        let mut scale_batch = [[0.0f32; C]; BATCH];
        for k in 0..BATCH {
            let ik = i + stride * k as i32;
            if ik < splits {
                lse_batch[k] = slot_lse(ik);
                if P16 {
                    scale_batch[k] = slot_scales(ik);
                }
                for (c, o) in o_batch[k].iter_mut().enumerate() {
                    *o = slot_o(ik, c);
                }
            }
        }
        let batch_max = lse_batch.iter().fold(f32::NEG_INFINITY, |x, &l| x.max(l));
        // Pieces with no visible key (lse = -inf) weigh nothing.
        if batch_max != f32::NEG_INFINITY {
            if batch_max > m.max {
                m.rescale(math::exp2((m.max - batch_max) * LOG2_E));
                m.max = batch_max;
            }
            for k in 0..BATCH {
                let w = math::exp2((lse_batch[k] - m.max) * LOG2_E);
                m.total += w;
                for c in 0..C {
                    let wc = if P16 { w * scale_batch[k][c] } else { w };
                    for d in 0..CHUNK as usize {
                        m.acc[c][d] += wc * o_batch[k][c][d];
                    }
                }
            }
        }
        if discard {
            warp::sync();
            for k in 0..BATCH {
                let ik = i + stride * k as i32;
                for c in 0..C {
                    let line_start = chunk_dim(c) % dims_per_line == 0;
                    cache::discard_l2_if(ik < splits && line_start, chunk_at(ik, c) as u64);
                }
            }
        }
        i += stride * BATCH as i32;
    }
    m
}

impl<const C: usize> Merged<C> {
    /// Sums and dims times `f`.
    #[inline(always)]
    fn rescale(&mut self, f: f32) {
        self.total *= f;
        for c in 0..C {
            for d in 0..CHUNK as usize {
                self.acc[c][d] *= f;
            }
        }
    }

    /// Writes this thread's dims of the normalised row and, if `writes_lse`, its lse.
    #[inline(always)]
    unsafe fn store<T: Element>(&self, a: &Args, p: &Part, writes_lse: bool) {
        let rows = a.s_q * a.h_q;
        let inv = if self.total > 0.0 {
            1.0 / self.total
        } else {
            0.0
        };
        for (c, acc) in self.acc.iter().enumerate() {
            let dst = ((p.r * rows + p.row) * D_V + p.dim0 + c as u32 * p.stride) as usize;
            let v = acc.map(|x| x * inv);
            if a.flags & FLAG_OUT_F32 != 0 {
                *((a.out as *mut f32).add(dst) as *mut F32x4) = F32x4(v);
            } else {
                *((a.out as *mut u16).add(dst) as *mut Packed4) =
                    Packed4([T::pack2(v[0], v[1]), T::pack2(v[2], v[3])]);
            }
        }
        if writes_lse {
            let l = if self.total > 0.0 {
                self.max + math::log2(self.total) * core::f32::consts::LN_2
            } else {
                f32::INFINITY
            };
            let (s, h) = (p.row / a.h_q, p.row % a.h_q);
            *a.lse.add(((p.r * a.h_q + h) * a.s_q + s) as usize) = l;
        }
    }
}

/// Narrow and medium combine body: grid (ceil(s_q·h_q / rows a CTA), batch), a row for
/// each `D_V / (C · 4)` threads of the CTA, each thread over `C` chunks of 4 dims (one
/// 16-byte load of a partial result each, 8-byte if `P16`), `BATCH` partial results
/// loaded at once.
#[inline(always)]
unsafe fn combine_rows<T: Element, const C: usize, const BATCH: usize, const P16: bool>(a: &Args) {
    let r = ids::block_y();
    let Some((first, splits)) = enter(a, r, ids::block_x() == 0 && r == 0) else {
        return;
    };
    let team = D_V / (C as u32 * CHUNK);
    let (rank, t) = (ids::thread() / team, ids::thread() % team);
    let row = ids::block_x() * (ids::block_threads() / team) + rank;
    if row >= a.s_q * a.h_q {
        return;
    }
    let p = Part {
        r,
        row,
        dim0: t * CHUNK,
        stride: team * CHUNK,
    };
    merge::<C, BATCH, P16>(a, &p, first, splits, 0, 1).store::<T>(a, &p, t == 0);
}

/// Wide combine body: grid (s_q·h_q, batch, dim slices), `COMBINE_WIDE_GROUPS` ·
/// `COMBINE_GROUP_THREADS` threads; `SLICED`: the grid's z slices a row's dims (else it
/// is 1); `P16`: scaled f16 partial results.
#[inline(always)]
unsafe fn combine_wide<T: Element, const SLICED: bool, const P16: bool>(a: &Args) {
    let (row, r) = (ids::block_x(), ids::block_y());
    let (slices, slice) = if SLICED {
        (ids::grid_z(), ids::block_z())
    } else {
        (1, 0)
    };
    let Some((first, splits)) = enter(a, r, row == 0 && r == 0 && slice == 0) else {
        return;
    };
    // A group covers the CTA's slice of the dims; the CTA's groups stride over the splits.
    let (dims, groups) = (D_V / slices, COMBINE_WIDE_GROUPS * slices);
    let group_threads = COMBINE_GROUP_THREADS / slices;
    let (group, t) = (ids::thread() / group_threads, ids::thread() % group_threads);
    let p = Part {
        r,
        row,
        dim0: slice * dims + t * CHUNK,
        stride: 0,
    };
    let mut m = merge::<1, WIDE_BATCH, P16>(a, &p, first, splits, group as i32, groups as i32);
    // Shared memory: per group its max, its sum of weights, then its weighted dims.
    let base = smem::base();
    let max_at = |g: u32| base + 4 * g;
    let total_at = |g: u32| base + 4 * (groups + g);
    let acc_at = |g: u32, d: u32| base + 4 * (2 * groups + g * dims + t * CHUNK + d);
    // The groups meet at the largest of their maxima.
    if t == 0 {
        smem::st_f32(max_at(group), m.max);
    }
    barrier::sync_cta();
    let mut top = m.max;
    for g in 0..groups {
        top = top.max(smem::ld_f32(max_at(g)));
    }
    m.rescale(if m.max == f32::NEG_INFINITY {
        0.0
    } else {
        math::exp2((m.max - top) * LOG2_E)
    });
    m.max = top;
    if group > 0 {
        for d in 0..CHUNK {
            smem::st_f32(acc_at(group, d), m.acc[0][d as usize]);
        }
        if t == 0 {
            smem::st_f32(total_at(group), m.total);
        }
    }
    barrier::sync_cta();
    if group > 0 {
        return;
    }
    for g in 1..groups {
        for d in 0..CHUNK {
            m.acc[0][d as usize] += smem::ld_f32(acc_at(g, d));
        }
        m.total += smem::ld_f32(total_at(g));
    }
    m.store::<T>(a, &p, t == 0 && slice == 0);
}

macro_rules! combine_kernels {
    ($($name:ident $body:expr;)*) => {$(
        /// Combine kernel entry point.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(
            o_accum: *const f32,
            lse_accum: *const f32,
            split_offsets: *const i32,
            seqlens: *const i32,
            out: *mut u8,
            lse: *mut f32,
            errors: *mut i32,
            s_q: u32,
            h_q: u32,
            flags: u32,
        ) {
            let a = Args {
                o_accum, lse_accum, split_offsets, seqlens, out, lse, errors, s_q, h_q, flags,
            };
            $body(&a)
        }
    )*};
}

combine_kernels! {
    etap_combine_bf16 combine_rows::<Bf16, NARROW_CHUNKS, NARROW_BATCH, false>;
    etap_combine_f16 combine_rows::<F16, NARROW_CHUNKS, NARROW_BATCH, false>;
    etap_combine_bf16_pair combine_rows::<Bf16, NARROW_CHUNKS, PAIR_BATCH, false>;
    etap_combine_f16_pair combine_rows::<F16, NARROW_CHUNKS, PAIR_BATCH, false>;
    etap_combine_bf16_medium combine_rows::<Bf16, MEDIUM_CHUNKS, MEDIUM_BATCH, false>;
    etap_combine_f16_medium combine_rows::<F16, MEDIUM_CHUNKS, MEDIUM_BATCH, false>;
    etap_combine_bf16_wide combine_wide::<Bf16, false, false>;
    etap_combine_f16_wide combine_wide::<F16, false, false>;
    etap_combine_bf16_sliced combine_wide::<Bf16, true, false>;
    etap_combine_f16_sliced combine_wide::<F16, true, false>;
    etap_combine_bf16_p16 combine_rows::<Bf16, NARROW_CHUNKS, NARROW_BATCH, true>;
    etap_combine_bf16_p16_pair combine_rows::<Bf16, NARROW_CHUNKS, PAIR_BATCH, true>;
    etap_combine_bf16_p16_medium combine_rows::<Bf16, MEDIUM_CHUNKS, MEDIUM_BATCH, true>;
    etap_combine_bf16_p16_wide combine_wide::<Bf16, false, true>;
    etap_combine_bf16_p16_sliced combine_wide::<Bf16, true, true>;
}
