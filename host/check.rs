//! Correctness checking of the GPU decode against the float64 reference: one [`Case`]
//! builds deterministic inputs (random page order, NaN in every cache row that must not be
//! read, `i32::MAX` past each request's pages), runs the decode twice and compares.
use crate::decode::{
    DecodeConfig, DecodePlan, Decoder, KvCache, KvElement, OutElement, Precision, MAX_PAGES,
};
use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::reference::{
    generate, reference_decode, rmse, rounding_floor_rmse, Dtype, Inputs, MlaShape, Reference,
};
use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use std::sync::Arc;

/// One correctness case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Element type of q, the cache and (unless `out_f32`) out.
    pub dtype: Dtype,
    /// Query tokens per request.
    pub s_q: usize,
    /// Query heads.
    pub h_q: usize,
    /// KV heads (`h_q` must be a multiple).
    pub h_kv: usize,
    /// cache_seqlens; the batch is its length.
    pub lengths: Vec<i32>,
    /// Causal masking of the `s_q` queries.
    pub causal: bool,
    /// Output in f32 instead of the input dtype.
    pub out_f32: bool,
    /// Seed of the generated inputs and page order.
    pub seed: u64,
    /// How P is rounded (the decode's default unless set).
    pub precision: Precision,
    /// Plan as for a GPU of this many SMs instead of the one it runs on (a smaller grid),
    /// so that a few thousand tokens get the plans of long contexts: many pages a
    /// partition, pieces charged `plan::fixed_overhead_pages`.
    pub sm_count: Option<u32>,
    /// Factor on the softmax scale (1/√576): 1 for inputs as ANCHORS.md draws them, whose
    /// scores stay within a unit of each other, so that a row's running max moves only at a
    /// piece's first tile; 1000 or more spreads them over tens of units, so that it keeps
    /// moving as the tiles come (`moving_maxima`; at 300 it moved in few of its cases).
    pub score_gain: f64,
}

/// What a case measured.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// RMSE of the output against the float64 reference.
    pub rmse: f64,
    /// RMSE of the float64 reference rounded to the input dtype: the rounding floor.
    pub floor: f64,
    /// The output was f32 (no output rounding).
    pub out_f32: bool,
    /// Largest |lse − reference| / max(1, |reference|) over finite entries.
    pub lse_rel_err: f64,
    /// Output or lse entries that are NaN, or whose infinity disagrees with the reference.
    pub bad_values: usize,
    /// The two runs gave bitwise identical out and lse.
    pub deterministic: bool,
    /// The decode rounded P once (`DecodePlan::rounds_p_once`) rather than splitting it;
    /// this sets the bound.
    pub p_rounded_once: bool,
    /// Output values compared (the RMSEs are over these).
    pub values: usize,
}

/// Where P is rounded once to 16 bits ([`Precision::Fast`], except where its plan splits P:
/// `DecodePlan::rounds_p_once`), RMSE may exceed the rounding floor by this factor.
pub const RMSE_FACTOR: f64 = 1.3;
/// Where P is rounded once and the output is f32, the RMSE must stay below this fraction of
/// the input dtype's rounding floor: the output is then more accurate than any 16-bit one.
pub const RMSE_FACTOR_F32_OUT: f64 = 1.0;
/// Where P is split into two 16-bit terms, RMSE may exceed the rounding floor by this
/// factor: the output rounding is the only error left that matters.
pub const RMSE_FACTOR_ACCURATE: f64 = 1.02;
/// Where P is split and the output is f32, RMSE over the input dtype's rounding floor.
pub const RMSE_FACTOR_ACCURATE_F32_OUT: f64 = 0.01;
/// Bound on the relative lse error.
pub const LSE_TOLERANCE: f64 = 1e-5;
/// Fewest output values a single-rounding RMSE ratio is judged over ([`Case::run_pooled`]).
/// Over fewer, one draw's ratio is as much sampling noise as error: a Fast case of 512
/// values (fp16, h_q 1, 63 tokens) read 1.322 where large cases read 1.22–1.28.
pub const MIN_POOLED_VALUES: usize = 8192;

impl CaseResult {
    /// The case's verdict under the project's bounds.
    pub fn passes(&self) -> bool {
        self.rmse <= self.bound() * self.floor
            && self.lse_rel_err <= LSE_TOLERANCE
            && self.bad_values == 0
            && self.deterministic
    }

    /// The bound on RMSE / rounding floor for how P was rounded and the output type.
    pub fn bound(&self) -> f64 {
        match (self.p_rounded_once, self.out_f32) {
            (true, false) => RMSE_FACTOR,
            (true, true) => RMSE_FACTOR_F32_OUT,
            (false, false) => RMSE_FACTOR_ACCURATE,
            (false, true) => RMSE_FACTOR_ACCURATE_F32_OUT,
        }
    }

    /// This result pooled with `other`, the same shape on other inputs: RMSE and floor
    /// over both outputs' values (weighing the two equally where neither has any, so that
    /// the result stays finite), the larger lse error, the bad values of both, and
    /// deterministic only if both were.
    pub fn pooled(&self, other: &CaseResult) -> CaseResult {
        let values = self.values.saturating_add(other.values);
        let (wa, wb) = if values == 0 {
            (1.0, 1.0)
        } else {
            (self.values as f64, other.values as f64)
        };
        let mean = |a: f64, b: f64| ((a * a * wa + b * b * wb) / (wa + wb)).sqrt();
        CaseResult {
            rmse: mean(self.rmse, other.rmse),
            floor: mean(self.floor, other.floor),
            out_f32: self.out_f32,
            lse_rel_err: self.lse_rel_err.max(other.lse_rel_err),
            bad_values: self.bad_values + other.bad_values,
            deterministic: self.deterministic && other.deterministic,
            p_rounded_once: self.p_rounded_once,
            values,
        }
    }

    /// RMSE over the rounding floor (0 where the floor is 0).
    pub fn ratio(&self) -> f64 {
        if self.floor > 0.0 {
            self.rmse / self.floor
        } else {
            0.0
        }
    }

    /// The measurements on one line: `rmse … floor … ratio … lse_err … bad … deterministic …`.
    pub fn summary(&self) -> String {
        format!(
            "rmse {:.3e} floor {:.3e} ratio {:.3} lse_err {:.1e} bad {} deterministic {}",
            self.rmse,
            self.floor,
            self.ratio(),
            self.lse_rel_err,
            self.bad_values,
            self.deterministic
        )
    }

