//! ConvNeXt ([Liu et al., 2022](https://arxiv.org/abs/2201.03545)), with a swappable normalizer.

use burn::config::Config;
use burn::module::{Flag, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor};
use normzoo_kernels::{conv2d, gelu};
use normzoo_norm::{Norm, NormConfig};

use crate::common::{normal_002, reset_linear, zeroed};
use crate::error::refuse_channels_last;
use crate::{Backbone, FeatureInfo, ModelError, TorchvisionWeights};

/// Configuration of a [`ConvNext`] (ConvNeXt-T by default).
#[derive(Config, Debug)]
pub struct ConvNextConfig {
    /// The number of classes. Default: 1000.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Blocks per stage. Default: ConvNeXt-T's `[3, 3, 9, 3]`.
    #[config(default = "[3, 3, 9, 3]")]
    pub depths: [usize; 4],
    /// Channels per stage. Default: ConvNeXt-T's `[96, 192, 384, 768]`.
    #[config(default = "[96, 192, 384, 768]")]
    pub dims: [usize; 4],
    /// The stem's patch size (kernel and stride). Default: 4 (224×224 images); 2 suits 32×32.
    #[config(default = 4)]
    pub stem_patch: usize,
    /// The normalizer of the stem, the downsampling layers, every block and the head.
    /// Default: `layer2d` with ε = 1e-6 (the paper's LayerNorm over channels). `layer` and
    /// `rms` do not apply (use `layer2d`), nor does `instance` (the head normalizes pooled 1×1
    /// features).
    #[config(default = "NormConfig::layer2d()")]
    pub norm: NormConfig,
    /// The initial value of the layer scale. Default: 1e-6.
    #[config(default = 1e-6)]
    pub layer_scale: f64,
    /// The stochastic-depth rate of the last block; it grows linearly from 0 over the blocks.
    /// Default: 0.1 (ConvNeXt-T's).
    #[config(default = 0.1)]
    pub drop_path_rate: f64,
}

impl ConvNextConfig {
    /// ConvNeXt-T: 28,589,128 parameters at 1000 classes.
    pub fn tiny(num_classes: usize) -> Self {
        Self::new().with_num_classes(num_classes)
    }

    /// ConvNeXt-S (torchvision's `convnext_small`): depths `[3, 3, 27, 3]`, ConvNeXt-T's dims,
    /// stochastic depth 0.4; 50,223,688 parameters at 1000 classes.
    pub fn small(num_classes: usize) -> Self {
        Self::tiny(num_classes)
            .with_depths([3, 3, 27, 3])
            .with_drop_path_rate(0.4)
    }

    /// ConvNeXt-B (torchvision's `convnext_base`): depths `[3, 3, 27, 3]`, dims `[128, 256,
    /// 512, 1024]`, stochastic depth 0.5; 88,591,464 parameters at 1000 classes.
    pub fn base(num_classes: usize) -> Self {
        Self::small(num_classes)
            .with_dims([128, 256, 512, 1024])
            .with_drop_path_rate(0.5)
    }

    /// ConvNeXt-L (torchvision's `convnext_large`): depths `[3, 3, 27, 3]`, dims `[192, 384,
    /// 768, 1536]`, stochastic depth 0.5; 197,767,336 parameters at 1000 classes.
    pub fn large(num_classes: usize) -> Self {
        Self::base(num_classes).with_dims([192, 384, 768, 1536])
    }

    /// A small ConvNeXt for 32×32 images: 2×2 stem patches, depths `[2, 2, 2, 2]`, dims
    /// `[64, 128, 256, 512]` (16×16 to 2×2 feature maps).
    pub fn cifar(num_classes: usize) -> Self {
        Self::new()
            .with_num_classes(num_classes)
            .with_stem_patch(2)
            .with_depths([2, 2, 2, 2])
            .with_dims([64, 128, 256, 512])
    }
}

