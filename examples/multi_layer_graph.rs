//! A multi-layer decode step as an inference engine runs it: the plan is built once per step
//! (it depends only on the lengths) and reused by every layer, each with its own KV cache
//! and query; the whole step (all layers) is captured in one CUDA graph and replayed. The
//! replay must equal the eager step bitwise, and each layer is checked against the float64
//! reference.
//!
//! Run: `cargo run --release --example multi_layer_graph`. Without a GPU it prints
//! `skipped: no GPU: <why>` and exits 0.

use cudarc::driver::CudaSlice;
use flashmla_etap::decode::{DecodeConfig, DecodePlan, Decoder, KvCache};
use flashmla_etap::reference::{
    generate, reference_decode, rmse, rounding_floor_rmse, Dtype, MlaShape,
};
use flashmla_etap::{Error, Gpu, GpuTimer, Graph, Result};
use half::bf16;

const LAYERS: usize = 4;

fn main() -> std::process::ExitCode {
    flashmla_etap::check::main_on_gpu(run)
}

fn bf(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

fn run(gpu: &Gpu) -> Result<()> {
    let s = &gpu.stream;
    let h_q = 16;
    let lengths = vec![1000, 2048, 64, 0, 4000, 130];
    let shape = MlaShape::for_lengths(1, h_q, 1, 64, &lengths);
    let base = generate(&shape, &lengths, Dtype::Bf16, 0)?;

    // One block table and one set of lengths for the step (the pages of a request hold the
    // same positions in every layer); per layer its own cache and query. Layer l's cache is
    // layer 0's scaled by ±1 or ±0.5 (exact in bf16), its query freshly generated.
    let block_table = s.clone_htod(&base.block_table)?;
    let seqlens = s.clone_htod(&base.seqlens)?;
    let factors = [1.0f32, -1.0, 0.5, -0.5];
    let mut host_q = Vec::new();
    let mut host_kv = Vec::new();
    for l in 0..LAYERS {
        host_q.push(generate(&shape, &lengths, Dtype::Bf16, 100 + l as u64)?.q);
        host_kv.push(
            base.kv_cache
                .iter()
                .map(|&x| x * factors[l % factors.len()])
                .collect::<Vec<f32>>(),
        );
    }
    let q: Vec<CudaSlice<bf16>> = host_q
        .iter()
        .map(|v| s.clone_htod(&bf(v)))
        .collect::<std::result::Result<_, _>>()?;
    let kv: Vec<CudaSlice<bf16>> = host_kv
        .iter()
        .map(|v| s.clone_htod(&bf(v)))
        .collect::<std::result::Result<_, _>>()?;
    let mut out: Vec<CudaSlice<bf16>> = (0..LAYERS)
        .map(|_| s.alloc_zeros(shape.out_len()))
        .collect::<std::result::Result<_, _>>()?;
    let mut lse: Vec<CudaSlice<f32>> = (0..LAYERS)
        .map(|_| s.alloc_zeros(shape.lse_len()))
        .collect::<std::result::Result<_, _>>()?;

    let decoder = Decoder::new(gpu)?;
    let caches: Vec<KvCache<'_, bf16>> = kv
        .iter()
        .map(|d| KvCache::new(gpu, d, shape.num_blocks, 1))
        .collect::<Result<_>>()?;
    // Built once for the step, used by every layer.
    let config = DecodeConfig::new(lengths.len(), h_q, shape.max_pages);
    let mut plan = DecodePlan::new(gpu, config, &lengths)?;
    plan.validate_block_table(&base.block_table, shape.num_blocks)?;
    let rounds_p_once = plan.rounds_p_once();

    // One step: every layer's decode, back to back on one stream.
    let mut step = |st: &std::sync::Arc<cudarc::driver::CudaStream>,
                    out: &mut [CudaSlice<bf16>],
                    lse: &mut [CudaSlice<f32>]|
     -> Result<()> {
        for l in 0..LAYERS {
            decoder.decode(
                st,
                &mut plan,
                &q[l],
                &caches[l],
                &block_table,
                &seqlens,
                &mut out[l],
                &mut lse[l],
            )?;
        }
        Ok(())
    };

    // Eager.
    step(s, &mut out, &mut lse)?;
    let eager = read_all(gpu, &out, &lse)?;

    // Check every layer against the float64 reference.
    for l in 0..LAYERS {
        let r = reference_decode(
            &shape,
            &host_q[l],
            &host_kv[l],
            &base.block_table,
            &base.seqlens,
            config.softmax_scale as f64,
            false,
        )?;
        let got: Vec<f64> = eager.0[l]
            .iter()
            .map(|&x| bf16::from_bits(x).to_f64())
            .collect();
        let (e, floor) = (
            rmse(&got, &r.out)?,
            rounding_floor_rmse(&r.out, Dtype::Bf16),
        );
        println!("layer {l}: RMSE {e:.3e} (bf16 rounding floor {floor:.3e})");
        let factor = if rounds_p_once {
            flashmla_etap::check::RMSE_FACTOR
        } else {
            flashmla_etap::check::RMSE_FACTOR_ACCURATE
        };
        if e.is_nan() || e > factor * floor {
            return Err(Error::Other(format!("layer {l}: RMSE {e:.3e} too large")));
        }
    }

    // Clear the outputs, capture the step once, replay it.
    for l in 0..LAYERS {
        s.memset_zeros(&mut out[l])?;
        s.memset_zeros(&mut lse[l])?;
    }
    let graph = Graph::capture(s, |st| step(st, &mut out, &mut lse))?;
    graph.upload()?;
    let timer = GpuTimer::new(s)?;
    let replays = 10;
    let ms = timer.time_mean_ms(1, replays, || graph.launch(s))?;
    let replayed = read_all(gpu, &out, &lse)?;
    if replayed != eager {
        return Err(Error::Other(
            "graph replay differs from the eager step".into(),
        ));
    }
    println!(
        "{LAYERS} layers per step, one plan ({} partitions), one CUDA graph: {:.1} us per step \
         (mean of {replays} replays); replay == eager bitwise",
        plan.num_parts(),
        ms * 1e3
    );
    Ok(())
}

/// Host copies of every layer's out and lse, as bit patterns (so that the comparison is
/// bitwise: NaN equals itself, -0 differs from +0).
#[allow(clippy::type_complexity)]
fn read_all(
    gpu: &Gpu,
    out: &[CudaSlice<bf16>],
    lse: &[CudaSlice<f32>],
) -> Result<(Vec<Vec<u16>>, Vec<Vec<u32>>)> {
    let s = &gpu.stream;
    let o = out
        .iter()
        .map(|b| {
            s.clone_dtoh(b)
                .map(|v| v.iter().map(|x: &bf16| x.to_bits()).collect())
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let l = lse
        .iter()
        .map(|b| {
            s.clone_dtoh(b)
                .map(|v| v.iter().map(|x: &f32| x.to_bits()).collect())
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((o, l))
}
