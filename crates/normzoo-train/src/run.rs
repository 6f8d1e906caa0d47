//! One run of the CIFAR-10 recipe: data, model, burn-train's learner, artifacts and resuming.
//!
//! An artifact directory holds:
//!
//! | file | what |
//! |---|---|
//! | `config.json` | the [`RunConfig`] |
//! | `checkpoint/{model,optim,scheduler}-N.bpk` | the state after epoch `N` (the last two epochs) |
//! | `metrics.csv` | every metric per epoch and split (`epoch,split,metric,value`) |
//! | `train/`, `valid/`, `experiment.log` | burn-train's own logs |
//! | `model.bpk` | the final model (a [`Classifier`] record) |
//! | `report.json` | the [`RunReport`] |

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::optim::OptimizerRecord;
use burn::optim::lr_scheduler::LrSchedulerRecord;
use burn::store::ModuleRecord;
use burn::tensor::Device;
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::logger::FileMetricLogger;
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric};
use burn::train::{ExecutionStrategy, Interrupter, Learner, MultiDeviceOptim, SupervisedTraining};
use serde::{Deserialize, Serialize};

use normzoo_models::{ImageClassifier, LoadReport, TorchvisionWeights};

use crate::TrainError;
use crate::classifier::Classifier;
use crate::data::{
    CifarDataset, DataError, FashionMnist, ImageBatcher, ImageDataset, ImageSpec, Split,
    SyntheticCifar, download_cifar10,
};
use crate::error::io_error;
use crate::log_lines::LineRenderer;
use crate::metrics::{CsvMetricLogger, ImagesPerSecondMetric, read_metrics_csv};
use crate::precision::MixedPrecision;
use crate::recipe::{DatasetSource, RunConfig, cifar_model};

/// The run's settings, beside its checkpoints.
pub const CONFIG_FILE: &str = "config.json";
/// Every metric per epoch.
pub const METRICS_FILE: &str = "metrics.csv";
/// The final model.
pub const MODEL_FILE: &str = "model.bpk";
/// The final results.
pub const REPORT_FILE: &str = "report.json";
/// burn-train's checkpoint directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// Where a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// From scratch, into an artifact directory that holds no run.
    Fresh,
    /// From the newest checkpoint of the run in the artifact directory (from scratch when it
    /// was stopped before its first epoch ended).
    Latest,
    /// From the checkpoint of this epoch.
    Epoch(usize),
}

/// How to run, beside what to run ([`RunConfig`]).
#[derive(Clone)]
pub struct RunOptions {
    /// Where checkpoints, metrics and the final model go.
    pub artifact_dir: PathBuf,
    /// The device to train on (its autodiff version is used for training).
    pub device: Device,
    /// Where to start.
    pub resume: Resume,
    /// Stops training early when triggered (burn-train's terminal UI triggers it on `q`); the
    /// epoch in progress is then lost and `--resume` continues from the last checkpoint.
    pub interrupter: Interrupter,
    /// More devices to train on beside `device`, data-parallel (burn-train's multi-device
    /// strategy, `ExecutionStrategy::MultiDevice` with the optimizer on `device`; a name may
    /// repeat, e.g. two workers on one CPU): each device takes an equal share of every epoch's
    /// images, in batches of the config's `batch_size`, and a step runs one batch on every
    /// device and *sums* their gradients on `device`, which steps the optimizer and validates.
    ///
    /// With `n` devices a step therefore sees `n` batches and takes `n` times the mean
    /// gradient of those `n·batch_size` images, and an epoch has `n` times fewer steps: for
    /// SGD that is the linear scaling rule (batch `n` times larger, learning rate `n` times
    /// higher) with the config unchanged, except that weight decay, added once per step, is
    /// not scaled; Adam and AdamW are nearly indifferent to the sum. Each device's batch
    /// normalizes with its own statistics (no synchronized batch norm), and BatchNorm's
    /// running statistics move by the mean of the devices' batch statistics at every step.
    /// The devices must be on one machine: burn 0.22 has no multi-machine training.
    ///
    /// Empty (the default): `device` alone.
    pub data_parallel: Vec<Device>,
}

impl RunOptions {
    /// A fresh run into `artifact_dir` on `device`.
    pub fn new(artifact_dir: impl Into<PathBuf>, device: Device) -> Self {
        Self {
            artifact_dir: artifact_dir.into(),
            device,
            resume: Resume::Fresh,
            interrupter: Interrupter::new(),
            data_parallel: Vec::new(),
        }
    }
}

