//! Helpers shared by the integration tests (`mod common;` in each tests/*.rs).
#![allow(dead_code)]

use flashmla_etap::Gpu;

/// Environment variable that turns a GPU-test skip into a failure (set by
/// `scripts/run-gpu-bundle.sh`, so that a run on the GPU machine proves the tests ran).
pub const REQUIRE_GPU_ENV: &str = "ETAP_REQUIRE_GPU";

thread_local! {
    /// Why the test running on this thread skipped itself (set by [`gpu_or_skip`]).
    static SKIPPED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Opens GPU 0 for a test, or returns `None` after recording why the test is skipped, so
/// that [`run_tests`] reports it as `ignored (no usable GPU: <why>)` rather than as passed.
/// With `ETAP_REQUIRE_GPU=1` there is no skipping: a missing GPU panics.
pub fn gpu_or_skip(test_name: &str) -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            let reason = format!("no usable GPU: {e}");
            if require_gpu() {
                panic!("{test_name}: {REQUIRE_GPU_ENV}=1 but {reason}");
            }
            skip_because(reason);
            None
        }
    }
}

/// Records that the running test skips itself for `reason` (a GPU that lacks what it
/// checks): [`run_tests`] reports it as ignored with the reason.
pub fn skip_because(reason: String) {
    SKIPPED.with(|s| *s.borrow_mut() = Some(reason));
}

/// The `main` of a GPU test binary (`harness = false`): runs `tests` under libtest-mimic
/// with the usual test-harness arguments (filters, `--test-threads` or
/// `RUST_TEST_THREADS`, `--list`, ...). A test that skipped itself through
/// [`gpu_or_skip`] counts as ignored, with its reason, so a machine without a GPU reports
/// `0 passed; ... N ignored`, never a vacuous pass.
pub fn run_tests(tests: &[(&'static str, fn())]) -> ! {
    use libtest_mimic::{Arguments, Completion, Trial};
    let (argv, filters) = split_filters(std::env::args());
    let mut args = Arguments::from_iter(argv);
    if args.test_threads.is_none() {
        args.test_threads = test_threads_from_env(std::env::var("RUST_TEST_THREADS").ok())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let selected = |name: &str| {
        filters.is_empty()
            || filters.iter().any(|f| {
                if args.exact {
                    name == f
                } else {
                    name.contains(f.as_str())
                }
            })
    };
    let trials = tests
        .iter()
        .filter(|(name, _)| selected(name))
        .map(|&(name, test)| {
            Trial::ignorable_test(name, move || {
                SKIPPED.with(|s| s.borrow_mut().take());
                test();
                Ok(match SKIPPED.with(|s| s.borrow_mut().take()) {
                    Some(reason) => Completion::ignored_with(reason),
                    None => Completion::Completed,
                })
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}

/// Splits a test binary's command line into libtest-mimic's arguments and the test-name
/// filters: libtest runs the tests whose names contain any of several filters
/// (`gpu_decode decode_smoke graph_replay`, as `scripts/sanitize.sh` passes them),
/// libtest-mimic takes at most one. (Tests left out this way are not counted as filtered
/// out in the summary.)
fn split_filters(args: impl Iterator<Item = String>) -> (Vec<String>, Vec<String>) {
    // Options of libtest-mimic that take the next argument as their value.
    const WITH_VALUE: [&str; 6] = [
        "--test-threads",
        "--skip",
        "--logfile",
        "--color",
        "--format",
        "-Z",
    ];
    let (mut argv, mut filters) = (Vec::new(), Vec::new());
    let mut args = args.enumerate();
    while let Some((i, a)) = args.next() {
        if i == 0 || a.starts_with('-') {
            let takes_value = WITH_VALUE.contains(&a.as_str());
            argv.push(a);
            if takes_value {
                argv.extend(args.next().map(|(_, v)| v));
            }
        } else {
            filters.push(a);
        }
    }
    (argv, filters)
}

/// The thread count that `RUST_TEST_THREADS` (its value `var`, if set) asks for, as libtest
/// reads it when `--test-threads` is not given: a positive integer, else an error naming
/// the variable.
pub fn test_threads_from_env(var: Option<String>) -> Result<Option<usize>, String> {
    match var {
        None => Ok(None),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!(
                "RUST_TEST_THREADS must be a positive integer, got `{v}`"
            )),
        },
    }
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

/// `fn main` of a GPU test binary: [`run_tests`] over the named test functions, each
/// reported under its own name.
#[macro_export]
macro_rules! test_main {
    ($($test:ident),* $(,)?) => {
        fn main() {
            $crate::common::run_tests(&[$((stringify!($test), $test as fn())),*]);
        }
    };
}
