//! CPU tests of the bench's NVML fields (`flashmla_etap::power`): the statistics over the
//! samples, the energy estimate, the table cell, the CSV columns and JSON fields with and
//! without values, and reading reports written before the fields existed.
use flashmla_etap::bench::{table_header, table_row, to_csv, to_json, Point, PointResult, Report};
use flashmla_etap::compare::{compare, CompareArgs};
use flashmla_etap::power::{
    energy_per_call_uj, nvml_bus_id, PowerSample, PowerStats, ThrottleReasons, SLOWDOWN,
};

/// A report written before the NVML fields existed: five points of 79f9428's H200 Fast
/// results, kept here because `bench/results/` is rewritten by every results run
/// (embedded: the test binaries also run on GPU machines without the repository).
const OLD_REPORT: &str = include_str!("data/report_before_nvml.json");

fn sample(t_s: f64, sm_mhz: u32, power_mw: u32, reasons: ThrottleReasons) -> PowerSample {
    PowerSample {
        t_s,
        sm_mhz,
        power_mw,
        reasons,
        temp_c: Some(30 + power_mw / 20_000),
        energy_mj: None,
    }
}

const CAP: ThrottleReasons = ThrottleReasons::SW_POWER_CAP;
const NONE: ThrottleReasons = ThrottleReasons::empty();

/// The stats of readings 2 ms apart, each `(SM MHz, mW, reasons)`, over their window.
fn stats_of(readings: &[(u32, u32, ThrottleReasons)]) -> PowerStats {
    let samples: Vec<PowerSample> = readings
        .iter()
        .enumerate()
        .map(|(i, &(mhz, mw, r))| sample(i as f64 * 0.002, mhz, mw, r))
        .collect();
    PowerStats::from_samples(&samples, readings.len() as f64 * 0.002, 200)
}

/// Stats of a point that ran capped at 1455 MHz most of the time.
fn capped() -> PowerStats {
    stats_of(&[
        (1980, 420_000, NONE),
        (1455, 690_000, CAP),
        (
            1440,
            700_000,
            CAP.union(ThrottleReasons::HW_THERMAL_SLOWDOWN),
        ),
        (1455, 699_000, CAP.union(ThrottleReasons::GPU_IDLE)),
        (1470, 695_000, ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN),
    ])
}

#[test]
fn stats_are_medians_minimum_and_fractions_of_the_samples() {
    let s = capped();
    assert_eq!(s.nvml_samples, Some(5));
    assert_eq!(s.sm_mhz, Some(1455.0));
    assert_eq!(s.sm_mhz_min, Some(1440));
    assert_eq!(s.power_w, Some(695.0));
    assert_eq!(s.power_cap_frac, Some(0.6));
    // Thermal and power brake count as slowdowns; the idle bit does not.
    assert_eq!(s.slowdown_frac, Some(0.4));
    // The hottest reading, not the median.
    assert_eq!(s.temp_c, Some(65));
    assert!(s.power_capped());
    assert!(s.energy_uj.is_none(), "no energy readings, no energy");

    // An even count takes the mean of the middle two; a cap in half the samples is not
    // "most".
    let s = stats_of(&[
        (1600, 500_000, CAP),
        (1980, 300_000, NONE),
        (1700, 550_500, CAP),
        (1900, 350_000, ThrottleReasons::APPLICATIONS_CLOCKS_SETTING),
    ]);
    assert_eq!(s.sm_mhz, Some(1800.0));
    assert_eq!(s.sm_mhz_min, Some(1600));
    assert_eq!(s.power_w, Some(425.0));
    assert_eq!(s.power_cap_frac, Some(0.5));
    assert_eq!(s.slowdown_frac, Some(0.0));
    assert!(!s.power_capped());
    for r in [
        ThrottleReasons::HW_SLOWDOWN,
        ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
        ThrottleReasons::SW_THERMAL_SLOWDOWN,
        ThrottleReasons::HW_THERMAL_SLOWDOWN,
    ] {
        assert!(SLOWDOWN.contains(r));
    }
    assert!(!SLOWDOWN.intersects(CAP));
}

#[test]
fn the_temperature_is_the_hottest_reading_that_has_one() {
    let mut samples: Vec<PowerSample> = [(1980, 300_000), (1500, 700_000), (1600, 650_000)]
        .iter()
        .enumerate()
        .map(|(i, &(mhz, mw))| sample(0.002 * i as f64, mhz, mw, NONE))
        .collect();
    samples[1].temp_c = None;
    let s = PowerStats::from_samples(&samples, 0.006, 60);
    assert_eq!(s.temp_c, Some(62));
    for x in &mut samples {
        x.temp_c = None;
    }
    let s = PowerStats::from_samples(&samples, 0.006, 60);
    assert_eq!(s.temp_c, None);
    assert_eq!(s.nvml_samples, Some(3));
}

