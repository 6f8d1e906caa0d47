//! VGG11, 13, 16 and 19 ([Simonyan & Zisserman, 2015](https://arxiv.org/abs/1409.1556)) in
//! torchvision's layout, without a normalizer (`vgg16`) or with any (`vgg16_bn` is BatchNorm).

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use normzoo_kernels::{conv2d, relu};
use normzoo_norm::{Norm, NormConfig};
use serde::{Deserialize, Serialize};

use crate::common::{reset_linear, zeroed};
use crate::error::refuse_channels_last;
use crate::{Backbone, FeatureInfo, ModelError, TorchvisionWeights};

/// The classifier of a [`Vgg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VggHead {
    /// torchvision's: adaptive average pooling to 7×7, then `Linear(25088, 4096)`, ReLU,
    /// dropout, `Linear(4096, 4096)`, ReLU, dropout, `Linear(4096, num_classes)` (4096 is
    /// [`VggConfig::hidden`]).
    ImageNet,
    /// For 32×32 images (1×1 after five pools): `Linear(512, num_classes)`.
    Cifar,
}

/// Configuration of a [`Vgg`] network (VGG16, configuration "D", by default).
#[derive(Config, Debug)]
pub struct VggConfig {
    /// The number of classes. Default: 1000.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// The output channels of each 3×3 convolution, stage by stage; a 2×2 max-pool follows
    /// each stage. Default: VGG16's `[[64, 64], [128, 128], [256; 3], [512; 3], [512; 3]]`.
    #[config(default = "vgg16_stages()")]
    pub stages: Vec<Vec<usize>>,
    /// The normalizer after each convolution. Default: `none` (VGG16; `batch` is VGG16-BN).
    #[config(default = "NormConfig::None")]
    pub norm: NormConfig,
    /// The classifier. Default: [`VggHead::ImageNet`].
    #[config(default = "VggHead::ImageNet")]
    pub head: VggHead,
    /// The width of the ImageNet classifier's two hidden layers. Default: 4096.
    #[config(default = 4096)]
    pub hidden: usize,
    /// The dropout probability of the ImageNet classifier. Default: 0.5.
    #[config(default = 0.5)]
    pub dropout: f64,
}

/// The paper's stages with `convolutions` 3×3 convolutions in each of the five, of 64, 128,
/// 256, 512 and 512 channels: `[1, 1, 2, 2, 2]` is configuration "A" (VGG11), `[2, 2, 2, 2, 2]`
/// "B" (VGG13), `[2, 2, 3, 3, 3]` "D" (VGG16), `[2, 2, 4, 4, 4]` "E" (VGG19).
pub fn vgg_stages(convolutions: [usize; 5]) -> Vec<Vec<usize>> {
    [64, 128, 256, 512, 512]
        .into_iter()
        .zip(convolutions)
        .map(|(channels, count)| vec![channels; count])
        .collect()
}

/// VGG16's stages: configuration "D" of the paper, `[[64, 64], [128, 128], [256; 3], [512; 3],
/// [512; 3]]`.
pub fn vgg16_stages() -> Vec<Vec<usize>> {
    vgg_stages([2, 2, 3, 3, 3])
}

impl VggConfig {
    /// torchvision's `vgg16(num_classes)`: 138,357,544 parameters at 1000 classes.
    pub fn vgg16(num_classes: usize) -> Self {
        Self::new().with_num_classes(num_classes)
    }

    /// torchvision's `vgg16_bn(num_classes)`: 138,365,992 parameters at 1000 classes.
    pub fn vgg16_bn(num_classes: usize) -> Self {
        Self::vgg16(num_classes).with_norm(NormConfig::batch())
    }

    /// torchvision's `vgg11(num_classes)` (configuration "A"): 132,863,336 parameters at 1000
    /// classes; 132,868,840 with `.with_norm(NormConfig::batch())`, torchvision's `vgg11_bn`.
    pub fn vgg11(num_classes: usize) -> Self {
        Self::vgg16(num_classes).with_stages(vgg_stages([1, 1, 2, 2, 2]))
    }