/// ConvNeXt: a patchify stem (convolution + norm), four stages of [`ConvNextBlock`]s with a
/// downsampling layer (norm + 2×2 convolution, stride 2) before stages 2 to 4, then global
/// average pooling, a norm and a linear classifier.
///
/// With the default normalizer this is torchvision's `convnext_tiny` (LayerNorm over channels
/// everywhere, ε = 1e-6); the block's normalizer runs on the channels-first output of the
/// depthwise convolution, which for `layer2d` equals the paper's channels-last LayerNorm and
/// lets a channels-first normalizer take its place. Convolutions and linear layers are
/// initialised `N(0, 0.02)` with zero bias (timm truncates the normal at ±2σ).
#[derive(Module, Debug)]
pub struct ConvNext {
    /// The patchify convolution.
    pub stem: Conv2d,
    /// The stem's normalizer.
    pub stem_norm: Norm,
    /// The downsampling layers before stages 2, 3 and 4.
    pub downsample: Vec<DownsampleLayer>,
    /// The four stages.
    pub stages: Vec<Vec<ConvNextBlock>>,
    /// The head's normalizer.
    pub head_norm: Norm,
    /// The classifier.
    pub head: Linear,
}

/// Normalizer, then a 2×2 convolution with stride 2.
#[derive(Module, Debug)]
pub struct DownsampleLayer {
    /// The normalizer.
    pub norm: Norm,
    /// The convolution.
    pub conv: Conv2d,
}

/// `x + drop_path(γ ⊙ pwconv2(gelu(pwconv1(norm(dwconv(x))))))`, the point-wise layers acting
/// on channels last.
#[derive(Module, Debug)]
pub struct ConvNextBlock {
    /// 7×7 depthwise convolution.
    pub dwconv: Conv2d,
    /// The normalizer.
    pub norm: Norm,
    /// Channels → 4·channels.
    pub pwconv1: Linear,
    /// 4·channels → channels.
    pub pwconv2: Linear,
    /// The layer scale `γ`, `[C]`.
    pub gamma: Param<Tensor<1>>,
    /// Stochastic depth of the residual branch.
    pub drop_path: DropPath,
}

/// Stochastic depth ([Huang et al., 2016](https://arxiv.org/abs/1603.09382)): during training,
/// zero each sample's residual branch with probability `prob` and scale the kept ones by
/// `1 / (1 − prob)`; the identity in evaluation. timm's `DropPath`.
#[derive(Module, Debug)]
pub struct DropPath {
    /// The probability of dropping a sample's branch.
    pub prob: f64,
    /// burn's training flag (off after `valid()` or `freeze()`).
    pub training: Param<Flag>,
}

impl DropPath {
    /// Applies stochastic depth to a batch-first tensor.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        if self.prob == 0.0 || !self.training.is_enabled() || !input.device().is_autodiff() {
            return input;
        }
        let keep = 1.0 - self.prob;
        let mut shape = [1; D];
        shape[0] = input.dims()[0];
        let mask = Tensor::<D>::random(shape, Distribution::Bernoulli(keep), &input.device());
        input.mul(mask).div_scalar(keep)
    }
}

const MODEL: &str = "ConvNext";

fn conv(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    groups: usize,
    device: &Device,
) -> Conv2d {
    let pad = if stride == 1 { kernel / 2 } else { 0 };
    let mut conv = Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_initializer(normal_002())
        .init(device);
    conv.bias = zeroed(conv.bias);
    conv
}

fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out)
        .with_initializer(normal_002())
        .init(device);
    linear.bias = zeroed(linear.bias);
    linear
}

