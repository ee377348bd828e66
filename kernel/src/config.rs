//! Compile-time configuration of the kernels: problem dimensions, tile sizes, warpgroup
//! roles, pipeline depth, named-barrier ids and the shared-memory map. Shared with the
//! host, which sizes launches from the same numbers.

/// Dimensions of one cached token (K row): 512 latent + 64 RoPE.
pub const D_QK: u32 = 576;
/// Dimensions of V (the first 512 of the K row).
pub const D_V: u32 = 512;
/// Tokens per page of the paged cache (the only page size supported so far).
pub const PAGE_SIZE: u32 = 64;
/// Tokens per KV tile: one page, the wgmma M of Sᵀ = K·Qᵀ.
pub const TILE_TOKENS: u32 = 64;
/// Tokens per TMA box of the KV loads, one tensor map each (all in one device buffer, 128
/// bytes a map, in this order): whole tiles, and half tiles for the 16-row kernel over
/// `HALF_BOX_SHARES_16_ROWS` and for 32-row tiles of at most `HALF_BOX_MAX_SHARE_32_ROWS`
/// pages a CTA (by precision). A tile is
/// then two loads a column block; the 128-byte swizzle repeats every 8 rows, so the halves
/// land exactly where one box would put them. H200, same runs, 16-row kernel against
/// 64-token boxes: 1.3-2.7 % less time over the h_q 16 points of the bench on each of three
/// cards, most at 1K-4K; with 32-row tiles up to 3 % faster to 8K and up to 4 % slower from
/// 32K (hence the share limit), with the seesaw kernels 2-5 % slower; 16-token boxes mixed
/// (0.988 and 1.003 of the time on two cards); a block-major or token-major issue order the
/// same.
pub const KV_BOX_TOKENS: [u32; 2] = [TILE_TOKENS, TILE_TOKENS / 2];

/// Pages per CTA up to which the 32-row kernels load 32-token boxes: (with P split, with P
/// rounded once). H200, two cards, with 256-byte L2 fills: 2-3 % faster at b 16, 1K-8K and
/// b 32, 2K-4K (up to 16 pages a CTA), slower from 32K at b 16 and 16K at b 32 (31-62
/// pages a CTA). With 128-byte fills (thirty-first session, A-B-B-A), at 31 pages a CTA
/// (b 16, h_q 32, 16K; b 32, 8K; b 16, s_q 2, h_q 16, 16K) the single-rounding kernel is
/// 0.3-0.8 % faster with half boxes on two cards and the split one 0.4-0.8 % slower; from
/// 62 pages both are mixed to 1.7 % slower.
pub const HALF_BOX_MAX_SHARE_32_ROWS: (u64, u64) = (16, 32);

/// The entry of [`HALF_BOX_MAX_SHARE_32_ROWS`] for a kernel that splits P (`split_p`) or not.
pub const fn half_box_max_share_32_rows(split_p: bool) -> u64 {
    let (split_max, fast_max) = HALF_BOX_MAX_SHARE_32_ROWS;
    if split_p {
        split_max
    } else {
        fast_max
    }
}

/// Pages per CTA (first, last) over which the 16-row kernel loads 32-token boxes; outside,
/// whole tiles. With the L2 fills of 128 bytes (`tensor_map::encode_tiled`), whole tiles
/// against half (H200, A-B-B-A, Fast / Accurate): 1-2 pages a CTA 0.95-1.00 (b 1, h_q 16,
/// 4K 8.8 → 8.4 µs), 4-32 pages 1.00-1.02 (b 16, 4K 23.4 → 23.9), past 32 pages
/// 0.98-0.99 (b 16, 64K 281.7 → 278.5; b 128, 4K varlen 155.8 → 154.1).
pub const HALF_BOX_SHARES_16_ROWS: (u64, u64) = (3, 32);

/// Index into [`KV_BOX_TOKENS`] (and the KV tensor maps) for the kernel of `rows_cta` query
/// rows per CTA, splitting P or not (`split_p`), when each CTA reads about `share_pages`
/// pages: half boxes for the 16-row kernels over `HALF_BOX_SHARES_16_ROWS`, for the
/// 32-row ones on short shares (`HALF_BOX_MAX_SHARE_32_ROWS`), whole tiles otherwise.
pub const fn kv_map_index(rows_cta: u32, share_pages: u64, split_p: bool) -> usize {
    let (first, last) = HALF_BOX_SHARES_16_ROWS;
    if (rows_cta == ROW_TILES[0] && share_pages >= first && share_pages <= last)
        || (rows_cta == ROW_TILES[1] && share_pages <= half_box_max_share_32_rows(split_p))
    {
        KV_MAP_HALF
    } else {
        KV_MAP_WHOLE
    }
}