    /// torchvision's `vgg13(num_classes)` (configuration "B"): 133,047,848 parameters at 1000
    /// classes; 133,053,736 with `.with_norm(NormConfig::batch())`, torchvision's `vgg13_bn`.
    pub fn vgg13(num_classes: usize) -> Self {
        Self::vgg16(num_classes).with_stages(vgg_stages([2, 2, 2, 2, 2]))
    }

    /// torchvision's `vgg19(num_classes)` (configuration "E"): 143,667,240 parameters at 1000
    /// classes; 143,678,248 with `.with_norm(NormConfig::batch())`, torchvision's `vgg19_bn`.
    pub fn vgg19(num_classes: usize) -> Self {
        Self::vgg16(num_classes).with_stages(vgg_stages([2, 2, 4, 4, 4]))
    }

    /// VGG16 for 32×32 images with the given normalizer and a single linear classifier.
    pub fn vgg16_cifar(norm: NormConfig, num_classes: usize) -> Self {
        Self::vgg16(num_classes)
            .with_norm(norm)
            .with_head(VggHead::Cifar)
    }
}

/// A VGG network: stages of (3×3 convolution → normalizer → ReLU) each followed by a 2×2
/// max-pool, then the classifier. Convolutions keep their bias even with a normalizer, as
/// torchvision's `vgg16_bn` does, and are initialised as torchvision does (Kaiming normal,
/// fan-out, zero bias; linear layers `N(0, 0.01)`, zero bias).
#[derive(Module, Debug)]
pub struct Vgg {
    /// The convolutional stages.
    pub stages: Vec<Vec<ConvNormRelu>>,
    /// The 2×2 max-pool after each stage.
    pub pool: MaxPool2d,
    /// The 7×7 adaptive pooling of the ImageNet head.
    pub avgpool: Option<AdaptiveAvgPool2d>,
    /// The hidden layers of the ImageNet head (empty for the CIFAR head).
    pub classifier: Vec<Linear>,
    /// The dropout of the ImageNet head.
    pub dropout: Dropout,
    /// The last linear layer.
    pub fc: Linear,
}

/// 3×3 convolution (padding 1), normalizer, ReLU.
#[derive(Module, Debug)]
pub struct ConvNormRelu {
    /// The convolution.
    pub conv: Conv2d,
    /// The normalizer.
    pub norm: Norm,
}

const MODEL: &str = "Vgg";

fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 0.01,
        })
        .init(device);
    linear.bias = zeroed(linear.bias);
    linear
}

impl VggConfig {
    /// Builds the network.
    ///
    /// # Errors
    ///
    /// [`ModelError::UnsupportedNorm`] for `layer` and `rms`, [`ModelError::InvalidConfig`] for
    /// zero classes, zero hidden width, no stages or an empty or zero-width stage, and the
    /// normalizer's own error.
    pub fn init(&self, device: &Device) -> Result<Vgg, ModelError> {
        if self.num_classes == 0
            || self.hidden == 0
            || self.stages.is_empty()
            || self
                .stages
                .iter()
                .any(|stage| stage.is_empty() || stage.contains(&0))
        {
            return Err(ModelError::InvalidConfig {
                model: MODEL,
                message: format!(
                    "num_classes ({}) and hidden ({}) must be positive and every stage \
                     non-empty with positive widths, got stages {:?}",
                    self.num_classes, self.hidden, self.stages
                ),
            });
        }
        refuse_channels_last(MODEL, &self.norm)?;
        let mut channels = 3;
        let mut stages = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            let mut units = Vec::with_capacity(stage.len());
            for &out in stage {
                let mut conv = Conv2dConfig::new([channels, out], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_initializer(Initializer::KaimingNormal {
                        gain: 2f64.sqrt(),
                        fan_out_only: true,
                    })
                    .init(device);
                conv.bias = zeroed(conv.bias);
                units.push(ConvNormRelu {
                    conv,
                    norm: self.norm.init(out, device)?,
                });
                channels = out;
            }
            stages.push(units);
        }
        let (avgpool, classifier, fc) = match self.head {
            VggHead::ImageNet => (
                Some(AdaptiveAvgPool2dConfig::new([7, 7]).init()),
                vec![
                    linear(channels * 49, self.hidden, device),
                    linear(self.hidden, self.hidden, device),
                ],
                linear(self.hidden, self.num_classes, device),
            ),
            VggHead::Cifar => (None, vec![], linear(channels, self.num_classes, device)),
        };
        Ok(Vgg {
            stages,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            avgpool,
            classifier,
            dropout: DropoutConfig::new(self.dropout).init(),
            fc,
        })
    }
}

