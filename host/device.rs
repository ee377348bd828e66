//! Opening the GPU: driver detection, device checks and the context/stream pair every
//! other module works with.
//!
//! cudarc loads `libcuda.so` lazily and PANICS on first use when it is absent, so
//! [`driver_present`] / [`Gpu::open`] look for the library before any cudarc call and turn
//! every failure into an [`Error`] (tests skip on [`Error::is_no_gpu`]).

use crate::error::{check, Error, Result};
use cudarc::driver::{result, sys, CudaContext, CudaStream};
use std::sync::Arc;

/// Compute capability the kernels are built for (`sm_90a`).
pub const REQUIRED_CC: (i32, i32) = (9, 0);

/// An opened Hopper GPU: its context, the stream the library launches on, and the device
/// facts the planner and launchers need.
#[derive(Debug, Clone)]
pub struct Gpu {
    /// The device's primary context.
    pub ctx: Arc<CudaContext>,
    /// A dedicated (non-default) stream: capturable into CUDA graphs.
    pub stream: Arc<CudaStream>,
    /// Device ordinal it was opened with.
    pub ordinal: usize,
    /// Device name as the driver reports it.
    pub name: String,
    /// Streaming multiprocessors: sizes the split-KV grid.
    pub sm_count: u32,
    /// Compute capability (major, minor).
    pub cc: (i32, i32),
    /// `cuDriverGetVersion`, e.g. 13000 for CUDA 13.0.
    pub driver_version: i32,
    /// Largest dynamic shared memory a CTA may opt into (bytes).
    pub max_smem_optin: u32,
    /// Total device memory (bytes).
    pub total_mem: usize,
    /// L2 cache size (bytes): above it the decode streams the KV cache past the L2.
    pub l2_bytes: u64,
}

/// Whether a CUDA driver library can be loaded (without panicking when it cannot).
pub fn driver_present() -> bool {
    // SAFETY: only tries `dlopen` on the candidate library names; nothing is called.
    unsafe { sys::is_culib_present() }
}

/// Loads and initialises the driver; returns the number of devices.
pub fn device_count() -> Result<usize> {
    ensure_driver()?;
    guard("cuDeviceGetCount", || {
        cudarc::driver::CudaContext::device_count()
            .map(|n| n.max(0) as usize)
            .map_err(|e| Error::driver("cuDeviceGetCount", e))
    })
}

/// The driver's CUDA version (`cuDriverGetVersion`, e.g. 13000), after checking the driver.
pub fn driver_version() -> Result<i32> {
    ensure_driver()?;
    guard("cuDriverGetVersion", || {
        let mut v = 0i32;
        // SAFETY: writes one int.
        check(unsafe { sys::cuDriverGetVersion(&mut v) }, || {
            "cuDriverGetVersion".into()
        })?;
        Ok(v)
    })
}

fn ensure_driver() -> Result<()> {
    if !driver_present() {
        return Err(Error::NoDriver(
            "libcuda.so (the NVIDIA driver library) was not found; this machine has no \
             NVIDIA driver installed"
                .into(),
        ));
    }
    guard("cuInit", || match result::init() {
        Ok(()) => Ok(()),
        Err(e) if e.0 == sys::CUresult::CUDA_ERROR_NO_DEVICE => Err(Error::NoDevice),
        Err(e) => Err(Error::NoDriver(format!(
            "cuInit failed: {:?} (driver present but not usable)",
            e.0
        ))),
    })
}

/// Runs driver code, converting a cudarc panic (e.g. a symbol missing from an old driver)
/// into an error instead of unwinding through the caller.
fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::NoDriver(format!("{what}: cudarc panicked: {msg}")))
        }
    }
}

impl Gpu {
    /// Opens device `ordinal`: checks the driver, the device count and compute capability
    /// 9.0, retains the primary context and creates a dedicated stream.
    ///
    /// cudarc's per-allocation event tracking is switched off on the context. With it on,
    /// every `CudaSlice` records and waits on hidden `CUevent`s around each use; those are
    /// invisible to raw-pointer launches through [`crate::launch::launch`] (so they protect
    /// nothing there) and they break CUDA-graph capture (an event recorded outside a capture
    /// cannot be waited on inside it). The library uses one stream per `Gpu`, so stream
    /// ordering already gives the needed synchronisation; callers that use several streams
    /// must order them themselves.
    pub fn open(ordinal: usize) -> Result<Gpu> {
        ensure_driver()?;
        guard("opening the device", || Self::open_inner(ordinal))
    }