#[test]
fn a_window_without_samples_has_every_field_absent() {
    let s = PowerStats::from_samples(&[], 0.003, 200);
    assert_eq!(
        s,
        PowerStats {
            nvml_samples: Some(0),
            ..PowerStats::default()
        }
    );
    assert!(!s.power_capped());
    assert_eq!(PowerStats::default().nvml_samples, None);
}

/// Readings every 2 ms over `window_s` of a counter that steps every `step_s` (first step
/// `phase_s` in) at a constant `watts`.
fn counter(watts: f64, step_s: f64, phase_s: f64, window_s: f64) -> Vec<(f64, u64)> {
    let start_mj = 9_000_000_000u64;
    (0..)
        .map(|i| i as f64 * 0.002)
        .take_while(|&t| t < window_s)
        .map(|t| {
            let steps = ((t + step_s - phase_s) / step_s).floor().max(0.0);
            (t, start_mj + (steps * step_s * watts * 1e3).round() as u64)
        })
        .collect()
}

#[test]
fn energy_is_the_mean_power_between_counter_steps_over_the_calls() {
    // 600 W for 0.2 s over 200 calls: 0.6 J a call.
    let want = 600.0 * 0.2 / 200.0 * 1e6;
    // A counter stepping every 25 ms: the steps seen give the power within a sample period
    // at each end, whatever the phase (a plain difference of the first and last reading
    // counts 7 or 8 steps: up to 1/8 off).
    for phase in [0.0, 0.007, 0.013, 0.024] {
        let r = counter(600.0, 0.025, phase, 0.2);
        let got = energy_per_call_uj(&r, 0.2, 200).unwrap();
        assert!(
            (got / want - 1.0).abs() < 0.03,
            "phase {phase}: {got} vs {want}"
        );
    }
    // A counter that moves at every reading: exact.
    let r = counter(600.0, 0.001, 0.0, 0.2);
    let got = energy_per_call_uj(&r, 0.2, 200).unwrap();
    assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
    // Through the samples.
    let samples: Vec<PowerSample> = r
        .iter()
        .map(|&(t, e)| PowerSample {
            energy_mj: Some(e),
            ..sample(t, 1500, 600_000, CAP)
        })
        .collect();
    let s = PowerStats::from_samples(&samples, 0.2, 200);
    assert!((s.energy_uj.unwrap() / want - 1.0).abs() < 1e-9);
}

#[test]
fn energy_is_absent_where_the_counter_cannot_tell() {
    // Unchanged over the window.
    assert_eq!(
        energy_per_call_uj(&[(0.0, 500), (0.002, 500), (0.004, 500)], 0.005, 200),
        None
    );
    // One step only (a window shorter than the counter's period).
    let one = counter(600.0, 0.025, 0.01, 0.03);
    assert_eq!(energy_per_call_uj(&one, 0.03, 200), None);
    // Wrapped (or the driver reloaded): the counter went backwards.
    let wrap = [
        (0.0, u64::MAX - 20),
        (0.002, u64::MAX - 10),
        (0.004, 5),
        (0.006, 15),
    ];
    assert_eq!(energy_per_call_uj(&wrap, 0.008, 200), None);
    // No readings, no calls, no window.
    let ok = counter(600.0, 0.001, 0.0, 0.1);
    assert!(energy_per_call_uj(&ok, 0.1, 200).is_some());
    assert_eq!(energy_per_call_uj(&[], 0.1, 200), None);
    assert_eq!(energy_per_call_uj(&ok, 0.1, 0), None);
    assert_eq!(energy_per_call_uj(&ok, 0.0, 200), None);
    assert_eq!(energy_per_call_uj(&ok, f64::NAN, 200), None);
}

#[test]
fn bus_ids_are_written_as_nvml_writes_them() {
    assert_eq!(nvml_bus_id(0, 0x18, 0), "00000000:18:00.0");
    assert_eq!(nvml_bus_id(1, 0xdb, 0x1f), "00000001:db:1f.0");
}

/// A result of `us` per call at `p`.
fn point(p: Point, us: f64, power: PowerStats) -> PointResult {
    let mut r = PointResult::new(p, &p.lengths(), &[us * 0.02; 10], Some(4200.0), None);
    r.power = power;
    r
}