impl ConvNextConfig {
    /// Builds the network.
    ///
    /// # Errors
    ///
    /// [`ModelError::UnsupportedNorm`] for `layer`, `rms` and `instance`,
    /// [`ModelError::InvalidConfig`] for a zero size or a drop-path rate outside `[0, 1)`, and
    /// the normalizer's own error.
    pub fn init(&self, device: &Device) -> Result<ConvNext, ModelError> {
        if self.num_classes == 0 || self.stem_patch == 0 || self.dims.contains(&0) {
            return Err(ModelError::InvalidConfig {
                model: MODEL,
                message: format!(
                    "num_classes ({}), stem_patch ({}) and dims ({:?}) must be positive",
                    self.num_classes, self.stem_patch, self.dims
                ),
            });
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return Err(ModelError::InvalidConfig {
                model: MODEL,
                message: format!(
                    "drop_path_rate must be in [0, 1), got {}",
                    self.drop_path_rate
                ),
            });
        }
        refuse_channels_last(MODEL, &self.norm)?;
        if let NormConfig::Instance(_) = self.norm {
            return Err(ModelError::UnsupportedNorm {
                model: MODEL,
                norm: self.norm.to_string(),
                reason: "the head normalizes pooled 1×1 features, where a per-instance \
                         statistic is undefined: use `group:G` or `layer2d`"
                    .into(),
            });
        }
        let norm = |channels: usize| self.norm.init(channels, device);
        let [d0, ..] = self.dims;
        let total_blocks: usize = self.depths.iter().sum();
        let mut block_index = 0;
        let mut stages = Vec::with_capacity(4);
        let mut downsample = Vec::with_capacity(3);
        for (stage, (&depth, &dim)) in self.depths.iter().zip(&self.dims).enumerate() {
            if stage > 0 {
                let previous = self.dims[stage - 1];
                downsample.push(DownsampleLayer {
                    norm: norm(previous)?,
                    conv: conv([previous, dim], 2, 2, 1, device),
                });
            }
            let mut blocks = Vec::with_capacity(depth);
            for _ in 0..depth {
                let prob = match total_blocks {
                    0 | 1 => 0.0,
                    n => self.drop_path_rate * block_index as f64 / (n - 1) as f64,
                };
                block_index += 1;
                blocks.push(ConvNextBlock {
                    dwconv: conv([dim, dim], 7, 1, dim, device),
                    norm: norm(dim)?,
                    pwconv1: linear(dim, 4 * dim, device),
                    pwconv2: linear(4 * dim, dim, device),
                    gamma: Param::from_tensor(Tensor::full([dim], self.layer_scale, device)),
                    drop_path: DropPath {
                        prob,
                        training: Param::from_bool(true),
                    },
                });
            }
            stages.push(blocks);
        }
        let last = self.dims[3];
        Ok(ConvNext {
            stem: conv([3, d0], self.stem_patch, self.stem_patch, 1, device),
            stem_norm: norm(d0)?,
            downsample,
            stages,
            head_norm: norm(last)?,
            head: linear(last, self.num_classes, device),
        })
    }
}

impl ConvNext {
    /// This network with a new last linear layer for `num_classes` classes, initialised as
    /// `init` initialises it, and everything else kept (timm's `reset_classifier`): to fine-tune
    /// an ImageNet checkpoint on another dataset.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for zero classes.
    pub fn reset_classifier(self, num_classes: usize) -> Result<Self, ModelError> {
        let head = reset_linear(MODEL, &self.head, num_classes, linear)?;
        Ok(Self { head, ..self })
    }

    /// The logits for a batch of images.
    ///
    /// # Shapes
    ///
    /// - `images`: `[N, 3, H, W]`, `H` and `W` multiples of `8·stem_patch`
    /// - output: `[N, num_classes]`
    ///
    /// # Panics
    ///
    /// When the images do not have 3 channels or are too small, or a normalizer refuses its
    /// input (BatchNorm training on one value per channel).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.forward_features(images);
        // Global average pooling, keeping [N, C, 1, 1] so that any channels-first
        // normalizer applies in the head.
        let pooled = x.mean_dim(3).mean_dim(2);
        let [n, c, _, _] = pooled.dims();
        self.head
            .forward(self.head_norm.forward(pooled).reshape([n, c]))
    }
}

