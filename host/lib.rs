//! FlashMLA-ETAP host library.
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/etap_kernel.ptx"));
pub mod reference;
