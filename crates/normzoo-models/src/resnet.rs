//! ResNet18, 34, 50, 101 and 152 ([He et al., 2016](https://arxiv.org/abs/1512.03385)) in
//! torchvision's layout, with a swappable normalizer.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use normzoo_kernels::{conv2d, relu};
use normzoo_norm::{Norm, NormConfig};
use serde::{Deserialize, Serialize};

use crate::common::reset_linear;
use crate::error::refuse_channels_last;
use crate::{Backbone, FeatureInfo, ModelError, TorchvisionWeights};

/// The first layers of a [`ResNet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResNetStem {
    /// torchvision's: 7×7 convolution with stride 2, then 3×3 max-pool with stride 2 (for
    /// 224×224 ImageNet images).
    ImageNet,
    /// The usual CIFAR one: 3×3 convolution with stride 1, no max-pool (for 32×32 images).
    Cifar,
}

/// The residual block a [`ResNet`] is built of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResidualBlockKind {
    /// torchvision's `BasicBlock` (ResNet18 and 34): two 3×3 convolutions, the first carrying
    /// the stage's stride; a stage of `c` channels outputs `c`.
    Basic,
    /// torchvision's `Bottleneck` (ResNet50, 101 and 152): a 1×1 convolution down to the
    /// stage's `c` channels, a 3×3 one carrying the stride (torchvision's "ResNet v1.5"; the
    /// paper strides the first 1×1), and a 1×1 one up to `4·c`.
    Bottleneck,
}

impl ResidualBlockKind {
    /// A block's output channels per channel of its stage (torchvision's `expansion`): 1 for
    /// [`Basic`](Self::Basic), 4 for [`Bottleneck`](Self::Bottleneck).
    pub fn expansion(self) -> usize {
        match self {
            Self::Basic => 1,
            Self::Bottleneck => 4,
        }
    }
}

/// Configuration of a [`ResNet`] (ResNet18 by default).
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// The stem. Default: [`ResNetStem::ImageNet`].
    #[config(default = "ResNetStem::ImageNet")]
    pub stem: ResNetStem,
    /// The number of classes. Default: 1000.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// The residual block. Default: [`ResidualBlockKind::Basic`].
    #[config(default = "ResidualBlockKind::Basic")]
    pub block: ResidualBlockKind,
    /// Blocks per stage. Default: `[2, 2, 2, 2]` (ResNet18).
    #[config(default = "[2, 2, 2, 2]")]
    pub blocks: [usize; 4],
    /// Channels of the first stage; the others double it each time. A block outputs
    /// [`ResidualBlockKind::expansion`] times its stage's channels. Default: 64.
    #[config(default = 64)]
    pub width: usize,
    /// The normalizer after every convolution. Default: `batch`. `layer` and `rms` do not apply
    /// (they normalize the last axis; use `layer2d` or `group:1`).
    #[config(default = "NormConfig::batch()")]
    pub norm: NormConfig,
    /// Start every residual branch's last normalizer with `γ = 0`, so each block starts as the
    /// identity (torchvision's `zero_init_residual`). Default: `false`.
    #[config(default = false)]
    pub zero_init_residual: bool,
}

impl ResNetConfig {
    /// torchvision's `resnet18(num_classes)`: 11,689,512 parameters at 1000 classes.
    pub fn resnet18(num_classes: usize) -> Self {
        Self::new().with_num_classes(num_classes)
    }

    /// ResNet18 for 32×32 images (CIFAR stem): 11,173,962 parameters at 10 classes. Any
    /// other depth takes the CIFAR stem the same way: `resnet50(10).with_stem(ResNetStem::Cifar)`.
    pub fn resnet18_cifar(num_classes: usize) -> Self {
        Self::new()
            .with_stem(ResNetStem::Cifar)
            .with_num_classes(num_classes)
    }

    /// torchvision's `resnet34(num_classes)`: 21,797,672 parameters at 1000 classes.
    pub fn resnet34(num_classes: usize) -> Self {
        Self::resnet18(num_classes).with_blocks([3, 4, 6, 3])
    }

    /// torchvision's `resnet50(num_classes)`: 25,557,032 parameters at 1000 classes.
    pub fn resnet50(num_classes: usize) -> Self {
        Self::resnet34(num_classes).with_block(ResidualBlockKind::Bottleneck)
    }

