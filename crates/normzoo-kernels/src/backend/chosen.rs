//! The device a program runs on when its user names one, or lets it choose ([`AUTO`]).

use core::fmt;

use burn::tensor::Device;

use super::{COMPILED_BACKENDS, DeviceError, device};

/// The name that lets the program choose the device (a `--device` flag's default): see
/// [`default_device`].
pub const AUTO: &str = "auto";

/// A device chosen for a program: its backend and why. Its `Display` is the line a program
/// starts with, e.g. `device: flex (wgpu finds only a software adapter …)`.
#[derive(Debug, Clone)]
pub struct ChosenDevice {
    /// The backend's name, one of [`COMPILED_BACKENDS`].
    pub backend: &'static str,
    /// The backend's device.
    pub device: Device,
    /// Why this device: named by the user, or what [`default_device`] found.
    pub reason: String,
}

impl fmt::Display for ChosenDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device: {} ({})", self.backend, self.reason)
    }
}

/// The device called `name` (one of [`COMPILED_BACKENDS`], as [`device`] gives it), or for
/// [`AUTO`] the [`default_device`].
///
/// # Errors
///
/// As [`device`] and [`default_device`].
pub fn choose_device(name: &str) -> Result<ChosenDevice, DeviceError> {
    if name == AUTO {
        return default_device();
    }
    let device = device(name)?;
    let backend = COMPILED_BACKENDS
        .iter()
        .copied()
        .find(|&backend| backend == name)
        .expect("`device` knows only the compiled backends");
    Ok(ChosenDevice {
        backend,
        device,
        reason: "as asked".into(),
    })
}

/// The devices a data-parallel run trains on, from a comma-separated `list` such as
/// `flex,flex` or `wgpu:0,wgpu:1`: each a name [`choose_device`] takes, or `wgpu:N` for the
/// `N`-th adapter wgpu lists on this machine (`wgpu` alone is its default adapter). A CPU
/// backend may come more than once: `flex,flex` runs two workers on the CPU.
///
/// A GPU device may not: two workers on one wgpu device run on two threads of one burn-fusion
/// engine, which (burn 0.22.1) does not order a thread's read of a tensor another thread's
/// stream produced: BatchNorm's running statistics, which the workers share and average, come
/// out wrong (one thread can read a statistic another has not yet written).
///
/// # Errors
///
/// As [`choose_device`] for the first name that fails, [`DeviceError::NoSuchAdapter`] for
/// `wgpu:N` beyond wgpu's list, and [`DeviceError::GpuNamedTwice`] for a wgpu device named
/// twice.
pub fn choose_devices(list: &str) -> Result<Vec<ChosenDevice>, DeviceError> {
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    let chosen: Vec<ChosenDevice> = names
        .iter()
        .map(|&name| match name.strip_prefix("wgpu:") {
            #[cfg(feature = "wgpu")]
            Some(_) => Ok(ChosenDevice {
                backend: "wgpu",
                device: super::wgpu::adapter(name)?,
                reason: format!("{name}, as asked"),
            }),
            #[cfg(not(feature = "wgpu"))]
            Some(_) => Err(DeviceError::NotCompiled {
                name: "wgpu".into(),
            }),
            None => choose_device(name),
        })
        .collect::<Result<_, _>>()?;
    for (at, (&name, later)) in names.iter().zip(&chosen).enumerate() {
        let earlier = &chosen[..at];
        if later.backend == "wgpu" && earlier.iter().any(|c| c.device == later.device) {
            return Err(DeviceError::GpuNamedTwice { name: name.into() });
        }
    }
    Ok(chosen)
}

