//! U-Net ([Ronneberger et al., 2015](https://arxiv.org/abs/1505.04597)) for segmentation, with
//! padded convolutions (the output has the input's size) and a swappable normalizer.

use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::tensor::{Device, Tensor};
use normzoo_kernels::{conv2d, relu};
use normzoo_norm::{Norm, NormConfig};

use crate::ModelError;
use crate::common::conv_bias_before;
use crate::error::refuse_channels_last;

/// Configuration of a [`UNet`].
#[derive(Config, Debug)]
pub struct UNetConfig {
    /// Channels of the input images. Default: 3.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Segmentation classes (channels of the logits). Default: 2.
    #[config(default = 2)]
    pub num_classes: usize,
    /// Channels of the first level; each level below doubles them. Default: 64.
    #[config(default = 64)]
    pub base_width: usize,
    /// Downsamplings between the first level and the bottleneck. Default: 4.
    #[config(default = 4)]
    pub depth: usize,
    /// The normalizer after every 3×3 convolution. Default: `group:32`. `layer` and `rms` do
    /// not apply (use `layer2d` or `group:1`).
    #[config(default = "NormConfig::group(32)")]
    pub norm: NormConfig,
}

/// U-Net: at each of `depth` levels two (3×3 convolution → normalizer → ReLU) then a 2×2
/// max-pool; the bottleneck's two convolutions; then back up, each level a 2×2 transposed
/// convolution (stride 2), concatenation with the skip connection of the same level, and two
/// convolutions; a 1×1 convolution gives the logits.
///
/// With `batch` (and base width 64, depth 4, 3 input channels, 2 classes) it has 31,037,698
/// parameters, as the widely used PyTorch U-Net (milesial/Pytorch-UNet with transposed
/// convolutions). 3×3 convolutions have a bias only when the normalizer has no learnable shift.
#[derive(Module, Debug)]
pub struct UNet {
    /// The encoder levels, top first.
    pub down: Vec<DoubleConv>,
    /// The bottleneck.
    pub bottleneck: DoubleConv,
    /// The 2×2 max-pool between levels.
    pub pool: MaxPool2d,
    /// The upsampling transposed convolutions, bottom first.
    pub up: Vec<ConvTranspose2d>,
    /// The decoder levels, bottom first.
    pub decode: Vec<DoubleConv>,
    /// The 1×1 convolution that gives the class logits.
    pub head: Conv2d,
}

/// Two times (3×3 convolution, padding 1 → normalizer → ReLU).
#[derive(Module, Debug)]
pub struct DoubleConv {
    /// The first convolution.
    pub conv1: Conv2d,
    /// Its normalizer.
    pub norm1: Norm,
    /// The second convolution.
    pub conv2: Conv2d,
    /// Its normalizer.
    pub norm2: Norm,
}

const MODEL: &str = "UNet";

impl DoubleConv {
    fn new(
        d_in: usize,
        d_out: usize,
        norm: &NormConfig,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let conv = |d_in: usize| {
            Conv2dConfig::new([d_in, d_out], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(conv_bias_before(norm))
                .init(device)
        };
        Ok(Self {
            conv1: conv(d_in),
            norm1: norm.init(d_out, device)?,
            conv2: conv(d_out),
            norm2: norm.init(d_out, device)?,
        })
    }

    /// `[N, C_in, H, W]` → `[N, C_out, H, W]`.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = relu(self.norm1.forward(conv2d(&self.conv1, input)));
        relu(self.norm2.forward(conv2d(&self.conv2, x)))
    }
}

impl UNetConfig {
    /// Builds the network.
    ///
    /// # Errors
    ///
    /// [`ModelError::UnsupportedNorm`] for `layer` and `rms`, [`ModelError::InvalidConfig`] for
    /// a zero size, and the normalizer's own error (e.g. `group:32` with a base width of 16).
    pub fn init(&self, device: &Device) -> Result<UNet, ModelError> {
        if self.in_channels == 0 || self.num_classes == 0 || self.base_width == 0 {
            return Err(ModelError::InvalidConfig {
                model: MODEL,
                message: format!(
                    "in_channels ({}), num_classes ({}) and base_width ({}) must be positive",
                    self.in_channels, self.num_classes, self.base_width
                ),
            });
        }
        refuse_channels_last(MODEL, &self.norm)?;
        let width = |level: usize| self.base_width << level;
        let mut down = Vec::with_capacity(self.depth);
        let mut channels = self.in_channels;
        for level in 0..self.depth {
            down.push(DoubleConv::new(channels, width(level), &self.norm, device)?);
            channels = width(level);
        }
        let bottleneck = DoubleConv::new(channels, width(self.depth), &self.norm, device)?;
        let mut up = Vec::with_capacity(self.depth);
        let mut decode = Vec::with_capacity(self.depth);
        for level in (0..self.depth).rev() {
            up.push(
                ConvTranspose2dConfig::new([width(level + 1), width(level)], [2, 2])
                    .with_stride([2, 2])
                    .init(device),
            );
            decode.push(DoubleConv::new(
                2 * width(level),
                width(level),
                &self.norm,
                device,
            )?);
        }
        Ok(UNet {
            down,
            bottleneck,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            up,
            decode,
            head: Conv2dConfig::new([width(0), self.num_classes], [1, 1]).init(device),
        })
    }
}

