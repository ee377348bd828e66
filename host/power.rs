//! NVML sampling for `flashmla-etap bench`: the SM clock, power draw, die temperature and
//! clock-event (throttle) reasons of the benchmarked card while a point's timed replays
//! run, and its energy counter. H200s run the heavy points at the software power cap (SM
//! clock 1.3–1.5 GHz instead of 1.98), and cards of one pool differ by several percent: the
//! clock a point ran at tells a slow card from a slow kernel. NVML's readings lag the load,
//! though (an H200 read 1980 MHz and ~120–230 W through the ~50–100 ms of timed replays
//! of points the power cap slowed by 5–12 %): the bench's clock column comes from
//! [`crate::probe::ClockProbe`], counted on the GPU, and these fields are context.
//!
//! NVML (`libnvidia-ml.so.1`) is loaded at run time through libloading (nvml-wrapper), so
//! the binary builds and starts without a driver; without NVML [`PowerMonitor::open`]
//! returns an error and the bench runs with the fields absent. The statistics
//! ([`PowerStats::from_samples`], [`energy_per_call_uj`]) are plain functions, tested
//! without a GPU.

use crate::bench::median;
use crate::device::Gpu;
use crate::error::{Error, Result};
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::NVML_FI_DEV_POWER_INSTANT;
use nvml_wrapper::{Device, Nvml};
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

pub use nvml_wrapper::bitmasks::device::ThrottleReasons;

/// Time between two samples (plus the time the queries take).
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(2);

/// The clock-event reasons counted in [`PowerStats::slowdown_frac`]: hardware slowdown
/// (power brake included) and thermal slowdown, software or hardware.
pub const SLOWDOWN: ThrottleReasons = ThrottleReasons::HW_SLOWDOWN
    .union(ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN)
    .union(ThrottleReasons::SW_THERMAL_SLOWDOWN)
    .union(ThrottleReasons::HW_THERMAL_SLOWDOWN);

/// One reading of the card.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerSample {
    /// Seconds since sampling started.
    pub t_s: f64,
    /// SM clock, MHz.
    pub sm_mhz: u32,
    /// Power draw of the board, mW.
    pub power_mw: u32,
    /// Clock-event (throttle) reasons active at the reading.
    pub reasons: ThrottleReasons,
    /// GPU die temperature, °C; `None` where the card does not report it.
    pub temp_c: Option<u32>,
    /// The energy counter, mJ since the driver loaded; `None` where the card has none.
    pub energy_mj: Option<u64>,
}

/// What NVML saw during one point's timed replays (flattened into the point's JSON row).
/// Every field is absent (`None`) where the point was not sampled; a report written before
/// sampling existed reads the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PowerStats {
    /// Samples taken during the timed replays: `None` when NVML sampling was off, `Some(0)`
    /// when the replays ended before the first sample (the other fields are then absent).
    pub nvml_samples: Option<u32>,
    /// Median SM clock, MHz.
    pub sm_mhz: Option<f64>,
    /// Lowest SM clock, MHz.
    pub sm_mhz_min: Option<u32>,
    /// Median power draw, W: the instant reading where the driver has it, else NVML's power
    /// usage, which on Hopper averages the last second, mostly what ran before a short
    /// point (the report's `nvml` line says which).
    pub power_w: Option<f64>,
    /// Fraction of the samples (0–1) with the software power cap among the reasons.
    pub power_cap_frac: Option<f64>,
    /// Fraction of the samples with a [`SLOWDOWN`] reason (hardware or thermal).
    pub slowdown_frac: Option<f64>,
    /// Highest GPU die temperature read, °C.
    pub temp_c: Option<u32>,
    /// Energy per decode call, µJ; see [`energy_per_call_uj`] for what it covers.
    pub energy_uj: Option<f64>,
}

