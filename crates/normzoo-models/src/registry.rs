//! The registry: every model of the zoo under one name, what it is, how the image classifiers
//! among them are built by name, and torchvision's ImageNet weights for those that have them.
//! The lists a reader or a command line sees (the architectures, the names
//! [`ImageClassifier::from_name`] accepts, the 32×32 models a CIFAR run trains, the models with
//! ImageNet weights) all come from [`ARCHITECTURES`].

use std::path::PathBuf;

use burn::config::Config;
use burn::tensor::Device;
use normzoo_norm::NormConfig;

use crate::{
    CONVNEXT_BASE_IMAGENET, CONVNEXT_LARGE_IMAGENET, CONVNEXT_SMALL_IMAGENET,
    CONVNEXT_TINY_IMAGENET, ConvNextConfig, ImageClassifier, ModelError, RESNET18_IMAGENET,
    RESNET34_IMAGENET, RESNET50_IMAGENET, RESNET101_IMAGENET, RESNET152_IMAGENET, ResNetConfig,
    ResNetStem, TorchvisionWeights, VGG11_BN_IMAGENET, VGG11_IMAGENET, VGG13_BN_IMAGENET,
    VGG13_IMAGENET, VGG16_BN_IMAGENET, VGG16_IMAGENET, VGG19_BN_IMAGENET, VGG19_IMAGENET,
    VggConfig,
};

/// One model of the zoo.
#[derive(Debug, Clone, Copy)]
pub struct Architecture {
    /// Its name, unique among the names and aliases of [`ARCHITECTURES`].
    pub name: &'static str,
    /// Other names [`ImageClassifier::from_name`] accepts for it.
    pub aliases: &'static [&'static str],
    /// What it is, in a line.
    pub description: &'static str,
    /// How it is built by name, for the image classifiers; `None` for the models that take
    /// inputs of their own (tokens, sequences, images to segment or translate), built from
    /// their configs.
    pub classifier: Option<Classifier>,
}

/// An image classifier of the registry.
#[derive(Debug, Clone, Copy)]
pub struct Classifier {
    /// The height and width of the images it is built for: 224 (ImageNet) or 32 (CIFAR).
    pub image_size: usize,
    /// torchvision's ImageNet weights for it, if there are any.
    pub imagenet: Option<ImagenetWeights>,
    /// Builds it as `options` say (their weights aside).
    build: fn(&ModelOptions, &Device) -> Result<ImageClassifier, ModelError>,
}

/// torchvision's ImageNet checkpoint of a model, the evaluation transform it was scored with
/// (`weights.transforms()`: the shorter side resized to `resize`, the centre `crop`×`crop`
/// square, ImageNet's mean and standard deviation), and what torchvision publishes for it
/// (`weights.meta`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImagenetWeights {
    /// The checkpoint's address.
    pub url: &'static str,
    /// The shorter side's length after resizing, in pixels.
    pub resize: u32,
    /// The centre crop's side, in pixels.
    pub crop: u32,
    /// The top-1 accuracy torchvision publishes on ImageNet-1k's 50,000 validation images, in
    /// percent (`weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]`).
    pub top1: f32,
    /// The top-5 accuracy torchvision publishes, in percent (`…["acc@5"]`).
    pub top5: f32,
    /// The model's parameter count (`weights.meta["num_params"]`), which our model has too.
    pub num_params: usize,
}

impl Architecture {
    /// Whether `name` is this model's name or one of its aliases, ignoring case and taking `_`
    /// for `-`, so that torchvision's and timm's spellings work (`vgg16_bn`, `convnext_tiny`).
    pub fn is_called(&self, name: &str) -> bool {
        let name = name.trim().replace('_', "-");
        std::iter::once(self.name)
            .chain(self.aliases.iter().copied())
            .any(|known| known.eq_ignore_ascii_case(&name))
    }
}

