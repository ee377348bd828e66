//! The decode API, modelled on FlashMLA's `get_mla_metadata` + `flash_mla_with_kvcache`:
//! build a [`DecodePlan`] once per step from the cache lengths, then call
//! [`Decoder::decode`] for every layer. The decode call validates its arguments on the
//! host, then launches the ETAP kernel and (for split requests) the combine kernel on the
//! caller's stream: no host synchronisation, no allocation, so it can be captured in a
//! CUDA graph.
use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::launch::{launch, max_active_clusters, LaunchSpec};
use crate::module::Kernels;
use crate::order::{self, plan_ordered, OrderedPlan};
use crate::reference::Dtype;
use crate::tensor_map::{encode_tiled, Swizzle, TensorMap, TmaDtype};
use cudarc::driver::{sys, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr};
use etap_kernel::config::{
    combine_wide_smem_bytes, decode_smem_bytes, decode_threads, kv_map_index, COL_BLOCK,
    COMBINE_GROUP_THREADS, COMBINE_MEDIUM_TEAM, COMBINE_NARROW_MAX_SPLITS, COMBINE_NARROW_ROWS,
    COMBINE_PAIR_MAX_SPLITS, COMBINE_WIDE_GROUPS, COMBINE_WIDE_MIN_SPLITS, D_QK, D_V,
    ERROR_BUFFER_WORDS, ERROR_EMPTY_PLANNED, ERROR_LENGTH, ERROR_PAGE_ID, ERROR_PLAN, ERROR_WORDS,
    FLAG_BULK_PARTIALS, FLAG_CAUSAL, FLAG_DROP_PARTIALS, FLAG_KV_EVICT_FIRST, FLAG_KV_HALF_BOXES,
    FLAG_ORDERED, FLAG_OUT_F32, KV_BOX_TOKENS, KV_MAP_HALF, MAX_ROWS_PER_CTA, PAGE_SIZE,
    PARTIAL_ROW_BYTES, ROW_TILES, SEESAW_CLUSTER_CTAS, SEESAW_ROWS,
};
use etap_kernel::plan::{self, PartWork};
use std::sync::Arc;

/// Most query positions per request (speculative / MTP decoding).
pub const MAX_S_Q: usize = 4;
/// Most requests per call (the combine grid's y dimension).
pub const MAX_BATCH: usize = 65535;
/// Most SMs a plan is made for ([`DecodePlan::schedule`]'s `sm_count`): far above any GPU's,
/// and low enough that the partial-result slots of every plan stay within the kernels'
/// 32-bit offsets (see [`DecodeConfig::validate`]).
pub const MAX_SM_COUNT: u32 = 4096;
/// Largest `max_pages` (and cache `num_blocks`): page ids are `i32` and a row of 64 · max_pages
/// tokens must fit one too.
pub const MAX_PAGES: usize = i32::MAX as usize / PAGE_SIZE as usize;
/// Element counts the kernels index with 32-bit arithmetic must stay below this.
const INDEX_LIMIT: u64 = 1 << 32;

/// An element type of q, the KV cache and out.
///
/// q, the cache and out share one `T` in [`Decoder::decode`], so mixing bf16 and fp16
/// buffers is a compile error rather than a run-time check.
pub trait KvElement: DeviceRepr + Copy + Default + Send + Sync + 'static {
    /// The runtime tag of the type.
    const DTYPE: Dtype;
}
impl KvElement for half::bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
}
impl KvElement for half::f16 {
    const DTYPE: Dtype = Dtype::F16;
}

/// How the softmax probabilities P enter the second GEMM (Oᵀ = Vᵀ·Pᵀ on 16/32-row tiles,
/// O = P·V on 64-row ones), whose operands must be 16-bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Precision {
    /// P rounded once to the input type, as FlashMLA does: that rounding adds to the
    /// output's error (RMSE about 1.2× the rounding floor with bf16). Where the split
    /// kernel is the faster one (16-row tiles over more than 32 pages a partition,
    /// `plan::split_p_for`) the plan runs it instead, and the output is `Accurate`'s
    /// ([`DecodePlan::rounds_p_once`]).
    Fast,
    /// P split into two 16-bit terms, P_hi + P_lo, both multiplied by V: the output's
    /// error is the rounding floor's (at most ~0.8 % above it on 64-row tiles over short
    /// shares with bf16 output, whose partial results are f16: `Schedule::partials_f16`).
    /// On 64-row tiles the P·V GEMM does twice the work.
    #[default]
    Accurate,
}

/// The shape and options of one decode step (shared by every layer that uses the plan).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeConfig {
    /// Requests in the step, `1..=65535`.
    pub batch: usize,
    /// Query positions per request (1 = plain decoding, 2..=4 = MTP / speculative).
    pub s_q: usize,
    /// Query heads, a positive multiple of `h_kv`; `s_q · h_q ≤ 65535`.
    pub h_q: usize,
    /// KV heads (MLA: 1); `h_q % h_kv == 0`.
    pub h_kv: usize,
    /// Block-table width: pages per request at most.
    pub max_pages: usize,
    /// With `s_q > 1`, query i sees keys `0 ..= L - s_q + i`.
    pub causal: bool,
    /// Defaults to 576^-0.5.
    pub softmax_scale: f32,
    /// Defaults to [`Precision::Accurate`].
    pub precision: Precision,
}

impl DecodeConfig {
    /// `batch` requests of one query position and `h_q` heads over one latent KV head;
    /// non-causal, default scale, block table width `max_pages`.
    pub fn new(batch: usize, h_q: usize, max_pages: usize) -> Self {
        DecodeConfig {
            batch,
            s_q: 1,
            h_q,
            h_kv: 1,
            max_pages,
            causal: false,
            softmax_scale: (D_QK as f32).powf(-0.5),
            precision: Precision::default(),
        }
    }
    /// Sets the query positions per request (`1..=4`).
    pub fn s_q(mut self, s_q: usize) -> Self {
        self.s_q = s_q;
        self
    }
    /// Sets the KV heads (`h_q` must be a multiple).
    pub fn h_kv(mut self, h_kv: usize) -> Self {
        self.h_kv = h_kv;
        self
    }
    /// Sets the causal mask (matters only for `s_q > 1`).
    pub fn causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }
    /// Sets the softmax scale (finite, positive).
    pub fn softmax_scale(mut self, scale: f32) -> Self {
        self.softmax_scale = scale;
        self
    }
    /// Sets how P is rounded for the P·V GEMM.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Checks every rule on the shape; the error ([`Error::InvalidArgument`]) names the field
    /// and the rule: batch in `1..=65535`, s_q in `1..=4`, h_kv ≥ 1, h_q a positive multiple
    /// of h_kv, `s_q · h_q ≤ 65535`, max_pages in `1..=2^25-1` ([`MAX_PAGES`]), softmax_scale
    /// positive with scale · log2(e) finite (the kernels' softmax runs in base 2), and (the kernels index in 32 bits) `batch · s_q · h_q · 576 < 2^32` and
    /// `batch · max_pages < 2^32`. Head dims (576/512) and the page size (64) are fixed by the API and show up
    /// as buffer lengths ([`DecodeConfig::check_buffers`], [`KvCache::check_shape`]).
    ///
    /// ```rust
    /// use flashmla_etap::decode::DecodeConfig;
    /// // 8 requests, 2 query positions (MTP), 128 heads, block tables of 64 pages.
    /// let config = DecodeConfig::new(8, 128, 64).s_q(2).causal(true);
    /// assert!(config.validate().is_ok());
    /// // 5 query positions are more than the kernels support.
    /// assert!(DecodeConfig::new(8, 128, 64).s_q(5).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(Error::invalid(
                "batch",
                format!("{} is not in 1..={MAX_BATCH}", self.batch),
            ));
        }
        if self.s_q == 0 || self.s_q > MAX_S_Q {
            return Err(Error::invalid(
                "s_q",
                format!("{} is not in 1..={MAX_S_Q}", self.s_q),
            ));
        }
        if self.h_kv == 0 {
            return Err(Error::invalid("h_kv", "must be at least 1"));
        }
        if self.h_q == 0 || !self.h_q.is_multiple_of(self.h_kv) {
            return Err(Error::invalid(
                "h_q",
                format!(
                    "{} must be a positive multiple of h_kv = {}",
                    self.h_q, self.h_kv
                ),
            ));
        }
        // s_q is in 1..=4 here; dividing keeps a huge h_q from overflowing the product.
        if self.h_q > 65535 / self.s_q {
            return Err(Error::invalid("h_q", "s_q · h_q must be at most 65535"));
        }
        if self.max_pages == 0 || self.max_pages > MAX_PAGES {
            return Err(Error::invalid(
                "max_pages",
                format!(
                    "{} is not in 1..={MAX_PAGES} (64 · max_pages tokens must fit an i32)",
                    self.max_pages
                ),
            ));
        }
        // The kernels index q, out, lse, the block table and the partial outputs in 32 bits.
        // The partial outputs hold (batch + partitions) · s_q · h_q · 512 elements, and
        // partitions · s_q · h_q ≤ SMs · 64, so they stay below q's 576 per row (the `_p16`
        // kernels' f16 slots, 1024 elements a row, are bounded by `Schedule::partials_f16`).
        if (self.batch * self.s_q * self.h_q) as u64 * D_QK as u64 >= INDEX_LIMIT {
            return Err(Error::invalid(
                "batch",
                "batch · s_q · h_q · 576 (the elements of q) must be below 2^32",
            ));
        }
        if (self.batch * self.max_pages) as u64 >= INDEX_LIMIT {
            return Err(Error::invalid(
                "max_pages",
                "batch · max_pages (the block-table entries) must be below 2^32",
            ));
        }
        if !((self.softmax_scale * core::f32::consts::LOG2_E).is_finite()
            && self.softmax_scale > 0.0)
        {
            return Err(Error::invalid(
                "softmax_scale",
                "must be positive, with softmax_scale · log2(e) finite (the softmax runs in base 2)",
            ));
        }
        Ok(())
    }

    /// The buffer checks of [`Decoder::decode`] against this shape, without a GPU: every
    /// length must equal its shape's element count exactly and the cache must have this
    /// `h_kv`. (Alignment needs no check: the API takes whole `CudaSlice`s, which the driver
    /// aligns to at least 256 bytes.)
    pub fn check_buffers(&self, lens: &BufferLens) -> Result<()> {
        let (b, s_q, h_q) = (self.batch, self.s_q, self.h_q);
        let check = |arg: &'static str, have: usize, dims: &[usize], what: &str| {
            let want = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            match want {
                Some(w) if w == have => Ok(()),
                Some(w) => Err(Error::invalid(
                    arg,
                    format!("has {have} elements; {what} = {dims:?} needs {w}"),
                )),
                None => Err(Error::invalid(arg, format!("{what} = {dims:?} overflows"))),
            }
        };
        check(
            "q",
            lens.q,
            &[b, s_q, h_q, D_QK as usize],
            "[batch, s_q, h_q, 576]",
        )?;
        check(
            "out",
            lens.out,
            &[b, s_q, h_q, D_V as usize],
            "[batch, s_q, h_q, 512]",
        )?;
        check("lse", lens.lse, &[b, h_q, s_q], "[batch, h_q, s_q]")?;
        check(
            "block_table",
            lens.block_table,
            &[b, self.max_pages],
            "[batch, max_pages]",
        )?;
        check("cache_seqlens", lens.cache_seqlens, &[b], "[batch]")?;
        if lens.cache_h_kv != self.h_kv {
            return Err(Error::invalid(
                "cache",
                format!(
                    "has h_kv = {} but the plan's config has h_kv = {}",
                    lens.cache_h_kv, self.h_kv
                ),
            ));
        }
        Ok(())
    }

    /// Query rows per KV head.
    fn rows_per_kv(&self) -> u32 {
        (self.s_q * self.h_q / self.h_kv) as u32
    }
    /// Whether this config lets the decode round P once (`Precision::Fast`) rather than
    /// split it into two 16-bit terms; whether a plan's kernel does is
    /// [`DecodePlan::rounds_p_once`].
    pub fn rounds_p_once(&self) -> bool {
        self.precision == Precision::Fast
    }
}

/// Element counts of the buffers of one [`Decoder::decode`] call (and the cache's `h_kv`),
/// for [`DecodeConfig::check_buffers`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferLens {
    /// q: `[batch, s_q, h_q, 576]`.
    pub q: usize,
    /// out: `[batch, s_q, h_q, 512]`.
    pub out: usize,
    /// lse: `[batch, h_q, s_q]`.
    pub lse: usize,
    /// block_table: `[batch, max_pages]`.
    pub block_table: usize,
    /// cache_seqlens: `[batch]`.
    pub cache_seqlens: usize,
    /// KV heads of the cache.
    pub cache_h_kv: usize,
}

/// A paged KV cache `[num_blocks, 64, h_kv, 576]` on the device, with the TMA tensor maps
/// the kernels stream it through (encoded once, kept in device memory).
pub struct KvCache<'a, T: KvElement> {
    data: &'a CudaSlice<T>,
    num_blocks: usize,
    h_kv: usize,
    /// The tensor maps of `KV_BOX_TOKENS`, one after the other.
    maps: CudaSlice<u8>,
}