impl ConvNextBlock {
    /// One block.
    ///
    /// # Shapes
    ///
    /// - `input`: `[N, C, H, W]`
    /// - output: `[N, C, H, W]`
    ///
    /// The point-wise layers see one row per position, `[N·H·W, C]`, so that each is a single
    /// matrix product forward and backward: on `[N, H, W, C]`, burn's `Linear` keeps the
    /// `N·H` products of `W` rows each (it merges them only where that makes the product
    /// squarer), and their backward pass computes `N·H` weight gradients and sums them, which
    /// took about a third of a CIFAR ConvNeXt's training step on the CPU.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = self.norm.forward(conv2d(&self.dwconv, input.clone()));
        let [n, c, h, w] = x.dims();
        let rows = x.permute([0, 2, 3, 1]).reshape([n * h * w, c]); // channels last
        let x = self.pwconv2.forward(gelu(self.pwconv1.forward(rows)));
        let x = x.mul(self.gamma.val().reshape([1, c]));
        let x = x.reshape([n, h, w, c]).permute([0, 3, 1, 2]); // [N, C, H, W]
        input.add(self.drop_path.forward(x))
    }
}

/// Four maps, each stage's: at 1/4, 1/8, 1/16 and 1/32 of the input with the ImageNet stem
/// (`stem_patch` 4), 1/2 to 1/16 with the CIFAR one.
impl Backbone for ConvNext {
    fn feature_info(&self) -> Vec<FeatureInfo> {
        let stem = FeatureInfo {
            channels: self.stem.weight.dims()[0],
            reduction: self.stem.stride[0],
        };
        let mut info = vec![stem];
        for down in &self.downsample {
            let previous = info[info.len() - 1];
            info.push(FeatureInfo {
                channels: down.conv.weight.dims()[0],
                reduction: previous.reduction * down.conv.stride[0],
            });
        }
        info
    }

    fn stage(&self, index: usize, x: Tensor<4>) -> Tensor<4> {
        let Some(blocks) = self.stages.get(index) else {
            panic!("ConvNext: no stage {index}: it has {}", self.stages.len())
        };
        let x = match index {
            0 => self.stem_norm.forward(conv2d(&self.stem, x)),
            _ => {
                let down = &self.downsample[index - 1];
                conv2d(&down.conv, down.norm.forward(x))
            }
        };
        blocks.iter().fold(x, |x, block| block.forward(x))
    }
}

