//! `flashmla-etap compare`: per-point A-B comparison of `bench --json` reports, without a
//! GPU. The H200s of a device pool differ by a few percent from card to card, so a change
//! is measured by alternating the two builds in one run (A-B-B-A) and comparing those
//! reports: each side's time at a point is the geometric mean over its runs, and a point
//! counts as moved only where the two sides' ranges of run times do not overlap. A run's time
//! is its median replay, or with `--fastest` its fastest: where the card caps its power
//! (h_q 64/128 from 8K on an H200) the clock steps down within a run's replays at moments
//! that differ from run to run, and the fastest replay, before the first step, separates a
//! change of a few percent that the medians' spread hides. With `--cycles` a run's time is
//! its SM cycles a call ([`crate::bench::PointResult::cycles_per_call`]: each replay at the
//! clock counted after it), which the clock's steps move less than the time (H200, b 32,
//! h_q 128, 32K: the clock 20 % lower, the time 15 % longer, the cycles 8 % fewer, as the
//! waits on memory take fewer cycles): it compares the work's cycles, not the energy that
//! decides a capped point's time.

use crate::bench::{geomean, parse_filters, select, Filter, Point, PointResult, Report};
use crate::error::{Error, Result};
use std::path::PathBuf;

/// Options of `flashmla-etap compare`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CompareArgs {
    /// Reports (`bench --json`) of the base build; comma-separate or repeat for several runs.
    #[arg(long, value_name = "PATH", value_delimiter = ',', required = true)]
    pub base: Vec<PathBuf>,
    /// Reports of the build under test, from the same run as the base's.
    #[arg(long, value_name = "PATH", value_delimiter = ',', required = true)]
    pub new: Vec<PathBuf>,
    /// Keep only the points matching KEY=VALUE (as `bench --only`).
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Compare each run's fastest replay instead of its median.
    #[arg(long, conflicts_with = "cycles")]
    pub fastest: bool,
    /// Compare each run's SM cycles a call (thousands) instead of its median µs.
    #[arg(long)]
    pub cycles: bool,
}

/// Which of a run's replay times stands for the run at a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunTime {
    /// The median replay (the bench's µs).
    Median,
    /// The fastest replay.
    Fastest,
    /// SM cycles a call, thousands ([`crate::bench::PointResult::cycles_per_call`]).
    Cycles,
}

impl RunTime {
    /// The run's time at point `q`; `None` where its report lacks what this needs.
    fn of(self, q: &PointResult) -> Option<f64> {
        match self {
            RunTime::Median => Some(q.us),
            RunTime::Fastest => q.fastest_us(),
            RunTime::Cycles => q.cycles_per_call().map(|c| c * 1e-3),
        }
    }

    /// What a point's report must hold for [`RunTime::of`], and the flag that needs it.
    fn needs(self) -> &'static str {
        match self {
            RunTime::Median => "its median",
            RunTime::Fastest => "its replay times: --fastest needs them",
            RunTime::Cycles => {
                "a clock reading for each replay (a bench from before the clock probe?): \
                 --cycles needs them"
            }
        }
    }

    /// How the comparison names the run times, their unit, and a move down or up.
    fn describe(self) -> [&'static str; 4] {
        match self {
            RunTime::Median => ["median replays", "µs", "faster", "slower"],
            RunTime::Fastest => ["fastest replays", "µs", "faster", "slower"],
            RunTime::Cycles => ["SM cycles a call", "kcyc", "fewer", "more"],
        }
    }
}

/// One point measured by every report of both sides.
#[derive(Clone, Debug, PartialEq)]
pub struct PointComparison {
    /// The benchmark point.
    pub point: Point,
    /// Geometric mean of the base runs' µs (thousands of cycles with [`RunTime::Cycles`]).
    pub base_us: f64,
    /// Geometric mean of the new runs' µs (thousands of cycles with [`RunTime::Cycles`]).
    pub new_us: f64,
    /// `new_us / base_us`.
    pub ratio: f64,
    /// Where the new runs' range lies entirely below (`Less`) or above (`Greater`) the base
    /// runs' range; `None` where they overlap or a side has a single run.
    pub moved: Option<std::cmp::Ordering>,
}

/// The comparison of two sets of reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Every point common to all reports, in the first base report's order.
    pub points: Vec<PointComparison>,
    /// Geometric mean of the per-point ratios (new / base).
    pub geomean_ratio: f64,
    /// Points of the first base report (after `--only`) missing from some report.
    pub skipped: usize,
}

