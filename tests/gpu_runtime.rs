//! The host runtime on a real GPU: module loading (embedded cubin, PTX JIT), raw launches
//! with and without clusters, event timing, CUDA-graph capture and TMA tensor-map encoding.
//! Launch tests use the hand-written kernels of `tests/data/probe.ptx`, so they do not
//! depend on the device crate's kernels. Reported as ignored, with the reason, where there
//! is no usable GPU.

mod common;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use flashmla_etap::module::{self, ImageKind, Kernels};
use flashmla_etap::tensor_map::{encode_tiled, Swizzle, TmaDtype};
use flashmla_etap::{launch, Error, GpuTimer, Graph, KernelArgs, LaunchSpec};
use std::sync::Arc;

const PROBE_PTX: &str = include_str!("data/probe.ptx");

fn dptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    s.device_ptr(stream).0
}

/// Launches `probe_add(a, out, n)`: out[i] = a[i] + 1 for i < n, blocks of 128 threads.
fn launch_probe(
    k: &Kernels,
    stream: &Arc<CudaStream>,
    a: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    n: u32,
) -> flashmla_etap::Result<()> {
    let f = k.function("probe_add")?;
    let mut args = KernelArgs::new()
        .ptr(dptr(a, stream))
        .ptr(dptr(out, stream))
        .u32(n);
    let spec = LaunchSpec::linear(n.div_ceil(128), 128, 0);
    unsafe { launch(f, &spec, stream, &mut args.pointers()) }
}

fn gpu_is_hopper_and_described() {
    let gpu = require_gpu!("gpu_is_hopper_and_described");
    assert_eq!(gpu.cc, (9, 0));
    assert!(gpu.sm_count >= 100, "{}", gpu.describe());
    assert!(gpu.max_smem_optin >= 227 * 1024, "{}", gpu.describe());
    println!("{}", gpu.describe());
}

fn embedded_cubin_loads_with_attributes() {
    let gpu = require_gpu!("embedded_cubin_loads_with_attributes");
    let k = Kernels::load(&gpu).unwrap();
    if module::CUBIN.is_some() {
        assert_eq!(k.image_kind(), ImageKind::Cubin);
    }
    assert_eq!(k.names().len(), module::kernel_names().len());
    for name in module::kernel_names() {
        let a = k.attributes(name).unwrap();
        println!("{name}: {a:?}");
        assert!(a.regs > 0 && a.max_threads > 0);
    }
    assert!(matches!(
        k.function("no_such_kernel"),
        Err(Error::InvalidArgument { arg: "name", .. })
    ));
}

fn ptx_jit_launch_round_trip() {
    let gpu = require_gpu!("ptx_jit_launch_round_trip");
    let k = Kernels::from_ptx_src(&gpu, PROBE_PTX).unwrap();
    assert_eq!(k.image_kind(), ImageKind::PtxJit);
    assert_eq!(k.names(), ["probe_add", "probe_cluster"]);
    let n = 300u32;
    let host: Vec<f32> = (0..384).map(|i| i as f32 * 0.5).collect();
    let a = gpu.stream.clone_htod(&host).unwrap();
    let mut out = gpu.stream.alloc_zeros::<f32>(384).unwrap();
    launch_probe(&k, &gpu.stream, &a, &mut out, n).unwrap();
    gpu.synchronize().unwrap();
    let got = gpu.stream.clone_dtoh(&out).unwrap();
    for i in 0..384 {
        let want = if (i as u32) < n { host[i] + 1.0 } else { 0.0 };
        assert_eq!(got[i], want, "element {i}");
    }
}

fn cluster_launch_sets_cluster_shape() {
    let gpu = require_gpu!("cluster_launch_sets_cluster_shape");
    let k = Kernels::from_ptx_src(&gpu, PROBE_PTX).unwrap();
    let f = k.function("probe_cluster").unwrap();
    for cluster in [None, Some((2, 1, 1)), Some((4, 1, 1))] {
        let grid = 8u32;
        let mut out = gpu.stream.alloc_zeros::<u32>(grid as usize).unwrap();
        let mut args = KernelArgs::new().ptr(dptr(&out, &gpu.stream));
        let mut spec = LaunchSpec::linear(grid, 32, 0);
        spec.cluster = cluster;
        unsafe { launch(f, &spec, &gpu.stream, &mut args.pointers()) }.unwrap();
        gpu.synchronize().unwrap();
        let got = gpu.stream.clone_dtoh(&out).unwrap();
        let size = cluster.map_or(1, |c| c.0);
        let want: Vec<u32> = (0..grid).map(|b| size * 256 + b % size).collect();
        assert_eq!(got, want, "cluster {cluster:?}");
        gpu.stream.memset_zeros(&mut out).unwrap();
    }
    // The driver-side rule is checked before the call.
    let mut spec = LaunchSpec::linear(6, 32, 0);
    spec.cluster = Some((4, 1, 1));
    let mut args = KernelArgs::new().ptr(0);
    assert!(unsafe { launch(f, &spec, &gpu.stream, &mut args.pointers()) }.is_err());
}

