//! [`ImageClassifier`]: one of the image classifiers, chosen at run time.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::{ConvNext, ResNet, TorchvisionWeights, Vgg};

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
