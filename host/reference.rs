//! CPU float64 reference of the decode kernel's exact semantics, error metrics, and the
//! deterministic input generator shared by tests, the demo and the benchmark.
//!
//! Semantics (DESIGN.md §1): q `[b, s_q, h_q, 576]`, paged KV cache
//! `[num_blocks, page_size, h_kv, 576]` (K = the whole row, V = its first 512 dims),
//! block table `[b, max_pages]`, seqlens `[b]`. Query head `h` uses KV head
//! `h / (h_q / h_kv)`. Query `i` (0-based of `s_q`) of a request of length `L` sees keys
//! `0 ..= L - s_q + i` when causal, all `L` keys otherwise. A query that sees no key yields
//! out = 0 and lse = +inf. out is `[b, s_q, h_q, 512]`, lse is `[b, h_q, s_q]` in natural log:
//! `lse = ln Σ_t exp(scale · q·k_t)`.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Dims of q and of a K row (512 latent + 64 RoPE).
pub const D_QK: usize = 576;
/// Dims of a V row (the first 512 of the K row).
pub const D_V: usize = 512;

/// Element type of q, the KV cache and out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl Dtype {
    /// Rounds `x` to the nearest value of this type (ties to even), returned as f64.
    pub fn round(self, x: f64) -> f64 {
        match self {
            Dtype::Bf16 => round_to_bf16(x),
            Dtype::F16 => round_to_f16(x),
        }
    }

    /// Short name used in reports and the CLI (`bf16`, `fp16`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "fp16",
        }
    }
}

/// Problem shape. Element counts: q `batch·s_q·h_q·576`, kv cache
/// `num_blocks·page_size·h_kv·576`, block table `batch·max_pages`, out `batch·s_q·h_q·512`,
/// lse `batch·h_q·s_q`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlaShape {
    /// Requests.
    pub batch: usize,
    /// Query tokens per request.
    pub s_q: usize,
    /// Query heads.
    pub h_q: usize,
    /// KV heads (`h_q` is a multiple of it).
    pub h_kv: usize,
    /// Tokens per cache page.
    pub page_size: usize,
    /// Block-table width (pages per request at most).
    pub max_pages: usize,
    /// Pages in the KV cache.
    pub num_blocks: usize,
}

impl MlaShape {
    /// The shape that fits `lengths` exactly: `max_pages` = the most pages of any request (at
    /// least 1), `num_blocks` = Σ pages + 2 (two spare pages that no request uses, which
    /// [`generate`] poisons like every other invisible row). Negative lengths count as 0
    /// pages, a `page_size` of 0 as 1 (so that this never fails; [`generate`] and
    /// [`reference_decode`] reject such inputs), and the page sum saturates.
    pub fn for_lengths(
        s_q: usize,
        h_q: usize,
        h_kv: usize,
        page_size: usize,
        lengths: &[i32],
    ) -> MlaShape {
        let pages = |l: i32| (l.max(0) as usize).div_ceil(page_size.max(1));
        MlaShape {
            batch: lengths.len(),
            s_q,
            h_q,
            h_kv,
            page_size,
            max_pages: lengths.iter().map(|&l| pages(l)).max().unwrap_or(0).max(1),
            num_blocks: lengths
                .iter()
                .fold(2usize, |sum, &l| sum.saturating_add(pages(l))),
        }
    }

