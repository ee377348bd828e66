//! Raw kernel launches through `cuLaunchKernelEx`, with optional thread-block clusters and
//! programmatic dependent launch.

use crate::error::{check, Error, Result};
use cudarc::driver::{sys, CudaStream};
use std::ffi::c_void;

/// Grid, block, dynamic shared memory and cluster shape of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Grid size in blocks (x, y, z).
    pub grid: (u32, u32, u32),
    /// Block size in threads (x, y, z).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory in bytes (above 48 KiB the kernel must first be allowed it
    /// with [`crate::module::Kernels::set_max_dynamic_smem`]).
    pub dyn_smem: u32,
    /// Thread-block cluster shape; each grid dimension must be a multiple of it.
    pub cluster: Option<(u32, u32, u32)>,
    /// Programmatic dependent launch: the grid may start while the previous kernel of the
    /// stream still runs (once each of its CTAs has executed
    /// `griddepcontrol.launch_dependents` or exited). The kernel must execute
    /// `griddepcontrol.wait` before it touches memory that kernel reads or writes.
    pub programmatic: bool,
}

impl LaunchSpec {
    /// A 1-D grid of 1-D blocks without clusters.
    pub fn linear(grid: u32, block: u32, dyn_smem: u32) -> Self {
        LaunchSpec {
            grid: (grid, 1, 1),
            block: (block, 1, 1),
            dyn_smem,
            cluster: None,
            programmatic: false,
        }
    }

    /// Checks the shape rules the driver would otherwise reject with a bare error code.
    pub fn validate(&self) -> Result<()> {
        let (gx, gy, gz) = self.grid;
        let (bx, by, bz) = self.block;
        if gx == 0 || gy == 0 || gz == 0 {
            return Err(Error::invalid(
                "grid",
                format!("{:?} has a zero dimension", self.grid),
            ));
        }
        if gy > 65535 || gz > 65535 || gx > i32::MAX as u32 {
            return Err(Error::invalid(
                "grid",
                format!(
                    "{:?}: y and z are at most 65535, x at most 2^31-1",
                    self.grid
                ),
            ));
        }
        if bx == 0 || by == 0 || bz == 0 {
            return Err(Error::invalid(
                "block",
                format!("{:?} has a zero dimension", self.block),
            ));
        }
        let threads = bx as u64 * by as u64 * bz as u64;
        if threads > 1024 || bz > 64 {
            return Err(Error::invalid(
                "block",
                format!(
                    "{:?}: at most 1024 threads per block and z ≤ 64",
                    self.block
                ),
            ));
        }
        if let Some((cx, cy, cz)) = self.cluster {
            if cx == 0 || cy == 0 || cz == 0 {
                return Err(Error::invalid("cluster", "a cluster dimension is zero"));
            }
            if gx % cx != 0 || gy % cy != 0 || gz % cz != 0 {
                return Err(Error::invalid(
                    "cluster",
                    format!(
                        "grid {:?} is not a multiple of the cluster {:?}",
                        self.grid,
                        (cx, cy, cz)
                    ),
                ));
            }
            if cx as u64 * cy as u64 * cz as u64 > 16 {
                return Err(Error::invalid(
                    "cluster",
                    "at most 16 CTAs per cluster (8 without the non-portable opt-in)",
                ));
            }
        }
        Ok(())
    }
}

/// Launches `func` on `stream`.
///
/// # Safety
/// `func` must be a live function of a module loaded in `stream`'s context, and `args` must
/// hold, in order, one pointer per kernel parameter to a value of exactly that parameter's
/// type (see [`KernelArgs`] / [`kernel_args!`](crate::kernel_args)); every device pointer
/// passed must stay valid until the kernel has finished.
pub unsafe fn launch(
    func: sys::CUfunction,
    spec: &LaunchSpec,
    stream: &CudaStream,
    args: &mut [*mut c_void],
) -> Result<()> {
    let mut attrs = Vec::with_capacity(2);
    let config = launch_config(func, spec, stream, &mut attrs)?;
    let params = if args.is_empty() {
        std::ptr::null_mut()
    } else {
        args.as_mut_ptr()
    };
    check(
        sys::cuLaunchKernelEx(&config, func, params, std::ptr::null_mut()),
        || format!("cuLaunchKernelEx({spec:?})"),
    )
}

/// How many clusters of `spec`'s cluster shape (`spec.cluster` must be set) can be
/// resident at once for `func` at `spec`'s block size and shared memory
/// (`cuOccupancyMaxActiveClusters`).
///
/// # Safety
/// `func` must be a live function of a module loaded in `stream`'s context.
pub unsafe fn max_active_clusters(
    func: sys::CUfunction,
    spec: &LaunchSpec,
    stream: &CudaStream,
) -> Result<u32> {
    if spec.cluster.is_none() {
        return Err(Error::invalid("spec", "no cluster shape"));
    }
    let mut attrs = Vec::with_capacity(2);
    let config = launch_config(func, spec, stream, &mut attrs)?;
    let mut n = 0;
    check(
        sys::cuOccupancyMaxActiveClusters(&mut n, func, &config),
        || format!("cuOccupancyMaxActiveClusters({spec:?})"),
    )?;
    Ok(n.max(0) as u32)
}