/// Index of the whole-tile boxes in [`KV_BOX_TOKENS`].
pub const KV_MAP_WHOLE: usize = 0;
/// Index of the half-tile boxes in [`KV_BOX_TOKENS`] (`FLAG_KV_HALF_BOXES`).
pub const KV_MAP_HALF: usize = 1;

/// Tokens per TMA box of the KV tensor map a launch with `flags` was passed.
pub const fn kv_box_tokens(flags: u32) -> u32 {
    KV_BOX_TOKENS[if flags & FLAG_KV_HALF_BOXES != 0 {
        KV_MAP_HALF
    } else {
        KV_MAP_WHOLE
    }]
}

/// Elements per swizzled column block (128 bytes of a 16-bit type): one TMA box width.
pub const COL_BLOCK: u32 = 64;
/// Column blocks of a K row (576 / 64).
pub const K_BLOCKS: u32 = D_QK / COL_BLOCK;
/// Column blocks of a V row (512 / 64): the m64 blocks of Oᵀ.
pub const V_BLOCKS: u32 = D_V / COL_BLOCK;
/// Bytes of one column block of a tile (64 tokens × 128 bytes).
pub const BLOCK_BYTES: u32 = TILE_TOKENS * 128;
/// Bytes of one KV tile in shared memory (and TMA transaction bytes per stage).
pub const TILE_BYTES: u32 = K_BLOCKS * BLOCK_BYTES;
/// wgmma k16 steps of Sᵀ = K·Qᵀ (576 / 16).
pub const QK_STEPS: u32 = D_QK / 16;
/// Bytes of one k16 step along a swizzled 128-byte row (K-major operands).
pub const K_STEP_BYTES: u32 = 16 * 2;
/// wgmma k16 steps of Oᵀ += Vᵀ·Pᵀ per V block (64 tokens / 16).
pub const PV_STEPS: u32 = TILE_TOKENS / 16;
/// k16 steps of P_b·V_bR that warpgroup 1 of the FlashMLA-order seesaw kernel issues per
/// wgmma fence, as P_b comes out of the exponent (H200: two about 1 % faster than one in
/// medians, level in fastest replays).
pub const PB_CHUNK_STEPS: u32 = 2;
/// Most query rows per CTA of the transposed kernels, which split P (P ≈ P_hi + P_lo,
/// Oᵀ += Vᵀ·P_hiᵀ + Vᵀ·P_loᵀ) with P_lo stacked under P_hi as N more columns of one wgmma
/// (the Oᵀ accumulator twice as wide); 64-row tiles run the seesaw kernels.
pub const STACKED_SPLIT_MAX_ROWS: u32 = 32;
/// Column block of a KV stage that holds the seesaw kernel's P (P_hi of a split P) once S
/// is done: the RoPE dims (512..576), which O does not read.
pub const ROPE_BLOCK: u32 = K_BLOCKS - 1;

/// Warpgroup roles of the transposed decode kernels: warpgroup 0 produces (issues the TMA
/// loads), 1 and 2 consume. The seesaw kernels have no producer: their two consumer
/// warpgroups (0 and 1) issue the loads themselves.
pub const PRODUCER_WARPGROUP: u32 = 0;
/// Consumer warpgroups: in the transposed kernels each owns half of the CTA's query rows and
/// all 512 V dims; in the seesaw kernels all the rows and half of the V dims.
pub const CONSUMER_WARPGROUPS: u32 = 2;
/// Threads of a transposed decode CTA (producer and consumers).
pub const DECODE_THREADS: u32 = 128 * (1 + CONSUMER_WARPGROUPS);
/// Threads of a seesaw decode CTA (consumers only): 255 registers a thread, where a
/// producer warpgroup would leave the consumers 232 (65,536 registers a CTA).
pub const SEESAW_THREADS: u32 = 128 * CONSUMER_WARPGROUPS;

/// Threads of a decode CTA of `rows_per_cta` query rows.
pub const fn decode_threads(rows_per_cta: u32) -> u32 {
    if rows_per_cta == SEESAW_ROWS {
        SEESAW_THREADS
    } else {
        DECODE_THREADS
    }
}
/// Consumer warps: the arrival count of an "empty" stage barrier (transposed kernel), and
/// the number of the seesaw kernel's per-warp `moved` flags.
pub const CONSUMER_WARPS: u32 = 4 * CONSUMER_WARPGROUPS;
/// KV pipeline depth (72 KB stages).
pub const STAGES: u32 = 2;
/// Words of a seesaw CTA's lead in shared memory: its first request's length and the page
/// ids of its first `STAGES` tiles, read before the wait for the previous grid.
pub const LEAD_WORDS: u32 = 1 + STAGES;
/// Most query rows (s_q·h_q/h_kv) one CTA handles: the seesaw kernels' wgmma M.
pub const MAX_ROWS_PER_CTA: u32 = 64;
/// Query-row tiles (rows per CTA) that decode kernels are built for.
pub const ROW_TILES: [u32; 3] = [16, 32, 64];

