//! The PatchGAN discriminator of pix2pix and CycleGAN (the reference implementation's
//! `NLayerDiscriminator`), with a swappable normalizer.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::leaky_relu;
use burn::tensor::{Device, Tensor};
use normzoo_norm::{Norm, NormConfig};

use crate::ModelError;
use crate::common::{conv_bias_before, conv_normal_002};
use crate::error::refuse_channels_last;
use normzoo_kernels::conv2d;

const MODEL: &str = "PatchDiscriminator";

/// Configuration of a [`PatchDiscriminator`]. The defaults are the reference's `basic`
/// discriminator (a 70×70 PatchGAN) as CycleGAN uses it.
#[derive(Config, Debug)]
pub struct PatchDiscriminatorConfig {
    /// Channels of the input images. Default: 3.
    #[config(default = 3)]
    pub input_nc: usize,
    /// Filters of the first convolution (doubled by each further layer, up to 8×). Default: 64.
    #[config(default = 64)]
    pub ndf: usize,
    /// Stride-2 convolutions after the first. Default: 3.
    #[config(default = 3)]
    pub n_layers: usize,
    /// The normalizer after every convolution but the first and the last. Default: `instance`,
    /// as CycleGAN.
    #[config(default = "NormConfig::instance()")]
    pub norm: NormConfig,
}

/// A fully convolutional discriminator that scores overlapping patches: a 4×4 stride-2
/// convolution and LeakyReLU(0.2); `n_layers − 1` more stride-2 and one stride-1 4×4
/// convolution, each with the normalizer and LeakyReLU(0.2); a 4×4 stride-1 convolution to one
/// channel. All convolutions pad by 1; weights `N(0, 0.02)`, zero bias.
///
/// `[N, input_nc, H, W]` → `[N, 1, H', W']`: one real-or-fake score per patch (no sigmoid;
/// CycleGAN trains it with least squares). Convolutions before a normalizer carry a bias exactly
/// when it has no learnable shift, as in [`ResnetGenerator`](crate::ResnetGenerator).
#[derive(Module, Debug)]
pub struct PatchDiscriminator {
    /// The first convolution (no normalizer).
    pub stem: Conv2d,
    /// The middle convolutions.
    pub convs: Vec<Conv2d>,
    /// Their normalizers.
    pub norms: Vec<Norm>,
    /// The last convolution, to one channel.
    pub head: Conv2d,
}

/// A 4×4 convolution padded by 1, as every one of the discriminator's.
fn conv(channels: [usize; 2], stride: usize, bias: bool, device: &Device) -> Conv2d {
    conv_normal_002(channels, 4, stride, 1, bias, device)
}

impl PatchDiscriminatorConfig {
    /// Builds the discriminator.
    ///
    /// # Errors
    ///
    /// [`ModelError::UnsupportedNorm`] for `layer` and `rms`, [`ModelError::InvalidConfig`] for
    /// a zero size, and the normalizer's own error.
    pub fn init(&self, device: &Device) -> Result<PatchDiscriminator, ModelError> {
        if self.input_nc == 0 || self.ndf == 0 || self.n_layers == 0 {
            return Err(ModelError::InvalidConfig {
                model: MODEL,
                message: format!(
                    "input_nc ({}), ndf ({}) and n_layers ({}) must be positive",
                    self.input_nc, self.ndf, self.n_layers
                ),
            });
        }
        refuse_channels_last(MODEL, &self.norm)?;
        let bias = conv_bias_before(&self.norm);
        let width = |layer: usize| self.ndf * (1 << layer.min(3));
        let mut convs = Vec::with_capacity(self.n_layers);
        let mut norms = Vec::with_capacity(self.n_layers);
        for layer in 1..=self.n_layers {
            let stride = if layer < self.n_layers { 2 } else { 1 };
            convs.push(conv([width(layer - 1), width(layer)], stride, bias, device));
            norms.push(self.norm.init(width(layer), device)?);
        }
        Ok(PatchDiscriminator {
            stem: conv([self.input_nc, self.ndf], 2, true, device),
            convs,
            norms,
            head: conv([width(self.n_layers), 1], 1, true, device),
        })
    }
}

impl PatchDiscriminator {
    /// Scores the patches of a batch of images.
    ///
    /// # Shapes
    ///
    /// - `images`: `[N, input_nc, H, W]`
    /// - output: `[N, 1, H', W']`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        let mut x = leaky_relu(conv2d(&self.stem, images), 0.2);
        for (conv, norm) in self.convs.iter().zip(&self.norms) {
            x = leaky_relu(norm.forward(conv2d(conv, x)), 0.2);
        }
        conv2d(&head_with_contiguous_gradient(&self.head), x)
    }
}

/// The head convolution with its weight read through a reshape, which leaves the forward pass
/// unchanged and makes the weight's gradient a contiguous tensor.
///
/// On burn 0.22.1's wgpu backend, the weight gradient of a convolution to one channel with an
/// even kernel (this 4×4 one) comes out with a layout that an optimizer's in-place update
/// (`weight − lr · gradient`, with the gradient owned once) writes scrambled: one SGD or Adam
/// step moved the head's weights by up to 0.1 where the CPU moves them by `lr`, which made
/// CycleGAN with a normalizer diverge on the GPU from its second step.
/// `tests/backend_parity.rs` checks training steps against the CPU.
fn head_with_contiguous_gradient(head: &Conv2d) -> Conv2d {
    let mut head = head.clone();
    head.weight = head.weight.map(|weight| {
        let dims = weight.dims();
        weight.reshape([-1]).reshape(dims)
    });
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::cpu;
    use crate::num_trainable_params;

    /// The reference's `NLayerDiscriminator(3, 64, n_layers=3, norm_layer=InstanceNorm2d)`.
    #[test]
    fn reference_parameter_count_and_patch_shape() {
        let device = cpu().autodiff();
        let model = PatchDiscriminatorConfig::new().init(&device).unwrap();
        assert_eq!(num_trainable_params(&model), 2_764_737);
        let scores = model.forward(Tensor::zeros([2, 3, 64, 64], &device));
        assert_eq!(scores.dims(), [2, 1, 6, 6]);
    }

    /// With BatchNorm the middle convolutions lose their bias (128 + 256 + 512) and each
    /// normalizer adds 2·C.
    #[test]
    fn batch_norm_count_is_derived() {
        let device = cpu().autodiff();
        let model = PatchDiscriminatorConfig::new()
            .with_norm(NormConfig::batch())
            .init(&device)
            .unwrap();
        assert_eq!(num_trainable_params(&model), 2_764_737 - 896 + 2 * 896);
        let err = PatchDiscriminatorConfig::new()
            .with_norm(NormConfig::layer())
            .init(&device)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("PatchDiscriminator: the normalizer `layer`")
        );
    }
}
