//! Device code of FlashMLA-ETAP.
//!
//! Built twice: for `nvptx64-nvidia-cuda` (the kernels, `no_std`) and for the host, where
//! only the pure configuration, layout and planning math is compiled, so that the host
//! library shares it and unit tests cover it on the CPU.
#![warn(missing_docs)]
#![cfg_attr(target_arch = "nvptx64", no_std)]
#![cfg_attr(
    target_arch = "nvptx64",
    feature(abi_ptx, asm_experimental_arch, stdarch_nvptx)
)]

pub mod config;
pub mod layout;
pub mod plan;

#[cfg(target_arch = "nvptx64")]
mod combine;
#[cfg(target_arch = "nvptx64")]
mod decode;
#[cfg(target_arch = "nvptx64")]
mod element;
#[cfg(target_arch = "nvptx64")]
mod probe;
#[cfg(target_arch = "nvptx64")]
mod ptx;
#[cfg(target_arch = "nvptx64")]
mod seesaw;
#[cfg(target_arch = "nvptx64")]
mod selftest;
#[cfg(target_arch = "nvptx64")]
mod tile;

#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    unsafe { core::arch::nvptx::trap() }
}
