//! The 16-bit input types (bf16, fp16): their wgmma instruction and conversions.
use crate::ptx::{math, wgmma::MmaShape};

/// A 16-bit floating-point element type of q, the KV cache and out.
pub trait Element {
    /// D (+)= A·B, A and B K-major.
    unsafe fn mma<S: MmaShape>(acc: &mut S::Acc, a: u64, b: u64, accumulate: bool);
    /// D (+)= A·B, A MN-major (transposed), B K-major.
    unsafe fn mma_ta<S: MmaShape>(acc: &mut S::Acc, a: u64, b: u64, accumulate: bool);
    /// D (+)= A·B, A K-major, B MN-major (transposed).
    unsafe fn mma_tb<S: MmaShape>(acc: &mut S::Acc, a: u64, b: u64, accumulate: bool);
    /// D (+)= A·B, A from registers (packed pairs), B MN-major (transposed).
    unsafe fn mma_rs_tb<S: MmaShape>(acc: &mut S::Acc, a: [u32; 4], b: u64, accumulate: bool);
    /// Two f32 rounded to nearest into one packed pair, `lo` in the low half.
    fn pack2(lo: f32, hi: f32) -> u32;
    /// Bits to f32 (exact).
    fn to_f32(bits: u16) -> f32;
    /// f32 rounded to nearest.
    #[inline(always)]
    fn from_f32(x: f32) -> u16 {
        Self::pack2(x, 0.0) as u16
    }
}

/// bfloat16.
pub struct Bf16;
/// IEEE half precision.
pub struct F16;

impl Element for Bf16 {
    #[inline(always)]
    unsafe fn mma<S: MmaShape>(acc: &mut S::Acc, a: u64, b: u64, accumulate: bool) {
        S::mma_bf16(acc, a, b, accumulate)
    }
    #[inline(always)]
    unsafe fn mma_ta<S: MmaShape>(acc: &mut S::Acc, a: u64, b: u64, accumulate: bool) {
        S::mma_bf16_ta(acc, a, b, accumulate)
    }
    #[inline(always)]
    unsafe fn mma_tb<S: MmaShape>(acc: &mut S::Acc, a: u64, b: u64, accumulate: bool) {
        S::mma_bf16_tb(acc, a, b, accumulate)
    }
    #[inline(always)]
    unsafe fn mma_rs_tb<S: MmaShape>(acc: &mut S::Acc, a: [u32; 4], b: u64, accumulate: bool) {
        S::mma_bf16_rs_tb(acc, a, b, accumulate)
    }
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        math::pack_bf16x2(lo, hi)
    }
    #[inline(always)]
    fn to_f32(bits: u16) -> f32 {
        math::bf16_to_f32(bits)
    }
}

impl Element for F16 {
    #[inline(always)]
    unsafe fn mma<S: MmaShape>(acc: &mut S::Acc, a: u64, b: u64, accumulate: bool) {
        S::mma_f16(acc, a, b, accumulate)
    }
    #[inline(always)]
    unsafe fn mma_ta<S: MmaShape>(acc: &mut S::Acc, a: u64, b: u64, accumulate: bool) {
        S::mma_f16_ta(acc, a, b, accumulate)
    }
    #[inline(always)]
    unsafe fn mma_tb<S: MmaShape>(acc: &mut S::Acc, a: u64, b: u64, accumulate: bool) {
        S::mma_f16_tb(acc, a, b, accumulate)
    }
    #[inline(always)]
    unsafe fn mma_rs_tb<S: MmaShape>(acc: &mut S::Acc, a: [u32; 4], b: u64, accumulate: bool) {
        S::mma_f16_rs_tb(acc, a, b, accumulate)
    }
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        math::pack_f16x2(lo, hi)
    }
    #[inline(always)]
    fn to_f32(bits: u16) -> f32 {
        math::f16_to_f32(bits)
    }
}
