//! Reference architectures for [Burn](https://burn.dev) whose normalizer can be swapped.
//!
//! Every architecture takes a [`NormConfig`](normzoo_norm::NormConfig) (with its paper's
//! normalizer as the default) and is built with `Config::init(&device)`, which refuses a
//! normalizer that cannot apply with a clear [`ModelError`].
//!
//! - [`Mlp`]: configurable depth and width, the normalizer between each linear layer and its
//!   activation.
//! - [`ResNet`]: ResNet18 in torchvision's layout (11,689,512 parameters with BatchNorm) and its
//!   CIFAR variant (11,173,962).

#![warn(missing_docs)]

mod error;
mod mlp;
mod params;
mod resnet;

pub use error::ModelError;
pub use mlp::{Mlp, MlpConfig};
pub use params::num_trainable_params;
pub use resnet::{BasicBlock, Downsample, ResNet, ResNetConfig, ResNetStem};
