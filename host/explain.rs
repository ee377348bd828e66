//! `flashmla-etap plan`: what the planner makes of a shape, without a GPU — the decode
//! kernel, how the pages fall on the partitions, how many pieces the requests split into
//! and which combine merges them. The shapes are the bench's points (`--point`, varlen
//! lengths drawn as the bench draws them), so a benchmark figure can be read against the
//! plan that produced it.

use crate::bench::{Point, Sweep};
use crate::decode::{DecodePlan, Precision, Schedule, MAX_SM_COUNT};
use crate::error::{Error, Result};
use crate::reference::Dtype;
use clap::Args;
use etap_kernel::config::SEESAW_ROWS;
use etap_kernel::plan::{self, PAGE_SIZE};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Arguments of `flashmla-etap plan`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("shapes").required(true).args(["points", "sweep"])))]
pub struct PlanArgs {
    /// The shapes, as `bench --point` takes them (repeatable), e.g. `b=16,h_q=128,s_k=32K`
    /// or `b=128,h_q=16,s_k=4096v` (varlen lengths as the bench draws them).
    #[arg(long = "point", value_name = "b=B,h_q=H,s_k=K[,s_q=S]")]
    pub points: Vec<String>,
    /// A named set of the bench's points instead: `anchors` (73), `quick` (9) or `varlen`
    /// (52, `bench --varlen-sweep`), e.g. to compare two builds' plans.
    #[arg(long, value_enum)]
    pub sweep: Option<Sweep>,
    /// The precision the plan is made for.
    #[arg(long, value_enum, default_value_t = Precision::Accurate)]
    pub precision: Precision,
    /// SMs of the GPU planned for (an H100 or H200 SXM has 132).
    #[arg(long, value_name = "N", default_value_t = 132)]
    pub sms: u32,
    /// L2 of the GPU in MiB, which decides whether the KV is streamed evict-first (an H200
    /// has 60, an H100 SXM 50).
    #[arg(long, value_name = "MIB", default_value_t = 60)]
    pub l2_mib: u64,
}

/// Runs `flashmla-etap plan`.
pub fn main(args: &PlanArgs) -> Result<()> {
    if args.sms == 0 || args.sms > MAX_SM_COUNT {
        return Err(Error::invalid(
            "--sms",
            format!("{} is not in 1..={MAX_SM_COUNT}", args.sms),
        ));
    }
    let points = match args.sweep {
        Some(sweep) => sweep.points(),
        None => args
            .points
            .iter()
            .map(|s| Point::parse(s))
            .collect::<Result<Vec<_>>>()?,
    };
    let l2_bytes = args.l2_mib.checked_mul(1 << 20).ok_or_else(|| {
        Error::invalid(
            "--l2-mib",
            format!("{} MiB is more bytes than a u64 holds", args.l2_mib),
        )
    })?;
    for p in &points {
        let text = describe(p, args.precision, args.sms, l2_bytes)?;
        if !print_piped(&text)? {
            break;
        }
    }
    Ok(())
}

/// Writes `text` to standard output; `Ok(false)` once the reader has gone (a closed pipe,
/// as under `| head`), where `print!` would panic.
pub(crate) fn print_piped(text: &str) -> Result<bool> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Error::Other(format!("writing to standard output: {e}"))),
    }
}

