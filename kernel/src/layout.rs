//! Shared-memory layout math shared by the kernels and the host: the 128-byte swizzle,
//! wgmma matrix descriptors and the wgmma accumulator fragment. Plain functions, so the
//! host unit tests check exactly what the device computes.

/// Bytes in one swizzled row: 64 elements of a 16-bit type.
pub const SWIZZLE_ROW_BYTES: u32 = 128;
/// Rows in one swizzle atom (the XOR pattern repeats every 1024 bytes).
pub const SWIZZLE_ATOM_ROWS: u32 = 8;
/// Bytes in one swizzle atom.
pub const SWIZZLE_ATOM_BYTES: u32 = SWIZZLE_ROW_BYTES * SWIZZLE_ATOM_ROWS;

/// The 128-byte swizzle (TMA `SWIZZLE_128B`, wgmma layout type 1): within a 1024-byte
/// aligned atom, the 16-byte unit index (bits 4..7) is XORed with the row index (bits 7..10).
#[inline(always)]
pub const fn swizzle128(offset: u32) -> u32 {
    offset ^ (((offset >> 7) & 7) << 4)
}

/// Byte offset of element (`row`, `col`) of a tile of 16-bit values stored as rows of 64
/// elements (128 bytes) with the 128-byte swizzle; the tile base must be 1024-byte aligned.
///
/// ```rust
/// use etap_kernel::layout::swizzled_offset;
/// // Row 0 is stored as is; row 1 swaps its 16-byte units pairwise (unit 0 <-> unit 1).
/// assert_eq!(swizzled_offset(0, 8), 16);
/// assert_eq!(swizzled_offset(1, 0), 128 + 16);
/// assert_eq!(swizzled_offset(1, 8), 128);
/// // The pattern repeats every 8 rows (1024 bytes).
/// assert_eq!(swizzled_offset(9, 3), 1024 + swizzled_offset(1, 3));
/// ```
#[inline(always)]
pub const fn swizzled_offset(row: u32, col: u32) -> u32 {
    swizzle128(row * SWIZZLE_ROW_BYTES + col * 2)
}

/// Operand major-ness of a wgmma shared-memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Major {
    /// The reduction (K) dimension is contiguous: rows of 64 K-elements, 8-row atoms
    /// 1024 bytes apart along M/N.
    K,
    /// M (or N) is contiguous: rows of 64 M-elements, one row per k; 8-k atoms 1024 bytes
    /// apart along K.
    MN,
}

/// Distance between two 8-row core-matrix groups of a 128B-swizzled operand.
pub const ATOM_STRIDE: u32 = SWIZZLE_ATOM_BYTES;

/// wgmma shared-memory matrix descriptor (PTX ISA: "Matrix Descriptor Format") for an
/// operand at shared address `addr` with the 128-byte swizzle.
///
/// Fields: start address >> 4 (bits 0..14), leading-dimension byte offset >> 4
/// (bits 16..30), stride-dimension byte offset >> 4 (bits 32..46), layout type in bits
/// 62..64 (1 = 128-byte swizzle). For K-major operands the stride offset is the distance
/// between 8-row groups along M/N and the leading offset is unused (1). For MN-major
/// operands the stride offset is the distance between 8-row groups along K and the
/// leading offset the distance between 64-element blocks along M/N (`mn_block_stride`).
#[inline(always)]
pub const fn smem_desc(addr: u32, major: Major, mn_block_stride: u32) -> u64 {
    let lbo: u64 = match major {
        Major::K => 1,
        Major::MN => (mn_block_stride >> 4) as u64,
    };
    let sbo = (ATOM_STRIDE >> 4) as u64;
    (((addr >> 4) & 0x3fff) as u64) | ((lbo & 0x3fff) << 16) | ((sbo & 0x3fff) << 32) | (1u64 << 62)
}

/// Descriptor `desc` moved `bytes` further in shared memory (the start-address field;
/// shared addresses stay below 2^18, so the 14-bit field cannot overflow).
#[inline(always)]
pub const fn desc_add(desc: u64, bytes: u32) -> u64 {
    desc + (bytes >> 4) as u64
}

