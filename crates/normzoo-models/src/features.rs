//! The image classifiers as feature extractors, as timm's `features_only`: each stage's map,
//! with its channels and its reduction.

use burn::tensor::Tensor;

use crate::ModelError;

/// One feature map a [`Backbone`] gives (an entry of timm's `feature_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureInfo {
    /// Its channels.
    pub channels: usize,
    /// How many times smaller than the input's its height and width are (timm's `reduction`).
    pub reduction: usize,
}

/// A classifier's convolutional trunk as a chain of stages, each giving a feature map: the
/// encoder of a U-Net, a detection or segmentation head's backbone.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use normzoo_models::{Backbone, ResNetConfig};
///
/// let device = Device::default();
/// let resnet = ResNetConfig::resnet18(1000).with_width(8).init(&device)?;
/// // The stem, then the four stages: 8, 8, 16, 32, 64 channels at 1/2 … 1/32 of the input.
/// let reductions: Vec<_> = resnet.feature_info().iter().map(|f| f.reduction).collect();
/// assert_eq!(reductions, [2, 4, 8, 16, 32]);
/// let maps = resnet.features(Tensor::<4>::zeros([1, 3, 64, 64], &device), &[1, 4])?;
/// assert_eq!(maps[1].dims(), [1, 64, 2, 2]);
/// # Ok::<(), normzoo_models::ModelError>(())
/// ```
pub trait Backbone {
    /// The maps [`features`](Self::features) can give, shallowest first: one per stage.
    fn feature_info(&self) -> Vec<FeatureInfo>;

    /// Stage `index` applied to the map of stage `index − 1` (to the images for stage 0).
    ///
    /// # Panics
    ///
    /// When `index` is not below `feature_info().len()`, or as the model's `forward` does for
    /// its input.
    fn stage(&self, index: usize, x: Tensor<4>) -> Tensor<4>;

    /// The deepest map, unpooled: what the classifier's head takes (timm's
    /// `forward_features`).
    ///
    /// # Shapes
    ///
    /// - `images`: `[N, 3, H, W]`
    /// - output: `[N, C, H / r, W / r]`, `C` and `r` the last [`FeatureInfo`]'s
    fn forward_features(&self, images: Tensor<4>) -> Tensor<4> {
        (0..self.feature_info().len()).fold(images, |x, index| self.stage(index, x))
    }