/// The decode's plan for the bench point `p` on `sm_count` SMs with `l2_bytes` of L2, as
/// a few lines of text.
pub fn describe(p: &Point, precision: Precision, sm_count: u32, l2_bytes: u64) -> Result<String> {
    p.check()?;
    let lengths = p.lengths();
    let config = p.config(&lengths, precision);
    let s = DecodePlan::schedule(&config, &lengths, sm_count)?;
    let parts = Partitions::of(&s, &lengths);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{} ({precision:?}, {sm_count} SMs):", p.label());
    let _ = writeln!(
        out,
        "  decode: {} ({}-row tiles, {} a KV head{}; {})",
        s.decode_kernel_name(Dtype::Bf16, false),
        s.rows_per_cta,
        s.row_chunks,
        if s.pair_cluster().is_some() {
            ", launched in pair clusters where the GPU holds them"
        } else {
            ""
        },
        kernel_order(&s)
    );
    let _ = writeln!(
        out,
        "  partitions: {} with work of {}, {} each; {} pages, {}–{} a partition",
        s.active_parts,
        s.num_parts,
        if s.row_chunks == 1 {
            "1 CTA".to_string()
        } else {
            format!("{} CTAs", s.row_chunks)
        },
        s.total_pages,
        parts.min_pages,
        parts.max_pages
    );
    let histogram: Vec<String> = parts
        .pieces_per_part
        .iter()
        .map(|(pieces, n)| format!("{n} of {pieces}"))
        .collect();
    let _ = writeln!(
        out,
        "  pieces: {} (partitions: {}); up to {} a request{}",
        s.split_offsets[p.b],
        histogram.join(", "),
        s.max_splits,
        if s.ordered {
            "; requests longest-fitting first (`order::plan_ordered`)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  combine: {:?}{}; partial results {}",
        s.combine.kind,
        if s.combine.slices > 1 {
            format!(", {} dim slices a row", s.combine.slices)
        } else {
            String::new()
        },
        match (
            s.partials_f16(Dtype::Bf16, false),
            s.bulk_partials(config.h_kv, Dtype::Bf16, false),
        ) {
            (true, true) =>
                "f16 with a scale a row half for bf16 output (bulk tensor stores), else f32",
            (true, false) => "f16 with a scale a row half for bf16 output, else f32",
            _ => "f32",
        }
    );
    let _ = writeln!(
        out,
        "  KV: {:.1} MB, {} on {} MiB of L2",
        s.kv_bytes as f64 / 1e6,
        if s.kv_evict_first(l2_bytes) {
            "streamed evict-first"
        } else {
            "kept in L2 for the next call"
        },
        l2_bytes >> 20
    );
    Ok(out)
}

/// How the plan's decode kernel treats P, and in which order the seesaw kernel runs a pair.
fn kernel_order(s: &Schedule) -> &'static str {
    match (s.split_p, s.rows_per_cta == SEESAW_ROWS, s.pa_first) {
        (true, _, _) => "P split in two 16-bit terms",
        (false, true, true) => "P rounded once, P_a-first order",
        (false, true, false) => "P rounded once, FlashMLA's order",
        (false, false, _) => "P rounded once",
    }
}

/// Pages and pieces over a plan's partitions with work.
struct Partitions {
    min_pages: u64,
    max_pages: u64,
    /// Partitions by their number of pieces.
    pieces_per_part: BTreeMap<usize, usize>,
}