impl<'a, T: KvElement> KvCache<'a, T> {
    /// Wraps `data` (exactly `num_blocks · 64 · h_kv · 576` elements, on `gpu`: memory of
    /// another GPU is an [`Error::InvalidArgument`] for `data`).
    ///
    /// The page size is fixed at 64 tokens ([`PAGE_SIZE`]):
    /// the cache is described by its page count, so no other page size can be passed. The
    /// element type `T` is shared with q and out by the type system (`decode` is generic over
    /// one `T`), so a dtype mismatch does not compile.
    pub fn new(gpu: &Gpu, data: &'a CudaSlice<T>, num_blocks: usize, h_kv: usize) -> Result<Self> {
        Self::check_shape(data.len(), num_blocks, h_kv)?;
        gpu.check_owns("data", data.context())?;
        let rows = (num_blocks * PAGE_SIZE as usize) as u64;
        let dtype = match T::DTYPE {
            Dtype::Bf16 => TmaDtype::Bf16,
            Dtype::F16 => TmaDtype::F16,
        };
        let (ptr, _sync) = data.device_ptr(&gpu.stream);
        // One map per box height the kernels load with (config::KV_BOX_TOKENS).
        let mut maps = [TensorMap([0; 128]); KV_BOX_TOKENS.len()];
        for (map, &box_tokens) in maps.iter_mut().zip(&KV_BOX_TOKENS) {
            *map = encode_tiled(
                dtype,
                ptr,
                &[D_QK as u64, h_kv as u64, rows],
                &[D_QK as u64 * 2, (h_kv * D_QK as usize * 2) as u64],
                &[COL_BLOCK, 1, box_tokens],
                Swizzle::B128,
            )?;
        }
        Ok(KvCache {
            data,
            num_blocks,
            h_kv,
            maps: TensorMap::upload_all(&maps, gpu)?,
        })
    }
    /// The argument checks of [`KvCache::new`], without a GPU: `h_kv ≥ 1`, `num_blocks` in
    /// `1..=2^25-1` ([`MAX_PAGES`]: page ids are `i32`, cache rows must fit the tensor map) and exactly
    /// `num_blocks · 64 · h_kv · 576` elements.
    pub fn check_shape(len: usize, num_blocks: usize, h_kv: usize) -> Result<()> {
        if h_kv == 0 {
            return Err(Error::invalid("h_kv", "must be at least 1"));
        }
        if num_blocks == 0 || num_blocks > MAX_PAGES {
            return Err(Error::invalid(
                "num_blocks",
                format!("{num_blocks} is not in 1..={MAX_PAGES}"),
            ));
        }
        let want = [PAGE_SIZE as usize, h_kv, D_QK as usize]
            .iter()
            .try_fold(num_blocks, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::invalid("kv_cache", "num_blocks · 64 · h_kv · 576 overflows"))?;
        if len != want {
            return Err(Error::invalid(
                "kv_cache",
                format!(
                    "has {len} elements; [num_blocks={num_blocks}, 64, h_kv={h_kv}, 576] needs {want}"
                ),
            ));
        }
        Ok(())
    }
    /// Pages in the cache (valid page ids are `0..num_blocks`).
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }
    /// KV heads per token.
    pub fn h_kv(&self) -> usize {
        self.h_kv
    }
    /// The cache's elements.
    pub fn data(&self) -> &CudaSlice<T> {
        self.data
    }
}

/// Whether the requests differ in pages (only then can their order change a plan).
fn uneven_lengths(seqlens: &[i32]) -> bool {
    let pages = |l: i32| plan::num_pages(l, PAGE_SIZE as usize);
    let first = seqlens.first().map(|&l| pages(l));
    seqlens.iter().any(|&l| Some(pages(l)) != first)
}

/// The plan in the requests' own order (`order::plan_ordered` at
/// `plan::ordered_fixed_pages` a piece) for the transposed (16/32-row) kernels, and for
/// the 64-row kernels over short shares (whose batch-order plans charge pieces nothing),
/// where `plan::keeps_ordered_plan` prefers it to the batch-order plan (`chosen`) by their
/// `plan::modelled_makespan` at the tiles' `plan::PieceCosts` and its requests need no
/// wider a combine (`plan::combine_class_max_pieces`).
fn ordered_by_model(
    seqlens: &[i32],
    num_parts: usize,
    rows_per_cta: u32,
    chosen: &(Vec<PartWork>, Vec<i32>),
) -> Option<OrderedPlan> {
    let page = PAGE_SIZE as usize;
    let costs = plan::PieceCosts::for_rows(rows_per_cta);
    let modelled = plan::modelled_makespan(&chosen.0, &chosen.1, seqlens, page, costs);
    let widest = plan::combine_class_max_pieces(plan::max_pieces(&chosen.1));
    let fixed = plan::ordered_fixed_pages(rows_per_cta);
    let budget = plan::charged_makespan(&chosen.0, seqlens, page, fixed);
    let o = plan_ordered(seqlens, page, num_parts, fixed, budget)?;
    let ordered = order::modelled_makespan_in_order(
        &o.parts,
        &o.split_offsets,
        &o.order,
        seqlens,
        page,
        costs,
    );
    (plan::keeps_ordered_plan(ordered, modelled) && plan::max_pieces(&o.split_offsets) <= widest)
        .then_some(o)
}

/// A causal 64-row plan over short shares (`current`: partitions, pieces by request and
/// order; `ordered` where the order is `order::plan_ordered`'s) filled again so that no
/// request's later piece starts in tokens its first query positions do not see
/// (`plan::plan_keeping_tails`, `order::plan_ordered_keeping_tails`), where no row of the
/// new plan merges one piece alone (`plan::has_one_piece_rows`), it models no slower at
/// `plan::PieceCosts::ROWS_64` and needs no wider a combine. Its split-P kernels may then
/// keep f16 partial results (the schedule does not know the cache's dtype or the output's,
/// so plans that keep f32 anyway take it too).
fn keeping_tails(
    config: &DecodeConfig,
    seqlens: &[i32],
    num_parts: usize,
    current: (&[PartWork], &[i32], &[i32]),
    ordered: bool,
) -> Option<(Vec<PartWork>, Vec<i32>, Vec<i32>)> {
    let page = PAGE_SIZE as usize;
    let costs = plan::PieceCosts::ROWS_64;
    let (parts, split_offsets, order) = current;
    let modelled = |parts: &[PartWork], split_offsets: &[i32], order: &[i32]| {
        order::modelled_makespan_in_order(parts, split_offsets, order, seqlens, page, costs)
    };
    let kept = if ordered {
        let fixed = plan::ordered_fixed_pages(MAX_ROWS_PER_CTA);
        let by_pos = order::lengths_by_position(order, seqlens);
        // A piece's cost above the current plan's busiest partition: room for the moved
        // pages.
        let budget = plan::charged_makespan(parts, &by_pos, page, fixed) + u64::from(fixed);
        let o =
            order::plan_ordered_keeping_tails(seqlens, page, num_parts, fixed, config.s_q, budget)?;
        (o.parts, o.split_offsets, o.order)
    } else {
        let mut new_parts = vec![PartWork::IDLE; num_parts];
        let mut new_offsets = vec![0i32; config.batch + 1];
        plan::plan_keeping_tails(
            seqlens,
            config.max_pages,
            page,
            num_parts,
            plan::fixed_overhead_pages(MAX_ROWS_PER_CTA),
            config.s_q,
            &mut new_parts,
            &mut new_offsets,
        )
        .ok()?;
        (new_parts, new_offsets, order.to_vec())
    };
    let by_pos = order::lengths_by_position(&kept.2, seqlens);
    let widest = plan::combine_class_max_pieces(plan::max_pieces(split_offsets));
    let keeps = !plan::has_one_piece_rows(&kept.0, &by_pos, config.s_q, page)
        && modelled(&kept.0, &kept.1, &kept.2) <= modelled(parts, split_offsets, order)
        && plan::max_pieces(&kept.1) <= widest;
    keeps.then_some(kept)
}

/// Scheduler metadata of one decode step plus its split-KV workspace: build once from the
/// cache lengths, reuse for every layer while the lengths are unchanged.
pub struct DecodePlan {
    config: DecodeConfig,
    /// Host copy of the lengths the plan was built from.
    seqlens: Vec<i32>,
    /// The CPU schedule the device copies below were made from.
    schedule: Schedule,
    parts: CudaSlice<i32>,
    /// `Schedule::order` (read by the kernels only where `Schedule::ordered`).
    order: CudaSlice<i32>,
    split_offsets: CudaSlice<i32>,
    o_accum: CudaSlice<f32>,
    /// The tensor map of `o_accum` as f16 partial rows that the bulk stores of partial
    /// results write through ([`Schedule::bulk_partials`]), where the plan may use it.
    o_accum_map: Option<CudaSlice<u8>>,
    lse_accum: CudaSlice<f32>,
    /// The kernels' error words: `ERROR_WORDS` armed with i32::MAX (the decode lowers
    /// them), then the last call's values (published by the combine kernel), then the
    /// combine's own report (`ERROR_EMPTY_PLANNED`, re-armed by `decode_checked`).
    errors: CudaSlice<i32>,
}

