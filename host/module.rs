//! The embedded device code: the cubin that `build.rs` assembled with ptxas (preferred) or
//! the PTX rustc emitted (JIT fallback), loaded into the GPU's context.
//!
//! The module is loaded with raw `cuModuleLoadDataEx` so that a failed PTX JIT returns the
//! driver's error log; functions are handed out as raw `CUfunction`s for
//! [`crate::launch::launch`] (`cuLaunchKernelEx`), valid while the [`Kernels`] lives.

use crate::device::Gpu;
use crate::error::{check, Error, Result};
use cudarc::driver::{sys, CudaContext};
use std::ffi::{c_void, CString};
use std::sync::Arc;

/// The whole-program PTX of the device crate, as rustc emitted it.
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/etap_kernel.ptx"));

/// ptxas's `-v` report for the embedded cubin (registers, spills, stack, smem per kernel),
/// or a line saying ptxas was not available at build time.
pub const PTXAS_REPORT: &str = include_str!(concat!(env!("OUT_DIR"), "/ptxas_report.txt"));

/// The cubin assembled at build time for sm_90a, when ptxas was available.
#[cfg(etap_cubin)]
pub const CUBIN: Option<&[u8]> = Some(include_bytes!(concat!(
    env!("OUT_DIR"),
    "/etap_kernel.cubin"
)));
/// The cubin assembled at build time for sm_90a, when ptxas was available.
#[cfg(not(etap_cubin))]
pub const CUBIN: Option<&[u8]> = None;

/// Register limit passed to ptxas (`--maxrregcount`).
pub const MAX_REGS: &str = env!("ETAP_MAX_REGS");

/// Which image was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// The sm_90a cubin assembled ahead of time by ptxas.
    Cubin,
    /// The PTX, JIT-compiled by the driver (fallback when no cubin was embedded).
    PtxJit,
}

/// Per-kernel facts from `cuFuncGetAttribute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelAttrs {
    /// Registers per thread.
    pub regs: i32,
    /// Local memory per thread in bytes (spills and stack).
    pub local_bytes: i32,
    /// Statically allocated shared memory in bytes.
    pub static_smem: i32,
    /// Largest CTA this kernel can be launched with.
    pub max_threads: i32,
    /// Dynamic shared memory the kernel is currently allowed to use.
    pub max_dynamic_smem: i32,
}

/// The loaded device module.
#[derive(Debug)]
pub struct Kernels {
    ctx: Arc<CudaContext>,
    module: sys::CUmodule,
    kind: ImageKind,
    jit_log: String,
    names: Vec<String>,
}

// SAFETY: a CUmodule handle may be used from any thread once its context is bound; every
// method binds the context first.
unsafe impl Send for Kernels {}
unsafe impl Sync for Kernels {}

impl Drop for Kernels {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: the module was loaded by us and is unloaded once.
            unsafe {
                let _ = sys::cuModuleUnload(self.module);
            }
        }
    }
}

impl Kernels {
    /// Loads the embedded cubin into `gpu`'s context, or JIT-compiles the PTX when no cubin
    /// was embedded.
    pub fn load(gpu: &Gpu) -> Result<Kernels> {
        match CUBIN {
            Some(cubin) => Self::load_image(&gpu.ctx, cubin.to_vec(), ImageKind::Cubin, PTX),
            None => Self::load_ptx(gpu),
        }
    }

    /// Always JIT-compiles the embedded PTX (to compare against the cubin).
    pub fn load_ptx(gpu: &Gpu) -> Result<Kernels> {
        Self::from_ptx_src(gpu, PTX)
    }

    /// JIT-compiles another PTX module (e.g. a hand-written test kernel).
    pub fn from_ptx_src(gpu: &Gpu, ptx: &str) -> Result<Kernels> {
        if ptx.contains('\0') {
            return Err(Error::invalid("ptx", "PTX text contains no NUL byte"));
        }
        let mut src = ptx.as_bytes().to_vec();
        src.push(0);
        Self::load_image(&gpu.ctx, src, ImageKind::PtxJit, ptx)
    }

