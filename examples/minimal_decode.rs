//! The smallest correct MLA decode: open the GPU, upload a paged KV cache, plan, decode,
//! read back, and compare a few values with the float64 CPU reference.
//!
//! Run: `cargo run --release --example minimal_decode`. Without a GPU it prints
//! `skipped: no GPU: <why>` and exits 0.

use flashmla_etap::check::{main_on_gpu, reference_for, upload_inputs};
use flashmla_etap::decode::{DecodeConfig, DecodePlan, Decoder, KvCache};
use flashmla_etap::reference::{generate, Dtype, MlaShape};
use flashmla_etap::{Gpu, Result};
use half::bf16;

fn main() -> std::process::ExitCode {
    main_on_gpu(run)
}

fn run(gpu: &Gpu) -> Result<()> {
    // 2 requests of 16 query heads (one query position each) over 300 and 1000 cached tokens.
    let (h_q, lengths) = (16, vec![300, 1000]);
    // Host data: q [2, 1, 16, 576], a cache of 64-token pages [num_blocks, 64, 1, 576] in
    // random page order, the block table [2, max_pages] and the lengths.
    let shape = MlaShape::for_lengths(1, h_q, 1, 64, &lengths);
    let host = generate(&shape, &lengths, Dtype::Bf16, 1)?;

    // Upload (q and the cache converted to bf16).
    let s = &gpu.stream;
    let dev = upload_inputs::<bf16>(s, &host)?;
    let mut out = s.alloc_zeros::<bf16>(shape.out_len())?;
    let mut lse = s.alloc_zeros::<f32>(shape.lse_len())?;

    // Load the kernels once; wrap the cache; plan the step from the host lengths.
    let decoder = Decoder::new(gpu)?;
    let cache = KvCache::new(gpu, &dev.kv_cache, shape.num_blocks, 1)?;
    let config = DecodeConfig::new(lengths.len(), h_q, shape.max_pages);
    let mut plan = DecodePlan::new(gpu, config, &lengths)?;
    plan.validate_block_table(&host.block_table, shape.num_blocks)?;

    // Decode (asynchronous on the stream), then read back (synchronises).
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
    let out: Vec<bf16> = s.clone_dtoh(&out)?;

    // Compare with the float64 reference.
    let scale = config.softmax_scale as f64;
    let reference = reference_for(&shape, &host, scale, false)?;
    let mut worst = 0.0f64;
    for i in [0, 1, 511, 512 * 16, out.len() - 1] {
        let (got, want) = (out[i].to_f64(), reference.out[i]);
        println!("out[{i:>5}] = {got:+.6}  reference {want:+.6}");
        worst = worst.max((got - want).abs());
    }
    // bf16 keeps 8 significant bits: |out| < 1 is within ~2^-8 of the exact value.
    if worst > 1.0 / 128.0 {
        return Err(flashmla_etap::Error::Other(format!(
            "output differs from the reference by {worst:.2e}"
        )));
    }
    println!("ok: {} values within {worst:.2e} of the reference", 5);
    Ok(())
}
