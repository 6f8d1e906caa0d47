//! [`ImageClassifier`]: one of the image classifiers, chosen at run time.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::{Backbone, ConvNext, FeatureInfo, ModelError, ResNet, TorchvisionWeights, Vgg};

/// An image classifier chosen by name ([`from_name`](Self::from_name), from the
/// [registry](crate::ARCHITECTURES)): `[N, 3, H, W]` images to `[N, num_classes]` logits. Every
/// one loads torchvision's checkpoints ([`TorchvisionWeights`]).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum ImageClassifier {
    /// A ResNet.
    ResNet(ResNet),
    /// A VGG network.
    Vgg(Vgg),
    /// A ConvNeXt.
    ConvNext(ConvNext),
}

impl ImageClassifier {
    /// The logits for a batch of images.
    ///
    /// # Shapes
    ///
    /// - `images`: `[N, 3, H, W]`
    /// - output: `[N, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::ResNet(model) => model.forward(images),
            Self::Vgg(model) => model.forward(images),
            Self::ConvNext(model) => model.forward(images),
        }
    }

    /// This classifier with a new last linear layer for `num_classes` classes, initialised as
    /// its architecture initialises it, and everything else kept (timm's `reset_classifier`).
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for zero classes.
    pub fn reset_classifier(self, num_classes: usize) -> Result<Self, ModelError> {
        Ok(match self {
            Self::ResNet(model) => Self::ResNet(model.reset_classifier(num_classes)?),
            Self::Vgg(model) => Self::Vgg(model.reset_classifier(num_classes)?),
            Self::ConvNext(model) => Self::ConvNext(model.reset_classifier(num_classes)?),
        })
    }
}

/// The chosen architecture's maps.
impl Backbone for ImageClassifier {
    fn feature_info(&self) -> Vec<FeatureInfo> {
        match self {
            Self::ResNet(model) => model.feature_info(),
            Self::Vgg(model) => model.feature_info(),
            Self::ConvNext(model) => model.feature_info(),
        }
    }

    fn stage(&self, index: usize, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::ResNet(model) => model.stage(index, x),
            Self::Vgg(model) => model.stage(index, x),
            Self::ConvNext(model) => model.stage(index, x),
        }
    }
}

/// The chosen architecture's table and names: an enum's variant adds nothing to the keys.
impl TorchvisionWeights for ImageClassifier {
    fn name(&self) -> &'static str {
        match self {
            Self::ResNet(model) => model.name(),
            Self::Vgg(model) => model.name(),
            Self::ConvNext(model) => model.name(),
        }
    }

    fn head(&self) -> &'static str {
        match self {
            Self::ResNet(model) => model.head(),
            Self::Vgg(model) => model.head(),
            Self::ConvNext(model) => model.head(),
        }
    }

    fn renames(&self) -> Vec<(String, String)> {
        match self {
            Self::ResNet(model) => model.renames(),
            Self::Vgg(model) => model.renames(),
            Self::ConvNext(model) => model.renames(),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::common::cpu;
    use crate::num_trainable_params;

    /// Every classifier's head is replaced by a trainable one with the same inputs and the new
    /// number of outputs.
    #[test]
    fn reset_classifier_replaces_only_the_last_layer() {
        let device = cpu().autodiff();
        for name in ["resnet18-cifar", "vgg16-bn-cifar", "convnext-cifar"] {
            let model = ImageClassifier::from_name(name, 10, None, &device).unwrap();
            let before = num_trainable_params(&model);
            let model = model.reset_classifier(3).unwrap();
            let inputs = match &model {
                ImageClassifier::ResNet(model) => model.fc.weight.dims()[0],
                ImageClassifier::Vgg(model) => model.fc.weight.dims()[0],
                ImageClassifier::ConvNext(model) => model.head.weight.dims()[0],
            };
            // 10 classes' weights and biases became 3 classes'.
            assert_eq!(
                num_trainable_params(&model),
                before - 7 * (inputs + 1),
                "{name}"
            );
            let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
            assert_eq!(model.forward(images).dims(), [2, 3], "{name}");
            let err = model.reset_classifier(0).unwrap_err().to_string();
            assert!(
                err.ends_with("num_classes must be greater than zero, got 0"),
                "{err}"
            );
        }
    }
}