impl Partitions {
    fn of(s: &Schedule, lengths: &[i32]) -> Self {
        let mut min_pages = u64::MAX;
        let mut max_pages = 0;
        let mut pieces_per_part = BTreeMap::new();
        let by_pos = s.lengths_by_position(lengths);
        for part in &s.parts[..s.active_parts] {
            let (mut pages, mut pieces) = (0u64, 0usize);
            for piece in plan::pieces(part, &by_pos, PAGE_SIZE) {
                pages += (piece.page_end - piece.page_begin) as u64;
                pieces += 1;
            }
            min_pages = min_pages.min(pages);
            max_pages = max_pages.max(pages);
            *pieces_per_part.entry(pieces).or_insert(0) += 1;
        }
        Partitions {
            min_pages: min_pages.min(max_pages),
            max_pages,
            pieces_per_part,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(s: &str) -> Point {
        Point::parse(s).unwrap()
    }

    #[test]
    fn every_varlen_sweep_point_is_planned_and_most_in_their_own_order() {
        let v = Sweep::Varlen.points();
        let ordered = v
            .iter()
            .map(|p| describe(p, Precision::Fast, 132, 60 << 20).unwrap())
            .filter(|text| text.contains("requests longest-fitting first"))
            .count();
        // Uneven lengths: the plans the model prefers in the requests' own order.
        assert!(ordered * 2 > v.len(), "{ordered} of {}", v.len());
    }

    #[test]
    fn describes_a_seesaw_plan_with_two_piece_partitions() {
        // b 16, h_q 128, 64K: 16 · 1024 pages over 66 pair partitions, 14 of them holding
        // the end of one request and the start of the next.
        let text = describe(
            &point("b=16,h_q=128,s_k=64K"),
            Precision::Fast,
            132,
            60 << 20,
        )
        .unwrap();
        assert!(text.contains("decode: etap_decode_bf16_r64_p16 (64-row tiles, 2 a KV head, launched in pair clusters"), "{text}");
        assert!(text.contains("FlashMLA's order"), "{text}");
        assert!(
            text.contains(
                "partitions: 66 with work of 66, 2 CTAs each; 16384 pages, 188–251 a partition"
            ),
            "{text}"
        );
        assert!(
            text.contains("pieces: 80 (partitions: 52 of 1, 14 of 2); up to 5 a request"),
            "{text}"
        );
        assert!(
            text.contains(
                "combine: Medium; partial results f16 with a scale a row half for bf16 output \
                 (bulk tensor stores), else f32"
            ),
            "{text}"
        );
        assert!(
            text.contains("KV: 1208.0 MB, streamed evict-first"),
            "{text}"
        );
    }

    #[test]
    fn describes_narrow_and_split_plans() {
        // b 4, h_q 128, 1K: one page a partition, and 16 pieces a request on 64-row tiles
        // (the wide combine) against 9 on 32-row ones: 32-row tiles (`plan::row_tiling`).
        let text = describe(
            &point("b=4,h_q=128,s_k=1K"),
            Precision::Accurate,
            132,
            60 << 20,
        )
        .unwrap();
        assert!(
            text.contains("etap_decode_bf16_r32_split (32-row tiles, 4 a KV head;"),
            "{text}"
        );
        assert!(text.contains("P split in two 16-bit terms"), "{text}");
        assert!(text.contains("kept in L2"), "{text}");
    }

    /// The kernel a plan names is one the module holds, for every tile, precision and
    /// seesaw order the planner picks.
    #[test]
    fn the_named_decode_kernels_exist() {
        let names = crate::module::kernel_names();
        for precision in [Precision::Fast, Precision::Accurate] {
            for p in [
                "b=8,h_q=128,s_k=512",
                "b=16,h_q=128,s_k=32K",
                "b=16,h_q=64,s_k=2K",
                "b=32,h_q=32,s_k=8K",
                "b=16,h_q=16,s_k=64K",
            ] {
                let p = point(p);
                let lengths = p.lengths();
                let s =
                    DecodePlan::schedule(&p.config(&lengths, precision), &lengths, 132).unwrap();
                for (dtype, out_f32) in [
                    (Dtype::Bf16, false),
                    (Dtype::Bf16, true),
                    (Dtype::F16, false),
                ] {
                    let name = s.decode_kernel_name(dtype, out_f32);
                    assert!(
                        names.contains(&name.as_str()),
                        "{name} ({precision:?}, {})",
                        p.label()
                    );
                }
            }
        }
    }

    #[test]
    fn an_empty_batch_is_an_error_naming_the_argument() {
        let p = Point::new(0, 1, 16, 64);
        let e = describe(&p, Precision::Fast, 132, 60 << 20).unwrap_err();
        assert!(e.to_string().contains("needs b, h_q and s_k"), "{e}");
        // Past the decode's limits, before any length is drawn: s_q · h_q above 65535.
        let e = describe(&Point::new(1, 4, 32768, 64), Precision::Fast, 132, 60 << 20);
        assert!(e.unwrap_err().to_string().contains("s_q · h_q"));
    }
}