/// [`compare_by`] on the runs' median replays (the bench's µs).
pub fn compare(base: &[Report], new: &[Report], filters: &[Filter]) -> Result<Comparison> {
    compare_by(base, new, filters, RunTime::Median)
}

/// Compares `new` with `base` over the points (matching every filter) that all reports
/// measured, each run timed by `run_time`. Every report must come from the same GPU model
/// and precision, and hold its replays where `run_time` is [`RunTime::Fastest`] (and a
/// clock reading for each where it is [`RunTime::Cycles`]): anything else is an error
/// naming the side (`--base` or `--new`) and the report.
pub fn compare_by(
    base: &[Report],
    new: &[Report],
    filters: &[Filter],
    run_time: RunTime,
) -> Result<Comparison> {
    let first = base
        .first()
        .ok_or_else(|| Error::invalid("--base", "needs at least one report"))?;
    if new.is_empty() {
        return Err(Error::invalid("--new", "needs at least one report"));
    }
    let wanted = select(first.points.iter().map(|p| p.point).collect(), filters);
    let sides = [("--base", base), ("--new", new)];
    for (arg, reports) in sides {
        for (i, r) in reports.iter().enumerate() {
            // Only the points compared need the replays or the clock readings.
            let mut compared = r.points.iter().filter(|p| wanted.contains(&p.point));
            if compared.any(|p| run_time.of(p).is_none()) {
                return Err(Error::invalid(
                    arg,
                    format!("report {} has a point without {}", i + 1, run_time.needs()),
                ));
            }
            if r.device != first.device || r.precision != first.precision {
                return Err(Error::invalid(
                    arg,
                    format!(
                        "report {} ran on {} with precision {:?}, the first --base report on {} with {:?}: compare runs of one card model and precision",
                        i + 1,
                        r.device,
                        r.precision,
                        first.device,
                        first.precision
                    ),
                ));
            }
        }
    }
    let times = |reports: &[Report], p: &Point| -> Option<Vec<f64>> {
        reports
            .iter()
            .map(|r| {
                let q = r.points.iter().find(|q| q.point == *p)?;
                run_time.of(q)
            })
            .collect()
    };
    let mut points = Vec::new();
    for p in &wanted {
        let (Some(b), Some(n)) = (times(base, p), times(new, p)) else {
            continue;
        };
        let (base_us, new_us) = (geomean(b.iter().copied()), geomean(n.iter().copied()));
        let range = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            (lo, v.iter().copied().fold(lo, f64::max))
        };
        let ((b_lo, b_hi), (n_lo, n_hi)) = (range(&b), range(&n));
        let moved = if b.len() < 2 || n.len() < 2 {
            None
        } else if n_hi < b_lo {
            Some(std::cmp::Ordering::Less)
        } else if n_lo > b_hi {
            Some(std::cmp::Ordering::Greater)
        } else {
            None
        };
        points.push(PointComparison {
            point: *p,
            base_us,
            new_us,
            ratio: new_us / base_us,
            moved,
        });
    }
    if points.is_empty() {
        let (arg, rule) = if first.points.is_empty() {
            ("--base", "the first report has no points")
        } else if filters.is_empty() {
            (
                "--new",
                "no point of the first --base report is measured by every report",
            )
        } else {
            (
                "--only",
                "no point is measured by every report and matches the filters",
            )
        };
        return Err(Error::invalid(arg, rule));
    }
    Ok(Comparison {
        geomean_ratio: geomean(points.iter().map(|c| c.ratio)),
        skipped: wanted.len() - points.len(),
        points,
    })
}