    /// torchvision's `resnet101(num_classes)`: 44,549,160 parameters at 1000 classes.
    pub fn resnet101(num_classes: usize) -> Self {
        Self::resnet50(num_classes).with_blocks([3, 4, 23, 3])
    }

    /// torchvision's `resnet152(num_classes)`: 60,192,808 parameters at 1000 classes.
    pub fn resnet152(num_classes: usize) -> Self {
        Self::resnet50(num_classes).with_blocks([3, 8, 36, 3])
    }
}

/// A residual network, field for field torchvision's `ResNet` (`conv1`, `bn1`, `layer1` …
/// `layer4`, `fc`; blocks `conv1`, `bn1`, `conv2`, `bn2`, with bottlenecks `conv3`, `bn3`, and
/// `downsample`), so that weights map by name. The normalizers are [`Norm`]s: any
/// [`NormConfig`] that applies to `[N, C, H, W]`.
///
/// Convolutions have no bias (the normalizer's shift takes its place, as in torchvision, also
/// when the normalizer is `none`), and are initialised as torchvision does: Kaiming normal,
/// fan-out, ReLU gain.
#[derive(Module, Debug)]
pub struct ResNet {
    /// The stem convolution.
    pub conv1: Conv2d,
    /// The stem normalizer.
    pub bn1: Norm,
    /// The stem max-pool (ImageNet stem only).
    pub maxpool: Option<MaxPool2d>,
    /// Stage 1 (`width` channels, stride 1, times the block's expansion out).
    pub layer1: Vec<ResidualBlock>,
    /// Stage 2 (2·`width` channels, stride 2, times the block's expansion out).
    pub layer2: Vec<ResidualBlock>,
    /// Stage 3 (4·`width` channels, stride 2, times the block's expansion out).
    pub layer3: Vec<ResidualBlock>,
    /// Stage 4 (8·`width` channels, stride 2, times the block's expansion out).
    pub layer4: Vec<ResidualBlock>,
    /// The classifier.
    pub fc: Linear,
}

/// A residual block, torchvision's `BasicBlock` or `Bottleneck` ([`ResidualBlockKind`]):
/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))` for a basic block,
/// `relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))` for a bottleneck.
#[derive(Module, Debug)]
pub struct ResidualBlock {
    /// The first convolution: 3×3 carrying the stage's stride (basic), or 1×1 down to the
    /// stage's channels (bottleneck).
    pub conv1: Conv2d,
    /// Its normalizer.
    pub bn1: Norm,
    /// The second convolution: 3×3, carrying the stride in a bottleneck.
    pub conv2: Conv2d,
    /// Its normalizer (γ = 0 with `zero_init_residual` in a basic block).
    pub bn2: Norm,
    /// A bottleneck's third convolution, 1×1 up to 4× the stage's channels; `None` in a basic
    /// block.
    pub conv3: Option<Conv2d>,
    /// Its normalizer (γ = 0 with `zero_init_residual`); `None` in a basic block.
    pub bn3: Option<Norm>,
    /// The projection shortcut when the shape changes; the identity otherwise.
    pub downsample: Option<Downsample>,
}

/// The projection shortcut: 1×1 convolution with the block's stride, then a normalizer
/// (torchvision's `downsample.0` and `downsample.1`).
#[derive(Module, Debug)]
pub struct Downsample {
    /// The 1×1 convolution.
    pub conv: Conv2d,
    /// Its normalizer.
    pub bn: Norm,
}

const MODEL: &str = "ResNet";

/// torchvision's `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
fn conv(channels: [usize; 2], kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal {
            gain: 2f64.sqrt(),
            fan_out_only: true,
        })
        .init(device)
}