    /// Checks that the shape describes buffers that can exist: `page_size` ≥ 1, and the
    /// element counts of q, the KV cache, the block table, out and lse (and of one cache
    /// page) fit in memory as f64 — their products, with zero dims counted as 1, at most
    /// `isize::MAX / 8`, so that no partial product of their dims overflows either. The
    /// element-count methods are exact on a checked shape.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `shape.page_size`
    /// where it is 0, and for `shape` (the rule names the buffer and its dims) where a
    /// buffer is too large.
    pub fn check(&self) -> Result<()> {
        if self.page_size == 0 {
            return Err(Error::invalid("shape.page_size", "must be at least 1"));
        }
        let s = self;
        let buffers: [(&str, &[usize]); 6] = [
            ("q [batch, s_q, h_q, 576]", &[s.batch, s.s_q, s.h_q, D_QK]),
            (
                "the KV cache [num_blocks, page_size, h_kv, 576]",
                &[s.num_blocks, s.page_size, s.h_kv, D_QK],
            ),
            (
                "a cache page [page_size, h_kv, 576]",
                &[s.page_size, s.h_kv, D_QK],
            ),
            (
                "the block table [batch, max_pages]",
                &[s.batch, s.max_pages],
            ),
            ("out [batch, s_q, h_q, 512]", &[s.batch, s.s_q, s.h_q, D_V]),
            ("lse [batch, h_q, s_q]", &[s.batch, s.h_q, s.s_q]),
        ];
        const MAX_ELEMENTS: usize = isize::MAX as usize / std::mem::size_of::<f64>();
        for (name, dims) in buffers {
            let counted: Vec<usize> = dims.iter().map(|&d| d.max(1)).collect();
            let fits = checked_len(&counted).is_some_and(|n| n <= MAX_ELEMENTS);
            if !fits {
                return Err(Error::invalid(
                    "shape",
                    format!(
                        "{name} = {dims:?} has more elements than memory can hold \
                         (at most {MAX_ELEMENTS})"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Elements of q (`usize::MAX` where the count overflows; [`MlaShape::check`]).
    pub fn q_len(&self) -> usize {
        product(&[self.batch, self.s_q, self.h_q, D_QK])
    }
    /// Elements of the KV cache (`usize::MAX` where the count overflows).
    pub fn kv_len(&self) -> usize {
        product(&[self.num_blocks, self.page_size, self.h_kv, D_QK])
    }
    /// Entries of the block table (`usize::MAX` where the count overflows).
    pub fn block_table_len(&self) -> usize {
        product(&[self.batch, self.max_pages])
    }
    /// Elements of out (`usize::MAX` where the count overflows).
    pub fn out_len(&self) -> usize {
        product(&[self.batch, self.s_q, self.h_q, D_V])
    }
    /// Entries of lse (`usize::MAX` where the count overflows).
    pub fn lse_len(&self) -> usize {
        product(&[self.batch, self.h_q, self.s_q])
    }
    /// Elements from one cache row (a token of a KV head) to the next token's row of
    /// the same head within a page.
    pub fn key_row_stride(&self) -> usize {
        self.h_kv * D_QK
    }
    /// Element offset in the KV cache of the row of key `t` of request `b` for KV head
    /// `kv_head`, by the request's row of `block_table`: the row's [`D_QK`] elements from
    /// there lie in a cache of [`MlaShape::kv_len`] elements. `None` where `b`, the page of
    /// `t` or `kv_head` is outside the shape (or `page_size` is 0), the block table is too
    /// short, or the page id is outside `0..num_blocks`.
    pub fn key_offset(
        &self,
        block_table: &[i32],
        b: usize,
        t: usize,
        kv_head: usize,
    ) -> Option<usize> {
        let page_index = t.checked_div(self.page_size)?;
        if b >= self.batch || page_index >= self.max_pages || kv_head >= self.h_kv {
            return None;
        }
        let entry = b.checked_mul(self.max_pages)?.checked_add(page_index)?;
        let page = *block_table.get(entry)?;
        let page = usize::try_from(page)
            .ok()
            .filter(|&p| p < self.num_blocks)?;
        page.checked_mul(self.page_size)?
            .checked_add(t % self.page_size)?
            .checked_mul(self.h_kv)?
            .checked_add(kv_head)?
            .checked_mul(D_QK)
    }
    /// Number of keys query `i` of a request of length `len` sees.
    pub fn visible(&self, len: usize, i: usize, causal: bool) -> usize {
        if causal {
            // keys 0 ..= len - s_q + i
            (len + i + 1).saturating_sub(self.s_q).min(len)
        } else {
            len
        }
    }
}

/// Exact (float64) result: out `[b, s_q, h_q, 512]`, lse `[b, h_q, s_q]` (natural log,
/// +inf for a query that sees no key).
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    /// `[b, s_q, h_q, 512]`.
    pub out: Vec<f64>,
    /// `[b, h_q, s_q]`, natural log.
    pub lse: Vec<f64>,
}

fn checked_len(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// The product of `dims`, exact where it fits `usize`, `usize::MAX` where it does not (a
/// zero dim gives 0 whatever the others are).
fn product(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}

/// One unit of reference work: up to `ROWS_PER_TASK` query rows `(i, h)` of request `b` that
/// share KV head `kvh`.
struct Task {
    b: usize,
    kvh: usize,
    rows: Vec<(usize, usize)>,
}

const ROWS_PER_TASK: usize = 16;

/// The float64 reference decode. Inputs are f32 holding the (bf16/fp16) input values; all
/// arithmetic is f64: scores `s_t = scale · Σ q·k_t`, `m = max s_t`,
/// `out = Σ exp(s_t - m) v_t / Σ exp(s_t - m)`, `lse = m + ln Σ exp(s_t - m)`.
///
/// Reads only the cache rows of visible tokens (never pages past a request's length nor
/// block-table entries past its last used page). `InvalidArgument` naming the buffer on
/// inconsistent sizes, `h_q % h_kv != 0`, negative or too long lengths, and page ids
/// outside `0..num_blocks` among the used block-table entries. Runs on all CPU cores; the result does not depend on
/// their number.
///
/// With a single cached token the softmax has one term: out is that token's V and
/// lse its score.
///
/// ```rust
/// use flashmla_etap::reference::{reference_decode, MlaShape, D_QK};
/// // One request, one query, one head, one cached token on page 0.
/// let shape = MlaShape::for_lengths(1, 1, 1, 64, &[1]);
/// let q = vec![0.5f32; D_QK];
/// let mut kv = vec![f32::NAN; shape.kv_len()]; // rows that must not be read
/// kv[..D_QK].copy_from_slice(&[0.25f32; D_QK]);
/// let r = reference_decode(&shape, &q, &kv, &[0], &[1], 0.5, false).unwrap();
/// assert!(r.out.iter().all(|&o| o == 0.25));
/// assert_eq!(r.lse, vec![0.5 * 576.0 * 0.5 * 0.25]);
/// ```
pub fn reference_decode(
    shape: &MlaShape,
    q: &[f32],
    kv_cache: &[f32],
    block_table: &[i32],
    seqlens: &[i32],
    softmax_scale: f64,
    causal: bool,
) -> Result<Reference> {
    let s = *shape;
    if s.h_kv == 0 || !s.h_q.is_multiple_of(s.h_kv) {
        return Err(Error::invalid(
            "shape.h_q",
            format!("h_q = {} must be a multiple of h_kv = {}", s.h_q, s.h_kv),
        ));
    }
    if s.page_size == 0 {
        return Err(Error::invalid("shape.page_size", "must be at least 1"));
    }
    let want = |name: &'static str, got: usize, dims: &[usize]| -> Result<()> {
        match checked_len(dims) {
            Some(n) if n == got => Ok(()),
            Some(n) => Err(Error::invalid(
                name,
                format!("has {got} elements, expected {n} ({dims:?})"),
            )),
            None => Err(Error::invalid(name, format!("shape {dims:?} overflows"))),
        }
    };
    want("q", q.len(), &[s.batch, s.s_q, s.h_q, D_QK])?;
    want(
        "kv_cache",
        kv_cache.len(),
        &[s.num_blocks, s.page_size, s.h_kv, D_QK],
    )?;
    want("block_table", block_table.len(), &[s.batch, s.max_pages])?;
    want("seqlens", seqlens.len(), &[s.batch])?;
    let out_len = checked_len(&[s.batch, s.s_q, s.h_q, D_V])
        .ok_or_else(|| Error::invalid("shape", "out's size overflows"))?;
    let lse_len = checked_len(&[s.batch, s.h_q, s.s_q])
        .ok_or_else(|| Error::invalid("shape", "lse's size overflows"))?;

    let capacity = s.max_pages.saturating_mul(s.page_size);
    for (b, &len) in seqlens.iter().enumerate() {
        if len < 0 {
            return Err(Error::invalid(
                "seqlens",
                format!("seqlens[{b}] = {len} is negative"),
            ));
        }
        if len as usize > capacity {
            return Err(Error::invalid(
                "seqlens",
                format!("seqlens[{b}] = {len} exceeds max_pages * page_size = {capacity}"),
            ));
        }
        let used = (len as usize).div_ceil(s.page_size);
        for p in 0..used {
            let id = block_table[b * s.max_pages + p];
            if id < 0 || id as usize >= s.num_blocks {
                return Err(Error::invalid(
                    "block_table",
                    format!(
                        "block_table[{b}][{p}] = {id} is outside 0..{} (request {b} uses {used} pages)",
                        s.num_blocks
                    ),
                ));
            }
        }
    }

    let group = s.h_q / s.h_kv.max(1);
    let mut tasks = Vec::new();
    for (b, &len) in seqlens.iter().enumerate() {
        if len == 0 {
            continue;
        }
        for kvh in 0..s.h_kv {
            let mut rows = Vec::new();
            for i in 0..s.s_q {
                for h in kvh * group..(kvh + 1) * group {
                    rows.push((i, h));
                }
            }
            for chunk in rows.chunks(ROWS_PER_TASK) {
                tasks.push(Task {
                    b,
                    kvh,
                    rows: chunk.to_vec(),
                });
            }
        }
    }

    let mut out = vec![0.0f64; out_len];
    let mut lse = vec![f64::INFINITY; lse_len];
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(tasks.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Vec<Vec<(usize, Option<Vec<RowResult>>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (tasks, next) = (&tasks, &next);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let t = next.fetch_add(1, Ordering::Relaxed);
                        let Some(task) = tasks.get(t) else { break };
                        done.push((
                            t,
                            run_task(
                                &s,
                                task,
                                q,
                                kv_cache,
                                block_table,
                                seqlens,
                                softmax_scale,
                                causal,
                            ),
                        ));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reference worker panicked"))
            .collect()
    });
    for (t, rows) in results.into_iter().flatten() {
        let b = tasks[t].b;
        // `run_task` fails only on a page id outside the cache, which the checks above
        // reject; were one to pass them, this reports it rather than panicking.
        let rows = rows.ok_or_else(|| {
            Error::invalid(
                "block_table",
                format!("request {b}: a used entry is outside the cache"),
            )
        })?;
        for (&(i, h), r) in tasks[t].rows.iter().zip(rows) {
            let o = ((b * s.s_q + i) * s.h_q + h) * D_V;
            out[o..o + D_V].copy_from_slice(&r.out);
            lse[(b * s.h_q + h) * s.s_q + i] = r.lse;
        }
    }
    Ok(Reference { out, lse })
}

struct RowResult {
    out: Vec<f64>,
    lse: f64,
}

#[allow(clippy::too_many_arguments)]
fn run_task(
    s: &MlaShape,
    task: &Task,
    q: &[f32],
    kv_cache: &[f32],
    block_table: &[i32],
    seqlens: &[i32],
    scale: f64,
    causal: bool,
) -> Option<Vec<RowResult>> {
    let b = task.b;
    let len = seqlens[b] as usize;
    let nrows = task.rows.len();
    let vis: Vec<usize> = task
        .rows
        .iter()
        .map(|&(i, _)| s.visible(len, i, causal))
        .collect();
    let qs: Vec<[f64; D_QK]> = task
        .rows
        .iter()
        .map(|&(i, h)| {
            let o = ((b * s.s_q + i) * s.h_q + h) * D_QK;
            let mut v = [0.0f64; D_QK];
            for (d, x) in v.iter_mut().zip(&q[o..o + D_QK]) {
                *d = *x as f64;
            }
            v
        })
        .collect();
    let n_max = vis.iter().copied().max().unwrap_or(0);
    // One block-table lookup a page, not a key: key t's row is its page's first row plus
    // t % page_size rows (the same offset `key_offset` gives for t).
    let page_rows = (0..n_max.div_ceil(s.page_size))
        .map(|p| s.key_offset(block_table, b, p * s.page_size, task.kvh))
        .collect::<Option<Vec<usize>>>()?;
    let row_stride = s.key_row_stride();
    let row_of = |t: usize| page_rows[t / s.page_size] + t % s.page_size * row_stride;

    // Pass 1: scores.
    let mut scores = vec![0.0f64; nrows * n_max];
    let mut k = [0.0f64; D_QK];
    for t in 0..n_max {
        for (d, x) in k.iter_mut().zip(&kv_cache[row_of(t)..row_of(t) + D_QK]) {
            *d = *x as f64;
        }
        for j in 0..nrows {
            if t < vis[j] {
                let dot: f64 = qs[j].iter().zip(&k).map(|(a, b)| a * b).sum();
                scores[j * n_max + t] = scale * dot;
            }
        }
    }
    let m: Vec<f64> = (0..nrows)
        .map(|j| {
            scores[j * n_max..j * n_max + vis[j]]
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect();

    // Pass 2: exp, sum, P·V.
    let mut acc = vec![0.0f64; nrows * D_V];
    let mut sum = vec![0.0f64; nrows];
    for t in 0..n_max {
        let v = &kv_cache[row_of(t)..row_of(t) + D_V];
        for j in 0..nrows {
            if t < vis[j] {
                let p = (scores[j * n_max + t] - m[j]).exp();
                sum[j] += p;
                for (a, x) in acc[j * D_V..(j + 1) * D_V].iter_mut().zip(v) {
                    *a += p * *x as f64;
                }
            }
        }
    }
    let rows = (0..nrows)
        .map(|j| {
            if vis[j] == 0 {
                RowResult {
                    out: vec![0.0; D_V],
                    lse: f64::INFINITY,
                }
            } else {
                RowResult {
                    out: acc[j * D_V..(j + 1) * D_V]
                        .iter()
                        .map(|a| a / sum[j])
                        .collect(),
                    lse: m[j] + sum[j].ln(),
                }
            }
        })
        .collect();
    Some(rows)
}

/// Root mean square of `a - b`. Equal elements count as 0 even when infinite (so lse vectors
/// with matching +inf entries compare); any other non-finite difference makes the result
/// non-finite. 0 for empty inputs.
///
/// # Errors
/// [`Error::InvalidArgument`] for `b` where its length differs from `a`'s: a partial
/// comparison would hide the missing values.
pub fn rmse(a: &[f64], b: &[f64]) -> Result<f64> {
    if a.len() != b.len() {
        return Err(Error::invalid(
            "b",
            format!("has {} elements; a has {}", b.len(), a.len()),
        ));
    }
    Ok(rms_difference(a, b))
}

/// [`rmse`] over the pairs of `a` and `b` (the callers pass equal lengths).
fn rms_difference(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    let ss: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| if x == y { 0.0 } else { (x - y) * (x - y) })
        .sum();
    (ss / a.len() as f64).sqrt()
}

/// Rounds `x` to the nearest value with a `p`-bit significand (hidden bit included), minimum
/// normal exponent `emin` and largest finite value `max` (ties to even, gradual underflow,
/// overflow to ±inf) — a single correct rounding straight from f64 (no detour through f32).
fn round_to_format(x: f64, p: i32, emin: i32, max: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // f64 subnormal: far below half the smallest subnormal of bf16/f16.
        return 0.0f64.copysign(x);
    }
    let e = biased - 1023; // floor(log2 |x|)
    let q = e.max(emin) - (p - 1); // exponent of one ulp at x
    let ulp = f64::from_bits(((q + 1023) as u64) << 52);
    let inv_ulp = f64::from_bits(((1023 - q) as u64) << 52);
    // |x·inv_ulp| < 2^p ≤ 2^11: adding and removing 1.5·2^52 rounds it to an integer, ties to
    // even (the default rounding mode), faster than a libm `round_ties_even` call.
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    let r = (((x * inv_ulp + MAGIC) - MAGIC) * ulp).copysign(x); // keeps -0
    if r.abs() > max {
        f64::INFINITY.copysign(x)
    } else {
        r
    }
}

/// `x` rounded to the nearest bfloat16 (ties to even), as f64. Agrees with
/// `half::bf16::from_f32` on f32 inputs.
pub fn round_to_bf16(x: f64) -> f64 {
    round_to_format(x, 8, -126, half::bf16::MAX.to_f64())
}

/// `x` rounded to the nearest IEEE binary16 (ties to even), as f64. Agrees with
/// `half::f16::from_f32` on f32 inputs.
pub fn round_to_f16(x: f64) -> f64 {
    round_to_format(x, 11, -14, half::f16::MAX.to_f64())
}

/// The accuracy floor of an output in `dtype`: RMSE between the exact result and its
/// rounding to `dtype`. A kernel cannot beat it (up to luck).
pub fn rounding_floor_rmse(out: &[f64], dtype: Dtype) -> f64 {
    let rounded: Vec<f64> = out.iter().map(|&x| dtype.round(x)).collect();
    rms_difference(out, &rounded)
}

/// Deterministic inputs for one shape (see [`generate`]).
#[derive(Clone, Debug)]
pub struct Inputs {
    /// Element type the values are exact in.
    pub dtype: Dtype,
    /// `[batch, s_q, h_q, 576]`, values exact in `dtype`.
    pub q: Vec<f32>,
    /// `[num_blocks, page_size, h_kv, 576]`, values exact in `dtype`; NaN in every row that
    /// is not a visible token of the request owning its page (and in unused pages).
    pub kv_cache: Vec<f32>,
    /// `[batch, max_pages]`; entries past a request's last used page are `i32::MAX`.
    pub block_table: Vec<i32>,
    /// `[batch]`
    pub seqlens: Vec<i32>,
}

/// splitmix64: a small, well-mixed 64-bit generator.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    pub fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in `0..n` (n > 0), by multiply-shift (bias < n / 2^64).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Standard normal samples by Marsaglia's polar method (Box–Muller without trigonometry),
/// both outputs used; shared by [`generate`] and the benchmark's input pool.
#[derive(Clone, Debug)]
pub struct Normal {
    rng: SplitMix64,
    spare: Option<f64>,
}

impl Normal {
    /// A generator drawing from `SplitMix64(seed)`.
    pub fn new(seed: u64) -> Normal {
        Normal {
            rng: SplitMix64(seed),
            spare: None,
        }
    }
    /// One standard normal sample.
    pub fn sample(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        loop {
            let u = 2.0 * self.rng.next_unit() - 1.0;
            let v = 2.0 * self.rng.next_unit() - 1.0;
            let s = u * u + v * v;
            if s < 1.0 && s > 0.0 {
                let f = (-2.0 * s.ln() / s).sqrt();
                self.spare = Some(v * f);
                return u * f;
            }
        }
    }
    /// N(0, 0.1²) clamped to [-1, 1], rounded to `dtype`.
    fn value(&mut self, dtype: Dtype) -> f32 {
        dtype.round((0.1 * self.sample()).clamp(-1.0, 1.0)) as f32
    }
}

/// Deterministic inputs for `shape` and request `lengths` (the same `(shape, lengths, dtype,
/// seed)` always gives the same bits): q and the visible cache rows ~ N(0, 0.1²) clamped to
/// [-1, 1] and rounded to `dtype`; a randomly permuted block table (distinct pages across
/// all requests); block-table entries past each request's last used page = `i32::MAX`; every
/// cache row that is not a visible token of its request (the tail of a last page, pages used
/// by no request) = NaN.
///
/// # Errors
/// [`Error::InvalidArgument`] where the shape fails [`MlaShape::check`], for `lengths` where
/// it does not have `shape.batch` entries or a length is outside `0..=max_pages ·
/// page_size` (the batch index is named), and for `shape.num_blocks` where the requests need
/// more pages than it holds or it exceeds `i32::MAX` (page ids are `i32`).
pub fn generate(shape: &MlaShape, lengths: &[i32], dtype: Dtype, seed: u64) -> Result<Inputs> {
    let s = *shape;
    s.check()?;
    if lengths.len() != s.batch {
        return Err(Error::invalid(
            "lengths",
            format!("has {} entries; shape.batch is {}", lengths.len(), s.batch),
        ));
    }
    // Saturating: where max_pages · page_size passes usize, every i32 length fits.
    let capacity = s.max_pages.saturating_mul(s.page_size);
    let mut pages = Vec::with_capacity(lengths.len());
    for (b, &l) in lengths.iter().enumerate() {
        match usize::try_from(l) {
            Ok(len) if len <= capacity => pages.push(len.div_ceil(s.page_size)),
            _ => {
                return Err(Error::invalid(
                    "lengths",
                    format!("lengths[{b}] = {l} is not in 0..=max_pages · page_size = {capacity}"),
                ))
            }
        }
    }
    // Each request has at most max_pages pages, and `check` bounds batch · max_pages.
    let need: usize = pages.iter().sum();
    if need > s.num_blocks {
        return Err(Error::invalid(
            "shape.num_blocks",
            format!(
                "the requests need {need} pages; the cache has {}",
                s.num_blocks
            ),
        ));
    }
    if s.num_blocks > i32::MAX as usize {
        return Err(Error::invalid(
            "shape.num_blocks",
            format!("{} exceeds i32::MAX (page ids are i32)", s.num_blocks),
        ));
    }

    // Independent streams (q, the permutation, and one per used page in allocation order), so
    // the pages can be filled in parallel and the result does not depend on the thread count.
    let stream = |k: u64| SplitMix64(seed ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64();
    let mut normal = Normal::new(stream(0));
    let q: Vec<f32> = (0..s.q_len()).map(|_| normal.value(dtype)).collect();

    let mut rng = SplitMix64(stream(1));
    let mut perm: Vec<u32> = (0..s.num_blocks as u32).collect();
    for i in (1..perm.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    let mut block_table = vec![i32::MAX; s.block_table_len()];
    // For every page id: (allocation index, visible tokens), or None if no request uses it.
    let mut page_job: Vec<Option<(u64, usize)>> = vec![None; s.num_blocks];
    let mut next_page = 0usize;
    for (b, &np) in pages.iter().enumerate() {
        let len = lengths[b] as usize;
        for p in 0..np {
            let id = perm[next_page] as usize;
            block_table[b * s.max_pages + p] = id as i32;
            page_job[id] = Some((next_page as u64, (len - p * s.page_size).min(s.page_size)));
            next_page += 1;
        }
    }
    let row_elems = s.h_kv * D_QK;
    let page_elems = s.page_size * row_elems;
    let mut kv_cache = vec![f32::NAN; s.kv_len()];
    let fill = |first_page: usize, pages: &mut [f32]| {
        for (k, page) in pages.chunks_mut(page_elems).enumerate() {
            if let Some((alloc, tokens)) = page_job[first_page + k] {
                let mut normal = Normal::new(stream(alloc + 2));
                for x in &mut page[..tokens * row_elems] {
                    *x = normal.value(dtype);
                }
            }
        }
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let per_thread = s.num_blocks.div_ceil(threads).max(1);
    if page_elems > 0 {
        std::thread::scope(|scope| {
            for (t, chunk) in kv_cache.chunks_mut(per_thread * page_elems).enumerate() {
                let fill = &fill;
                scope.spawn(move || fill(t * per_thread, chunk));
            }
        });
    }
    Ok(Inputs {
        dtype,
        q,
        kv_cache,
        block_table,
        seqlens: lengths.to_vec(),
    })
}
