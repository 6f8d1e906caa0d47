//! Reference architectures for [Burn](https://burn.dev) whose normalizer can be swapped.
//!
//! Every architecture takes a [`NormConfig`](normzoo_norm::NormConfig) (with its paper's
//! normalizer as the default) and is built with `Config::init(&device)`, which refuses a
//! normalizer that cannot apply with a clear [`ModelError`].
//!
//! - [`Mlp`]: configurable depth and width, the normalizer between each linear layer and its
//!   activation.
//! - [`ResNet`]: ResNet18, 34, 50, 101 and 152 in torchvision's layout (11,689,512 to
//!   60,192,808 parameters with BatchNorm; basic blocks or bottlenecks, [`ResidualBlockKind`]), and
//!   their CIFAR variants (ResNet18's: 11,173,962).
//! - [`Vgg`]: VGG11, 13, 16 and 19, with and without BatchNorm, in torchvision's layout
//!   (132,863,336 to 143,678,248 parameters; VGG16 138,357,544) and a CIFAR variant.
//! - [`ConvNext`]: ConvNeXt-T, S, B and L (28,589,128 to 197,767,336 parameters), LayerNorm
//!   over channels by default, layer scale and stochastic depth, and a small configuration for
//!   32×32 images.
//! - [`ResnetGenerator`]: the CycleGAN ResNet generator (11,378,179 parameters with 9 blocks,
//!   7,837,699 with 6), InstanceNorm by default, and its [`PatchDiscriminator`] (2,764,737).
//! - [`UNet`]: U-Net for segmentation (31,037,698 parameters with BatchNorm at base width 64),
//!   GroupNorm by default.
//! - [`TransformerBlock`]: self-attention and an MLP, pre-norm or post-norm, LayerNorm by
//!   default (or RMSNorm, BatchNorm over tokens, none); a small [`TransformerEncoder`]
//!   classifier and a small [`CausalLm`] built from it.
//! - [`Lstm`]: the plain LSTM (`nn.LSTM`'s parameters) and the layer-normalized LSTM of Ba,
//!   Kiros & Hinton (2016), multi-layer and batch-first.
//!
//! Their convolutions run through [`conv2d`], which on flex computes burn's `Conv2d` (forward
//! and both gradients) by im2col and large matrix products (BENCHMARKS.md times it against
//! burn's own).
//!
//! Every image classifier is a [`Backbone`]: each stage's feature map, with its channels and
//! reduction ([`FeatureInfo`]), for U-Net, detection and segmentation heads.
//!
//! The registry, [`ARCHITECTURES`], names every model once and says what it is;
//! [`ImageClassifier::from_name`] builds the image classifiers by name (`"resnet18-cifar"`,
//! `"vgg16-bn"`, `"convnext-tiny"`, …), and the registry gives the ImageNet weights of those that
//! have them. ResNet, VGG and ConvNeXt load torchvision's checkpoints ([`TorchvisionWeights`]).

//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use normzoo_models::ResNetConfig;
//!
//! let device = Device::default();
//! // ResNet18 for CIFAR with GroupNorm instead of BatchNorm (narrow, to keep the example quick).
//! let model = ResNetConfig::resnet18_cifar(10)
//!     .with_norm("group:4".parse()?)
//!     .with_width(8)
//!     .init(&device)?;
//! let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
//! assert_eq!(model.forward(images).dims(), [2, 10]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod common;
mod convnext;
mod cyclegan;
mod download;
mod error;
mod features;
mod image_classifier;
mod lstm;
mod mlp;
mod params;
mod patchgan;
mod pretrained;
mod registry;
mod resnet;
mod transformer;
mod unet;
mod vgg;

pub use common::conv_bias_before;
pub use convnext::{ConvNext, ConvNextBlock, ConvNextConfig, DownsampleLayer, DropPath};
pub use cyclegan::{ResnetBlock, ResnetGenerator, ResnetGeneratorConfig};
pub use download::{
    CONVNEXT_BASE_IMAGENET, CONVNEXT_LARGE_IMAGENET, CONVNEXT_SMALL_IMAGENET,
    CONVNEXT_TINY_IMAGENET, RESNET18_IMAGENET, RESNET34_IMAGENET, RESNET50_IMAGENET,
    RESNET101_IMAGENET, RESNET152_IMAGENET, VGG11_BN_IMAGENET, VGG11_IMAGENET, VGG13_BN_IMAGENET,
    VGG13_IMAGENET, VGG16_BN_IMAGENET, VGG16_IMAGENET, VGG19_BN_IMAGENET, VGG19_IMAGENET,
    checkpoint_path, download_checkpoint, torch_cache_dir,
};
pub use error::ModelError;
pub use features::{Backbone, FeatureInfo};
pub use image_classifier::ImageClassifier;
pub use lstm::{Lstm, LstmConfig, LstmLayer, LstmState};
pub use mlp::{Mlp, MlpBlock, MlpConfig};
pub use normzoo_kernels::conv2d;
pub use params::num_trainable_params;
pub use patchgan::{PatchDiscriminator, PatchDiscriminatorConfig};
pub use pretrained::{CheckpointError, LoadReport, TorchvisionWeights};
pub use registry::{
    ARCHITECTURES, Architecture, Classifier, ImagenetWeights, ModelOptions, create_model,
    find_architecture, image_classifiers, imagenet_weights, list_models,
};
pub use resnet::{Downsample, ResNet, ResNetConfig, ResNetStem, ResidualBlock, ResidualBlockKind};
pub use transformer::{
    CausalLm, NormPosition, TransformerBlock, TransformerBlockConfig, TransformerConfig,
    TransformerEncoder, TransformerTrunk,
};
pub use unet::{DoubleConv, UNet, UNetConfig};
pub use vgg::{ConvNormRelu, Vgg, VggConfig, VggHead, vgg_stages, vgg16_stages};
