//! wgpu's default adapter, and what kinds of adapter the machine has.

use std::sync::OnceLock;

use burn::backend::DispatchDevice;
use burn::tensor::wgpu::WgpuInitError;
use burn::tensor::{Device, DeviceType};
use cubecl::device::WgpuDeviceKind;

use super::DeviceError;

/// Whether this build compiles the kernels to SPIR-V (the `vulkan` feature) rather than WGSL.
const SPIRV: bool = cfg!(feature = "vulkan");

/// Asks for the default adapter once; every later call answers the same.
pub(super) fn default_device() -> Result<Device, DeviceError> {
    static DEVICE: OnceLock<Result<Device, DeviceError>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            spirv_runs_on("wgpu", &adapter_kinds(), SPIRV)?;
            initialize_default()
        })
        .clone()
}

/// Starts wgpu's default adapter, or says why it cannot.
fn initialize_default() -> Result<Device, DeviceError> {
    match Device::wgpu_options().init() {
        Ok(device) => Ok(device),
        // Already running: something in this process used the device first.
        Err(WgpuInitError::Registration { .. }) => {
            Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
        }
        Err(err) => Err(DeviceError::Unavailable {
            backend: "wgpu",
            reason: err.to_string(),
        }),
    }
}

/// The adapter called `name`, `wgpu:N`: the `N`-th that wgpu lists on this machine (in the
/// order of [`Device::enumerate`]), counting from 0.
pub(super) fn adapter(name: &str) -> Result<Device, DeviceError> {
    let adapters = Device::enumerate(DeviceType::Wgpu);
    let device = name
        .strip_prefix("wgpu:")
        .and_then(|index| index.parse::<usize>().ok())
        .and_then(|index| adapters.get(index).cloned())
        .ok_or_else(|| DeviceError::NoSuchAdapter {
            name: name.into(),
            adapters: adapters.len(),
        })?;
    let kinds: Vec<_> = kind(&device).into_iter().collect();
    spirv_runs_on(name, &kinds, SPIRV)?;
    Ok(device)
}

/// The kind of each adapter wgpu finds on this machine (its graphics API's list; no device is
/// opened).
pub(super) fn adapter_kinds() -> Vec<WgpuDeviceKind> {
    Device::enumerate(DeviceType::Wgpu)
        .iter()
        .filter_map(kind)
        .collect()
}

/// The kind of adapter behind a wgpu `device`.
fn kind(device: &Device) -> Option<WgpuDeviceKind> {
    match device.as_dispatch() {
        DispatchDevice::Cube(cubecl::Device::Wgpu(wgpu)) => Some(wgpu.kind.clone()),
        _ => None,
    }
}

/// Whether the device `name`, whose adapter is one of `kinds` (wgpu's default picks a hardware
/// GPU before a software adapter), can run this build's kernels: a build that compiles them to
/// SPIR-V (`spirv`, the `vulkan` feature) cannot on a software adapter. Mesa 22.3's lavapipe
/// runs cubecl's SPIR-V kernels without workgroup shared memory (element-wise, copies, direct
/// convolutions) but crashes (SIGSEGV in `vkCreateComputePipelines`) compiling every kernel
/// with it, burn's reductions and matrix products as much as our normalizers: an error here
/// instead of a crash at the first such kernel.
fn spirv_runs_on(name: &str, kinds: &[WgpuDeviceKind], spirv: bool) -> Result<(), DeviceError> {
    let software_only = !kinds.is_empty() && hardware_gpu(kinds).is_err();
    match spirv && software_only {
        true => Err(DeviceError::SpirvOnSoftwareAdapter { name: name.into() }),
        false => Ok(()),
    }
}

/// The hardware GPU among adapters of `kinds` that wgpu's default adapter will be (a discrete
/// GPU before an integrated one, as wgpu's high-performance preference picks), described; or
/// why there is none. A software adapter (Mesa's lavapipe or llvmpipe, WARP) does not count:
/// on the CPU, flex is several times faster.
pub(super) fn hardware_gpu(kinds: &[WgpuDeviceKind]) -> Result<&'static str, String> {
    let hardware = kinds
        .iter()
        .filter_map(|kind| match kind {
            WgpuDeviceKind::DiscreteGpu(_) => Some((0, "a discrete GPU")),
            WgpuDeviceKind::IntegratedGpu(_) => Some((1, "an integrated GPU")),
            WgpuDeviceKind::VirtualGpu(_) => Some((2, "a virtual GPU")),
            _ => None,
        })
        .min_by_key(|&(preference, _)| preference);
    if let Some((_, description)) = hardware {
        return Ok(description);
    }
    Err(if kinds.is_empty() {
        "wgpu finds no graphics adapter on this machine".into()
    } else {
        "wgpu finds only a software adapter, such as Mesa's lavapipe, which flex outruns on \
         the CPU; `--device wgpu` still uses it"
            .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discrete_gpu_comes_before_an_integrated_one_and_a_software_one() {
        let kinds = [
            WgpuDeviceKind::Cpu,
            WgpuDeviceKind::IntegratedGpu(0),
            WgpuDeviceKind::DiscreteGpu(0),
        ];
        assert_eq!(hardware_gpu(&kinds), Ok("a discrete GPU"));
        assert_eq!(hardware_gpu(&kinds[..2]), Ok("an integrated GPU"));
        assert_eq!(
            hardware_gpu(&[WgpuDeviceKind::VirtualGpu(0)]),
            Ok("a virtual GPU")
        );
    }

    #[test]
    fn a_spirv_build_refuses_a_software_adapter_and_says_what_to_use() {
        let software = [WgpuDeviceKind::Cpu];
        assert_eq!(spirv_runs_on("wgpu", &software, false), Ok(()));
        let err = spirv_runs_on("wgpu:1", &software, true).unwrap_err();
        assert_eq!(
            err,
            DeviceError::SpirvOnSoftwareAdapter {
                name: "wgpu:1".into()
            }
        );
        let message = err.to_string();
        assert!(message.starts_with("`wgpu:1`: the adapter is a software one"));
        assert!(message.contains("choose `flex`"), "{message}");
        assert!(message.contains("`--features wgpu` alone"), "{message}");
        // wgpu's default adapter is the hardware one where there is one.
        let both = [WgpuDeviceKind::Cpu, WgpuDeviceKind::DiscreteGpu(0)];
        assert_eq!(spirv_runs_on("wgpu", &both, true), Ok(()));
        // No adapter at all is `Unavailable`, reported when the device starts.
        assert_eq!(spirv_runs_on("wgpu", &[], true), Ok(()));
        // This build: the software adapter the tests run on is refused only with `vulkan`.
        assert_eq!(
            spirv_runs_on("wgpu", &software, SPIRV).is_err(),
            cfg!(feature = "vulkan")
        );
    }

    #[test]
    fn a_software_adapter_alone_is_not_a_gpu_and_the_reason_says_so() {
        let why = hardware_gpu(&[WgpuDeviceKind::Cpu]).unwrap_err();
        assert!(why.contains("only a software adapter"), "{why}");
        assert!(why.contains("`--device wgpu` still uses it"), "{why}");
        let why = hardware_gpu(&[]).unwrap_err();
        assert!(why.contains("no graphics adapter"), "{why}");
    }
}