    /// Compares a GPU result with the float64 `reference`: `out` widened to f64, `lse` as
    /// the kernel wrote it, `dtype` the input type (its rounding floor is the bound), `out_f32`
    /// whether the output was f32, `deterministic` whether repeated runs agreed bitwise.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `out` or `lse` where its length differs from the
    /// reference's: comparing part of a result would pass values never checked.
    pub fn measure(
        out: &[f64],
        lse: &[f32],
        reference: &Reference,
        dtype: Dtype,
        out_f32: bool,
        deterministic: bool,
        p_rounded_once: bool,
    ) -> Result<CaseResult> {
        for (arg, have, want) in [
            ("out", out.len(), reference.out.len()),
            ("lse", lse.len(), reference.lse.len()),
        ] {
            if have != want {
                return Err(Error::invalid(
                    arg,
                    format!("has {have} entries; the reference has {want}"),
                ));
            }
        }
        let mut bad = out.iter().filter(|x| !x.is_finite()).count();
        let mut lse_rel_err = 0.0f64;
        for (&g, &r) in lse.iter().zip(&reference.lse) {
            let g = g as f64;
            if r.is_infinite() || g.is_infinite() || g.is_nan() {
                if g != r {
                    bad += 1;
                }
            } else {
                lse_rel_err = lse_rel_err.max((g - r).abs() / r.abs().max(1.0));
            }
        }
        Ok(CaseResult {
            rmse: rmse(out, &reference.out)?,
            floor: rounding_floor_rmse(&reference.out, dtype),
            out_f32,
            lse_rel_err,
            bad_values: bad,
            deterministic,
            p_rounded_once,
            values: out.len(),
        })
    }
}

impl std::fmt::Display for CaseResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

/// The float64 reference of `inputs` (generated for `shape`) with softmax scale `scale`.
pub fn reference_for(
    shape: &MlaShape,
    inputs: &Inputs,
    scale: f64,
    causal: bool,
) -> Result<Reference> {
    reference_decode(
        shape,
        &inputs.q,
        &inputs.kv_cache,
        &inputs.block_table,
        &inputs.seqlens,
        scale,
        causal,
    )
}

/// Generated inputs on the device: q and the cache in the element type `T`.
pub struct DeviceInputs<T: DeviceRepr> {
    /// `[batch, s_q, h_q, 576]`
    pub q: CudaSlice<T>,
    /// `[num_blocks, 64, h_kv, 576]`
    pub kv_cache: CudaSlice<T>,
    /// `[batch, max_pages]`
    pub block_table: CudaSlice<i32>,
    /// `[batch]`
    pub seqlens: CudaSlice<i32>,
}

/// Copies `inputs` to the device on `stream`, q and the cache converted to `T`.
pub fn upload_inputs<T: FromF32 + DeviceRepr>(
    stream: &Arc<CudaStream>,
    inputs: &Inputs,
) -> Result<DeviceInputs<T>> {
    let drv = |what: &'static str| move |e| Error::driver(format!("uploading {what}"), e);
    Ok(DeviceInputs {
        q: stream
            .clone_htod(&to_elems::<T>(&inputs.q))
            .map_err(drv("q"))?,
        kv_cache: stream
            .clone_htod(&to_elems::<T>(&inputs.kv_cache))
            .map_err(drv("the KV cache"))?,
        block_table: stream
            .clone_htod(&inputs.block_table)
            .map_err(drv("the block table"))?,
        seqlens: stream
            .clone_htod(&inputs.seqlens)
            .map_err(drv("cache_seqlens"))?,
    })
}