/// The names of [`ARCHITECTURES`] that match `pattern`, as timm's `list_models`: a shell
/// wildcard (`*` any run of characters, `?` one, `[…]` one of a set), ignoring case and taking
/// `_` for `-`. `list_models("resnet*")` lists the ResNets, `list_models("*")` every model.
///
/// # Errors
///
/// [`ModelError::InvalidConfig`] for a pattern that is not a wildcard pattern (`[` unclosed).
pub fn list_models(pattern: &str) -> Result<Vec<&'static str>, ModelError> {
    let pattern = glob::Pattern::new(&pattern.trim().replace('_', "-")).map_err(|err| {
        ModelError::InvalidConfig {
            model: "list_models",
            message: format!("`{pattern}` is not a wildcard pattern: {err}"),
        }
    })?;
    let options = glob::MatchOptions {
        case_sensitive: false,
        ..glob::MatchOptions::new()
    };
    Ok(ARCHITECTURES
        .iter()
        .map(|architecture| architecture.name)
        .filter(|name| pattern.matches_with(name, options))
        .collect())
}

/// The model called `name` (or one of its aliases), if the registry has it.
pub fn find_architecture(name: &str) -> Option<&'static Architecture> {
    ARCHITECTURES
        .iter()
        .find(|architecture| architecture.is_called(name))
}

/// The image classifiers of the registry.
pub fn image_classifiers() -> impl Iterator<Item = (&'static Architecture, &'static Classifier)> {
    ARCHITECTURES.iter().filter_map(|architecture| {
        architecture
            .classifier
            .as_ref()
            .map(|classifier| (architecture, classifier))
    })
}

/// torchvision's ImageNet weights of the model called `name` (or one of its aliases).
///
/// # Errors
///
/// [`ModelError::UnknownModel`] for a name the registry does not have, with the names that
/// have weights (and the closest of them); [`ModelError::InvalidConfig`] for a model without
/// ImageNet weights (the CIFAR variants, the models that are not image classifiers).
pub fn imagenet_weights(name: &str) -> Result<ImagenetWeights, ModelError> {
    let with_weights: Vec<_> = image_classifiers()
        .filter(|(_, classifier)| classifier.imagenet.is_some())
        .map(|(architecture, _)| architecture.name)
        .collect();
    let architecture =
        find_architecture(name).ok_or_else(|| ModelError::unknown_model(name, &with_weights))?;
    architecture
        .classifier
        .and_then(|classifier| classifier.imagenet)
        .ok_or_else(|| ModelError::InvalidConfig {
            model: architecture.name,
            message: format!(
                "no ImageNet weights here; expected one of {}",
                with_weights.join(", ")
            ),
        })
}

impl ImageClassifier {
    /// The names [`from_name`](Self::from_name) accepts, without aliases.
    pub fn names() -> Vec<&'static str> {
        image_classifiers()
            .map(|(architecture, _)| architecture.name)
            .collect()
    }

    /// Builds the classifier called `name` (a name or alias of [`ARCHITECTURES`]) with
    /// `num_classes` outputs, with its paper's normalizer or `norm` in its place.
    ///
    /// # Errors
    ///
    /// [`ModelError::UnknownModel`] for a name that is not an image classifier of the
    /// registry, and the architecture's own errors (e.g. a normalizer that does not apply).
    pub fn from_name(
        name: &str,
        num_classes: usize,
        norm: Option<NormConfig>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let classifier = find_architecture(name)
            .and_then(|architecture| architecture.classifier)
            .ok_or_else(|| ModelError::unknown_model(name, &Self::names()))?;
        let options = ModelOptions::new()
            .with_num_classes(num_classes)
            .with_norm(norm);
        (classifier.build)(&options, device)
    }
}

