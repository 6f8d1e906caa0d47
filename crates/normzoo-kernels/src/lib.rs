//! normzoo's hand-written kernels for [Burn](https://burn.dev), and the backends they run on.
//!
//! - [`normalize_rows`], [`normalize_channels`] and [`batch_norm`]: the normalizations of
//!   `normzoo-norm`'s layers in fused kernels, each with a closed-form backward pass, where the
//!   input's backend has them ([`Kernels`]: flex's in `flex/`, the GPU's CubeCL kernels in
//!   `wgpu/`) and the input is f32. Elsewhere they return `None`, and the layer composes the
//!   same result from tensor ops (`normzoo-norm`'s composed path, which the kernels are tested
//!   against).
//! - [`conv2d`]: a 2-D convolution, on flex by im2col and large matrix products.
//! - [`gelu`] and [`relu`]: activations, on flex in one pass each way (ReLU in place).
//! - [`backend`]: the backends compiled into this build (cargo features `flex`, `ndarray`,
//!   `wgpu`), and their devices by name.
//!
//! Every kernel records its backward pass the same way (`autodiff.rs`): its forward pass
//! returns what the backward pass needs, and the backward step computes the gradients of the
//! tracked inputs from it.

#![warn(missing_docs)]

mod activation;
#[cfg(any(feature = "flex", feature = "wgpu"))]
mod autodiff;
pub mod backend;
mod conv;
#[cfg(feature = "flex")]
mod flex;
mod grouping;
mod kernels;
#[cfg(feature = "wgpu")]
mod wgpu;

pub use activation::{gelu, relu};
pub use conv::conv2d;
pub use grouping::Grouping;
#[cfg(any(feature = "flex", feature = "wgpu"))]
pub use kernels::Kernels;
pub use kernels::{batch_norm, normalize_channels, normalize_rows};
