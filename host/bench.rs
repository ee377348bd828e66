//! `flashmla-etap bench`: the anchor sweep of `shared/ANCHORS.md`, measured the way the
//! peers were measured, and compared with them.
//!
//! Method (as ANCHORS.md): bf16, h_kv = 1, softmax scale 576^-0.5, page size 64, a randomly
//! permuted block table, inputs ~ N(0, 0.1²) clamped to [-1, 1]. The decode call (plan built
//! beforehand and reused) is captured 20 times in one CUDA graph; untimed replays for at
//! least [`WARMUP_MS`] ms, then 10 replays each timed with CUDA events; µs per call =
//! median / 20 (the combine kernel is
//! included: [`Decoder::decode`] launches both). The card's bandwidth is probed in the same
//! run by a 2-GiB device-to-device copy (read + write bytes counted). After each timed
//! replay, outside the timed span, [`ClockProbe`] counts the SM clock on the GPU: the clock
//! a point ran at tells a power-capped card from a slow kernel, and µs × MHz the cycles a
//! call took. Where NVML loads, [`crate::power`] also reads the card's power and
//! clock-event reasons during the timed replays (its readings lag the load).
//!
//! Inputs are not built with [`crate::reference::generate`] (f32 vectors, NaN poison: far
//! too slow at 32 × 64K tokens): a pool of random bf16 values is generated once on the host,
//! uploaded, and tiled into every q and KV cache with device-to-device copies at random
//! offsets. The cache holds exactly the pages the requests need.
//!
//! Everything that does not need a GPU (the sweep, the metric accounting, the anchors file,
//! the table / CSV / JSON / SVG output) is plain functions tested below.
use crate::decode::{DecodeConfig, DecodePlan, Decoder, KvCache, Precision};
use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::power::{PowerMonitor, PowerStats};
use crate::probe::ClockProbe;
use crate::reference::{Normal, SplitMix64};
use crate::timing::{GpuTimer, Graph};
use cudarc::driver::CudaSlice;
use half::bf16;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Latent (K) width and V width of MLA.
pub const D_QK: usize = 576;
/// V width of MLA (the first 512 dims of a K row).
pub const D_V: usize = 512;
/// Tokens per KV-cache page.
pub const PAGE: usize = 64;
/// Decode calls captured in one graph.
pub const CALLS_PER_GRAPH: usize = 20;
/// Timed graph replays (the median is taken).
pub const REPLAYS: usize = 10;
/// Least wall time of untimed replays before a point is timed. The clocks ramp up over
/// milliseconds after the host-side set-up of a point (and recover from the power draw of
/// the point before): with a single warm-up replay, short points measured after long ones
/// came out up to 12 % slower than when benched alone (H200).
pub const WARMUP_MS: u64 = 25;
/// Default idle time before each point (`--settle-ms`): the SM clock limit of a
/// power-capped H200 follows the board power averaged over about a second, so a point
/// benched right after a heavy one runs at that one's clocks. H200, the Fast sweep back to
/// back against a second of idle before each point: b 1, h_q 16, 4K 11.25 → 8.61 µs; b 32,
/// h_q 64, 64K 693 → 617 µs; points that follow light ones within ±1 %.
pub const SETTLE_MS: u64 = 1000;
/// A point whose last timed replay took at least this factor of its first is marked `^` in
/// the table: it slowed during its own replays, as the 700 W cap of an H200 brings the SM
/// clock down some 50-100 ms into a heavy point (b 32, h_q 128, 32K: 471 µs a call in the
/// first replay, 536 from the sixth).
pub const REPLAY_DRIFT_MARK: f64 = 1.05;
/// Bytes of the bandwidth probe's copy (source size; read + write are both counted).
pub const PROBE_BYTES: usize = 2 << 30;
/// Seed of the varlen lengths and of the input pool.
pub const SEED: u64 = 0x00E7_A9B3_2026_1128;
/// The anchors file shipped with the project (`bench/anchors.json`), the default `--peers`.
pub const BUILTIN_ANCHORS: &str = include_str!("../bench/anchors.json");
/// `git rev-parse --short HEAD` when the binary was built, with `-dirty` if the code
/// (kernel/, host/, build files) differed from it (see build.rs).
pub const BUILD_COMMIT: &str = match option_env!("ETAP_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// Context lengths and head counts of the anchor grid.
pub const GRID_S_K: [usize; 8] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
/// Query-head counts of the anchor grid.
pub const GRID_H_Q: [usize; 4] = [16, 32, 64, 128];
/// Batch sizes of the anchor grid.
pub const GRID_B: [usize; 2] = [16, 32];

// ---------------------------------------------------------------------------------------
// The sweep
// ---------------------------------------------------------------------------------------

/// One benchmark point. `s_q > 1` is causal (FlashMLA's MTP setting); `varlen` draws the
/// lengths from Normal(s_k, s_k/2), at least s_q.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// Batch size (requests).
    pub b: usize,
    /// Query tokens per request.
    pub s_q: usize,
    /// Query heads (one KV head).
    pub h_q: usize,
    /// Cached tokens per request (the mean when `varlen`).
    pub s_k: usize,
    /// Lengths drawn per request instead of all `s_k`.
    #[serde(default)]
    pub varlen: bool,
}

impl Point {
    /// Parses `--point`: comma-separated `KEY=VALUE` as `--only` takes them, b, h_q and s_k
    /// required (s_k as `24K`, or `4096v` for varlen lengths), s_q 1 unless given.
    pub fn parse(s: &str) -> Result<Point> {
        let mut p = Point::new(0, 1, 0, 0);
        let mut seen = Vec::new();
        for part in s.split(',') {
            let f = Filter::parse_for("--point", part)?;
            if seen.contains(&f.key) {
                return Err(Error::invalid(
                    "--point",
                    format!("`{s}`: `{}` is given twice", part.trim()),
                ));
            }
            seen.push(f.key);
            match f.key {
                FilterKey::B => p.b = f.value,
                FilterKey::SQ => p.s_q = f.value,
                FilterKey::HQ => p.h_q = f.value,
                FilterKey::SK => {
                    p.s_k = f.value;
                    p.varlen = f.varlen == Some(true);
                }
            }
        }
        p.check()?;
        Ok(p)
    }
    /// Checks the point before any buffer is sized from it: b, h_q and s_k above 0, s_k
    /// an i32 length, and the decode's limits ([`DecodeConfig::validate`]) for a block
    /// table as wide as s_k needs (varlen lengths, drawn later, are checked by the plan).
    pub fn check(&self) -> Result<()> {
        let label = self.label();
        if self.b == 0 || self.s_q == 0 || self.h_q == 0 || self.s_k == 0 {
            return Err(Error::invalid(
                "--point",
                format!("`{label}`: needs b, h_q and s_k (s_q is 1 unless given), each above 0"),
            ));
        }
        if self.s_k > i32::MAX as usize {
            return Err(Error::invalid(
                "--point",
                format!(
                    "`{label}`: s_k must fit a sequence length (at most {})",
                    i32::MAX
                ),
            ));
        }
        self.config(&[self.s_k as i32], Precision::default())
            .validate()
            .map_err(|e| match e {
                Error::InvalidArgument { arg, rule } => {
                    Error::invalid("--point", format!("`{label}`: {arg} {rule}"))
                }
                other => other,
            })
    }
    /// A fixed-length point.
    pub const fn new(b: usize, s_q: usize, h_q: usize, s_k: usize) -> Point {
        Point {
            b,
            s_q,
            h_q,
            s_k,
            varlen: false,
        }
    }
    /// The same point with variable lengths.
    pub const fn varlen(mut self) -> Point {
        self.varlen = true;
        self
    }
    /// Whether the point runs causal (`s_q > 1`, as FlashMLA benchmarks MTP).
    pub fn causal(&self) -> bool {
        self.s_q > 1
    }
    /// s_k as ANCHORS.md writes it: `4096`, or `4096v` for varlen.
    pub fn s_k_label(&self) -> String {
        format!("{}{}", self.s_k, if self.varlen { "v" } else { "" })
    }
    /// `b=16 s_q=1 h_q=16 s_k=512`.
    pub fn label(&self) -> String {
        format!(
            "b={} s_q={} h_q={} s_k={}",
            self.b,
            self.s_q,
            self.h_q,
            self.s_k_label()
        )
    }
    /// The decode configuration of this point over requests of `lengths` (h_kv 1, a
    /// block table as wide as the longest request, causal where `s_q > 1`).
    pub fn config(&self, lengths: &[i32], precision: Precision) -> DecodeConfig {
        DecodeConfig::new(self.b, self.h_q, block_table_width(lengths))
            .s_q(self.s_q)
            .causal(self.causal())
            .precision(precision)
    }
    /// cache_seqlens: all `s_k`, or (varlen) `max(⌊N(s_k, s_k/2)⌋, s_q)` drawn from a
    /// generator seeded by the point, so every run uses the same lengths.
    pub fn lengths(&self) -> Vec<i32> {
        if !self.varlen {
            return vec![self.s_k as i32; self.b];
        }
        let seed = SEED
            ^ (self.b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (self.s_q as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ (self.h_q as u64).wrapping_mul(0x1656_67B1_9E37_79F9)
            ^ (self.s_k as u64).wrapping_mul(0x27D4_EB2F_1656_67C5);
        let mut normal = Normal::new(seed);
        let (mean, sd) = (self.s_k as f64, self.s_k as f64 / 2.0);
        (0..self.b)
            .map(|_| {
                let x = (mean + sd * normal.sample()).floor();
                x.clamp(self.s_q as f64, i32::MAX as f64) as i32
            })
            .collect()
    }
}

/// The anchor grid of ANCHORS.md: b ∈ {16, 32} × h_q ∈ {16, 32, 64, 128} × s_k ∈ 512..64K
/// at s_q = 1, then the extra rows (latency, varlen, MTP), in the tables' order.
pub fn anchor_points() -> Vec<Point> {
    let mut v = Vec::new();
    for b in GRID_B {
        for h_q in GRID_H_Q {
            for s_k in GRID_S_K {
                v.push(Point::new(b, 1, h_q, s_k));
            }
        }
    }
    v.extend(extra_points());
    v
}

/// The rows after the grid in ANCHORS.md.
pub fn extra_points() -> Vec<Point> {
    vec![
        Point::new(1, 1, 16, 65536),
        Point::new(1, 1, 16, 4096),
        Point::new(4, 1, 16, 8192),
        Point::new(64, 1, 16, 4096).varlen(),
        Point::new(128, 1, 16, 4096).varlen(),
        Point::new(128, 1, 128, 4096).varlen(),
        Point::new(16, 2, 16, 16384),
        Point::new(16, 2, 128, 16384),
        Point::new(16, 4, 16, 16384),
    ]
}

/// `--quick`: the latency rows, short and long contexts, every head count once, varlen and
/// MTP (9 points).
pub fn quick_points() -> Vec<Point> {
    vec![
        Point::new(1, 1, 16, 4096),
        Point::new(1, 1, 16, 65536),
        Point::new(4, 1, 16, 8192),
        Point::new(16, 1, 16, 512),
        Point::new(16, 1, 32, 2048),
        Point::new(16, 1, 128, 4096),
        Point::new(32, 1, 64, 65536),
        Point::new(64, 1, 16, 4096).varlen(),
        Point::new(16, 2, 128, 16384),
    ]
}

/// Batches, head counts and mean lengths of [`varlen_points`].
const VARLEN_B: [usize; 4] = [16, 64, 128, 256];
const VARLEN_H_Q: [usize; 4] = [16, 32, 64, 128];
const VARLEN_S_K: [usize; 3] = [1024, 4096, 16384];

/// `--varlen-sweep`: serving-shaped batches of uneven lengths, where the planner's request
/// order matters most and the anchor grid has three points: b ∈ {16, 64, 128, 256} × h_q ∈
/// {16, 32, 64, 128} × mean s_k ∈ {1K, 4K, 16K} at s_q = 1, then s_q = 2 at b 64, 2K for
/// every head count (52 points; lengths drawn as the anchor grid's varlen rows). Three are
/// the grid's own varlen rows (b 64 / 128 at 4K), the only ones with a peer's ratio.
pub fn varlen_points() -> Vec<Point> {
    let mut v = Vec::new();
    for b in VARLEN_B {
        for h_q in VARLEN_H_Q {
            for s_k in VARLEN_S_K {
                v.push(Point::new(b, 1, h_q, s_k).varlen());
            }
        }
    }
    v.extend(VARLEN_H_Q.map(|h_q| Point::new(64, 2, h_q, 2048).varlen()));
    v
}

/// The named point sets of `bench` and `plan` (`anchor_points`, `quick_points`,
/// `varlen_points`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// The 73-point anchor sweep.
    Anchors,
    /// The 9-point subset of `bench --quick`.
    Quick,
    /// The 52 varlen points of `bench --varlen-sweep`.
    Varlen,
}

impl Sweep {
    /// The set's points.
    pub fn points(self) -> Vec<Point> {
        match self {
            Sweep::Anchors => anchor_points(),
            Sweep::Quick => quick_points(),
            Sweep::Varlen => varlen_points(),
        }
    }
}

/// One `--only` condition, `KEY=VALUE` with KEY one of b, s_q, h_q, s_k (`s_k=4096v` matches
/// only the varlen rows, `s_k=4096` both).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    key: FilterKey,
    value: usize,
    varlen: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FilterKey {
    B,
    SQ,
    HQ,
    SK,
}

impl Filter {
    /// Parses `KEY=VALUE` (`s_k` also takes `4K`, `4096v`); an error names `--only`.
    pub fn parse(s: &str) -> Result<Filter> {
        Filter::parse_for("--only", s)
    }
    /// `parse`, with errors naming the option `arg`.
    fn parse_for(arg: &'static str, s: &str) -> Result<Filter> {
        let bad = |why: &str| Error::invalid(arg, format!("`{s}`: {why}"));
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE, e.g. h_q=16"))?;
        let key = match k.trim() {
            "b" | "batch" => FilterKey::B,
            "s_q" => FilterKey::SQ,
            "h_q" => FilterKey::HQ,
            "s_k" => FilterKey::SK,
            _ => return Err(bad("KEY must be one of b, s_q, h_q, s_k")),
        };
        let v = v.trim();
        let (num, varlen) = match v.strip_suffix('v') {
            Some(n) if key == FilterKey::SK => (n, Some(true)),
            _ => (v, None),
        };
        let num = num.to_ascii_lowercase();
        let value = match num.strip_suffix('k') {
            Some(n) => n.parse::<usize>().ok().and_then(|n| n.checked_mul(1024)),
            None => num.parse::<usize>().ok(),
        }
        .ok_or_else(|| bad("VALUE must be a number (s_k also 4K or 4096v)"))?;
        Ok(Filter { key, value, varlen })
    }
    /// Whether point `p` satisfies the condition.
    pub fn matches(&self, p: &Point) -> bool {
        let v = match self.key {
            FilterKey::B => p.b,
            FilterKey::SQ => p.s_q,
            FilterKey::HQ => p.h_q,
            FilterKey::SK => p.s_k,
        };
        v == self.value && self.varlen.is_none_or(|want| want == p.varlen)
    }
}

/// Parses the `--only` arguments (blank ones ignored).
pub fn parse_filters(only: &[String]) -> Result<Vec<Filter>> {
    only.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| Filter::parse(s))
        .collect()
}

