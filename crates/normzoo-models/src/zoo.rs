//! The architectures by name, for command lines and experiments.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use normzoo_norm::NormConfig;

use crate::{ConvNext, ConvNextConfig, ModelError, ResNet, ResNetConfig, Vgg, VggConfig};

/// Every architecture in the zoo, with what it is. The image classifiers among them are built
/// by name with [`ImageClassifier::from_name`]; the others take inputs of their own (tokens,
/// sequences, images to translate or segment) and are built from their configs.
pub const ARCHITECTURES: [(&str, &str); 13] = [
    (
        "mlp",
        "multi-layer perceptron (MlpConfig), batch norm by default",
    ),
    (
        "resnet18",
        "ResNet18, torchvision layout, 224×224 (ImageClassifier)",
    ),
    (
        "resnet18-cifar",
        "ResNet18 with the CIFAR stem, 32×32 (ImageClassifier)",
    ),
    (
        "vgg16",
        "VGG16 without normalization, 224×224 (ImageClassifier)",
    ),
    (
        "vgg16-bn",
        "VGG16 with batch norm, 224×224 (ImageClassifier)",
    ),
    (
        "vgg16-cifar",
        "VGG16 with batch norm and a CIFAR head, 32×32 (ImageClassifier)",
    ),
    ("convnext-tiny", "ConvNeXt-T, 224×224 (ImageClassifier)"),
    (
        "convnext-cifar",
        "a small ConvNeXt for 32×32 (ImageClassifier)",
    ),
    (
        "transformer",
        "Transformer encoder classifier and causal LM (TransformerConfig)",
    ),
    ("lstm", "plain LSTM (LstmConfig)"),
    (
        "ln-lstm",
        "layer-normalized LSTM (LstmConfig::layer_normalized)",
    ),
    (
        "unet",
        "U-Net segmentation, group norm by default (UNetConfig)",
    ),
    (
        "cyclegan",
        "CycleGAN ResNet generator, instance norm by default (ResnetGeneratorConfig)",
    ),
];

/// An image classifier chosen by name: `[N, 3, H, W]` images to `[N, num_classes]` logits.
/// Every one loads torchvision's checkpoints ([`TorchvisionWeights`](crate::TorchvisionWeights)).
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
    /// The names [`from_name`](Self::from_name) accepts.
    pub const NAMES: [&'static str; 7] = [
        "resnet18",
        "resnet18-cifar",
        "vgg16",
        "vgg16-bn",
        "vgg16-cifar",
        "convnext-tiny",
        "convnext-cifar",
    ];

    /// Builds the classifier called `name` with `num_classes` outputs, with its paper's
    /// normalizer or `norm` in its place.
    ///
    /// # Errors
    ///
    /// [`ModelError::UnknownModel`] for a name not in [`NAMES`](Self::NAMES), and the
    /// architecture's own errors (e.g. a normalizer that does not apply).
    pub fn from_name(
        name: &str,
        num_classes: usize,
        norm: Option<NormConfig>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let resnet = |config: ResNetConfig| match norm.clone() {
            Some(norm) => config.with_norm(norm),
            None => config,
        };
        let vgg = |config: VggConfig| match norm.clone() {
            Some(norm) => config.with_norm(norm),
            None => config,
        };
        let convnext = |config: ConvNextConfig| match norm.clone() {
            Some(norm) => config.with_norm(norm),
            None => config,
        };
        Ok(match name {
            "resnet18" => Self::ResNet(resnet(ResNetConfig::resnet18(num_classes)).init(device)?),
            "resnet18-cifar" => {
                Self::ResNet(resnet(ResNetConfig::resnet18_cifar(num_classes)).init(device)?)
            }
            "vgg16" => Self::Vgg(vgg(VggConfig::vgg16(num_classes)).init(device)?),
            "vgg16-bn" => Self::Vgg(vgg(VggConfig::vgg16_bn(num_classes)).init(device)?),
            "vgg16-cifar" => Self::Vgg(
                vgg(VggConfig::vgg16_cifar(NormConfig::batch(), num_classes)).init(device)?,
            ),
            "convnext-tiny" => {
                Self::ConvNext(convnext(ConvNextConfig::tiny(num_classes)).init(device)?)
            }
            "convnext-cifar" => {
                Self::ConvNext(convnext(ConvNextConfig::cifar(num_classes)).init(device)?)
            }
            _ => return Err(ModelError::UnknownModel { name: name.into() }),
        })
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::cpu;

    #[test]
    fn every_name_builds_and_unknown_names_are_refused() {
        let device = cpu();
        for name in ImageClassifier::NAMES {
            assert!(
                ARCHITECTURES.iter().any(|(known, _)| *known == name),
                "{name}"
            );
        }
        let model = ImageClassifier::from_name("resnet18-cifar", 10, None, &device).unwrap();
        let images = Tensor::<4>::zeros([1, 3, 32, 32], &device);
        assert_eq!(model.forward(images).dims(), [1, 10]);
        let swapped =
            ImageClassifier::from_name("convnext-cifar", 10, Some(NormConfig::group(8)), &device)
                .unwrap();
        let ImageClassifier::ConvNext(convnext) = &swapped else {
            panic!("convnext-cifar built something else")
        };
        assert!(matches!(convnext.stem_norm, normzoo_norm::Norm::Group(_)));
        assert_eq!(
            ImageClassifier::from_name("resnet50", 10, None, &device)
                .unwrap_err()
                .to_string(),
            "unknown model `resnet50`: expected one of resnet18, resnet18-cifar, vgg16, vgg16-bn, \
             vgg16-cifar, convnext-tiny, convnext-cifar"
        );
    }
}
