//! TMA tensor maps (`cuTensorMapEncodeTiled`) with the driver's rules checked up front, so
//! a bad shape is an [`Error::InvalidArgument`] naming the rule instead of a bare
//! `CUDA_ERROR_INVALID_VALUE`.
//!
//! Rust kernels have no `__grid_constant__` parameters, so a tensor map is not passed by
//! value: [`TensorMap::upload`] puts its 128 bytes in device global memory and the kernel
//! gets a pointer (it then needs a `fence.proxy.tensormap` acquire before first use, or the
//! map must be written before the launch that reads it, as here).

use crate::device::{driver_present, Gpu};
use crate::error::{check, Error, Result};
use cudarc::driver::{sys, CudaSlice};

/// An encoded tensor map: 128 opaque bytes, 64-byte aligned (the `CUtensorMap` layout).
#[repr(C, align(64))]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TensorMap(pub [u8; 128]);

impl std::fmt::Debug for TensorMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorMap(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

const _: () = assert!(std::mem::size_of::<TensorMap>() == std::mem::size_of::<sys::CUtensorMap>());
const _: () =
    assert!(std::mem::align_of::<TensorMap>() >= std::mem::align_of::<sys::CUtensorMap>());

/// Element type of the tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmaDtype {
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
    /// 32-bit float.
    F32,
    /// Bytes.
    U8,
}

impl TmaDtype {
    /// Bytes per element.
    pub fn size_bytes(self) -> u64 {
        match self {
            TmaDtype::Bf16 | TmaDtype::F16 => 2,
            TmaDtype::F32 => 4,
            TmaDtype::U8 => 1,
        }
    }
    fn to_cu(self) -> sys::CUtensorMapDataType {
        use sys::CUtensorMapDataType::*;
        match self {
            TmaDtype::Bf16 => CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            TmaDtype::F16 => CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            TmaDtype::F32 => CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
            TmaDtype::U8 => CU_TENSOR_MAP_DATA_TYPE_UINT8,
        }
    }
}

/// Shared-memory swizzle of the box (must match the wgmma descriptors' layout type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swizzle {
    /// No swizzle.
    None,
    /// 32-byte swizzle.
    B32,
    /// 64-byte swizzle.
    B64,
    /// 128-byte swizzle (what the kernels use: rows of 64 16-bit elements).
    B128,
}

impl Swizzle {
    /// Largest inner box extent in bytes this swizzle allows (`None`: no limit).
    pub fn max_inner_bytes(self) -> Option<u64> {
        match self {
            Swizzle::None => None,
            Swizzle::B32 => Some(32),
            Swizzle::B64 => Some(64),
            Swizzle::B128 => Some(128),
        }
    }
    fn to_cu(self) -> sys::CUtensorMapSwizzle {
        use sys::CUtensorMapSwizzle::*;
        match self {
            Swizzle::None => CU_TENSOR_MAP_SWIZZLE_NONE,
            Swizzle::B32 => CU_TENSOR_MAP_SWIZZLE_32B,
            Swizzle::B64 => CU_TENSOR_MAP_SWIZZLE_64B,
            Swizzle::B128 => CU_TENSOR_MAP_SWIZZLE_128B,
        }
    }
}