impl ResNetConfig {
    /// Builds the network.
    ///
    /// # Errors
    ///
    /// [`ModelError::UnsupportedNorm`] for `layer` and `rms`, [`ModelError::InvalidConfig`] for
    /// zero classes or width, and the normalizer's own error (e.g. `group:G` with `G` not
    /// dividing a stage's channels).
    pub fn init(&self, device: &Device) -> Result<ResNet, ModelError> {
        for (name, value) in [("num_classes", self.num_classes), ("width", self.width)] {
            if value == 0 {
                return Err(ModelError::InvalidConfig {
                    model: MODEL,
                    message: format!("{name} must be greater than zero, got 0"),
                });
            }
        }
        refuse_channels_last(MODEL, &self.norm)?;
        let norm = |channels: usize| self.norm.init(channels, device);
        let (conv1, maxpool) = match self.stem {
            ResNetStem::ImageNet => (
                conv([3, self.width], 7, 2, device),
                Some(
                    MaxPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(),
                ),
            ),
            ResNetStem::Cifar => (conv([3, self.width], 3, 1, device), None),
        };
        let mut channels = self.width;
        let mut stages = Vec::with_capacity(4);
        for (stage, &num_blocks) in self.blocks.iter().enumerate() {
            let planes = self.width << stage;
            let out = planes * self.block.expansion();
            let mut blocks = Vec::with_capacity(num_blocks);
            for i in 0..num_blocks {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                blocks.push(self.block(channels, planes, stride, device)?);
                channels = out;
            }
            stages.push(blocks);
        }
        let [layer1, layer2, layer3, layer4] =
            <[Vec<ResidualBlock>; 4]>::try_from(stages).expect("four stages");
        Ok(ResNet {
            conv1,
            bn1: norm(self.width)?,
            maxpool,
            layer1,
            layer2,
            layer3,
            layer4,
            fc: LinearConfig::new(channels, self.num_classes).init(device),
        })
    }

    /// One block from `channels_in` channels, its stage's `planes` and `stride`.
    fn block(
        &self,
        channels_in: usize,
        planes: usize,
        stride: usize,
        device: &Device,
    ) -> Result<ResidualBlock, ModelError> {
        let norm = |channels: usize| self.norm.init(channels, device);
        // The block's last normalizer starts at γ = 0 with `zero_init_residual`.
        let last_norm = |channels: usize| -> Result<Norm, ModelError> {
            let norm = norm(channels)?;
            Ok(match self.zero_init_residual {
                true => norm.with_scale(0.0),
                false => norm,
            })
        };
        let out = planes * self.block.expansion();
        let downsample = (stride != 1 || channels_in != out)
            .then(|| -> Result<_, ModelError> {
                Ok(Downsample {
                    conv: conv([channels_in, out], 1, stride, device),
                    bn: norm(out)?,
                })
            })
            .transpose()?;
        Ok(match self.block {
            ResidualBlockKind::Basic => ResidualBlock {
                conv1: conv([channels_in, planes], 3, stride, device),
                bn1: norm(planes)?,
                conv2: conv([planes, planes], 3, 1, device),
                bn2: last_norm(planes)?,
                conv3: None,
                bn3: None,
                downsample,
            },
            ResidualBlockKind::Bottleneck => ResidualBlock {
                conv1: conv([channels_in, planes], 1, 1, device),
                bn1: norm(planes)?,
                conv2: conv([planes, planes], 3, stride, device),
                bn2: norm(planes)?,
                conv3: Some(conv([planes, out], 1, 1, device)),
                bn3: Some(last_norm(out)?),
                downsample,
            },
        })
    }
}

impl ResNet {
    /// This network with a new last linear layer for `num_classes` classes, initialised as
    /// `init` initialises it, and everything else kept (timm's `reset_classifier`): to fine-tune
    /// an ImageNet checkpoint on another dataset.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for zero classes.
    pub fn reset_classifier(self, num_classes: usize) -> Result<Self, ModelError> {
        let fc = reset_linear(MODEL, &self.fc, num_classes, |inputs, classes, device| {
            LinearConfig::new(inputs, classes).init(device)
        })?;
        Ok(Self { fc, ..self })
    }

    /// The logits for a batch of images.
    ///
    /// # Shapes
    ///
    /// - `images`: `[N, 3, H, W]`
    /// - output: `[N, num_classes]`
    ///
    /// # Panics
    ///
    /// When the images do not have 3 channels, or a normalizer refuses its input (BatchNorm
    /// training on one value per channel, InstanceNorm on a 1×1 feature map).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.forward_features(images);
        // Global average pooling (torchvision's AdaptiveAvgPool2d((1, 1)) + flatten).
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([n, c]);
        self.fc.forward(pooled)
    }

    /// The four stages, `layer1` to `layer4`.
    fn layers(&self) -> [&Vec<ResidualBlock>; 4] {
        [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
    }
}

