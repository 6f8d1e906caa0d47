//! The backends compiled into this build, and their devices.
//!
//! A backend is a cargo feature (`flex`, `ndarray`, `wgpu`) and is chosen at run time by name:
//! [`device`] gives its device, or says why it cannot; [`choose_device`] also takes
//! [`AUTO`], for which [`default_device`] picks a hardware GPU where there is one and the CPU
//! otherwise, and says why. For `wgpu` that means asking the
//! machine for a graphics adapter up front, so that a machine without one gets an error naming
//! the missing driver instead of a panic from deep inside wgpu at the first tensor.

use core::fmt;

use burn::tensor::Device;

mod chosen;
#[cfg(feature = "wgpu")]
mod wgpu;

pub use chosen::{AUTO, ChosenDevice, choose_device, choose_devices, default_device};

/// The names of the backends compiled into this build, in order of preference: what a
/// `--device` flag can choose from.
pub const COMPILED_BACKENDS: &[&str] = &[
    #[cfg(feature = "flex")]
    "flex",
    #[cfg(feature = "ndarray")]
    "ndarray",
    #[cfg(feature = "wgpu")]
    "wgpu",
];

/// Why a backend's device is not available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// The name is not one of the [`COMPILED_BACKENDS`].
    NotCompiled {
        /// The name as given.
        name: String,
    },
    /// The backend is compiled in, but the machine cannot run it (no GPU adapter).
    Unavailable {
        /// The backend, e.g. `"wgpu"`.
        backend: &'static str,
        /// What the backend reported.
        reason: String,
    },
    /// The adapter is a software one (Mesa's lavapipe) and this build has the `vulkan`
    /// feature, whose SPIR-V kernels it cannot run.
    SpirvOnSoftwareAdapter {
        /// The device as named, e.g. `"wgpu"` or `"wgpu:1"`.
        name: String,
    },
    /// `wgpu:N` names no adapter wgpu lists on this machine.
    NoSuchAdapter {
        /// The name as given, e.g. `"wgpu:2"`.
        name: String,
        /// How many adapters wgpu lists.
        adapters: usize,
    },
    /// A data-parallel list names the same GPU device twice: two workers would share one
    /// device's lazy stream engine, whose cross-thread reads race (see [`choose_devices`]).
    GpuNamedTwice {
        /// The device as named the second time, e.g. `"wgpu:0"`.
        name: String,
    },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotCompiled { name } => {
                write!(
                    f,
                    "`{name}` is not compiled into this build (it has: {})",
                    COMPILED_BACKENDS.join(", ")
                )?;
                if matches!(name.as_str(), "flex" | "ndarray" | "wgpu") {
                    write!(f, "; rebuild with `--features {name}`")?;
                }
                Ok(())
            }
            Self::Unavailable { backend, reason } => write!(
                f,
                "{backend}: no graphics adapter found ({reason}). wgpu needs a GPU driver: a \
                 vendor driver, or on Linux without a GPU Mesa's software Vulkan (Debian/Ubuntu: \
                 `apt-get install mesa-vulkan-drivers libvulkan1`). To run on the CPU instead, \
                 choose `flex`"
            ),
            Self::SpirvOnSoftwareAdapter { name } => write!(
                f,
                "`{name}`: the adapter is a software one (such as Mesa's lavapipe), and this \
                 build has the `vulkan` feature, whose SPIR-V kernels it cannot run (Mesa 22.3's \
                 lavapipe crashes compiling every kernel with workgroup shared memory: \
                 reductions, matrix products, the normalizers). On the CPU choose `flex`, or \
                 build with `--features wgpu` alone, whose WGSL kernels lavapipe runs"
            ),
            Self::NoSuchAdapter { name, adapters } => {
                write!(
                    f,
                    "`{name}`: wgpu lists {adapters} adapter(s) on this machine"
                )?;
                if *adapters > 0 {
                    write!(f, ", wgpu:0 to wgpu:{}", adapters - 1)?;
                }
                Ok(())
            }
            Self::GpuNamedTwice { name } => write!(
                f,
                "`{name}` is named twice: two workers on one GPU device would share its \
                 BatchNorm running statistics across threads, which burn-fusion does not \
                 order, so they would come out wrong. Name each adapter once (`wgpu:0,wgpu:1`), \
                 or for several CPU workers `flex,flex`"
            ),
        }
    }
}

impl std::error::Error for DeviceError {}

/// The device of the backend called `name` (one of [`COMPILED_BACKENDS`]).
///
/// `wgpu` is the default adapter (`Device::wgpu(Default::default())`); it is initialised here,
/// once per process, so a missing adapter is reported rather than met later.
///
/// # Errors
///
/// [`DeviceError::NotCompiled`] for a name this build does not have,
/// [`DeviceError::Unavailable`] when `wgpu` finds no adapter, and
/// [`DeviceError::SpirvOnSoftwareAdapter`] when a `vulkan` build finds only a software one.
pub fn device(name: &str) -> Result<Device, DeviceError> {
    match name {
        #[cfg(feature = "flex")]
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)] // ndarray is deprecated upstream and still supported here
        "ndarray" => Ok(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        "wgpu" => wgpu::default_device(),
        _ => Err(DeviceError::NotCompiled { name: name.into() }),
    }
}