/// Checks the `cuTensorMapEncodeTiled` rules (interleave none, element strides 1) on the CPU.
///
/// `dims` are innermost first; `strides_bytes[i]` is the byte stride of dimension `i + 1`
/// (the innermost dimension is contiguous), so it has `dims.len() - 1` entries.
pub fn validate_tiled(
    dtype: TmaDtype,
    base: u64,
    dims: &[u64],
    strides_bytes: &[u64],
    box_dims: &[u32],
    swizzle: Swizzle,
) -> Result<()> {
    let rank = dims.len();
    if !(1..=5).contains(&rank) {
        return Err(Error::invalid(
            "dims",
            format!("rank {rank} is not in 1..=5"),
        ));
    }
    if strides_bytes.len() != rank - 1 {
        return Err(Error::invalid(
            "strides_bytes",
            format!(
                "needs rank - 1 = {} entries (strides of dims 1..rank), got {}",
                rank - 1,
                strides_bytes.len()
            ),
        ));
    }
    if box_dims.len() != rank {
        return Err(Error::invalid(
            "box_dims",
            format!("needs {rank} entries (one per dim), got {}", box_dims.len()),
        ));
    }
    if !base.is_multiple_of(16) {
        return Err(Error::invalid(
            "base",
            format!("global address {base:#x} is not 16-byte aligned"),
        ));
    }
    for (i, &d) in dims.iter().enumerate() {
        if d == 0 || d > 1u64 << 32 {
            return Err(Error::invalid(
                "dims",
                format!("dims[{i}] = {d} is not in 1..=2^32"),
            ));
        }
    }
    let elem = dtype.size_bytes();
    for (i, &s) in strides_bytes.iter().enumerate() {
        if !s.is_multiple_of(16) {
            return Err(Error::invalid(
                "strides_bytes",
                format!(
                    "stride of dim {} = {s} bytes is not a multiple of 16",
                    i + 1
                ),
            ));
        }
        if s >= 1u64 << 40 {
            return Err(Error::invalid(
                "strides_bytes",
                format!("stride of dim {} = {s} bytes is not below 2^40", i + 1),
            ));
        }
    }
    if let Some(&s1) = strides_bytes.first() {
        if s1 < dims[0] * elem {
            return Err(Error::invalid(
                "strides_bytes",
                format!(
                    "stride of dim 1 = {s1} bytes is smaller than a row of dims[0] = {} elements ({} bytes)",
                    dims[0],
                    dims[0] * elem
                ),
            ));
        }
    }
    for (i, &b) in box_dims.iter().enumerate() {
        if b == 0 || b > 256 {
            return Err(Error::invalid(
                "box_dims",
                format!("box_dims[{i}] = {b} is not in 1..=256"),
            ));
        }
    }
    let inner_bytes = box_dims[0] as u64 * elem;
    if !inner_bytes.is_multiple_of(16) {
        return Err(Error::invalid(
            "box_dims",
            format!("inner box extent {inner_bytes} bytes is not a multiple of 16"),
        ));
    }
    if let Some(max) = swizzle.max_inner_bytes() {
        if inner_bytes > max {
            return Err(Error::invalid(
                "box_dims",
                format!("inner box extent {inner_bytes} bytes exceeds {max} bytes allowed by {swizzle:?} swizzle"),
            ));
        }
    }
    Ok(())
}

/// Encodes a tiled tensor map (interleave none, element strides 1, L2 promotion 128 B,
/// out-of-bounds elements read as zero). See [`validate_tiled`] for the argument rules.
///
/// A KV box row is 128 bytes (64 elements of one token), and a token's nine rows go out in
/// loads issued microseconds apart (a seesaw stage in two halves, the transposed kernels'
/// stage in block groups), streamed evict-first past the L2. Promoted to 256 bytes, each
/// miss also fetched its neighbour, which its own load, issued later, likely had to fetch
/// again. H200, A-B-B-A over 17 points: 13 faster by 1.3-5.3 % at 128 bytes (b 16, h_q 16,
/// 64K 287.4 → 275.2 µs), the others level (KV held in the L2, or h_q 128 bound by the
/// tensor cores); the same without promotion.
pub fn encode_tiled(
    dtype: TmaDtype,
    base: u64,
    dims: &[u64],
    strides_bytes: &[u64],
    box_dims: &[u32],
    swizzle: Swizzle,
) -> Result<TensorMap> {
    validate_tiled(dtype, base, dims, strides_bytes, box_dims, swizzle)?;
    if !driver_present() {
        return Err(Error::NoDriver(
            "cuTensorMapEncodeTiled needs the CUDA driver library (libcuda.so)".into(),
        ));
    }
    let rank = dims.len();
    let elem_strides = [1u32; 5];
    let mut map = TensorMap([0; 128]);
    // SAFETY: the arrays have `rank` (strides: rank - 1) entries as validated above; the
    // output is a 128-byte, 64-byte-aligned buffer with CUtensorMap's layout. The call only
    // encodes and does not dereference `base`.
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            (&mut map as *mut TensorMap).cast::<sys::CUtensorMap>(),
            dtype.to_cu(),
            rank as u32,
            base as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides_bytes.as_ptr(),
            box_dims.as_ptr(),
            elem_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle.to_cu(),
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    check(r, || {
        format!(
            "cuTensorMapEncodeTiled({dtype:?}, base {base:#x}, dims {dims:?}, strides {strides_bytes:?}, \
             box {box_dims:?}, {swizzle:?})"
        )
    })?;
    Ok(map)
}

impl TensorMap {
    /// The opaque 128-byte descriptor, as the kernel parameter takes it.
    pub fn as_bytes(&self) -> &[u8; 128] {
        &self.0
    }

