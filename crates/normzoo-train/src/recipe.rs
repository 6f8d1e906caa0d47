//! The CIFAR-10 training recipe: every setting of a run, and the optimizer and learning-rate
//! schedule they make.

use std::path::PathBuf;

use burn::optim::lr_scheduler::LrSchedulerConfig;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, SgdConfig, decay::WeightDecayConfig};
use burn::tensor::Device;
use normzoo_models::{Architecture, ImageClassifier, ModelError, ResNetConfig, image_classifiers};
use normzoo_norm::NormConfig;
use serde::{Deserialize, Serialize};

use crate::data::{Augmentation, CifarDataset, FashionMnist};
use crate::{Precision, TrainError};

/// The most padding `--crop-padding` takes: a quarter of the 32-pixel input on every side.
const MAX_CROP_PADDING: usize = 8;

/// The height and width of the models' input: CIFAR-10's images (Fashion-MNIST's 28×28 are
/// padded to it).
const INPUT_SIZE: usize = 32;

/// `--model`'s names from before the registry, each with the model it meant, kept so that
/// earlier commands and saved runs work. In the registry `resnet18`, `vgg16` and `vgg16-bn`
/// are the 224×224 ImageNet models.
pub const EARLIER_MODEL_NAMES: [(&str, &str); 4] = [
    ("resnet18", "resnet18-cifar"),
    ("vgg16", "vgg16-cifar"),
    ("vgg16-bn", "vgg16-bn-cifar"),
    ("convnext", "convnext-cifar"),
];

/// The models a run trains: the registry's image classifiers for 32×32 images.
pub fn cifar_models() -> impl Iterator<Item = &'static Architecture> {
    image_classifiers()
        .filter(|(_, classifier)| classifier.image_size == INPUT_SIZE)
        .map(|(architecture, _)| architecture)
}

/// The model `name` means in a run: one of [`cifar_models`] by its name or an alias, or an
/// earlier name ([`EARLIER_MODEL_NAMES`]).
///
/// # Errors
///
/// [`ModelError::UnknownModel`] listing the models a run trains.
pub fn cifar_model(name: &str) -> Result<&'static Architecture, ModelError> {
    let meant = EARLIER_MODEL_NAMES
        .iter()
        .find(|(earlier, _)| earlier.eq_ignore_ascii_case(name.trim()))
        .map_or(name, |(_, now)| now);
    cifar_models()
        .find(|architecture| architecture.is_called(meant))
        .ok_or_else(|| {
            let names: Vec<_> = cifar_models()
                .map(|architecture| architecture.name)
                .collect();
            ModelError::unknown_model(name, &names)
        })
}

/// The ResNet whose base width `--width` sets.
const WIDTH_MODEL: &str = "resnet18-cifar";

/// The learning-rate schedule, stepped after every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// One cycle: a linear warm-up from `lr / 10` to `lr` over the first 15% of the steps, then a
    /// cosine decay to zero (as PyTorch's `OneCycleLR` with `anneal_strategy="cos"`, in two
    /// phases).
    OneCycle,
    /// A cosine decay from `lr` to zero over the run (PyTorch's `CosineAnnealingLR`).
    Cosine,
    /// The same `lr` throughout.
    Constant,
}

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetSource {
    /// CIFAR-10: the copy in `dir` (either layout), or burn-dataset's download cache.
    Cifar10 {
        /// A local copy; `None` for the download cache.
        dir: Option<PathBuf>,
    },
    /// [`FashionMnist`]: the IDX files in `dir`, or where [`FashionMnist::locate`] looks (the
    /// directory in `NORMZOO_FASHION_MNIST_DIR`, else Debian's `dataset-fashion-mnist`).
    FashionMnist {
        /// A directory holding the IDX files; `None` to look in the usual places.
        dir: Option<PathBuf>,
    },
    /// [`SyntheticCifar`](crate::data::SyntheticCifar): 50,000 training and 10,000 test images
    /// generated from the run's seed.
    Synthetic,
}