/// Log2 headroom by which a tile's scores may exceed a column's running max and still be
/// exponentiated against it (P ≤ 2^8, fine for f32 sums and bf16/fp16 P); a tile that goes
/// further takes the exact cross-warp max.
pub const SOFTMAX_SLACK: f32 = 8.0;

/// Named barriers (barrier 0 is `bar.sync 0`, the whole CTA).
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum NamedBarrier {
    /// Both consumer warpgroups (256 threads): in the transposed kernels, a tile's rows past
    /// the length were zeroed; in the seesaw kernels, the start and end of a piece.
    Consumers = 1,
    /// The 128 threads of consumer warpgroup 0; warpgroup 1 uses the next id.
    ConsumerGroup0 = 2,
    /// Consumer warpgroup 0 may issue its next wgmma batch (256 threads: it syncs, the
    /// other warpgroup arrives); warpgroup 1 uses the next id.
    Turn0 = 4,
    /// Seesaw kernel (256 threads; warpgroup 0 arrives, 1 syncs): warpgroup 0's tile of the
    /// pair has its running max and rescale factor published (in the split schedule, and
    /// its P in shared memory).
    ScaleA = 8,
    /// Seesaw kernel (warpgroup 1 arrives, 0 syncs): the same for warpgroup 1's tile (in the
    /// split schedule, once it is done reading warpgroup 0's P).
    ScaleB = 9,
    /// Seesaw kernel, P rounded once (warpgroup 0 arrives, 1 syncs): warpgroup 0's P, scaled
    /// by warpgroup 1's factor, is in shared memory.
    PaReady = 10,
    /// Seesaw kernel, P rounded once (warpgroup 1 arrives, 0 syncs): warpgroup 1's P is in
    /// shared memory and its last read of warpgroup 0's P is issued.
    PbIssued = 11,
    /// Seesaw kernel, P_a-first order (warpgroup 1 arrives, 0 syncs): warpgroup 1's
    /// P_a·V_aR has retired, so stage 0's V_R half is free for warpgroup 0 to reload.
    VaRFree = 12,
}

/// Slot of the decode kernel's error words: smallest batch index with a page id outside
/// the cache among its used pages.
pub const ERROR_PAGE_ID: usize = 0;
/// Slot of the decode kernel's error words: smallest batch index whose length is negative
/// or exceeds its block-table row.
pub const ERROR_LENGTH: usize = 1;
/// Slot of the decode kernel's error words: smallest batch index whose device length
/// contradicts the plan where that changes the output (`plan::contradicts_plan`).
pub const ERROR_PLAN: usize = 2;
/// Number of error words the decode sets; the combine kernel then copies them to the
/// next `ERROR_WORDS` (read by the host) and re-arms them with i32::MAX.
pub const ERROR_WORDS: usize = 3;
/// Slot after the published words: smallest batch index the plan gave no pages whose
/// device length has some, lowered by the combine kernel (which writes that request's
/// empty result) and re-armed by the host's checked API before each call.
pub const ERROR_EMPTY_PLANNED: usize = 2 * ERROR_WORDS;
/// Words of the error buffer: the decode's, the published ones and `ERROR_EMPTY_PLANNED`.
pub const ERROR_BUFFER_WORDS: usize = ERROR_EMPTY_PLANNED + 1;