/// One device of every backend compiled into this build, with its name: what the tests run
/// over.
///
/// # Errors
///
/// The first backend whose device is unavailable, as [`device`] reports it.
pub fn compiled_devices() -> Result<Vec<(&'static str, Device)>, DeviceError> {
    COMPILED_BACKENDS
        .iter()
        .map(|&name| device(name).map(|device| (name, device)))
        .collect()
}

/// The devices of the CPU backends compiled into this build (`flex`, `ndarray`), with their
/// names: [`compiled_devices`] without the GPU.
///
/// # Errors
///
/// [`DeviceError::NotCompiled`] naming `flex` when the build has no CPU backend.
pub fn compiled_cpu_devices() -> Result<Vec<(&'static str, Device)>, DeviceError> {
    let devices: Vec<_> = COMPILED_BACKENDS
        .iter()
        .filter(|&&name| name != "wgpu")
        .map(|&name| device(name).map(|device| (name, device)))
        .collect::<Result<_, _>>()?;
    if devices.is_empty() {
        return Err(DeviceError::NotCompiled {
            name: "flex".into(),
        });
    }
    Ok(devices)
}

/// [`compiled_devices`] for tests and benchmarks that run on every backend: a backend that
/// cannot start (no GPU adapter) is a panic with [`DeviceError`]'s message, never a backend
/// silently left out.
///
/// # Panics
///
/// When a compiled backend's device is unavailable, or the build has no backend.
pub fn test_devices() -> Vec<(&'static str, Device)> {
    let devices = compiled_devices().unwrap_or_else(|err| panic!("{err}"));
    assert!(!devices.is_empty(), "enable at least one backend feature");
    devices
}

/// [`compiled_cpu_devices`] for tests, as [`test_devices`] is: the CPU backends only, for the
/// tests that train for a few steps (on a software GPU adapter such as lavapipe, training the
/// models would take minutes; their GPU training is checked step by step against flex in
/// normzoo's `tests/backend_parity.rs` instead).
///
/// # Panics
///
/// When the build has no CPU backend.
pub fn cpu_test_devices() -> Vec<(&'static str, Device)> {
    compiled_cpu_devices().unwrap_or_else(|err| panic!("{err}"))
}

/// Seeds `device`'s random numbers for a test that trains, and keeps every other such test from
/// reseeding them until the returned guard drops.
///
/// burn's CPU backends draw from one process-wide generator, and the tests of one binary run
/// on several threads: a test that seeds and then draws its data and initial weights would
/// otherwise have its stream restarted halfway by another test's seed, so its numbers (and
/// whether a few steps lower its loss) would change from run to run. Hold the guard for as
/// long as the test draws.
pub fn seed_for_test(device: &Device, seed: u64) -> std::sync::MutexGuard<'static, ()> {
    static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding the guard leaves the generator as usable as before.
    let guard = SEEDED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    device.seed(seed);
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compiled_backend_has_a_device() {
        let devices = compiled_devices().unwrap_or_else(|err| panic!("{err}"));
        let names: Vec<_> = devices.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, COMPILED_BACKENDS);
    }

    #[test]
    fn the_cpu_devices_are_the_compiled_backends_but_wgpu() {
        let names: Vec<_> = compiled_cpu_devices()
            .unwrap()
            .iter()
            .map(|(name, _)| *name)
            .collect();
        let expected: Vec<_> = COMPILED_BACKENDS
            .iter()
            .copied()
            .filter(|&name| name != "wgpu")
            .collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn unknown_backends_are_named_with_the_compiled_ones() {
        let err = device("tpu").unwrap_err();
        assert_eq!(err, DeviceError::NotCompiled { name: "tpu".into() });
        let message = err.to_string();
        assert!(message.starts_with("`tpu` is not compiled into this build (it has: "));
        assert!(!message.contains("rebuild"), "{message}");
        for name in COMPILED_BACKENDS {
            assert!(message.contains(name), "{message}");
        }
    }

    #[test]
    fn a_known_backend_left_out_of_the_build_names_its_feature() {
        let message = DeviceError::NotCompiled {
            name: "wgpu".into(),
        }
        .to_string();
        assert!(
            message.ends_with("; rebuild with `--features wgpu`"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_adapter_names_the_driver_and_the_cpu_alternative() {
        let message = DeviceError::Unavailable {
            backend: "wgpu",
            reason: "No adapter available".into(),
        }
        .to_string();
        assert!(message.starts_with("wgpu: no graphics adapter found (No adapter available)"));
        assert!(message.contains("mesa-vulkan-drivers libvulkan1"));
        assert!(message.ends_with("choose `flex`"));
    }
}