/// What a run did; saved as `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The epoch the run resumed after, if it resumed.
    pub resumed_after_epoch: Option<usize>,
    /// The last epoch completed (and checkpointed).
    pub epochs_completed: usize,
    /// Whether training stopped before its last epoch.
    pub interrupted: bool,
    /// Training images per epoch.
    pub train_images: usize,
    /// Test images evaluated.
    pub test_images: usize,
    /// Top-1 accuracy of the final model on the test images, in percent.
    pub test_accuracy: f64,
    /// The same in training mode: every normalizer normalizing each batch of `batch_size` test
    /// images with that batch's statistics (PyTorch: scoring without `model.eval()`). Minus
    /// [`test_accuracy`](Self::test_accuracy) it is the train/eval gap of normalizers with
    /// running statistics; for those without, the two are the same computation.
    #[serde(default)]
    pub test_accuracy_training_mode: Option<f64>,
    /// Training throughput of the last epoch, images per second (from `metrics.csv`).
    pub train_images_per_second: Option<f64>,
    /// Wall-clock seconds this process spent training and evaluating.
    pub seconds: f64,
    /// What the run took from its `pretrained` checkpoint.
    #[serde(default)]
    pub pretrained: Option<String>,
}

impl RunConfig {
    /// The configuration saved in `artifact_dir`.
    ///
    /// # Errors
    ///
    /// [`TrainError::NothingToResume`] when there is none or it cannot be read.
    pub fn load(artifact_dir: &Path) -> Result<Self, TrainError> {
        let path = artifact_dir.join(CONFIG_FILE);
        let nothing = |missing: String| TrainError::NothingToResume {
            dir: artifact_dir.into(),
            missing,
        };
        let text = fs::read_to_string(&path)
            .map_err(|err| nothing(format!("cannot read {CONFIG_FILE}: {err}")))?;
        serde_json::from_str(&text)
            .map_err(|err| nothing(format!("{CONFIG_FILE} is not a run configuration: {err}")))
    }
}