/// What [`create_model`] builds: timm's `create_model` arguments.
#[derive(Config, Debug)]
pub struct ModelOptions {
    /// The number of classes. Default: 1000.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// A normalizer in place of the model's own. Default: `None`, the model's.
    pub norm: Option<NormConfig>,
    /// ConvNeXt's stochastic-depth rate (of its last block). Default: `None`, the model's.
    pub drop_path_rate: Option<f64>,
    /// Start from torchvision's ImageNet weights, downloaded into torch's cache or found there
    /// (downloading needs the `download` feature). A class count other than 1000 keeps its own
    /// new classifier. Default: `false`.
    #[config(default = false)]
    pub pretrained: bool,
    /// Start from this torchvision checkpoint (`.pth` or `.safetensors`) instead: timm's
    /// `checkpoint_path`. Default: `None`.
    pub checkpoint: Option<PathBuf>,
}

/// The image classifier called `name` (a name or alias of [`ARCHITECTURES`]) built as
/// `options` say, as timm's `create_model`: `create_model("resnet50",
/// &ModelOptions::new().with_num_classes(10).with_pretrained(true), &device)` fine-tunes
/// torchvision's ImageNet ResNet50 for 10 classes.
///
/// # Errors
///
/// [`ModelError::UnknownModel`] for a name that is not an image classifier of the registry,
/// [`ModelError::InvalidConfig`] for `drop_path_rate` on a model without stochastic depth or
/// `pretrained` on one without ImageNet weights, [`ModelError::Checkpoint`] when the weights
/// cannot be downloaded, read or loaded (strictly: every tensor but a replaced classifier),
/// and the architecture's own errors.
pub fn create_model(
    name: &str,
    options: &ModelOptions,
    device: &Device,
) -> Result<ImageClassifier, ModelError> {
    let invalid = |message: String| ModelError::InvalidConfig {
        model: "create_model",
        message,
    };
    let (architecture, classifier) = find_architecture(name)
        .and_then(|architecture| Some((architecture, architecture.classifier?)))
        .ok_or_else(|| ModelError::unknown_model(name, &ImageClassifier::names()))?;
    let model = (classifier.build)(options, device)?;
    if options.drop_path_rate.is_some() && !matches!(model, ImageClassifier::ConvNext(_)) {
        return Err(invalid(format!(
            "drop_path_rate: {} has no stochastic depth (ConvNeXt has)",
            architecture.name
        )));
    }
    let checkpoint = match (&options.checkpoint, options.pretrained, classifier.imagenet) {
        (Some(path), _, _) => path.clone(),
        (None, true, Some(weights)) => crate::download_checkpoint(weights.url, None)?,
        (None, true, None) => {
            let with_weights: Vec<_> = image_classifiers()
                .filter(|(_, classifier)| classifier.imagenet.is_some())
                .map(|(architecture, _)| architecture.name)
                .collect();
            return Err(invalid(format!(
                "pretrained: {} has no ImageNet weights; these have: {}",
                architecture.name,
                with_weights.join(", ")
            )));
        }
        (None, false, _) => return Ok(model),
    };
    Ok(model.load_torchvision(checkpoint)?.0)
}

/// `config` with `options`' stochastic-depth rate, if they give one.
fn with_drop_path(config: ConvNextConfig, options: &ModelOptions) -> ConvNextConfig {
    match options.drop_path_rate {
        Some(rate) => config.with_drop_path_rate(rate),
        None => config,
    }
}

/// `config` with `norm` in place of its normalizer, if one is given.
fn swapped<C>(config: C, norm: Option<NormConfig>, with_norm: fn(C, NormConfig) -> C) -> C {
    match norm {
        Some(norm) => with_norm(config, norm),
        None => config,
    }
}

