//! Helpers shared by the integration tests (`mod common;` in each tests/*.rs).
#![allow(dead_code)]

use flashmla_etap::Gpu;

/// Environment variable that turns a GPU-test skip into a failure (set by
/// `scripts/run-gpu-bundle.sh`, so that a run on the GPU machine proves the tests ran).
pub const REQUIRE_GPU_ENV: &str = "ETAP_REQUIRE_GPU";

/// Opens GPU 0 for a test, or returns `None` after printing why the test is skipped.
///
/// A skipped test still shows as `ok` in cargo's summary, so the reason is printed
/// explicitly to both stdout and stderr as `skipped: <test>: <reason>` (see [`report_skip`]). With
/// `ETAP_REQUIRE_GPU=1` there is no skipping: a missing GPU panics.
pub fn gpu_or_skip(test_name: &str) -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            let reason = format!("no usable GPU: {e}");
            if require_gpu() {
                panic!("{test_name}: {REQUIRE_GPU_ENV}=1 but {reason}");
            }
            report_skip(test_name, &reason);
            None
        }
    }
}

/// Prints `skipped: <test>: <reason>` to stdout and stderr, past the test harness's output
/// capture (which swallows `println!` of passing tests), so skips are visible in the log.
pub fn report_skip(test_name: &str, reason: &str) {
    use std::io::Write;
    let line = format!("skipped: {test_name}: {reason}\n");
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Whether `ETAP_REQUIRE_GPU` asks for GPU tests to fail instead of skipping.
pub fn require_gpu() -> bool {
    matches!(
        std::env::var(REQUIRE_GPU_ENV).as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// `gpu_or_skip` as a statement: `let gpu = require_gpu!("name");` returns from the test
/// when it is skipped.
#[macro_export]
macro_rules! require_gpu {
    ($name:expr) => {
        match $crate::common::gpu_or_skip($name) {
            Some(gpu) => gpu,
            None => return,
        }
    };
}
