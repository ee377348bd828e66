//! Warp shuffles and votes (PTX ISA: shfl.sync, vote.sync).
use core::arch::asm;

/// shfl.sync.bfly: the value of lane (lane ^ `mask`).
#[inline(always)]
pub fn shfl_xor(v: f32, mask: u32) -> f32 {
    let r: f32;
    unsafe {
        asm!("shfl.sync.bfly.b32 {r}, {v}, {m}, 0x1f, 0xffffffff;", r = out(reg32) r, v = in(reg32) v, m = in(reg32) mask,
            options(nomem, nostack))
    };
    r
}

/// shfl.sync.idx: the value `v` of lane `src` (all 32 lanes take part).
#[inline(always)]
pub fn shfl_idx(v: f32, src: u32) -> f32 {
    let r: f32;
    unsafe {
        asm!("shfl.sync.idx.b32 {r}, {v}, {s}, 0x1f, 0xffffffff;", r = out(reg32) r, v = in(reg32) v, s = in(reg32) src,
            options(nomem, nostack));
    }
    r
}

/// bar.warp.sync: reconverges the warp and orders its lanes' memory accesses.
#[inline(always)]
pub fn sync() {
    unsafe { asm!("bar.warp.sync 0xffffffff;", options(nostack)) };
}

/// Max over the 8 lanes that share `lane % 4` (xor 4, 8, 16): in a wgmma accumulator
/// fragment, those lanes hold the 8 row pairs of one column pair.
#[inline(always)]
pub fn max_over_fragment_rows(v: f32) -> f32 {
    let v = v.max(shfl_xor(v, 4));
    let v = v.max(shfl_xor(v, 8));
    v.max(shfl_xor(v, 16))
}

/// Sum over the 8 lanes that share `lane % 4` (see `max_over_fragment_rows`).
#[inline(always)]
pub fn sum_over_fragment_rows(v: f32) -> f32 {
    let v = v + shfl_xor(v, 4);
    let v = v + shfl_xor(v, 8);
    v + shfl_xor(v, 16)
}

/// shfl.sync.idx from lane 0: the same value in every lane, which also tells ptxas the
/// value is warp-uniform, so values derived from it (wgmma descriptors) can live in
/// uniform registers.
#[inline(always)]
pub fn uniform(v: u32) -> u32 {
    let r: u32;
    unsafe {
        asm!("shfl.sync.idx.b32 {r}, {v}, 0, 0x1f, 0xffffffff;", r = out(reg32) r, v = in(reg32) v,
            options(nomem, nostack))
    };
    r
}

/// elect.sync: true in exactly one lane of the (converged) warp, the same lane every time.
/// ptxas knows that a TMA load predicated on it is issued once, so it needs no loop over the
/// lanes' operand values (PTX ISA: elect.sync).
#[inline(always)]
pub fn elect_one() -> bool {
    let r: u32;
    unsafe {
        asm!(
            "{{ .reg .pred p; elect.sync _|p, 0xffffffff; selp.u32 {r}, 1, 0, p; }}",
            r = out(reg32) r, options(nomem, nostack)
        )
    };
    r != 0
}

/// vote.sync.all: whether `pred` holds in every lane of the warp.
#[inline(always)]
pub fn all(pred: bool) -> bool {
    let r: u32;
    unsafe {
        asm!(
            "{{ .reg .pred p, q; setp.ne.u32 p, {c}, 0; vote.sync.all.pred q, p, 0xffffffff; selp.u32 {r}, 1, 0, q; }}",
            c = in(reg32) pred as u32, r = out(reg32) r, options(nomem, nostack)
        )
    };
    r != 0
}

/// Whether `pred` holds in any lane of the warp: `vote.sync.all` on `!pred`, negated (the
/// same one vote as vote.sync.any).
#[inline(always)]
pub fn any(pred: bool) -> bool {
    !all(!pred)
}