/// Bits of the decode kernel's `flags` argument.
pub const FLAG_CAUSAL: u32 = 1;
/// Write `out` as f32 instead of the input dtype.
pub const FLAG_OUT_F32: u32 = 2;
/// Load the KV cache with an L2 evict-first hint: set by the host when the call's KV, partial
/// results, q and out take more than 70 % of the L2 (H200: up to 8 % faster at h_q 32,
/// 2K-8K, and at KV of 37.7 MB with h_q 32-128; the streamed KV then leaves the split-KV
/// partial results in L2 for the combine). Below that the default policy keeps the cache
/// in L2 for the next call over it.
pub const FLAG_KV_EVICT_FIRST: u32 = 4;
/// The KV tensor map passed has half-tile boxes (`KV_BOX_TOKENS[KV_MAP_HALF]`, see
/// `kv_map_index`): the transposed kernel's producer then issues two loads a column block.
pub const FLAG_KV_HALF_BOXES: u32 = 8;
/// The combine drops each partial result's L2 lines once it has read them, so that the
/// next call's KV stream does not write them back to memory between its reads. Set by the
/// host where the decode streams more KV than the L2 holds and that stream bounds it
/// (`Schedule::drops_partials`). H200, A-B-B-A: Fast h_q 64 at 16K-64K 2.4-2.8 % faster,
/// h_q 16 at 16K-64K 0.2-0.6 %; where the tensor cores bound the decode (h_q 128, the split
/// 64-row kernel) the drops only lengthen the combine (Fast h_q 128, 4K-64K: up to 2 %
/// slower).
pub const FLAG_DROP_PARTIALS: u32 = 16;
/// The plan takes requests in its own order (`DecodeArgs::order`, `Schedule::order`): the
/// partitions' `begin_req..=end_req` are positions in it. Without the flag the order is
/// the batch order and is not read.
pub const FLAG_ORDERED: u32 = 32;
/// The `_p16` 64-row kernels write their scaled f16 partial results by bulk tensor stores through
/// `DecodeArgs::o_accum_map` (see `seesaw::store_partials_in_bulk`) instead of shuffles and
/// register stores. Set with one KV head only, where a CTA's 64 rows are consecutive rows
/// of its request's slot.
pub const FLAG_BULK_PARTIALS: u32 = 64;
/// Bytes of a partial result row's slot: `D_V` f32. The `_p16` decode and combine kernels
/// (plans on 64-row tiles that round P once, with bf16 output: `Schedule::partials_f16`)
/// store and load partial results as f16 with a power-of-two scale per row and V half
/// instead, about half the bytes: the f16 dims fill the slot's first half, the scales
/// follow at [`PARTIAL_SCALES_BYTE`]. Their rounding (11 significant bits) adds ~1.6 % to
/// the variance of the bf16 output's own.
pub const PARTIAL_ROW_BYTES: u32 = D_V * 4;
/// Byte offset, within a partial row's slot, of an f16 row's two scales ([f32; 2], the dims
/// below `D_V / 2` and from it): a value times its half's scale is the partial result.
pub const PARTIAL_SCALES_BYTE: u32 = D_V * 2;
/// V dims that share one scale of an f16 partial row (a 64-row kernel's warpgroup's dims).
pub const PARTIAL_SCALE_DIMS: u32 = D_V / 2;

/// Column blocks that a transposed kernel's stage refills and hands back together: a
/// block group, with a "full" and an "empty" mbarrier of its own per stage. Sᵀ starts on
/// the first group to land, and a group is reloaded as soon as both warpgroups' wgmma on
/// it retire (the RoPE block's once Sᵀ is done) rather than once the whole tile is.
pub const KV_GROUP_BLOCKS: u32 = 2;
/// Block groups of a stage: the V blocks in pairs, then the RoPE block alone.
pub const KV_GROUPS: u32 = K_BLOCKS.div_ceil(KV_GROUP_BLOCKS);
/// The group of the RoPE block, which only Sᵀ reads; the groups before it hold V.
pub const ROPE_GROUP: u32 = KV_GROUPS - 1;
const _: () = assert!(ROPE_GROUP * KV_GROUP_BLOCKS == V_BLOCKS && ROPE_BLOCK == V_BLOCKS);

/// Row tiles from which a transposed kernel loads a stage's RoPE group first.
pub const ROPE_FIRST_MIN_ROWS: u32 = 32;

/// The `i`-th block group a transposed kernel of `rows_cta` rows loads into a stage and
/// multiplies in Sᵀ: from `ROPE_FIRST_MIN_ROWS` rows the RoPE group first, since the
/// consumers hand it back first (once Sᵀ is done, the V groups only during Oᵀ), then the V
/// groups in order; below, the groups in order. (H200, one round each way: h_q 32 0.983–
/// 0.999 with the RoPE group first, h_q 16 from 8K 0.5–1 % slower.)
pub const fn kv_load_order(rows_cta: u32, i: u32) -> u32 {
    if rows_cta < ROPE_FIRST_MIN_ROWS {
        i
    } else if i == 0 {
        ROPE_GROUP
    } else {
        i - 1
    }
}

/// Column blocks `first..end` of block group `g` of a transposed kernel's stage.
pub const fn kv_group_blocks(g: u32) -> (u32, u32) {
    let first = g * KV_GROUP_BLOCKS;
    let end = first + KV_GROUP_BLOCKS;
    (first, if end < K_BLOCKS { end } else { K_BLOCKS })
}

/// Byte offsets of the decode kernel's dynamic shared memory for `rows_cta` query rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeSmem {
    /// `STAGES` KV tiles, each `K_BLOCKS` swizzled blocks of 64 tokens × 64 dims.
    pub kv: u32,
    /// Q: `K_BLOCKS` swizzled blocks of `rows_cta` rows × 64 dims.
    pub q: u32,
    /// Pᵀ per consumer warpgroup: P_hi then P_lo, rows_cta rows × 64 tokens, swizzled.
    pub p: u32,
    /// Cross-warp reduction scratch: per consumer warpgroup, 4 warps × rows/2 f32.
    pub red: u32,
    /// mbarriers: `STAGES · KV_GROUPS` "full" then as many "empty" (stage-major).
    pub bars: u32,
    /// Total bytes to request.
    pub bytes: u32,
}