fn dynamic_smem_opt_in() {
    let gpu = require_gpu!("dynamic_smem_opt_in");
    let k = Kernels::from_ptx_src(&gpu, PROBE_PTX).unwrap();
    let want = gpu.max_smem_optin;
    k.set_max_dynamic_smem("probe_add", want).unwrap();
    assert_eq!(
        k.attributes("probe_add").unwrap().max_dynamic_smem as u32,
        want
    );
    assert!(k
        .set_max_dynamic_smem("probe_add", gpu.max_smem_optin + 4096)
        .is_err());
    // A launch with that much dynamic shared memory works once allowed.
    let f = k.function("probe_add").unwrap();
    let a = gpu.stream.alloc_zeros::<f32>(128).unwrap();
    let out = gpu.stream.alloc_zeros::<f32>(128).unwrap();
    let mut args = KernelArgs::new()
        .ptr(dptr(&a, &gpu.stream))
        .ptr(dptr(&out, &gpu.stream))
        .u32(128);
    let spec = LaunchSpec::linear(1, 128, want);
    unsafe { launch(f, &spec, &gpu.stream, &mut args.pointers()) }.unwrap();
    gpu.synchronize().unwrap();
    assert!(gpu
        .stream
        .clone_dtoh(&out)
        .unwrap()
        .iter()
        .all(|&x| x == 1.0));
}

fn timer_and_graph_replay() {
    let gpu = require_gpu!("timer_and_graph_replay");
    let k = Kernels::from_ptx_src(&gpu, PROBE_PTX).unwrap();
    let host: Vec<f32> = (0..256).map(|i| i as f32).collect();
    let a = gpu.stream.clone_htod(&host).unwrap();
    let mut out = gpu.stream.alloc_zeros::<f32>(256).unwrap();
    gpu.synchronize().unwrap();

    let timer = GpuTimer::new(&gpu.stream).unwrap();
    let ms = timer
        .time_mean_ms(2, 10, || launch_probe(&k, &gpu.stream, &a, &mut out, 256))
        .unwrap();
    assert!(ms > 0.0 && ms < 100.0, "mean launch time {ms} ms");
    println!("probe_add: {:.2} us per launch", ms * 1000.0);

    // Capture out = a + 1 into a graph; zero `out`, replay, check.
    let graph = Graph::capture(&gpu.stream, |s| launch_probe(&k, s, &a, &mut out, 256)).unwrap();
    gpu.stream.memset_zeros(&mut out).unwrap();
    graph.upload().unwrap();
    graph.launch(&gpu.stream).unwrap();
    gpu.synchronize().unwrap();
    let got = gpu.stream.clone_dtoh(&out).unwrap();
    assert!(got.iter().zip(&host).all(|(g, h)| *g == h + 1.0));

    // A failing recorder ends the capture and leaves the stream usable.
    let err = Graph::capture(&gpu.stream, |_| Err(Error::Other("boom".into()))).unwrap_err();
    assert!(err.to_string().contains("boom"));
    launch_probe(&k, &gpu.stream, &a, &mut out, 256).unwrap();
    gpu.synchronize().unwrap();
}

fn tensor_map_encodes_for_kv_cache_and_uploads() {
    let gpu = require_gpu!("tensor_map_encodes_for_kv_cache_and_uploads");
    let rows = 4 * 64u64;
    let kv = gpu
        .stream
        .alloc_zeros::<u16>((rows * 576) as usize)
        .unwrap();
    let base = dptr(&kv, &gpu.stream);
    let map = encode_tiled(
        TmaDtype::Bf16,
        base,
        &[576, rows],
        &[576 * 2],
        &[64, 64],
        Swizzle::B128,
    )
    .unwrap();
    assert_ne!(map.0, [0u8; 128]);
    let dev = map.upload(&gpu).unwrap();
    let back = gpu.stream.clone_dtoh(&dev).unwrap();
    assert_eq!(&back[..], &map.0[..]);
}

/// The harness of these binaries reads `RUST_TEST_THREADS` as libtest does (no GPU needed).
fn harness_reads_rust_test_threads() {
    use common::test_threads_from_env;
    assert_eq!(test_threads_from_env(None), Ok(None));
    assert_eq!(test_threads_from_env(Some("4".into())), Ok(Some(4)));
    assert_eq!(test_threads_from_env(Some(" 1 ".into())), Ok(Some(1)));
    for bad in ["0", "-1", "two", ""] {
        let err = test_threads_from_env(Some(bad.into())).unwrap_err();
        assert!(err.contains("RUST_TEST_THREADS"), "{err}");
    }
}

test_main!(
    harness_reads_rust_test_threads,
    gpu_is_hopper_and_described,
    embedded_cubin_loads_with_attributes,
    ptx_jit_launch_round_trip,
    cluster_launch_sets_cluster_shape,
    dynamic_smem_opt_in,
    timer_and_graph_replay,
    tensor_map_encodes_for_kv_cache_and_uploads,
);
