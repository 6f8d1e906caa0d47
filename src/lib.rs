//! # normzoo
//!
//! Every normalization layer with exactly PyTorch's semantics, for [Burn](https://burn.dev).
//!
//! - [`norm`]: BatchNorm (1d/2d/3d, running statistics), LayerNorm, channels-first LayerNorm2d
//!   (ConvNeXt), GroupNorm, InstanceNorm and RMSNorm, plus [`norm::NormConfig`], which lets any
//!   architecture take its normalizer by name (`"batch"`, `"group:32"`, `"none"`, …).
//!
//! - [`models`]: architectures that take a [`norm::NormConfig`]: MLP, ResNet18, VGG16,
//!   ConvNeXt, a Transformer block, a layer-normalized LSTM, U-Net, and CycleGAN's ResNet
//!   generator and PatchGAN discriminator.
//!
//! - [`train`]: training them on burn-train (CIFAR-10 from the download cache or a local copy,
//!   a synthetic offline stand-in, checkpoints and resume) and the examples' training loops.
//!
//! - [`lab`]: the normalization experiments (BatchNorm vs LayerNorm vs GroupNorm vs none,
//!   batch size, gradient flow, train/eval mismatch) with figures and a report.
//!
//! The backend is chosen at run time through burn's `Device`; the cargo features `flex`
//! (default), `ndarray` and `wgpu` (or `vulkan`: wgpu with SPIR-V kernels) decide which
//! backends are compiled in, and [`backend`] gives a compiled backend's device by name
//! (`"flex"`, `"wgpu"`, …).
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use normzoo::norm::NormConfig;
//!
//! let device = Device::default();
//! for name in ["batch", "group:8", "layer2d", "instance", "none"] {
//!     let norm: NormConfig = name.parse()?;
//!     let layer = norm.init(32, &device)?;
//!     let y = layer.forward(Tensor::<4>::ones([4, 32, 8, 8], &device));
//!     assert_eq!(y.dims(), [4, 32, 8, 8]);
//! }
//! # Ok::<(), normzoo::norm::NormError>(())
//! ```

#![warn(missing_docs)]

pub use normzoo_kernels::backend;
pub use normzoo_lab as lab;
pub use normzoo_models as models;
pub use normzoo_norm as norm;
pub use normzoo_train as train;

/// The README's examples, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