impl Vgg {
    /// This network with a new last linear layer for `num_classes` classes, initialised as
    /// `init` initialises it, and everything else kept (timm's `reset_classifier`): to fine-tune
    /// an ImageNet checkpoint on another dataset.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for zero classes.
    pub fn reset_classifier(self, num_classes: usize) -> Result<Self, ModelError> {
        let fc = reset_linear(MODEL, &self.fc, num_classes, linear)?;
        Ok(Self { fc, ..self })
    }

    /// The logits for a batch of images.
    ///
    /// # Shapes
    ///
    /// - `images`: `[N, 3, H, W]` (224×224 for the ImageNet head, 32×32 for the CIFAR head)
    /// - output: `[N, num_classes]`
    ///
    /// # Panics
    ///
    /// When the images do not have 3 channels, are too small for the pools, or a normalizer
    /// refuses its input.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.forward_features(images);
        let x = match &self.avgpool {
            Some(pool) => pool.forward(x),
            None => x,
        };
        let [n, c, h, w] = x.dims();
        let x = x.reshape([n, c * h * w]);
        let x = self
            .classifier
            .iter()
            .fold(x, |x, layer| self.dropout.forward(relu(layer.forward(x))));
        self.fc.forward(x)
    }
}

/// Six maps: each stage's before its max-pool, as timm's (1, 1/2, 1/4, 1/8 and 1/16 of the
/// input for VGG's five stages), and the last pool's (1/32), which the head takes (where timm's
/// sixth is its pre-logits convolution's).
impl Backbone for Vgg {
    fn feature_info(&self) -> Vec<FeatureInfo> {
        let channels =
            |stage: &Vec<ConvNormRelu>| stage.last().map_or(0, |unit| unit.conv.weight.dims()[0]);
        let mut info: Vec<_> = self
            .stages
            .iter()
            .enumerate()
            .map(|(index, stage)| FeatureInfo {
                channels: channels(stage),
                reduction: 1 << index,
            })
            .collect();
        let last = *info.last().expect("a VGG has stages");
        info.push(FeatureInfo {
            reduction: last.reduction * 2,
            ..last
        });
        info
    }

    fn stage(&self, index: usize, x: Tensor<4>) -> Tensor<4> {
        let stages = self.stages.len();
        assert!(
            index <= stages,
            "Vgg: no stage {index}: it has {}, each stage and the last pool",
            stages + 1
        );
        let x = match index {
            0 => x,
            _ => self.pool.forward(x),
        };
        match self.stages.get(index) {
            Some(stage) => stage
                .iter()
                .fold(x, |x, unit| relu(unit.norm.forward(conv2d(&unit.conv, x)))),
            None => x,
        }
    }
}