/// The device a program uses when its user names none: wgpu's default adapter where this build
/// has `wgpu` and the machine a hardware GPU adapter (discrete, integrated or virtual),
/// otherwise the first CPU backend compiled in (`flex`, else `ndarray`). A software GPU
/// adapter (Mesa's lavapipe, WARP) is never chosen by default: flex is several times faster
/// on the same CPU. Only wgpu's list of adapters is read to decide; no CPU-only machine opens
/// a GPU device.
///
/// # Errors
///
/// [`DeviceError::Unavailable`] when a hardware adapter is listed but does not start, and
/// [`DeviceError::NotCompiled`] naming `flex` for a build with neither a usable GPU nor a CPU
/// backend.
pub fn default_device() -> Result<ChosenDevice, DeviceError> {
    #[cfg(feature = "wgpu")]
    let no_gpu = match super::wgpu::hardware_gpu(&super::wgpu::adapter_kinds()) {
        Ok(gpu) => {
            return Ok(ChosenDevice {
                backend: "wgpu",
                device: device("wgpu")?,
                reason: format!("{gpu}, found by wgpu; `--device flex` for the CPU"),
            });
        }
        Err(why) => why,
    };
    #[cfg(not(feature = "wgpu"))]
    let no_gpu = String::from("this build has no GPU backend; rebuild with `--features wgpu`");
    let cpu = COMPILED_BACKENDS
        .iter()
        .copied()
        .find(|&backend| backend != "wgpu")
        .ok_or_else(|| DeviceError::NotCompiled {
            name: "flex".into(),
        })?;
    Ok(ChosenDevice {
        backend: cpu,
        device: device(cpu)?,
        reason: no_gpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_backend_is_taken_as_asked() {
        for &name in COMPILED_BACKENDS {
            let chosen = choose_device(name).unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(chosen.backend, name);
            assert_eq!(chosen.to_string(), format!("device: {name} (as asked)"));
        }
        assert!(matches!(
            choose_device("tpu"),
            Err(DeviceError::NotCompiled { .. })
        ));
    }

    #[test]
    fn a_list_of_devices_takes_each_name_and_wgpus_adapters_by_index() {
        let chosen = choose_devices(&COMPILED_BACKENDS.join(", ")).unwrap();
        let backends: Vec<_> = chosen.iter().map(|chosen| chosen.backend).collect();
        assert_eq!(backends, COMPILED_BACKENDS);
        if COMPILED_BACKENDS.contains(&"flex") {
            assert_eq!(choose_devices("flex,flex").unwrap().len(), 2);
        }
        assert!(matches!(
            choose_devices("flex,tpu"),
            Err(DeviceError::NotCompiled { name }) if name == "tpu"
        ));
        #[cfg(feature = "wgpu")]
        {
            let adapters = Device::enumerate(burn::tensor::DeviceType::Wgpu).len();
            assert!(adapters > 0, "the wgpu tests need an adapter");
            let first = choose_devices("wgpu:0").unwrap().remove(0);
            for twice in ["wgpu:0, wgpu:0", "wgpu,wgpu"] {
                let err = choose_devices(twice).unwrap_err();
                let name = twice.rsplit(',').next().unwrap().trim();
                assert_eq!(err, DeviceError::GpuNamedTwice { name: name.into() });
                assert!(err.to_string().contains("named twice"), "{err}");
            }
            assert_eq!(first.to_string(), "device: wgpu (wgpu:0, as asked)");
            let ones = burn::tensor::Tensor::<1>::ones([3], &first.device);
            assert_eq!(ones.sum().into_scalar::<f32>(), 3.0);
            for name in [format!("wgpu:{adapters}"), "wgpu:first".into()] {
                let err = choose_devices(&name).unwrap_err();
                assert_eq!(
                    err,
                    DeviceError::NoSuchAdapter {
                        name: name.clone(),
                        adapters
                    }
                );
                let message = err.to_string();
                let expected = format!(
                    "`{name}`: wgpu lists {adapters} adapter(s) on this machine, wgpu:0 to wgpu:"
                );
                assert!(message.starts_with(&expected), "{message}");
            }
        }
    }

    #[test]
    fn auto_takes_the_gpu_only_where_wgpu_lists_a_hardware_adapter() {
        let chosen = choose_device(AUTO).unwrap_or_else(|err| panic!("{err}"));
        #[cfg(feature = "wgpu")]
        {
            let hardware = super::super::wgpu::hardware_gpu(&super::super::wgpu::adapter_kinds());
            assert_eq!(chosen.backend == "wgpu", hardware.is_ok(), "{chosen}");
            if let Err(why) = hardware {
                assert_eq!(chosen.reason, why);
            }
        }
        #[cfg(not(feature = "wgpu"))]
        assert!(chosen.reason.contains("--features wgpu"), "{chosen}");
        if chosen.backend != "wgpu" && COMPILED_BACKENDS.contains(&"flex") {
            assert_eq!(chosen.backend, "flex", "flex is preferred to ndarray");
        }
        assert!(chosen.to_string().starts_with("device: "));
    }
}