/// The `main` of a program that needs the GPU (the examples): runs `run` on GPU 0; where
/// there is no usable GPU prints `skipped: no GPU: <why>` and succeeds; any error is
/// printed as `error: …` and fails.
pub fn main_on_gpu(run: impl FnOnce(&Gpu) -> Result<()>) -> std::process::ExitCode {
    let result = match Gpu::open(0) {
        Ok(gpu) => run(&gpu),
        Err(e) if e.is_no_gpu() => {
            println!("skipped: no GPU: {e}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

impl Case {
    /// A case with one KV head, output in the input dtype and seed 0 (set the public
    /// fields for others: `Case { seed: 7, ..Case::new(…) }`).
    pub fn new(dtype: Dtype, s_q: usize, h_q: usize, lengths: Vec<i32>, causal: bool) -> Case {
        Case {
            dtype,
            s_q,
            h_q,
            h_kv: 1,
            lengths,
            causal,
            out_f32: false,
            seed: 0,
            precision: Precision::default(),
            sm_count: None,
            score_gain: 1.0,
        }
    }
    /// Requests in the case.
    pub fn batch(&self) -> usize {
        self.lengths.len()
    }
    /// A one-line description.
    pub fn describe(&self) -> String {
        let (min, max) = (
            self.lengths.iter().min().unwrap_or(&0),
            self.lengths.iter().max().unwrap_or(&0),
        );
        format!(
            "{} b={} s_q={} h_q={} h_kv={} len={}{} causal={} out={} P={:?}{}{}",
            self.dtype.name(),
            self.batch(),
            self.s_q,
            self.h_q,
            self.h_kv,
            if min == max {
                format!("{min}")
            } else {
                format!("{min}..{max}")
            },
            if min == max { "" } else { " (varlen)" },
            self.causal,
            if self.out_f32 { "f32" } else { "input" },
            self.precision,
            match self.sm_count {
                Some(n) => format!(" planned for {n} SMs"),
                None => String::new(),
            },
            if self.score_gain == 1.0 {
                String::new()
            } else {
                format!(" scores ×{}", self.score_gain)
            }
        )
    }

    /// Checks the case as the decode and the reference will: lengths not negative, the
    /// decode configuration ([`DecodeConfig::validate`], with the case's softmax scale),
    /// and inputs whose sizes and page count the reference and the cache can hold.
    /// [`Case::run`] and [`late_max_moves`] call it first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`]: for `lengths` where one is negative (its index is named)
    /// or the requests need more pages than a cache takes; `score_gain` where it is not
    /// finite and positive; and what [`DecodeConfig::validate`] and [`MlaShape::check`]
    /// report (`batch`, `s_q`, `h_q`, `h_kv`, `max_pages`, `shape`).
    pub fn validate(&self) -> Result<()> {
        if let Some(b) = self.lengths.iter().position(|&l| l < 0) {
            return Err(Error::invalid(
                "lengths",
                format!("lengths[{b}] = {} is negative", self.lengths[b]),
            ));
        }
        if !(self.score_gain.is_finite() && self.score_gain > 0.0) {
            return Err(Error::invalid(
                "score_gain",
                format!("{} must be finite and positive", self.score_gain),
            ));
        }
        let shape = self.shape();
        self.config(&shape)
            .softmax_scale(self.softmax_scale() as f32)
            .validate()?;
        shape.check()?;
        if shape.num_blocks > MAX_PAGES {
            return Err(Error::invalid(
                "lengths",
                format!(
                    "the requests need {} pages with the 2 spare ones; a cache holds at most \
                     {MAX_PAGES}",
                    shape.num_blocks
                ),
            ));
        }
        Ok(())
    }

    /// The shape of the case's inputs: 64-token pages, the block table as wide as its
    /// longest request.
    pub fn shape(&self) -> MlaShape {
        MlaShape::for_lengths(self.s_q, self.h_q, self.h_kv, 64, &self.lengths)
    }

    /// The decode configuration of the case over inputs of `shape` (default softmax scale).
    pub fn config(&self, shape: &MlaShape) -> DecodeConfig {
        DecodeConfig::new(self.batch(), self.h_q, shape.max_pages)
            .s_q(self.s_q)
            .h_kv(self.h_kv)
            .causal(self.causal)
            .precision(self.precision)
    }

    /// The softmax scale of the case: 1/√576 times `score_gain`.
    pub fn softmax_scale(&self) -> f64 {
        (crate::reference::D_QK as f64).powf(-0.5) * self.score_gain
    }

    /// Runs the case on `decoder`'s GPU.
    pub fn run(&self, decoder: &Decoder) -> Result<CaseResult> {
        match (self.dtype, self.out_f32) {
            (Dtype::Bf16, false) => self.run_typed::<half::bf16, half::bf16>(decoder),
            (Dtype::Bf16, true) => self.run_typed::<half::bf16, f32>(decoder),
            (Dtype::F16, false) => self.run_typed::<half::f16, half::f16>(decoder),
            (Dtype::F16, true) => self.run_typed::<half::f16, f32>(decoder),
        }
    }

    /// Runs the case; where P was rounded once and the output has fewer than
    /// [`MIN_POOLED_VALUES`] values, also the same shape on fresh inputs (the seeds after
    /// `seed`) until that many, and returns the pooled result: the bound then applies to
    /// an RMSE over enough values to measure the rounding rather than the draw. Every draw
    /// counts its bad values, lse error and determinism.
    pub fn run_pooled(&self, decoder: &Decoder) -> Result<CaseResult> {
        let mut result = self.run(decoder)?;
        let mut draw = self.clone();
        while result.p_rounded_once && result.values < MIN_POOLED_VALUES {
            draw.seed = draw.seed.wrapping_add(1);
            result = result.pooled(&draw.run(decoder)?);
        }
        Ok(result)
    }

    fn run_typed<
        T: KvElement + FromF32,
        O: OutElement<T> + ToF64 + cudarc::driver::ValidAsZeroBits,
    >(
        &self,
        decoder: &Decoder,
    ) -> Result<CaseResult> {
        self.validate()?;
        let shape = self.shape();
        let inputs = generate(&shape, &self.lengths, self.dtype, self.seed)?;
        let scale = self.softmax_scale();
        let reference = reference_for(&shape, &inputs, scale, self.causal)?;

        let gpu = decoder.gpu();
        let s = &gpu.stream;
        let drv = |e| Error::driver("check: device buffers", e);
        let dev = upload_inputs::<T>(s, &inputs)?;
        let cache = KvCache::new(gpu, &dev.kv_cache, shape.num_blocks, self.h_kv)?;
        let config = self.config(&shape).softmax_scale(scale as f32);
        // `DecodePlan::new` plans for its Gpu's SM count; the decode runs on the decoder's.
        let plan_gpu = Gpu {
            sm_count: self.sm_count.unwrap_or(gpu.sm_count),
            ..gpu.clone()
        };
        let mut plan = DecodePlan::new(&plan_gpu, config, &self.lengths)?;
        let mut runs = Vec::new();
        for _ in 0..2 {
            let mut out: CudaSlice<O> = s.alloc_zeros(shape.out_len()).map_err(drv)?;
            let mut lse: CudaSlice<f32> = s.alloc_zeros(shape.lse_len()).map_err(drv)?;
            decoder.decode(
                s,
                &mut plan,
                &dev.q,
                &cache,
                &dev.block_table,
                &dev.seqlens,
                &mut out,
                &mut lse,
            )?;
            let out_h: Vec<O> = s.clone_dtoh(&out).map_err(drv)?;
            let lse_h: Vec<f32> = s.clone_dtoh(&lse).map_err(drv)?;
            runs.push((out_h, lse_h));
        }
        let (out, lse) = &runs[0];
        let out: Vec<f64> = out.iter().map(|x| x.to_f64()).collect();
        let deterministic = runs[0]
            .1
            .iter()
            .zip(&runs[1].1)
            .all(|(a, b)| a.to_bits() == b.to_bits())
            && runs[0]
                .0
                .iter()
                .zip(&runs[1].0)
                .all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits());
        CaseResult::measure(
            &out,
            lse,
            &reference,
            self.dtype,
            O::F32,
            deterministic,
            plan.rounds_p_once(),
        )
    }
}

/// f32 → a 16-bit element (the values are exact in it; NaN stays NaN).
pub trait FromF32: Sized {
    /// Converts `x` (exact in the target type, or NaN).
    fn from_f32(x: f32) -> Self;
}
impl FromF32 for half::bf16 {
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
}
impl FromF32 for half::f16 {
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
}

/// An output element widened to f64.
pub trait ToF64 {
    /// The value as f64 (exact).
    fn to_f64(&self) -> f64;
}
impl ToF64 for half::bf16 {
    fn to_f64(&self) -> f64 {
        half::bf16::to_f64(*self)
    }
}
impl ToF64 for half::f16 {
    fn to_f64(&self) -> f64 {
        half::f16::to_f64(*self)
    }
}
impl ToF64 for f32 {
    fn to_f64(&self) -> f64 {
        *self as f64
    }
}

fn to_elems<T: FromF32>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&x| T::from_f32(x)).collect()
}

/// Lengths the correctness grid draws from: empty, single token, page boundaries ±1,
/// multi-page and long contexts.
pub const GRID_LENGTHS: [i32; 9] = [0, 1, 20, 63, 64, 65, 140, 4096, 16384];
/// Batch sizes of the grid.
pub const GRID_BATCHES: [usize; 4] = [1, 2, 6, 64];
/// Head counts of the grid (odd counts included).
pub const GRID_HEADS: [usize; 8] = [1, 3, 16, 32, 63, 64, 126, 128];

/// A few quick cases for the GPU smoke test and the sanitizer runs over it
/// (`tests/gpu_decode.rs`, `scripts/sanitize.sh`): short and empty requests, one long
/// request whose combine merges each row in dim slices, shares long enough for the
/// 64-row seesaw kernels in each of their schedules (split P; `Fast` in the P_a-first
/// order; `Fast` in FlashMLA's, planned for 8 SMs), and one page a partition, the
/// shortest share the seesaw kernels take, with and without a split P (`Accurate` and
/// `Fast`, `plan::NARROW_TILE_MAX_SHARE`).
pub fn smoke() -> Vec<Case> {
    let case = |dtype, s_q, h_q, lengths: Vec<i32>, causal| Case {
        seed: 7,
        ..Case::new(dtype, s_q, h_q, lengths, causal)
    };
    vec![
        case(Dtype::Bf16, 1, 16, vec![64], false),
        case(Dtype::Bf16, 1, 16, vec![1], false),
        case(Dtype::Bf16, 1, 16, vec![100, 0, 300], false),
        case(Dtype::Bf16, 1, 16, vec![4096; 2], false),
        case(Dtype::Bf16, 1, 16, vec![20000], false),
        case(Dtype::F16, 1, 16, vec![9000], false),
        case(Dtype::Bf16, 1, 64, vec![1000; 3], false),
        case(Dtype::Bf16, 1, 128, vec![1000; 3], false),
        case(Dtype::F16, 2, 16, vec![200; 2], true),
        case(Dtype::Bf16, 1, 3, vec![140; 2], false),
        case(Dtype::Bf16, 1, 128, vec![30000, 8000, 650], false),
        case(Dtype::Bf16, 1, 128, vec![2000; 4], false),
        Case {
            precision: Precision::Fast,
            ..case(Dtype::Bf16, 2, 64, vec![20000, 3001], true)
        },
        Case {
            precision: Precision::Fast,
            sm_count: Some(8),
            ..case(Dtype::Bf16, 1, 128, vec![20000, 9000, 650], false)
        },
        Case {
            precision: Precision::Fast,
            ..case(Dtype::F16, 1, 64, vec![1000; 2], false)
        },
    ]
}

/// Cases whose rows' running max keeps moving after a piece's first tiles (scores spread
/// by `Case::score_gain`), for every kernel: the 16- and 32-row transposed tiles and the
/// 64-row seesaw in each schedule (split P; `Fast` in the P_a-first order; `Fast` in
/// FlashMLA's, planned for 8 SMs), bf16 and fp16, causal `s_q` = 2, long shares and short.
/// With inputs drawn as ANCHORS.md draws them no score passes a row's running max by
/// `SOFTMAX_SLACK` after the first tile (`late_max_moves`), so O's rescale of what it
/// accumulated, and the factors the seesaw's warpgroups pass each other, run only in
/// corners: a build that never rescaled O failed 1 of the 14 smoke cases, 20 of the 230
/// grid cases and 1 of ANCHORS.md's 3 accuracy cases, by RMSE/floor ratios of 1.02-8.7,
/// and all 24 of these, by 420-450,000 (H200, forty-fifth session).
pub fn moving_maxima() -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, gain) in [1000.0, 4000.0].into_iter().enumerate() {
        for (j, precision) in [Precision::Accurate, Precision::Fast]
            .into_iter()
            .enumerate()
        {
            let case = |dtype, s_q, h_q, lengths: Vec<i32>, causal, sm_count| Case {
                precision,
                sm_count,
                score_gain: gain,
                seed: 6000 + 100 * i as u64 + 10 * j as u64 + h_q as u64,
                ..Case::new(dtype, s_q, h_q, lengths, causal)
            };
            cases.extend([
                case(Dtype::Bf16, 1, 16, vec![9000, 4100, 700], false, None),
                case(Dtype::F16, 2, 32, vec![6000, 2500], true, None),
                case(Dtype::Bf16, 1, 64, vec![5000, 3000, 1000], false, None),
                case(Dtype::Bf16, 1, 128, vec![2000; 3], false, None),
                case(Dtype::F16, 1, 128, vec![20000, 9000, 650], false, Some(8)),
                case(Dtype::Bf16, 2, 64, vec![16000, 3001], true, Some(8)),
            ]);
        }
    }
    cases
}