/// Trains `config` as `options` say: builds the data and the model, resumes from a checkpoint
/// if asked, runs burn-train's learner (terminal UI, per-epoch validation on the test images,
/// a checkpoint after every epoch), then saves the final model and reports its test accuracy.
///
/// Everything that could be wrong is checked before any file is written: the settings, the
/// artifact directory (a fresh run never writes into another run's directory), the data and
/// the checkpoint to resume from.
///
/// # Errors
///
/// Any [`TrainError`]; each says what to do.
pub fn train(config: &RunConfig, options: &RunOptions) -> Result<RunReport, TrainError> {
    config.validate()?;
    let dir = &options.artifact_dir;
    let resume_epoch = prepare_artifacts(config, options)?;
    // The model lives on the autodiff device (burn-train trains there and validates on the
    // inner one); the batches are made on the inner device.
    let device = match options.device.is_autodiff() {
        true => options.device.clone().inner(),
        false => options.device.clone(),
    };
    device.seed(config.seed);
    for device in std::iter::once(&device).chain(&options.data_parallel) {
        config.precision.check(device)?;
    }
    let model = config.build_model(&device.clone().autodiff())?;
    let (model, pretrained) = match (&config.pretrained, resume_epoch) {
        (Some(path), None) => {
            let (model, report) = load_pretrained(model, path, &config.model)?;
            (model, Some(report.to_string()))
        }
        _ => (model, None),
    };
    let model = Classifier::new(model).with_mixed_precision(MixedPrecision::new(config.precision));
    let (train_set, test_set) = load_datasets(config)?;
    let (train_images, test_images) = (train_set.len(), test_set.len());
    if let Some(epoch) = resume_epoch {
        check_checkpoint(dir, epoch, &model)?;
    }
    // Every device takes `⌊images / devices⌋` images, the last one the rest too; a step runs
    // one batch on each.
    let devices = 1 + options.data_parallel.len();
    let last_share = train_images - (devices - 1) * (train_images / devices);
    let steps_per_epoch = last_share.div_ceil(config.batch_size);
    let learner = Learner::new(
        model,
        config.optimizer(),
        config.lr_scheduler(config.epochs * steps_per_epoch)?,
    );

    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let config_text = serde_json::to_string_pretty(config).expect("a config serializes");
    write_atomically(&dir.join(CONFIG_FILE), config_text.as_bytes())?;
    let csv = CsvMetricLogger::append(dir.join(METRICS_FILE))
        .map_err(io_error(dir.join(METRICS_FILE)))?;

    let train_spec = ImageSpec {
        augmentation: config.augmentation(train_set.spec().augmentation),
        ..train_set.spec()
    };
    let loader_train = DataLoaderBuilder::new(ImageBatcher::train(train_spec, config.seed))
        .batch_size(config.batch_size)
        .shuffle(config.seed ^ resume_epoch.unwrap_or(0) as u64)
        .num_workers(config.num_workers)
        .set_device(device.clone())
        .build(train_set);
    let loader_test = DataLoaderBuilder::new(ImageBatcher::eval(test_set.spec()))
        .batch_size(config.batch_size)
        .num_workers(config.num_workers)
        .set_device(device.clone())
        .build(test_set.clone());

    let mut training = SupervisedTraining::new(dir, loader_train, loader_test)
        .num_epochs(config.epochs)
        .with_default_checkpointers()
        .with_checkpointing_strategy(KeepLastNCheckpoints::new(2))
        .with_metric_logger(FileMetricLogger::new(dir))
        .with_metric_logger(csv)
        .with_interrupter(options.interrupter.clone())
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_train_numeric(AccuracyMetric::new())
        .metric_valid_numeric(AccuracyMetric::new())
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train_numeric(ImagesPerSecondMetric::new())
        .summary();
    if let Some(epoch) = resume_epoch {
        training = training.checkpoint(epoch);
    }
    if !options.data_parallel.is_empty() {
        // burn-train trains on each device's autodiff form.
        let devices = std::iter::once(&device)
            .chain(&options.data_parallel)
            .cloned()
            .collect();
        let strategy = ExecutionStrategy::MultiDevice(devices, MultiDeviceOptim::OptimMainDevice);
        training = training.with_training_strategy(strategy.into());
    }
    // burn-train's terminal UI on a terminal; readable lines in a log.
    if !std::io::stdout().is_terminal() {
        training = training.renderer(Box::new(LineRenderer::new()));
    }

    let start = Instant::now();
    let result = training.launch(learner);
    // Closes the terminal UI before anything else is printed.
    drop(result.renderer);
    if let Some(error) = result.error {
        return Err(TrainError::Training(error.to_string()));
    }
    let interrupted = result.interrupted.is_some();
    let epochs_completed = last_checkpoint(dir).unwrap_or(0);

    let model = result.model;
    if !interrupted {
        let bytes =
            model.clone().into_record().into_bytes().map_err(|err| {
                TrainError::Training(format!("cannot serialize the model: {err}"))
            })?;
        write_atomically(&dir.join(MODEL_FILE), &bytes)?;
    }
    let test_accuracy = evaluate(&model, test_set.clone(), config.batch_size, &device)?;
    // Updates the running statistics the model shares with its clones: after it was saved.
    let test_accuracy_training_mode =
        evaluate_in_training_mode(&model, test_set, config.batch_size, &device)?;

    let train_images_per_second = read_metrics_csv(&dir.join(METRICS_FILE))
        .ok()
        .and_then(|rows| {
            rows.iter()
                .rev()
                .find(|row| row.split == "train" && row.metric == "Throughput")
                .map(|row| row.value)
        });
    let report = RunReport {
        resumed_after_epoch: resume_epoch,
        epochs_completed,
        interrupted,
        train_images,
        test_images,
        test_accuracy,
        test_accuracy_training_mode: Some(test_accuracy_training_mode),
        train_images_per_second,
        seconds: start.elapsed().as_secs_f64(),
        pretrained,
    };
    let report_text = serde_json::to_string_pretty(&report).expect("a report serializes");
    write_atomically(&dir.join(REPORT_FILE), report_text.as_bytes())?;
    Ok(report)
}

/// `model` with what fits of the torchvision checkpoint at `path`; an error when no convolution
/// or linear weight does (a batch count or a bias alone can fit by chance).
fn load_pretrained(
    model: ImageClassifier,
    path: &Path,
    name: &str,
) -> Result<(ImageClassifier, LoadReport), TrainError> {
    let invalid = |message: String| TrainError::InvalidConfig {
        setting: "--pretrained",
        message,
    };
    let (model, report) = model
        .load_torchvision_partial(path)
        .map_err(|err| invalid(err.to_string()))?;
    // Under our names only convolutions and linear layers have a `weight` (normalizers' is `gamma`).
    if !report
        .loaded
        .iter()
        .any(|loaded| loaded.ends_with(".weight"))
    {
        return Err(invalid(format!(
            "{}: nothing in it fits {name} (no convolution or linear weight): {report}",
            path.display()
        )));
    }
    Ok((model, report))
}