/// The points of `base` that satisfy every filter.
pub fn select(base: Vec<Point>, filters: &[Filter]) -> Vec<Point> {
    base.into_iter()
        .filter(|p| filters.iter().all(|f| f.matches(p)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Metric accounting
// ---------------------------------------------------------------------------------------

/// Geometric mean of positive values (NaN for none).
pub fn geomean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x.ln(), n + 1));
    (sum / n as f64).exp()
}

/// Bytes one decode call must move: every valid KV row once (Σ lengths · 576 · 2) plus q
/// and out, all bf16 (the GB/s of ANCHORS.md).
pub fn bytes_moved(p: &Point, lengths: &[i32]) -> u64 {
    let kv: u64 = lengths.iter().map(|&l| l.max(0) as u64).sum::<u64>() * (D_QK as u64) * 2;
    let rows = (p.b * p.s_q * p.h_q) as u64;
    kv + rows * (D_QK as u64) * 2 + rows * (D_V as u64) * 2
}

/// 2 · Σ_b s_q · h_q · len_b · (576 + 512) (QKᵀ and PV; causal masking not subtracted).
pub fn flops(p: &Point, lengths: &[i32]) -> f64 {
    let toks: f64 = lengths.iter().map(|&l| l.max(0) as f64).sum();
    2.0 * (p.s_q * p.h_q) as f64 * toks * (D_QK + D_V) as f64
}

/// GB/s (10⁹ bytes per second) of `bytes` in `us` microseconds.
pub fn gbps(bytes: u64, us: f64) -> f64 {
    bytes as f64 / (us * 1e3)
}

/// A peer's time, µs, for the work of a run of point `p` that moved `bytes`: its measured
/// time, except at a varlen point, where the peer drew its own lengths (ANCHORS.md's GB/s
/// gives their total, which differs from our draw's), so its time over our bytes at its
/// measured bandwidth; a bandwidth of 0 (unknown) falls back to the measured time.
pub fn peer_time_on(p: &Point, bytes: u64, t: &PeerTime) -> f64 {
    if p.varlen && t.gbps > 0.0 {
        bytes as f64 / (t.gbps * 1e3)
    } else {
        t.us
    }
}

/// TFLOPS of `flops` in `us` microseconds.
pub fn tflops(flops: f64, us: f64) -> f64 {
    flops / (us * 1e6)
}

/// Median of `v` (mean of the middle two for an even count); NaN for an empty slice.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

// ---------------------------------------------------------------------------------------
// The peers' anchors
// ---------------------------------------------------------------------------------------

/// `bench/anchors.json`: ANCHORS.md's tables as data, keyed by card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Anchors {
    /// Where the numbers come from (free text).
    #[serde(default)]
    pub source: String,
    /// The tables, keyed by card (e.g. "H100").
    pub cards: BTreeMap<String, CardAnchors>,
}

/// One card's table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CardAnchors {
    /// The card as the table names it.
    #[serde(default)]
    pub device: String,
    /// The copy bandwidth measured beside the peers (read + write counted).
    #[serde(default)]
    pub copy_gbps: Option<f64>,
    /// The card's nominal peak memory bandwidth, GB/s.
    #[serde(default)]
    pub peak_gbps: Option<f64>,
    /// Peer names in display order.
    pub peers: Vec<String>,
    /// The measured points.
    pub rows: Vec<AnchorRow>,
}

/// One point of a card's table with the peers' times.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnchorRow {
    /// The benchmark point (flattened into the JSON row).
    #[serde(flatten)]
    pub point: Point,
    /// Each peer's time at this point, by peer name.
    pub peers: BTreeMap<String, PeerTime>,
}

/// One peer's measurement at one point.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerTime {
    /// µs per decode call.
    pub us: f64,
    /// Achieved bandwidth, GB/s (ANCHORS.md's accounting).
    pub gbps: f64,
}

impl Anchors {
    /// Parses anchors JSON and checks every row names only the card's peers; `origin`
    /// labels errors.
    pub fn parse(text: &str, origin: &str) -> Result<Anchors> {
        let a: Anchors = serde_json::from_str(text)
            .map_err(|e| Error::Other(format!("reading the anchors {origin}: {e}")))?;
        for (key, card) in &a.cards {
            for (i, row) in card.rows.iter().enumerate() {
                if card.rows[..i].iter().any(|r| r.point == row.point) {
                    return Err(Error::Other(format!(
                        "anchors {origin}: card {key}: row {} is listed twice",
                        row.point.label()
                    )));
                }
                for (name, t) in &row.peers {
                    if !(t.us.is_finite() && t.us > 0.0 && t.gbps.is_finite() && t.gbps >= 0.0) {
                        return Err(Error::Other(format!(
                            "anchors {origin}: card {key}, row {}: peer `{name}`'s us must be finite and above 0, its gbps finite and not negative",
                            row.point.label()
                        )));
                    }
                }
                for name in row.peers.keys() {
                    if !card.peers.contains(name) {
                        return Err(Error::Other(format!(
                            "anchors {origin}: card {key}, row {}: peer `{name}` is not in the card's peers list",
                            row.point.label()
                        )));
                    }
                }
            }
        }
        Ok(a)
    }
    /// Reads `path`, or the built-in copy of `bench/anchors.json` for `None`.
    pub fn load(path: Option<&Path>) -> Result<Anchors> {
        match path {
            None => Anchors::parse(BUILTIN_ANCHORS, "(built-in bench/anchors.json)"),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::Other(format!("reading {}: {e}", p.display())))?;
                Anchors::parse(&text, &p.display().to_string())
            }
        }
    }
    /// The table for a GPU named `gpu_name` (e.g. "NVIDIA H100 80GB HBM3" → "H100"): the
    /// first card key that the name contains, ignoring case; longer keys win.
    pub fn card_for_gpu(&self, gpu_name: &str) -> Option<&str> {
        let name = gpu_name.to_ascii_uppercase();
        let mut keys: Vec<&String> = self.cards.keys().collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
        keys.into_iter()
            .find(|k| name.contains(&k.to_ascii_uppercase()))
            .map(|k| k.as_str())
    }
}

impl CardAnchors {
    /// The row measured at point `p`, if the table has one.
    pub fn row(&self, p: &Point) -> Option<&AnchorRow> {
        self.rows.iter().find(|r| r.point == *p)
    }
}

// ---------------------------------------------------------------------------------------
// Results and run metadata
// ---------------------------------------------------------------------------------------

/// One measured point.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PointResult {
    /// The benchmark point (flattened into the JSON row).
    #[serde(flatten)]
    pub point: Point,
    /// Whether the point ran causal.
    pub causal: bool,
    /// Σ lengths.
    pub total_len: u64,
    /// Shortest request length.
    pub min_len: i32,
    /// Longest request length.
    pub max_len: i32,
    /// µs per decode call (median replay / calls per graph).
    pub us: f64,
    /// Achieved bandwidth, GB/s (ANCHORS.md's accounting).
    pub gbps: f64,
    /// GB/s as a percentage of the probed copy bandwidth.
    pub pct_copy: Option<f64>,
    /// Achieved TFLOP/s (QK and PV of the valid tokens).
    pub tflops: f64,
    /// Each timed replay divided by the calls per graph, µs.
    pub replays_us: Vec<f64>,
    /// The peers' µs at this point (from the anchors of the chosen card).
    pub peers_us: BTreeMap<String, f64>,
    /// ours / min(peers); ≤ 1 means we are at least as fast as the better peer. At a
    /// varlen point the peers' times are taken over this run's bytes ([`peer_time_on`]).
    pub ratio: Option<f64>,
    /// The card's SM clock, power and clock-event reasons during the timed replays (NVML;
    /// flattened into the JSON row, every field null where not sampled).
    #[serde(flatten)]
    pub power: PowerStats,
    /// The SM clock counted on the GPU after each timed replay, MHz ([`ClockProbe`]; empty
    /// in reports written before the probe).
    #[serde(default)]
    pub clock_mhz: Vec<f64>,
}