/// How many times a 64-token tile after a request's first raises the running max (base 2)
/// of the request's first query row by more than `slack`, over the case's requests and
/// the first and last query heads, as the float64 scores say: moves the kernels see too
/// (a piece of the plan starts a max of its own, so they may see more). `moving_maxima`'s
/// cases must have some; the inputs ANCHORS.md describes have none.
///
/// # Errors
/// What [`Case::validate`] reports for `case` (e.g. `h_q` where it is not a positive
/// multiple of `h_kv`, `s_q` where it is 0, `lengths` where one is negative).
pub fn late_max_moves(case: &Case, slack: f64) -> Result<usize> {
    case.validate()?;
    let shape = case.shape();
    let inputs = generate(&shape, &case.lengths, case.dtype, case.seed)?;
    let d = crate::reference::D_QK;
    let scale = case.softmax_scale() * std::f64::consts::LOG2_E;
    let group = case.h_q / case.h_kv;
    let row_stride = shape.key_row_stride();
    let mut moves = 0;
    for (b, &len) in case.lengths.iter().enumerate() {
        let visible = shape.visible(len as usize, 0, case.causal);
        for head in [0, case.h_q - 1] {
            let kv_head = head / group;
            let q = &inputs.q[(b * case.s_q * case.h_q + head) * d..][..d];
            let mut m = f64::NEG_INFINITY;
            for start in (0..visible).step_by(shape.page_size) {
                // The tile is one page: one block-table lookup, then consecutive rows.
                let first = shape
                    .key_offset(&inputs.block_table, b, start, kv_head)
                    .ok_or_else(|| {
                        Error::Other(format!(
                            "late_max_moves: request {b} has no cache page for token {start}"
                        ))
                    })?;
                let tile_max = (0..(visible - start).min(shape.page_size))
                    .map(|r| {
                        let k = &inputs.kv_cache[first + r * row_stride..][..d];
                        q.iter()
                            .zip(k)
                            .map(|(x, y)| *x as f64 * *y as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .fold(f64::NEG_INFINITY, f64::max);
                if tile_max > m + slack {
                    moves += (start > 0) as usize;
                    m = tile_max;
                }
            }
        }
    }
    Ok(moves)
}

/// The correctness grid: every (dtype, h_q, s_q, causal) combination, each with one
/// fixed-length and one varlen case whose batch and lengths rotate through
/// [`GRID_BATCHES`] and [`GRID_LENGTHS`] (long lengths with small batches, to bound the
/// float64 reference's cost), plus batch 1024, a 131072-token context, h_kv = 2, f32
/// output and [`Precision::Fast`].
pub fn grid() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut rng = crate::reference::SplitMix64(2026);
    let mut k = 0usize;
    for dtype in [Dtype::Bf16, Dtype::F16] {
        for h_q in GRID_HEADS {
            for s_q in [1, 2, 4] {
                for causal in [false, true] {
                    let len = GRID_LENGTHS[k % GRID_LENGTHS.len()];
                    let max_batch = if len >= 16384 {
                        2
                    } else if len >= 4096 {
                        6
                    } else {
                        64
                    };
                    let batch = GRID_BATCHES[(k / 3) % GRID_BATCHES.len()].min(max_batch);
                    let seed = k as u64;
                    cases.push(Case {
                        seed,
                        ..Case::new(dtype, s_q, h_q, vec![len; batch], causal)
                    });
                    let batch = [6, 64][k % 2];
                    let lengths = (0..batch)
                        .map(|_| {
                            let l = GRID_LENGTHS[rng.below(7) as usize];
                            if batch == 6 && rng.below(3) == 0 {
                                GRID_LENGTHS[7 + rng.below(2) as usize]
                            } else {
                                l
                            }
                        })
                        .collect();
                    cases.push(Case {
                        seed: seed + 1000,
                        ..Case::new(dtype, s_q, h_q, lengths, causal)
                    });
                    k += 1;
                }
            }
        }
    }
    let varlen = |rng: &mut crate::reference::SplitMix64, n: usize, max: u64| -> Vec<i32> {
        (0..n).map(|_| rng.below(max + 1) as i32).collect()
    };
    let big_batch = varlen(&mut rng, 1024, 200);
    cases.push(Case {
        seed: 1,
        ..Case::new(Dtype::Bf16, 1, 16, big_batch, false)
    });
    cases.push(Case {
        seed: 2,
        ..Case::new(Dtype::Bf16, 1, 16, vec![131072], false)
    });
    cases.push(Case {
        h_kv: 2,
        seed: 3,
        ..Case::new(Dtype::Bf16, 2, 32, vec![300, 77, 0], true)
    });
    // Precision::Fast (P rounded once) at every h_q. With these short lengths the plan
    // picks 16/32-row tiles everywhere (the `_r16` / `_r32` kernels); the long cases below
    // reach the seesaw kernels.
    for dtype in [Dtype::Bf16, Dtype::F16] {
        for (i, h_q) in [1, 16, 32, 64, 128].into_iter().enumerate() {
            cases.push(Case {
                precision: Precision::Fast,
                seed: 5000 + i as u64,
                ..Case::new(dtype, 2, h_q, vec![4096, 65, 1, 700], true)
            });
        }
    }
    // Long pieces on the seesaw kernel (64-row tiles, P rounded once): partitions of many
    // pages, odd and even counts, several requests each, a partial last page.
    cases.push(Case {
        precision: Precision::Fast,
        seed: 5100,
        ..Case::new(Dtype::Bf16, 1, 128, vec![16000, 9000, 4100, 700, 65], false)
    });
    cases.push(Case {
        precision: Precision::Fast,
        seed: 5101,
        ..Case::new(Dtype::F16, 2, 64, vec![32768, 5000, 4100, 700], true)
    });
    cases.push(Case {
        precision: Precision::Fast,
        h_kv: 2,
        out_f32: true,
        seed: 5102,
        ..Case::new(Dtype::Bf16, 1, 128, vec![20000, 3001], false)
    });
    // Fewer query rows than a 64-row tile (48): the bulk stores' boxes reach past the
    // request's last row, which their tensor map leaves out.
    cases.push(Case {
        precision: Precision::Fast,
        seed: 5108,
        ..Case::new(Dtype::Bf16, 1, 48, vec![20000, 9000, 3001], false)
    });
    // The same with bf16 output: the `_p16` kernels with f16 partial results, by register
    // stores with two KV heads (bulk stores need one, `Schedule::bulk_partials`): P
    // rounded once and split over short shares (one row chunk a head), and P rounded once
    // in FlashMLA's order (two row chunks a head over long shares).
    for (precision, seed) in [(Precision::Fast, 5107), (Precision::Accurate, 5109)] {
        cases.push(Case {
            precision,
            h_kv: 2,
            seed,
            ..Case::new(Dtype::Bf16, 1, 128, vec![20000, 3001], false)
        });
    }
    cases.push(Case {
        precision: Precision::Fast,
        h_kv: 2,
        sm_count: Some(8),
        seed: 5110,
        ..Case::new(Dtype::Bf16, 2, 128, vec![20000, 3001], true)
    });
    // Fast 16-row tiles over 3-32 pages a CTA, where they load half-tile KV boxes
    // (`config::HALF_BOX_SHARES_16_ROWS`; the short cases above have one page a CTA).
    cases.push(Case {
        precision: Precision::Fast,
        sm_count: Some(16),
        seed: 5105,
        ..Case::new(Dtype::Bf16, 1, 16, vec![9000, 4100, 700, 65], false)
    });
    // The seesaw kernels with a partial row chunk (126 query rows per KV head: the second
    // CTA of a head has 62 rows), in both precisions.
    cases.push(Case {
        precision: Precision::Fast,
        seed: 5103,
        ..Case::new(Dtype::Bf16, 1, 126, vec![20000, 9000, 3001], false)
    });
    cases.push(Case {
        seed: 5104,
        ..Case::new(Dtype::F16, 2, 63, vec![40000, 3000], true)
    });
    // A seesaw plan filled over 64 of 66 partitions to keep its requests to the narrow
    // combine (`plan::keeps_narrow_fill`): the smallest such shape found, 97 pages a
    // partition with a partial last page (planned for 66 SMs).
    cases.push(Case {
        sm_count: Some(66),
        seed: 5106,
        ..Case::new(Dtype::Bf16, 1, 64, vec![24815; 16], false)
    });
    for dtype in [Dtype::Bf16, Dtype::F16] {
        cases.push(Case {
            out_f32: true,
            seed: 4,
            ..Case::new(dtype, 1, 16, vec![4000, 65], false)
        });
    }
    // Seesaw plans of uneven lengths whose requests run in their own order
    // (`order::plan_ordered`: `Schedule::ordered`): whole requests where they fit, a long
    // one over several partitions, an empty one, in both precisions, causal s_q 2,
    // f16 and f32 output, two KV heads.
    let uneven = [9000, 700, 30000, 0, 2500, 65, 5000, 1300, 4100, 129];
    for (i, (dtype, s_q, h_q, h_kv, out_f32, precision)) in [
        (Dtype::Bf16, 1, 128, 1, false, Precision::Fast),
        (Dtype::Bf16, 2, 64, 1, false, Precision::Fast),
        (Dtype::F16, 1, 64, 1, false, Precision::Accurate),
        (Dtype::Bf16, 1, 128, 2, true, Precision::Fast),
        (Dtype::Bf16, 2, 128, 1, false, Precision::Accurate),
    ]
    .into_iter()
    .enumerate()
    {
        cases.push(Case {
            precision,
            h_kv,
            out_f32,
            sm_count: Some(12),
            seed: 5300 + i as u64,
            ..Case::new(dtype, s_q, h_q, uneven.to_vec(), s_q > 1)
        });
    }
    // Causal split-P plans over short shares whose plain fill would start a request's
    // later piece in tokens its first positions do not see: the fill that keeps those
    // tails (`plan::plan_keeping_tails`, `order::plan_ordered_keeping_tails`) puts them on
    // f16 partial results, in batch order and in the requests' own order.
    for (i, (s_q, h_q, sm_count, lengths)) in [
        (2, 128, 16, vec![731, 82, 300, 70]),
        (3, 64, 8, vec![1049, 212, 1124]),
        (2, 64, 16, vec![808, 448, 1078]),
    ]
    .into_iter()
    .enumerate()
    {
        cases.push(Case {
            sm_count: Some(sm_count),
            seed: 5900 + i as u64,
            ..Case::new(Dtype::Bf16, s_q, h_q, lengths, true)
        });
    }
    // Long shares, as most points of the benchmark from 16K have them: planned for 8 SMs,
    // these lengths give 65-117 pages a partition (pieces charged the fixed overhead, long
    // runs of tiles, the 32-row tiles' 64-token KV boxes) on every row tile, in both
    // precisions (Fast's 16-row tiles then run the split kernel, `plan::split_p_for`, and
    // its 32-row tiles run as 64-row ones, `plan::row_tiling`).
    for (i, precision) in [Precision::Fast, Precision::Accurate]
        .into_iter()
        .enumerate()
    {
        let seed = 5200 + 10 * i as u64;
        let long = |case: Case| Case {
            precision,
            sm_count: Some(8),
            ..case
        };
        cases.push(long(Case {
            seed,
            ..Case::new(Dtype::Bf16, 1, 16, vec![12000; 3], false)
        }));
        cases.push(long(Case {
            seed: seed + 1,
            ..Case::new(Dtype::F16, 1, 32, vec![12000, 700, 30001, 5, 0], false)
        }));
        cases.push(long(Case {
            seed: seed + 2,
            ..Case::new(Dtype::Bf16, 2, 16, vec![20000, 9000, 4100], true)
        }));
        cases.push(long(Case {
            out_f32: true,
            seed: seed + 3,
            ..Case::new(Dtype::Bf16, 1, 3, vec![40000], false)
        }));
        cases.push(long(Case {
            seed: seed + 4,
            ..Case::new(Dtype::Bf16, 1, 128, vec![20000, 9000, 650], false)
        }));
        cases.push(long(Case {
            seed: seed + 5,
            ..Case::new(Dtype::F16, 2, 64, vec![16000, 3001], true)
        }));
        // Two KV heads of 32 query rows each.
        cases.push(long(Case {
            h_kv: 2,
            seed: seed + 6,
            ..Case::new(Dtype::Bf16, 1, 64, vec![20000, 9000], false)
        }));
        // 24 pages a partition: 32-row tiles with 64-token KV boxes in both precisions.
        cases.push(long(Case {
            seed: seed + 7,
            ..Case::new(Dtype::F16, 1, 32, vec![8000, 4000], false)
        }));
    }
    cases
}

/// The accuracy cases of `../shared/ANCHORS.md` (inputs N(0, 0.1²), lengths ~ Normal(s_k,
/// s_k/2) at least s_q, bf16) with FlashMLA's measured RMSE / rounding-floor ratio on each:
/// our ratio on the same kind of case must not be worse.
pub fn anchor_accuracy_cases() -> Vec<(Case, f64)> {
    let mut rng = crate::reference::SplitMix64(4096);
    let mut normal = |mean: f64, sd: f64, min: i32| -> i32 {
        // Box-Muller on the shared generator; lengths are clamped below at `min`.
        let (u, v) = (rng.next_unit().max(1e-12), rng.next_unit());
        let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
        ((mean + sd * z).round() as i32).max(min)
    };
    let lengths = |n: usize, s_k: f64, s_q: i32, normal: &mut dyn FnMut(f64, f64, i32) -> i32| {
        (0..n)
            .map(|_| normal(s_k, s_k / 2.0, s_q))
            .collect::<Vec<i32>>()
    };
    vec![
        // h_q = 16, s_q = 1, b = 4, s_k ≈ 4096: FlashMLA 2.88e-6 against a floor of 2.37e-6.
        (
            Case::new(
                Dtype::Bf16,
                1,
                16,
                lengths(4, 4096.0, 1, &mut normal),
                false,
            ),
            2.88 / 2.37,
        ),
        // h_q = 128, s_q = 1, b = 4, s_k ≈ 4096: 2.82e-6 against 2.28e-6.
        (
            Case::new(
                Dtype::Bf16,
                1,
                128,
                lengths(4, 4096.0, 1, &mut normal),
                false,
            ),
            2.82 / 2.28,
        ),
        // h_q = 128, s_q = 2, causal, b = 2, s_k ≈ 8192: 2.02e-6 against 1.66e-6.
        (
            Case::new(
                Dtype::Bf16,
                2,
                128,
                lengths(2, 8192.0, 2, &mut normal),
                true,
            ),
            2.02 / 1.66,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::CombineKind;
    use etap_kernel::config::{COMBINE_NARROW_MAX_SPLITS, SEESAW_ROWS};
    use etap_kernel::plan;

    /// The grid runs plans whose requests take their own order (`Schedule::ordered`) on
    /// both seesaw kernels' precisions, at s_q 1 and 2 and with f32 output, over long and
    /// short shares, and on the transposed kernels of 16 and 32 rows, rounding P once and
    /// splitting it.
    #[test]
    fn the_grid_reaches_ordered_plans() {
        let (ordered, kinds): (Vec<Case>, Vec<(u32, bool, bool)>) = grid()
            .into_iter()
            .filter_map(|case| {
                let sm_count = case.sm_count.unwrap_or(132);
                let s = DecodePlan::schedule(&case.config(&case.shape()), &case.lengths, sm_count)
                    .expect("a grid case plans");
                let share = plan::share_per_part(s.total_pages, s.num_parts as u64);
                let short = s.rows_per_cta == SEESAW_ROWS && share <= plan::SHORT_SHARE_PAGES;
                s.ordered
                    .then_some((case, (s.rows_per_cta, s.split_p, short)))
            })
            .unzip();
        for kind in [
            (16, true, false),
            (16, false, false),
            (32, true, false),
            (32, false, false),
            (SEESAW_ROWS, true, true),
            (SEESAW_ROWS, false, true),
            (SEESAW_ROWS, true, false),
            (SEESAW_ROWS, false, false),
        ] {
            assert!(
                kinds.contains(&kind),
                "no ordered grid case on (rows, split P, short 64-row share) = {kind:?}"
            );
        }
        assert!(ordered
            .iter()
            .any(|c| c.precision == Precision::Fast && c.s_q == 2));
        assert!(ordered.iter().any(|c| c.precision == Precision::Accurate));
        assert!(ordered.iter().any(|c| c.out_f32 && c.h_kv == 2));
    }

    /// The grid's causal cases of seeds 5900-5902 are planned by the fills that keep their
    /// tails (their plans differ from the same lengths' without a causal mask), in batch
    /// order and in their own, and keep f16 partial results.
    #[test]
    fn the_grid_reaches_plans_that_keep_causal_tails() {
        let mut orders = Vec::new();
        for case in grid()
            .into_iter()
            .filter(|c| (5900..5903).contains(&c.seed))
        {
            let sm_count = case.sm_count.unwrap_or(132);
            let config = case.config(&case.shape());
            let s = DecodePlan::schedule(&config, &case.lengths, sm_count).unwrap();
            let plain =
                DecodePlan::schedule(&config.causal(false), &case.lengths, sm_count).unwrap();
            assert!(
                s.split_p && s.rows_per_cta == SEESAW_ROWS,
                "{}",
                case.describe()
            );
            assert!((s.parts != plain.parts || s.order != plain.order) && !s.one_piece_rows);
            assert!(s.partials_f16(case.dtype, case.out_f32));
            orders.push(s.ordered);
        }
        orders.sort_unstable();
        orders.dedup();
        assert_eq!(orders, [false, true]);
    }

    /// The smoke cases reach each schedule of the 64-row seesaw kernels: the split one, and
    /// `Fast` in the P_a-first order and in FlashMLA's; and the seesaw kernels with and
    /// without a split P at the shortest share they take, one page a partition.
    #[test]
    fn the_smoke_cases_reach_every_seesaw_schedule() {
        let mut seen = Vec::new();
        let mut shortest = [u64::MAX; 2];
        for case in smoke() {
            let sm_count = case.sm_count.unwrap_or(132);
            let sched = DecodePlan::schedule(&case.config(&case.shape()), &case.lengths, sm_count)
                .expect("a smoke case plans");
            if sched.rows_per_cta == SEESAW_ROWS {
                seen.push((sched.split_p, sched.pa_first));
                let share = plan::share_per_part(sched.total_pages, sched.num_parts as u64);
                let slot = &mut shortest[usize::from(sched.split_p)];
                *slot = (*slot).min(share);
            }
        }
        assert_eq!(
            shortest,
            [1, 1],
            "shortest shares (single rounding, split P)"
        );
        for schedule in [(true, true), (false, true), (false, false)] {
            assert!(
                seen.contains(&schedule),
                "no smoke case runs the seesaw kernel with (split P, P_a first) = {schedule:?}"
            );
        }
    }

    /// A grid case runs a seesaw plan that the narrow fill replaced: fewer partitions
    /// active than the grid has, its requests in no more pieces than the narrow combine
    /// takes, where the fill over all partitions at the seesaw plans' piece cost split one
    /// into more.
    #[test]
    fn the_grid_reaches_a_narrow_fill() {
        let reached = grid().into_iter().any(|case| {
            let sm_count = case.sm_count.unwrap_or(132);
            let config = case.config(&case.shape());
            let sched =
                DecodePlan::schedule(&config, &case.lengths, sm_count).expect("a grid case plans");
            let mut parts = vec![plan::PartWork::IDLE; sched.num_parts];
            let mut offsets = vec![0; case.lengths.len() + 1];
            plan::plan_with_overhead(
                &case.lengths,
                config.max_pages,
                plan::PAGE_SIZE,
                sched.num_parts,
                plan::FIXED_OVERHEAD_PAGES_64_ROWS,
                &mut parts,
                &mut offsets,
            )
            .expect("the lengths plan");
            sched.rows_per_cta == SEESAW_ROWS
                && sched.active_parts < sched.num_parts
                && sched.combine.kind == CombineKind::Narrow
                && plan::max_pieces(&offsets) > COMBINE_NARROW_MAX_SPLITS
        });
        assert!(reached, "no grid case takes the narrow fill");
    }

    fn result(rmse: f64, floor: f64, values: usize) -> CaseResult {
        CaseResult {
            rmse,
            floor,
            out_f32: false,
            lse_rel_err: 1e-7,
            bad_values: 0,
            deterministic: true,
            p_rounded_once: true,
            values,
        }
    }

    /// Pooling weighs each draw's mean square by its values and keeps every draw's faults.
    #[test]
    fn pooled_results_weigh_draws_by_their_values() {
        let (a, b) = (result(2.8, 2.0, 512), result(1.0, 1.0, 1536));
        let p = a.pooled(&b);
        assert_eq!(p.values, 2048);
        assert!((p.rmse - ((2.8 * 2.8 * 512.0 + 1536.0) / 2048.0f64).sqrt()).abs() < 1e-12);
        assert!((p.floor - ((4.0 * 512.0 + 1536.0) / 2048.0f64).sqrt()).abs() < 1e-12);
        assert!(!a.passes() && b.passes() && p.passes());
        let bad = CaseResult {
            bad_values: 1,
            deterministic: false,
            lse_rel_err: 1e-3,
            ..b.clone()
        };
        let q = a.pooled(&bad);
        assert_eq!(
            (q.bad_values, q.deterministic, q.lse_rel_err),
            (1, false, 1e-3)
        );
        assert!(!q.passes());
    }

    /// Pooling two results of no values keeps their figures finite.
    #[test]
    fn pooling_results_of_no_values_stays_finite() {
        let p = result(0.0, 0.0, 0).pooled(&result(0.0, 0.0, 0));
        assert_eq!((p.rmse, p.floor, p.values), (0.0, 0.0, 0));
        let p = result(3.0, 4.0, 0).pooled(&result(3.0, 4.0, 0));
        assert_eq!((p.rmse, p.floor), (3.0, 4.0));
    }

    /// On a 132-SM card the correctness grid runs every combine kernel and every decode
    /// kernel (row tile × split or single-rounding P), and each decode kernel also over
    /// long shares (cases planned for fewer SMs) where plans use it there, so `decode_grid`
    /// checks each of them against the reference; and `Fast` cases over long shares of
    /// 16-row tiles, which run the split kernel; and each kernel with each KV box (tensor
    /// map) it loads with.
    #[test]
    fn the_grid_reaches_every_combine_kernel_decode_kernel_and_long_shares() {
        let mut combines = Vec::new();
        let mut kernels = Vec::new();
        let mut boxes = Vec::new();
        let mut long_shares = Vec::new();
        let mut fast_split = false;
        let mut fast_seesaw_orders = Vec::new();
        let mut bulk_boxes_past_rows = false;
        let mut p16_kernels = Vec::new();
        for case in grid() {
            let sm_count = case.sm_count.unwrap_or(132);
            let sched = DecodePlan::schedule(&case.config(&case.shape()), &case.lengths, sm_count)
                .expect("a grid case plans");
            if sched.max_splits > 1 {
                combines.push(sched.combine.kind);
            }
            kernels.push((sched.rows_per_cta, sched.split_p));
            if sched.rows_per_cta == SEESAW_ROWS && !sched.split_p {
                fast_seesaw_orders.push(sched.pa_first);
            }
            if sched.max_splits > 1 && sched.partials_f16(case.dtype, case.out_f32) {
                let bulk = sched.bulk_partials(case.h_kv, case.dtype, case.out_f32);
                p16_kernels.push((sched.decode_kernel_name(case.dtype, case.out_f32), bulk));
                bulk_boxes_past_rows |= bulk && case.s_q * case.h_q < SEESAW_ROWS as usize;
            }
            boxes.push((sched.rows_per_cta, sched.split_p, sched.kv_map_index()));
            let share = plan::share_per_part(sched.total_pages, sched.num_parts as u64);
            if share > plan::SHORT_SHARE_PAGES && sched.max_splits > 1 {
                long_shares.push((sched.rows_per_cta, sched.split_p));
                fast_split |= case.precision == Precision::Fast && sched.split_p;
            }
        }
        for kind in CombineKind::ALL {
            assert!(combines.contains(&kind), "no grid case runs {kind:?}");
        }
        for rows in etap_kernel::config::ROW_TILES {
            for split_p in [true, false] {
                assert!(
                    kernels.contains(&(rows, split_p)),
                    "no grid case runs {rows}-row tiles with split P {split_p}"
                );
                // Every KV box the kernel loads with: at one page a partition and past the
                // 32-row tiles' half-box limit, where plans keep the tile (two boxes for
                // 32-row tiles).
                let long = etap_kernel::config::half_box_max_share_32_rows(split_p) + 1;
                for share in [1, long] {
                    if plan::row_tiling(rows, share * 132, 132, 1, share).0 != rows {
                        continue;
                    }
                    let kv_box = etap_kernel::config::kv_map_index(rows, share, split_p);
                    assert!(
                        boxes.contains(&(rows, split_p, kv_box)),
                        "no grid case runs {rows}-row tiles with split P {split_p} and KV map {kv_box}"
                    );
                }
                // Over long shares, Fast 16-row tiles split P.
                let long_kernel = (
                    plan::row_tiling(rows, 1 << 30, 132, 1, 1 << 20).0,
                    plan::split_p_for(split_p, rows, u64::MAX),
                );
                if long_kernel == (rows, split_p) {
                    assert!(
                        long_shares.contains(&(rows, split_p)),
                        "no grid case runs {rows}-row tiles with split P {split_p} over long shares"
                    );
                }
            }
        }
        assert!(fast_split, "no Fast grid case runs the split kernel");
        for pa_first in [true, false] {
            assert!(
                fast_seesaw_orders.contains(&pa_first),
                "no Fast 64-row grid case runs the P_a-first order {pa_first}"
            );
        }
        assert!(
            bulk_boxes_past_rows,
            "no grid case stores partial results in bulk with fewer rows than a box"
        );
        // Every `_p16` decode kernel writes its partial results both ways: by bulk stores
        // (one KV head) and by register stores (two).
        for name in crate::module::kernel_names() {
            if name.starts_with("etap_decode_") && name.ends_with("_p16") {
                for bulk in [true, false] {
                    assert!(
                        p16_kernels.iter().any(|(k, b)| k == name && *b == bulk),
                        "no grid case writes f16 partial results with {name}, bulk stores {bulk}"
                    );
                }
            }
        }
    }
}