/// The registry's entry for a 224×224 classifier with torchvision's ImageNet weights at `$url`,
/// scored with the shorter side resized to `$resize` and the centre 224×224 crop (256 for
/// torchvision's ResNet and VGG weights), built by `$build`; `$published` is what torchvision
/// publishes for the weights: `[top-1, top-5, parameter count]`.
macro_rules! imagenet {
    (
        $name:literal, $description:expr, $url:expr, $resize:literal,
        [$top1:literal, $top5:literal, $params:literal], $build:expr
    ) => {
        Architecture {
            name: $name,
            aliases: &[],
            description: $description,
            classifier: Some(Classifier {
                image_size: 224,
                imagenet: Some(ImagenetWeights {
                    url: $url,
                    resize: $resize,
                    crop: 224,
                    top1: $top1,
                    top5: $top5,
                    num_params: $params,
                }),
                build: $build,
            }),
        }
    };
}

/// The registry's entry for a ConvNeXt in torchvision's layout with torchvision's ImageNet
/// weights at `$url`, scored with the shorter side resized to `$resize` and a 224×224 centre
/// crop, built by `$config` (a `ConvNextConfig` constructor taking the class count).
macro_rules! convnext {
    ($name:literal, $model:literal, $url:expr, $resize:literal, $config:path, $published:tt) => {
        imagenet!(
            $name,
            concat!(
                $model,
                ", torchvision's layout, 224×224, channels-first layer norm"
            ),
            $url,
            $resize,
            $published,
            |options, device| {
                let (classes, norm) = (options.num_classes, options.norm.clone());
                let config = swapped($config(classes), norm, ConvNextConfig::with_norm);
                let config = with_drop_path(config, options);
                Ok(ImageClassifier::ConvNext(config.init(device)?))
            }
        )
    };
}

/// The registry's entry for a VGG in torchvision's layout with torchvision's ImageNet weights at
/// `$url`, built by `$config` (a `VggConfig` constructor taking the class count), with batch
/// norm after every convolution (`bn`) or no normalizer.
macro_rules! vgg {
    ($name:literal, $model:literal, $url:expr, $config:path, $published:tt) => {
        vgg!(@ $name, concat!($model, ", torchvision's layout, 224×224, no normalization"), $url,
            $published, |classes| $config(classes))
    };
    (bn $name:literal, $model:literal, $url:expr, $config:path, $published:tt) => {
        vgg!(@ $name,
            concat!($model, ", torchvision's layout, 224×224, batch norm after every convolution"),
            $url, $published, |classes| $config(classes).with_norm(NormConfig::batch()))
    };
    (@ $name:literal, $description:expr, $url:expr, $published:tt, $config:expr) => {
        imagenet!($name, $description, $url, 256, $published, |options, device| {
            let (classes, norm) = (options.num_classes, options.norm.clone());
            let config: fn(usize) -> VggConfig = $config;
            let config = swapped(config(classes), norm, VggConfig::with_norm);
            Ok(ImageClassifier::Vgg(config.init(device)?))
        })
    };
}

/// The registry's entry for a ResNet built by `$config` (a `ResNetConfig` constructor taking
/// the class count): in torchvision's layout with torchvision's ImageNet weights at `$url`, or
/// (`cifar`) with the CIFAR stem.
macro_rules! resnet {
    (cifar $name:literal, $model:literal, $config:path) => {
        Architecture {
            name: $name,
            aliases: &[],
            description: concat!(
                $model,
                " with the CIFAR stem (3×3 convolution, no max-pool), 32×32, batch norm"
            ),
            classifier: Some(Classifier {
                image_size: 32,
                imagenet: None,
                build: |options, device| {
                    let (classes, norm) = (options.num_classes, options.norm.clone());
                    let config = $config(classes).with_stem(ResNetStem::Cifar);
                    let config = swapped(config, norm, ResNetConfig::with_norm);
                    Ok(ImageClassifier::ResNet(config.init(device)?))
                },
            }),
        }
    };
    ($name:literal, $model:literal, $url:expr, $config:path, $published:tt) => {
        imagenet!(
            $name,
            concat!($model, ", torchvision's layout, 224×224, batch norm"),
            $url,
            256,
            $published,
            |options, device| {
                let (classes, norm) = (options.num_classes, options.norm.clone());
                let config = swapped($config(classes), norm, ResNetConfig::with_norm);
                Ok(ImageClassifier::ResNet(config.init(device)?))
            }
        )
    };
}

