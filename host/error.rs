//! The one error type of the host library. Library code returns [`Result`] and never panics.

use cudarc::driver::{sys, DriverError};
use std::fmt;

/// Everything that can go wrong on the host side.
#[derive(Debug)]
pub enum Error {
    /// The CUDA driver library (`libcuda.so`) could not be loaded or initialised.
    NoDriver(String),
    /// The driver loaded but reports no CUDA device (or the requested ordinal is out of range).
    NoDevice,
    /// The device is not a Hopper sm_90 part (the kernels use wgmma, TMA and clusters).
    UnsupportedDevice {
        /// Device name.
        name: String,
        /// Compute capability, major.
        major: i32,
        /// Compute capability, minor.
        minor: i32,
    },
    /// A CUDA driver call failed; `context` says which call and why it was made.
    Driver {
        /// What was being done.
        context: String,
        /// The driver's status code.
        result: sys::CUresult,
    },
    /// The embedded cubin/PTX could not be loaded (includes the JIT error log when there is one).
    ModuleLoad(String),
    /// A caller-supplied argument broke a rule; `arg` names it, `rule` says what was expected.
    InvalidArgument {
        /// The argument's name.
        arg: &'static str,
        /// What it had to satisfy.
        rule: String,
    },
    /// The split-KV planner could not produce a schedule.
    Plan(String),
    /// Anything else.
    Other(String),
}

/// `std::result::Result` with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps a driver error with a description of what was being done.
    pub fn driver(context: impl Into<String>, err: DriverError) -> Self {
        Error::Driver {
            context: context.into(),
            result: err.0,
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(arg: &'static str, rule: impl Into<String>) -> Self {
        Error::InvalidArgument {
            arg,
            rule: rule.into(),
        }
    }

    /// True for the errors that mean "there is no usable GPU here" (tests skip on these).
    pub fn is_no_gpu(&self) -> bool {
        matches!(
            self,
            Error::NoDriver(_) | Error::NoDevice | Error::UnsupportedDevice { .. }
        )
    }
}

/// Checks a raw `CUresult`, attaching `context` to a failure.
pub(crate) fn check(result: sys::CUresult, context: impl FnOnce() -> String) -> Result<()> {
    match result {
        sys::CUresult::CUDA_SUCCESS => Ok(()),
        other => Err(Error::Driver {
            context: context(),
            result: other,
        }),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoDriver(why) => write!(f, "no CUDA driver: {why}"),
            Error::NoDevice => write!(f, "the CUDA driver reports no usable device"),
            Error::UnsupportedDevice { name, major, minor } => write!(
                f,
                "unsupported device {name} (compute capability {major}.{minor}); \
                 FlashMLA-ETAP needs a Hopper GPU with compute capability 9.0 (sm_90a)"
            ),
            // The CUresult's Debug name (e.g. CUDA_ERROR_INVALID_VALUE) is printed rather than
            // cudarc's DriverError Display, which calls back into the driver (cuGetErrorString).
            Error::Driver { context, result } => write!(f, "{context}: {result:?}"),
            Error::ModuleLoad(why) => write!(f, "loading the kernel module failed: {why}"),
            Error::InvalidArgument { arg, rule } => write!(f, "invalid argument `{arg}`: {rule}"),
            Error::Plan(why) => write!(f, "planning failed: {why}"),
            Error::Other(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {}

impl From<DriverError> for Error {
    fn from(err: DriverError) -> Self {
        Error::Driver {
            context: "CUDA driver call".into(),
            result: err.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_argument_and_rule() {
        let e = Error::invalid("h_q", "must be at least 1");
        assert_eq!(e.to_string(), "invalid argument `h_q`: must be at least 1");
    }

    #[test]
    fn driver_errors_keep_their_context_without_calling_the_driver() {
        let e = Error::driver(
            "cuLaunchKernelEx(probe_add)",
            DriverError(sys::CUresult::CUDA_ERROR_INVALID_VALUE),
        );
        assert_eq!(
            e.to_string(),
            "cuLaunchKernelEx(probe_add): CUDA_ERROR_INVALID_VALUE"
        );
        let e: Error = DriverError(sys::CUresult::CUDA_ERROR_NO_DEVICE).into();
        assert!(matches!(e, Error::Driver { .. }));
        assert!(Error::NoDevice.is_no_gpu());
    }
}
