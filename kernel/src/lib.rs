//! Device code of FlashMLA-ETAP.
//!
//! Built twice: for `nvptx64-nvidia-cuda` (the kernels, `no_std`) and for the host, where
//! only the pure layout, configuration and planning math is compiled, so that the host
//! library shares it and unit tests cover it on the CPU.
#![cfg_attr(target_arch = "nvptx64", no_std)]
#![cfg_attr(
    target_arch = "nvptx64",
    feature(abi_ptx, asm_experimental_arch, stdarch_nvptx)
)]

#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    unsafe { core::arch::nvptx::trap() }
}

#[cfg(target_arch = "nvptx64")]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn probe_add(a: *const f32, out: *mut f32, n: u32) {
    let i = core::arch::nvptx::_thread_idx_x() as u32;
    if i < n {
        *out.add(i as usize) = *a.add(i as usize) + 1.0;
    }
}
