//! FlashMLA-ETAP host library: MLA decode attention (DeepSeek's 576/512 latent heads over a
//! paged KV cache of 64-token pages) on Hopper GPUs, with the kernels written in Rust
//! (`etap-kernel`) and launched through `cudarc`.
//!
//! The API follows FlashMLA's: build a [`decode::DecodePlan`] once per step from the cache
//! lengths (`get_mla_metadata`), then call [`decode::Decoder::decode`] for every layer
//! (`flash_mla_with_kvcache`). The call checks its buffers on the host and launches
//! asynchronously on the given stream, so a whole step can be captured in a CUDA graph
//! ([`Graph`]). [`reference`](mod@reference) holds the float64 CPU reference the tests
//! compare against.
//!
//! ```no_run
//! use flashmla_etap::decode::{DecodeConfig, DecodePlan, Decoder, KvCache};
//! use flashmla_etap::{Gpu, Result};
//! use half::bf16;
//!
//! fn main() -> Result<()> {
//!     let gpu = Gpu::open(0)?;
//!     let s = &gpu.stream;
//!     // Two requests with 300 and 1000 cached tokens, 16 query heads, one latent KV head.
//!     let (batch, h_q, lengths) = (2, 16, vec![300i32, 1000]);
//!     let max_pages = 16; // block-table width: 16 pages of 64 tokens = 1024 tokens
//!     let num_blocks = 32; // pages in the cache
//!
//!     // Device buffers: q [b, s_q, h_q, 576], cache [num_blocks, 64, h_kv, 576],
//!     // block table [b, max_pages], lengths [b], out [b, s_q, h_q, 512], lse [b, h_q, s_q].
//!     let q = s.alloc_zeros::<bf16>(batch * h_q * 576)?;
//!     let kv = s.alloc_zeros::<bf16>(num_blocks * 64 * 576)?;
//!     let table: Vec<i32> = (0..(batch * max_pages) as i32).collect();
//!     let block_table = s.clone_htod(&table)?;
//!     let cache_seqlens = s.clone_htod(&lengths)?;
//!     let mut out = s.alloc_zeros::<bf16>(batch * h_q * 512)?;
//!     let mut lse = s.alloc_zeros::<f32>(batch * h_q)?;
//!
//!     // Load the kernels once, wrap the cache, plan the step (reused by every layer).
//!     let decoder = Decoder::new(&gpu)?;
//!     let cache = KvCache::new(&gpu, &kv, num_blocks, 1)?;
//!     let config = DecodeConfig::new(batch, h_q, max_pages);
//!     let mut plan = DecodePlan::new(&gpu, config, &lengths)?;
//!     plan.validate_block_table(&table, num_blocks)?; // optional, where the table is built
//!
//!     // Decode (asynchronous), then read back (synchronises the stream).
//!     decoder.decode(s, &mut plan, &q, &cache, &block_table, &cache_seqlens, &mut out, &mut lse)?;
//!     let out: Vec<bf16> = s.clone_dtoh(&out)?;
//!     assert_eq!(out.len(), batch * h_q * 512);
//!     Ok(())
//! }
//! ```
//!
//! Without a GPU, [`Gpu::open`] returns an [`Error`] ([`Error::is_no_gpu`]) instead of
//! panicking. `examples/minimal_decode.rs` is the same flow with real data and a comparison
//! against the reference.
#![warn(missing_docs)]
pub mod device;
pub mod error;
pub mod launch;
pub mod module;
pub mod order;
pub mod tensor_map;
pub mod timing;

pub use device::Gpu;
pub use error::{Error, Result};
pub use launch::{launch, KernelArgs, LaunchSpec};
pub use module::{KernelAttrs, Kernels, PTX, PTXAS_REPORT};
pub use tensor_map::{encode_tiled, Swizzle, TensorMap, TmaDtype};
pub use timing::{GpuTimer, Graph};
pub mod bench;
pub mod check;
pub mod compare;
pub mod decode;
pub mod explain;
pub mod plot;
pub mod power;
pub mod probe;
pub mod reference;