impl DecodePlan {
    /// Plans `config` for the lengths `seqlens` (host copy of cache_seqlens) on `gpu`
    /// ([`DecodePlan::schedule`]) and allocates the split-KV workspace.
    ///
    /// Errors: [`DecodeConfig::validate`]'s, and [`Error::InvalidArgument`] for
    /// `cache_seqlens` when it has the wrong length or a length is negative or exceeds
    /// `max_pages · 64` (the message names the batch index).
    pub fn new(gpu: &Gpu, config: DecodeConfig, seqlens: &[i32]) -> Result<Self> {
        let schedule = Self::schedule(&config, seqlens, gpu.sm_count)?;
        let slots = (schedule.split_offsets[config.batch] as usize).max(1);
        let rows = config.s_q * config.h_q;
        let stream = &gpu.stream;
        let words: Vec<i32> = schedule.parts.iter().flat_map(PartWork::words).collect();
        let drv = |e| Error::driver("allocating the decode plan", e);
        let o_accum: CudaSlice<f32> = stream
            .alloc_zeros(slots * rows * D_V as usize)
            .map_err(drv)?;
        // Where some cache dtype and output would store f16 partial results in bulk.
        let o_accum_map = if schedule.bulk_partials(config.h_kv, Dtype::Bf16, false) {
            let (ptr, _sync) = o_accum.device_ptr(stream);
            let (dims, strides, box_dims) = partials_map_layout(rows, slots);
            let map = encode_tiled(
                TmaDtype::F16,
                ptr,
                &dims,
                &strides,
                &box_dims,
                Swizzle::B128,
            )?;
            Some(map.upload(gpu)?)
        } else {
            None
        };
        Ok(DecodePlan {
            config,
            seqlens: seqlens.to_vec(),
            parts: stream.clone_htod(&words).map_err(drv)?,
            order: stream.clone_htod(&schedule.order).map_err(drv)?,
            split_offsets: stream.clone_htod(&schedule.split_offsets).map_err(drv)?,
            o_accum,
            o_accum_map,
            lse_accum: stream.alloc_zeros(slots * rows).map_err(drv)?,
            errors: stream
                .clone_htod(&[i32::MAX; ERROR_BUFFER_WORDS])
                .map_err(drv)?,
            schedule,
        })
    }
    /// The CPU part of [`DecodePlan::new`] (no GPU needed): validates `config` and the
    /// lengths and runs the split-KV planner for a GPU of `sm_count` SMs (for 16/32-row
    /// tiles over long shares twice, at two piece costs, keeping the plan with the smaller
    /// `plan::modelled_makespan`; at uneven lengths also in the requests' own order, as are
    /// 64-row plans; and, for causal split-P 64-row plans over short shares where a query
    /// row would merge one piece alone, again by the fills that avoid that:
    /// `keeping_tails`).
    pub fn schedule(config: &DecodeConfig, seqlens: &[i32], sm_count: u32) -> Result<Schedule> {
        config.validate()?;
        if sm_count == 0 || sm_count > MAX_SM_COUNT {
            return Err(Error::invalid(
                "sm_count",
                format!("{sm_count} is not in 1..={MAX_SM_COUNT}"),
            ));
        }
        check_count(config, seqlens)?;
        let (total_pages, longest_pages) = seqlens
            .iter()
            .map(|&len| plan::num_pages(len, PAGE_SIZE as usize))
            .fold((0, 0), |(total, longest), pages| {
                (total + pages, longest.max(pages))
            });
        let split_asked = !config.rounds_p_once();
        let (rows_per_cta, row_chunks) = plan::row_tiling(
            config.rows_per_kv(),
            total_pages,
            sm_count,
            config.h_kv as u32,
            longest_pages,
        );
        let num_parts = plan::num_parts_for(sm_count, row_chunks * config.h_kv as u32);
        let share = plan::share_per_part(total_pages, num_parts as u64);
        let split_p = plan::split_p_for(split_asked, rows_per_cta, share);
        let pa_first = plan::seesaw_pa_first(rows_per_cta, split_p, row_chunks, share);
        let plan_with = |num_filled: usize, fixed: u32| -> Result<(Vec<PartWork>, Vec<i32>)> {
            let mut parts = vec![PartWork::IDLE; num_parts];
            let mut split_offsets = vec![0i32; config.batch + 1];
            plan::plan_with_overhead(
                seqlens,
                config.max_pages,
                PAGE_SIZE as usize,
                num_filled,
                fixed,
                &mut parts,
                &mut split_offsets,
            )
            .map_err(|e| match e {
                plan::PlanError::NegativeLength { .. } | plan::PlanError::TooLong { .. } => {
                    Error::invalid("cache_seqlens", e.to_string())
                }
                other => Error::Plan(other.to_string()),
            })?;
            Ok((parts, split_offsets))
        };
        let mut chosen = plan_with(num_parts, plan::fixed_overhead_pages(rows_per_cta))?;
        let mut ordered: Option<OrderedPlan> = None;
        let uneven = uneven_lengths(seqlens);
        let long_64_rows = rows_per_cta == MAX_ROWS_PER_CTA && share > plan::SHORT_SHARE_PAGES;
        // The seesaw kernels' plans over long shares: the greedy fill at other piece costs
        // too, kept where it balances the partitions better by the same cost
        // (`plan::charged_makespan`), then where it has fewer pieces.
        if long_64_rows {
            let charged = |(parts, offsets): &(Vec<PartWork>, Vec<i32>)| {
                (
                    plan::charged_makespan(
                        parts,
                        seqlens,
                        PAGE_SIZE as usize,
                        plan::FIXED_OVERHEAD_PAGES_64_ROWS,
                    ),
                    offsets[config.batch],
                )
            };
            let mut best = charged(&chosen);
            for fixed in plan::FILL_OVERHEADS_64_ROWS.rev().skip(1) {
                let other = plan_with(num_parts, fixed)?;
                let cost = charged(&other);
                if cost < best {
                    (chosen, best) = (other, cost);
                }
            }
            // Uneven lengths: requests in their own order (`order::plan_ordered`), where
            // that takes the busiest partition's charge below the batch-order plan's
            // without more pieces a request than that plan's or the narrow combine's (as
            // measured in the fiftieth session; `ordered_by_model` bounds by the combine's
            // kind).
            let widest = COMBINE_NARROW_MAX_SPLITS.max(plan::max_pieces(&chosen.1));
            ordered = uneven
                .then(|| {
                    plan_ordered(
                        seqlens,
                        PAGE_SIZE as usize,
                        num_parts,
                        plan::FIXED_OVERHEAD_PAGES_64_ROWS,
                        best.0.saturating_sub(1),
                    )
                })
                .flatten()
                .filter(|o| plan::max_pieces(&o.split_offsets) <= widest);
            // Requests in more pieces than the narrow combine takes: the first fill of
            // balanced pages over as many or a few fewer partitions that keeps them to that
            // many replaces the plan where it costs little more (`plan::keeps_narrow_fill`).
            let pieces_kept = ordered.as_ref().map_or(plan::max_pieces(&chosen.1), |o| {
                plan::max_pieces(&o.split_offsets)
            });
            if pieces_kept > COMBINE_NARROW_MAX_SPLITS {
                for filled in plan::narrow_fill_part_counts(num_parts) {
                    let other = plan_with(filled, 0)?;
                    if plan::max_pieces(&other.1) <= COMBINE_NARROW_MAX_SPLITS {
                        if plan::keeps_narrow_fill(charged(&other).0, best.0) {
                            (chosen, ordered) = (other, None);
                        }
                        break;
                    }
                }
            }
        }
        // Over long shares (on short ones pieces cost nothing either way) the transposed
        // kernels' plans are also tried with cheaper pieces; `plan::keeps_alt_plan` picks
        // one by their modelled times.
        if rows_per_cta < MAX_ROWS_PER_CTA && share > plan::SHORT_SHARE_PAGES {
            let makespan = |(parts, offsets): &(Vec<PartWork>, Vec<i32>)| {
                plan::modelled_makespan(
                    parts,
                    offsets,
                    seqlens,
                    PAGE_SIZE as usize,
                    plan::PieceCosts::TRANSPOSED,
                )
            };
            let alt = plan_with(num_parts, plan::FIXED_OVERHEAD_PAGES_ALT)?;
            if plan::keeps_alt_plan(share, makespan(&alt), makespan(&chosen)) {
                chosen = alt;
            }
        }
        // Uneven lengths on the other plans: requests in their own order where the model
        // says so (the 64-row plans over long shares chose theirs above).
        if !long_64_rows && uneven {
            ordered = ordered_by_model(seqlens, num_parts, rows_per_cta, &chosen);
        }
        let (mut parts, mut split_offsets, mut order, is_ordered) = match ordered {
            Some(o) => (o.parts, o.split_offsets, o.order, true),
            None => (
                chosen.0,
                chosen.1,
                (0..config.batch as i32).collect(),
                false,
            ),
        };
        let mut one_piece_rows = config.causal && {
            let in_order = order::lengths_by_position(&order, seqlens);
            plan::has_one_piece_rows(&parts, &in_order, config.s_q, PAGE_SIZE as usize)
        };
        // Where that would keep a split-P plan off f16 partial results
        // (`Schedule::partials_f16`), the fill that keeps later pieces where every row
        // sees them, if it models no slower.
        if one_piece_rows
            && split_p
            && rows_per_cta == MAX_ROWS_PER_CTA
            && share <= plan::SHORT_SHARE_PAGES
        {
            let current = (parts.as_slice(), split_offsets.as_slice(), order.as_slice());
            if let Some(kept) = keeping_tails(config, seqlens, num_parts, current, is_ordered) {
                (parts, split_offsets, order) = kept;
                one_piece_rows = false;
            }
        }
        let rows_per_req = (config.s_q * config.h_q) as u64;
        let slot_rows = split_offsets[config.batch] as u64 * rows_per_req;
        let max_splits = plan::max_pieces(&split_offsets);
        let active_parts = parts.iter().take_while(|p| !p.is_idle()).count();
        let kv_bytes = total_pages
            .saturating_mul(u64::from(PAGE_SIZE * D_QK * 2))
            .saturating_mul(config.h_kv as u64);
        let rows = config.batch as u64 * rows_per_req;
        let partial_rows = split_offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as u64)
            .filter(|&pieces| pieces > 1)
            .sum::<u64>()
            * rows_per_req;
        let l2_footprint = kv_bytes
            .saturating_add(partial_rows * u64::from(D_V * 4 + 4))
            .saturating_add(rows * u64::from((D_QK + D_V) * 2));
        Ok(Schedule {
            parts,
            order,
            ordered: is_ordered,
            split_offsets,
            num_parts,
            active_parts,
            rows_per_cta,
            row_chunks,
            split_p,
            pa_first,
            max_splits,
            combine: CombineLaunch::new(max_splits, rows, sm_count),
            kv_bytes,
            l2_footprint,
            total_pages,
            slot_rows,
            one_piece_rows,
        })
    }
    /// The checked API's block-table check: every *used* entry (pages
    /// `0..ceil(len/64)` of each request, lengths as the plan was built for) must be a page
    /// id in `0..num_blocks`; entries past a request's last page are never used and may
    /// hold anything. `block_table_host` is the host copy of `[batch, max_pages]`.
    ///
    /// [`Decoder::decode`] does not call this (it would need the table on the host, or a
    /// synchronisation); call it where the table is built. Without it the decode assumes
    /// valid page ids.
    pub fn validate_block_table(&self, block_table_host: &[i32], num_blocks: usize) -> Result<()> {
        validate_block_table(&self.config, &self.seqlens, block_table_host, num_blocks)
    }
    /// The shape and options the plan was built for.
    pub fn config(&self) -> &DecodeConfig {
        &self.config
    }
    /// Partitions (grid columns) of the decode kernel.
    pub fn num_parts(&self) -> usize {
        self.schedule.num_parts
    }
    /// The schedule: one [`PartWork`] per partition, whose request ranges are positions
    /// in [`DecodePlan::order`].
    pub fn parts(&self) -> &[PartWork] {
        &self.schedule.parts
    }
    /// The request at each position of the plan ([`Schedule::order`]).
    pub fn order(&self) -> &[i32] {
        &self.schedule.order
    }
    /// Exclusive prefix sum of pieces per request.
    pub fn split_offsets(&self) -> &[i32] {
        &self.schedule.split_offsets
    }
    /// The lengths the plan was built for.
    pub fn seqlens(&self) -> &[i32] {
        &self.seqlens
    }
    /// Whether the plan still decodes the lengths `seqlens` (a host copy of the device's)
    /// as they are, so that a serving loop can keep it while the lengths change: always
    /// within the plan's page counts, and often beyond them
    /// ([`Schedule::first_uncovered`]). Errors: [`Error::InvalidArgument`] for
    /// `cache_seqlens` where it has the wrong length, a length is negative or past its
    /// block-table row, or the plan cannot cover one (the batch index is named), which is
    /// what [`Decoder::decode_checked`] would report for these lengths on the device.
    pub fn covers(&self, seqlens: &[i32]) -> Result<()> {
        check_lengths(&self.config, seqlens)?;
        match self
            .schedule
            .first_uncovered(self.config.max_pages, seqlens)
        {
            Some(b) => Err(self.uncovered_length(b)),
            None => Ok(()),
        }
    }
    /// The error for batch index `b`, whose device length the plan cannot cover.
    fn uncovered_length(&self, b: usize) -> Error {
        let planned = self.seqlens.get(b).copied().unwrap_or(0);
        Error::invalid(
            "cache_seqlens",
            format!(
                "batch index {b}: the device length is not the one the plan was built from \
                 ({planned}, {} pages) and the plan's pieces cannot cover it; build the plan \
                 from the lengths on the device",
                plan::num_pages(planned, PAGE_SIZE as usize)
            ),
        )
    }
    /// Whether the decode with this plan rounds P once rather than splitting it: with
    /// `Precision::Fast`, except where the split kernel is the faster
    /// ([`Schedule::split_p`]).
    pub fn rounds_p_once(&self) -> bool {
        !self.schedule.split_p
    }
}

/// The CPU-side result of planning ([`DecodePlan::schedule`]): the split-KV schedule the
/// decode kernel reads and the kernel variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// One [`PartWork`] per partition (grid column); its `begin_req..=end_req` are
    /// positions in [`Schedule::order`].
    pub parts: Vec<PartWork>,
    /// The request at each position of the plan: the batch order, or where
    /// [`Schedule::ordered`] the order of `order::plan_ordered` (or of
    /// `order::plan_ordered_keeping_tails`).
    pub order: Vec<i32>,
    /// Whether `order` came from `order::plan_ordered` or its causal form
    /// (`FLAG_ORDERED`: the kernels then read it); else it is the batch order.
    pub ordered: bool,
    /// `[batch + 1]`: exclusive prefix sum of pieces per request.
    pub split_offsets: Vec<i32>,
    /// Partitions (grid columns).
    pub num_parts: usize,
    /// Partitions with work; they come first, and the decode grid launches only them
    /// (at least one).
    pub active_parts: usize,
    /// Query rows one CTA handles (selects the kernel variant).
    pub rows_per_cta: u32,
    /// CTAs per KV head over the query rows.
    pub row_chunks: u32,
    /// Whether the decode kernel splits P (`plan::split_p_for`): with
    /// `Precision::Accurate`, and with `Fast` where that kernel is the faster.
    pub split_p: bool,
    /// Whether the 64-row kernel runs its pairs in the P_a-first order
    /// (`plan::seesaw_pa_first`; always with `split_p`), else in FlashMLA's.
    pub pa_first: bool,
    /// Most pieces any one request is split into (what `combine` is chosen by).
    pub max_splits: u32,
    /// The combine kernel and its launch shape.
    pub combine: CombineLaunch,
    /// Bytes of KV cache one call reads (every used page, all KV heads).
    pub kv_bytes: u64,
    /// Bytes one call reads or writes through the L2: the KV cache, the split requests'
    /// partial results (f32 out and lse) and q and out (16-bit). The partial results count
    /// at f32 size where the decode writes them as f16 too ([`Schedule::partials_f16`]):
    /// [`KV_RESIDENT_MAX_L2_SHARE`] was measured so, and b 32, h_q 128, 512 counted at its
    /// f16 bytes (36.3 MB, not 44.6) would keep its KV in L2, 10 % slower (H200, A-B-B-A,
    /// forty-ninth session: 18.8 → 20.7 µs).
    pub l2_footprint: u64,
    /// Pages of the plan (all requests, one KV head).
    pub total_pages: u64,
    /// Rows of the partial-result slots the kernels index (pieces · s_q · h_q).
    pub slot_rows: u64,
    /// Whether some query row of a split request may merge a single piece: causal plans
    /// whose request's second piece starts in tokens its first position does not see
    /// (`plan::has_one_piece_rows`).
    pub one_piece_rows: bool,
}