impl PointResult {
    /// Fills every derived field from the point, its lengths and the replay times (ms per
    /// graph replay).
    pub fn new(
        p: Point,
        lengths: &[i32],
        replay_ms: &[f64],
        copy_gbps: Option<f64>,
        card: Option<&CardAnchors>,
    ) -> PointResult {
        let replays_us: Vec<f64> = replay_ms
            .iter()
            .map(|ms| ms * 1e3 / CALLS_PER_GRAPH as f64)
            .collect();
        let us = median(&replays_us);
        let bytes = bytes_moved(&p, lengths);
        let g = gbps(bytes, us);
        let peers = card.and_then(|c| c.row(&p)).map(|r| &r.peers);
        let peers_us: BTreeMap<String, f64> = peers
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.us)).collect())
            .unwrap_or_default();
        let best = peers
            .into_iter()
            .flat_map(|m| m.values())
            .map(|t| peer_time_on(&p, bytes, t))
            .fold(f64::INFINITY, f64::min);
        PointResult {
            point: p,
            causal: p.causal(),
            total_len: lengths.iter().map(|&l| l.max(0) as u64).sum(),
            min_len: lengths.iter().copied().min().unwrap_or(0),
            max_len: lengths.iter().copied().max().unwrap_or(0),
            us,
            gbps: g,
            pct_copy: copy_gbps.filter(|c| *c > 0.0).map(|c| 100.0 * g / c),
            tflops: tflops(flops(&p, lengths), us),
            replays_us,
            peers_us,
            ratio: best.is_finite().then(|| us / best),
            power: PowerStats::default(),
            clock_mhz: Vec::new(),
        }
    }

    /// The first timed replay, µs per call.
    pub fn first_us(&self) -> Option<f64> {
        self.replays_us.first().copied()
    }

    /// The last timed replay, µs per call.
    pub fn last_us(&self) -> Option<f64> {
        self.replays_us.last().copied()
    }

    /// The fastest timed replay, µs per call: under the power cap, the replays before the
    /// clock drops.
    pub fn fastest_us(&self) -> Option<f64> {
        self.replays_us.iter().copied().reduce(f64::min)
    }

    /// The median of the SM clock readings after the timed replays, MHz.
    pub fn clock_median_mhz(&self) -> Option<f64> {
        (!self.clock_mhz.is_empty()).then(|| median(&self.clock_mhz))
    }

    /// SM cycles a decode call takes, the median over the timed replays of each replay's µs
    /// times the clock counted after it: the power cap's clock steps move it less than the
    /// time (only the waits on memory, fixed in ns, take fewer cycles at a lower clock), and
    /// it counts the work's cycles, not its energy. `None` without a clock reading for
    /// every replay.
    pub fn cycles_per_call(&self) -> Option<f64> {
        let n = self.replays_us.len();
        (n > 0 && self.clock_mhz.len() == n).then(|| {
            let cycles: Vec<f64> = self
                .replays_us
                .iter()
                .zip(&self.clock_mhz)
                .map(|(us, mhz)| us * mhz)
                .collect();
            median(&cycles)
        })
    }

    /// The table's `SM MHz` cell, 6 characters: the median SM clock counted on the GPU
    /// (NVML's median where the report has no such readings), then `*` where NVML saw the
    /// software power cap in most samples, `-` where neither was taken.
    pub fn clock_cell(&self) -> String {
        let mhz = self.clock_median_mhz().or(self.power.sm_mhz);
        match mhz {
            Some(m) => format!(
                "{m:>5.0}{}",
                if self.power.power_capped() { '*' } else { ' ' }
            ),
            None => format!("{:>5} ", "-"),
        }
    }

    /// Whether the point slowed by [`REPLAY_DRIFT_MARK`] or more from its first to its last
    /// timed replay.
    pub fn slowed_in_replays(&self) -> bool {
        match (self.first_us(), self.last_us()) {
            (Some(a), Some(z)) => a > 0.0 && z >= REPLAY_DRIFT_MARK * a,
            _ => false,
        }
    }
}

/// The run: card, driver, commit, time, probe, and every point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Name of the tool that wrote the report.
    pub tool: String,
    /// Its crate version.
    pub version: String,
    /// Commit the binary was built from ([`BUILD_COMMIT`]).
    pub git_commit: String,
    /// UTC, RFC 3339.
    pub timestamp: String,
    /// GPU name as the driver reports it.
    pub device: String,
    /// The card's serial number (NVML), which tells the cards of a pool apart; absent
    /// without NVML, where the card reports none, and in reports written before it was
    /// recorded.
    #[serde(default)]
    pub card_serial: Option<String>,
    /// CUDA version of the driver, e.g. "13.0".
    pub driver_version: String,
    /// SMs of the GPU.
    pub sm_count: u32,
    /// Measured device-to-device copy bandwidth (read + write counted), GB/s.
    pub copy_gbps: Option<f64>,
    /// Which card's anchors the peers' columns come from.
    pub anchors_card: Option<String>,
    /// Peer names in display order.
    pub peers: Vec<String>,
    /// How the times were taken (graph capture, calls, replays), one line.
    pub method: String,
    /// How P was rounded (`Accurate` or `Fast`, see `Precision`); empty in reports written
    /// before the option existed (those used one rounding, as `Fast`).
    #[serde(default)]
    pub precision: String,
    /// What NVML sampled ([`PowerMonitor::describe`]) or why it did not; empty in reports
    /// written before the sampling existed.
    #[serde(default)]
    pub nvml: String,
    /// Every measured point, in sweep order.
    pub points: Vec<PointResult>,
}

impl Report {
    /// Reads a report written by `bench --json`; errors name the option `arg` it came from.
    pub fn load(arg: &'static str, path: &Path) -> Result<Report> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(arg, format!("cannot read {}: {e}", path.display())))?;
        let report: Report = serde_json::from_str(&text).map_err(|e| {
            Error::invalid(
                arg,
                format!("{} is not a bench --json report: {e}", path.display()),
            )
        })?;
        report
            .check()
            .map_err(|rule| Error::invalid(arg, format!("{}: {rule}", path.display())))?;
        Ok(report)
    }

    /// What `bench` cannot have measured: a point listed twice, or a time, bandwidth or
    /// clock reading that is not a finite positive number (zero GB/s allowed).
    fn check(&self) -> std::result::Result<(), String> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        for (i, r) in self.points.iter().enumerate() {
            let label = r.point.label();
            if self.points[..i].iter().any(|q| q.point == r.point) {
                return Err(format!("point {label} is listed twice"));
            }
            if !positive(r.us) || !r.replays_us.iter().all(|&v| positive(v)) {
                return Err(format!(
                    "point {label}: its µs (`us`, `replays_us`) must be finite and above 0"
                ));
            }
            if !(r.gbps.is_finite() && r.gbps >= 0.0) {
                return Err(format!(
                    "point {label}: `gbps` must be finite and not negative"
                ));
            }
            if !r.clock_mhz.iter().all(|&v| positive(v)) {
                return Err(format!(
                    "point {label}: `clock_mhz` readings must be finite and above 0"
                ));
            }
        }
        Ok(())
    }
}

/// The method line recorded in the report.
pub fn method_line(serial_launch: bool, pair_clusters: bool, settle_ms: u64) -> String {
    format!(
        "bf16, h_kv=1, page {PAGE}, scale 576^-0.5, permuted block table, N(0,0.1^2) inputs; \
         decode (plan reused) x{CALLS_PER_GRAPH} in one CUDA graph, {settle_ms} ms idle, warm-up >= {WARMUP_MS} ms + {REPLAYS} timed \
         replays, median/{CALLS_PER_GRAPH}; combine included; {} launches{}; copy probe {} GiB dtod",
        if serial_launch {
            "serial"
        } else {
            "programmatic (overlapped)"
        },
        if pair_clusters {
            ""
        } else {
            ", no pair clusters"
        },
        PROBE_BYTES >> 30
    )
}

/// `cuDriverGetVersion` 13000 → "13.0".
pub fn driver_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// UTC RFC 3339 time (`2026-11-28T01:16:33Z`) of `secs` since the Unix epoch.
pub fn rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339_utc(secs)
}

/// The commit to record: `$ETAP_GIT_COMMIT` at run time, else the commit the binary was
/// built from ([`BUILD_COMMIT`]). Not the checkout's HEAD at run time: the binary may be
/// older than the tree it runs in.
pub fn git_commit() -> String {
    match std::env::var("ETAP_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => BUILD_COMMIT.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Output: table, CSV, JSON, SVG
// ---------------------------------------------------------------------------------------

fn opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.prec$}"),
        _ => "-".into(),
    }
}

/// The table's header (two lines: names, rule).
pub fn table_header(peers: &[String]) -> String {
    let mut s = format!(
        "{:>4} {:>3} {:>4} {:>6} | {:>8}  {:>6} {:>5} {:>6} {:>6} |",
        "b", "s_q", "h_q", "s_k", "ours µs", "GB/s", "%copy", "TFLOPS", "SM MHz"
    );
    for p in peers {
        let _ = write!(s, " {:>11}", format!("{p} µs"));
    }
    let _ = write!(s, " | {:>5}", "ratio");
    let width = s.chars().count();
    s.push('\n');
    s.push_str(&"-".repeat(width));
    s
}

/// One table row; `ratio` is marked `*` where we lose (ratio > 1), our µs `^` where the
/// point slowed during its replays ([`PointResult::slowed_in_replays`]), the SM clock `*`
/// where NVML saw the power cap ([`PointResult::clock_cell`]).
pub fn table_row(r: &PointResult, peers: &[String]) -> String {
    let p = &r.point;
    let mut s = format!(
        "{:>4} {:>3} {:>4} {:>6} | {:>8.1}{} {:>6.0} {:>5} {:>6.1} {:>6} |",
        p.b,
        p.s_q,
        p.h_q,
        p.s_k_label(),
        r.us,
        if r.slowed_in_replays() { '^' } else { ' ' },
        r.gbps,
        opt(r.pct_copy, 1),
        r.tflops,
        r.clock_cell()
    );
    for name in peers {
        let _ = write!(s, " {:>11}", opt(r.peers_us.get(name).copied(), 1));
    }
    let _ = write!(
        s,
        " | {:>5}{}",
        opt(r.ratio, 2),
        if r.ratio.is_some_and(|x| x > 1.0) {
            " *"
        } else {
            ""
        }
    );
    s
}

