//! Programmatic dependent launch between consecutive grids of a stream (PTX ISA:
//! griddepcontrol). Both are no-ops for a grid launched without the attribute.
use core::arch::asm;

/// Lets the next grid of the stream, if launched as a programmatic dependent, start once
/// every CTA of this grid has executed this or exited.
#[inline(always)]
pub fn launch_dependents() {
    unsafe { asm!("griddepcontrol.launch_dependents;", options(nostack)) };
}

/// Waits until the grids this one depends on have completed and their memory is visible.
#[inline(always)]
pub fn wait() {
    unsafe { asm!("griddepcontrol.wait;", options(nostack)) };
}
