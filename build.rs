//! Builds the device crate `kernel/` to PTX with rustc's NVPTX backend, then assembles a
//! sm_90a cubin with `ptxas`. Both are embedded by `host/module.rs`, together with ptxas's
//! `-v` report (`$OUT_DIR/ptxas_report.txt`).
//!
//! Needs the nightly's `rust-src` component (for `-Zbuild-std=core`) and ptxas, looked up in
//! `$ETAP_PTXAS`, then `.tools/nvcc/nvidia/cuda_nvcc/bin/ptxas` (installed by
//! `scripts/setup.sh`), then `PATH`. A missing piece stops the build with the command that
//! installs it; `ETAP_ALLOW_PTX_ONLY=1` builds without ptxas (PTX JIT fallback only).
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Registers per thread that ptxas may use: 384-thread CTAs (3 warpgroups) get 65536/384,
/// rounded down to a multiple of 8; consumers raise their own limit with setmaxnreg.
const MAX_REGS: u32 = 168;

/// Threads of a seesaw decode CTA (`etap_kernel::config::SEESAW_THREADS`, checked against
/// the embedded PTX by a host test): its kernels carry this launch bound, so ptxas gives
/// them 65536/256 registers a thread over the `MAX_REGS` cap.
const SEESAW_THREADS: u32 = 256;

/// The files that make the binaries: a change re-runs this script, which re-stamps the
/// commit (with `-dirty` while any of them differs from it). Unchanged PTX is not
/// re-assembled, so host-only edits cost a no-op device build.
const CODE_PATHS: [&str; 6] = [
    "kernel",
    "host",
    "build.rs",
    "Cargo.toml",
    "Cargo.lock",
    "rust-toolchain.toml",
];

fn main() {
    for path in CODE_PATHS {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-env-changed=ETAP_PTXAS");
    println!("cargo:rerun-if-env-changed=ETAP_ALLOW_PTX_ONLY");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());

    check_rust_src();
    let ptx = build_ptx(&root, &out_dir);
    let ptx_out = out_dir.join("etap_kernel.ptx");
    let ptx = std::fs::read_to_string(&ptx).expect("read the generated PTX");
    std::fs::write(&ptx_out, bound_seesaw_kernels(&ptx)).expect("write PTX");

    let cubin_out = out_dir.join("etap_kernel.cubin");
    let report_out = out_dir.join("ptxas_report.txt");
    // What the cubin in OUT_DIR was assembled from: the ptxas command line and the PTX.
    let assembled_cmd = out_dir.join("assembled_cmd.txt");
    let assembled_ptx = out_dir.join("assembled.ptx");
    match find_ptxas(&root) {
        Some(ptxas)
            if std::fs::read_to_string(&assembled_cmd).ok() == Some(ptxas_cmd(&ptxas))
                && std::fs::read(&assembled_ptx).ok() == std::fs::read(&ptx_out).ok()
                && cubin_out.exists()
                && report_out.exists() =>
        {
            println!("cargo:rustc-cfg=etap_cubin");
        }
        Some(ptxas) => {
            let _ = std::fs::remove_file(&assembled_cmd);
            // `-v` makes ptxas report registers, spills, stack and shared memory per kernel
            // on stderr; it is saved for the host crate (`include_str!`) and `scripts/test.sh`.
            let output = Command::new(&ptxas)
                .args(ptxas_args())
                .arg(&ptx_out)
                .arg("-o")
                .arg(&cubin_out)
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", ptxas.display()));
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            if !output.status.success() {
                panic!(
                    "ptxas -arch=sm_90a rejected the generated PTX ({}):\n{stdout}{stderr}",
                    ptx_out.display()
                );
            }
            let report = format!(
                "ptxas {} ({})\n{stdout}{stderr}",
                ptxas_args().join(" "),
                ptxas.display()
            );
            std::fs::write(&report_out, report).expect("write ptxas_report.txt");
            std::fs::copy(&ptx_out, &assembled_ptx).expect("copy PTX");
            std::fs::write(&assembled_cmd, ptxas_cmd(&ptxas)).expect("write assembled_cmd.txt");
            println!("cargo:rustc-cfg=etap_cubin");
        }
        None if env::var("ETAP_ALLOW_PTX_ONLY").as_deref() == Ok("1") => {
            let _ = std::fs::remove_file(&cubin_out);
            let _ = std::fs::remove_file(&assembled_cmd);
            std::fs::write(
                &report_out,
                "ptxas not available: no cubin was assembled at build time, so there is no \
                 register/spill report (run scripts/setup.sh to install ptxas).\n",
            )
            .expect("write ptxas_report.txt");
            println!(
                "cargo:warning=ptxas not found and ETAP_ALLOW_PTX_ONLY=1: no cubin embedded, \
                 the PTX will be JIT-compiled by the driver."
            )
        }
        None => panic!(
            "\n\nptxas (sm_90a) was not found: it assembles the device code into the embedded \
             cubin.\nInstall it with:  scripts/setup.sh   (or: python3 -m pip install --target \
             .tools/nvcc nvidia-cuda-nvcc-cu12==12.9.86)\nor point ETAP_PTXAS at a ptxas; \
             ETAP_ALLOW_PTX_ONLY=1 builds with the PTX (JIT) fallback only.\n\n"
        ),
    }
    println!("cargo:rustc-check-cfg=cfg(etap_cubin)");
    println!("cargo:rustc-env=ETAP_MAX_REGS={MAX_REGS}");
    // The commit stamp follows HEAD (a new commit or checkout re-runs this script).
    let git_dir = root.join(".git");
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
        println!("cargo:rerun-if-changed=.git/HEAD");
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            if git_dir.join(reference).exists() {
                println!("cargo:rerun-if-changed=.git/{reference}");
            }
        }
        if git_dir.join("packed-refs").exists() {
            println!("cargo:rerun-if-changed=.git/packed-refs");
        }
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let mut commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(CODE_PATHS);
    if git(&status).is_some_and(|changes| !changes.is_empty()) {
        commit.push_str("-dirty");
    }
    println!("cargo:rustc-env=ETAP_GIT_COMMIT={commit}");
}