/// Runs `flashmla-etap compare`: prints every common point (base and new µs, their ratio,
/// whether it moved beyond the runs' spread) and the geometric-mean ratio.
pub fn main(args: &CompareArgs) -> Result<()> {
    let filters = parse_filters(&args.only)?;
    let base = args
        .base
        .iter()
        .map(|p| Report::load("--base", p))
        .collect::<Result<Vec<_>>>()?;
    let new = args
        .new
        .iter()
        .map(|p| Report::load("--new", p))
        .collect::<Result<Vec<_>>>()?;
    let run_time = if args.fastest {
        RunTime::Fastest
    } else if args.cycles {
        RunTime::Cycles
    } else {
        RunTime::Median
    };
    let [what, unit, less, more] = run_time.describe();
    let c = compare_by(&base, &new, &filters, run_time)?;
    let all = serials(base.iter().chain(&new));
    if all.len() > 1 {
        eprintln!(
            "warning: the runs come from cards {}; cards of one pool differ by a few percent, so only runs on one card compare",
            all.join(", ")
        );
    }
    let commits = |r: &[Report]| {
        r.iter()
            .map(|r| r.git_commit.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{}, precision {}, {what}: base {} run(s) of {}{}; new {} run(s) of {}{}",
        base[0].device,
        base[0].precision,
        base.len(),
        commits(&base),
        cards(&base),
        new.len(),
        commits(&new),
        cards(&new)
    );
    println!(
        "{:>30} | {:>9} {:>9} | {:>6}",
        "point",
        format!("base {unit}"),
        format!("new {unit}"),
        "ratio"
    );
    for p in &c.points {
        let note = match p.moved {
            Some(std::cmp::Ordering::Less) => format!("  {less}"),
            Some(std::cmp::Ordering::Greater) => format!("  {more}"),
            _ => String::new(),
        };
        println!(
            "{:>30} | {:>9.1} {:>9.1} | {:>6.3}{note}",
            p.point.label(),
            p.base_us,
            p.new_us,
            p.ratio
        );
    }
    let count = |o| c.points.iter().filter(|p| p.moved == Some(o)).count();
    println!(
        "geometric-mean ratio new/base {:.4} over {} points; outside the runs' spread: {} {less}, {} {more}{}",
        c.geomean_ratio,
        c.points.len(),
        count(std::cmp::Ordering::Less),
        count(std::cmp::Ordering::Greater),
        if c.skipped > 0 {
            format!("; {} points not in every report", c.skipped)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The serials the reports name (`bench`'s `card_serial`), each once, in order.
fn serials<'a>(reports: impl IntoIterator<Item = &'a Report>) -> Vec<&'a str> {
    let mut serials: Vec<&str> = Vec::new();
    for serial in reports.into_iter().filter_map(|r| r.card_serial.as_deref()) {
        if !serials.contains(&serial) {
            serials.push(serial);
        }
    }
    serials
}

/// " on card(s) S, T": the cards the reports name, so that a comparison across cards
/// shows; empty where none names one.
fn cards(reports: &[Report]) -> String {
    let serials = serials(reports);
    match serials.len() {
        0 => String::new(),
        1 => format!(" on card {}", serials[0]),
        _ => format!(" on cards {}", serials.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::{Greater, Less};

    fn report(precision: &str, times: &[(Point, f64)]) -> Report {
        Report {
            tool: "flashmla-etap bench".into(),
            version: "0".into(),
            git_commit: "abc".into(),
            timestamp: String::new(),
            device: "NVIDIA H200".into(),
            card_serial: None,
            driver_version: "13.0".into(),
            sm_count: 132,
            copy_gbps: None,
            anchors_card: None,
            peers: vec![],
            method: String::new(),
            precision: precision.into(),
            nvml: String::new(),
            points: times
                .iter()
                .map(|&(p, us)| PointResult::new(p, &p.lengths(), &[us * 20e-3], None, None))
                .collect(),
        }
    }

    const A: Point = Point::new(16, 1, 16, 512);
    const B: Point = Point::new(16, 1, 32, 512);
    const C: Point = Point::new(32, 1, 16, 512);

    #[test]
    fn ratios_geomean_and_moves() {
        let base = [
            report("Fast", &[(A, 10.0), (B, 20.0), (C, 30.0)]),
            report("Fast", &[(A, 10.4), (B, 21.0), (C, 30.0)]),
        ];
        let new = [
            report("Fast", &[(A, 9.0), (B, 20.5), (C, 33.0)]),
            report("Fast", &[(A, 9.2), (B, 19.0), (C, 32.0)]),
        ];
        let c = compare(&base, &new, &[]).unwrap();
        assert_eq!(c.points.len(), 3);
        assert!((c.points[0].base_us - (10.0f64 * 10.4).sqrt()).abs() < 1e-9);
        assert!((c.points[0].new_us - (9.0f64 * 9.2).sqrt()).abs() < 1e-9);
        let moves: Vec<_> = c.points.iter().map(|p| p.moved).collect();
        assert_eq!(moves, [Some(Less), None, Some(Greater)]);
        let want = (c.points[0].ratio * c.points[1].ratio * c.points[2].ratio).cbrt();
        assert!((c.geomean_ratio - want).abs() < 1e-12);
        assert_eq!(c.skipped, 0);
        // One run a side: ratios, but no point is called moved.
        let one = compare(&base[..1], &new[..1], &[]).unwrap();
        assert!(one.points.iter().all(|p| p.moved.is_none()));
        assert!((one.points[0].ratio - 0.9).abs() < 1e-9);
    }

    #[test]
    fn fastest_replays_compare_where_the_medians_spread() {
        // Two runs a side whose medians overlap (the clock stepped down at different
        // replays) and whose fastest replays do not.
        let run = |replays_us: &[f64]| {
            let ms: Vec<f64> = replays_us.iter().map(|us| us * 20e-3).collect();
            let mut r = report("Fast", &[]);
            r.points = vec![PointResult::new(A, &A.lengths(), &ms, None, None)];
            r
        };
        let base = [
            run(&[128.0, 128.2, 134.0, 134.1, 134.2]),
            run(&[127.9, 128.1, 128.3, 128.4, 134.0]),
        ];
        let new = [
            run(&[125.0, 125.2, 133.0, 133.1, 133.3]),
            run(&[125.4, 125.5, 125.6, 131.0, 131.2]),
        ];
        let median = compare(&base, &new, &[]).unwrap();
        assert_eq!(median.points[0].moved, None);
        let fastest = compare_by(&base, &new, &[], RunTime::Fastest).unwrap();
        let p = &fastest.points[0];
        assert_eq!(p.moved, Some(Less));
        assert!((p.base_us - (128.0f64 * 127.9).sqrt()).abs() < 1e-9);
        assert!((p.new_us - (125.0f64 * 125.4).sqrt()).abs() < 1e-9);
        // A report without replay times cannot be compared by its fastest.
        let mut bare = run(&[130.0]);
        bare.points[0].replays_us.clear();
        assert!(matches!(
            compare_by(&base, &[bare], &[], RunTime::Fastest),
            Err(Error::InvalidArgument { arg: "--new", .. })
        ));
    }

    #[test]
    fn cycles_compare_through_the_clock_steps() {
        // Base and new do the same work, each run at a clock that stepped down at another
        // replay: the medians read new 17 % faster, the cycles level.
        let run = |replays: &[(f64, f64)]| {
            let ms: Vec<f64> = replays.iter().map(|(us, _)| us * 20e-3).collect();
            let mut r = report("Fast", &[]);
            let mut q = PointResult::new(A, &A.lengths(), &ms, None, None);
            q.clock_mhz = replays.iter().map(|&(_, mhz)| mhz).collect();
            r.points = vec![q];
            r
        };
        let fast = (100.0, 1800.0);
        let slow = (120.0, 1500.0);
        let base = [
            run(&[fast, fast, slow, slow, slow]),
            run(&[fast, slow, slow, slow, slow]),
        ];
        let new = [
            run(&[fast, fast, fast, slow, slow]),
            run(&[fast, fast, fast, fast, slow]),
        ];
        let median = compare(&base, &new, &[]).unwrap();
        assert!((median.points[0].ratio - 100.0 / 120.0).abs() < 1e-9);
        assert_eq!(median.points[0].moved, Some(Less));
        let cycles = compare_by(&base, &new, &[], RunTime::Cycles).unwrap();
        let p = &cycles.points[0];
        assert!((p.base_us - 180.0).abs() < 1e-9 && (p.new_us - 180.0).abs() < 1e-9);
        assert_eq!(p.moved, None);
        // A report without the clock readings at a compared point cannot be compared by
        // cycles; at a point filtered out it can.
        let mut bare = run(&[fast]);
        bare.points[0].clock_mhz.clear();
        assert!(matches!(
            compare_by(std::slice::from_ref(&bare), &new, &[], RunTime::Cycles),
            Err(Error::InvalidArgument { arg: "--base", .. })
        ));
        let mut other = PointResult::new(B, &B.lengths(), &[2.0], None, None);
        other.clock_mhz.clear();
        let mut with_other = base.to_vec();
        with_other[0].points.push(other);
        let only_a = parse_filters(&[format!("h_q={}", A.h_q)]).unwrap();
        assert!(compare_by(&with_other, &new, &only_a, RunTime::Cycles).is_ok());
        assert!(compare_by(&with_other, &new, &[], RunTime::Cycles).is_err());
    }

    #[test]
    fn only_points_every_report_measured_and_matching_the_filters() {
        let base = [report("Fast", &[(A, 10.0), (B, 20.0), (C, 30.0)])];
        let new = [report("Fast", &[(C, 27.0), (A, 11.0)])];
        let c = compare(&base, &new, &[]).unwrap();
        let pts: Vec<_> = c.points.iter().map(|p| p.point).collect();
        assert_eq!(pts, [A, C]);
        assert_eq!(c.skipped, 1);
        let f = [Filter::parse("b=32").unwrap()];
        let c = compare(&base, &new, &f).unwrap();
        assert_eq!(c.points.len(), 1);
        assert!((c.points[0].ratio - 0.9).abs() < 1e-9);
        let none = [Filter::parse("h_q=128").unwrap()];
        assert!(matches!(
            compare(&base, &new, &none),
            Err(Error::InvalidArgument { arg: "--only", .. })
        ));
    }

    #[test]
    fn refuses_mixed_precisions_cards_and_empty_sides() {
        let fast = report("Fast", &[(A, 10.0)]);
        let accurate = report("Accurate", &[(A, 12.0)]);
        let err = compare(std::slice::from_ref(&fast), &[accurate], &[]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { arg: "--new", .. }));
        let mut h100 = report("Fast", &[(A, 10.0)]);
        h100.device = "NVIDIA H100 80GB HBM3".into();
        let err = compare(&[fast.clone(), h100], std::slice::from_ref(&fast), &[]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { arg: "--base", .. }));
        assert!(matches!(
            compare(&[], std::slice::from_ref(&fast), &[]),
            Err(Error::InvalidArgument { arg: "--base", .. })
        ));
        assert!(matches!(
            compare(std::slice::from_ref(&fast), &[], &[]),
            Err(Error::InvalidArgument { arg: "--new", .. })
        ));
        // A first --base report without points is --base's fault, not --only's.
        let empty = report("Fast", &[]);
        assert!(matches!(
            compare(&[empty], std::slice::from_ref(&fast), &[]),
            Err(Error::InvalidArgument { arg: "--base", .. })
        ));
    }

    #[test]
    fn a_shipped_results_file_compared_with_itself() {
        // Embedded: test binaries also run on GPU machines without the repository.
        let r: Report =
            serde_json::from_str(include_str!("../bench/results/h200_fast.json")).unwrap();
        let c = compare(std::slice::from_ref(&r), std::slice::from_ref(&r), &[]).unwrap();
        assert_eq!((c.points.len(), c.skipped), (r.points.len(), 0));
        assert!(c.points.iter().all(|p| p.ratio == 1.0));
        assert_eq!(c.geomean_ratio, 1.0);
    }

    #[test]
    fn reads_the_reports_the_bench_writes() {
        let dir = std::env::temp_dir().join(format!("etap-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("base.json");
        let r = report("Fast", &[(A, 10.0)]);
        std::fs::write(&path, serde_json::to_string(&r).unwrap()).unwrap();
        let back = Report::load("--base", &path).unwrap();
        assert_eq!(back.points, r.points);
        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(
            Report::load("--base", &path),
            Err(Error::InvalidArgument { arg: "--base", .. })
        ));
        assert!(matches!(
            Report::load("--new", &dir.join("missing.json")),
            Err(Error::InvalidArgument { arg: "--new", .. })
        ));
        // What no bench measures: a repeated point, a time or clock reading that is not
        // finite and positive, a negative bandwidth.
        type Spoil = fn(&mut Report);
        let bad: [(&str, Spoil); 6] = [
            ("listed twice", |r| r.points.push(r.points[0].clone())),
            ("`us`", |r| r.points[0].us = 0.0),
            ("`us`", |r| r.points[0].replays_us[0] = -5.0),
            // NaN is not JSON: written as null, which does not parse as a number.
            ("not a bench --json report", |r| r.points[0].us = f64::NAN),
            ("`gbps`", |r| r.points[0].gbps = -1.0),
            ("`clock_mhz`", |r| r.points[0].clock_mhz = vec![0.0]),
        ];
        for (what, spoil) in bad {
            let mut r = report("Fast", &[(A, 10.0), (B, 20.0)]);
            spoil(&mut r);
            std::fs::write(&path, serde_json::to_string(&r).unwrap()).unwrap();
            match Report::load("--new", &path) {
                Err(Error::InvalidArgument { arg: "--new", rule }) => {
                    assert!(rule.contains(what), "{what}: {rule}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_header_names_each_card_once() {
        let with = |serial: Option<&str>| Report {
            card_serial: serial.map(str::to_string),
            ..report("Fast", &[])
        };
        assert_eq!(cards(&[with(None), with(None)]), "");
        assert_eq!(
            serials(&[with(Some("17")), with(None), with(Some("42"))]),
            ["17", "42"]
        );
        assert_eq!(
            cards(&[with(Some("17")), with(None), with(Some("17"))]),
            " on card 17"
        );
        assert_eq!(
            cards(&[with(Some("17")), with(Some("42")), with(Some("17"))]),
            " on cards 17, 42"
        );
    }
}