/// Top-1 accuracy in percent of `model` on `dataset`, in evaluation mode.
///
/// # Errors
///
/// [`TrainError::Training`] when a batch cannot be read.
pub fn evaluate(
    model: &Classifier,
    dataset: ImageDataset,
    batch_size: usize,
    device: &Device,
) -> Result<f64, TrainError> {
    accuracy(model.clone().valid(), dataset, batch_size, device)
}

/// Top-1 accuracy in percent of `model` on `dataset` in training mode: batches of `batch_size`,
/// each normalized with its own statistics by the normalizers that otherwise use running
/// statistics (PyTorch: scoring a model left in `.train()`). `device` is the plain device; the
/// forward passes run on its autodiff version, and no gradient is taken.
///
/// Those running statistics are updated as in training, and `model` shares them with its
/// clones: score a copy whose statistics no longer matter.
///
/// # Errors
///
/// [`TrainError::Training`] when a batch cannot be read.
pub fn evaluate_in_training_mode(
    model: &Classifier,
    dataset: ImageDataset,
    batch_size: usize,
    device: &Device,
) -> Result<f64, TrainError> {
    let autodiff = device.clone().autodiff();
    accuracy(model.clone().train(), dataset, batch_size, &autodiff)
}

/// Top-1 accuracy in percent of `model` on `dataset`, batches made on `device`.
fn accuracy(
    model: Classifier,
    dataset: ImageDataset,
    batch_size: usize,
    device: &Device,
) -> Result<f64, TrainError> {
    let total = dataset.len();
    let loader = DataLoaderBuilder::new(ImageBatcher::eval(dataset.spec()))
        .batch_size(batch_size)
        .set_device(device.clone())
        .build(dataset);
    let mut correct = 0;
    for batch in loader.iter() {
        correct += model.correct(batch.map_err(|err| TrainError::Training(err.to_string()))?);
    }
    Ok(100.0 * correct as f64 / total.max(1) as f64)
}

/// Checks the artifact directory against the resume mode; returns the epoch to resume after.
fn prepare_artifacts(
    config: &RunConfig,
    options: &RunOptions,
) -> Result<Option<usize>, TrainError> {
    let dir = &options.artifact_dir;
    let has_run = dir.join(CONFIG_FILE).exists() || dir.join(CHECKPOINT_DIR).exists();
    match options.resume {
        Resume::Fresh if has_run => Err(TrainError::ArtifactsExist { dir: dir.clone() }),
        Resume::Fresh => Ok(None),
        Resume::Latest | Resume::Epoch(_) => {
            let saved = RunConfig::load(dir)?;
            check_same_run(&saved, config)?;
            match options.resume {
                Resume::Epoch(epoch) => {
                    if !checkpoint_epochs(dir).contains(&epoch) {
                        return Err(TrainError::NothingToResume {
                            dir: dir.clone(),
                            missing: format!(
                                "no checkpoint of epoch {epoch} (there are: {:?})",
                                checkpoint_epochs(dir)
                            ),
                        });
                    }
                    Ok(Some(epoch))
                }
                _ => Ok(last_checkpoint(dir)),
            }
        }
    }
}

/// A resumed run may change how long it trains and how it loads data, nothing that would
/// change what the checkpoints mean.
fn check_same_run(saved: &RunConfig, given: &RunConfig) -> Result<(), TrainError> {
    let mismatch = |setting, saved: String, given: String| {
        (saved != given).then_some(TrainError::ConfigMismatch {
            setting,
            saved,
            given,
        })
    };
    let show_norm = |norm: &Option<normzoo_norm::NormConfig>| match norm {
        Some(norm) => norm.to_string(),
        None => "the model's own".into(),
    };
    let debug = |value: &dyn std::fmt::Debug| format!("{value:?}");
    // The registry's name, so that an earlier name for the same model is no mismatch.
    let model_name =
        |name: &str| cifar_model(name).map_or(name.to_string(), |model| model.name.into());
    let checks = [
        mismatch(
            "--model",
            model_name(&saved.model),
            model_name(&given.model),
        ),
        mismatch("--norm", show_norm(&saved.norm), show_norm(&given.norm)),
        mismatch("--dataset", debug(&saved.dataset), debug(&given.dataset)),
        mismatch(
            "--batch-size",
            saved.batch_size.to_string(),
            given.batch_size.to_string(),
        ),
        mismatch("--lr", saved.lr.to_string(), given.lr.to_string()),
        mismatch(
            "--weight-decay",
            saved.weight_decay.to_string(),
            given.weight_decay.to_string(),
        ),
        mismatch("--schedule", debug(&saved.schedule), debug(&given.schedule)),
        mismatch("--seed", saved.seed.to_string(), given.seed.to_string()),
        mismatch("--width", debug(&saved.width), debug(&given.width)),
        mismatch(
            "--crop-padding",
            debug(&saved.crop_padding),
            debug(&given.crop_padding),
        ),
        mismatch(
            "--flip",
            debug(&saved.horizontal_flip),
            debug(&given.horizontal_flip),
        ),
        mismatch(
            "--erase",
            debug(&saved.erase_probability),
            debug(&given.erase_probability),
        ),
        mismatch(
            "--limit-train",
            debug(&saved.limit_train),
            debug(&given.limit_train),
        ),
    ];
    match checks.into_iter().flatten().next() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The epochs with a model checkpoint, ascending.
fn checkpoint_epochs(dir: &Path) -> Vec<usize> {
    let Ok(entries) = fs::read_dir(dir.join(CHECKPOINT_DIR)) else {
        return Vec::new();
    };
    let mut epochs: Vec<usize> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("model-")?
                .strip_suffix(".bpk")?
                .parse()
                .ok()
        })
        .collect();
    epochs.sort_unstable();
    epochs
}