impl DecodeSmem {
    /// The layout for a CTA of `rows_cta` query rows (16 or 32); offsets of the
    /// swizzled regions are 1024-byte aligned.
    pub const fn new(rows_cta: u32) -> Self {
        let kv = 0;
        let q = kv + STAGES * TILE_BYTES;
        let p = q + K_BLOCKS * rows_cta * 128;
        let red = p + CONSUMER_WARPGROUPS * rows_cta * 128;
        let bars = red + CONSUMER_WARPGROUPS * 4 * (rows_cta / 2) * 4;
        let bytes = bars + 2 * STAGES * KV_GROUPS * 8;
        DecodeSmem {
            kv,
            q,
            p,
            red,
            bars,
            bytes,
        }
    }
}

/// Query rows of a seesaw CTA: the wgmma M of S = Q·Kᵀ and O += P·V (FlashMLA's
/// orientation, used for every 64-row tile).
pub const SEESAW_ROWS: u32 = 64;
/// CTAs of a thread-block cluster of seesaw CTAs: a KV head's row chunks in pairs (where
/// their number is even), which read the same KV tiles. A cluster runs on one GPC, so each
/// tile's second read is served by the L2 beside the first; nothing else is shared (H200,
/// b 16/32, h_q 128 from 2K: 2-6 % faster in both precisions; clusters of four, s_q 2,
/// 1.6× slower).
pub const SEESAW_CLUSTER_CTAS: u32 = 2;
/// V dims of O held by each consumer warpgroup of a seesaw CTA (an m64n256 accumulator).
pub const SEESAW_HALF_DV: u32 = D_V / CONSUMER_WARPGROUPS;
// A scaled f16 partial row's halves are the 64-row kernels' warpgroups' dims.
const _: () = assert!(PARTIAL_SCALE_DIMS == SEESAW_HALF_DV);
/// Column blocks of V (and K) each seesaw warpgroup reads in O += P·V.
pub const SEESAW_V_BLOCKS: u32 = SEESAW_HALF_DV / COL_BLOCK;

/// Column blocks (bit c = block c) of the half of a seesaw KV stage that consumer
/// warpgroup `half` reloads once it is done with it: the V blocks it reads (0..4 or 4..8),
/// plus the RoPE block for the warpgroup that reads it last. With `split_p` the RoPE block
/// of stage s, read by S only, holds P_hi of the stage's tile once S is done, and
/// warpgroup 1 − s is its last reader. With P rounded once, P_b has the spare buffer of its
/// own and stage 1's RoPE block is free once S_b is done: warpgroup 1 reloads both RoPE
/// blocks. (In the P_a-first order warpgroup 0 issues stage 0's half 1 for warpgroup 1, at
/// `NamedBarrier::VaRFree`.)
pub const fn seesaw_half_blocks(stage: u32, half: u32, split_p: bool) -> u32 {
    let v = ((1 << SEESAW_V_BLOCKS) - 1) << (half * SEESAW_V_BLOCKS);
    let rope_half = if split_p { 1 - stage } else { 1 };
    if half == rope_half {
        v | 1 << ROPE_BLOCK
    } else {
        v
    }
}

/// Byte offsets of the seesaw kernel's dynamic shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeesawSmem {
    /// Q: `K_BLOCKS` swizzled blocks of 64 rows × 64 dims.
    pub q: u32,
    /// `STAGES` KV tiles, each `K_BLOCKS` swizzled blocks of 64 tokens × 64 dims.
    pub kv: u32,
    /// The low half of a split P (64 rows × 64 tokens, swizzled), passed from one
    /// warpgroup to the other in turn, the high half going to the stage's RoPE block; with
    /// P rounded once, P_b.
    pub p_lo: u32,
    /// Running max per row (base-2 scaled), shared by both warpgroups.
    pub m: u32,
    /// Rescale factor per row from each warpgroup's last tile (2 × 64 f32).
    pub scale: u32,
    /// Row sums per warpgroup at the end of a piece (2 × 64 f32).
    pub l: u32,
    /// Per consumer warp (8 × u32): whether its warpgroup's last softmax moved any of the
    /// warp's 16 rows' running max, i.e. whether their rescale factors are not all 1.
    pub moved: u32,
    /// mbarriers: per stage, one per column block.
    pub bars: u32,
    /// The partition's first request as read before the wait for the previous grid
    /// (`LEAD_WORDS` words: its length, then its first `STAGES` page ids).
    pub lead: u32,
    /// The partition's piece index of its first request (`PartWork::first_split`).
    pub first_split: u32,
    /// Total bytes to request.
    pub bytes: u32,
}