/// Every model of the zoo.
pub const ARCHITECTURES: [Architecture; 29] = [
    Architecture {
        name: "mlp",
        aliases: &[],
        description: "multi-layer perceptron (MlpConfig), batch norm by default",
        classifier: None,
    },
    resnet!(
        "resnet18",
        "ResNet18",
        RESNET18_IMAGENET,
        ResNetConfig::resnet18,
        [69.758, 89.078, 11_689_512]
    ),
    resnet!(
        "resnet34",
        "ResNet34",
        RESNET34_IMAGENET,
        ResNetConfig::resnet34,
        [73.314, 91.420, 21_797_672]
    ),
    resnet!(
        "resnet50",
        "ResNet50 (bottlenecks)",
        RESNET50_IMAGENET,
        ResNetConfig::resnet50,
        [76.130, 92.862, 25_557_032]
    ),
    resnet!(
        "resnet101",
        "ResNet101 (bottlenecks)",
        RESNET101_IMAGENET,
        ResNetConfig::resnet101,
        [77.374, 93.546, 44_549_160]
    ),
    resnet!(
        "resnet152",
        "ResNet152 (bottlenecks)",
        RESNET152_IMAGENET,
        ResNetConfig::resnet152,
        [78.312, 94.046, 60_192_808]
    ),
    resnet!(cifar "resnet18-cifar", "ResNet18", ResNetConfig::resnet18),
    resnet!(cifar "resnet34-cifar", "ResNet34", ResNetConfig::resnet34),
    resnet!(cifar "resnet50-cifar", "ResNet50", ResNetConfig::resnet50),
    vgg!(
        "vgg11",
        "VGG11",
        VGG11_IMAGENET,
        VggConfig::vgg11,
        [69.020, 88.628, 132_863_336]
    ),
    vgg!(bn "vgg11-bn", "VGG11-BN", VGG11_BN_IMAGENET, VggConfig::vgg11,
        [70.370, 89.810, 132_868_840]),
    vgg!(
        "vgg13",
        "VGG13",
        VGG13_IMAGENET,
        VggConfig::vgg13,
        [69.928, 89.246, 133_047_848]
    ),
    vgg!(bn "vgg13-bn", "VGG13-BN", VGG13_BN_IMAGENET, VggConfig::vgg13,
        [71.586, 90.374, 133_053_736]),
    vgg!(
        "vgg16",
        "VGG16",
        VGG16_IMAGENET,
        VggConfig::vgg16,
        [71.592, 90.382, 138_357_544]
    ),
    vgg!(bn "vgg16-bn", "VGG16-BN", VGG16_BN_IMAGENET, VggConfig::vgg16,
        [73.360, 91.516, 138_365_992]),
    vgg!(
        "vgg19",
        "VGG19",
        VGG19_IMAGENET,
        VggConfig::vgg19,
        [72.376, 90.876, 143_667_240]
    ),
    vgg!(bn "vgg19-bn", "VGG19-BN", VGG19_BN_IMAGENET, VggConfig::vgg19,
        [74.218, 91.842, 143_678_248]),
    // Until the registry this name built the batch-norm model, now vgg16-bn-cifar: the CIFAR
    // names now mirror torchvision's `vgg16` and `vgg16_bn`.
    Architecture {
        name: "vgg16-cifar",
        aliases: &[],
        description: "VGG16 with a CIFAR head (512 → classes), 32×32, no normalization",
        classifier: Some(Classifier {
            image_size: 32,
            imagenet: None,
            build: |options, device| {
                let (classes, norm) = (options.num_classes, options.norm.clone());
                let config = VggConfig::vgg16_cifar(norm.unwrap_or(NormConfig::None), classes);
                Ok(ImageClassifier::Vgg(config.init(device)?))
            },
        }),
    },
    Architecture {
        name: "vgg16-bn-cifar",
        aliases: &[],
        description: "VGG16 with a CIFAR head, 32×32, batch norm after every convolution",
        classifier: Some(Classifier {
            image_size: 32,
            imagenet: None,
            build: |options, device| {
                let (classes, norm) = (options.num_classes, options.norm.clone());
                let norm = norm.unwrap_or_else(NormConfig::batch);
                Ok(ImageClassifier::Vgg(
                    VggConfig::vgg16_cifar(norm, classes).init(device)?,
                ))
            },
        }),
    },
    convnext!(
        "convnext-tiny",
        "ConvNeXt-T",
        CONVNEXT_TINY_IMAGENET,
        236,
        ConvNextConfig::tiny,
        [82.520, 96.146, 28_589_128]
    ),
    convnext!(
        "convnext-small",
        "ConvNeXt-S",
        CONVNEXT_SMALL_IMAGENET,
        230,
        ConvNextConfig::small,
        [83.616, 96.650, 50_223_688]
    ),
    convnext!(
        "convnext-base",
        "ConvNeXt-B",
        CONVNEXT_BASE_IMAGENET,
        232,
        ConvNextConfig::base,
        [84.062, 96.870, 88_591_464]
    ),
    convnext!(
        "convnext-large",
        "ConvNeXt-L",
        CONVNEXT_LARGE_IMAGENET,
        232,
        ConvNextConfig::large,
        [84.414, 96.976, 197_767_336]
    ),
    Architecture {
        name: "convnext-cifar",
        aliases: &[],
        description: "a small ConvNeXt for 32×32 (2×2 stem), channels-first layer norm",
        classifier: Some(Classifier {
            image_size: 32,
            imagenet: None,
            build: |options, device| {
                let (classes, norm) = (options.num_classes, options.norm.clone());
                let config = swapped(
                    ConvNextConfig::cifar(classes),
                    norm,
                    ConvNextConfig::with_norm,
                );
                let config = with_drop_path(config, options);
                Ok(ImageClassifier::ConvNext(config.init(device)?))
            },
        }),
    },
    Architecture {
        name: "transformer",
        aliases: &[],
        description: "Transformer encoder classifier and causal LM (TransformerConfig), layer \
                      norm by default",
        classifier: None,
    },
    Architecture {
        name: "lstm",
        aliases: &[],
        description: "plain LSTM (LstmConfig)",
        classifier: None,
    },
    Architecture {
        name: "ln-lstm",
        aliases: &[],
        description: "layer-normalized LSTM (LstmConfig::layer_normalized)",
        classifier: None,
    },
    Architecture {
        name: "unet",
        aliases: &[],
        description: "U-Net segmentation (UNetConfig), group norm by default",
        classifier: None,
    },
    Architecture {
        name: "cyclegan",
        aliases: &[],
        description: "CycleGAN ResNet generator (ResnetGeneratorConfig), instance norm by \
                      default",
        classifier: None,
    },
];