fn report(points: Vec<PointResult>) -> Report {
    Report {
        tool: "flashmla-etap bench".into(),
        version: "0.1.0".into(),
        git_commit: "abc1234".into(),
        timestamp: "2026-11-28T01:16:33Z".into(),
        device: "NVIDIA H200".into(),
        card_serial: None,
        driver_version: "13.0".into(),
        sm_count: 132,
        copy_gbps: Some(4200.0),
        anchors_card: None,
        peers: vec![],
        method: String::new(),
        precision: "Fast".into(),
        nvml: "NVML device 0 (PCI 00000000:18:00.0)".into(),
        points,
    }
}

fn three_points() -> Vec<PointResult> {
    vec![
        point(
            Point::new(16, 1, 16, 512),
            9.0,
            stats_of(&[(1980, 300_000, NONE)]),
        ),
        point(Point::new(32, 1, 128, 65536), 1067.1, capped()),
        point(Point::new(1, 1, 16, 4096), 10.2, PowerStats::default()),
    ]
}

#[test]
fn the_table_shows_the_median_clock_and_marks_the_power_cap() {
    let header = table_header(&[]);
    let names = header.lines().next().unwrap();
    let bars = |s: &str| {
        s.char_indices()
            .filter(|c| c.1 == '|')
            .map(|c| s[..c.0].chars().count())
            .collect::<Vec<_>>()
    };
    // The SM MHz column is the 6 characters before the second bar, in the header and in
    // every row.
    let end = bars(names)[1];
    let column = |s: &str| s.chars().skip(end - 7).take(6).collect::<String>();
    assert_eq!(column(names), "SM MHz");
    let cell = |r: &PointResult| {
        let row = table_row(r, &[]);
        assert_eq!(bars(&row), bars(names), "{row}");
        assert_eq!(row.chars().count(), names.chars().count(), "{row}");
        column(&row)
    };
    let mut rows = three_points();
    assert_eq!(cell(&rows[0]), " 1980 ");
    assert_eq!(cell(&rows[1]), " 1455*");
    assert_eq!(cell(&rows[2]), "    - ");
    // The clock counted on the GPU wins over NVML's (which lags the load); NVML's power
    // cap still marks it.
    rows[0].clock_mhz = vec![1410.0, 1377.0, 1395.0];
    rows[1].clock_mhz = vec![1520.0];
    rows[2].clock_mhz = vec![1980.0, 1975.0];
    assert_eq!(cell(&rows[0]), " 1395 ");
    assert_eq!(cell(&rows[1]), " 1520*");
    assert_eq!(cell(&rows[2]), " 1978 ");
}

#[test]
fn csv_has_the_nvml_columns_after_ratio_with_empty_fields_where_absent() {
    let csv = to_csv(&report(three_points()));
    let lines: Vec<&str> = csv.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let new = [
        "nvml_samples",
        "sm_mhz",
        "sm_mhz_min",
        "power_w",
        "power_cap_frac",
        "slowdown_frac",
        "energy_uj",
        "temp_c",
        "first_us",
        "last_us",
        "clock_mhz",
        "clock_mhz_first",
        "clock_mhz_last",
        "kcycles",
        "card_serial",
    ];
    // The older columns keep their places: the new ones follow `ratio`, the card's serial
    // last.
    let ratio = header.iter().position(|c| *c == "ratio").unwrap();
    assert_eq!(&header[ratio + 1..], new);
    assert_eq!(
        header[..ratio + 1].join(","),
        lines[0][..lines[0].find(",nvml").unwrap()]
    );
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == header.len()));
    let tail = |i: usize| rows[i][ratio + 1..].to_vec();
    assert_eq!(
        tail(1),
        [
            "5",
            "1455.0000",
            "1440",
            "695.0000",
            "0.6000",
            "0.4000",
            "",
            "65",
            "1067.1000",
            "1067.1000",
            "",
            "",
            "",
            "",
            ""
        ]
    );
    assert_eq!(
        tail(0),
        [
            "1",
            "1980.0000",
            "1980",
            "300.0000",
            "0.0000",
            "0.0000",
            "",
            "45",
            "9.0000",
            "9.0000",
            "",
            "",
            "",
            "",
            ""
        ]
    );
    assert_eq!(
        tail(2),
        ["", "", "", "", "", "", "", "", "10.2000", "10.2000", "", "", "", "", ""]
    );
    // The GPU-counted clock: median, first and last reading; cycles only with a reading
    // for every replay.
    let mut points = three_points();
    points[1].clock_mhz = vec![1620.0, 1410.0, 1380.0, 1395.0];
    points[0].clock_mhz = vec![1980.0; 10];
    let csv = to_csv(&report(points));
    let row = |i: usize| -> Vec<String> {
        let line = csv.lines().nth(i).unwrap();
        let cells: Vec<&str> = line.split(',').collect();
        // The clock columns, before the card's serial.
        cells[cells.len() - 5..cells.len() - 1]
            .iter()
            .map(|c| c.to_string())
            .collect()
    };
    assert_eq!(row(2), ["1402.5000", "1620.0000", "1395.0000", ""]);
    assert_eq!(row(1), ["1980.0000", "1980.0000", "1980.0000", "17.8200"]);
}