/// Five maps: the stem's (after its ReLU, before the max-pool: timm's `act1`) and each
/// stage's; at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input with the ImageNet stem, 1, 1, 1/2,
/// 1/4 and 1/8 with the CIFAR one.
impl Backbone for ResNet {
    fn feature_info(&self) -> Vec<FeatureInfo> {
        let mut map = FeatureInfo {
            channels: self.conv1.weight.dims()[0],
            reduction: self.conv1.stride[0],
        };
        let mut info = vec![map];
        for (stage, blocks) in self.layers().into_iter().enumerate() {
            if stage == 0 && self.maxpool.is_some() {
                map.reduction *= 2;
            }
            for block in blocks {
                map = FeatureInfo {
                    channels: block.output_channels(),
                    reduction: map.reduction * block.stride(),
                };
            }
            info.push(map);
        }
        info
    }

    fn stage(&self, index: usize, x: Tensor<4>) -> Tensor<4> {
        let x = match (index, &self.maxpool) {
            (0, _) => return relu(self.bn1.forward(conv2d(&self.conv1, x))),
            (1, Some(pool)) => pool.forward(x),
            _ => x,
        };
        let Some(blocks) = self.layers().get(index - 1).copied() else {
            panic!("ResNet: no stage {index}: it has 5, the stem and four stages")
        };
        blocks.iter().fold(x, |x, block| block.forward(x))
    }
}

impl ResidualBlock {
    /// The channels it outputs.
    fn output_channels(&self) -> usize {
        self.conv3.as_ref().unwrap_or(&self.conv2).weight.dims()[0]
    }

    /// Its stride: the first convolution's in a basic block, the second's in a bottleneck.
    fn stride(&self) -> usize {
        self.conv1.stride[0] * self.conv2.stride[0]
    }

    /// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, or with a bottleneck's third
    /// convolution `relu(bn3(conv3(relu(bn2(…)))) + shortcut(x))`.
    ///
    /// # Shapes
    ///
    /// - `input`: `[N, C_in, H, W]`
    /// - output: `[N, C_out, H / stride, W / stride]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(down) => down.bn.forward(conv2d(&down.conv, input.clone())),
            None => input.clone(),
        };
        let x = relu(self.bn1.forward(conv2d(&self.conv1, input)));
        let x = self.bn2.forward(conv2d(&self.conv2, x));
        let x = match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => bn3.forward(conv2d(conv3, relu(x))),
            _ => x,
        };
        relu(x.add(shortcut))
    }
}