impl PowerStats {
    /// The statistics of `samples`, taken over a window of `window_s` seconds in which
    /// `calls` decode calls ran.
    pub fn from_samples(samples: &[PowerSample], window_s: f64, calls: usize) -> PowerStats {
        let n = samples.len();
        let mut s = PowerStats {
            nvml_samples: Some(n as u32),
            ..PowerStats::default()
        };
        if n == 0 {
            return s;
        }
        let med = |f: fn(&PowerSample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
        let frac = |r: ThrottleReasons| {
            samples.iter().filter(|x| x.reasons.intersects(r)).count() as f64 / n as f64
        };
        let energy: Vec<(f64, u64)> = samples
            .iter()
            .filter_map(|x| x.energy_mj.map(|e| (x.t_s, e)))
            .collect();
        s.sm_mhz = Some(med(|x| f64::from(x.sm_mhz)));
        s.sm_mhz_min = samples.iter().map(|x| x.sm_mhz).min();
        s.power_w = Some(med(|x| f64::from(x.power_mw) * 1e-3));
        s.power_cap_frac = Some(frac(ThrottleReasons::SW_POWER_CAP));
        s.slowdown_frac = Some(frac(SLOWDOWN));
        s.temp_c = samples.iter().filter_map(|x| x.temp_c).max();
        s.energy_uj = energy_per_call_uj(&energy, window_s, calls);
        s
    }

    /// Whether the software power cap was among the reasons in most samples.
    pub fn power_capped(&self) -> bool {
        self.power_cap_frac.is_some_and(|f| f > 0.5)
    }
}

/// Energy per decode call, µJ, from energy-counter readings `(seconds, mJ)` taken over a
/// window of `window_s` seconds in which `calls` calls ran: the board's mean power times
/// the window, over the calls. It covers the whole board (memory included) and the host's
/// gaps between replays (a launch and a sync each), not the kernels alone.
///
/// The counter advances in steps whose period the card chooses (NVML does not say; it can
/// be tens of ms), so a plain difference over a short window counts a whole number of
/// steps. The mean power is taken between the first and the last step seen instead (the
/// energy of whole steps over the time they took, off by at most a sample period at either
/// end) and assumed for the rest of the window. `None` with fewer than two steps in the
/// window (too short for the counter), where the counter goes backwards (a wrap or a
/// driver reload), and for no calls or an empty window.
pub fn energy_per_call_uj(readings: &[(f64, u64)], window_s: f64, calls: usize) -> Option<f64> {
    if calls == 0 || window_s.is_nan() || window_s <= 0.0 {
        return None;
    }
    let mut steps = Vec::new();
    for w in readings.windows(2) {
        let ((_, before), (t, after)) = (w[0], w[1]);
        match after.cmp(&before) {
            std::cmp::Ordering::Less => return None,
            std::cmp::Ordering::Greater => steps.push((t, after)),
            std::cmp::Ordering::Equal => {}
        }
    }
    let (&(t0, e0), &(t1, e1)) = (steps.first()?, steps.last()?);
    if steps.len() < 2 || t1 <= t0 {
        return None;
    }
    let watts = (e1 - e0) as f64 * 1e-3 / (t1 - t0);
    Some(watts * window_s / calls as f64 * 1e6)
}

/// NVML's bus id (`00000000:18:00.0`) of the CUDA device at PCI `domain:bus:device`
/// (function 0: a GPU is one).
pub fn nvml_bus_id(domain: i32, bus: i32, device: i32) -> String {
    format!("{domain:08x}:{bus:02x}:{device:02x}.0")
}

/// The NVML device of `gpu` and how it was matched. By PCI address: CUDA's ordinals follow
/// CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER, NVML's indices do not. Where the CUDA driver
/// gives no address or NVML knows none by it, it falls back to the NVML index equal to the
/// CUDA ordinal, the same card only when every card is visible in PCI order.
fn nvml_device<'n>(nvml: &'n Nvml, gpu: &Gpu) -> Result<(Device<'n>, String)> {
    let by_bus = pci_bus_id(gpu).and_then(|id| {
        nvml.device_by_pci_bus_id(id.as_str())
            .map(|d| (d, format!("PCI {id}")))
            .map_err(nvml_err("device by PCI bus id"))
    });
    match by_bus {
        Ok(found) => Ok(found),
        Err(e) => match nvml.device_by_index(gpu.ordinal as u32) {
            Ok(d) => Ok((
                d,
                format!(
                    "index {} as the CUDA ordinal ({e}; another card if CUDA_VISIBLE_DEVICES reorders them)",
                    gpu.ordinal
                ),
            )),
            Err(ie) => Err(Error::Other(format!("{e}; NVML device by index: {ie}"))),
        },
    }
}