/// Position in the 64×N tile of accumulator element `i` held by `thread` (0..128) of a
/// warpgroup after `wgmma.mma_async.m64nNk16` with f32 accumulators: returns (row, col).
/// Warp w owns rows 16w..16w+16; lane l holds rows 16w + l/4 (+8) and columns
/// 8j + 2(l%4) + {0,1}, for element i = 4j + {0,1} (row l/4) and 4j + {2,3} (row l/4 + 8).
#[inline(always)]
pub const fn acc_coord(thread: u32, i: u32) -> (u32, u32) {
    let warp = thread / 32;
    let lane = thread % 32;
    let j = i / 4;
    let row = 16 * warp + lane / 4 + 8 * ((i / 2) % 2);
    let col = 8 * j + 2 * (lane % 4) + (i % 2);
    (row, col)
}

/// Whether `lane` stores the high pair of its 16-dim span after the transposed kernels'
/// output shuffle: lanes l/4 = 2d and 2d + 1 (holding accumulator rows l/4 and l/4 + 8)
/// swap one element (`shfl.xor 4`), the even lane keeping rows 2d, 2d + 1 and the odd one
/// rows 2d + 8, 2d + 9.
#[inline(always)]
pub const fn pair_store_is_high(lane: u32) -> bool {
    (lane / 4) % 2 == 1
}

/// The first of the two adjacent accumulator rows (within a warp's 16) that `lane` stores
/// after that shuffle (see `pair_store_is_high`).
#[inline(always)]
pub const fn pair_store_dim(lane: u32) -> u32 {
    2 * (lane / 8) + if pair_store_is_high(lane) { 8 } else { 0 }
}

/// Where `stmatrix .trans` call `group` of `thread` (0..128) sends the row it addresses,
/// when the warpgroup stores its Sᵀ-shaped fragment (64 tokens × N columns) as the K-major
/// Pᵀ operand: returns (Pᵀ row = query column, first of its 8 tokens). Matrix k = 4·group +
/// lane/8 is fragment block (j, h) = (k/2, k%2): columns 8j..8j+8, tokens 16w + 8h..+8.
#[inline(always)]
pub const fn p_store_coord(thread: u32, group: u32) -> (u32, u32) {
    let warp = thread / 32;
    let lane = thread % 32;
    let k = 4 * group + lane / 8;
    (8 * (k / 2) + lane % 8, 16 * warp + 8 * (k % 2))
}

/// Fragment element pair of `stmatrix` matrix `k` (see [`p_store_coord`]): accumulator
/// elements 4j + 2h and 4j + 2h + 1.
#[inline(always)]
pub const fn p_store_pair(k: u32) -> u32 {
    4 * (k / 2) + 2 * (k % 2)
}

/// Accumulator element holding the first of the pair in register `m` (0..4) of the wgmma
/// A fragment for k16 step `kk`, when an m64n64 accumulator (S, rows × tokens) becomes the
/// A operand of O += P·V: register m holds row l/4 + 8(m%2), columns 16kk + 8(m/2) +
/// 2(l%4) + {0,1} — the elements 8kk + 2m and 8kk + 2m + 1 of the same lane.
#[inline(always)]
pub const fn a_fragment_pair(kk: u32, m: u32) -> u32 {
    8 * kk + 2 * m
}

/// Where lane `thread` (0..128) of a warpgroup points the row address of a (non-transposed)
/// `stmatrix .x4` that stores registers `a_fragment_pair(kk, 0..4)` of an m64n64
/// accumulator row-major (row = query row, 64 tokens): returns (row, first column) of the
/// 8-element row it addresses. Matrix q = lane/8 is rows 16w + 8(q%2).., columns
/// 16kk + 8(q/2)...
#[inline(always)]
pub const fn p_rows_store_coord(thread: u32, kk: u32) -> (u32, u32) {
    let warp = thread / 32;
    let lane = thread % 32;
    let q = lane / 8;
    (16 * warp + 8 * (q % 2) + lane % 8, 16 * kk + 8 * (q / 2))
}

/// Exponent of the largest power of two an f16 partial row half is scaled to: its largest
/// magnitude lands in [2^14, 2^15), below f16's largest finite value (65504) and with every
/// value that matters at its relative size above f16's smallest normal (2^-14).
pub const F16_PARTIAL_TOP_EXP: i32 = 14;