/// Checks `spec` and `func`, makes `stream`'s context current and returns the driver's
/// launch configuration of `spec` on `stream`; `attrs` holds its attributes and must
/// outlive it.
fn launch_config(
    func: sys::CUfunction,
    spec: &LaunchSpec,
    stream: &CudaStream,
    attrs: &mut Vec<sys::CUlaunchAttribute>,
) -> Result<sys::CUlaunchConfig> {
    spec.validate()?;
    if func.is_null() {
        return Err(Error::invalid("func", "null CUfunction"));
    }
    stream
        .context()
        .bind_to_thread()
        .map_err(|e| Error::driver("cuCtxSetCurrent", e))?;
    if let Some((x, y, z)) = spec.cluster {
        // SAFETY: an all-zero CUlaunchAttribute is a valid bit pattern (plain C data).
        let mut a: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        a.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
        a.value.clusterDim.x = x;
        a.value.clusterDim.y = y;
        a.value.clusterDim.z = z;
        attrs.push(a);
    }
    if spec.programmatic {
        // SAFETY: as above.
        let mut a: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        a.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        a.value.programmaticStreamSerializationAllowed = 1;
        attrs.push(a);
    }
    Ok(sys::CUlaunchConfig {
        gridDimX: spec.grid.0,
        gridDimY: spec.grid.1,
        gridDimZ: spec.grid.2,
        blockDimX: spec.block.0,
        blockDimY: spec.block.1,
        blockDimZ: spec.block.2,
        sharedMemBytes: spec.dyn_smem,
        hStream: stream.cu_stream(),
        attrs: if attrs.is_empty() {
            std::ptr::null_mut()
        } else {
            attrs.as_mut_ptr()
        },
        numAttrs: attrs.len() as u32,
    })
}

/// One kernel argument value, stored in an 8-byte slot (the driver reads as many bytes
/// as the parameter has, from the slot's start; x86-64 and aarch64 are little-endian).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A device pointer (`CUdeviceptr`) or any 64-bit integer.
    U64(u64),
    /// A 32-bit unsigned integer.
    U32(u32),
    /// A 32-bit signed integer.
    I32(i32),
    /// A 32-bit float.
    F32(f32),
}

/// An owned list of kernel arguments; [`KernelArgs::pointers`] gives the `void**` array
/// [`launch`] takes. Keep the `KernelArgs` alive (and unmoved) until `launch` returns.
#[derive(Debug, Default, Clone)]
pub struct KernelArgs {
    slots: Vec<u64>,
}

impl KernelArgs {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends one argument (builder style, in the kernel's parameter order).
    pub fn arg(mut self, a: Arg) -> Self {
        self.slots.push(match a {
            Arg::U64(v) => v,
            Arg::U32(v) => v as u64,
            Arg::I32(v) => v as u32 as u64,
            Arg::F32(v) => v.to_bits() as u64,
        });
        self
    }
    /// A device pointer (`CUdeviceptr`).
    pub fn ptr(self, p: u64) -> Self {
        self.arg(Arg::U64(p))
    }
    /// A 64-bit integer argument.
    pub fn u64(self, v: u64) -> Self {
        self.arg(Arg::U64(v))
    }
    /// A 32-bit unsigned argument.
    pub fn u32(self, v: u32) -> Self {
        self.arg(Arg::U32(v))
    }
    /// A 32-bit signed argument.
    pub fn i32(self, v: i32) -> Self {
        self.arg(Arg::I32(v))
    }
    /// A 32-bit float argument.
    pub fn f32(self, v: f32) -> Self {
        self.arg(Arg::F32(v))
    }
    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.slots.len()
    }
    /// True when there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
    /// Pointers to each slot, valid while `self` is borrowed.
    pub fn pointers(&mut self) -> Vec<*mut c_void> {
        self.slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect()
    }
}

/// Builds the `[*mut c_void; N]` argument array for [`launch`] from mutable locals:
/// `let mut args = kernel_args![a_ptr, out_ptr, n];` where each is a `u64`/`u32`/`i32`/`f32`
/// local (its type must match the kernel parameter exactly).
#[macro_export]
macro_rules! kernel_args {
    ($($x:ident),* $(,)?) => {
        [$(&mut $x as *mut _ as *mut ::std::ffi::c_void),*]
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_validation() {
        assert!(LaunchSpec::linear(132, 384, 200 * 1024).validate().is_ok());
        assert!(LaunchSpec::linear(0, 128, 0).validate().is_err());
        assert!(LaunchSpec::linear(1, 2048, 0).validate().is_err());
        let mut s = LaunchSpec::linear(6, 128, 0);
        s.cluster = Some((2, 1, 1));
        assert!(s.validate().is_ok());
        s.cluster = Some((4, 1, 1));
        assert!(matches!(
            s.validate(),
            Err(Error::InvalidArgument { arg: "cluster", .. })
        ));
    }

    #[test]
    fn args_are_stored_little_endian_in_slots() {
        let mut a = KernelArgs::new()
            .ptr(0xdead_beef_0000)
            .u32(7)
            .i32(-1)
            .f32(1.5);
        assert_eq!(a.len(), 4);
        let p = a.pointers();
        unsafe {
            assert_eq!(*(p[0] as *const u64), 0xdead_beef_0000);
            assert_eq!(*(p[1] as *const u32), 7);
            assert_eq!(*(p[2] as *const i32), -1);
            assert_eq!(*(p[3] as *const f32), 1.5);
        }
        let mut x = 3u64;
        let mut n = 5u32;
        let arr = kernel_args![x, n];
        assert_eq!(arr.len(), 2);
        unsafe { assert_eq!(*(arr[1] as *const u32), 5) };
    }
}