impl TorchvisionWeights for Vgg {
    fn name(&self) -> &'static str {
        "VGG"
    }

    fn head(&self) -> &'static str {
        "fc"
    }

    /// torchvision numbers every layer of `features` in one sequence: per convolution the
    /// convolution, its BatchNorm (`vgg16_bn` only) and the ReLU, then a max-pool after each
    /// stage; and the classifier as linear 0, ReLU, dropout, linear 3, ReLU, dropout,
    /// linear 6. Our CIFAR head (one linear layer on 512 features) has no torchvision
    /// counterpart: its keys are not mapped, so a partial load leaves it initialised.
    fn renames(&self) -> Vec<(String, String)> {
        let mut renames = Vec::new();
        let mut index = 0;
        for (s, stage) in self.stages.iter().enumerate() {
            for (u, unit) in stage.iter().enumerate() {
                renames.push((format!("features.{index}"), format!("stages.{s}.{u}.conv")));
                index += 1;
                if !matches!(unit.norm, Norm::Identity(_)) {
                    renames.push((format!("features.{index}"), format!("stages.{s}.{u}.norm")));
                    index += 1;
                }
                index += 1; // ReLU
            }
            index += 1; // max-pool
        }
        if !self.classifier.is_empty() {
            renames.push(("classifier.3".into(), "classifier.1".into()));
            renames.push(("classifier.6".into(), "fc".into()));
        }
        renames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::cpu;
    use crate::num_trainable_params;
    use burn::tensor::Distribution;

    /// The indices of torchvision's `features` (convolution, batch norm, ReLU, and a max-pool
    /// after each stage) for configurations other than VGG16's, as `torchvision.models` numbers
    /// them.
    #[test]
    fn renames_follow_torchvisions_feature_indices() {
        let device = cpu();
        let narrow = |config: VggConfig| {
            let stages = config
                .stages
                .iter()
                .map(|stage| vec![2; stage.len()])
                .collect();
            let model = config
                .with_stages(stages)
                .with_hidden(4)
                .init(&device)
                .unwrap();
            model.renames()
        };
        let convolutions = |renames: Vec<(String, String)>| -> Vec<String> {
            renames
                .into_iter()
                .filter(|(_, ours)| ours.ends_with(".conv"))
                .map(|(theirs, _)| theirs)
                .collect()
        };
        let features = |indices: &[usize]| -> Vec<String> {
            indices.iter().map(|i| format!("features.{i}")).collect()
        };
        assert_eq!(
            convolutions(narrow(VggConfig::vgg11(10))),
            features(&[0, 3, 6, 8, 11, 13, 16, 18])
        );
        let vgg11_bn = narrow(VggConfig::vgg11(10).with_norm(NormConfig::batch()));
        assert!(vgg11_bn.contains(&("features.26".into(), "stages.4.1.norm".into())));
        assert_eq!(
            convolutions(vgg11_bn),
            features(&[0, 4, 8, 11, 15, 18, 22, 25])
        );
        let vgg19_bn = narrow(VggConfig::vgg19(10).with_norm(NormConfig::batch()));
        assert!(vgg19_bn.contains(&("features.50".into(), "stages.4.3.norm".into())));
        assert_eq!(
            convolutions(vgg19_bn),
            features(&[0, 3, 7, 10, 14, 17, 20, 23, 27, 30, 33, 36, 40, 43, 46, 49])
        );
    }

    /// The CIFAR head: 14,714,688 in the convolutions, plus the normalizers (2·4224 with an
    /// affine), plus `Linear(512, 10)`.
    #[test]
    fn cifar_variant_counts_and_shapes() {
        let device = cpu().autodiff();
        for (norm, norm_params) in [("none", 0), ("batch", 8_448), ("group:32", 8_448)] {
            let model = VggConfig::vgg16_cifar(norm.parse().unwrap(), 10)
                .init(&device)
                .unwrap();
            assert_eq!(
                num_trainable_params(&model),
                14_714_688 + norm_params + 5_130,
                "{norm}"
            );
        }
        let small = VggConfig::vgg16_cifar(NormConfig::batch(), 10)
            .with_stages(vec![vec![4], vec![8], vec![8], vec![8], vec![8]])
            .init(&device.inner())
            .unwrap();
        let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &cpu());
        assert_eq!(small.forward(images).dims(), [2, 10]);
    }

    #[test]
    fn channels_last_normalizers_are_refused() {
        let err = VggConfig::vgg16_cifar(NormConfig::layer(), 10)
            .init(&cpu())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Vgg: the normalizer `layer` does not apply")
        );
    }
}