impl TorchvisionWeights for ConvNext {
    fn name(&self) -> &'static str {
        "ConvNeXt"
    }

    fn head(&self) -> &'static str {
        "head"
    }

    /// torchvision keeps the stem, stages and downsampling layers in one `features`
    /// sequence (stem 0, stages 1, 3, 5, 7, downsampling 2, 4, 6), each block's layers in a
    /// `block` sequence (depthwise convolution 0, LayerNorm 2, linear layers 3 and 5) and the
    /// head in `classifier` (LayerNorm 0, linear 2).
    fn renames(&self) -> Vec<(String, String)> {
        let mut renames = vec![
            ("features.0.0".into(), "stem".into()),
            ("features.0.1".into(), "stem_norm".into()),
            ("classifier.0".into(), "head_norm".into()),
            ("classifier.2".into(), "head".into()),
        ];
        for stage in 0..4 {
            let block = format!("features.{}.{{}}", 2 * stage + 1);
            let ours = format!("stages.{stage}.{{}}");
            for (theirs, name) in [
                ("block.0", "dwconv"),
                ("block.2", "norm"),
                ("block.3", "pwconv1"),
                ("block.5", "pwconv2"),
                ("layer_scale", "gamma"),
            ] {
                renames.push((format!("{block}.{theirs}"), format!("{ours}.{name}")));
            }
            if stage > 0 {
                let downsample = format!("features.{}", 2 * stage);
                let ours = format!("downsample.{}", stage - 1);
                renames.push((format!("{downsample}.0"), format!("{ours}.norm")));
                renames.push((format!("{downsample}.1"), format!("{ours}.conv")));
            }
        }
        renames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use normzoo_kernels::backend::{cpu_test_devices, seed_for_test};

    use crate::common::{cpu, sgd_steps};
    use crate::num_trainable_params;
    use burn::tensor::Int;

    #[test]
    fn swapped_normalizers_and_refusals() {
        let device = cpu().autodiff();
        // GroupNorm and BatchNorm have the same 2·C parameters as LayerNorm2d; none has none:
        // stem 96, stage blocks 3·96, 3·192, 9·384, 3·768, downsampling 96, 192, 384, head 768:
        // 2·8,160 = 16,320.
        for (norm, expected) in [
            ("batch", 28_589_128),
            ("group:1", 28_589_128),
            ("none", 28_589_128 - 16_320),
        ] {
            let model = ConvNextConfig::tiny(1000)
                .with_norm(norm.parse().unwrap())
                .init(&device)
                .unwrap();
            assert_eq!(num_trainable_params(&model), expected, "{norm}");
        }
        for norm in ["layer", "rms", "instance"] {
            let err = ConvNextConfig::cifar(10)
                .with_norm(norm.parse().unwrap())
                .init(&device)
                .unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("ConvNext: the normalizer `{norm}` does not apply")),
                "{err}"
            );
        }
    }

    /// The default block normalizer equals the paper's LayerNorm over channels-last features.
    #[test]
    fn block_matches_the_channels_last_formulation() {
        let device = cpu();
        let model = ConvNextConfig::cifar(10)
            .with_dims([8, 16, 32, 64])
            .with_layer_scale(0.5)
            .init(&device)
            .unwrap();
        let block = &model.stages[0][0];
        let x = Tensor::<4>::random([2, 8, 6, 6], Distribution::Default, &device);
        let ln = normzoo_norm::LayerNormConfig::new(vec![8])
            .with_eps(1e-6)
            .init(&device)
            .unwrap();
        let y = block.dwconv.forward(x.clone()).permute([0, 2, 3, 1]);
        let y = block
            .pwconv2
            .forward(gelu(block.pwconv1.forward(ln.forward(y))));
        let expected = x.clone().add(y.mul_scalar(0.5).permute([0, 3, 1, 2]));
        block.forward(x).into_data().assert_approx_eq::<f32>(
            &expected.into_data(),
            burn::tensor::Tolerance::absolute(1e-5),
        );
    }

    #[test]
    fn small_convnext_trains() {
        for (backend, device) in cpu_test_devices() {
            let device = device.autodiff();
            let _seed = seed_for_test(&device, 7); // repeatable initialisation and data
            let images = Tensor::<4>::random([4, 3, 16, 16], Distribution::Default, &device);
            let labels = Tensor::<1, Int>::from_ints([0, 1, 2, 3], &device);
            let config = ConvNextConfig::cifar(4)
                .with_dims([8, 8, 16, 16])
                .with_depths([1, 1, 1, 1])
                .with_layer_scale(1.0)
                .with_drop_path_rate(0.0);
            let model = config.init(&device).unwrap();
            let (model, first, last) = sgd_steps(model, 8, 0.02, |model: &ConvNext| {
                burn::nn::loss::CrossEntropyLossConfig::new()
                    .init(&device)
                    .forward(model.forward(images.clone()), labels.clone())
            });
            assert!(last < first, "[{backend}] loss {first} → {last}");
            assert_eq!(model.valid().forward(images.inner()).dims(), [4, 4]);
        }
    }

    #[test]
    fn drop_path_is_the_identity_in_evaluation_and_drops_whole_samples_in_training() {
        let device = cpu();
        let drop = DropPath {
            prob: 0.5,
            training: Param::from_bool(true),
        };
        let x = Tensor::<4>::ones([64, 2, 2, 2], &device);
        assert_eq!(drop.forward(x.clone()).into_data(), x.clone().into_data());
        let trained = drop.forward(Tensor::<4>::from_data(x.into_data(), &device.autodiff()));
        let per_sample = trained.inner().reshape([64, 8]);
        // Every sample is all zeros or all 2 (= 1 / keep).
        let min = per_sample.clone().min_dim(1);
        let max = per_sample.max_dim(1);
        assert_eq!(min.clone().into_data(), max.into_data());
        let kept = min.sum().into_scalar::<f32>() / 2.0;
        assert!(kept > 8.0 && kept < 56.0, "kept {kept} of 64");
    }
}
