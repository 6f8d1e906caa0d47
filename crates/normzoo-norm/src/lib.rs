//! Normalization layers for [Burn](https://burn.dev) with exactly PyTorch's semantics.
//!
//! | layer | PyTorch | statistics over |
//! |---|---|---|
//! | [`BatchNorm`] | `BatchNorm1d/2d/3d` | the batch and every spatial position, per channel |
//! | [`LayerNorm`] | `LayerNorm` | the last `k` axes of each sample |
//! | [`LayerNorm2d`] | timm's `LayerNorm2d` | the channels at each position of `[N, C, H, W]` |
//! | [`GroupNorm`] | `GroupNorm` | each group of channels of each sample |
//! | [`InstanceNorm`] | `InstanceNorm1d/2d/3d` | each channel of each sample |
//! | [`RmsNorm`] | `RMSNorm` | the last `k` axes, root mean square only |
//!
//! Every layer is built from a `Config` whose defaults are PyTorch's; `init` validates it and
//! returns a [`NormError`] naming the problem. [`NormConfig`] picks a normalizer by name
//! (`"batch"`, `"group:32"`, `"none"`, …) for architectures that let the user swap it.
//!
//! # The classic worked example
//!
//! Four values of one feature, normalized with the batch's mean (2.5) and biased variance
//! (1.25), then scaled by `γ = 2` and shifted by `β = 3`:
//!
//! ```
//! use burn::module::Param;
//! use burn::tensor::{Device, Tensor, TensorData, Tolerance};
//! use normzoo_norm::{BatchNormConfig, StatsMode};
//!
//! let device = Device::default();
//! let x = Tensor::<2>::from_floats([[1.0], [2.0], [3.0], [4.0]], &device);
//!
//! let mut bn = BatchNormConfig::new(1).init(&device)?.with_mode(StatsMode::Train);
//! bn.forward(x.clone()).into_data().assert_approx_eq::<f32>(
//!     &TensorData::from([[-1.3416], [-0.4472], [0.4472], [1.3416]]),
//!     Tolerance::absolute(1e-4),
//! );
//!
//! bn.gamma = Some(Param::from_tensor(Tensor::from_floats([2.0], &device)));
//! bn.beta = Some(Param::from_tensor(Tensor::from_floats([3.0], &device)));
//! bn.forward(x).into_data().assert_approx_eq::<f32>(
//!     &TensorData::from([[0.3168], [2.1056], [3.8944], [5.6832]]),
//!     Tolerance::absolute(1e-4),
//! );
//! # Ok::<(), normzoo_norm::NormError>(())
//! ```

#![warn(missing_docs)]

mod batch;
mod display;
mod error;
mod group;
mod instance;
// The kernels' references are computed on flex, in f64.
#[cfg(all(test, feature = "flex"))]
mod kernel_tests;
mod layer;
mod layer2d;
mod mode;
mod norm;
mod norm_config;
mod precision;
mod rms;
mod stats;

pub use batch::{BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormConfig};
pub use error::NormError;
pub use group::{GroupNorm, GroupNormConfig};
pub use instance::{
    InstanceNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, InstanceNormConfig,
};
pub use layer::{LayerNorm, LayerNormConfig};
pub use layer2d::{LayerNorm2d, LayerNorm2dConfig};
pub use mode::StatsMode;
pub use norm::{Identity, Norm};
pub use norm_config::NormConfig;
pub use precision::cast_outside_normalizers;
pub use rms::{RmsNorm, RmsNormConfig};