/// The power of two `k` an f16 partial row half whose largest magnitude is `max_abs` is
/// stored divided by (`max_abs` · 2^-k in [2^14, 2^15)), clamped to [-126, 126] so that 2^k
/// and 2^-k are both normal f32. Values under 2^-28 of `max_abs` may fall to f16's
/// subnormals: their error is bounded by 2^-39 of `max_abs`, not by their own size. An
/// infinite `max_abs` gives 114: infinities stay infinite and NaNs NaN, and the half's
/// finite values round to zero (an infinite O/l means the f32 accumulator overflowed, |V|
/// near f32's largest over the row's sum of P; NaNs, as from 0 · ∞, are left out of
/// `max_abs`).
#[inline(always)]
pub const fn f16_partial_scale_exp(max_abs: f32) -> i32 {
    let exp = ((max_abs.to_bits() >> 23) & 0xff) as i32 - 127;
    let k = exp - F16_PARTIAL_TOP_EXP;
    if k < -126 {
        -126
    } else if k > 126 {
        126
    } else {
        k
    }
}

/// 2^k as an f32, for `k` in [-126, 127].
#[inline(always)]
pub const fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After the shuffle each lane stores rows it holds or takes from lane ^ 4, and the 8
    /// lanes of a column cover its 16 rows once.
    #[test]
    fn pair_stores_cover_each_row_once_from_the_lanes_that_hold_it() {
        for q in 0..4 {
            let mut seen = [0u32; 16];
            for lane in (q..32).step_by(4) {
                let d = pair_store_dim(lane);
                assert_eq!(d % 2, 0, "lane {lane}: an aligned pair");
                // Rows held by a lane: acc_coord's l/4 and l/4 + 8 (warp 0).
                let held = |l: u32| [acc_coord(l, 0).0, acc_coord(l, 2).0];
                // The lane keeps one element of its own and takes the other from lane ^ 4,
                // which publishes its row l/4 (when high) or l/4 + 8 (when low).
                let own = held(lane)[pair_store_is_high(lane) as usize];
                let partner = lane ^ 4;
                let taken = held(partner)[!pair_store_is_high(partner) as usize];
                let mut pair = [own, taken];
                pair.sort();
                assert_eq!(pair, [d, d + 1], "lane {lane}");
                seen[d as usize] += 1;
                seen[d as usize + 1] += 1;
            }
            assert_eq!(seen, [1; 16], "column lanes {q} mod 4");
        }
    }

    /// Every row half's largest magnitude, scaled, lies in [2^14, 2^15) (f16's largest
    /// finite value is 65504, its smallest normal 2^-14), unless the clamp keeps 2^-k a
    /// normal f32 (magnitudes below 2^-112); the scale and its inverse are exact powers of two.
    #[test]
    fn f16_partial_scales_keep_a_row_half_in_f16_range() {
        let mut bits = 0u32;
        while bits < 0x7f80_0000 {
            let top = f32::from_bits(bits);
            let k = f16_partial_scale_exp(top);
            assert!((-126..=126).contains(&k), "{top:e}: k {k}");
            assert_eq!(pow2(k) * pow2(-k), 1.0);
            assert!(pow2(k).is_normal() && pow2(-k).is_normal());
            let scaled = top * pow2(-k);
            assert!(scaled < 32768.0, "{top:e} scaled to {scaled:e}");
            if top >= pow2(-112) {
                assert!(scaled >= 16384.0, "{top:e} scaled to {scaled:e}");
            }
            bits += 0x1357;
        }
        assert_eq!(f16_partial_scale_exp(0.0), -126);
        assert_eq!(f16_partial_scale_exp(f32::MAX), 113);
        let k = f16_partial_scale_exp(f32::INFINITY);
        assert_eq!(f32::INFINITY * pow2(-k), f32::INFINITY);
        assert_eq!(pow2(127), 2f32.powi(127));
        assert_eq!(pow2(-126), f32::MIN_POSITIVE);
    }

    #[test]
    fn swizzle_is_a_permutation_of_each_atom() {
        let mut seen = [false; 64];
        for unit in 0..64u32 {
            let p = swizzle128(unit * 16);
            assert!(p < 1024 && p.is_multiple_of(16));
            assert!(!seen[(p / 16) as usize], "unit {unit} collides");
            seen[(p / 16) as usize] = true;
        }
        // Row 0 is unchanged, row 1 swaps 16-byte units pairwise.
        assert_eq!(swizzled_offset(0, 8), 16);
        assert_eq!(swizzled_offset(1, 0), 128 + 16);
        assert_eq!(swizzled_offset(1, 8), 128);
        // The pattern repeats every 8 rows.
        assert_eq!(swizzled_offset(9, 3), 1024 + swizzled_offset(1, 3));
    }

    #[test]
    fn descriptor_fields() {
        let d = smem_desc(0x1_2400, Major::K, 0);
        assert_eq!(d & 0x3fff, (0x1_2400 >> 4) & 0x3fff);
        assert_eq!((d >> 16) & 0x3fff, 1);
        assert_eq!((d >> 32) & 0x3fff, 1024 >> 4);
        assert_eq!(d >> 62, 1);
        let d = smem_desc(0x400, Major::MN, 8192);
        assert_eq!((d >> 16) & 0x3fff, 8192 >> 4);
    }

    #[test]
    fn accumulator_fragment_covers_the_tile_once() {
        for n in [8u32, 16, 32, 64, 128, 256] {
            let mut seen = vec![false; (64 * n) as usize];
            for t in 0..128 {
                for i in 0..n / 2 {
                    let (r, c) = acc_coord(t, i);
                    assert!(r < 64 && c < n);
                    let k = (r * n + c) as usize;
                    assert!(!seen[k], "n={n} t={t} i={i}");
                    seen[k] = true;
                }
            }
            assert!(seen.iter().all(|&s| s));
        }
    }

    #[test]
    fn a_fragment_is_the_accumulator_of_the_same_lane() {
        // wgmma m64k16 A fragment (16-bit): register m holds row l/4 + 8(m%2) (+16 per
        // warp), columns 8(m/2) + 2(l%4) + e of the k16 step.
        for t in 0..128 {
            let (warp, lane) = (t / 32, t % 32);
            for kk in 0..4 {
                for m in 0..4 {
                    for e in 0..2 {
                        let row = 16 * warp + lane / 4 + 8 * (m % 2);
                        let col = 16 * kk + 8 * (m / 2) + 2 * (lane % 4) + e;
                        assert_eq!(acc_coord(t, a_fragment_pair(kk, m) + e), (row, col));
                    }
                }
            }
        }
    }

    #[test]
    fn row_major_fragment_store_matches_the_accumulator_layout() {
        // stmatrix (not transposed): lane l's pair of matrix m lands in memory row l/4 of
        // that matrix, columns 2(l%4)+e, at the row address lane 8m + l/4 gives.
        for t in 0..128 {
            let (warp, lane) = (t / 32, t % 32);
            for kk in 0..4 {
                for m in 0..4 {
                    for e in 0..2 {
                        let (row, col0) = p_rows_store_coord(32 * warp + 8 * m + lane / 4, kk);
                        let got = swizzled_offset(row, col0) + 2 * (2 * (lane % 4) + e);
                        let (r, c) = acc_coord(t, a_fragment_pair(kk, m) + e);
                        assert_eq!(got, swizzled_offset(r, c), "t={t} kk={kk} m={m} e={e}");
                    }
                }
            }
        }
    }

    #[test]
    fn transposed_fragment_store_matches_the_accumulator_layout() {
        // stmatrix .trans: lane l's pair (row l/4, columns 2(l%4)+e) of matrix m goes to
        // memory row 2(l%4)+e, element l/4, of the row address lane 8(m%4) + row gives.
        for n in [8u32, 16, 32, 64] {
            let groups = (n / 4).div_ceil(4);
            for t in 0..128 {
                let (warp, lane) = (t / 32, t % 32);
                for k in 0..n / 4 {
                    for e in 0..2 {
                        let i = p_store_pair(k) + e;
                        let (tok, col) = acc_coord(t, i);
                        let mem_row = 2 * (lane % 4) + e;
                        let addr_lane = 8 * (k % 4) + mem_row;
                        assert!(k / 4 < groups);
                        let (row, tok0) = p_store_coord(32 * warp + addr_lane, k / 4);
                        let got = swizzled_offset(row, tok0) + 2 * (lane / 4);
                        assert_eq!(got, swizzled_offset(col, tok), "n={n} t={t} k={k} e={e}");
                    }
                }
            }
        }
    }
}
