//! Train ResNet18 (or VGG16, VGG16-BN, ConvNeXt) on CIFAR-10 or Fashion-MNIST with any
//! normalizer. (The name is the one users know; the models are the CIFAR ones, 32×32 inputs,
//! and Fashion-MNIST's 28×28 grey images are centred on that input, see `ImageSpec`.)
//!
//! ```sh
//! # Offline, real images: Fashion-MNIST (`apt-get install dataset-fashion-mnist`), a subset.
//! cargo run --release --example resnet_cifar -- --dataset fashion-mnist --limit-train 6000 --epochs 3
//! # Offline quick start: the built-in synthetic CIFAR-shaped set, a subset, three epochs.
//! cargo run --release --example resnet_cifar -- --dataset synthetic --limit-train 2000 --limit-test 500 --epochs 3
//! # Real CIFAR-10: downloaded and cached when online, or a local copy with --data-dir.
//! cargo run --release --example resnet_cifar -- --norm group:32 --epochs 30
//! # On a GPU.
//! cargo run --release --features wgpu --example resnet_cifar -- --device wgpu
//! # Mixed precision: f16 forward and backward passes, f32 master weights, loss scaling.
//! cargo run --release --features wgpu --example resnet_cifar -- --precision f16
//! # Data-parallel on two GPUs (each step: a batch of 128 on each).
//! cargo run --release --features wgpu --example resnet_cifar -- --devices wgpu:0,wgpu:1
//! # Continue a run that was stopped, from its last checkpoint.
//! cargo run --release --example resnet_cifar -- --resume
//! ```
//!
//! The recipe: SGD with Nesterov momentum 0.9, weight decay 5e-4, a one-cycle learning rate
//! peaking at 0.1, batch 128, random crops (padding 4) and flips, CIFAR-10's per-channel
//! normalization (Fashion-MNIST: crops with padding 2, flips, its own mean and standard
//! deviation). burn-train shows loss, accuracy, learning rate and images/s as it trains,
//! validates on the test images after every epoch, and checkpoints every epoch into
//! `--artifact-dir`, with `metrics.csv`, `config.json`, the final `model.bpk` and `report.json`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use normzoo::backend::{choose_device, choose_devices};
use normzoo::models::checkpoint_path;
use normzoo::norm::NormConfig;
use normzoo::train::progress::exit_code;
use normzoo::train::{
    DatasetSource, EARLIER_MODEL_NAMES, Precision, Resume, RunConfig, RunOptions, Schedule,
    TrainError, cifar_models, train,
};