/// Summary after the table: wins, the worst point, the geometric mean of the ratios, and
/// how many points slowed during their replays.
pub fn summary(results: &[PointResult]) -> String {
    let slowed = results.iter().filter(|r| r.slowed_in_replays()).count();
    let slowed_note = if slowed > 0 {
        format!(
            "\n{slowed} point(s) slowed by {:.0} % or more from their first to their last timed \
             replay (^), typically as the card's power cap caught up with them (their first \
             replays are in the CSV and JSON)",
            100.0 * (REPLAY_DRIFT_MARK - 1.0)
        )
    } else {
        String::new()
    };
    let rated: Vec<&PointResult> = results.iter().filter(|r| r.ratio.is_some()).collect();
    if rated.is_empty() {
        return format!(
            "{} point(s); no peer numbers to compare with{slowed_note}",
            results.len()
        );
    }
    let wins = rated
        .iter()
        .filter(|r| r.ratio.is_some_and(|x| x <= 1.0))
        .count();
    let geo = geomean(rated.iter().map(|r| r.ratio.unwrap_or(1.0)));
    let worst = rated
        .iter()
        .max_by(|a, b| a.ratio.unwrap_or(0.0).total_cmp(&b.ratio.unwrap_or(0.0)));
    let mut s = format!(
        "at least as fast as the better peer at {wins} of {} points; geometric-mean ratio {geo:.3}",
        rated.len()
    );
    if let Some(w) = worst {
        let _ = write!(
            s,
            "; worst ratio {:.2} at {}",
            w.ratio.unwrap_or(f64::NAN),
            w.point.label()
        );
    }
    if rated.iter().any(|r| r.point.varlen) {
        s.push_str(
            "\nvarlen rows: the ratio compares bandwidths (the peers drew their own lengths), \
             not the µs shown",
        );
    }
    s.push_str(&slowed_note);
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV: one row per point, each repeating the run's device, driver, commit and time. The
/// NVML columns follow `ratio`, then the first and last timed replays (µs a call), then the
/// SM clock counted on the GPU after the replays (median, first, last; MHz) and the SM
/// cycles a call ([`PointResult::cycles_per_call`], thousands), and last the card's
/// serial, so readers of the older columns keep working.
pub fn to_csv(rep: &Report) -> String {
    let mut s = String::from(
        "device,driver,git_commit,timestamp,precision,copy_gbps,b,s_q,h_q,s_k,varlen,causal,total_len,us,gbps,pct_copy,tflops",
    );
    for p in &rep.peers {
        let _ = write!(s, ",{}_us", csv_field(p));
    }
    s.push_str(
        ",ratio,nvml_samples,sm_mhz,sm_mhz_min,power_w,power_cap_frac,slowdown_frac,energy_uj,temp_c,first_us,last_us,clock_mhz,clock_mhz_first,clock_mhz_last,kcycles,card_serial\n",
    );
    let num = |v: Option<f64>| match v {
        Some(x) if x.is_finite() => format!("{x:.4}"),
        _ => String::new(),
    };
    let int = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in &rep.points {
        let p = &r.point;
        let _ = write!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{:.4},{:.3},{},{:.4}",
            csv_field(&rep.device),
            csv_field(&rep.driver_version),
            csv_field(&rep.git_commit),
            csv_field(&rep.timestamp),
            csv_field(&rep.precision),
            num(rep.copy_gbps),
            p.b,
            p.s_q,
            p.h_q,
            p.s_k,
            p.varlen,
            r.causal,
            r.total_len,
            r.us,
            r.gbps,
            num(r.pct_copy),
            r.tflops
        );
        for name in &rep.peers {
            let _ = write!(s, ",{}", num(r.peers_us.get(name).copied()));
        }
        let w = &r.power;
        let _ = writeln!(
            s,
            ",{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            num(r.ratio),
            int(w.nvml_samples),
            num(w.sm_mhz),
            int(w.sm_mhz_min),
            num(w.power_w),
            num(w.power_cap_frac),
            num(w.slowdown_frac),
            num(w.energy_uj),
            int(w.temp_c),
            num(r.first_us()),
            num(r.last_us()),
            num(r.clock_median_mhz()),
            num(r.clock_mhz.first().copied()),
            num(r.clock_mhz.last().copied()),
            num(r.cycles_per_call().map(|c| c * 1e-3)),
            csv_field(rep.card_serial.as_deref().unwrap_or_default())
        );
    }
    s
}

/// The report as pretty-printed JSON (the `--json` output).
pub fn to_json(rep: &Report) -> Result<String> {
    serde_json::to_string_pretty(rep).map_err(|e| Error::Other(format!("writing JSON: {e}")))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Colour of a head count's lines.
fn head_color(h_q: usize) -> &'static str {
    match h_q {
        16 => "#1f77b4",
        32 => "#ff7f0e",
        64 => "#2ca02c",
        128 => "#d62728",
        _ => "#9467bd",
    }
}

/// Dash pattern of the i-th peer (ours is solid).
fn peer_dash(i: usize) -> &'static str {
    ["7,4", "2,3", "10,3,2,3"][i % 3]
}

fn short_len(s_k: usize) -> String {
    if s_k >= 1024 && s_k.is_multiple_of(1024) {
        format!("{}K", s_k / 1024)
    } else {
        s_k.to_string()
    }
}

/// Most horizontal gridlines of a plot's GB/s axis.
const MAX_GRIDLINES: f64 = 20.0;

/// Largest GB/s a plot draws to scale (1 PB/s); a report's larger figures are absurd.
const MAX_PLOT_GBPS: f64 = 1e6;

/// GB/s against context length (log2 axis, 512..64K) for batch `batch`, s_q = 1, fixed
/// lengths: one solid line per head count (ours), the peers' lines dashed in the same
/// colour, and the probed copy bandwidth as a grey rule.
pub fn svg_plot(rep: &Report, card: Option<&CardAnchors>, batch: usize) -> String {
    let (w, h) = (960.0f64, 600.0f64);
    let (ml, mr, mt, mb) = (80.0, 220.0, 60.0, 60.0);
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let (x_lo, x_hi) = (9.0f64, 16.0f64);
    let s_k_range = GRID_S_K[0]..=GRID_S_K[GRID_S_K.len() - 1];
    let on_plot = |p: &Point| p.b == batch && p.s_q == 1 && !p.varlen && s_k_range.contains(&p.s_k);
    let ours: Vec<&PointResult> = rep.points.iter().filter(|r| on_plot(&r.point)).collect();
    let peer_rows: Vec<&AnchorRow> = card
        .map(|c| c.rows.iter().filter(|r| on_plot(&r.point)).collect())
        .unwrap_or_default();
    // Figures past MAX_PLOT_GBPS (or not finite) are absurd: capped, so the axis arithmetic
    // below stays finite.
    let finite = |g: f64| {
        if g.is_finite() {
            g.clamp(0.0, MAX_PLOT_GBPS)
        } else {
            0.0
        }
    };
    let mut y_max = finite(rep.copy_gbps.unwrap_or(0.0));
    for r in &ours {
        y_max = y_max.max(finite(r.gbps));
    }
    for r in &peer_rows {
        for t in r.peers.values() {
            y_max = y_max.max(finite(t.gbps));
        }
    }
    // Gridlines every 250 or 500 GB/s, wider where a report holds larger (or absurd)
    // figures, so that the axis never has more than MAX_GRIDLINES of them.
    let mut y_step = if y_max > 2000.0 { 500.0 } else { 250.0 };
    while y_max * 1.05 / y_step > MAX_GRIDLINES {
        y_step *= 2.0;
    }
    let y_top = ((y_max * 1.05) / y_step).ceil().max(1.0) * y_step;
    let xp = |s_k: usize| ml + ((s_k as f64).log2() - x_lo) / (x_hi - x_lo) * pw;
    let yp = |g: f64| mt + ph - g / y_top * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16">MLA decode bf16, b={batch}, s_q=1: GB/s vs context — {}</text>"#,
        ml + pw / 2.0,
        xml_escape(&rep.device)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="46" text-anchor="middle" fill="#555">commit {} · {} · driver CUDA {}</text>"##,
        ml + pw / 2.0,
        xml_escape(&rep.git_commit),
        xml_escape(&rep.timestamp),
        xml_escape(&rep.driver_version)
    );
    // Grid and axes.
    let gridlines = (y_top / y_step).round() as usize;
    for i in 0..=gridlines {
        let g = i as f64 * y_step;
        let y = yp(g);
        let _ = writeln!(
            s,
            r##"<line x1="{ml}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{g:.0}</text>"##,
            ml + pw,
            ml - 6.0,
            y + 4.0
        );
    }
    for s_k in GRID_S_K {
        let x = xp(s_k);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{mt}" x2="{x:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            mt + ph,
            mt + ph + 18.0,
            short_len(s_k)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">context length s_k (tokens, log scale)</text>"#,
        ml + pw / 2.0,
        h - 16.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle">GB/s (valid KV + q + out bytes / time)</text>"#,
        mt + ph / 2.0
    );
    if let Some(c) = rep.copy_gbps {
        let y = yp(c);
        let _ = writeln!(
            s,
            r##"<line x1="{ml}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#888" stroke-dasharray="1,3"/><text x="{:.1}" y="{:.1}" fill="#666">copy {c:.0} GB/s</text>"##,
            ml + pw,
            ml + 6.0,
            y - 5.0
        );
    }
    let mut heads: Vec<usize> = ours
        .iter()
        .map(|r| r.point.h_q)
        .chain(peer_rows.iter().map(|r| r.point.h_q))
        .collect();
    heads.sort_unstable();
    heads.dedup();
    let polyline = |s: &mut String,
                    pts: &mut Vec<(usize, f64)>,
                    color: &str,
                    dash: Option<&str>| {
        pts.sort_by_key(|p| p.0);
        let coords: Vec<String> = pts
            .iter()
            .map(|&(k, g)| format!("{:.1},{:.1}", xp(k), yp(g)))
            .collect();
        let dash = dash
            .map(|d| format!(r#" stroke-dasharray="{d}""#))
            .unwrap_or_default();
        let width = if dash.is_empty() { 2.5 } else { 1.5 };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="{width}"{dash}/>"#,
            coords.join(" ")
        );
        if dash.is_empty() {
            for c in &coords {
                if let Some((x, y)) = c.split_once(',') {
                    let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
                }
            }
        }
    };
    let peer_names: Vec<String> = card.map(|c| c.peers.clone()).unwrap_or_default();
    for &hq in &heads {
        let color = head_color(hq);
        for (i, name) in peer_names.iter().enumerate() {
            let mut pts: Vec<(usize, f64)> = peer_rows
                .iter()
                .filter(|r| r.point.h_q == hq)
                .filter_map(|r| r.peers.get(name).map(|t| (r.point.s_k, t.gbps)))
                .collect();
            if !pts.is_empty() {
                polyline(&mut s, &mut pts, color, Some(peer_dash(i)));
            }
        }
        let mut pts: Vec<(usize, f64)> = ours
            .iter()
            .filter(|r| r.point.h_q == hq)
            .map(|r| (r.point.s_k, r.gbps))
            .collect();
        if !pts.is_empty() {
            polyline(&mut s, &mut pts, color, None);
        }
    }
    // Legend: colours = head counts, line styles = who.
    let lx = ml + pw + 20.0;
    let mut ly = mt + 10.0;
    for &hq in &heads {
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{}" stroke-width="6"/><text x="{:.1}" y="{:.1}">h_q = {hq}</text>"#,
            lx + 28.0,
            head_color(hq),
            lx + 36.0,
            ly + 4.0
        );
        ly += 20.0;
    }
    ly += 10.0;
    let _ = writeln!(
        s,
        r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="black" stroke-width="2.5"/><text x="{:.1}" y="{:.1}">ours (flashmla-etap)</text>"#,
        lx + 28.0,
        lx + 36.0,
        ly + 4.0
    );
    for (i, name) in peer_names.iter().enumerate() {
        ly += 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="black" stroke-width="1.5" stroke-dasharray="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 28.0,
            peer_dash(i),
            lx + 36.0,
            ly + 4.0,
            xml_escape(name)
        );
    }
    if let Some(c) = card {
        ly += 24.0;
        let _ = writeln!(
            s,
            r##"<text x="{lx}" y="{ly}" fill="#555">peers' anchors:</text><text x="{lx}" y="{:.1}" fill="#555">{}</text>"##,
            ly + 16.0,
            xml_escape(&c.device)
        );
    }
    if ours.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#a00">no measured points at b={batch}, s_q=1</text>"##,
            ml + pw / 2.0,
            mt + 24.0
        );
    }
    s.push_str("</svg>\n");
    s
}

pub(crate) fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::Other(format!("writing {}: {e}", path.display())))
}

// ---------------------------------------------------------------------------------------
// Inputs on the device
// ---------------------------------------------------------------------------------------

/// Pages of random bf16 data in the host pool (37.7 MB: larger than any q of the sweep and
/// than L2, so tiled copies do not repeat within a cache-sized window).
pub const POOL_PAGES: usize = 512;
/// Elements per cache page.
const PAGE_ELEMS: usize = PAGE * D_QK;

/// `n` values ~ N(0, 0.1²) clamped to [-1, 1], as bf16.
pub fn random_pool(n: usize, seed: u64) -> Vec<bf16> {
    let mut g = Normal::new(seed);
    (0..n)
        .map(|_| bf16::from_f64((0.1 * g.sample()).clamp(-1.0, 1.0)))
        .collect()
}