#[cfg(test)]
mod tests {
    use burn::tensor::Tensor;

    use super::*;
    use crate::common::cpu;
    use crate::num_trainable_params;

    #[test]
    fn every_name_and_alias_is_unique() {
        let mut names: Vec<String> = ARCHITECTURES
            .iter()
            .flat_map(|architecture| {
                std::iter::once(architecture.name).chain(architecture.aliases.iter().copied())
            })
            .map(str::to_ascii_lowercase)
            .collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn every_classifier_builds_for_its_image_size() {
        let device = cpu();
        // Narrow enough to build quickly: only the 32×32 ones run a forward pass.
        for (architecture, classifier) in image_classifiers() {
            if classifier.image_size != 32 {
                continue;
            }
            let model = ImageClassifier::from_name(architecture.name, 10, None, &device).unwrap();
            let images = Tensor::<4>::zeros([1, 3, 32, 32], &device);
            assert_eq!(
                model.forward(images).dims(),
                [1, 10],
                "{}",
                architecture.name
            );
        }
    }

    #[test]
    fn the_vgg_names_say_whether_there_is_a_normalizer() {
        let device = cpu();
        let has_norm = |name| {
            let ImageClassifier::Vgg(vgg) =
                ImageClassifier::from_name(name, 10, None, &device).unwrap()
            else {
                panic!("{name} built something else")
            };
            !matches!(vgg.stages[0][0].norm, normzoo_norm::Norm::Identity(_))
        };
        assert!(!has_norm("vgg16-cifar"));
        assert!(has_norm("vgg16-bn-cifar"));
    }

    #[test]
    fn a_swapped_normalizer_and_unknown_names() {
        let device = cpu();
        let swapped =
            ImageClassifier::from_name("ConvNeXt-CIFAR", 10, Some(NormConfig::group(8)), &device)
                .unwrap();
        let ImageClassifier::ConvNext(convnext) = &swapped else {
            panic!("convnext-cifar built something else")
        };
        assert!(matches!(convnext.stem_norm, normzoo_norm::Norm::Group(_)));
        assert_eq!(
            ImageClassifier::from_name("efficientnet-b0", 10, None, &device)
                .unwrap_err()
                .to_string(),
            "unknown model `efficientnet-b0`: expected one of resnet18, resnet34, resnet50, \
             resnet101, resnet152, resnet18-cifar, resnet34-cifar, resnet50-cifar, vgg11, \
             vgg11-bn, vgg13, vgg13-bn, vgg16, vgg16-bn, vgg19, vgg19-bn, vgg16-cifar, \
             vgg16-bn-cifar, convnext-tiny, convnext-small, convnext-base, convnext-large, \
             convnext-cifar"
        );
        assert!(ImageClassifier::from_name("unet", 10, None, &device).is_err());
    }

    #[test]
    fn a_misspelt_name_gets_the_closest_one_and_torchvisions_spellings_work() {
        let device = cpu();
        let err = ImageClassifier::from_name("resnt50", 10, None, &device).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown model `resnt50`: did you mean `resnet50`? expected one of"),
            "{err}"
        );
        let err = ImageClassifier::from_name("efficientnet", 10, None, &device).unwrap_err();
        assert!(!err.to_string().contains("did you mean"), "{err}");
        for (spelling, name) in [("vgg16_bn", "vgg16-bn"), ("ConvNeXt_Tiny", "convnext-tiny")] {
            assert_eq!(find_architecture(spelling).unwrap().name, name);
        }
    }