/// The share of the L2 (numerator, denominator) up to which a call's footprint
/// ([`Schedule::l2_footprint`]) keeps the KV on the default L2 policy, so that the next
/// call over the same cache finds it there; above it the KV is loaded evict-first. H200
/// (60 MiB of L2), A-B-B-A, KV of 37.7 MB (b 32 at 1K, b 16 at 2K): footprints of
/// 47-64 MB (h_q 32-128) ran 2-8 % faster evict-first (`Fast` b 32, h_q 64, 1K 25.2 → 23.7
/// µs, h_q 128 31.5 → 28.8), those of 42-43 MB (h_q 16) 7-9 % slower.
pub const KV_RESIDENT_MAX_L2_SHARE: (u64, u64) = (7, 10);

impl Schedule {
    /// Whether the decode loads the KV cache with an L2 evict-first hint on a GPU with
    /// `l2_bytes` of L2: when the call's footprint passes [`KV_RESIDENT_MAX_L2_SHARE`] of
    /// the L2 (see `FLAG_KV_EVICT_FIRST`). A smaller call keeps the default policy and its
    /// KV stays in L2 for the next call over it.
    pub fn kv_evict_first(&self, l2_bytes: u64) -> bool {
        let (num, den) = KV_RESIDENT_MAX_L2_SHARE;
        u128::from(self.l2_footprint) * u128::from(den) > u128::from(l2_bytes) * u128::from(num)
    }
    /// Whether the combine drops the partial results' L2 lines once read
    /// (`FLAG_DROP_PARTIALS`): where the KV is streamed evict-first and the stream bounds
    /// the decode, i.e. not on 64-row tiles that split P or that two or more row chunks read
    /// (there the tensor cores do, and the drops only lengthen the combine).
    pub fn drops_partials(&self, l2_bytes: u64) -> bool {
        self.kv_evict_first(l2_bytes)
            && (self.rows_per_cta < MAX_ROWS_PER_CTA || (!self.split_p && self.row_chunks == 1))
    }
    /// Whether the decode stores partial results as f16 with a power-of-two scale per row
    /// and V half (the `_p16` kernels, `config::PARTIAL_SCALES_BYTE`) rather than f32, for
    /// a cache of `dtype` and f32 output or not: on 64-row tiles with bf16 output, where P
    /// is rounded once, or split over short shares (at most `plan::SHORT_SHARE_PAGES` a
    /// partition: H200, the split kernel with f16 partial results took 4-16 % fewer cycles
    /// there and 1-2 % more from 124 pages). Where rows merge several pieces the f16
    /// rounding adds at most ~1.6 % to the variance of the output's own bf16 rounding
    /// (RMSE/floor ≤ ~1.008, inside the split P's 1.02); a row that merges one piece alone
    /// is rounded twice, ~4.7 % (~1.024), so split-P plans where that can happen
    /// ([`Schedule::one_piece_rows`]) keep f32. f16 or f32 output, whose rounding is finer,
    /// keep f32 partial results. So do plans whose slots hold 2^32 f16 elements or more
    /// (1024 a row in the kernels' 32-bit offsets, against f32's 512 that
    /// `DecodeConfig::validate` bounds).
    pub fn partials_f16(&self, dtype: Dtype, out_f32: bool) -> bool {
        let f16_elems = self
            .slot_rows
            .saturating_mul(u64::from(PARTIAL_ROW_BYTES / 2));
        let share = plan::share_per_part(self.total_pages, self.num_parts as u64);
        self.rows_per_cta == MAX_ROWS_PER_CTA
            && (!self.split_p || (share <= plan::SHORT_SHARE_PAGES && !self.one_piece_rows))
            && dtype == Dtype::Bf16
            && !out_f32
            && f16_elems <= INDEX_LIMIT
    }
    /// Whether the decode writes its partial results by bulk tensor stores
    /// (`FLAG_BULK_PARTIALS`) for a cache of `h_kv` KV heads and `dtype`, and f32 output or
    /// not: where they are f16 ([`Schedule::partials_f16`]) and there is one KV head, so
    /// that a CTA's 64 rows are consecutive rows of a slot, one box of the tensor map
    /// (`partials_map_layout`).
    pub fn bulk_partials(&self, h_kv: usize, dtype: Dtype, out_f32: bool) -> bool {
        h_kv == 1 && self.partials_f16(dtype, out_f32)
    }
    /// `seqlens` (by request) at the plan's positions ([`Schedule::order`]), as
    /// `plan::pieces` and `plan::charged_makespan` read a partition's lengths.
    pub fn lengths_by_position(&self, seqlens: &[i32]) -> Vec<i32> {
        order::lengths_by_position(&self.order, seqlens)
    }
    /// [`Schedule::split_offsets`] over the plan's positions, as `plan::modelled_makespan`
    /// reads them with [`Schedule::lengths_by_position`].
    pub fn split_offsets_by_position(&self) -> Vec<i32> {
        order::split_offsets_by_position(&self.order, &self.split_offsets)
    }
    /// Checks the schedule's coverage of `seqlens` (the lengths it was planned for): one
    /// position and one split count a request, the request order a permutation of the
    /// batch, and the partitions' pieces over it covering every page of every request
    /// once, in page order, with as many pieces a request as `split_offsets` counts. The
    /// error says which rule broke and, for the pieces, the first request found breaking
    /// it. The planner's fuzz target and CPU tests hold every schedule to it.
    pub fn check_coverage(&self, seqlens: &[i32]) -> Result<()> {
        let batch = seqlens.len();
        if self.order.len() != batch || self.split_offsets.len() != batch + 1 {
            return Err(Error::Plan(format!(
                "{} positions and {} split offsets for {batch} requests",
                self.order.len(),
                self.split_offsets.len()
            )));
        }
        let mut seen = vec![false; batch];
        for &r in &self.order {
            match seen.get_mut(r as usize) {
                Some(s) if !*s => *s = true,
                _ => {
                    return Err(Error::Plan(format!(
                        "order {:?} is not a permutation",
                        self.order
                    )))
                }
            }
        }
        let by_pos = self.lengths_by_position(seqlens);
        let mut done = vec![0i32; batch];
        let mut count = vec![0i32; batch];
        for part in &self.parts {
            for piece in plan::pieces(part, &by_pos, PAGE_SIZE as usize) {
                let r = self.order[piece.req as usize] as usize;
                if piece.page_begin != done[r] || piece.split_index != count[r] {
                    return Err(Error::Plan(format!(
                        "request {r}: piece {} starts at page {}, after {} pages in {} pieces",
                        piece.split_index, piece.page_begin, done[r], count[r]
                    )));
                }
                done[r] = piece.page_end;
                count[r] += 1;
            }
        }
        for (r, &len) in seqlens.iter().enumerate() {
            let pages = plan::num_pages(len, PAGE_SIZE as usize);
            let planned = plan::num_splits(&self.split_offsets, r as i32);
            if u64::try_from(done[r]).ok() != Some(pages) || count[r] != planned {
                return Err(Error::Plan(format!(
                    "request {r}: {} of {pages} pages in {} pieces, {planned} planned",
                    done[r], count[r]
                )));
            }
        }
        Ok(())
    }
    /// The KV tensor map (index into `config::KV_BOX_TOKENS`) the decode kernel loads
    /// with: `config::kv_map_index` at this plan's pages per CTA.
    pub fn kv_map_index(&self) -> usize {
        let share = plan::share_per_part(self.total_pages, self.num_parts as u64);
        kv_map_index(self.rows_per_cta, share, self.split_p)
    }
    /// The thread-block cluster the decode kernel may be launched in: the seesaw kernel's
    /// row chunks of a KV head in pairs (`config::SEESAW_CLUSTER_CTAS`, grid y), where their
    /// number is even; else none.
    pub fn pair_cluster(&self) -> Option<(u32, u32, u32)> {
        (self.rows_per_cta == SEESAW_ROWS && self.row_chunks.is_multiple_of(SEESAW_CLUSTER_CTAS))
            .then_some((1, SEESAW_CLUSTER_CTAS, 1))
    }
    /// The smallest batch index whose length in `seqlens` (device lengths, `max_pages` the
    /// block-table width) this schedule cannot decode as it is, which is what the kernels
    /// report to [`Decoder::decode_checked`]: one a piece contradicts
    /// (`plan::contradicts_plan`), or pages for a request the schedule gave none. `None`
    /// where every length is covered, e.g. any length of the plan's page count.
    pub fn first_uncovered(&self, max_pages: usize, seqlens: &[i32]) -> Option<usize> {
        let splits = |r: usize| plan::num_splits(&self.split_offsets, r as i32);
        let row = max_pages.min(u32::MAX as usize) as u32;
        let request = |pos: i32| self.order.get(pos as usize).copied().unwrap_or(pos);
        let in_pieces = self.parts.iter().filter(|p| !p.is_idle()).flat_map(|p| {
            (p.begin_req..=p.end_req).filter_map(move |pos| {
                let r = request(pos);
                let len = seqlens.get(r as usize).copied().unwrap_or(0);
                plan::contradicts_plan(p, pos, len, row, p.split_index(pos), splits(r as usize))
                    .then_some(r)
            })
        });
        let planned_empty = (0..seqlens.len()).filter(|&r| splits(r) == 0 && seqlens[r] > 0);
        in_pieces.map(|r| r as usize).chain(planned_empty).min()
    }
    /// Whether the decode runs the 64-row kernel of the P_a-first order with P rounded
    /// once (the split kernel runs that order itself).
    fn runs_pa_first_kernel(&self) -> bool {
        self.pa_first && !self.split_p
    }
    /// Which of [`p16_kernel_names`] the decode runs where it writes f16 partial results.
    fn p16_kernel(&self) -> usize {
        if self.split_p {
            2
        } else {
            usize::from(self.runs_pa_first_kernel())
        }
    }
    /// The name of the decode kernel this plan launches for a cache of `dtype` and f32
    /// output or not.
    pub fn decode_kernel_name(&self, dtype: Dtype, out_f32: bool) -> String {
        if self.partials_f16(dtype, out_f32) {
            p16_kernel_names()[self.p16_kernel()].clone()
        } else if self.runs_pa_first_kernel() {
            pa_first_kernel_name(dtype)
        } else {
            decode_kernel_name(dtype, self.split_p, self.rows_per_cta)
        }
    }
}

/// The tensor map of a plan's partial results as f16 rows (dims innermost first, the byte
/// strides of the outer two, the box), for `rows` query rows a request (s_q · h_q) and
/// `slots` slots: (512 dims, rows, slots) at the f32 slots' row stride
/// (`PARTIAL_ROW_BYTES`), so the f16 values fill the first half of each row's slot and its
/// scales (`PARTIAL_SCALES_BYTE`) lie past the box. A box is one 64-row CTA's 64 dims, rows
/// past a request's last one left out, as 128-byte swizzled rows (a Q column block).
pub fn partials_map_layout(rows: usize, slots: usize) -> ([u64; 3], [u64; 2], [u32; 3]) {
    let row_bytes = u64::from(PARTIAL_ROW_BYTES);
    (
        [u64::from(D_V), rows as u64, slots as u64],
        [row_bytes, rows as u64 * row_bytes],
        [COL_BLOCK, SEESAW_ROWS, 1],
    )
}

/// Host lengths against `config`: one a request.
fn check_count(config: &DecodeConfig, seqlens: &[i32]) -> Result<()> {
    if seqlens.len() != config.batch {
        return Err(Error::invalid(
            "cache_seqlens",
            format!("has {} entries for batch {}", seqlens.len(), config.batch),
        ));
    }
    Ok(())
}

/// Host lengths against `config`: `config.batch` of them, each in `0..=max_pages · 64`
/// (the error names the batch index).
fn check_lengths(config: &DecodeConfig, seqlens: &[i32]) -> Result<()> {
    check_count(config, seqlens)?;
    let capacity = config.max_pages.saturating_mul(PAGE_SIZE as usize);
    match seqlens
        .iter()
        .position(|&len| len < 0 || len as usize > capacity)
    {
        Some(b) => Err(Error::invalid(
            "cache_seqlens",
            format!(
                "cache_seqlens[{b}] = {} is not in 0..=max_pages·64 = {capacity}",
                seqlens[b]
            ),
        )),
        None => Ok(()),
    }
}