impl DatasetSource {
    /// The images in the whole training split.
    pub fn train_len(&self) -> usize {
        match self {
            Self::Cifar10 { .. } | Self::Synthetic => CifarDataset::LEN[0],
            Self::FashionMnist { .. } => FashionMnist::LEN[0],
        }
    }

    /// The dataset's name, as `--dataset` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cifar10 { .. } => "cifar10",
            Self::FashionMnist { .. } => "fashion-mnist",
            Self::Synthetic => "synthetic",
        }
    }
}

/// Every setting of a training run; saved as `config.json` beside the checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The model, as [`cifar_model`] reads it: a 32×32 classifier of the registry, or an
    /// earlier name for one.
    pub model: String,
    /// The normalizer in place of the model's own; `None` keeps the model's.
    pub norm: Option<NormConfig>,
    /// Where the images come from.
    pub dataset: DatasetSource,
    /// Epochs to train.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// The peak learning rate.
    pub lr: f64,
    /// The SGD momentum (Nesterov).
    pub momentum: f64,
    /// The L2 penalty added to every gradient (PyTorch SGD's `weight_decay`).
    pub weight_decay: f64,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// The seed of the weights, the shuffling, the augmentation and the synthetic images.
    pub seed: u64,
    /// Train on this many images only (a seeded sample of the training set).
    pub limit_train: Option<usize>,
    /// Evaluate on this many images only (a seeded sample of the test set).
    pub limit_test: Option<usize>,
    /// Threads preparing batches.
    pub num_workers: usize,
    /// A torchvision checkpoint to start from, loaded partially: what does not fit (the CIFAR
    /// stem, the 10-class head) stays initialised. Ignored when resuming.
    #[serde(default)]
    pub pretrained: Option<PathBuf>,
    /// ResNet18's base width: the channels of its first stage, doubled at each of the next
    /// three (64 in the standard model). `None` for the standard model; ResNet18 only.
    #[serde(default)]
    pub width: Option<usize>,
    /// Random training crops of the input zero-padded by this many pixels, in place of the
    /// dataset's own (4 for CIFAR-10, 2 for Fashion-MNIST); 0 for none. `None` keeps the
    /// dataset's.
    #[serde(default)]
    pub crop_padding: Option<usize>,
    /// Whether training images are mirrored left to right half the time, in place of the
    /// dataset's choice (yes for every dataset). `None` keeps the dataset's.
    #[serde(default)]
    pub horizontal_flip: Option<bool>,
    /// The probability of erasing a random rectangle of each training image (torchvision's
    /// `RandomErasing(p)` after `Normalize`), in place of the dataset's (0, none, for every
    /// dataset). `None` keeps the dataset's.
    #[serde(default)]
    pub erase_probability: Option<f32>,
    /// The precision of the training steps' forward and backward passes: f16 or bf16 train
    /// with f32 master weights, the normalizers in f32 and dynamic loss scaling
    /// ([`MixedPrecision`](crate::MixedPrecision)); evaluation is in f32. A resumed run may
    /// change it; the loss scale then starts again at 2¹⁶.
    #[serde(default)]
    pub precision: Precision,
}

impl Default for RunConfig {
    /// The standard recipe: ResNet18 with batch norm, 30 epochs of SGD with Nesterov momentum
    /// 0.9, batch 128, peak learning rate 0.1 on a one-cycle schedule, weight decay 5e-4.
    fn default() -> Self {
        Self {
            model: WIDTH_MODEL.into(),
            norm: None,
            dataset: DatasetSource::Cifar10 { dir: None },
            epochs: 30,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: Schedule::OneCycle,
            seed: 42,
            limit_train: None,
            limit_test: None,
            num_workers: 2,
            pretrained: None,
            width: None,
            crop_padding: None,
            horizontal_flip: None,
            erase_probability: None,
            precision: Precision::F32,
        }
    }
}