fn last_checkpoint(dir: &Path) -> Option<usize> {
    checkpoint_epochs(dir).last().copied()
}

/// Reads the model, optimizer and scheduler checkpoints of `epoch` and fits the model's into
/// `model`: burn-train would panic on any of them, so they are checked first.
fn check_checkpoint(dir: &Path, epoch: usize, model: &Classifier) -> Result<(), TrainError> {
    let readable = |epoch: usize| -> Result<(), (PathBuf, String)> {
        let path = |name: &str| dir.join(CHECKPOINT_DIR).join(format!("{name}-{epoch}.bpk"));
        let model_path = path("model");
        let record =
            ModuleRecord::load(&model_path).map_err(|err| (model_path.clone(), err.to_string()))?;
        model
            .clone()
            .try_load_record(record)
            .map_err(|err| (model_path, format!("it does not fit the model: {err}")))?;
        let optim_path = path("optim");
        OptimizerRecord::load(&optim_path).map_err(|err| (optim_path, err.to_string()))?;
        let scheduler_path = path("scheduler");
        LrSchedulerRecord::load(&scheduler_path)
            .map_err(|err| (scheduler_path, err.to_string()))?;
        Ok(())
    };
    readable(epoch).map_err(|(path, reason)| TrainError::CorruptCheckpoint {
        path,
        reason,
        intact_epoch: checkpoint_epochs(dir)
            .into_iter()
            .rev()
            .filter(|&earlier| earlier < epoch)
            .find(|&earlier| readable(earlier).is_ok()),
    })
}

/// The training and test images of `config`, sampled down to its limits.
fn load_datasets(config: &RunConfig) -> Result<(ImageDataset, ImageDataset), TrainError> {
    let (train, test): (ImageDataset, ImageDataset) = match &config.dataset {
        DatasetSource::Synthetic => (
            SyntheticCifar::new(CifarDataset::LEN[0], config.seed).into(),
            SyntheticCifar::new(CifarDataset::LEN[1], !config.seed).into(),
        ),
        DatasetSource::FashionMnist { dir } => (
            FashionMnist::new(Split::Train, dir.as_deref())?.into(),
            FashionMnist::new(Split::Test, dir.as_deref())?.into(),
        ),
        DatasetSource::Cifar10 { dir: Some(dir) } => (
            CifarDataset::from_dir(dir, Split::Train)?.into(),
            CifarDataset::from_dir(dir, Split::Test)?.into(),
        ),
        DatasetSource::Cifar10 { dir: None } => {
            let dir = download_cifar10()?;
            let train = CifarDataset::from_dir(&dir, Split::Train)?;
            let test = CifarDataset::from_dir(&dir, Split::Test)?;
            for (found, expected) in [train.len(), test.len()].into_iter().zip(CifarDataset::LEN) {
                if found != expected {
                    return Err(DataError::Incomplete {
                        path: dir,
                        expected,
                        found,
                    }
                    .into());
                }
            }
            (train.into(), test.into())
        }
    };
    let limit = |dataset: ImageDataset, limit: Option<usize>, seed: u64| match limit {
        Some(len) => dataset.sample(len, seed),
        None => dataset,
    };
    Ok((
        limit(train, config.limit_train, config.seed),
        limit(test, config.limit_test, !config.seed),
    ))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`: a crash
/// leaves either the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let partial = path.with_extension("partial");
    fs::write(&partial, bytes).map_err(io_error(&partial))?;
    fs::rename(&partial, path).map_err(io_error(path))
}