    fn load_image(
        ctx: &Arc<CudaContext>,
        image: Vec<u8>,
        kind: ImageKind,
        ptx: &str,
    ) -> Result<Kernels> {
        ctx.bind_to_thread()
            .map_err(|e| Error::driver("cuCtxSetCurrent", e))?;
        const LOG: usize = 16 * 1024;
        let mut info = vec![0u8; LOG];
        let mut error = vec![0u8; LOG];
        let mut options = [
            sys::CUjit_option::CU_JIT_INFO_LOG_BUFFER,
            sys::CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
            sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
            sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        ];
        let mut values: [*mut c_void; 4] = [
            info.as_mut_ptr().cast(),
            LOG as *mut c_void,
            error.as_mut_ptr().cast(),
            LOG as *mut c_void,
        ];
        let mut module: sys::CUmodule = std::ptr::null_mut();
        // SAFETY: `image` is a cubin or a NUL-terminated PTX string that outlives the call;
        // the option arrays match in length and the log buffers are LOG bytes long.
        let r = unsafe {
            sys::cuModuleLoadDataEx(
                &mut module,
                image.as_ptr().cast(),
                options.len() as u32,
                options.as_mut_ptr(),
                values.as_mut_ptr(),
            )
        };
        let text = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).trim().to_string()
        };
        if r != sys::CUresult::CUDA_SUCCESS {
            return Err(Error::ModuleLoad(format!(
                "cuModuleLoadDataEx({kind:?}) returned {r:?}; JIT error log: {}",
                match text(&error) {
                    s if s.is_empty() => "(empty)".to_string(),
                    s => s,
                }
            )));
        }
        Ok(Kernels {
            ctx: ctx.clone(),
            module,
            kind,
            jit_log: text(&info),
            names: entry_names(ptx).into_iter().map(String::from).collect(),
        })
    }

    /// Whether the cubin or the JIT-compiled PTX is in use.
    pub fn image_kind(&self) -> ImageKind {
        self.kind
    }

    /// The driver's JIT info log (empty for a cubin).
    pub fn jit_log(&self) -> &str {
        &self.jit_log
    }

    /// Names of the kernels in this module.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The raw handle of kernel `name`, valid while `self` lives.
    pub fn function(&self, name: &str) -> Result<sys::CUfunction> {
        let c = CString::new(name)
            .map_err(|_| Error::invalid("name", "kernel names contain no NUL byte"))?;
        self.ctx
            .bind_to_thread()
            .map_err(|e| Error::driver("cuCtxSetCurrent", e))?;
        let mut f: sys::CUfunction = std::ptr::null_mut();
        // SAFETY: the module is loaded; `c` is NUL-terminated.
        let r = unsafe { sys::cuModuleGetFunction(&mut f, self.module, c.as_ptr()) };
        if r == sys::CUresult::CUDA_ERROR_NOT_FOUND {
            return Err(Error::invalid(
                "name",
                format!(
                    "no kernel `{name}` in the module (kernels: {})",
                    self.names.join(", ")
                ),
            ));
        }
        check(r, || format!("cuModuleGetFunction({name})"))?;
        Ok(f)
    }

    /// Allows kernel `name` to use up to `bytes` of dynamic shared memory (needed above
    /// 48 KiB; at most [`crate::Gpu::max_smem_optin`] minus its static shared memory).
    pub fn set_max_dynamic_smem(&self, name: &str, bytes: u32) -> Result<()> {
        let f = self.function(name)?;
        // SAFETY: `f` was just looked up in this live module.
        unsafe { self.set_max_dynamic_smem_raw(f, bytes) }
    }

    /// [`Kernels::set_max_dynamic_smem`] for a handle from [`Kernels::function`].
    ///
    /// # Safety
    /// `func` must be a function of this (still loaded) module.
    pub unsafe fn set_max_dynamic_smem_raw(&self, func: sys::CUfunction, bytes: u32) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| Error::driver("cuCtxSetCurrent", e))?;
        check(
            sys::cuFuncSetAttribute(
                func,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            ),
            || format!("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES = {bytes})"),
        )
    }

    /// Registers, local memory, shared memory and thread limit of kernel `name`.
    pub fn attributes(&self, name: &str) -> Result<KernelAttrs> {
        let f = self.function(name)?;
        use sys::CUfunction_attribute::*;
        let get = |a: sys::CUfunction_attribute| -> Result<i32> {
            let mut v = 0i32;
            // SAFETY: `f` is a live function of this module; writes one int.
            check(unsafe { sys::cuFuncGetAttribute(&mut v, a, f) }, || {
                format!("cuFuncGetAttribute({a:?}, {name})")
            })?;
            Ok(v)
        };
        Ok(KernelAttrs {
            regs: get(CU_FUNC_ATTRIBUTE_NUM_REGS)?,
            local_bytes: get(CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?,
            static_smem: get(CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?,
            max_threads: get(CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
            max_dynamic_smem: get(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)?,
        })
    }
}

/// Names of the kernels (`.entry` lines) in the embedded PTX.
pub fn kernel_names() -> Vec<&'static str> {
    entry_names(PTX)
}

/// Names of the `.entry` functions in a PTX text.
pub fn entry_names(ptx: &str) -> Vec<&str> {
    ptx.lines()
        .filter_map(|line| {
            let rest = line.trim_start();
            let rest = rest
                .strip_prefix(".visible")
                .or_else(|| rest.strip_prefix(".weak"))
                .unwrap_or(rest)
                .trim_start();
            let rest = rest.strip_prefix(".entry")?;
            let name = rest
                .trim_start()
                .split(|c: char| c == '(' || c.is_whitespace())
                .next()?;
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// Registers per thread ptxas gave `kernel`, from a `ptxas -v` report.
pub fn registers_of(report: &str, kernel: &str) -> Option<u32> {
    let start = report.find(&format!("Compiling entry function '{kernel}'"))?;
    let rest = &report[start..];
    let used = rest.find("Used ")?;
    rest[used + 5..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{combine_kernel_names, p16_combine_kernel_names, CombineKind};
    use crate::reference::Dtype;
    use etap_kernel::config::{decode_threads, DECODE_THREADS, SEESAW_ROWS, SEESAW_THREADS};

    /// Whether kernel `name` is a seesaw (64-row) decode kernel.
    fn is_seesaw(name: &str) -> bool {
        name.starts_with("etap_decode_") && name.contains("_r64")
    }

    /// The PTX of entry `name` (up to the next entry).
    fn entry_body<'a>(ptx: &'a str, name: &str) -> &'a str {
        let start = ptx
            .find(&format!(".entry {name}("))
            .unwrap_or_else(|| panic!("no entry {name}"));
        let end = ptx[start + 1..]
            .find(".entry ")
            .map_or(ptx.len(), |e| start + 1 + e);
        &ptx[start..end]
    }

    /// The `.maxntid` launch bound of entry `name` in `ptx`, if it has one.
    fn launch_bound(ptx: &str, name: &str) -> Option<String> {
        let entry = entry_body(ptx, name);
        let signature = &entry[..entry.find("\n{")?];
        let bound = signature.find(".maxntid")?;
        Some(signature[bound..].trim().to_string())
    }

    #[test]
    fn seesaw_kernels_and_only_they_carry_their_launch_bound() {
        let want = format!(".maxntid {SEESAW_THREADS}, 1, 1");
        assert_eq!(decode_threads(SEESAW_ROWS), SEESAW_THREADS);
        let mut seesaw = 0;
        for name in kernel_names() {
            let bound = launch_bound(PTX, name);
            if is_seesaw(name) {
                assert_eq!(bound.as_deref(), Some(want.as_str()), "{name}");
                seesaw += 1;
            } else {
                assert_eq!(bound, None, "{name}");
            }
        }
        assert_eq!(
            seesaw, 9,
            "bf16/f16 × Fast (two orders) / Accurate seesaw kernels, + bf16 with f16 partial results (three)"
        );
    }

    /// The 16/32-row kernels' wgmma instructions appear in the PTX exactly as often as the
    /// mainloop issues them per tile. A second copy of an `.aligned` wait, fence or commit
    /// means LLVM duplicated it into both sides of a branch, where the warps of a
    /// warpgroup may diverge and hang (the eleventh session's first block-group build did).
    #[test]
    fn transposed_kernels_issue_each_wgmma_instruction_once() {
        use etap_kernel::config::{KV_GROUPS, PV_STEPS, QK_STEPS, ROPE_GROUP, V_BLOCKS};
        let mut checked = 0;
        for name in kernel_names() {
            if !name.starts_with("etap_decode_") || is_seesaw(name) {
                continue;
            }
            let body = entry_body(PTX, name);
            let count = |insn: &str| body.matches(insn).count() as u32;
            // Sᵀ: one fence per block group and one commit and wait; Oᵀ: one fence, then a
            // commit and a wait per V group.
            assert_eq!(count("wgmma.fence"), KV_GROUPS + 1, "{name}");
            assert_eq!(count("wgmma.commit_group"), 1 + ROPE_GROUP, "{name}");
            assert_eq!(count("wgmma.wait_group"), 1 + ROPE_GROUP, "{name}");
            assert_eq!(
                count("wgmma.mma_async"),
                QK_STEPS + V_BLOCKS * PV_STEPS,
                "{name}"
            );
            checked += 1;
        }
        assert_eq!(checked, 8, "bf16/f16 × 16/32 rows × Fast/Accurate");
    }

    /// Every decode kernel stores each output element of a thread with one guarded store
    /// of each width, in straight-line code (`ptx::global`): a copy of the store loop per
    /// output kind, or per element a branch, doubles these counts. That code runs once
    /// per piece, and its instruction fetch sat on the latency of every short decode.
    #[test]
    fn decode_kernels_store_each_output_element_once() {
        use etap_kernel::config::{SEESAW_HALF_DV, V_BLOCKS};
        let mut checked = 0;
        for name in kernel_names() {
            if !name.starts_with("etap_decode_") {
                continue;
            }
            let body = entry_body(PTX, name);
            let count = |insn: &str| body.matches(insn).count() as u32;
            let (found, want) = if is_seesaw(name) {
                // Two rows a thread, 4 elements (16 or 8 bytes) per 16 of its 256 dims.
                let quads = 2 * SEESAW_HALF_DV / 16;
                let found = (count("@p st.global.v4.f32"), count("@p st.global.v2.b32"));
                (found, (quads, quads))
            } else {
                // Per V block, a quarter of the CTA's rows (r16: 4, r32: 8) a thread: one
                // element a store with a split P, two adjacent ones (8 or 4 bytes) without.
                let rows: u32 = name[name.find("_r").unwrap() + 2..]
                    .split('_')
                    .next()
                    .and_then(|r| r.parse().ok())
                    .unwrap();
                let elems = V_BLOCKS * rows / 4;
                if name.ends_with("_split") {
                    let found = (count("@p st.global.f32"), count("@p st.global.b16"));
                    (found, (elems, elems))
                } else {
                    let found = (count("@p st.global.v2.f32"), count("@p st.global.b32"));
                    (found, (elems / 2, elems / 2))
                }
            };
            assert_eq!(found, want, "{name}: guarded stores (f32, 16-bit output)");
            checked += 1;
        }
        assert_eq!(
            checked, 17,
            "bf16/f16 × 16/32/64 rows × Fast/Accurate, + P_a-first, + bf16 f16-partial (three)"
        );
    }

    /// The seesaw kernels issue a piece's Q loads (`cp.async`) ahead of its first KV tiles'
    /// TMA loads: every S needs all of Q, and behind the tiles Q landed 2.6 µs later (H200,
    /// twentieth session).
    #[test]
    fn seesaw_kernels_load_q_before_the_first_kv_tiles() {
        let mut checked = 0;
        for name in kernel_names().into_iter().filter(|n| is_seesaw(n)) {
            let body = entry_body(PTX, name);
            let first = |insn: &str| {
                body.find(insn)
                    .unwrap_or_else(|| panic!("{name}: no {insn}"))
            };
            assert!(
                first("cp.async.cg.shared.global") < first("cp.async.bulk.tensor"),
                "{name}: a TMA load comes before Q's first cp.async"
            );
            checked += 1;
        }
        assert_eq!(
            checked, 9,
            "bf16/f16 × Fast (two orders) / Accurate seesaw kernels, + bf16 f16-partial (three)"
        );
    }

    /// wgmma instructions of one seesaw kernel: fences, commits, waits (any count, and
    /// `wait_group 1` alone), MMAs.
    #[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
    struct WgmmaCounts {
        fences: u32,
        commits: u32,
        waits: u32,
        waits_1: u32,
        mmas: u32,
    }

    impl std::ops::Add for WgmmaCounts {
        type Output = Self;
        fn add(self, o: Self) -> Self {
            WgmmaCounts {
                fences: self.fences + o.fences,
                commits: self.commits + o.commits,
                waits: self.waits + o.waits,
                waits_1: self.waits_1 + o.waits_1,
                mmas: self.mmas + o.mmas,
            }
        }
    }

    /// What the seesaw source issues, call site by call site: S of a piece's first tile,
    /// then each warpgroup's pair function at its five call sites (the loop's full pair,
    /// the tails of 3 tiles (two calls), of 2 and of 1), each `(B, A2, B2)`, in the
    /// P_a-first order (`pa_first`, always with `split_p`) or FlashMLA's.
    fn seesaw_source_counts(split_p: bool, pa_first: bool) -> WgmmaCounts {
        use etap_kernel::config::{K_BLOCKS, PB_CHUNK_STEPS, PV_STEPS, QK_STEPS};
        let n = |b: bool| b as u32;
        // P·V over half the V dims: one fence and commit, PV_STEPS MMAs (twice with split P).
        let pv = WgmmaCounts {
            fences: 1,
            commits: 1,
            mmas: PV_STEPS * (1 + n(split_p)),
            ..Default::default()
        };
        // Warpgroup 1's P_b·V_bR in FlashMLA's order: a fence per chunk of k16 steps (each
        // issued as its part of P_b is computed), one commit.
        let pv_by_chunk = WgmmaCounts {
            fences: PV_STEPS / PB_CHUNK_STEPS,
            ..pv
        };
        // S of the next tile: a fence per column block, two commits (own half, other half).
        let next_s = WgmmaCounts {
            fences: K_BLOCKS,
            commits: 2,
            mmas: QK_STEPS,
            ..Default::default()
        };
        let wait = |k: u32| WgmmaCounts {
            waits: 1,
            waits_1: n(k == 1),
            ..Default::default()
        };
        let none = WgmmaCounts::default();
        let when = |c: bool, x: WgmmaCounts| if c { x } else { none };
        let wg0 = |b: bool, a2: bool, b2: bool| {
            if pa_first {
                pv + when(b, wait(0) + pv) + when(a2, next_s + when(b2, wait(1))) + wait(0)
            } else {
                pv + wait(0) + when(b, pv) + when(a2, next_s + when(b2, wait(1))) + wait(0)
            }
        };
        let wg1 = |b: bool, a2: bool, b2: bool| {
            if pa_first {
                pv + when(b, wait(0) + pv + when(b2, wait(0) + next_s)) + wait(0)
            } else {
                // Tile b+2's reload first waits for P_b·V_bR.
                when(b, pv_by_chunk)
                    + pv
                    + when(b2, wait(1))
                    + when(a2, wait(0))
                    + when(b2, next_s)
                    + wait(0)
            }
        };
        let sites = [
            (true, true, true),
            (true, true, false),
            (false, false, false),
            (false, false, false),
            (true, false, false),
        ];
        let first_s = WgmmaCounts {
            fences: K_BLOCKS,
            commits: 1,
            mmas: QK_STEPS,
            ..Default::default()
        } + wait(0);
        sites.iter().fold(first_s, |acc, &(b, a2, b2)| {
            acc + wg0(b, a2, b2) + wg1(b, a2, b2)
        })
    }

    /// The seesaw kernels' wgmma instructions appear in the PTX exactly as often as their
    /// source issues them (see `transposed_kernels_issue_each_wgmma_instruction_once`: a
    /// duplicated `.aligned` instruction hung the sixth session's first seesaw build).
    #[test]
    fn seesaw_kernels_issue_each_wgmma_instruction_once() {
        let mut checked = 0;
        for name in kernel_names() {
            if !is_seesaw(name) {
                continue;
            }
            let body = entry_body(PTX, name);
            let count = |insn: &str| body.matches(insn).count() as u32;
            let found = WgmmaCounts {
                fences: count("wgmma.fence"),
                commits: count("wgmma.commit_group"),
                waits: count("wgmma.wait_group"),
                waits_1: count("wgmma.wait_group.sync.aligned 1;"),
                mmas: count("wgmma.mma_async"),
            };
            // More than the source issues: a duplicated instruction (the hazard). Fewer:
            // LLVM merged the two identical tail call sites, and the model needs updating.
            assert_eq!(
                found,
                seesaw_source_counts(
                    name.contains("_split"),
                    name.contains("_split") || name.contains("_pa_first")
                ),
                "{name}"
            );
            checked += 1;
        }
        assert_eq!(
            checked, 9,
            "bf16/f16 × Fast (two orders) / Accurate, + bf16 f16-partial (three)"
        );
    }

    #[test]
    fn reads_register_counts_from_the_report() {
        let report = "ptxas info    : Compiling entry function 'a' for 'sm_90a'\n\
                      ptxas info    : Used 80 registers, used 1 barriers\n\
                      ptxas info    : Compiling entry function 'b' for 'sm_90a'\n\
                      ptxas info    : Used 168 registers\n";
        assert_eq!(registers_of(report, "a"), Some(80));
        assert_eq!(registers_of(report, "b"), Some(168));
        assert_eq!(registers_of(report, "c"), None);
    }

    /// Every decode and combine kernel fits one SM's 64K registers at its block size
    /// (allocated per thread in units of 8), else its launch fails with
    /// CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES.
    #[test]
    fn every_kernel_fits_the_register_file_at_its_block_size() {
        if CUBIN.is_none() {
            println!("skipped: built without ptxas (no register counts)");
            return;
        }
        // The combine kernels at the block size the decoder launches them with.
        let combine_threads = |name: &str| {
            [Dtype::Bf16, Dtype::F16]
                .map(combine_kernel_names)
                .into_iter()
                .chain([p16_combine_kernel_names()])
                .find_map(|names| {
                    let k = names.iter().position(|n| n == name)?;
                    Some(CombineKind::ALL[k].threads())
                })
        };
        let mut checked = 0;
        for name in kernel_names() {
            let threads = if is_seesaw(name) {
                SEESAW_THREADS
            } else if name.starts_with("etap_decode") {
                DECODE_THREADS
            } else if let Some(threads) = combine_threads(name) {
                threads
            } else {
                continue;
            };
            let regs = registers_of(PTXAS_REPORT, name)
                .unwrap_or_else(|| panic!("no register count for {name} in the ptxas report"));
            assert!(
                regs.div_ceil(8) * 8 * threads <= 65536,
                "{name}: {regs} registers x {threads} threads exceed the 64K register file"
            );
            checked += 1;
        }
        assert!(checked >= 8, "only {checked} decode/combine kernels found");
    }

    /// ptxas serialises a kernel's wgmma where it cannot keep them in flight (C75xx, e.g.
    /// C7511 "insufficient register resources for the wgmma pipeline") and says so only as
    /// a `ptxas info` line of `-v`: the kernel still assembles and runs, 13-29 % slower
    /// (H200, two probes of the Fast 64-row kernel with a few more live values,
    /// twenty-second session). No embedded kernel may have it.
    #[test]
    fn no_kernel_has_its_wgmma_serialised() {
        if CUBIN.is_none() {
            println!("skipped: no cubin embedded (ptxas missing), so no ptxas report to read");
            return;
        }
        let serialised: Vec<&str> = PTXAS_REPORT
            .lines()
            .filter(|l| l.contains("wgmma.mma_async instructions are serialized"))
            .collect();
        assert!(serialised.is_empty(), "{}", serialised.join("\n"));
    }

    #[test]
    fn parses_entry_lines() {
        let ptx = ".version 8.5\n.target sm_90a\n.visible .entry probe_add(\n\t.param .u64 a\n)\n\
                   .entry other_kernel ()\n.func helper(\n// .entry commented_out(\n";
        assert_eq!(entry_names(ptx), vec!["probe_add", "other_kernel"]);
    }

    #[test]
    fn embedded_ptx_has_kernels_and_report_exists() {
        assert!(PTX.contains(".target sm_90a"));
        assert!(!kernel_names().is_empty(), "no .entry in the embedded PTX");
        assert!(!PTXAS_REPORT.is_empty());
        if CUBIN.is_some() {
            for name in kernel_names() {
                assert!(
                    PTXAS_REPORT.contains(name),
                    "ptxas report does not mention {name}"
                );
            }
        }
    }
}