/// A random permutation of `0..n` (Fisher–Yates), `n` at most 2^31 (page ids are i32).
pub fn permutation(n: usize, rng: &mut SplitMix64) -> Result<Vec<i32>> {
    if n > 1 << 31 {
        return Err(Error::invalid(
            "n",
            format!("{n} pages: page ids must fit i32 (at most 2^31 pages)"),
        ));
    }
    let mut v: Vec<i32> = (0..n).map(|i| i as i32).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    Ok(v)
}

/// Pages of a request of length `l` (none for a negative one).
fn request_pages(l: i32) -> usize {
    (l.max(0) as usize).div_ceil(PAGE)
}

/// Pages of the longest of `lengths` (at least 1): the block table's width.
pub fn block_table_width(lengths: &[i32]) -> usize {
    lengths
        .iter()
        .map(|&l| request_pages(l))
        .max()
        .unwrap_or(0)
        .max(1)
}

/// Pages of the cache that holds `lengths`: Σ pages, at least 1.
pub fn cache_pages(lengths: &[i32]) -> usize {
    lengths
        .iter()
        .map(|&l| request_pages(l))
        .sum::<usize>()
        .max(1)
}

/// Pages in the cache ([`cache_pages`]) and the block table `[b, block_table_width]`
/// (pages of a random permutation of `0..Σ pages`; entries past a request's pages = 0, a
/// valid page).
pub fn block_table(lengths: &[i32], rng: &mut SplitMix64) -> Result<(usize, Vec<i32>)> {
    let total = cache_pages(lengths);
    let max_pages = block_table_width(lengths);
    let perm = permutation(total, rng)?;
    // The limit `DecodeConfig::validate` sets, checked before the table is allocated.
    let entries = lengths
        .len()
        .checked_mul(max_pages)
        .filter(|&e| (e as u64) < 1 << 32)
        .ok_or_else(|| {
            Error::invalid(
                "lengths",
                "batch · block-table width (the block-table entries) must be below 2^32",
            )
        })?;
    let mut table = Vec::new();
    table.try_reserve_exact(entries).map_err(|_| {
        Error::invalid(
            "lengths",
            format!("a block table of {entries} entries does not fit in host memory"),
        )
    })?;
    table.resize(entries, 0i32);
    let mut next = 0;
    for (b, &l) in lengths.iter().enumerate() {
        for p in 0..request_pages(l) {
            table[b * max_pages + p] = perm[next];
            next += 1;
        }
    }
    Ok((total, table))
}

fn drv(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    move |e| Error::driver(format!("bench: {what}"), e)
}

/// Fills `dst` with copies of `pool` slices at random offsets (chunks of half the pool).
fn fill_from_pool(
    gpu: &Gpu,
    pool: &CudaSlice<bf16>,
    dst: &mut CudaSlice<bf16>,
    rng: &mut SplitMix64,
) -> Result<()> {
    if pool.is_empty() {
        return Err(Error::invalid(
            "pool",
            "must hold at least one value to copy from",
        ));
    }
    let chunk = (pool.len() / 2).max(1);
    let mut at = 0;
    while at < dst.len() {
        let n = chunk.min(dst.len() - at);
        let off = rng.below((pool.len() - n + 1) as u64) as usize;
        gpu.stream
            .memcpy_dtod(&pool.slice(off..off + n), &mut dst.slice_mut(at..at + n))
            .map_err(drv("filling inputs (memcpy dtod)"))?;
        at += n;
    }
    Ok(())
}

/// Device-to-device copy bandwidth, GB/s with read + write bytes counted: a
/// [`PROBE_BYTES`] copy, one warm-up, median of [`REPLAYS`] timed copies.
pub fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    let s = &gpu.stream;
    let src: CudaSlice<u8> = s.alloc_zeros(PROBE_BYTES).map_err(drv("probe alloc"))?;
    let mut dst: CudaSlice<u8> = s.alloc_zeros(PROBE_BYTES).map_err(drv("probe alloc"))?;
    let timer = GpuTimer::new(s)?;
    s.memcpy_dtod(&src, &mut dst).map_err(drv("probe copy"))?;
    let mut ms = Vec::with_capacity(REPLAYS);
    for _ in 0..REPLAYS {
        timer.start()?;
        s.memcpy_dtod(&src, &mut dst).map_err(drv("probe copy"))?;
        timer.stop()?;
        ms.push(timer.elapsed_ms()? as f64);
    }
    gpu.synchronize()?;
    Ok(gbps(2 * PROBE_BYTES as u64, median(&ms) * 1e3))
}

/// What [`measure`] found at one point.
#[derive(Debug)]
pub struct Measured {
    /// The requests' lengths.
    pub lengths: Vec<i32>,
    /// Each timed replay, ms.
    pub replay_ms: Vec<f64>,
    /// NVML's view of the timed replays: `None` without a monitor, an error where a query
    /// failed.
    pub power: Option<Result<PowerStats>>,
    /// The SM clock after each timed replay, MHz ([`ClockProbe`]), in replay order; empty
    /// if any reading is missing, so that each one stays with its replay.
    pub clock_mhz: Vec<f64>,
}

/// Measures one point: builds its inputs, plans, captures [`CALLS_PER_GRAPH`] decode calls
/// in one graph, idles for `settle`, replays the graph untimed for at least [`WARMUP_MS`] ms
/// and [`REPLAYS`] times timed, with `monitor` (if any) sampling the card during the timed
/// replays only, and the SM clock counted on the GPU after each timed replay, outside the
/// timed span ([`ClockProbe`], ~20 µs; NVML's window, its energy per call included, spans
/// these ten probes too, ~0.3 % of a 50 ms window). Every buffer is freed on return.
pub fn measure(
    decoder: &Decoder,
    pool: &CudaSlice<bf16>,
    p: &Point,
    precision: Precision,
    settle: std::time::Duration,
    monitor: Option<&PowerMonitor>,
) -> Result<Measured> {
    p.check()?;
    let gpu = decoder.gpu();
    let s = &gpu.stream;
    let lengths = p.lengths();
    // The drawn lengths set the block table's width: validated before sizing buffers.
    let config = p.config(&lengths, precision);
    config.validate()?;
    let mut rng = SplitMix64(
        SEED ^ ((p.b * 131 + p.h_q * 7 + p.s_q) as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
            ^ (p.s_k as u64).rotate_left(40)
            ^ u64::from(p.varlen),
    );
    let (num_blocks, table) = block_table(&lengths, &mut rng)?;
    let cache_elems = num_blocks * PAGE_ELEMS;
    let q_elems = p.b * p.s_q * p.h_q * D_QK;
    let out_elems = p.b * p.s_q * p.h_q * D_V;
    let need = (cache_elems + q_elems + out_elems) * 2;
    if let Ok((free, _)) = gpu.ctx.mem_get_info() {
        if need > free {
            return Err(Error::Other(format!(
                "bench {}: needs {:.2} GB of device memory, {:.2} GB free",
                p.label(),
                need as f64 / 1e9,
                free as f64 / 1e9
            )));
        }
    }
    // SAFETY: every element is written by fill_from_pool before any read.
    let mut kv: CudaSlice<bf16> = unsafe { s.alloc(cache_elems) }.map_err(drv("cache alloc"))?;
    fill_from_pool(gpu, pool, &mut kv, &mut rng)?;
    // SAFETY: as above.
    let mut q: CudaSlice<bf16> = unsafe { s.alloc(q_elems) }.map_err(drv("q alloc"))?;
    fill_from_pool(gpu, pool, &mut q, &mut rng)?;
    let bt = s.clone_htod(&table).map_err(drv("block table upload"))?;
    let sl = s.clone_htod(&lengths).map_err(drv("seqlens upload"))?;
    let mut out: CudaSlice<bf16> = s.alloc_zeros(out_elems).map_err(drv("out alloc"))?;
    let mut lse: CudaSlice<f32> = s
        .alloc_zeros(p.b * p.h_q * p.s_q)
        .map_err(drv("lse alloc"))?;
    let cache = KvCache::new(gpu, &kv, num_blocks, 1)?;
    let mut plan = DecodePlan::new(gpu, config, &lengths)?;
    // One eager call first: a launch error surfaces here, outside the capture.
    decoder.decode::<bf16, bf16>(s, &mut plan, &q, &cache, &bt, &sl, &mut out, &mut lse)?;
    gpu.synchronize()?;
    let graph = Graph::capture(s, |st| {
        for _ in 0..CALLS_PER_GRAPH {
            decoder
                .decode::<bf16, bf16>(st, &mut plan, &q, &cache, &bt, &sl, &mut out, &mut lse)?;
        }
        Ok(())
    })?;
    graph.upload()?;
    // The card idles before the warm-up (`--settle-ms`), so that a point starts from the
    // same power state whatever ran before it.
    std::thread::sleep(settle);
    let warm_up = std::time::Instant::now();
    while warm_up.elapsed() < std::time::Duration::from_millis(WARMUP_MS) {
        graph.launch(s)?;
        gpu.synchronize()?;
    }
    let timer = GpuTimer::new(s)?;
    let mut clock = ClockProbe::new(gpu, decoder.kernels(), REPLAYS)?;
    let mut timed = || -> Result<Vec<f64>> {
        let mut ms = Vec::with_capacity(REPLAYS);
        for i in 0..REPLAYS {
            timer.start()?;
            graph.launch(s)?;
            timer.stop()?;
            clock.run(i)?;
            ms.push(timer.elapsed_ms()? as f64);
        }
        Ok(ms)
    };
    let (replay_ms, power) = match monitor {
        Some(m) => {
            let (ms, stats) = m.sample_while(REPLAYS * CALLS_PER_GRAPH, timed)?;
            (ms, Some(stats))
        }
        None => (timed()?, None),
    };
    let clock_mhz = clock
        .read_mhz()?
        .into_iter()
        .collect::<Option<Vec<f64>>>()
        .unwrap_or_default();
    gpu.synchronize()?;
    drop(graph);
    Ok(Measured {
        lengths,
        replay_ms,
        power,
        clock_mhz,
    })
}

// ---------------------------------------------------------------------------------------
// The subcommand
// ---------------------------------------------------------------------------------------

/// Options of `flashmla-etap bench`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BenchArgs {
    /// A short subset (9 points: the latency rows, one long context, every head count,
    /// varlen and MTP) instead of the 73-point anchor sweep.
    #[arg(long)]
    pub quick: bool,
    /// The serving-shaped varlen sweep (52 points: b 16-256, h_q 16-128, mean s_k 1K-16K,
    /// and s_q 2; ratios only at the grid's three varlen rows among them) instead of the
    /// anchor sweep.
    #[arg(long, conflicts_with = "quick")]
    pub varlen_sweep: bool,
    /// Keep only the points matching KEY=VALUE (KEY: b, s_q, h_q, s_k; e.g. h_q=16,
    /// s_k=4K, s_k=4096v); repeat or comma-separate for several (all must match).
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Bench these points instead of the anchor grid (repeatable), e.g.
    /// `--point b=16,h_q=32,s_k=24K`; points without an anchor get no ratio.
    #[arg(
        long = "point",
        value_name = "b=B,h_q=H,s_k=K[,s_q=S]",
        conflicts_with_all = ["quick", "varlen_sweep"]
    )]
    pub points: Vec<String>,
    /// Print the selected points and exit (no GPU needed).
    #[arg(long)]
    pub list: bool,
    /// Write the results (card, driver, git commit, time, every point) as JSON.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write the results as CSV (one row per point).
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
    /// Write an SVG plot of GB/s against context length, with the peers dashed.
    #[arg(long, value_name = "PATH.svg")]
    pub plot: Option<PathBuf>,
    /// The batch the plot shows.
    #[arg(long, value_name = "B", default_value_t = 16)]
    pub plot_batch: usize,
    /// The peers' anchors (JSON) [default: the built-in copy of bench/anchors.json].
    #[arg(long, value_name = "PATH")]
    pub peers: Option<PathBuf>,
    /// Compare with this card's anchors (a key of the anchors file: H100, H200)
    /// [default: picked from the GPU name].
    #[arg(long, value_name = "KEY")]
    pub card: Option<String>,
    /// How P is rounded for the P·V GEMM: `accurate` (two 16-bit terms, the library's
    /// default) or `fast` (one, as FlashMLA).
    #[arg(long, value_enum, default_value_t = Precision::Accurate)]
    pub precision: Precision,
    /// Launch each kernel only after the previous one has ended (no programmatic dependent
    /// launch), to measure what the overlap of consecutive launches buys.
    #[arg(long)]
    pub serial_launch: bool,
    /// Idle time before each point's warm-up, ms, so that every point starts from an idle
    /// card: back to back, the power cap's memory of the point before slowed light points
    /// after heavy ones by up to 24 % (H200). 0 runs the sweep back to back.
    #[arg(long, value_name = "MS", default_value_t = SETTLE_MS)]
    pub settle_ms: u64,
    /// Launch the 64-row kernel's row chunks as separate CTAs rather than in pairs of a
    /// thread-block cluster, to measure what the pairs buy.
    #[arg(long)]
    pub no_pair_clusters: bool,
}

