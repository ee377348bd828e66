//! FlashMLA-ETAP host library.
pub mod device;
pub mod error;
pub mod launch;
pub mod module;
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
pub mod decode;
pub mod reference;