    fn open_inner(ordinal: usize) -> Result<Gpu> {
        let count = CudaContext::device_count()
            .map_err(|e| Error::driver("cuDeviceGetCount", e))?
            .max(0) as usize;
        if ordinal >= count {
            return Err(Error::NoDevice);
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| Error::driver(format!("creating a context on device {ordinal}"), e))?;
        // SAFETY: called before any allocation on this context; see the doc comment above.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx
            .name()
            .map_err(|e| Error::driver("cuDeviceGetName", e))?;
        let cc = ctx
            .compute_capability()
            .map_err(|e| Error::driver("cuDeviceGetAttribute(compute capability)", e))?;
        if cc != REQUIRED_CC {
            return Err(Error::UnsupportedDevice {
                name,
                major: cc.0,
                minor: cc.1,
            });
        }
        let attr = |a: sys::CUdevice_attribute, what: &str| {
            ctx.attribute(a)
                .map_err(|e| Error::driver(format!("cuDeviceGetAttribute({what})"), e))
        };
        use sys::CUdevice_attribute::*;
        let sm_count = attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "SM count")? as u32;
        let max_smem_optin = attr(
            CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            "max shared memory opt-in",
        )? as u32;
        let l2_bytes = attr(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, "L2 cache size")? as u64;
        let total_mem = ctx
            .total_mem()
            .map_err(|e| Error::driver("cuDeviceTotalMem", e))?;
        let mut driver_version = 0i32;
        // SAFETY: writes one int.
        check(
            unsafe { sys::cuDriverGetVersion(&mut driver_version) },
            || "cuDriverGetVersion".into(),
        )?;
        let stream = ctx
            .new_stream()
            .map_err(|e| Error::driver("cuStreamCreate", e))?;
        Ok(Gpu {
            ctx,
            stream,
            ordinal,
            name,
            sm_count,
            cc,
            driver_version,
            max_smem_optin,
            total_mem,
            l2_bytes,
        })
    }

    /// Blocks until all work queued on [`Gpu::stream`] has finished, reporting any
    /// asynchronous error (e.g. a kernel fault) it surfaces.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| Error::driver("cuStreamSynchronize", e))
    }

    /// Checks that `ctx`, the context of the stream or buffer passed as `arg`, is this
    /// GPU's: a kernel launched here must not be handed memory of another device, whose
    /// addresses mean nothing on this one (an illegal-address fault, which ends the
    /// context), nor a stream of another (the launch fails there).
    pub fn check_owns(&self, arg: &'static str, ctx: &CudaContext) -> Result<()> {
        if ctx.cu_ctx() == self.ctx.cu_ctx() {
            Ok(())
        } else {
            Err(Error::invalid(
                arg,
                format!(
                    "must belong to device {} (this GPU), not device {}",
                    self.ordinal,
                    ctx.ordinal()
                ),
            ))
        }
    }

    /// One line describing the device, e.g. for `flashmla-etap info`.
    pub fn describe(&self) -> String {
        format!(
            "device {}: {} (sm_{}{}), {} SMs, {:.1} GiB, L2 {} MiB, max dynamic smem {} KiB, driver CUDA {}.{}",
            self.ordinal,
            self.name,
            self.cc.0,
            self.cc.1,
            self.sm_count,
            self.total_mem as f64 / (1u64 << 30) as f64,
            self.l2_bytes >> 20,
            self.max_smem_optin / 1024,
            self.driver_version / 1000,
            (self.driver_version % 1000) / 10
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_never_panics() {
        // On a machine without a driver this must be a clean NoDriver error; with one it
        // opens or explains why not. Either way: no panic.
        match Gpu::open(0) {
            Ok(gpu) => assert_eq!(gpu.cc, REQUIRED_CC),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        if !driver_present() {
            assert!(matches!(Gpu::open(0), Err(Error::NoDriver(_))));
            assert!(matches!(device_count(), Err(Error::NoDriver(_))));
        }
    }
}