/// [`DecodePlan::validate_block_table`] without a plan (CPU only): checks the shapes
/// (`seqlens` has `config.batch` entries, `block_table` has `batch · max_pages`, lengths in
/// `0..=max_pages · 64`) and that every used entry of request `b` — pages
/// `0..ceil(seqlens[b] / 64)` — is in `0..num_blocks`. The error names the batch index and
/// the page.
pub fn validate_block_table(
    config: &DecodeConfig,
    seqlens: &[i32],
    block_table: &[i32],
    num_blocks: usize,
) -> Result<()> {
    config.validate()?;
    check_lengths(config, seqlens)?;
    // `validate` bounds batch · max_pages below 2^32.
    let want = config.batch * config.max_pages;
    if block_table.len() != want {
        return Err(Error::invalid(
            "block_table",
            format!(
                "has {} elements; [batch={}, max_pages={}] needs {want}",
                block_table.len(),
                config.batch,
                config.max_pages
            ),
        ));
    }
    let page = PAGE_SIZE as usize;
    for (b, &len) in seqlens.iter().enumerate() {
        let used = (len as usize).div_ceil(page);
        let row = &block_table[b * config.max_pages..b * config.max_pages + used];
        if let Some((p, &id)) = row
            .iter()
            .enumerate()
            .find(|&(_, &id)| id < 0 || id as usize >= num_blocks)
        {
            return Err(Error::invalid(
                "block_table",
                format!(
                    "block_table[{b}][{p}] = {id} is not a page id in 0..{num_blocks} \
                     (batch index {b} uses pages 0..{used})"
                ),
            ));
        }
    }
    Ok(())
}

/// Output element of a decode: the input dtype, or f32 (no output rounding).
pub trait OutElement<T: KvElement>: DeviceRepr {
    /// Whether the output is f32.
    const F32: bool;
}
impl<T: KvElement> OutElement<T> for f32 {
    const F32: bool = true;
}
impl OutElement<half::bf16> for half::bf16 {
    const F32: bool = false;
}
impl OutElement<half::f16> for half::f16 {
    const F32: bool = false;
}

/// The loaded kernels, ready to decode on one GPU.
pub struct Decoder {
    gpu: Gpu,
    kernels: Arc<Kernels>,
    functions: Functions,
    programmatic: bool,
    /// Whether plans with a [`Schedule::pair_cluster`] launch in it.
    pair_clusters: bool,
    /// Whether the GPU can hold a pair cluster on every SM (not where a GPC has an odd
    /// number of SMs free: the plan fills every SM with one CTA).
    pair_clusters_fit: bool,
}

/// Handles of the decode and combine kernels, looked up once when the module is loaded
/// rather than by name on every (per-layer) decode call.
struct Functions {
    /// `[dtype][split P][row tile]`: `etap_decode_{bf16,f16}_r{16,32,64}` (P rounded once)
    /// and `_split`; 64 rows: the seesaw kernels.
    decode: [[[sys::CUfunction; ROW_TILES.len()]; 2]; 2],
    /// `[dtype]`: the 64-row kernel with P rounded once in the P_a-first order
    /// ([`pa_first_kernel_name`]).
    decode_pa_first: [sys::CUfunction; 2],
    /// `[dtype][CombineKind]`: see [`combine_kernel_names`].
    combine: [[sys::CUfunction; CombineKind::ALL.len()]; 2],
    /// The bf16 64-row kernels with scaled f16 partial results, in [`p16_kernel_names`]
    /// order.
    decode_p16: [sys::CUfunction; 3],
    /// `[CombineKind]`: their combine kernels ([`p16_combine_kernel_names`]).
    combine_p16: [sys::CUfunction; CombineKind::ALL.len()],
}

/// The combine kernels, by how they spread a row's merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CombineKind {
    /// As `Narrow`, loading two partial results at once (requests split at most
    /// `COMBINE_PAIR_MAX_SPLITS` times).
    Pair,
    /// One warp a row, `COMBINE_NARROW_ROWS` rows a CTA (requests split at most
    /// `COMBINE_NARROW_MAX_SPLITS` times).
    Narrow,
    /// `COMBINE_MEDIUM_TEAM` threads a row, a row a CTA (fewer than
    /// `COMBINE_WIDE_MIN_SPLITS` pieces).
    Medium,
    /// `COMBINE_WIDE_GROUPS` groups of `COMBINE_GROUP_THREADS` threads a row (requests
    /// split at least `COMBINE_WIDE_MIN_SPLITS` times).
    Wide,
    /// The wide kernel over `plan::combine_dim_slices` CTAs a row (grid z), each over a
    /// slice of the dims.
    Sliced,
}

impl CombineKind {
    /// Every kind, in the order of the kernel table (`combine_kernel_names`).
    pub const ALL: [CombineKind; 5] = [
        CombineKind::Pair,
        CombineKind::Narrow,
        CombineKind::Medium,
        CombineKind::Wide,
        CombineKind::Sliced,
    ];

    /// Threads a CTA of this kind's kernel.
    pub fn threads(self) -> u32 {
        match self {
            CombineKind::Pair | CombineKind::Narrow => COMBINE_NARROW_ROWS * 32,
            CombineKind::Medium => COMBINE_MEDIUM_TEAM,
            CombineKind::Wide | CombineKind::Sliced => COMBINE_WIDE_GROUPS * COMBINE_GROUP_THREADS,
        }
    }
}

/// How a plan's combine runs: the kernel and CTAs a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CombineLaunch {
    /// Which kernel merges a row.
    pub kind: CombineKind,
    /// CTAs a row, each over a slice of its dims (the grid's z).
    pub slices: u32,
}

impl CombineLaunch {
    /// The combine of a plan whose most-split request has `max_splits` pieces, over
    /// `rows` (s_q · h_q · batch) rows, on `sm_count` SMs: the more pieces, the more
    /// threads merge a row: a warp, two, `COMBINE_WIDE_GROUPS` groups of 128, and in a
    /// small batch several such CTAs a row ([`plan::combine_dim_slices`]).
    pub fn new(max_splits: u32, rows: u64, sm_count: u32) -> Self {
        let slices = plan::combine_dim_slices(max_splits, rows, sm_count);
        let kind = if slices > 1 {
            CombineKind::Sliced
        } else if max_splits >= COMBINE_WIDE_MIN_SPLITS {
            CombineKind::Wide
        } else if max_splits > COMBINE_NARROW_MAX_SPLITS {
            CombineKind::Medium
        } else if max_splits > COMBINE_PAIR_MAX_SPLITS {
            CombineKind::Narrow
        } else {
            CombineKind::Pair
        };
        CombineLaunch { kind, slices }
    }

    /// The grid over `rows_per_req` (s_q · h_q) rows of `batch` requests.
    pub fn grid(&self, rows_per_req: u32, batch: u32) -> (u32, u32, u32) {
        match self.kind {
            CombineKind::Pair | CombineKind::Narrow => {
                (rows_per_req.div_ceil(COMBINE_NARROW_ROWS), batch, 1)
            }
            CombineKind::Medium => (rows_per_req, batch, 1),
            CombineKind::Wide | CombineKind::Sliced => (rows_per_req, batch, self.slices),
        }
    }

    /// Threads a CTA.
    pub fn threads(&self) -> u32 {
        self.kind.threads()
    }

    /// Dynamic shared memory a CTA.
    pub fn smem_bytes(&self) -> u32 {
        match self.kind {
            CombineKind::Pair | CombineKind::Narrow | CombineKind::Medium => 0,
            CombineKind::Wide | CombineKind::Sliced => combine_wide_smem_bytes(self.slices),
        }
    }
}

/// The combine kernels for `dtype`, in [`CombineKind::ALL`] order.
pub(crate) fn combine_kernel_names(dtype: Dtype) -> [String; CombineKind::ALL.len()] {
    combine_names(dtype_kernel(dtype).0)
}

/// The combine kernels of scaled f16 partial results (bf16 output), in
/// [`CombineKind::ALL`] order.
pub(crate) fn p16_combine_kernel_names() -> [String; CombineKind::ALL.len()] {
    combine_names("bf16_p16")
}

fn combine_names(infix: &str) -> [String; CombineKind::ALL.len()] {
    ["_pair", "", "_medium", "_wide", "_sliced"]
        .map(|suffix| format!("etap_combine_{infix}{suffix}"))
}

// SAFETY: the handles belong to the module that `Decoder::kernels` keeps loaded, and a
// CUfunction may be launched from any thread of its context (`launch` binds it first).
unsafe impl Send for Functions {}
unsafe impl Sync for Functions {}

/// Kernel-name part and table index of a dtype.
fn dtype_kernel(dtype: Dtype) -> (&'static str, usize) {
    match dtype {
        Dtype::Bf16 => ("bf16", 0),
        Dtype::F16 => ("f16", 1),
    }
}

/// The decode kernel for `dtype`, a tile of `rows` query rows and P split or rounded once
/// (every row tile has a kernel for either way; the plan picks: `Schedule::split_p`).
fn decode_kernel_name(dtype: Dtype, split_p: bool, rows: u32) -> String {
    let suffix = if split_p { "_split" } else { "" };
    format!("etap_decode_{}_r{rows}{suffix}", dtype_kernel(dtype).0)
}

/// The 64-row decode kernel for `dtype` with P rounded once in the P_a-first order
/// (`Schedule::pa_first`; the split one always runs it).
fn pa_first_kernel_name(dtype: Dtype) -> String {
    decode_kernel_name(dtype, false, SEESAW_ROWS) + "_pa_first"
}

/// The bf16 64-row decode kernels that write scaled f16 partial results
/// (`Schedule::partials_f16`): P rounded once in FlashMLA's order, rounded once in the
/// P_a-first order, and split.
fn p16_kernel_names() -> [String; 3] {
    [
        decode_kernel_name(Dtype::Bf16, false, SEESAW_ROWS),
        pa_first_kernel_name(Dtype::Bf16),
        decode_kernel_name(Dtype::Bf16, true, SEESAW_ROWS),
    ]
    .map(|name| name + "_p16")
}

impl Decoder {
    /// Loads the kernels on `gpu` and allows the decode kernels their shared memory.
    pub fn new(gpu: &Gpu) -> Result<Self> {
        let kernels = Kernels::load(gpu)?;
        let mut functions = Functions {
            decode: [[[std::ptr::null_mut(); ROW_TILES.len()]; 2]; 2],
            decode_pa_first: [std::ptr::null_mut(); 2],
            combine: [[std::ptr::null_mut(); CombineKind::ALL.len()]; 2],
            decode_p16: [std::ptr::null_mut(); 3],
            combine_p16: [std::ptr::null_mut(); CombineKind::ALL.len()],
        };
        for dtype in [Dtype::Bf16, Dtype::F16] {
            let d = dtype_kernel(dtype).1;
            for split_p in [false, true] {
                for (r, rows) in ROW_TILES.into_iter().enumerate() {
                    let kernel = decode_kernel_name(dtype, split_p, rows);
                    kernels.set_max_dynamic_smem(&kernel, decode_smem_bytes(rows))?;
                    functions.decode[d][usize::from(split_p)][r] = kernels.function(&kernel)?;
                }
            }
            let kernel = pa_first_kernel_name(dtype);
            kernels.set_max_dynamic_smem(&kernel, decode_smem_bytes(SEESAW_ROWS))?;
            functions.decode_pa_first[d] = kernels.function(&kernel)?;
            for (k, kernel) in combine_kernel_names(dtype).iter().enumerate() {
                functions.combine[d][k] = kernels.function(kernel)?;
            }
        }
        for (k, kernel) in p16_kernel_names().iter().enumerate() {
            kernels.set_max_dynamic_smem(kernel, decode_smem_bytes(SEESAW_ROWS))?;
            functions.decode_p16[k] = kernels.function(kernel)?;
        }
        for (k, kernel) in p16_combine_kernel_names().iter().enumerate() {
            functions.combine_p16[k] = kernels.function(kernel)?;
        }
        // Every seesaw kernel has the same block and shared memory: ask for one.
        let pair = LaunchSpec {
            grid: (1, SEESAW_CLUSTER_CTAS, 1),
            block: (decode_threads(SEESAW_ROWS), 1, 1),
            dyn_smem: decode_smem_bytes(SEESAW_ROWS),
            cluster: Some((1, SEESAW_CLUSTER_CTAS, 1)),
            programmatic: false,
        };
        let seesaw = ROW_TILES
            .iter()
            .position(|&rows| rows == SEESAW_ROWS)
            .ok_or_else(|| Error::Plan("no seesaw row tile".into()))?;
        // SAFETY: the function belongs to the module just loaded on `gpu`'s context. A
        // driver that cannot answer gets no clusters: they only place the CTAs.
        let clusters =
            unsafe { max_active_clusters(functions.decode[0][0][seesaw], &pair, &gpu.stream) };
        let pair_clusters_fit =
            clusters.is_ok_and(|n| n.saturating_mul(SEESAW_CLUSTER_CTAS) >= gpu.sm_count);
        Ok(Decoder {
            gpu: gpu.clone(),
            kernels: Arc::new(kernels),
            functions,
            programmatic: true,
            pair_clusters: pair_clusters_fit,
            pair_clusters_fit,
        })
    }