impl UNet {
    /// Per-pixel class logits.
    ///
    /// # Shapes
    ///
    /// - `images`: `[N, in_channels, H, W]`, `H` and `W` multiples of `2^depth`
    /// - output: `[N, num_classes, H, W]`
    ///
    /// # Panics
    ///
    /// When the channel count is not `in_channels`, the size is not a multiple of `2^depth`, or
    /// a normalizer refuses its input.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        let mut skips = Vec::with_capacity(self.down.len());
        let mut x = images;
        for level in &self.down {
            let features = level.forward(x);
            x = self.pool.forward(features.clone());
            skips.push(features);
        }
        x = self.bottleneck.forward(x);
        for ((up, decode), skip) in self
            .up
            .iter()
            .zip(&self.decode)
            .zip(skips.into_iter().rev())
        {
            x = decode.forward(Tensor::cat(vec![skip, up.forward(x)], 1));
        }
        conv2d(&self.head, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use normzoo_kernels::backend::{cpu_test_devices, seed_for_test};

    use crate::common::{cpu, sgd_steps};
    use crate::num_trainable_params;
    use burn::tensor::Distribution;

    #[test]
    fn batch_norm_unet_has_the_reference_count() {
        let device = cpu().autodiff();
        let model = UNetConfig::new()
            .with_norm(NormConfig::batch())
            .init(&device)
            .unwrap();
        assert_eq!(num_trainable_params(&model), 31_037_698);
        // GroupNorm has BatchNorm's 2·C parameters.
        let group = UNetConfig::new().init(&device).unwrap();
        assert_eq!(num_trainable_params(&group), 31_037_698);
    }

    #[test]
    fn shapes_and_refusals() {
        let device = cpu();
        let model = UNetConfig::new()
            .with_base_width(4)
            .with_depth(3)
            .with_num_classes(5)
            .with_norm(NormConfig::group(2))
            .init(&device)
            .unwrap();
        let images = Tensor::<4>::random([2, 3, 16, 24], Distribution::Default, &device);
        assert_eq!(model.forward(images).dims(), [2, 5, 16, 24]);
        let err = UNetConfig::new()
            .with_base_width(16)
            .init(&device)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GroupNorm: num_channels (16) must be divisible by num_groups (32)"
        );
        assert!(
            UNetConfig::new()
                .with_norm(NormConfig::layer())
                .init(&device)
                .is_err()
        );
    }

    /// A few steps of per-pixel cross-entropy on a fixed mask lower the loss on each CPU backend.
    #[test]
    fn a_few_steps_lower_the_loss() {
        for (backend, device) in cpu_test_devices() {
            let device = device.autodiff();
            let _seed = seed_for_test(&device, 7); // repeatable initialisation and data
            let images = Tensor::<4>::random([2, 1, 8, 8], Distribution::Default, &device);
            // The mask: pixels brighter than 0.5.
            let mask = images.clone().greater_elem(0.5).int().reshape([2 * 8 * 8]);
            for norm in ["group:2", "batch", "instance", "layer2d", "none"] {
                let model = UNetConfig::new()
                    .with_in_channels(1)
                    .with_base_width(4)
                    .with_depth(2)
                    .with_norm(norm.parse().unwrap())
                    .init(&device)
                    .unwrap();
                let (_, first, last) = sgd_steps(model, 8, 0.05, |model: &UNet| {
                    let logits = model.forward(images.clone()).permute([0, 2, 3, 1]);
                    burn::nn::loss::CrossEntropyLossConfig::new()
                        .init(&device)
                        .forward(logits.reshape([2 * 8 * 8, 2]), mask.clone())
                });
                assert!(last < first, "[{backend}] {norm}: loss {first} → {last}");
            }
        }
    }
}