    /// Copies the map into a new 128-byte device buffer (cudaMalloc alignment is ≥ 256 B)
    /// on `gpu.stream`; pass its device pointer to the kernel.
    pub fn upload(&self, gpu: &Gpu) -> Result<CudaSlice<u8>> {
        Self::upload_all(std::slice::from_ref(self), gpu)
    }

    /// Copies several maps into one device buffer, 128 bytes each, in order.
    pub fn upload_all(maps: &[TensorMap], gpu: &Gpu) -> Result<CudaSlice<u8>> {
        let bytes: Vec<u8> = maps.iter().flat_map(|m| m.0).collect();
        if bytes.is_empty() {
            return Err(Error::invalid("maps", "at least one tensor map"));
        }
        gpu.stream
            .clone_htod(&bytes[..])
            .map_err(|e| Error::driver("uploading tensor maps (cuMemcpyHtoDAsync)", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg_of(r: Result<()>) -> &'static str {
        match r {
            Err(Error::InvalidArgument { arg, .. }) => arg,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    /// The paged KV cache as [rows, 576] bf16, boxes of 64 columns × 64 rows, 128 B swizzle.
    #[test]
    fn kv_cache_map_is_valid() {
        let rows = 1024 * 64;
        assert!(validate_tiled(
            TmaDtype::Bf16,
            0x7f00_0000_0000,
            &[576, rows],
            &[1152],
            &[64, 64],
            Swizzle::B128
        )
        .is_ok());
        // 3-D: [576, h_kv, rows], as the decoder encodes it, at every box height it loads.
        for box_tokens in etap_kernel::config::KV_BOX_TOKENS {
            assert!(validate_tiled(
                TmaDtype::Bf16,
                0x1000,
                &[576, 2, rows],
                &[1152, 1152 * 2],
                &[64, 1, box_tokens],
                Swizzle::B128
            )
            .is_ok());
        }
    }

    #[test]
    fn rejects_broken_rules() {
        let ok = |b: u64, d: &[u64], s: &[u64], bx: &[u32], sw: Swizzle| {
            validate_tiled(TmaDtype::Bf16, b, d, s, bx, sw)
        };
        assert_eq!(arg_of(ok(0, &[], &[], &[], Swizzle::None)), "dims");
        assert_eq!(
            arg_of(ok(0, &[8, 8, 8, 8, 8, 8], &[16; 5], &[8; 6], Swizzle::None)),
            "dims"
        );
        assert_eq!(
            arg_of(ok(8, &[576, 64], &[1152], &[64, 64], Swizzle::B128)),
            "base"
        );
        assert_eq!(
            arg_of(ok(0, &[576, 64], &[1160], &[64, 64], Swizzle::B128)),
            "strides_bytes"
        );
        assert_eq!(
            arg_of(ok(0, &[576, 64], &[1152, 16], &[64, 64], Swizzle::B128)),
            "strides_bytes"
        );
        assert_eq!(
            arg_of(ok(0, &[576, 64], &[1024], &[64, 64], Swizzle::B128)),
            "strides_bytes"
        );
        // 128 columns of bf16 = 256 bytes: too wide for the 128 B swizzle, fine without.
        assert_eq!(
            arg_of(ok(0, &[576, 64], &[1152], &[128, 64], Swizzle::B128)),
            "box_dims"
        );
        assert!(ok(0, &[576, 64], &[1152], &[128, 64], Swizzle::None).is_ok());
        assert_eq!(
            arg_of(ok(0, &[576, 512], &[1152], &[64, 512], Swizzle::B128)),
            "box_dims"
        );
        assert_eq!(
            arg_of(ok(0, &[576, 64], &[1152], &[4, 64], Swizzle::None)),
            "box_dims"
        );
        assert_eq!(
            arg_of(ok(0, &[576, 64], &[1152], &[64], Swizzle::None)),
            "box_dims"
        );
        assert_eq!(
            arg_of(ok(0, &[0, 64], &[1152], &[64, 64], Swizzle::None)),
            "dims"
        );
    }

    #[test]
    fn encode_without_driver_is_an_error_not_a_panic() {
        let r = encode_tiled(TmaDtype::F32, 0, &[64], &[], &[32], Swizzle::B128);
        if !driver_present() {
            assert!(matches!(r, Err(Error::NoDriver(_))));
        }
    }
}