/// The serial number NVML gives for `gpu`'s board, which tells the cards of a pool apart
/// (every reported figure names its card); `None` without NVML or where the card reports
/// none.
pub fn card_serial(gpu: &Gpu) -> Option<String> {
    let nvml = load().ok()?;
    let (device, _) = nvml_device(&nvml, gpu).ok()?;
    device.serial().ok().filter(|s| !s.trim().is_empty())
}

/// [`Gpu::describe`] with the card's serial ([`card_serial`]) where NVML gives one: the
/// line `demo`, `check`, `info`, `probe` and `bench` start with.
pub fn describe_card(gpu: &Gpu) -> String {
    describe_with_serial(gpu, card_serial(gpu).as_deref())
}

/// [`describe_card`]'s line for a serial already looked up.
pub(crate) fn describe_with_serial(gpu: &Gpu, serial: Option<&str>) -> String {
    match serial {
        Some(serial) => format!("{}, serial {serial}", gpu.describe()),
        None => gpu.describe(),
    }
}

/// Where [`PowerSample::power_mw`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PowerSource {
    /// `NVML_FI_DEV_POWER_INSTANT`: the draw at the reading.
    Instant,
    /// `nvmlDeviceGetPowerUsage`, for drivers without the instant field: on Ampere and
    /// newer (GA100 aside) the mean of the last second.
    Average,
}

fn nvml_err(what: &'static str) -> impl Fn(NvmlError) -> Error {
    move |e| Error::Other(format!("NVML {what}: {e}"))
}

/// Loads NVML (`libnvidia-ml.so.1`, what the driver installs).
fn load() -> Result<Nvml> {
    Nvml::init().map_err(nvml_err("loading libnvidia-ml.so.1"))
}

/// NVML opened on the benchmarked card, ready to sample it.
pub struct PowerMonitor {
    nvml: Nvml,
    index: u32,
    power: PowerSource,
    energy: bool,
    description: String,
}

impl PowerMonitor {
    /// Loads NVML, finds the NVML device of `gpu` and takes one reading, so that a query the
    /// card or driver lacks turns sampling off here rather than at the first point. The
    /// energy counter is optional: without it [`PowerStats::energy_uj`] stays absent.
    pub fn open(gpu: &Gpu) -> Result<PowerMonitor> {
        let nvml = load()?;
        let (device, matched) = nvml_device(&nvml, gpu)?;
        let index = device.index().map_err(nvml_err("device index"))?;
        let power = match instant_power_mw(&device) {
            Ok(_) => PowerSource::Instant,
            Err(_) => PowerSource::Average,
        };
        let energy = device.total_energy_consumption();
        read(&device, power, energy.is_ok(), Instant::now())?;
        let description = format!(
            "NVML device {index} ({matched}): SM clock, power ({}), clock-event reasons{}, every {} ms during the timed replays",
            match power {
                PowerSource::Instant => "instant",
                PowerSource::Average => "nvmlDeviceGetPowerUsage, a 1 s mean on Hopper",
            },
            match &energy {
                Ok(_) => " and the energy counter".to_string(),
                Err(e) => format!(" (no energy counter: {e})"),
            },
            SAMPLE_PERIOD.as_millis()
        );
        Ok(PowerMonitor {
            nvml,
            index,
            power,
            energy: energy.is_ok(),
            description,
        })
    }