    /// Whether the decode and combine kernels are launched as programmatic dependents of
    /// the kernel before them on the stream (on by default): each starts its set-up while
    /// that kernel finishes and waits for it before touching any other memory, which takes
    /// a launch gap off every call. The decode's set-up may read the plan's inputs, the
    /// lengths and the block table (see [`Decoder::decode`]). Off, every launch waits for
    /// the previous kernel to end.
    pub fn set_programmatic_launch(&mut self, on: bool) {
        self.programmatic = on;
    }
    /// Whether the seesaw kernel's row chunks are launched in pairs as thread-block
    /// clusters ([`Schedule::pair_cluster`]; on by default where the GPU holds a pair on
    /// every SM, and only there). Returns whether they now are.
    pub fn set_pair_clusters(&mut self, on: bool) -> bool {
        self.pair_clusters = on && self.pair_clusters_fit;
        self.pair_clusters
    }
    /// The GPU the kernels are loaded on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    /// The loaded kernel module.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// One decode step on `stream`: `out[b, s_q, h_q, 512]` and `lse[b, h_q, s_q]` from
    /// `q[b, s_q, h_q, 576]`, the paged `cache`, `block_table[b, max_pages]` and
    /// `cache_seqlens[b]`, which must hold on the device the lengths the plan was built from.
    ///
    /// Checked on the host before any launch: that the stream, the plan and every buffer
    /// belong to the decoder's GPU ([`Gpu::check_owns`]; memory of another device would be
    /// read as this one's addresses), and ([`DecodeConfig::check_buffers`]) every buffer
    /// length against the plan's config, and the cache's `h_kv`. Not checked here (it would
    /// need a host copy or a synchronisation): that the device `cache_seqlens` equal the
    /// plan's lengths and that the used block-table entries are valid page ids — use
    /// [`DecodePlan::validate_block_table`] where the table is built, and
    /// [`Decoder::decode_checked`], which reports what the kernels find of both. A device
    /// length with the plan's page count decodes exactly as a plan built for it.
    ///
    /// `block_table` and `cache_seqlens`, being what the plan was built from, must be
    /// settled when the call is enqueued: with programmatic launch (the default) the
    /// decode may read them before it waits for the kernel before it on the stream. Written
    /// by host copies or by ordinary kernels earlier on the stream is fine; a kernel that
    /// writes them after triggering its dependents' launch early
    /// (`griddepcontrol.launch_dependents`) is not. Everything else (`q`, the cache) is
    /// read only after that wait.
    #[allow(clippy::too_many_arguments)]
    pub fn decode<T: KvElement, O: OutElement<T>>(
        &self,
        stream: &CudaStream,
        plan: &mut DecodePlan,
        q: &CudaSlice<T>,
        cache: &KvCache<'_, T>,
        block_table: &CudaSlice<i32>,
        cache_seqlens: &CudaSlice<i32>,
        out: &mut CudaSlice<O>,
        lse: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let c = plan.config;
        let gpu = &self.gpu;
        gpu.check_owns("stream", stream.context())?;
        gpu.check_owns("plan", plan.o_accum.context())?;
        gpu.check_owns("q", q.context())?;
        gpu.check_owns("cache", cache.data.context())?;
        gpu.check_owns("block_table", block_table.context())?;
        gpu.check_owns("cache_seqlens", cache_seqlens.context())?;
        gpu.check_owns("out", out.context())?;
        gpu.check_owns("lse", lse.context())?;
        c.check_buffers(&BufferLens {
            q: q.len(),
            out: out.len(),
            lse: lse.len(),
            block_table: block_table.len(),
            cache_seqlens: cache_seqlens.len(),
            cache_h_kv: cache.h_kv,
        })?;
        let sched = &plan.schedule;
        let (_, d) = dtype_kernel(T::DTYPE);
        let tile = ROW_TILES
            .iter()
            .position(|&rows| rows == sched.rows_per_cta)
            .ok_or_else(|| Error::Plan(format!("no kernel for {} rows", sched.rows_per_cta)))?;
        let comb = sched.combine;
        let f16_partials = sched.partials_f16(T::DTYPE, O::F32);
        let decode_fn = if f16_partials {
            self.functions.decode_p16[sched.p16_kernel()]
        } else if sched.runs_pa_first_kernel() {
            self.functions.decode_pa_first[d]
        } else {
            self.functions.decode[d][usize::from(sched.split_p)][tile]
        };
        let combine_fn = if f16_partials {
            self.functions.combine_p16[comb.kind as usize]
        } else {
            self.functions.combine[d][comb.kind as usize]
        };
        let kv_map = sched.kv_map_index();
        let mut flags = if c.causal { FLAG_CAUSAL } else { 0 }
            | if O::F32 { FLAG_OUT_F32 } else { 0 }
            | if sched.kv_evict_first(self.gpu.l2_bytes) {
                FLAG_KV_EVICT_FIRST
            } else {
                0
            }
            | if kv_map == KV_MAP_HALF {
                FLAG_KV_HALF_BOXES
            } else {
                0
            }
            | if sched.drops_partials(self.gpu.l2_bytes) {
                FLAG_DROP_PARTIALS
            } else {
                0
            }
            | if sched.ordered { FLAG_ORDERED } else { 0 };
        let bulk_partials = sched.bulk_partials(c.h_kv, T::DTYPE, O::F32);
        let oacc_map = plan.o_accum_map.as_ref().filter(|_| bulk_partials);
        if oacc_map.is_some() {
            flags |= FLAG_BULK_PARTIALS;
        }

        let (maps, _s0) = cache.maps.device_ptr(stream);
        let map_bytes = std::mem::size_of::<TensorMap>() as u64;
        let mut map = maps + map_bytes * kv_map as u64;
        let (mut q_ptr, _s1) = q.device_ptr(stream);
        let (mut bt, _s2) = block_table.device_ptr(stream);
        let (mut sl, _s3) = cache_seqlens.device_ptr(stream);
        let (mut parts, _s4) = plan.parts.device_ptr(stream);
        let (mut order, _s11) = plan.order.device_ptr(stream);
        let (mut so, _s5) = plan.split_offsets.device_ptr(stream);
        let (mut out_ptr, _s6) = out.device_ptr_mut(stream);
        let (mut lse_ptr, _s7) = lse.device_ptr_mut(stream);
        let (mut oacc, _s8) = plan.o_accum.device_ptr_mut(stream);
        let (mut lacc, _s9) = plan.lse_accum.device_ptr_mut(stream);
        let (mut errors, _s10) = plan.errors.device_ptr_mut(stream);
        let mut num_blocks = cache.num_blocks as u32;
        let (mut s_q, mut h_q, mut h_kv) = (c.s_q as u32, c.h_q as u32, c.h_kv as u32);
        let (mut max_pages, mut row_chunks) = (c.max_pages as u32, sched.row_chunks);
        let mut scale = c.softmax_scale;
        let (mut oacc_map, _s12) = match oacc_map {
            Some(m) => {
                let (ptr, sync) = m.device_ptr(stream);
                (ptr, Some(sync))
            }
            None => (0, None),
        };
        let mut args = crate::kernel_args![
            map, q_ptr, bt, sl, parts, order, so, out_ptr, lse_ptr, oacc, lacc, s_q, h_q, h_kv,
            max_pages, num_blocks, errors, row_chunks, scale, flags, oacc_map
        ];
        let spec = LaunchSpec {
            grid: (sched.active_parts.max(1) as u32, sched.row_chunks * h_kv, 1),
            block: (decode_threads(sched.rows_per_cta), 1, 1),
            dyn_smem: decode_smem_bytes(sched.rows_per_cta),
            cluster: sched.pair_cluster().filter(|_| self.pair_clusters),
            programmatic: self.programmatic,
        };
        // SAFETY: the argument list matches the kernel's parameters in order and type, and
        // every buffer was checked above against the shapes the kernel indexes with.
        unsafe { launch(decode_fn, &spec, stream, &mut args)? };

        let mut cargs =
            crate::kernel_args![oacc, lacc, so, sl, out_ptr, lse_ptr, errors, s_q, h_q, flags];
        let cspec = LaunchSpec {
            grid: comb.grid(s_q * h_q, c.batch as u32),
            block: (comb.threads(), 1, 1),
            dyn_smem: comb.smem_bytes(),
            cluster: None,
            programmatic: self.programmatic,
        };
        // SAFETY: as above, for the combine kernel's parameters.
        unsafe { launch(combine_fn, &cspec, stream, &mut cargs) }
    }