/// `ptx` with a `.maxntid` launch bound on every seesaw decode kernel (`etap_decode_*_r64*`;
/// rustc has no attribute for it). A bound on the entry overrides ptxas's `--maxrregcount`.
fn bound_seesaw_kernels(ptx: &str) -> String {
    let mut out = String::with_capacity(ptx.len() + 1024);
    let mut in_seesaw_signature = false;
    let mut bounded = 0;
    for line in ptx.lines() {
        if let Some(name) = line.strip_prefix(".visible .entry ") {
            in_seesaw_signature = name.starts_with("etap_decode_") && name.contains("_r64");
        }
        out.push_str(line);
        out.push('\n');
        if in_seesaw_signature && line == ")" {
            out.push_str(&format!(".maxntid {SEESAW_THREADS}, 1, 1\n"));
            in_seesaw_signature = false;
            bounded += 1;
        }
    }
    assert!(
        bounded > 0,
        "no seesaw decode kernel found in the generated PTX"
    );
    out
}

/// ptxas's options: sm_90a, `-v` for the register/spill report, the register cap.
fn ptxas_args() -> [String; 4] {
    [
        "-arch=sm_90a".into(),
        "-O3".into(),
        "-v".into(),
        format!("--maxrregcount={MAX_REGS}"),
    ]
}

/// The ptxas command line (without its input and output) for `ptxas`.
fn ptxas_cmd(ptxas: &Path) -> String {
    format!("{} {}", ptxas.display(), ptxas_args().join(" "))
}

fn check_rust_src() {
    let sysroot = Command::new(env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc --print sysroot");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let core = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
    if !core.exists() {
        panic!(
            "\n\nThe nightly's rust-src component is missing (needed to build `core` for \
             nvptx64-nvidia-cuda).\nInstall it with:  rustup component add rust-src --toolchain nightly\n\
             (or run scripts/setup.sh, which installs everything the build needs)\n\n"
        );
    }
}

fn build_ptx(root: &Path, out_dir: &Path) -> PathBuf {
    let target_dir = out_dir.join("nvptx-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root.join("kernel"))
        .args([
            "rustc",
            "--release",
            "--lib",
            "--crate-type",
            "cdylib",
            "--target",
            "nvptx64-nvidia-cuda",
            "-Zbuild-std=core",
            "--config",
            "profile.release.lto=\"fat\"",
            "--config",
            "profile.release.panic=\"abort\"",
            "--config",
            "profile.release.codegen-units=1",
            "--config",
            "profile.release.opt-level=3",
            "--config",
            "profile.release.debug=false",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .args([
            "--",
            "-C",
            "target-cpu=sm_90a",
            "-C",
            "target-feature=+ptx85",
            "-Zno-link",
            "--emit=asm",
            // Fully unroll the fixed-count loops over accumulator fragments, so that
            // they stay in registers (wgmma operands) instead of local memory.
            "-C",
            "llvm-args=-unroll-threshold=20000",
        ]);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_LLVM_COV",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in env::vars() {
        if key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("DEP_")
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .status()
        .expect("running cargo for the nvptx64 device crate");
    if !status.success() {
        panic!("building the device crate kernel/ for nvptx64-nvidia-cuda failed (see above)");
    }
    let ptx = target_dir.join("nvptx64-nvidia-cuda/release/deps/etap_kernel.s");
    assert!(ptx.exists(), "expected PTX at {}", ptx.display());
    ptx
}

fn find_ptxas(root: &Path) -> Option<PathBuf> {
    if let Ok(p) = env::var("ETAP_PTXAS") {
        return Some(PathBuf::from(p));
    }
    let local = root.join(".tools/nvcc/nvidia/cuda_nvcc/bin/ptxas");
    if local.exists() {
        return Some(local);
    }
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|d| d.join("ptxas"))
            .find(|p| p.is_file())
    })
}