    /// One line: the NVML device, how it was matched and what is sampled.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Runs `f` (timed replays of `calls` decode calls in all) while a thread reads the
    /// card every [`SAMPLE_PERIOD`], from when `f` starts until it returns. Returns `f`'s
    /// value with the statistics, or with the sampler's error (a failed NVML query) in
    /// their place; an error of `f` comes first.
    pub fn sample_while<T>(
        &self,
        calls: usize,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<(T, Result<PowerStats>)> {
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let start = Instant::now();
            let sampler = scope.spawn(move || self.poll(start, &stopped));
            let value = f();
            let window_s = start.elapsed().as_secs_f64();
            drop(stop);
            let samples = sampler
                .join()
                .unwrap_or_else(|_| Err(Error::Other("the NVML sampler panicked".into())));
            Ok((
                value?,
                samples.map(|s| PowerStats::from_samples(&s, window_s, calls)),
            ))
        })
    }

    /// Reads the card until `stopped` disconnects, first at once, then every
    /// [`SAMPLE_PERIOD`]; a window that ends before the first reading has no sample.
    fn poll(&self, start: Instant, stopped: &mpsc::Receiver<()>) -> Result<Vec<PowerSample>> {
        let device = self
            .nvml
            .device_by_index(self.index)
            .map_err(nvml_err("device by index"))?;
        let mut samples = Vec::new();
        let mut wait = Duration::ZERO;
        while stopped.recv_timeout(wait) == Err(RecvTimeoutError::Timeout) {
            samples.push(read(&device, self.power, self.energy, start)?);
            wait = SAMPLE_PERIOD;
        }
        Ok(samples)
    }
}

/// One reading of `device`; the energy counter only where `energy`.
fn read(device: &Device, power: PowerSource, energy: bool, start: Instant) -> Result<PowerSample> {
    Ok(PowerSample {
        t_s: start.elapsed().as_secs_f64(),
        sm_mhz: device.clock_info(Clock::SM).map_err(nvml_err("SM clock"))?,
        power_mw: match power {
            PowerSource::Instant => instant_power_mw(device)?,
            PowerSource::Average => device.power_usage().map_err(nvml_err("power usage"))?,
        },
        reasons: device
            .current_throttle_reasons()
            .map_err(nvml_err("clock-event reasons"))?,
        temp_c: device.temperature(TemperatureSensor::Gpu).ok(),
        energy_mj: energy
            .then(|| device.total_energy_consumption())
            .transpose()
            .map_err(nvml_err("energy counter"))?,
    })
}

/// The PCI address of `gpu` from the CUDA driver, as NVML writes it.
fn pci_bus_id(gpu: &Gpu) -> Result<String> {
    use cudarc::driver::sys::CUdevice_attribute::*;
    let attr = |a, what: &str| {
        gpu.ctx
            .attribute(a)
            .map_err(|e| Error::driver(format!("cuDeviceGetAttribute({what})"), e))
    };
    Ok(nvml_bus_id(
        attr(CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, "PCI domain")?,
        attr(CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, "PCI bus")?,
        attr(CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, "PCI device")?,
    ))
}

/// The board's power draw at the reading, mW (`NVML_FI_DEV_POWER_INSTANT`).
fn instant_power_mw(device: &Device) -> Result<u32> {
    let bad = |why: String| Error::Other(format!("NVML instant power: {why}"));
    let sample = device
        .field_values_for(&[FieldId(NVML_FI_DEV_POWER_INSTANT)])
        .map_err(nvml_err("instant power"))?
        .pop()
        .ok_or_else(|| bad("no value returned".into()))?
        .map_err(nvml_err("instant power"))?;
    match sample.value.map_err(nvml_err("instant power"))? {
        SampleValue::U32(mw) => Ok(mw),
        SampleValue::U64(mw) => u32::try_from(mw).map_err(|_| bad(format!("{mw} mW"))),
        other => Err(bad(format!("unexpected value {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_nvml_fails_cleanly_or_works() {
        // Without a driver (CI, the development machines) the library is missing: an error
        // naming it, no panic.
        match load() {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().contains("libnvidia-ml"), "{e}"),
        }
    }
}