impl TorchvisionWeights for ResNet {
    fn name(&self) -> &'static str {
        "ResNet"
    }

    fn head(&self) -> &'static str {
        "fc"
    }

    /// Only the projection shortcut differs: torchvision's is a `Sequential`.
    fn renames(&self) -> Vec<(String, String)> {
        [("0", "conv"), ("1", "bn")]
            .into_iter()
            .map(|(index, ours)| {
                (
                    format!("layer{{}}.{{}}.downsample.{index}"),
                    format!("layer{{}}.{{}}.downsample.{ours}"),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use normzoo_kernels::backend::{cpu_test_devices, seed_for_test};

    use crate::common::{cpu, sgd_steps};
    use crate::num_trainable_params;
    use burn::tensor::{Distribution, Int};

    /// The CIFAR variant's count (torchvision's `resnet18(num_classes=10)` with a 3×3 stem and
    /// no max-pool); the ImageNet ones are the registry's, tested there.
    #[test]
    fn resnet18_cifar_has_the_derived_parameter_count() {
        let device = cpu().autodiff();
        let cifar = ResNetConfig::resnet18_cifar(10).init(&device).unwrap();
        assert_eq!(num_trainable_params(&cifar), 11_173_962);
    }

    /// A bottleneck: 1×1 down to the stage's channels, 3×3 with the stride, 1×1 up to four
    /// times as many; the first block of each stage projects its shortcut.
    #[test]
    fn bottlenecks_expand_four_times_and_stride_on_the_3x3() {
        let device = cpu();
        let model = ResNetConfig::resnet50(10)
            .with_width(4)
            .with_blocks([2, 1, 1, 1])
            .init(&device)
            .unwrap();
        let block = &model.layer2[0];
        assert_eq!(block.conv1.weight.dims(), [8, 16, 1, 1]);
        assert_eq!(block.conv1.stride, [1, 1]);
        assert_eq!(block.conv2.weight.dims(), [8, 8, 3, 3]);
        assert_eq!(block.conv2.stride, [2, 2]);
        assert_eq!(block.conv3.as_ref().unwrap().weight.dims(), [32, 8, 1, 1]);
        let downsample = block.downsample.as_ref().unwrap();
        assert_eq!(downsample.conv.weight.dims(), [32, 16, 1, 1]);
        // Stage 1 projects too (64 → 256 channels in ResNet50), then keeps its width.
        assert!(model.layer1[0].downsample.is_some());
        assert!(model.layer1[1].downsample.is_none());
        assert_eq!(model.fc.weight.dims(), [128, 10]);
        let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
        assert_eq!(model.forward(images).dims(), [2, 10]);
    }

    /// The normalizers of ResNet18 hold 2·4800 values with an affine (64 in the stem, then
    /// 4·64 + 4·128 + 128 + 4·256 + 256 + 4·512 + 512 channels): the same for batch, group and
    /// layer2d, none for `none` and the default (non-affine) `instance`.
    #[test]
    fn swapped_normalizers_have_the_derived_counts() {
        let device = cpu().autodiff();
        for (norm, expected) in [
            ("group:32", 11_689_512),
            ("layer2d", 11_689_512),
            ("none", 11_689_512 - 9_600),
            ("instance", 11_689_512 - 9_600),
        ] {
            let config = ResNetConfig::resnet18(1000).with_norm(norm.parse().unwrap());
            let model = config.init(&device).unwrap();
            assert_eq!(num_trainable_params(&model), expected, "{norm}");
        }
    }

    #[test]
    fn channels_last_normalizers_are_refused() {
        let device = cpu();
        for norm in ["layer", "rms"] {
            let err = ResNetConfig::resnet18_cifar(10)
                .with_norm(norm.parse().unwrap())
                .init(&device)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("ResNet: the normalizer `{norm}` does not apply")),
                "{err}"
            );
        }
        let err = ResNetConfig::resnet18_cifar(10)
            .with_norm(NormConfig::group(3))
            .init(&device)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GroupNorm: num_channels (64) must be divisible by num_groups (3)"
        );
    }

    #[test]
    fn output_shapes() {
        let device = cpu();
        let cifar = ResNetConfig::resnet18_cifar(10)
            .with_width(8)
            .init(&device)
            .unwrap();
        let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
        assert_eq!(cifar.forward(images).dims(), [2, 10]);
        let imagenet = ResNetConfig::resnet18(1000)
            .with_width(8)
            .init(&device)
            .unwrap();
        let images = Tensor::<4>::random([1, 3, 64, 64], Distribution::Default, &device);
        assert_eq!(imagenet.forward(images).dims(), [1, 1000]);
    }

    /// With `zero_init_residual` every block, basic or bottleneck, starts as
    /// `relu(shortcut(x))`.
    #[test]
    fn zero_init_residual_makes_blocks_start_as_the_shortcut() {
        let device = cpu();
        for (config, channels) in [
            (ResNetConfig::resnet18_cifar(10), 8),
            (ResNetConfig::resnet50(10).with_stem(ResNetStem::Cifar), 32),
        ] {
            let model = config
                .with_width(8)
                .with_zero_init_residual(true)
                .init(&device)
                .unwrap();
            let block = &model.layer1[1];
            let x = Tensor::<4>::random([2, channels, 8, 8], Distribution::Default, &device);
            let out = block.forward(x.clone()).into_data();
            out.assert_approx_eq::<f32>(
                &relu(x).into_data(),
                burn::tensor::Tolerance::absolute(1e-6),
            );
        }
    }

    /// A small ResNet trains with each applicable normalizer on each CPU backend.
    #[test]
    fn a_few_steps_lower_the_loss_with_every_normalizer() {
        for (backend, device) in cpu_test_devices() {
            let device = device.autodiff();
            let _seed = seed_for_test(&device, 7); // repeatable initialisation and data
            let images = Tensor::<4>::random([4, 3, 16, 16], Distribution::Default, &device);
            let labels = Tensor::<1, Int>::from_ints([0, 1, 2, 3], &device);
            for norm in ["batch", "group:2", "layer2d", "instance", "none"] {
                let config = ResNetConfig::resnet18_cifar(4)
                    .with_width(4)
                    .with_blocks([1, 1, 1, 1])
                    .with_norm(norm.parse().unwrap());
                let model = config.init(&device).unwrap();
                let (_, first, last) = sgd_steps(model, 8, 0.05, |model: &ResNet| {
                    burn::nn::loss::CrossEntropyLossConfig::new()
                        .init(&device)
                        .forward(model.forward(images.clone()), labels.clone())
                });
                assert!(last < first, "[{backend}] {norm}: loss {first} → {last}");
            }
        }
    }
}