    #[test]
    fn create_model_sets_stochastic_depth_and_refuses_what_does_not_apply() {
        let device = cpu();
        let options = ModelOptions::new()
            .with_num_classes(10)
            .with_drop_path_rate(Some(0.3));
        let ImageClassifier::ConvNext(convnext) =
            create_model("convnext_cifar", &options, &device).unwrap()
        else {
            panic!("convnext-cifar built something else")
        };
        let last_block = convnext.stages.last().unwrap().last().unwrap();
        assert_eq!(last_block.drop_path.prob, 0.3);
        let err = create_model("resnet18-cifar", &options, &device).unwrap_err();
        assert_eq!(
            err.to_string(),
            "create_model: drop_path_rate: resnet18-cifar has no stochastic depth (ConvNeXt has)"
        );
        let pretrained = ModelOptions::new().with_pretrained(true);
        let err = create_model("vgg16-cifar", &pretrained, &device).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "create_model: pretrained: vgg16-cifar has no ImageNet weights; these have: \
                 resnet18, resnet34,"
            ),
            "{err}"
        );
    }

    /// A checkpoint saved from one model starts another built by name: the same weights, and
    /// its own classifier where the class count differs.
    #[test]
    fn create_model_starts_from_a_checkpoint() {
        let device = cpu();
        let dir = std::env::temp_dir().join(format!("normzoo-create-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resnet18-cifar.safetensors");
        let ImageClassifier::ResNet(saved) =
            ImageClassifier::from_name("resnet18-cifar", 10, None, &device).unwrap()
        else {
            panic!("resnet18-cifar built something else")
        };
        saved.save_torchvision(&path).unwrap();
        for classes in [10, 5] {
            let options = ModelOptions::new()
                .with_num_classes(classes)
                .with_checkpoint(Some(path.clone()));
            let ImageClassifier::ResNet(loaded) =
                create_model("resnet18-cifar", &options, &device).unwrap()
            else {
                panic!("resnet18-cifar built something else")
            };
            loaded
                .conv1
                .weight
                .val()
                .into_data()
                .assert_eq(&saved.conv1.weight.val().into_data(), true);
            assert_eq!(loaded.fc.weight.dims(), [512, classes]);
        }
        let options = ModelOptions::new().with_checkpoint(Some(dir.join("absent.pth")));
        let err = create_model("resnet18-cifar", &options, &device).unwrap_err();
        assert!(matches!(err, ModelError::Checkpoint(_)), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// torchvision's evaluation transform of each model's weights (`weights.transforms()`),
    /// and the ImageNet-size classifiers all have weights.
    #[test]
    fn imagenet_weights_carry_torchvisions_transforms() {
        for (name, resize) in [
            ("resnet152", 256),
            ("vgg11-bn", 256),
            ("convnext-tiny", 236),
            ("convnext-small", 230),
            ("convnext-large", 232),
        ] {
            let weights = find_architecture(name)
                .unwrap()
                .classifier
                .unwrap()
                .imagenet;
            let weights = weights.unwrap();
            assert_eq!((weights.resize, weights.crop), (resize, 224), "{name}");
            assert!(weights.url.ends_with(".pth"), "{name}");
        }
        for (architecture, classifier) in image_classifiers() {
            let has_weights = classifier.imagenet.is_some();
            assert_eq!(
                has_weights,
                classifier.image_size == 224,
                "{}",
                architecture.name
            );
        }
    }

    /// Each model with ImageNet weights has the parameter count torchvision publishes for them
    /// (`weights.meta["num_params"]`, the sum of `p.numel()` over `model.parameters()`), and
    /// published accuracies in range, top-5 above top-1.
    #[test]
    fn imagenet_models_have_torchvisions_parameter_counts() {
        let device = cpu().autodiff();
        let mut checked = 0;
        for (architecture, classifier) in image_classifiers() {
            let Some(weights) = classifier.imagenet else {
                continue;
            };
            let name = architecture.name;
            let model = create_model(name, &ModelOptions::new(), &device).unwrap();
            assert_eq!(num_trainable_params(&model), weights.num_params, "{name}");
            assert!(
                (50.0..weights.top5).contains(&weights.top1) && weights.top5 < 100.0,
                "{name}: {} / {}",
                weights.top1,
                weights.top5
            );
            checked += 1;
        }
        assert_eq!(checked, 17);
    }

    #[test]
    fn list_models_takes_timms_wildcards() {
        assert_eq!(
            list_models("resnet*").unwrap(),
            [
                "resnet18",
                "resnet34",
                "resnet50",
                "resnet101",
                "resnet152",
                "resnet18-cifar",
                "resnet34-cifar",
                "resnet50-cifar"
            ]
        );
        assert_eq!(
            list_models("VGG1?_BN").unwrap(),
            ["vgg11-bn", "vgg13-bn", "vgg16-bn", "vgg19-bn"]
        );
        assert_eq!(list_models("*").unwrap().len(), ARCHITECTURES.len());
        assert!(list_models("efficientnet*").unwrap().is_empty());
        let err = list_models("resnet[").unwrap_err().to_string();
        assert!(
            err.starts_with("list_models: `resnet[` is not a wildcard pattern"),
            "{err}"
        );
    }
}
