//! The backends compiled into this build.

use burn::tensor::Device;

/// One device of every backend compiled into this build (cargo features `flex`, `ndarray`,
/// `wgpu`), with its name: what the tests run over, and what a `--device` flag can choose from.
// One push per feature: which of them compile depends on the build.
#[allow(clippy::vec_init_then_push)]
pub fn compiled_devices() -> Vec<(&'static str, Device)> {
    #[allow(unused_mut)]
    let mut devices = Vec::new();
    #[cfg(feature = "flex")]
    devices.push(("flex", Device::flex()));
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // ndarray is deprecated upstream and still supported here
    devices.push(("ndarray", Device::ndarray()));
    #[cfg(feature = "wgpu")]
    devices.push(("wgpu", Device::wgpu(Default::default())));
    devices
}

#[cfg(test)]
pub(crate) fn test_devices() -> Vec<Device> {
    let devices: Vec<Device> = compiled_devices().into_iter().map(|(_, d)| d).collect();
    assert!(!devices.is_empty(), "enable at least one backend feature");
    devices
}