    /// The checked API: [`Decoder::decode`], then a synchronisation of `stream` and a look
    /// at the error words the kernel set while reading the lengths and the block table.
    /// A page id outside `0..num_blocks` among a request's used pages, or a length that is
    /// negative or longer than its block-table row, is an [`Error::InvalidArgument`] naming
    /// the smallest such batch index. In either case the kernel read nothing outside the
    /// cache or the block table (such pages load as zeros), but that request's output is
    /// meaningless. So are device lengths the plan cannot cover, which the kernels also
    /// note: a page count that is not the plan's where the plan's pieces fix it
    /// (`plan::contradicts_plan`: pages left out or read past the length, or a planned
    /// piece left empty), and pages for a request the plan gave none (which the decode
    /// reads only inside a partition's range, and then writes into another request's
    /// partial result), are an [`Error::InvalidArgument`] for `cache_seqlens`, after which
    /// no output of the call is to be trusted.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_checked<T: KvElement, O: OutElement<T>>(
        &self,
        stream: &Arc<CudaStream>,
        plan: &mut DecodePlan,
        q: &CudaSlice<T>,
        cache: &KvCache<'_, T>,
        block_table: &CudaSlice<i32>,
        cache_seqlens: &CudaSlice<i32>,
        out: &mut CudaSlice<O>,
        lse: &mut CudaSlice<f32>,
    ) -> Result<()> {
        // Before the re-arming copy on `stream` (`decode` checks the rest).
        self.gpu.check_owns("stream", stream.context())?;
        self.gpu.check_owns("plan", plan.errors.context())?;
        // The combine's own report (atomic minima), re-armed before the call.
        stream
            .memcpy_htod(
                &[i32::MAX],
                &mut plan
                    .errors
                    .slice_mut(ERROR_EMPTY_PLANNED..ERROR_BUFFER_WORDS),
            )
            .map_err(|e| Error::driver("re-arming the combine's error word", e))?;
        self.decode(stream, plan, q, cache, block_table, cache_seqlens, out, lse)?;
        let words = stream
            .clone_dtoh(&plan.errors)
            .map_err(|e| Error::driver("reading the decode's error words", e))?;
        let empty_planned = words[ERROR_EMPTY_PLANNED];
        let words = &words[ERROR_WORDS..];
        if words[ERROR_LENGTH] != i32::MAX {
            let b = words[ERROR_LENGTH];
            return Err(Error::invalid(
                "cache_seqlens",
                format!(
                    "batch index {b}: the device length is negative or exceeds max_pages·64 = {}",
                    plan.config.max_pages * PAGE_SIZE as usize
                ),
            ));
        }
        let stale = words[ERROR_PLAN].min(empty_planned);
        if stale != i32::MAX {
            return Err(plan.uncovered_length(stale as usize));
        }
        if words[ERROR_PAGE_ID] != i32::MAX {
            let b = words[ERROR_PAGE_ID];
            return Err(Error::invalid(
                "block_table",
                format!(
                    "batch index {b}: a used page id is outside 0..num_blocks = {}",
                    cache.num_blocks
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etap_kernel::config::{KV_MAP_WHOLE, PARTIAL_SCALES_BYTE};

    /// The partial results' map passes `cuTensorMapEncodeTiled`'s rules at the shapes a
    /// plan can have (one row to the most a request, s_q · h_q ≤ 65535; one slot to 2^20),
    /// its boxes are the kernel's staged blocks (64 f16 dims, a 128-byte swizzled row, of
    /// 64 rows), and it puts element (dim, row, slot) where the f16 combine reads it:
    /// (slot · rows + row) · `PARTIAL_ROW_BYTES` + 2 · dim, clear of the row's scales.
    #[test]
    fn partials_map_addresses_the_rows_the_combine_reads() {
        use crate::tensor_map::validate_tiled;
        for rows in [1, 16, 48, 63, 64, 126, 128, 256, 512, 65535] {
            for slots in [1, 2, 131, 4096, 1 << 20] {
                let (dims, strides, box_dims) = partials_map_layout(rows, slots);
                validate_tiled(
                    TmaDtype::F16,
                    1 << 20,
                    &dims,
                    &strides,
                    &box_dims,
                    Swizzle::B128,
                )
                .unwrap_or_else(|e| panic!("rows {rows}, slots {slots}: {e}"));
                assert_eq!(box_dims, [COL_BLOCK, SEESAW_ROWS, 1]);
                assert_eq!(
                    u64::from(box_dims[0]) * 2,
                    128,
                    "one swizzled row a box row"
                );
                let row_bytes = u64::from(PARTIAL_ROW_BYTES);
                for (dim, row, slot) in [(0, 0, 0), (511, rows - 1, slots - 1), (64, rows / 2, 1)] {
                    let slot = slot.min(slots - 1);
                    let by_map = 2 * dim + row as u64 * strides[0] + slot as u64 * strides[1];
                    let by_combine = (slot as u64 * rows as u64 + row as u64) * row_bytes + 2 * dim;
                    assert_eq!(
                        by_map, by_combine,
                        "rows {rows}, slots {slots}: ({dim}, {row}, {slot})"
                    );
                    assert!(by_map % row_bytes + 2 <= u64::from(PARTIAL_SCALES_BYTE));
                }
            }
        }
    }

    #[test]
    fn every_decode_kernel_the_decoder_looks_up_is_in_the_module() {
        let entries = crate::module::kernel_names();
        for dtype in [Dtype::Bf16, Dtype::F16] {
            for split_p in [false, true] {
                for rows in ROW_TILES {
                    let name = decode_kernel_name(dtype, split_p, rows);
                    assert!(entries.contains(&name.as_str()), "{name} is not a kernel");
                }
            }
            let name = pa_first_kernel_name(dtype);
            assert!(entries.contains(&name.as_str()), "{name} is not a kernel");
            for combine in combine_kernel_names(dtype) {
                assert!(
                    entries.contains(&combine.as_str()),
                    "{combine} is not a kernel"
                );
            }
        }
        for name in p16_kernel_names()
            .into_iter()
            .chain(p16_combine_kernel_names())
        {
            assert!(entries.contains(&name.as_str()), "{name} is not a kernel");
        }
        assert_eq!(
            p16_kernel_names(),
            [
                "etap_decode_bf16_r64_p16",
                "etap_decode_bf16_r64_pa_first_p16",
                "etap_decode_bf16_r64_split_p16"
            ]
        );
        assert_eq!(p16_combine_kernel_names()[0], "etap_combine_bf16_p16_pair");
        // A single-rounding kernel has no suffix, a split-P one `_split`.
        assert_eq!(
            decode_kernel_name(Dtype::Bf16, false, 64),
            "etap_decode_bf16_r64"
        );
        assert_eq!(
            pa_first_kernel_name(Dtype::F16),
            "etap_decode_f16_r64_pa_first"
        );
        assert_eq!(
            decode_kernel_name(Dtype::F16, false, 32),
            "etap_decode_f16_r32"
        );
        assert_eq!(
            decode_kernel_name(Dtype::F16, true, 16),
            "etap_decode_f16_r16_split"
        );
    }

    #[test]
    fn kv_is_streamed_evict_first_where_the_call_crowds_the_l2() {
        let l2 = 60 * 1024 * 1024;
        let schedule = |batch: usize, h_q: usize, h_kv: usize, len: i32| {
            let config = DecodeConfig::new(batch, h_q, 64).h_kv(h_kv);
            DecodePlan::schedule(&config, &vec![len; batch], 132).unwrap()
        };
        // b 16 at 2K: 512 pages of 64 × 576 bf16 = 37.7 MB of KV.
        let small = schedule(16, 16, 1, 2048);
        assert_eq!(small.kv_bytes, 512 * 64 * 576 * 2);
        // The footprint adds the split requests' partial results and q and out.
        let partial_rows: u64 = small
            .split_offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as u64)
            .filter(|&n| n > 1)
            .sum::<u64>()
            * 16;
        assert!(partial_rows > 0);
        assert_eq!(
            small.l2_footprint,
            small.kv_bytes + partial_rows * (512 * 4 + 4) + 16 * 16 * (576 + 512) * 2
        );
        // h_q 16: 42.5 MB, within 70 % of the L2 (44.0 MB); kept for the next call.
        assert!(small.l2_footprint < l2 * 7 / 10);
        assert!(!small.kv_evict_first(l2));
        // h_q 32 on the same cache: twice the partial results, 47.3 MB: streamed.
        let wider = schedule(16, 32, 1, 2048);
        assert!(wider.l2_footprint > l2 * 7 / 10 && wider.kv_evict_first(l2));
        // Twice the length, or two KV heads: more KV than the L2 holds.
        assert!(schedule(16, 16, 1, 4096).kv_evict_first(l2));
        assert_eq!(schedule(16, 32, 2, 2048).kv_bytes, 2 * small.kv_bytes);
        assert!(schedule(16, 32, 2, 2048).kv_evict_first(l2));
        // A partial last page is read whole.
        assert_eq!(schedule(1, 16, 1, 65).kv_bytes, 2 * 64 * 576 * 2);
        // b 32, h_q 128, 512 in Fast: f16 partial results with bf16 output, counted at
        // f32 size (44.6 MB): streamed, the faster (see `Schedule::l2_footprint`).
        let config = DecodeConfig::new(32, 128, 64).precision(Precision::Fast);
        let h128 = DecodePlan::schedule(&config, &[512; 32], 132).unwrap();
        assert!(h128.partials_f16(Dtype::Bf16, false));
        assert_eq!(h128.kv_bytes, 256 * 64 * 576 * 2);
        assert_eq!(
            h128.l2_footprint,
            h128.kv_bytes + 32 * 2 * 128 * (512 * 4 + 4) + 32 * 128 * (576 + 512) * 2
        );
        assert!(h128.kv_evict_first(l2));
    }

    #[test]
    fn split_p_plans_keep_f32_partials_where_a_row_merges_one_piece() {
        // s_q 4, h_q 16: 64 rows. 70 requests of 129 tokens (3 pages, the last holding
        // the token only the last position sees) over 132 partitions: 2 pages a partition,
        // so some requests split before their last page.
        let schedule = |causal: bool, precision: Precision| {
            let config = DecodeConfig::new(70, 16, 3)
                .s_q(4)
                .causal(causal)
                .precision(precision);
            DecodePlan::schedule(&config, &[129; 70], 132).unwrap()
        };
        let accurate = schedule(true, Precision::Accurate);
        assert_eq!((accurate.rows_per_cta, accurate.split_p), (64, true));
        assert!(accurate.one_piece_rows);
        assert!(!accurate.partials_f16(Dtype::Bf16, false));
        // Not causal: every row sees every piece.
        let full = schedule(false, Precision::Accurate);
        assert!(!full.one_piece_rows && full.partials_f16(Dtype::Bf16, false));
        // Fast rounds P once (its bound 1.3 has room for the second rounding).
        let fast = schedule(true, Precision::Fast);
        assert!(fast.one_piece_rows && fast.partials_f16(Dtype::Bf16, false));
        // Requests of 256 tokens (4 full pages) split 2 + 2: the second piece starts 128
        // tokens before the first position's end.
        let config = DecodeConfig::new(66, 16, 4).s_q(4).causal(true);
        let even = DecodePlan::schedule(&config, &[256; 66], 132).unwrap();
        assert!(!even.one_piece_rows && even.partials_f16(Dtype::Bf16, false));
    }

    #[test]
    fn partials_are_dropped_only_where_the_kv_stream_bounds_the_decode() {
        let l2 = 60 * 1024 * 1024;
        let schedule = |h_q: usize, len: i32, precision: Precision| {
            let config = DecodeConfig::new(16, h_q, 1024).precision(precision);
            DecodePlan::schedule(&config, &[len; 16], 132).unwrap()
        };
        for precision in [Precision::Fast, Precision::Accurate] {
            // 16/32-row tiles streaming their KV: dropped; a cache kept in L2: kept.
            assert!(schedule(16, 65536, precision).drops_partials(l2));
            assert!(schedule(32, 8192, precision).drops_partials(l2));
            assert!(schedule(32, 2048, precision).drops_partials(l2));
            assert!(!schedule(16, 2048, precision).drops_partials(l2));
            // h_q 128: two row chunks read every tile, the tensor cores bound the decode.
            let h128 = schedule(128, 65536, precision);
            assert_eq!((h128.rows_per_cta, h128.row_chunks), (64, 2));
            assert!(h128.kv_evict_first(l2) && !h128.drops_partials(l2));
        }
        // h_q 64 on one 64-row chunk: dropped with P rounded once, not with it split.
        let fast = schedule(64, 65536, Precision::Fast);
        let accurate = schedule(64, 65536, Precision::Accurate);
        assert_eq!((fast.rows_per_cta, fast.split_p), (64, false));
        assert_eq!((accurate.rows_per_cta, accurate.split_p), (64, true));
        assert!(fast.drops_partials(l2) && !accurate.drops_partials(l2));
    }

    #[test]
    fn seesaw_plans_keep_requests_to_the_narrow_combine_where_it_costs_a_page() {
        let schedule = |batch: usize, h_q: usize, len: i32, precision| {
            let config = DecodeConfig::new(batch, h_q, 1024).precision(precision);
            DecodePlan::schedule(&config, &vec![len; batch], 132).unwrap()
        };
        for precision in [Precision::Fast, Precision::Accurate] {
            // b 16, h_q 128, 32K: 8192 pages on 64 of 66 partitions, 128 pages (one piece)
            // each, 4 pieces a request (charged 136 pages against 135 on all 66).
            let narrow = schedule(16, 128, 32768, precision);
            assert_eq!((narrow.rows_per_cta, narrow.active_parts), (64, 64));
            assert_eq!(narrow.max_splits, COMBINE_NARROW_MAX_SPLITS);
            assert_eq!(narrow.combine.kind, CombineKind::Narrow);
            // b 32, h_q 64, 32K: 128 of 132 one-CTA partitions.
            let narrow = schedule(32, 64, 32768, precision);
            assert_eq!((narrow.active_parts, narrow.max_splits), (128, 4));
            // At 64K the balanced fill costs 5 pages more (264 against 259): not kept.
            let medium = schedule(16, 128, 65536, precision);
            assert_eq!((medium.active_parts, medium.max_splits), (66, 5));
            assert_eq!(medium.combine.kind, CombineKind::Medium);
        }
    }

    #[test]
    fn fast_seesaw_plans_run_pa_first_except_over_long_shares_of_two_row_chunks() {
        let schedule = |batch: usize, s_q: usize, h_q: usize, len: i32, precision| {
            let config = DecodeConfig::new(batch, h_q, 1024)
                .s_q(s_q)
                .precision(precision);
            DecodePlan::schedule(&config, &vec![len; batch], 132).unwrap()
        };
        // (b, s_q, h_q, length, P_a-first with P rounded once): h_q 64 has one row chunk;
        // h_q 128 at b 16, 8K is 2048 pages over 66 partitions (32 each), at 16K 63 each.
        for (batch, s_q, h_q, len, pa_first) in [
            (16, 1, 64, 65536, true),
            (32, 1, 64, 2048, true),
            (16, 1, 128, 8192, true),
            (32, 1, 128, 2048, true),
            (16, 1, 128, 16384, false),
            (32, 1, 128, 8192, false),
            (16, 2, 128, 16384, false),
        ] {
            let fast = schedule(batch, s_q, h_q, len, Precision::Fast);
            let accurate = schedule(batch, s_q, h_q, len, Precision::Accurate);
            assert_eq!(fast.rows_per_cta, 64, "b {batch}, h_q {h_q}, {len}");
            assert_eq!(fast.pa_first, pa_first, "b {batch}, h_q {h_q}, {len}");
            assert!(accurate.split_p && accurate.pa_first);
        }
        // 16/32-row tiles have one order.
        assert!(!schedule(16, 1, 16, 65536, Precision::Fast).pa_first);
    }

    #[test]
    fn half_boxes_for_16_rows_on_mid_shares_and_for_32_rows_on_short_ones() {
        let schedule = |batch: usize, h_q: usize, len: i32, precision: Precision| {
            let config = DecodeConfig::new(batch, h_q, 1024).precision(precision);
            DecodePlan::schedule(&config, &vec![len; batch], 132).unwrap()
        };
        let fast = |batch, h_q, len| schedule(batch, h_q, len, Precision::Fast);
        // h_q 16 (16-row tiles): over 3-32 pages a CTA (b 16 at 4K: 8), not over long
        // shares (64K: 125) nor one page (512).
        assert_eq!(fast(16, 16, 4096).kv_map_index(), KV_MAP_HALF);
        assert_eq!(fast(16, 16, 65536).kv_map_index(), KV_MAP_WHOLE);
        assert_eq!(fast(16, 16, 512).kv_map_index(), KV_MAP_WHOLE);
        // h_q 32: b 16 at 8K is 2048 pages over 132 CTAs (16 each), at 16K 32 each, at
        // 32K 63 each: half boxes up to 16 pages with a split P, up to 32 without.
        let accurate = |batch, h_q, len| schedule(batch, h_q, len, Precision::Accurate);
        let short = fast(16, 32, 8192);
        assert_eq!((short.rows_per_cta, short.total_pages), (32, 2048));
        for (len, split_box, fast_box) in [
            (8192, KV_MAP_HALF, KV_MAP_HALF),
            (16384, KV_MAP_WHOLE, KV_MAP_HALF),
            (32768, KV_MAP_WHOLE, KV_MAP_WHOLE),
        ] {
            let (a, f) = (accurate(16, 32, len), fast(16, 32, len));
            assert_eq!((a.rows_per_cta, a.split_p), (32, true));
            assert_eq!((f.rows_per_cta, f.split_p), (32, false));
            assert_eq!(
                (a.kv_map_index(), f.kv_map_index()),
                (split_box, fast_box),
                "{len}"
            );
        }
        // h_q 128 on 64-row tiles (the seesaw kernel): never.
        let seesaw = fast(32, 128, 8192);
        assert_eq!(
            (seesaw.rows_per_cta, seesaw.kv_map_index()),
            (64, KV_MAP_WHOLE)
        );
    }

    #[test]
    fn the_schedule_picks_the_combine_by_splits_and_rows() {
        let combine = |batch: usize, len: i32| {
            let config = DecodeConfig::new(batch, 16, 1024);
            DecodePlan::schedule(&config, &vec![len; batch], 132)
                .unwrap()
                .combine
        };
        // b 1, 4K: 64 pieces of one page over 16 rows: wide groups, 4 CTAs a row.
        let latency = combine(1, 4096);
        assert_eq!(latency.kind, CombineKind::Sliced);
        assert_eq!(latency.slices, 4);
        assert_eq!(latency.grid(16, 1), (16, 1, 4));
        assert_eq!(
            latency.threads(),
            COMBINE_WIDE_GROUPS * COMBINE_GROUP_THREADS
        );
        // b 16, 512: 8 pieces a request over 16 rows each, the medium combine.
        let short = combine(16, 512);
        assert_eq!((short.kind, short.slices), (CombineKind::Medium, 1));
        assert_eq!(short.grid(16, 16), (16, 16, 1));
        assert_eq!(
            (short.threads(), short.smem_bytes()),
            (COMBINE_MEDIUM_TEAM, 0)
        );
        // b 32, 8K: 4 pieces a request, the narrow combine (a warp a row, 4 rows a CTA).
        let few = combine(32, 8192);
        assert_eq!((few.kind, few.slices), (CombineKind::Narrow, 1));
        assert_eq!(
            (few.threads(), few.smem_bytes()),
            (COMBINE_NARROW_ROWS * 32, 0)
        );
        // A row count that is not a multiple of the narrow CTA's rows gets a partial CTA.
        assert_eq!(
            few.grid(126, 3),
            (126u32.div_ceil(COMBINE_NARROW_ROWS), 3, 1)
        );
        // The boundaries, with rows enough to fill half the SMs (one CTA a row).
        let kind = |splits| CombineLaunch::new(splits, 66, 132).kind;
        assert_eq!(kind(1), CombineKind::Pair);
        assert_eq!(kind(COMBINE_PAIR_MAX_SPLITS), CombineKind::Pair);
        assert_eq!(kind(COMBINE_PAIR_MAX_SPLITS + 1), CombineKind::Narrow);
        assert_eq!(kind(COMBINE_NARROW_MAX_SPLITS), CombineKind::Narrow);
        assert_eq!(kind(COMBINE_NARROW_MAX_SPLITS + 1), CombineKind::Medium);
        assert_eq!(kind(COMBINE_WIDE_MIN_SPLITS - 1), CombineKind::Medium);
        assert_eq!(kind(COMBINE_WIDE_MIN_SPLITS), CombineKind::Wide);
        assert_eq!(
            CombineLaunch::new(COMBINE_WIDE_MIN_SPLITS - 1, 1, 132).kind,
            CombineKind::Medium
        );
    }

    #[test]
    fn uneven_lengths_on_64_row_tiles_take_requests_in_their_own_order() {
        let p = crate::bench::Point {
            b: 128,
            s_q: 1,
            h_q: 128,
            s_k: 4096,
            varlen: true,
        };
        let lens = p.lengths();
        let config = p.config(&lens, Precision::Fast);
        let s = DecodePlan::schedule(&config, &lens, 132).unwrap();
        assert!(s.ordered);
        let by_pos = s.lengths_by_position(&lens);
        let charged = |parts: &[PartWork], l: &[i32]| {
            plan::charged_makespan(
                parts,
                l,
                PAGE_SIZE as usize,
                plan::FIXED_OVERHEAD_PAGES_64_ROWS,
            )
        };
        // The bench's draw: 147 pages a piece at 8 against 153 in batch order, 137 pieces
        // against 185.
        assert_eq!(charged(&s.parts, &by_pos), 147);
        assert_eq!(s.split_offsets[128], 137);
        let mut parts = vec![PartWork::IDLE; s.num_parts];
        let mut offsets = vec![0; 129];
        plan::plan_with_overhead(
            &lens,
            config.max_pages,
            64,
            s.num_parts,
            8,
            &mut parts,
            &mut offsets,
        )
        .unwrap();
        assert_eq!((charged(&parts, &lens), offsets[128]), (153, 185));
        // The device lengths the plan was built from are covered; one grown is named by
        // its batch index, not its position.
        assert_eq!(s.first_uncovered(config.max_pages, &lens), None);
        let mut grown = lens.clone();
        grown[77] += 64 * 4;
        assert_eq!(s.first_uncovered(config.max_pages, &grown), Some(77));
        // Equal lengths keep the batch order, and so does b 128, h_q 16, 4K varlen (its own
        // draw) on 16-row tiles, whose ordered plan models no faster.
        let even =
            DecodePlan::schedule(&DecodeConfig::new(32, 128, 512), &[32768; 32], 132).unwrap();
        assert!(!even.ordered && even.order == (0..32).collect::<Vec<i32>>());
        let p16 = crate::bench::Point { h_q: 16, ..p };
        let lens16 = p16.lengths();
        let s16 =
            DecodePlan::schedule(&p16.config(&lens16, Precision::Fast), &lens16, 132).unwrap();
        assert!(!s16.ordered);
    }

    #[test]
    fn ordered_16_row_plans_cost_a_piece_three_pages() {
        // The grid's b 64, h_q 16, 4K varlen: at 3 pages a piece 182 pieces and 33 pages
        // on the busiest partition (186 and 34 at 4; H200, 0.991 of its time).
        let p = crate::bench::Point::new(64, 1, 16, 4096).varlen();
        let lens = p.lengths();
        let s = DecodePlan::schedule(&p.config(&lens, Precision::Fast), &lens, 132).unwrap();
        assert!(s.ordered && s.rows_per_cta == 16);
        assert_eq!(s.split_offsets[64], 182);
        let by_pos = s.lengths_by_position(&lens);
        let busiest = plan::charged_makespan(&s.parts, &by_pos, PAGE_SIZE as usize, 0);
        assert_eq!(busiest, 33);
    }

    #[test]
    fn short_64_row_shares_of_uneven_lengths_are_judged_at_64_row_piece_costs() {
        // b 64, s_q 2, h_q 64, 2K varlen (the bench's draw, short shares): at the
        // transposed kernels' piece costs the model keeps the batch order, which the
        // ordered plan beats by 13 % (H200, fifty-second session).
        let p = crate::bench::Point::new(64, 2, 64, 2048).varlen();
        let lens = p.lengths();
        let config = p.config(&lens, Precision::Fast);
        let s = DecodePlan::schedule(&config, &lens, 132).unwrap();
        assert_eq!(s.rows_per_cta, MAX_ROWS_PER_CTA);
        assert!(s.ordered);
        let page = PAGE_SIZE as usize;
        let mut parts = vec![PartWork::IDLE; s.num_parts];
        let mut offsets = vec![0; lens.len() + 1];
        plan::plan_with_overhead(
            &lens,
            config.max_pages,
            page,
            s.num_parts,
            plan::FIXED_OVERHEAD_PAGES_64_ROWS,
            &mut parts,
            &mut offsets,
        )
        .unwrap();
        let fixed = plan::ORDERED_FIXED_PAGES_64_ROWS;
        let budget = plan::charged_makespan(&parts, &lens, page, fixed);
        let o = plan_ordered(&lens, page, s.num_parts, fixed, budget).unwrap();
        assert_eq!((&o.parts, &o.order), (&s.parts, &s.order));
        let by_pos = order::lengths_by_position(&o.order, &lens);
        let offsets_by_pos = o.split_offsets_by_position();
        let batch = |costs| plan::modelled_makespan(&parts, &offsets, &lens, page, costs);
        let ordered =
            |costs| plan::modelled_makespan(&o.parts, &offsets_by_pos, &by_pos, page, costs);
        let (t, r) = (plan::PieceCosts::TRANSPOSED, plan::PieceCosts::ROWS_64);
        assert!(!plan::keeps_ordered_plan(ordered(t), batch(t)));
        assert!(plan::keeps_ordered_plan(ordered(r), batch(r)));
    }

    #[test]
    fn causal_split_p_plans_over_short_shares_keep_later_pieces_where_every_row_sees_them() {
        // b 64, s_q 2, h_q 64, 2K varlen (the bench's draw, causal): the ordered fill
        // starts a piece in a request's last page, which position 0 does not see, so the
        // split-P plan would keep f32 partial results; the fill keeping tails moves one
        // page and keeps f16.
        let p = crate::bench::Point::new(64, 2, 64, 2048).varlen();
        let lens = p.lengths();
        let config = p.config(&lens, Precision::Accurate);
        let s = DecodePlan::schedule(&config, &lens, 132).unwrap();
        assert!(config.causal && s.ordered && s.split_p);
        assert_eq!(s.rows_per_cta, MAX_ROWS_PER_CTA);
        assert!(!s.one_piece_rows && s.partials_f16(Dtype::Bf16, false));
        let fast = DecodePlan::schedule(&config.precision(Precision::Fast), &lens, 132).unwrap();
        let page = PAGE_SIZE as usize;
        assert!(fast.one_piece_rows);
        assert_ne!(fast.parts, s.parts);
        let modelled = |s: &Schedule| {
            let costs = plan::PieceCosts::ROWS_64;
            order::modelled_makespan_in_order(
                &s.parts,
                &s.split_offsets,
                &s.order,
                &lens,
                page,
                costs,
            )
        };
        assert!(modelled(&s) <= modelled(&fast));
        let widest = plan::combine_class_max_pieces(plan::max_pieces(&fast.split_offsets));
        assert!(plan::max_pieces(&s.split_offsets) <= widest);
        // Not causal: the plain fill stands.
        let full = config.causal(false);
        let plain = DecodePlan::schedule(&full, &lens, 132).unwrap();
        assert_eq!((&plain.parts, &plain.order), (&fast.parts, &fast.order));
    }

    #[test]
    fn seesaw_plans_over_long_shares_keep_the_better_balanced_fill() {
        let schedule = |h_q: usize, len: i32, precision: Precision| {
            let config = DecodeConfig::new(32, h_q, 1024).precision(precision);
            let lens = vec![len; 32];
            let s = DecodePlan::schedule(&config, &lens, 132).unwrap();
            let pages: Vec<u64> = s
                .parts
                .iter()
                .filter(|p| !p.is_idle())
                .map(|p| {
                    plan::pieces(p, &lens, PAGE_SIZE as usize)
                        .map(|q| (q.page_end - q.page_begin) as u64)
                        .sum()
                })
                .collect();
            (s, pages)
        };
        for precision in [Precision::Fast, Precision::Accurate] {
            // b 32, h_q 128, 8K: 128 pages a request over 66 pair partitions. Filled at 8
            // pages a piece the requests split 66 + 62; at 4, 64 + 64.
            let (s, pages) = schedule(128, 8192, precision);
            assert_eq!((s.rows_per_cta, s.row_chunks, s.active_parts), (64, 2, 64));
            assert!(pages.iter().all(|&p| p == 64), "{pages:?}");
            assert_eq!(s.split_offsets[32], 64);
            // 16K: 64 partitions of one 128-page piece beat 66 of 97 pieces; kept.
            let (s, pages) = schedule(128, 16384, precision);
            assert_eq!((s.active_parts, s.split_offsets[32]), (64, 64));
            assert!(pages.iter().all(|&p| p == 128), "{pages:?}");
        }
    }

    #[test]
    fn row_chunk_pairs_run_in_clusters_only_on_64_row_tiles() {
        let schedule = |batch: usize, s_q: usize, h_q: usize, len: i32| {
            let config = DecodeConfig::new(batch, h_q, 1024)
                .s_q(s_q)
                .precision(Precision::Fast);
            DecodePlan::schedule(&config, &vec![len; batch], 132).unwrap()
        };
        // h_q 128: two 64-row chunks a KV head, one pair.
        let h128 = schedule(32, 1, 128, 8192);
        assert_eq!((h128.rows_per_cta, h128.row_chunks), (64, 2));
        assert_eq!(h128.pair_cluster(), Some((1, 2, 1)));
        // s_q 2: four chunks, two pairs (the grid's y, 4, is a multiple of the cluster's).
        let mtp = schedule(16, 2, 128, 16384);
        assert_eq!(mtp.row_chunks, 4);
        assert_eq!(mtp.pair_cluster(), Some((1, 2, 1)));
        // One 64-row chunk, or 32-row tiles (h_q 128 over short shares), or 16 rows: none.
        assert_eq!(schedule(32, 1, 64, 8192).pair_cluster(), None);
        // h_q 32 at b 16, 32K (63 pages a partition): one 32-row chunk, no pair.
        let long = schedule(16, 1, 32, 32768);
        assert_eq!((long.rows_per_cta, long.row_chunks), (32, 1));
        assert_eq!(long.pair_cluster(), None);
        // h_q 128 at b 4, 1K: 64 pages over 66 pair partitions, one a partition, and 16
        // pieces a request on 64-row tiles (`plan::row_tiling`): 32-row tiles.
        let narrow = schedule(4, 1, 128, 1024);
        assert_eq!(narrow.rows_per_cta, 32);
        assert_eq!(narrow.pair_cluster(), None);
        assert_eq!(schedule(16, 1, 16, 8192).pair_cluster(), None);
    }
}