impl SeesawSmem {
    /// The layout; swizzled regions 1024-byte aligned.
    pub const fn new() -> Self {
        let q = 0;
        let kv = q + K_BLOCKS * SEESAW_ROWS * 128;
        let p_lo = kv + STAGES * TILE_BYTES;
        let m = p_lo + BLOCK_BYTES;
        let scale = m + SEESAW_ROWS * 4;
        let l = scale + CONSUMER_WARPGROUPS * SEESAW_ROWS * 4;
        let moved = l + CONSUMER_WARPGROUPS * SEESAW_ROWS * 4;
        let bars = moved + CONSUMER_WARPS * 4;
        let lead = bars + STAGES * K_BLOCKS * 8;
        let first_split = lead + LEAD_WORDS * 4;
        let bytes = first_split + 4;
        SeesawSmem {
            q,
            kv,
            p_lo,
            m,
            scale,
            l,
            moved,
            bars,
            lead,
            first_split,
            bytes,
        }
    }
}

impl Default for SeesawSmem {
    fn default() -> Self {
        Self::new()
    }
}

/// Dynamic shared memory of the decode kernel for a tile of `rows` query rows: the seesaw
/// kernel at 64 rows, a transposed one below.
pub const fn decode_smem_bytes(rows: u32) -> u32 {
    if rows == SEESAW_ROWS {
        SeesawSmem::new().bytes
    } else {
        DecodeSmem::new(rows).bytes
    }
}

/// Rows per CTA chosen for `rows` query rows per KV head: the smallest tile that holds
/// them, capped at `MAX_ROWS_PER_CTA` (more rows become more CTAs over the same KV).
pub const fn row_tile_for(rows: u32) -> u32 {
    let mut i = 0;
    while i < ROW_TILES.len() {
        if rows <= ROW_TILES[i] {
            return ROW_TILES[i];
        }
        i += 1;
    }
    MAX_ROWS_PER_CTA
}

/// Most pieces of any request of the plan up to which the narrow combine runs: one warp a
/// query row (16 of its 512 V dims a lane), all of a row's pieces loaded at once,
/// `COMBINE_NARROW_ROWS` rows a CTA. H200, against 128 threads a row: b 32, h_q 128, 512
/// (2 pieces, 4096 rows) 36.0 → 29.7 µs.
pub const COMBINE_NARROW_MAX_SPLITS: u32 = 4;
/// Most pieces of any request of the plan up to which the narrow combine runs as `_pair`:
/// the same warp a row, two partial results loaded at once instead of
/// `COMBINE_NARROW_MAX_SPLITS`, which halves a lane's registers and merge arithmetic.
/// H200, two A-B-B-A rounds, `_pair` against the 4-piece narrow kernel at 2 pieces: b 32,
/// h_q 128, 512 24.1 → 22.9 µs, 1K 32.9 → 31.6, 2K 43.6 → 42.2, 4K 69.9 → 68.5; for 3-4
/// pieces the 4-piece kernel stays faster (0.5-2.3 %).
pub const COMBINE_PAIR_MAX_SPLITS: u32 = 2;
/// Query rows of a narrow combine CTA (H200: 4 rows 0.977 of 128 threads a row over the
/// sweep, 1 or 2 rows 0.980).
pub const COMBINE_NARROW_ROWS: u32 = 4;
/// Threads of the medium combine over a query row (more pieces than
/// `COMBINE_NARROW_MAX_SPLITS`, fewer than `COMBINE_WIDE_MIN_SPLITS`): two warps, 8 dims
/// a thread, 8 pieces loaded at once, a row a CTA (H200, b 16, h_q 16, 8 pieces: 512 9.2 →
/// 9.0 µs, where the narrow combine took 9.3).
pub const COMBINE_MEDIUM_TEAM: u32 = 64;
/// Threads of a wide combine group: 4 of the 512 V dims a thread. A wide combine CTA (one
/// request and query row, requests split at least `COMBINE_WIDE_MIN_SPLITS` times) is
/// `COMBINE_WIDE_GROUPS` groups: each merges every `COMBINE_WIDE_GROUPS`-th partial result,
/// so that many more loads are in flight, and the groups meet in shared memory. (Four
/// groups for every request cost ~10 % at a few splits.)
pub const COMBINE_GROUP_THREADS: u32 = 128;
/// Groups of the wide combine kernel.
pub const COMBINE_WIDE_GROUPS: u32 = 4;
/// Fewest pieces of some request of the plan at which the host launches the wide combine.
pub const COMBINE_WIDE_MIN_SPLITS: u32 = 16;
/// Most slices of the V dims the `_sliced` combine kernels divide a row among (grid z,
/// a power of two): a request split over many partitions in a small batch is merged by
/// `slices` CTAs a row, each loading its slice of every partial result, so that more SMs
/// pull the partial results from L2 (H200, b 1, h_q 16: 4K 11.6 → 10.7-10.9 µs, 64K
/// 33-35 → 30-32 µs).
pub const COMBINE_MAX_DIM_SLICES: u32 = 4;
/// Dynamic shared memory of a wide combine CTA over a row's dims in `slices` slices: per
/// group (of 128 / `slices` threads) its max and sum of weights, then its weighted dims
/// of the CTA's slice. (The narrow and medium kernels take none.)
pub const fn combine_wide_smem_bytes(slices: u32) -> u32 {
    COMBINE_WIDE_GROUPS * slices * 2 * 4 + COMBINE_WIDE_GROUPS * D_V * 4
}

