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
/// wgmma k16 steps of Oᵀ += Vᵀ·Pᵀ per V block (64 tokens / 16).
pub const PV_STEPS: u32 = TILE_TOKENS / 16;
/// Most query rows per CTA at which the split-P kernels (P ≈ P_hi + P_lo, Oᵀ += Vᵀ·P_hiᵀ +
/// Vᵀ·P_loᵀ) stack P_lo under P_hi as N more columns of one wgmma (the Oᵀ accumulator twice
/// as wide); wider tiles make a second k pass instead.
pub const STACKED_SPLIT_MAX_ROWS: u32 = 32;
/// Column block of a KV stage that holds a wider tile's P_lo once Sᵀ is done: the RoPE dims
/// (512..576), which Oᵀ does not read.
pub const P_LO_BLOCK: u32 = K_BLOCKS - 1;

/// Warpgroup roles of the decode kernel: warpgroup 0 produces (TMA), 1 and 2 consume.
pub const PRODUCER_WARPGROUP: u32 = 0;
/// Consumer warpgroups: each owns half of the CTA's query rows and all 512 V dims.
pub const CONSUMER_WARPGROUPS: u32 = 2;
/// Threads of a decode CTA.
pub const DECODE_THREADS: u32 = 128 * (1 + CONSUMER_WARPGROUPS);
/// Consumer warps: the arrival count of an "empty" stage barrier.
pub const CONSUMER_WARPS: u32 = 4 * CONSUMER_WARPGROUPS;
/// KV pipeline depth (72 KB stages).
pub const STAGES: u32 = 2;
/// Most query rows (s_q·h_q/h_kv) one CTA handles: two consumer warpgroups of N = 32.
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
    /// Both consumer warpgroups (256 threads): a tile's masked rows were zeroed.
    Consumers = 1,
    /// The 128 threads of consumer warpgroup 0; warpgroup 1 uses the next id.
    ConsumerGroup0 = 2,
    /// Consumer warpgroup 0 may issue its next wgmma batch (256 threads: it syncs, the
    /// other warpgroup arrives); warpgroup 1 uses the next id.
    Turn0 = 4,
    /// Both consumer warpgroups (256 threads): both have finished Sᵀ of the tile, so the
    /// stage's RoPE block (no longer read) may take the low half of a split Pᵀ.
    ScoresDone = 6,
}

/// Slot of the decode kernel's error words: smallest batch index with a page id outside
/// the cache among its used pages.
pub const ERROR_PAGE_ID: usize = 0;
/// Slot of the decode kernel's error words: smallest batch index whose length is negative
/// or exceeds its block-table row.
pub const ERROR_LENGTH: usize = 1;
/// Number of error words the decode sets; the combine kernel then copies them to the
/// next `ERROR_WORDS` (read by the host) and re-arms them with i32::MAX.
pub const ERROR_WORDS: usize = 2;

/// Bits of the decode kernel's `flags` argument.
pub const FLAG_CAUSAL: u32 = 1;
/// Write `out` as f32 instead of the input dtype.
pub const FLAG_OUT_F32: u32 = 2;

/// Byte offsets of the decode kernel's dynamic shared memory for `rows_cta` query rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeSmem {
    /// `STAGES` KV tiles, each `K_BLOCKS` swizzled blocks of 64 tokens × 64 dims.
    pub kv: u32,
    /// Q: `K_BLOCKS` swizzled blocks of `rows_cta` rows × 64 dims.
    pub q: u32,
    /// Pᵀ per consumer warpgroup: `p_buffer_rows(rows_cta)` rows × 64 tokens, swizzled.
    pub p: u32,
    /// Cross-warp reduction scratch: per consumer warpgroup, 4 warps × rows/2 f32.
    pub red: u32,
    /// mbarriers: `STAGES` "full" then `STAGES` "empty".
    pub bars: u32,
    /// Total bytes to request.
    pub bytes: u32,
}