#[test]
fn cycles_a_call_follow_each_replay_at_its_own_clock() {
    // The b 32, h_q 128, 32K run of the fiftieth session's call 2 (H200): the clock stepped
    // from 1710 to 1484 MHz during the fourth replay, the time from ~455 to ~516 µs (13 %);
    // a replay's cycles moved 1.5-2.7 % (a DRAM latency is fewer cycles at a lower clock).
    let p = Point::new(32, 1, 128, 32768);
    let us = [
        456.2, 454.6, 454.5, 475.0, 511.6, 517.2, 517.3, 516.5, 515.7, 515.4,
    ];
    let mhz = [
        1710.0, 1710.0, 1709.0, 1514.0, 1484.0, 1484.0, 1484.0, 1484.0, 1485.0, 1484.0,
    ];
    let ms: Vec<f64> = us.iter().map(|u| u * 20e-3).collect();
    let mut r = PointResult::new(p, &p.lengths(), &ms, None, None);
    assert_eq!(r.cycles_per_call(), None);
    r.clock_mhz = mhz.to_vec();
    let c = r.cycles_per_call().unwrap();
    // The median of the replays' own cycles (766,486 and 767,525), not the median µs at
    // the median clock (513.5 × 1484.5 = 762,291).
    assert!((c - (766_486.0 + 767_524.8) / 2.0).abs() < 1e-6, "{c}");
    // A reading missing for one replay: no cycles.
    r.clock_mhz.pop();
    assert_eq!(r.cycles_per_call(), None);
}

#[test]
fn json_has_the_fields_in_each_point_and_null_where_absent() {
    let mut points = three_points();
    points[1].power.energy_uj = Some(612.5);
    let rep = report(points);
    let text = to_json(&rep).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let p = &v["points"];
    assert_eq!(p[1]["sm_mhz"], 1455.0);
    assert_eq!(p[1]["sm_mhz_min"], 1440);
    assert_eq!(p[1]["power_w"], 695.0);
    assert_eq!(p[1]["power_cap_frac"], 0.6);
    assert_eq!(p[1]["nvml_samples"], 5);
    assert_eq!(p[1]["energy_uj"], 612.5);
    assert_eq!(p[1]["temp_c"], 65);
    for key in ["nvml_samples", "sm_mhz", "power_w", "energy_uj", "temp_c"] {
        assert!(p[2][key].is_null(), "{key}");
    }
    assert!(p[0]["energy_uj"].is_null());
    assert_eq!(v["nvml"], "NVML device 0 (PCI 00000000:18:00.0)");
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back.points, rep.points);
    assert_eq!(back.points[1].power.energy_uj, Some(612.5));
}

#[test]
fn reports_from_before_the_fields_still_read_and_compare() {
    let old: Report = serde_json::from_str(OLD_REPORT).unwrap();
    assert!(!old.points.is_empty());
    assert!(old.nvml.is_empty());
    assert!(old
        .points
        .iter()
        .all(|p| p.power == PowerStats::default() && p.us > 0.0));
    assert!(old.points.iter().all(|p| p.clock_mhz.is_empty()));
    // A new report of the same card with the fields, compared with the old one, in memory
    // and through the files `compare` reads.
    let mut new = old.clone();
    for p in &mut new.points {
        p.power = capped();
        p.us *= 0.9;
    }
    let c = compare(std::slice::from_ref(&old), std::slice::from_ref(&new), &[]).unwrap();
    assert_eq!(c.points.len(), old.points.len());
    assert!((c.geomean_ratio - 0.9).abs() < 1e-9);
    let dir = std::env::temp_dir().join(format!("etap-power-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("old.json"), dir.join("new.json"));
    std::fs::write(&a, OLD_REPORT).unwrap();
    std::fs::write(&b, to_json(&new).unwrap()).unwrap();
    let args = CompareArgs {
        base: vec![a],
        new: vec![b],
        only: vec![],
        fastest: false,
        cycles: false,
    };
    let done = flashmla_etap::compare::main(&args);
    std::fs::remove_dir_all(&dir).unwrap();
    done.unwrap();
}