/// wgmma per commit group of the throughput probe (`probe_wgmma_*`): as many as a
/// decode tile's Oᵀ batch.
pub const PROBE_BATCH: u32 = 32;

/// Dynamic shared memory of a throughput-probe CTA of `warpgroups` warpgroups at N = `n`:
/// the A block (64 × 64) and one B block (n × 64) per warpgroup.
pub const fn probe_smem_bytes(n: u32, warpgroups: u32) -> u32 {
    BLOCK_BYTES + warpgroups * n * 128
}

/// Rounds of the seesaw hand-off self-test (`selftest_seesaw_handoff`).
pub const HANDOFF_ROUNDS: u32 = 8;

/// Rounds of the hand-off self-test handed over at the pair's named barriers (bit r set:
/// round r), the others through an mbarrier: two of every four, as the seesaw kernels use
/// both. All set or none, the test tells which of the two racecheck's fault needs.
pub const HANDOFF_NAMED_ROUNDS: u32 = 0b0011_0011;

/// mbarriers of the seesaw hand-off self-test, after the memory it hands off: as many as
/// the seesaw kernels have.
pub const HANDOFF_BARRIERS: u32 = STAGES * K_BLOCKS;

/// The value the hand-off self-test writes at word `w` of shared memory in round `r`
/// (host and device agree on it to check the readers' sums).
pub const fn handoff_word(r: u32, w: u32) -> u32 {
    (w ^ (r << 20)).wrapping_mul(2_654_435_761)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_fits_and_is_aligned() {
        for rows in ROW_TILES
            .into_iter()
            .filter(|&r| r <= STACKED_SPLIT_MAX_ROWS)
        {
            let s = DecodeSmem::new(rows);
            assert!(s.bytes <= 227 * 1024, "rows {rows}: {} bytes", s.bytes);
            // Each warpgroup's P_hi and P_lo (rows/2 rows each) start on a swizzle atom.
            let (p_lo, p1) = (s.p + rows / 2 * 128, s.p + rows * 128);
            for off in [s.kv, s.q, s.p, p_lo, p1] {
                assert_eq!(off % 1024, 0, "swizzled regions need 1024-byte alignment");
            }
            assert_eq!(s.bars % 8, 0);
            assert_eq!(decode_smem_bytes(rows), s.bytes);
        }
        assert_eq!(decode_smem_bytes(SEESAW_ROWS), SeesawSmem::new().bytes);
    }

    #[test]
    fn block_groups_cover_each_stage_once_with_the_rope_block_alone() {
        let mut next = 0;
        for g in 0..KV_GROUPS {
            let (first, end) = kv_group_blocks(g);
            assert_eq!(first, next, "group {g} does not follow its predecessor");
            assert!(
                end > first && end - first <= KV_GROUP_BLOCKS,
                "group {g}: {first}..{end}"
            );
            next = end;
        }
        assert_eq!(next, K_BLOCKS);
        assert_eq!(kv_group_blocks(ROPE_GROUP), (ROPE_BLOCK, ROPE_BLOCK + 1));
        // The load order takes every group once: at 32 rows the RoPE group first, at 16
        // rows in order.
        for rows in [16, 32] {
            let mut seen = 0u32;
            for i in 0..KV_GROUPS {
                seen |= 1 << kv_load_order(rows, i);
            }
            assert_eq!(seen, (1 << KV_GROUPS) - 1);
        }
        assert_eq!(kv_load_order(32, 0), ROPE_GROUP);
        assert_eq!(kv_load_order(16, 0), 0);
        assert!(kv_group_blocks(ROPE_GROUP - 1).1 == V_BLOCKS);
    }

    #[test]
    fn seesaw_shared_memory_fits_and_halves_cover_each_stage() {
        let s = SeesawSmem::new();
        assert!(s.bytes <= 227 * 1024, "{} bytes", s.bytes);
        assert_eq!(s.kv % 1024, 0);
        assert_eq!(s.p_lo % 1024, 0);
        assert_eq!(s.bars % 8, 0);
        assert_eq!(SEESAW_ROWS, MAX_ROWS_PER_CTA);
        for split_p in [false, true] {
            for stage in 0..STAGES {
                let lo = seesaw_half_blocks(stage, 0, split_p);
                let hi = seesaw_half_blocks(stage, 1, split_p);
                assert_eq!(lo & hi, 0, "stage {stage}: a block in both halves");
                assert_eq!(
                    lo | hi,
                    (1 << K_BLOCKS) - 1,
                    "stage {stage}: a block in neither"
                );
            }
        }
        // The RoPE block (P of the stage's tile) goes with the warpgroup that reads P last.
        assert_eq!(seesaw_half_blocks(0, 1, true) >> ROPE_BLOCK, 1);
        assert_eq!(seesaw_half_blocks(1, 0, true) >> ROPE_BLOCK, 1);
        // P rounded once: P_a in stage 0's RoPE block (warpgroup 1 reads it), P_b apart.
        assert_eq!(seesaw_half_blocks(0, 1, false) >> ROPE_BLOCK, 1);
        assert_eq!(seesaw_half_blocks(1, 1, false) >> ROPE_BLOCK, 1);
    }

    #[test]
    fn combine_groups_cover_the_dims() {
        // Wide: 4 dims a thread (one 16-byte load of a partial result), within the default
        // 48 KB of shared memory. Narrow: a warp a row, 16 dims a lane (four such loads);
        // medium: whole warps a row.
        const {
            assert!(D_V / COMBINE_GROUP_THREADS == 4);
            assert!(D_V.is_multiple_of(COMBINE_MEDIUM_TEAM * 4));
            assert!(COMBINE_MEDIUM_TEAM.is_multiple_of(32));
            assert!(COMBINE_PAIR_MAX_SPLITS < COMBINE_NARROW_MAX_SPLITS);
            assert!(COMBINE_NARROW_MAX_SPLITS < COMBINE_WIDE_MIN_SPLITS);
            assert!(combine_wide_smem_bytes(COMBINE_MAX_DIM_SLICES) <= 48 * 1024);
            // A slice's group is at least a warp.
            assert!(COMBINE_MAX_DIM_SLICES.is_power_of_two());
            assert!(COMBINE_GROUP_THREADS / COMBINE_MAX_DIM_SLICES >= 32);
            assert!(COMBINE_WIDE_GROUPS * COMBINE_GROUP_THREADS <= 1024);
        }
    }

    #[test]
    fn probe_fits_shared_memory() {
        // The widest probe (N = 256, two warpgroups) within the 227 KB opt-in, the A block
        // 1024-byte aligned before the B blocks.
        const {
            assert!(probe_smem_bytes(256, 2) <= 227 * 1024);
            assert!(BLOCK_BYTES.is_multiple_of(1024));
        }
        assert_eq!(probe_smem_bytes(32, 2), 8192 + 2 * 32 * 128);
    }

    #[test]
    fn kv_boxes_tile_the_pages() {
        for b in KV_BOX_TOKENS {
            assert!(TILE_TOKENS.is_multiple_of(b), "box {b}");
            // Each box starts on a 1024-byte swizzle atom (8 rows of 128 bytes).
            assert!((b * 128).is_multiple_of(1024), "box {b}");
            assert!(b <= 256, "a TMA box extent is at most 256");
        }
        assert_eq!(KV_BOX_TOKENS, [64, 32]);
        assert_eq!(HALF_BOX_MAX_SHARE_32_ROWS, (16, 32));
        for share in [1, 2, 3, 16, 17, 32, 33, 1000] {
            for split_p in [false, true] {
                assert_eq!(
                    kv_map_index(16, share, split_p) == KV_MAP_HALF,
                    (3..=32).contains(&share),
                    "the 16-row kernels: half boxes over 3-32 pages a CTA"
                );
                assert_eq!(
                    kv_map_index(64, share, split_p),
                    KV_MAP_WHOLE,
                    "the seesaw kernels: never"
                );
                let half = share <= if split_p { 16 } else { 32 };
                assert_eq!(kv_map_index(32, share, split_p) == KV_MAP_HALF, half);
            }
        }
    }

    #[test]
    fn row_tiles() {
        assert_eq!(row_tile_for(1), 16);
        assert_eq!(row_tile_for(16), 16);
        assert_eq!(row_tile_for(17), 32);
        assert_eq!(row_tile_for(63), 64);
        assert_eq!(row_tile_for(500), 64);
    }
}