/// Runs `flashmla-etap bench` on device `ordinal`.
pub fn main(ordinal: usize, args: &BenchArgs) -> Result<()> {
    let filters = parse_filters(&args.only)?;
    let base = if !args.points.is_empty() {
        let points = args
            .points
            .iter()
            .map(|s| Point::parse(s))
            .collect::<Result<Vec<_>>>()?;
        // A report holds each point once (`Report::load` rejects repeats).
        if let Some((i, p)) = points
            .iter()
            .enumerate()
            .find(|(i, p)| points[..*i].contains(p))
        {
            return Err(Error::invalid(
                "--point",
                format!("{} is given twice (--point number {})", p.label(), i + 1),
            ));
        }
        points
    } else if args.quick {
        Sweep::Quick.points()
    } else if args.varlen_sweep {
        Sweep::Varlen.points()
    } else {
        Sweep::Anchors.points()
    };
    let points = select(base, &filters);
    if points.is_empty() {
        return Err(Error::invalid("--only", "no benchmark point matches"));
    }
    if args.list {
        for p in &points {
            if !crate::explain::print_piped(&format!("{}\n", p.label()))? {
                break;
            }
        }
        return Ok(());
    }
    let anchors = Anchors::load(args.peers.as_deref())?;
    if let Some(k) = &args.card {
        if !anchors.cards.contains_key(k) {
            return Err(Error::invalid(
                "--card",
                format!(
                    "`{k}` is not a card of the anchors file (has: {})",
                    anchors.cards.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }

    let gpu = Gpu::open(ordinal).map_err(|e| {
        if e.is_no_gpu() {
            Error::Other(format!("no GPU: {e}"))
        } else {
            e
        }
    })?;
    let card_key = args
        .card
        .clone()
        .or_else(|| anchors.card_for_gpu(&gpu.name).map(str::to_string));
    let card = card_key.as_ref().and_then(|k| anchors.cards.get(k));
    let card_serial = crate::power::card_serial(&gpu);
    eprintln!(
        "{}",
        crate::power::describe_with_serial(&gpu, card_serial.as_deref())
    );
    match (&card_key, card) {
        (Some(k), Some(c)) => eprintln!("peers: {} anchors ({})", k, c.device),
        _ => eprintln!(
            "peers: no anchors for `{}` (cards: {}); pass --card to choose one",
            gpu.name,
            anchors.cards.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
    eprintln!(
        "precision: {:?} (P in the P·V GEMM; --precision fast|accurate)",
        args.precision
    );
    let mut decoder = Decoder::new(&gpu)?;
    decoder.set_programmatic_launch(!args.serial_launch);
    let pair_clusters = decoder.set_pair_clusters(!args.no_pair_clusters);
    if !pair_clusters && !args.no_pair_clusters {
        eprintln!("pair clusters: off (this GPU cannot hold one on every SM)");
    }
    // `nvml` goes into the report: what was sampled, or why nothing was.
    let (mut monitor, mut nvml) = match PowerMonitor::open(&gpu) {
        Ok(m) => {
            eprintln!(
                "nvml: sampling {} (SM MHz: the median; * = software power cap in most samples)",
                m.describe()
            );
            let line = m.describe().to_string();
            (Some(m), line)
        }
        Err(e) => {
            eprintln!("nvml: sampling off ({e}); the SM MHz, power and energy fields stay empty");
            (None, format!("off: {e}"))
        }
    };
    let copy = copy_bandwidth(&gpu)?;
    eprintln!(
        "copy bandwidth: {copy:.0} GB/s ({} GiB dtod, read+write counted){}",
        PROBE_BYTES >> 30,
        card.and_then(|c| c.copy_gbps)
            .map(|a| format!("; the anchors' run measured {a:.0}"))
            .unwrap_or_default()
    );
    let pool = gpu
        .stream
        .clone_htod(&random_pool(POOL_PAGES * PAGE_ELEMS, SEED))
        .map_err(drv("pool upload"))?;
    let peers: Vec<String> = card.map(|c| c.peers.clone()).unwrap_or_default();

    let bar = indicatif::ProgressBar::new(points.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise}] {msg}",
        )
        .map_err(|e| Error::Other(format!("progress bar template: {e}")))?,
    );
    println!("{}", table_header(&peers));
    let mut results = Vec::with_capacity(points.len());
    let settle = std::time::Duration::from_millis(args.settle_ms);
    for p in &points {
        bar.set_message(p.label());
        let measured = measure(&decoder, &pool, p, args.precision, settle, monitor.as_ref());
        let m = match measured {
            Ok(v) => v,
            Err(e) => {
                bar.abandon();
                return Err(Error::Other(format!("bench {}: {e}", p.label())));
            }
        };
        let mut r = PointResult::new(*p, &m.lengths, &m.replay_ms, Some(copy), card);
        r.clock_mhz = m.clock_mhz;
        match m.power {
            Some(Ok(stats)) => r.power = stats,
            Some(Err(e)) => {
                let why = format!("sampling off from {} on: {e}", p.label());
                bar.suspend(|| eprintln!("nvml: {why}"));
                let _ = write!(nvml, "; {why}");
                monitor = None;
            }
            None => {}
        }
        bar.suspend(|| println!("{}", table_row(&r, &peers)));
        results.push(r);
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{}", summary(&results));

    let report = Report {
        tool: "flashmla-etap bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: git_commit(),
        timestamp: now_rfc3339(),
        device: gpu.name.clone(),
        card_serial,
        driver_version: driver_string(gpu.driver_version),
        sm_count: gpu.sm_count,
        copy_gbps: Some(copy),
        anchors_card: card_key.filter(|_| card.is_some()),
        peers,
        method: method_line(args.serial_launch, pair_clusters, args.settle_ms),
        precision: format!("{:?}", args.precision),
        nvml,
        points: results,
    };
    if let Some(path) = &args.json {
        write_file(path, &to_json(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.csv {
        write_file(path, &to_csv(&report))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        write_file(path, &svg_plot(&report, card, args.plot_batch))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_report(points: Vec<PointResult>, peers: Vec<String>) -> Report {
        Report {
            tool: "flashmla-etap bench".into(),
            version: "0.1.0".into(),
            git_commit: "abc1234".into(),
            timestamp: "2026-11-28T01:16:33Z".into(),
            device: "NVIDIA H100 80GB HBM3".into(),
            card_serial: None,
            driver_version: "13.0".into(),
            sm_count: 132,
            copy_gbps: Some(2990.0),
            anchors_card: Some("H100".into()),
            peers,
            method: method_line(false, true, 0),
            precision: "Accurate".into(),
            nvml: String::new(),
            points,
        }
    }

    fn h100() -> CardAnchors {
        Anchors::load(None).unwrap().cards["H100"].clone()
    }

    #[test]
    fn sweep_has_the_anchor_rows_in_order() {
        let pts = anchor_points();
        assert_eq!(pts.len(), 2 * 4 * 8 + 9);
        assert_eq!(pts[0], Point::new(16, 1, 16, 512));
        assert_eq!(pts[63], Point::new(32, 1, 128, 65536));
        assert_eq!(pts[66], Point::new(4, 1, 16, 8192));
        assert!(pts[67].varlen && pts[67].b == 64);
        assert_eq!(pts[72], Point::new(16, 4, 16, 16384));
        assert!(pts[72].causal() && !pts[0].causal());
        let mut dedup = pts.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), pts.len());
        // Every point of the sweep (and of --quick) has an anchor on both cards.
        let a = Anchors::load(None).unwrap();
        for card in a.cards.values() {
            assert_eq!(card.rows.len(), pts.len());
            for p in pts.iter().chain(quick_points().iter()) {
                assert!(card.row(p).is_some(), "{} missing", p.label());
            }
        }
    }

    #[test]
    fn quick_is_short_and_covers_latency_and_long_context() {
        let q = quick_points();
        assert!((8..=10).contains(&q.len()));
        assert!(q.contains(&Point::new(1, 1, 16, 4096)));
        assert!(q.contains(&Point::new(1, 1, 16, 65536)));
        assert!(q.iter().any(|p| p.s_k == 65536 && p.b >= 16));
        assert!(q.iter().any(|p| p.varlen));
        assert!(q.iter().any(|p| p.s_q > 1));
    }

    #[test]
    fn the_varlen_sweep_is_uneven_and_off_the_anchor_grid() {
        let v = Sweep::Varlen.points();
        assert_eq!(v.len(), 52);
        assert!(v
            .iter()
            .all(|p| p.varlen && p.lengths().iter().any(|&l| l != p.lengths()[0])));
        let mut dedup = v.clone();
        dedup.sort_by_key(|p| (p.b, p.s_q, p.h_q, p.s_k));
        dedup.dedup();
        assert_eq!(dedup.len(), v.len());
        // Only the grid's own three varlen rows (b 64 / 128 at 4K) have a peer's anchor.
        let a = Anchors::load(None).unwrap();
        for card in a.cards.values() {
            let anchored: Vec<_> = v.iter().filter(|p| card.row(p).is_some()).collect();
            assert_eq!(anchored.len(), 3);
            assert!(anchored
                .iter()
                .all(|p| p.s_k == 4096 && (p.b == 64 || p.b == 128)));
        }
        // Every tile kind: 16/32-row (h_q 16/32) and 64-row (h_q 64/128, s_q 2).
        for h_q in VARLEN_H_Q {
            assert!(v.iter().any(|p| p.h_q == h_q && p.s_q == 1));
        }
        assert_eq!(v.iter().filter(|p| p.s_q == 2).count(), 4);
    }

    #[test]
    fn varlen_lengths_are_deterministic_and_bounded() {
        let p = Point::new(128, 1, 16, 4096).varlen();
        let a = p.lengths();
        assert_eq!(a, p.lengths());
        assert_eq!(a.len(), 128);
        assert!(a.iter().all(|&l| l >= 1));
        let mean = a.iter().map(|&l| l as f64).sum::<f64>() / 128.0;
        assert!((mean - 4096.0).abs() < 600.0, "mean {mean}");
        assert!(a.iter().any(|&l| l != a[0]));
        // at least s_q
        let p2 = Point::new(64, 4, 16, 8).varlen();
        assert!(p2.lengths().iter().all(|&l| l >= 4));
        assert_eq!(Point::new(2, 1, 16, 512).lengths(), vec![512, 512]);
    }

    #[test]
    fn filters_parse_and_select() {
        let f = Filter::parse("h_q=16").unwrap();
        let sel = select(anchor_points(), &[f]);
        assert_eq!(sel.len(), 2 * 8 + 7);
        let sel = select(
            anchor_points(),
            &[
                Filter::parse("s_k=4K").unwrap(),
                Filter::parse("b=16").unwrap(),
            ],
        );
        assert_eq!(sel.len(), 4);
        let sel = select(anchor_points(), &[Filter::parse("s_k=4096v").unwrap()]);
        assert_eq!(sel.len(), 3);
        assert!(Filter::parse("h_q").is_err());
        assert!(Filter::parse("x=3").is_err());
        assert!(Filter::parse("h_q=abc").is_err());
        assert!(Filter::parse("h_q=16v").is_err());
    }

    #[test]
    fn points_parse_from_key_values() {
        assert_eq!(
            Point::parse("b=16,h_q=32,s_k=24K").unwrap(),
            Point::new(16, 1, 32, 24 * 1024)
        );
        assert_eq!(
            Point::parse("s_q=2, h_q=128, b=4, s_k=4096v").unwrap(),
            Point::new(4, 2, 128, 4096).varlen()
        );
        for bad in [
            "b=16,h_q=32",
            "b=0,h_q=32,s_k=1K",
            "b=16,h_q=32,s_k=1K,x=2",
            "",
            "b=16,b=32,h_q=32,s_k=1K",
            "b=16,h_q=32,s_k=3000000000",
            "b=16,h_q=32,s_k=18014398509481984K",
            // The decode's limits, before any length is drawn or buffer sized: s_q past
            // 4 (its lengths' clamp would panic), a batch that would allocate for ever.
            "b=1,h_q=16,s_k=64v,s_q=3000000000",
            "b=100000000000,h_q=16,s_k=1K",
            "b=16,h_q=65536,s_k=1K",
        ] {
            match Point::parse(bad) {
                Err(Error::InvalidArgument { arg, .. }) => assert_eq!(arg, "--point", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn bytes_and_flops_reproduce_the_anchor_gbps() {
        // flashmla, H100, b=16 h_q=16 s_k=512: 12.1 µs = 826 GB/s.
        let p = Point::new(16, 1, 16, 512);
        let l = p.lengths();
        assert_eq!(bytes_moved(&p, &l), 9_994_240);
        assert!((gbps(bytes_moved(&p, &l), 12.1) - 826.0).abs() < 1.0);
        // b=32 h_q=128 s_k=64K: 972.1 µs = 2494 GB/s.
        let p = Point::new(32, 1, 128, 65536);
        assert!((gbps(bytes_moved(&p, &p.lengths()), 972.1) - 2494.0).abs() < 1.0);
        // MTP b=16 s_q=2 h_q=128 s_k=16K: 217.0 µs = 1433 GB/s.
        let p = Point::new(16, 2, 128, 16384);
        assert!((gbps(bytes_moved(&p, &p.lengths()), 217.0) - 1433.0).abs() < 1.0);
        // Every fixed-length anchor row agrees with our accounting within rounding.
        for card in Anchors::load(None).unwrap().cards.values() {
            for r in card.rows.iter().filter(|r| !r.point.varlen) {
                for t in r.peers.values() {
                    let g = gbps(bytes_moved(&r.point, &r.point.lengths()), t.us);
                    assert!(
                        (g - t.gbps).abs() <= 0.006 * t.gbps + 1.0,
                        "{}: {g} vs {}",
                        r.point.label(),
                        t.gbps
                    );
                }
            }
        }
        let p = Point::new(1, 1, 16, 1000);
        assert_eq!(flops(&p, &[1000]), 2.0 * 16.0 * 1000.0 * 1088.0);
        assert!((tflops(1e12, 1e6) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_built_flashmla_times_cover_the_sweep_in_our_accounting() {
        // bench/flashmla_built_h200.json: FlashMLA built from source and timed by this
        // protocol on the bench's own lengths, so even its varlen rows match our bytes.
        let a = Anchors::parse(
            include_str!("../bench/flashmla_built_h200.json"),
            "bench/flashmla_built_h200.json",
        )
        .unwrap();
        let card = &a.cards["H200"];
        assert_eq!(card.peers, ["flashmla"]);
        let anchors = Anchors::load(None).unwrap();
        let pts = anchor_points();
        assert_eq!(card.rows.len(), pts.len());
        for p in &pts {
            let t = card.row(p).expect("every sweep point").peers["flashmla"];
            let bytes = bytes_moved(p, &p.lengths());
            let g = gbps(bytes, t.us);
            assert!(
                (g - t.gbps).abs() <= 0.001 * t.gbps + 0.1,
                "{}: {g} vs {}",
                p.label(),
                t.gbps
            );
            // Within a fifth of ANCHORS.md's FlashMLA time on the same kind of card.
            let anchor = anchors.cards["H200"].row(p).unwrap().peers["flashmla"];
            let r = peer_time_on(p, bytes, &anchor) / t.us;
            assert!((0.8..1.25).contains(&r), "{}: {r}", p.label());
        }
    }

    #[test]
    fn median_and_result_accounting() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let card = h100();
        let p = Point::new(16, 1, 16, 512);
        // 10 replays of 20 calls: 0.2 ms each except outliers → 10 µs per call.
        let ms = [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.9, 0.2, 0.1, 0.2];
        let r = PointResult::new(p, &p.lengths(), &ms, Some(2990.0), Some(&card));
        assert!((r.us - 10.0).abs() < 1e-9);
        assert!((r.gbps - 999.424).abs() < 1e-6);
        assert!((r.pct_copy.unwrap() - 100.0 * 999.424 / 2990.0).abs() < 1e-9);
        assert_eq!(r.peers_us["flashmla"], 12.1);
        assert_eq!(r.peers_us["etap"], 12.8);
        assert!((r.ratio.unwrap() - 10.0 / 12.1).abs() < 1e-12);
        assert_eq!(r.total_len, 16 * 512);
        // No card: no peers, no ratio.
        let r = PointResult::new(p, &p.lengths(), &ms, None, None);
        assert!(r.ratio.is_none() && r.peers_us.is_empty() && r.pct_copy.is_none());
    }

    /// At a varlen point the peers' lengths were not ours: the ratio compares bandwidths,
    /// while the table still shows the peers' own µs.
    #[test]
    fn varlen_ratios_compare_the_peers_bandwidth_over_our_bytes() {
        let card = h100();
        let p = Point::new(64, 1, 16, 4096).varlen();
        let row = card.row(&p).expect("ANCHORS.md has the varlen row");
        let lengths = p.lengths();
        let bytes = bytes_moved(&p, &lengths);
        let ms = [0.2; 10];
        let r = PointResult::new(p, &lengths, &ms, None, Some(&card));
        let best = row
            .peers
            .values()
            .map(|t| bytes as f64 / (t.gbps * 1e3))
            .fold(f64::INFINITY, f64::min);
        assert!((r.ratio.unwrap() - 10.0 / best).abs() < 1e-12);
        let best_gbps = row.peers.values().map(|t| t.gbps).fold(0.0, f64::max);
        assert!((r.ratio.unwrap() - best_gbps / r.gbps).abs() < 1e-9);
        // Without a bandwidth the peer's time stands.
        let unknown = PeerTime { us: 5.0, gbps: 0.0 };
        assert_eq!(peer_time_on(&p, bytes, &unknown), 5.0);
        assert_eq!(r.peers_us["flashmla"], row.peers["flashmla"].us);
        // Our draw is not the peers': the two ratios differ.
        let by_time = 10.0
            / row
                .peers
                .values()
                .map(|t| t.us)
                .fold(f64::INFINITY, f64::min);
        assert!((r.ratio.unwrap() / by_time - 1.0).abs() > 0.01);
        // Fixed-length points compare times.
        let q = Point::new(16, 1, 16, 4096);
        let r = PointResult::new(q, &q.lengths(), &ms, None, Some(&card));
        assert!((r.ratio.unwrap() - 10.0 / 38.5).abs() < 1e-12);
    }

    #[test]
    fn anchors_parse_and_card_selection() {
        let a = Anchors::load(None).unwrap();
        assert_eq!(a.card_for_gpu("NVIDIA H100 80GB HBM3"), Some("H100"));
        assert_eq!(a.card_for_gpu("NVIDIA H200"), Some("H200"));
        assert_eq!(a.card_for_gpu("NVIDIA h100 pcie"), Some("H100"));
        assert_eq!(a.card_for_gpu("NVIDIA H20"), None);
        assert_eq!(a.card_for_gpu("NVIDIA A100-SXM4-80GB"), None);
        let h100 = &a.cards["H100"];
        assert_eq!(h100.peers, vec!["flashmla", "etap"]);
        assert_eq!(h100.copy_gbps, Some(2990.0));
        let r = h100.row(&Point::new(128, 1, 128, 4096).varlen()).unwrap();
        assert_eq!(
            r.peers["etap"],
            PeerTime {
                us: 773.2,
                gbps: 851.0
            }
        );
        // Fixed and varlen rows are told apart.
        assert!(h100.row(&Point::new(128, 1, 128, 4096)).is_none());
        assert_eq!(a.cards["H200"].peers, vec!["flashmla"]);
        assert_eq!(
            a.cards["H200"]
                .row(&Point::new(1, 1, 16, 65536))
                .unwrap()
                .peers["flashmla"]
                .us,
            52.4
        );
        // A row naming an undeclared peer, and bad JSON, are errors.
        let bad = r#"{"cards":{"X":{"peers":["a"],"rows":[{"b":1,"s_q":1,"h_q":16,"s_k":64,"peers":{"b":{"us":1,"gbps":1}}}]}}}"#;
        assert!(Anchors::parse(bad, "test").is_err());
        assert!(Anchors::parse("{", "test").is_err());
        // Times that are not finite and positive, negative bandwidths, repeated rows.
        let row = |t: &str| format!(r#"{{"b":1,"s_q":1,"h_q":16,"s_k":64,"peers":{{"a":{t}}}}}"#);
        let card = |rows: &[String]| {
            format!(
                r#"{{"cards":{{"X":{{"peers":["a"],"rows":[{}]}}}}}}"#,
                rows.join(",")
            )
        };
        assert!(Anchors::parse(&card(&[row(r#"{"us":1,"gbps":0}"#)]), "test").is_ok());
        for t in [
            r#"{"us":0,"gbps":1}"#,
            r#"{"us":-3,"gbps":5}"#,
            r#"{"us":1,"gbps":-1}"#,
        ] {
            let err = Anchors::parse(&card(&[row(t)]), "test").unwrap_err();
            assert!(err.to_string().contains("finite"), "{t}: {err}");
        }
        let twice = card(&[row(r#"{"us":1,"gbps":1}"#), row(r#"{"us":2,"gbps":1}"#)]);
        let err = Anchors::parse(&twice, "test").unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        assert!(Anchors::load(Some(Path::new("/nonexistent/anchors.json"))).is_err());
        // A longer key wins over a shorter one it contains.
        let two = r#"{"cards":{"H100":{"peers":[],"rows":[]},"H100 PCIe":{"peers":[],"rows":[]}}}"#;
        let t = Anchors::parse(two, "test").unwrap();
        assert_eq!(t.card_for_gpu("NVIDIA H100 PCIe"), Some("H100 PCIe"));
        assert_eq!(t.card_for_gpu("NVIDIA H100 80GB HBM3"), Some("H100"));
    }

    fn sample_results() -> Vec<PointResult> {
        let card = h100();
        let mut v = Vec::new();
        for (i, &hq) in [16usize, 128].iter().enumerate() {
            for (j, &sk) in GRID_S_K.iter().enumerate() {
                let p = Point::new(16, 1, hq, sk);
                let per_call_us = 10.0 + (j * 30 + i * 20) as f64;
                let ms = vec![per_call_us * 20.0 / 1e3; REPLAYS];
                v.push(PointResult::new(
                    p,
                    &p.lengths(),
                    &ms,
                    Some(2990.0),
                    Some(&card),
                ));
            }
        }
        let p = Point::new(64, 1, 16, 4096).varlen();
        v.push(PointResult::new(
            p,
            &p.lengths(),
            &[2.0; REPLAYS],
            Some(2990.0),
            Some(&card),
        ));
        v
    }

    #[test]
    fn table_is_aligned_and_marks_losses() {
        let peers = vec!["flashmla".to_string(), "etap".to_string()];
        let header = table_header(&peers);
        let mut lines = header.lines();
        let names = lines.next().unwrap();
        let rule = lines.next().unwrap();
        assert_eq!(names.chars().count(), rule.chars().count());
        let rs = sample_results();
        for r in &rs {
            let row = table_row(r, &peers);
            let core = row.trim_end_matches(" *");
            assert_eq!(core.chars().count(), names.chars().count(), "{row}");
            assert_eq!(row.ends_with(" *"), r.ratio.unwrap() > 1.0);
            // The column separators line up with the header's.
            let bars = |s: &str| {
                s.char_indices()
                    .filter(|c| c.1 == '|')
                    .map(|c| s[..c.0].chars().count())
                    .collect::<Vec<_>>()
            };
            assert_eq!(bars(core), bars(names));
        }
        let first = table_row(&rs[0], &peers);
        assert!(first.contains("12.1") && first.contains("12.8") && first.contains("0.83"));
        assert!(table_row(&rs[16], &peers).contains("4096v"));
        // Without peers: no peer columns, ratio "-".
        let r = PointResult::new(rs[0].point, &rs[0].point.lengths(), &[0.2], None, None);
        assert!(table_row(&r, &[]).ends_with("-"));
        let s = summary(&rs);
        assert!(s.contains("of 17 points"), "{s}");
        assert!(s.contains("worst ratio"));
        assert!(!s.contains("slowed"), "{s}");
        // The varlen rows' ratios are by bandwidth, and the summary says so.
        assert!(
            s.contains("varlen rows: the ratio compares bandwidths"),
            "{s}"
        );
        assert!(!summary(&rs[..1]).contains("varlen"));
        assert!(summary(&[r]).contains("no peer numbers"));
    }

    #[test]
    fn points_that_slow_during_their_replays_are_marked() {
        let peers = vec!["flashmla".to_string(), "etap".to_string()];
        let p = Point::new(32, 1, 128, 32768);
        let card = h100();
        // An H200 run: 471 µs a call first, then the power cap: 536 from the sixth replay on.
        let capped: Vec<f64> = [
            471.0, 487.0, 497.0, 511.0, 524.0, 536.0, 536.0, 536.0, 536.0, 536.0,
        ]
        .iter()
        .map(|us| us * CALLS_PER_GRAPH as f64 / 1e3)
        .collect();
        let r = PointResult::new(p, &p.lengths(), &capped, None, Some(&card));
        assert!((r.first_us().unwrap() - 471.0).abs() < 1e-9);
        assert!((r.last_us().unwrap() - 536.0).abs() < 1e-9);
        assert!(r.slowed_in_replays());
        let row = table_row(&r, &peers);
        assert!(row.contains("530.0^"), "{row}");
        let names = table_header(&peers);
        let names = names.lines().next().unwrap();
        assert_eq!(
            row.trim_end_matches(" *").chars().count(),
            names.chars().count()
        );
        // Within the mark: no marker, and the summary says nothing of it.
        let steady: Vec<f64> = [capped[0]]
            .into_iter()
            .chain([capped[0] * 1.04; 9])
            .collect();
        let q = PointResult::new(p, &p.lengths(), &steady, None, Some(&card));
        assert!(!q.slowed_in_replays() && !table_row(&q, &peers).contains('^'));
        let s = summary(&[r.clone(), q]);
        assert!(s.contains("\n1 point(s) slowed by 5 % or more"), "{s}");
        // No replays, one, or a zero first one: never marked.
        for ms in [&[][..], &[0.2][..], &[0.0, 0.2][..]] {
            let e = PointResult::new(p, &p.lengths(), ms, None, None);
            assert!(!e.slowed_in_replays(), "{ms:?}");
        }
        assert_eq!(
            PointResult::new(p, &p.lengths(), &[], None, None).first_us(),
            None
        );
        // Without peers the summary still counts them.
        let no_peers = PointResult::new(p, &p.lengths(), &capped, None, None);
        assert!(summary(&[no_peers]).contains("no peer numbers to compare with\n1 point(s) slowed"));
        // The CSV carries both replays.
        let csv = to_csv(&fake_report(vec![r], peers));
        let row = csv.lines().nth(1).unwrap();
        assert!(row.ends_with(",471.0000,536.0000,,,,,"), "{row}");
    }

    #[test]
    fn csv_has_a_row_per_point_with_the_run_metadata() {
        let rep = fake_report(sample_results(), vec!["flashmla".into(), "etap".into()]);
        let csv = to_csv(&rep);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + rep.points.len());
        let cols = lines[0].split(',').count();
        assert!(lines[0].contains(",flashmla_us,etap_us,ratio,"));
        assert!(lines[0].ends_with(
            ",ratio,nvml_samples,sm_mhz,sm_mhz_min,power_w,power_cap_frac,slowdown_frac,energy_uj,temp_c,first_us,last_us,clock_mhz,clock_mhz_first,clock_mhz_last,kcycles,card_serial"
        ));
        for l in &lines[1..] {
            assert_eq!(l.split(',').count(), cols, "{l}");
            assert!(l.starts_with("NVIDIA H100 80GB HBM3,13.0,abc1234,2026-11-28T01:16:33Z,"));
        }
        assert!(lines[1].contains(",16,1,16,512,false,false,8192,"));
        // The card's serial ends every row where NVML gave one.
        let serial = Report {
            card_serial: Some("1654524154609".into()),
            ..rep
        };
        for l in to_csv(&serial).lines().skip(1) {
            assert!(l.ends_with(",1654524154609"), "{l}");
        }
        let text = to_json(&serial).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back.card_serial.as_deref(), Some("1654524154609"));
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
    }

    #[test]
    fn json_round_trips() {
        let rep = fake_report(sample_results(), vec!["flashmla".into(), "etap".into()]);
        let text = to_json(&rep).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back.points, rep.points);
        assert_eq!(back.git_commit, "abc1234");
        assert_eq!(back.card_serial, None);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["device"], "NVIDIA H100 80GB HBM3");
        assert_eq!(v["driver_version"], "13.0");
        assert_eq!(v["points"][0]["b"], 16);
        assert_eq!(v["points"][0]["s_k"], 512);
        assert_eq!(v["points"][0]["peers_us"]["flashmla"], 12.1);
        assert!(v["timestamp"].is_string());
    }

    #[test]
    fn svg_has_our_lines_and_the_peers_dashed() {
        let card = h100();
        let rep = fake_report(sample_results(), card.peers.clone());
        let svg = svg_plot(&rep, Some(&card), 16);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // ours: h_q 16 and 128 solid; peers: 4 head counts × 2 peers dashed.
        let solid = svg
            .lines()
            .filter(|l| l.starts_with("<polyline") && !l.contains("dasharray"))
            .count();
        let dashed = svg
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.contains("dasharray"))
            .count();
        assert_eq!(solid, 2);
        assert_eq!(dashed, 8);
        // Each of our polylines has 8 points, x from 512 to 64K.
        let ours = svg
            .lines()
            .find(|l| l.starts_with("<polyline") && !l.contains("dasharray"))
            .unwrap();
        let pts = ours.split('"').nth(1).unwrap();
        assert_eq!(pts.split(' ').count(), 8);
        let xs: Vec<f64> = pts
            .split(' ')
            .map(|p| p.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert!((xs[0] - 80.0).abs() < 0.1 && (xs[7] - (960.0 - 220.0)).abs() < 0.1);
        assert!(xs
            .windows(2)
            .all(|w| (w[1] - w[0] - xs[1] + xs[0]).abs() < 0.2));
        assert!(svg.contains("64K") && svg.contains("copy 2990 GB/s"));
        assert!(svg.contains("h_q = 64"));
        // No card: only our lines; a batch without points says so.
        let svg = svg_plot(&rep, None, 16);
        assert!(!svg.contains("dasharray=\"7,4\""));
        let svg = svg_plot(&rep, Some(&card), 32);
        assert!(svg.contains("no measured points at b=32"));
        // Absurd figures widen the gridlines' step instead of drawing lines for ever.
        let huge = Report {
            copy_gbps: Some(1e18),
            ..fake_report(sample_results(), card.peers.clone())
        };
        let lines = svg_plot(&huge, None, 16)
            .lines()
            .filter(|l| l.starts_with("<line"))
            .count();
        assert!(lines < 2 * MAX_GRIDLINES as usize + 10, "{lines} lines");
        // Figures whose 5 % headroom overflows f64 are capped, not drawn for ever.
        let mut results = sample_results();
        for r in &mut results {
            r.gbps = f64::MAX;
        }
        let overflowing = Report {
            copy_gbps: Some(f64::MAX),
            ..fake_report(results, card.peers.clone())
        };
        let lines = svg_plot(&overflowing, Some(&card), 16)
            .lines()
            .filter(|l| l.starts_with("<line"))
            .count();
        assert!(lines < 2 * MAX_GRIDLINES as usize + 10, "{lines} lines");
        assert_eq!(xml_escape("a<b&\"c\">"), "a&lt;b&amp;&quot;c&quot;&gt;");
    }

    #[test]
    fn block_table_is_a_permutation_of_exactly_the_needed_pages() {
        let mut rng = SplitMix64(7);
        let lengths = [1, 64, 65, 200, 0];
        let (n, t) = block_table(&lengths, &mut rng).unwrap();
        assert_eq!(n, 1 + 1 + 2 + 4);
        assert_eq!(block_table_width(&lengths), 4);
        assert_eq!(t.len(), 5 * 4);
        let mut used: Vec<i32> = vec![t[0], t[4], t[8], t[9], t[12], t[13], t[14], t[15]];
        used.sort_unstable();
        assert_eq!(used, (0..8).collect::<Vec<_>>());
        let perm = permutation(1000, &mut rng).unwrap();
        assert_ne!(perm, (0..1000).collect::<Vec<_>>());
        let mut s = perm.clone();
        s.sort_unstable();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        // Page ids are i32: one page more than they can name is an error, not a wrap.
        assert!(permutation((1 << 31) + 1, &mut rng).is_err());
    }

    #[test]
    fn block_table_past_the_entry_limit_is_an_error_not_an_abort() {
        // One request at the longest length and 65,534 empty ones: 2^41 entries of padding.
        let mut lengths = vec![0; 65_535];
        lengths[0] = i32::MAX;
        let err = block_table(&lengths, &mut SplitMix64(1)).unwrap_err();
        assert!(err.to_string().contains("below 2^32"), "{err}");
    }

    #[test]
    fn pool_values_are_normal_and_clamped() {
        let v = random_pool(100_000, 3);
        let f: Vec<f64> = v.iter().map(|x| x.to_f64()).collect();
        let mean = f.iter().sum::<f64>() / f.len() as f64;
        let var = f.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f.len() as f64;
        assert!(mean.abs() < 0.002, "{mean}");
        assert!((var.sqrt() - 0.1).abs() < 0.002, "{}", var.sqrt());
        assert!(f.iter().all(|x| x.abs() <= 1.0));
        assert_eq!(random_pool(10, 3), random_pool(10, 3));
    }

    #[test]
    fn time_and_version_strings() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_798_421_793), "2026-12-28T01:36:33Z");
        assert_eq!(driver_string(13000), "13.0");
        assert_eq!(driver_string(12080), "12.8");
        assert!(!BUILD_COMMIT.is_empty());
        assert!(!git_commit().is_empty());
    }
}