impl DecodeSmem {
    /// The layout for a CTA of `rows_cta` query rows (one of [`ROW_TILES`]); offsets of the
    /// swizzled regions are 1024-byte aligned.
    pub const fn new(rows_cta: u32) -> Self {
        let kv = 0;
        let q = kv + STAGES * TILE_BYTES;
        let p = q + K_BLOCKS * rows_cta * 128;
        let red = p + CONSUMER_WARPGROUPS * p_buffer_rows(rows_cta) * 128;
        let bars = red + CONSUMER_WARPGROUPS * 4 * (rows_cta / 2) * 4;
        let bytes = bars + 2 * STAGES * 8;
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

/// Rows of one consumer warpgroup's Pᵀ buffer in a CTA of `rows_cta` query rows: its
/// N = rows_cta/2 columns, twice that up to `STACKED_SPLIT_MAX_ROWS`, where the split-P
/// kernels stack P's low half under its high half (wider tiles put it in `P_LO_BLOCK`).
pub const fn p_buffer_rows(rows_cta: u32) -> u32 {
    if rows_cta <= STACKED_SPLIT_MAX_ROWS {
        rows_cta
    } else {
        rows_cta / 2
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

/// Threads of a combine group: 4 of the 512 V dims a thread. A combine CTA (one request
/// and query row) is one group, or `COMBINE_WIDE_GROUPS` for requests split at least
/// `COMBINE_WIDE_MIN_SPLITS` times: each group then merges every `COMBINE_WIDE_GROUPS`-th
/// partial result, so that many more loads are in flight, and the groups meet in shared
/// memory. (Four groups for every request cost ~10 % at a few splits.)
pub const COMBINE_GROUP_THREADS: u32 = 128;
/// Groups of the wide combine kernel.
pub const COMBINE_WIDE_GROUPS: u32 = 4;
/// Fewest pieces of some request of the plan at which the host launches the wide combine.
pub const COMBINE_WIDE_MIN_SPLITS: u32 = 16;
/// Dynamic shared memory of a combine CTA of `groups` groups: per group its max and sum
/// of weights, then its 512 weighted dims.
pub const fn combine_smem_bytes(groups: u32) -> u32 {
    if groups == 1 {
        0
    } else {
        groups * (2 + D_V) * 4
    }
}

/// wgmma per commit group of the throughput probe (`probe_wgmma_*`): as many as a
/// decode tile's Oᵀ batch.
pub const PROBE_BATCH: u32 = 32;

/// Dynamic shared memory of a throughput-probe CTA of `warpgroups` warpgroups at N = `n`:
/// the A block (64 × 64) and one B block (n × 64) per warpgroup.
pub const fn probe_smem_bytes(n: u32, warpgroups: u32) -> u32 {
    BLOCK_BYTES + warpgroups * n * 128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_fits_and_is_aligned() {
        for rows in ROW_TILES {
            let s = DecodeSmem::new(rows);
            assert!(s.bytes <= 227 * 1024, "rows {rows}: {} bytes", s.bytes);
            for off in [s.kv, s.q, s.p] {
                assert_eq!(off % 1024, 0, "swizzled regions need 1024-byte alignment");
            }
            assert_eq!(
                (s.p + p_buffer_rows(rows) * 128) % 1024,
                0,
                "second Pᵀ buffer aligned"
            );
            assert_eq!(s.bars % 8, 0);
        }
    }

    #[test]
    fn combine_groups_cover_the_dims() {
        // 4 dims a thread (one 16-byte load of a partial result), no dynamic shared memory
        // for one group, and the wide kernel within the default 48 KB.
        const {
            assert!(D_V / COMBINE_GROUP_THREADS == 4);
            assert!(combine_smem_bytes(1) == 0);
            assert!(combine_smem_bytes(COMBINE_WIDE_GROUPS) <= 48 * 1024);
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
    fn row_tiles() {
        assert_eq!(row_tile_for(1), 16);
        assert_eq!(row_tile_for(16), 16);
        assert_eq!(row_tile_for(17), 32);
        assert_eq!(row_tile_for(63), 64);
        assert_eq!(row_tile_for(500), 64);
    }
}