/// Train an image classifier on CIFAR-10 or Fashion-MNIST (or an offline synthetic stand-in)
/// with burn-train.
///
/// Every setting left out keeps the recipe's default, or, with --resume, the resumed run's.
#[derive(Parser, Debug)]
#[command(version, args_override_self = true, after_help = models_help())]
struct Args {
    /// The model, one of those listed below [default: resnet18-cifar].
    #[arg(long)]
    model: Option<String>,
    /// The normalizer in place of the model's own: none, batch, layer2d, group[:G], instance.
    #[arg(long)]
    norm: Option<NormConfig>,
    /// The backend: auto (a hardware GPU through wgpu where there is one, else flex), flex
    /// (CPU), ndarray (CPU) or wgpu (GPU, any adapter), if compiled in.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Train data-parallel on several devices of this machine, comma-separated: e.g.
    /// wgpu:0,wgpu:1 for wgpu's first two adapters, or flex,flex for two workers on the CPU
    /// (a GPU device may not come twice).
    /// Each step runs one batch of --batch-size on every device and sums the gradients on the
    /// first, which validates: n devices act as a batch n times larger at a learning rate n
    /// times higher. Each device's BatchNorm normalizes with its own batch's statistics.
    #[arg(long, conflicts_with = "device", value_name = "LIST")]
    devices: Option<String>,
    /// Epochs to train [default: 30].
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per batch [default: 128].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate [default: 0.1].
    #[arg(long)]
    lr: Option<f64>,
    /// SGD Nesterov momentum [default: 0.9].
    #[arg(long)]
    momentum: Option<f64>,
    /// L2 weight decay [default: 5e-4].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Learning-rate schedule [default: one-cycle].
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
    /// Seed of the weights, shuffling, augmentation and synthetic images [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// The images: cifar10 (downloaded when online, or --data-dir), fashion-mnist (--data-dir,
    /// else $NORMZOO_FASHION_MNIST_DIR, else Debian's dataset-fashion-mnist) or synthetic
    /// (generated) [default: cifar10].
    #[arg(long, value_enum)]
    dataset: Option<DatasetArg>,
    /// A local copy of the dataset: for CIFAR-10 the binary batches (data_batch_1.bin …
    /// test_batch.bin) or class folders (train/<class>/*.png, test/<class>/*.png); for
    /// Fashion-MNIST the four IDX files, gzipped or not.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Train on a seeded sample of this many images.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Evaluate on a seeded sample of this many test images.
    #[arg(long)]
    limit_test: Option<usize>,
    /// Threads preparing batches [default: 2].
    #[arg(long)]
    num_workers: Option<usize>,
    /// Where checkpoints, metrics and the final model go.
    #[arg(long, default_value = "runs/resnet_cifar")]
    artifact_dir: PathBuf,
    /// Continue the run in --artifact-dir from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Continue the run in --artifact-dir from the checkpoint of this epoch.
    #[arg(long, conflicts_with = "resume")]
    resume_epoch: Option<usize>,
    /// Start from a torchvision checkpoint (.pth or .safetensors): a path, or an address to
    /// download it from into torch's cache (e.g. ImageNet ResNet18's,
    /// https://download.pytorch.org/models/resnet18-f37072fd.pth). What fits is loaded; the
    /// CIFAR stem and the 10-class head stay initialised.
    #[arg(long)]
    pretrained: Option<String>,
    /// ResNet18's base width, the channels of its first stage [default: 64]. A narrower
    /// ResNet18 (16: 1/16 of the multiply-adds) trains far faster on a CPU.
    #[arg(long)]
    width: Option<usize>,
    /// Random training crops of the input zero-padded by this many pixels, 0 for none
    /// [default: the dataset's, 4 for CIFAR-10, 2 for Fashion-MNIST].
    #[arg(long)]
    crop_padding: Option<usize>,
    /// Mirror training images left to right half the time [default: true].
    #[arg(long = "flip")]
    horizontal_flip: Option<bool>,
    /// Erase a random rectangle (2–33% of the input, set to the mean) of each training image
    /// with this probability, as torchvision's RandomErasing(p) [default: 0, none].
    #[arg(long = "erase")]
    erase_probability: Option<f32>,
    /// The training steps' precision: f32, or f16/bf16 with f32 master weights, the
    /// normalizers in f32 and dynamic loss scaling (PyTorch's autocast with a GradScaler)
    /// [default: f32].
    #[arg(long)]
    precision: Option<Precision>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScheduleArg {
    OneCycle,
    Cosine,
    Constant,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DatasetArg {
    Cifar10,
    FashionMnist,
    Synthetic,
}

fn models_help() -> String {
    let mut help = String::from("Models:\n");
    for model in cifar_models() {
        help.push_str(&format!("  {:<15} {}\n", model.name, model.description));
    }
    help.push_str("Earlier names, still accepted:");
    for (earlier, now) in EARLIER_MODEL_NAMES {
        help.push_str(&format!(" {earlier} ({now})"));
    }
    help.push('\n');
    help
}

/// The configuration to run: the saved one when resuming, else the recipe, with every flag
/// given on top.
fn run_config(args: &Args, resume: Resume) -> Result<RunConfig, TrainError> {
    let mut config = match resume {
        Resume::Fresh => RunConfig::default(),
        Resume::Latest | Resume::Epoch(_) => RunConfig::load(&args.artifact_dir)?,
    };
    if let Some(model) = &args.model {
        config.model = model.clone();
    }
    if args.norm.is_some() {
        config.norm = args.norm.clone();
    }
    macro_rules! set {
        ($($field:ident),*) => {$(
            if let Some(value) = args.$field {
                config.$field = value;
            }
        )*};
    }
    set!(
        epochs,
        batch_size,
        lr,
        momentum,
        weight_decay,
        seed,
        num_workers,
        precision
    );
    macro_rules! set_some {
        ($($field:ident),*) => {$(
            if args.$field.is_some() {
                config.$field = args.$field;
            }
        )*};
    }
    set_some!(
        limit_train,
        limit_test,
        width,
        crop_padding,
        horizontal_flip,
        erase_probability
    );
    if let Some(pretrained) = &args.pretrained {
        let path = checkpoint_path(pretrained).map_err(|err| TrainError::InvalidConfig {
            setting: "--pretrained",
            message: err.to_string(),
        })?;
        config.pretrained = Some(path);
    }
    if let Some(schedule) = args.schedule {
        config.schedule = match schedule {
            ScheduleArg::OneCycle => Schedule::OneCycle,
            ScheduleArg::Cosine => Schedule::Cosine,
            ScheduleArg::Constant => Schedule::Constant,
        };
    }
    let dir = args.data_dir.clone();
    let saved = &config.dataset;
    config.dataset = match (args.dataset, dir) {
        (Some(DatasetArg::Synthetic), Some(_)) => {
            return Err(TrainError::InvalidConfig {
                setting: "--data-dir",
                message: "a dataset directory was given with --dataset synthetic; leave one out"
                    .into(),
            });
        }
        (Some(DatasetArg::Synthetic), None) => DatasetSource::Synthetic,
        (Some(DatasetArg::Cifar10), dir) => DatasetSource::Cifar10 { dir },
        (Some(DatasetArg::FashionMnist), dir) => DatasetSource::FashionMnist { dir },
        // A directory alone is for the dataset the run already has (CIFAR-10 by default).
        (None, Some(dir)) => match saved {
            DatasetSource::FashionMnist { .. } => DatasetSource::FashionMnist { dir: Some(dir) },
            _ => DatasetSource::Cifar10 { dir: Some(dir) },
        },
        (None, None) => saved.clone(),
    };
    Ok(config)
}

fn run(args: Args) -> Result<(), TrainError> {
    let (chosen, data_parallel) = match &args.devices {
        Some(list) => {
            let mut devices = choose_devices(list)?;
            let main = devices.remove(0);
            (main, devices)
        }
        None => (choose_device(&args.device)?, Vec::new()),
    };
    println!("{chosen}");
    for other in &data_parallel {
        println!("{other}");
    }
    let resume = match (args.resume, args.resume_epoch) {
        (_, Some(epoch)) => Resume::Epoch(epoch),
        (true, None) => Resume::Latest,
        (false, None) => Resume::Fresh,
    };
    let config = run_config(&args, resume)?;
    if config.precision != Precision::F32 {
        println!(
            "precision: {} forward and backward passes, f32 master weights and normalizers, \
             dynamic loss scaling",
            config.precision
        );
    }
    if !data_parallel.is_empty() {
        println!(
            "data-parallel on {} devices: each step runs a batch of {} on each",
            data_parallel.len() + 1,
            config.batch_size
        );
    }
    let backend = chosen.backend;
    let mut options = RunOptions::new(&args.artifact_dir, chosen.device);
    options.resume = resume;
    options.data_parallel = data_parallel.into_iter().map(|d| d.device).collect();

    let report = train(&config, &options)?;

    let dir = args.artifact_dir.display();
    if let (Some(path), Some(loaded)) = (&config.pretrained, &report.pretrained) {
        println!("Started from {}: {loaded}.", path.display());
    }
    if report.interrupted {
        println!(
            "Stopped after epoch {}. Continue with --resume --artifact-dir {dir}.",
            report.epochs_completed
        );
    }
    println!(
        "Test accuracy: {:.2}% on {} images, after {} epoch(s) of {} images ({:.0} s).",
        report.test_accuracy,
        report.test_images,
        report.epochs_completed,
        report.train_images,
        report.seconds
    );
    if let Some(training_mode) = report.test_accuracy_training_mode {
        println!(
            "In training mode (each test batch of {} normalized with its own statistics): \
             {training_mode:.2}%, a train/eval gap of {:+.2} points.",
            config.batch_size,
            training_mode - report.test_accuracy
        );
    }
    if let Some(rate) = report.train_images_per_second {
        let full_epoch = config.dataset.train_len();
        println!(
            "Training throughput: {rate:.1} images/s on {}; a full {} epoch ({full_epoch} \
             images) would take about {:.0} min.",
            backend,
            config.dataset.name(),
            full_epoch as f64 / rate / 60.0
        );
    }
    println!("Artifacts: {dir} (model.bpk, metrics.csv, config.json, checkpoint/, report.json)");
    Ok(())
}

fn main() -> ExitCode {
    exit_code(run(Args::parse()))
}
