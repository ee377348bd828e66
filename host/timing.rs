//! GPU timing with CUDA events and CUDA-graph capture/replay.

use crate::error::{check, Error, Result};
use cudarc::driver::{sys, CudaEvent, CudaGraph, CudaStream};
use std::sync::Arc;

/// A start/stop pair of CUDA events that measure GPU time on one stream.
///
/// cudarc's `new_event(None)` creates events with `CU_EVENT_DISABLE_TIMING`, which makes
/// `cuEventElapsedTime` fail; these are created with `CU_EVENT_DEFAULT`.
#[derive(Debug)]
pub struct GpuTimer {
    start: CudaEvent,
    stop: CudaEvent,
    stream: Arc<CudaStream>,
}

impl GpuTimer {
    /// Creates the two timing events in `stream`'s context.
    pub fn new(stream: &Arc<CudaStream>) -> Result<GpuTimer> {
        let ctx = stream.context();
        let mk = || {
            ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| Error::driver("cuEventCreate(CU_EVENT_DEFAULT)", e))
        };
        Ok(GpuTimer {
            start: mk()?,
            stop: mk()?,
            stream: stream.clone(),
        })
    }

    /// Records the start event on the stream.
    pub fn start(&self) -> Result<()> {
        self.start
            .record(&self.stream)
            .map_err(|e| Error::driver("cuEventRecord(start)", e))
    }

    /// Records the stop event on the stream.
    pub fn stop(&self) -> Result<()> {
        self.stop
            .record(&self.stream)
            .map_err(|e| Error::driver("cuEventRecord(stop)", e))
    }

    /// Waits for the stop event and returns the GPU time between start and stop in ms.
    pub fn elapsed_ms(&self) -> Result<f32> {
        self.start
            .elapsed_ms(&self.stop)
            .map_err(|e| Error::driver("cuEventElapsedTime", e))
    }

    /// Times `iters` runs of `f` (after `warmup` untimed runs) and returns the mean ms per run.
    pub fn time_mean_ms(
        &self,
        warmup: usize,
        iters: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<f32> {
        if iters == 0 {
            return Err(Error::invalid("iters", "at least 1"));
        }
        for _ in 0..warmup {
            f()?;
        }
        self.start()?;
        for _ in 0..iters {
            f()?;
        }
        self.stop()?;
        Ok(self.elapsed_ms()? / iters as f32)
    }
}

/// An instantiated CUDA graph captured from a stream.
pub struct Graph {
    inner: CudaGraph,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("exec", &self.inner.cu_graph_exec())
            .finish()
    }
}

impl Graph {
    /// Captures everything `record` enqueues on `stream` (thread-local capture mode) and
    /// instantiates it. Nothing runs during capture. If `record` fails, the capture is ended
    /// and discarded and its error is returned.
    ///
    /// Capturing needs a non-default stream (as [`crate::device::Gpu::stream`]) and no hidden
    /// cross-stream events (the `Gpu` context has cudarc's event tracking off).
    pub fn capture(
        stream: &Arc<CudaStream>,
        record: impl FnOnce(&Arc<CudaStream>) -> Result<()>,
    ) -> Result<Graph> {
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| Error::driver("cuStreamBeginCapture", e))?;
        let recorded = record(stream);
        let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        recorded?;
        match ended {
            Ok(Some(inner)) => Ok(Graph { inner }),
            Ok(None) => Err(Error::Other(
                "stream capture produced an empty graph (nothing was enqueued)".into(),
            )),
            Err(e) => Err(Error::driver("cuStreamEndCapture / cuGraphInstantiate", e)),
        }
    }

    /// Launches the graph on `stream` (any stream of the capturing context).
    pub fn launch(&self, stream: &CudaStream) -> Result<()> {
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| Error::driver("cuCtxSetCurrent", e))?;
        // SAFETY: the exec handle is owned by `self.inner` and alive.
        check(
            unsafe { sys::cuGraphLaunch(self.inner.cu_graph_exec(), stream.cu_stream()) },
            || "cuGraphLaunch".into(),
        )
    }

    /// Uploads the graph's resources ahead of its first launch.
    pub fn upload(&self) -> Result<()> {
        self.inner
            .upload()
            .map_err(|e| Error::driver("cuGraphUpload", e))
    }
}