    /// The maps `out_indices` asks for (indices into [`feature_info`](Self::feature_info)), in
    /// the order asked; the network runs only as deep as the deepest one asked.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for an index past the last stage.
    fn features(
        &self,
        images: Tensor<4>,
        out_indices: &[usize],
    ) -> Result<Vec<Tensor<4>>, ModelError> {
        let stages = self.feature_info().len();
        if let Some(&index) = out_indices.iter().find(|&&index| index >= stages) {
            return Err(ModelError::InvalidConfig {
                model: "features",
                message: format!(
                    "out_indices: expected indices below {stages} (the stages), got {index}"
                ),
            });
        }
        let depth = out_indices.iter().max().map_or(0, |deepest| deepest + 1);
        let mut maps = Vec::with_capacity(depth);
        let mut x = images;
        for index in 0..depth {
            x = self.stage(index, x);
            maps.push(x.clone());
        }
        Ok(out_indices
            .iter()
            .map(|&index| maps[index].clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::nn::conv::{Conv2d, Conv2dConfig};
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    use burn::tensor::{Distribution, Int};

    use super::*;
    use crate::common::{cpu, sgd_steps};
    use crate::{ConvNextConfig, ImageClassifier, ResNet, ResNetConfig, ResNetStem, VggConfig};

    fn info(pairs: &[(usize, usize)]) -> Vec<FeatureInfo> {
        pairs
            .iter()
            .map(|&(channels, reduction)| FeatureInfo {
                channels,
                reduction,
            })
            .collect()
    }

    /// timm's `feature_info` for the same models (`features_only=True`), at full width; for
    /// VGG the stages' (timm's sixth map is its pre-logits convolution's, ours the last pool's).
    #[test]
    fn feature_info_is_timms() {
        let device = cpu();
        let resnet50 = ResNetConfig::resnet50(1000).init(&device).unwrap();
        assert_eq!(
            resnet50.feature_info(),
            info(&[(64, 2), (256, 4), (512, 8), (1024, 16), (2048, 32)])
        );
        let resnet18_cifar = ResNetConfig::resnet18_cifar(10).init(&device).unwrap();
        assert_eq!(
            resnet18_cifar.feature_info(),
            info(&[(64, 1), (64, 1), (128, 2), (256, 4), (512, 8)])
        );
        let vgg11 = VggConfig::vgg11(10).with_hidden(8).init(&device).unwrap();
        assert_eq!(
            vgg11.feature_info(),
            info(&[(64, 1), (128, 2), (256, 4), (512, 8), (512, 16), (512, 32)])
        );
        let convnext = ConvNextConfig::tiny(10).init(&device).unwrap();
        assert_eq!(
            convnext.feature_info(),
            info(&[(96, 4), (192, 8), (384, 16), (768, 32)])
        );
    }

    /// Every map has the channels and reduction its info says, in the order asked, and the
    /// deepest is what `forward_features` gives.
    #[test]
    fn the_maps_are_as_their_info_says() {
        let device = cpu();
        let images = Tensor::<4>::random([2, 3, 64, 64], Distribution::Default, &device);
        let models = [
            ResNetConfig::resnet50(10)
                .with_width(4)
                .with_blocks([1, 1, 1, 1])
                .init(&device)
                .map(ImageClassifier::ResNet),
            VggConfig::vgg11(10)
                .with_stages(vec![vec![4], vec![4], vec![8], vec![8], vec![8]])
                .with_hidden(8)
                .init(&device)
                .map(ImageClassifier::Vgg),
            ConvNextConfig::tiny(10)
                .with_dims([8, 16, 32, 64])
                .with_depths([1, 1, 1, 1])
                .init(&device)
                .map(ImageClassifier::ConvNext),
        ];
        for model in models {
            let model = model.unwrap();
            let info = model.feature_info();
            let asked: Vec<usize> = (0..info.len()).rev().collect();
            let maps = model.features(images.clone(), &asked).unwrap();
            for (&index, map) in asked.iter().zip(&maps) {
                let FeatureInfo {
                    channels,
                    reduction,
                } = info[index];
                let size = 64 / reduction;
                assert_eq!(map.dims(), [2, channels, size, size], "{index}: {model:?}");
            }
            let deepest = model.forward_features(images.clone());
            assert_eq!(deepest.dims(), maps[0].dims());
            let err = model
                .features(images.clone(), &[0, info.len()])
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "features: out_indices: expected indices below {} (the stages), got {}",
                    info.len(),
                    info.len()
                )
            );
        }
    }

    /// A U-Net-style decoder on a ResNet backbone: each of the stages' maps through a 1×1
    /// convolution to the classes, upsampled to the input and summed, trained end to end on
    /// per-pixel labels.
    #[derive(Module, Debug)]
    struct Segmenter {
        backbone: ResNet,
        heads: Vec<Conv2d>,
    }

    const OUT_INDICES: [usize; 3] = [1, 2, 3];

    impl Segmenter {
        fn forward(&self, images: Tensor<4>) -> Tensor<4> {
            let [_, _, height, width] = images.dims();
            let upsample =
                InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([height, width]);
            let maps = self.backbone.features(images, &OUT_INDICES).unwrap();
            maps.into_iter()
                .zip(&self.heads)
                .map(|(map, head)| interpolate(head.forward(map), upsample.clone()))
                .reduce(|sum, logits| sum + logits)
                .unwrap()
        }
    }

    #[test]
    fn a_segmentation_decoder_trains_on_a_resnet_backbone() {
        let device = cpu().autodiff();
        let _seed = normzoo_kernels::backend::seed_for_test(&device, 3);
        let backbone = ResNetConfig::resnet18(10)
            .with_stem(ResNetStem::Cifar)
            .with_width(4)
            .with_blocks([1, 1, 1, 1])
            .init(&device)
            .unwrap();
        let info = backbone.feature_info();
        let heads = OUT_INDICES
            .iter()
            .map(|&index| Conv2dConfig::new([info[index].channels, 2], [1, 1]).init(&device))
            .collect();
        let model = Segmenter { backbone, heads };
        // Two classes per pixel: the left and right halves of each 16×16 image.
        let images = Tensor::<4>::random([4, 3, 16, 16], Distribution::Default, &device);
        let labels = Tensor::<1, Int>::arange(0..16, &device)
            .greater_equal_elem(8)
            .int()
            .reshape([1, 1, 16])
            .expand([4, 16, 16]);
        let (_, first, last) = sgd_steps(model, 10, 0.1, |model: &Segmenter| {
            let logits = model.forward(images.clone()); // [N, 2, H, W]
            let logits = logits.permute([0, 2, 3, 1]).reshape([4 * 16 * 16, 2]);
            burn::nn::loss::CrossEntropyLossConfig::new()
                .init(&device)
                .forward(logits, labels.clone().reshape([4 * 16 * 16]))
        });
        assert!(last < 0.7 * first, "the loss went from {first} to {last}");
    }
}
