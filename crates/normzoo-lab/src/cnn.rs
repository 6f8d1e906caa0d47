//! The lab's small CNN.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use normzoo_models::{conv_bias_before, conv2d};
use normzoo_norm::{Norm, NormConfig, StatsMode};

use crate::LabError;

/// Configuration of a [`SmallCnn`].
#[derive(Config, Debug)]
pub struct SmallCnnConfig {
    /// The normalizer after each convolution. Default: `batch`.
    #[config(default = "NormConfig::batch()")]
    pub norm: NormConfig,
    /// The channels of each convolution; every one after the first halves the resolution.
    /// Default: `[16, 32, 64]`.
    #[config(default = "vec![16, 32, 64]")]
    pub widths: Vec<usize>,
    /// The number of classes. Default: 10.
    #[config(default = 10)]
    pub num_classes: usize,
}

/// A small CNN for 32×32 RGB images: `[conv 3×3 → norm → ReLU]` per width (stride 2 after the
/// first), global average pooling, a linear classifier.
#[derive(Module, Debug)]
pub struct SmallCnn {
    /// The convolution blocks, input first.
    pub blocks: Vec<ConvBlock>,
    /// Global average pooling.
    pub pool: AdaptiveAvgPool2d,
    /// The classifier.
    pub head: Linear,
}

/// One block of a [`SmallCnn`].
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// The 3×3 convolution (with a bias only where the normalizer has no shift of its own).
    pub conv: Conv2d,
    /// The normalizer.
    pub norm: Norm,
}

impl SmallCnnConfig {
    /// Builds the CNN.
    ///
    /// # Errors
    ///
    /// When the normalizer cannot be built for a width (groups that do not divide it).
    pub fn init(&self, device: &Device) -> Result<SmallCnn, LabError> {
        let mut channels = 3;
        let mut blocks = Vec::with_capacity(self.widths.len());
        for (index, &width) in self.widths.iter().enumerate() {
            let stride = if index == 0 { 1 } else { 2 };
            let conv = Conv2dConfig::new([channels, width], [3, 3])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(conv_bias_before(&self.norm))
                .init(device);
            let norm = self.norm.init(width, device)?;
            blocks.push(ConvBlock { conv, norm });
            channels = width;
        }
        Ok(SmallCnn {
            blocks,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head: LinearConfig::new(channels, self.num_classes).init(device),
        })
    }
}

impl SmallCnn {
    /// `[N, 3, H, W]` images → `[N, classes]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_traced(images).0
    }

    /// The same CNN with every normalizer forced into `mode` (e.g. [`StatsMode::Train`]: batch
    /// statistics even in evaluation, the "forgot `model.eval()`" mistake).
    pub fn with_mode(mut self, mode: StatsMode) -> Self {
        self.blocks = self
            .blocks
            .into_iter()
            .map(|block| ConvBlock {
                norm: block.norm.with_mode(mode),
                ..block
            })
            .collect();
        self
    }

    /// The logits and each block's output (after its ReLU), input side first.
    pub fn forward_traced(&self, images: Tensor<4>) -> (Tensor<2>, Vec<Tensor<4>>) {
        let mut activations = Vec::with_capacity(self.blocks.len());
        let x = self.blocks.iter().fold(images, |x, block| {
            let y = relu(block.norm.forward(conv2d(&block.conv, x)));
            activations.push(y.clone());
            y
        });
        let pooled = self.pool.forward(x).flatten::<2>(1, 3);
        (self.head.forward(pooled), activations)
    }
}