impl RunConfig {
    /// Checks every setting is in range.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] naming the setting, and [`TrainError::Model`] for an
    /// unknown model name.
    pub fn validate(&self) -> Result<(), TrainError> {
        let invalid =
            |setting, message: String| Err(TrainError::InvalidConfig { setting, message });
        let model = cifar_model(&self.model)?;
        if self.epochs == 0 {
            return invalid("--epochs", "expected at least 1, got 0".into());
        }
        if self.batch_size == 0 {
            return invalid("--batch-size", "expected at least 1, got 0".into());
        }
        if !(self.lr > 0.0 && self.lr <= 1.0) {
            return invalid(
                "--lr",
                format!("expected a value in (0, 1], got {}", self.lr),
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return invalid(
                "--momentum",
                format!("expected a value in [0, 1), got {}", self.momentum),
            );
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return invalid(
                "--weight-decay",
                format!("expected a value ≥ 0, got {}", self.weight_decay),
            );
        }
        if let Some(width) = self.width {
            if model.name != WIDTH_MODEL {
                return invalid(
                    "--width",
                    format!("applies to {WIDTH_MODEL} only, got --model {}", self.model),
                );
            }
            if width == 0 {
                return invalid("--width", "expected at least 1 channel, got 0".into());
            }
        }
        if let Some(padding) = self
            .crop_padding
            .filter(|&padding| padding > MAX_CROP_PADDING)
        {
            return invalid(
                "--crop-padding",
                format!("expected at most {MAX_CROP_PADDING} pixels, got {padding}"),
            );
        }
        if let Some(probability) = self
            .erase_probability
            .filter(|probability| !(0.0..=1.0).contains(probability))
        {
            return invalid(
                "--erase",
                format!("expected a probability in [0, 1], got {probability}"),
            );
        }
        for (setting, limit) in [
            ("--limit-train", self.limit_train),
            ("--limit-test", self.limit_test),
        ] {
            if limit == Some(0) {
                return invalid(setting, "expected at least 1 image, got 0".into());
            }
        }
        Ok(())
    }

    /// The network `model` names, with `norm` in place of its normalizer, for 10 classes.
    ///
    /// # Errors
    ///
    /// An unknown name, or a normalizer the architecture cannot take.
    pub fn build_model(&self, device: &Device) -> Result<ImageClassifier, ModelError> {
        let model = cifar_model(&self.model)?;
        match self.width {
            Some(width) if model.name == WIDTH_MODEL => {
                let config = ResNetConfig::resnet18_cifar(10).with_width(width);
                let config = match self.norm.clone() {
                    Some(norm) => config.with_norm(norm),
                    None => config,
                };
                Ok(ImageClassifier::ResNet(config.init(device)?))
            }
            Some(_) => Err(ModelError::InvalidConfig {
                model: "ImageClassifier",
                message: format!("a width applies to {WIDTH_MODEL} only, got {}", self.model),
            }),
            None => ImageClassifier::from_name(model.name, 10, self.norm.clone(), device),
        }
    }

    /// What training does to each image: the dataset's `own` augmentation, with this run's
    /// crop padding, flip and erasing in place of the dataset's where given.
    pub fn augmentation(&self, own: Augmentation) -> Augmentation {
        Augmentation {
            crop_padding: self.crop_padding.unwrap_or(own.crop_padding),
            horizontal_flip: self.horizontal_flip.unwrap_or(own.horizontal_flip),
            erase_probability: self.erase_probability.unwrap_or(own.erase_probability),
        }
    }

    /// SGD with Nesterov momentum (no dampening, as PyTorch's `SGD(nesterov=True)`) and weight
    /// decay.
    pub fn optimizer(&self) -> ModuleOptimizer {
        let momentum = MomentumConfig::new()
            .with_momentum(self.momentum)
            .with_dampening(0.0)
            .with_nesterov(self.momentum > 0.0);
        let mut config = SgdConfig::new().with_momentum(Some(momentum));
        if self.weight_decay > 0.0 {
            config =
                config.with_weight_decay(Some(WeightDecayConfig::new(self.weight_decay as f32)));
        }
        config.init()
    }

    /// The learning-rate schedule over `total_steps` batches.
    ///
    /// # Errors
    ///
    /// burn's message for a schedule it refuses (it should not, after
    /// [`validate`](Self::validate)).
    pub fn lr_scheduler(&self, total_steps: usize) -> Result<ModuleLrScheduler, TrainError> {
        let total_steps = total_steps.max(2);
        let refused = |message: String| TrainError::InvalidConfig {
            setting: "--lr",
            message,
        };
        let cosine = |steps| CosineAnnealingLrSchedulerConfig::new(self.lr, steps);
        match self.schedule {
            Schedule::Constant => Ok(ConstantLr::new(self.lr).into()),
            Schedule::Cosine => cosine(total_steps).init().map_err(refused),
            Schedule::OneCycle => {
                let warmup = (total_steps * 15 / 100).max(1);
                SequentialLrSchedulerConfig::new(
                    vec![
                        LrSchedulerConfig::Linear(LinearLrSchedulerConfig::new(
                            self.lr / 10.0,
                            self.lr,
                            warmup,
                        )),
                        LrSchedulerConfig::Cosine(cosine(total_steps - warmup)),
                    ],
                    vec![warmup],
                )
                .init()
                .map_err(refused)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use normzoo_models::num_trainable_params;

    use super::*;

    #[test]
    fn a_run_trains_the_registrys_32x32_classifiers_by_their_names_or_earlier_ones() {
        let names: Vec<_> = cifar_models().map(|model| model.name).collect();
        assert_eq!(
            names,
            [
                "resnet18-cifar",
                "resnet34-cifar",
                "resnet50-cifar",
                "vgg16-cifar",
                "vgg16-bn-cifar",
                "convnext-cifar"
            ]
        );
        for (earlier, now) in EARLIER_MODEL_NAMES {
            assert_eq!(cifar_model(earlier).unwrap().name, now);
            assert_eq!(cifar_model(now).unwrap().name, now);
        }
        assert_eq!(
            cifar_model("convnext-tiny").unwrap_err().to_string(),
            "unknown model `convnext-tiny`: did you mean `convnext-cifar`? expected one of \
             resnet18-cifar, resnet34-cifar, resnet50-cifar, vgg16-cifar, vgg16-bn-cifar, \
             convnext-cifar"
        );
    }

    #[test]
    fn the_augmentation_flags_replace_only_what_they_name() {
        let own = Augmentation {
            crop_padding: 2,
            horizontal_flip: true,
            erase_probability: 0.5,
        };
        let mut config = RunConfig::default();
        assert_eq!(config.augmentation(own), own);
        config.crop_padding = Some(0);
        assert_eq!(config.augmentation(own).crop_padding, 0);
        assert!(config.augmentation(own).horizontal_flip);
        config.horizontal_flip = Some(false);
        assert_eq!(config.augmentation(own).erase_probability, 0.5);
        config.erase_probability = Some(0.0);
        assert_eq!(config.augmentation(own), Augmentation::NONE);
    }

    #[test]
    fn a_width_builds_a_narrower_resnet18_and_nothing_else() {
        let device = Device::default();
        let config = RunConfig {
            width: Some(8),
            ..Default::default()
        };
        config.validate().unwrap();
        let built = match config.build_model(&device).unwrap() {
            ImageClassifier::ResNet(network) => network,
            other => panic!("expected a ResNet, got {other:?}"),
        };
        let expected = ResNetConfig::resnet18_cifar(10)
            .with_width(8)
            .init(&device)
            .unwrap();
        assert_eq!(
            num_trainable_params(&built),
            num_trainable_params(&expected)
        );

        let vgg = RunConfig {
            model: "vgg16".into(),
            ..config
        };
        assert!(vgg.validate().is_err());
        assert!(vgg.build_model(&device).is_err());
    }
}
