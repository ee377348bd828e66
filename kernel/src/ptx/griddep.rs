//! Programmatic dependent launch between consecutive grids of a stream (PTX ISA:
//! griddepcontrol).
use core::arch::asm;

/// griddepcontrol.launch_dependents: the next grid (launched with programmatic stream
/// serialization) may start once every CTA of this grid has executed this or exited.
#[inline(always)]
pub fn launch_dependents() {
    unsafe { asm!("griddepcontrol.launch_dependents;", options(nostack)) };
}

/// griddepcontrol.wait: waits until the grids this one depends on have completed and their
/// memory operations are visible.
#[inline(always)]
pub fn wait() {
    unsafe { asm!("griddepcontrol.wait;", options(nostack)) };
}
