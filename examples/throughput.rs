//! An image classifier's training and inference speed (ResNet18-CIFAR unless `--model` names
//! another), in images per second, on each backend named.
//!
//! ```sh
//! cargo run --release --example throughput
//! cargo run --release --example throughput -- --model vgg16-bn-cifar
//! cargo run --release --features wgpu --example throughput -- --devices flex,wgpu
//! cargo run --release --features wgpu --example throughput -- --devices wgpu --precision f16
//! ```
//!
//! Training is one SGD step (momentum 0.9) of cross-entropy on random 32×32 images, timed
//! after warm-up steps that let the backend compile and cache its kernels; inference is the
//! evaluation-mode forward pass (`model.valid()`). Each device's work is waited for before the
//! clock stops. Peak memory is the process's peak resident set (Linux only), reset before each
//! device, so for a GPU backend it is host memory only. `benches/pytorch_norms.py --model NAME`
//! measures the same network in PyTorch (`benches/cifar_models.py` defines the CIFAR ones).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{SgdConfig, momentum::MomentumConfig};
use burn::tensor::{Device, Distribution, FloatDType, Int, Tensor};
use clap::Parser;
use normzoo::backend::device;
use normzoo::models::{ImageClassifier, ModelError, ModelOptions, create_model, find_architecture};
use normzoo::norm::{NormConfig, cast_outside_normalizers};
use normzoo::train::{MixedPrecision, Precision, gradients};

// Large tensors make the system allocator return every buffer to the OS and fault it back
// in on the next op; `--features mimalloc` measures with a caching allocator instead.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure an image classifier's training and inference throughput on 32×32 images.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Backends to measure, comma-separated: flex, ndarray, wgpu (those compiled in).
    #[arg(long, value_delimiter = ',', default_value = "flex")]
    devices: Vec<String>,
    /// The network, by its registered name: resnet18-cifar, vgg16-bn-cifar, convnext-cifar, …
    #[arg(long, default_value = "resnet18-cifar")]
    model: String,
    /// A normalizer in place of the model's own: batch, group[:G], layer2d, instance, none.
    #[arg(long)]
    norm: Option<NormConfig>,
    /// Images per training step.
    #[arg(long, default_value_t = 64)]
    train_batch: usize,
    /// Images per inference batch.
    #[arg(long, default_value_t = 256)]
    infer_batch: usize,
    /// Untimed steps first (kernel compilation, autotuning, allocator warm-up).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// The precision of the training steps and of inference: f32, or f16/bf16 (training with
    /// f32 master weights, the normalizers in f32 and dynamic loss scaling).
    #[arg(long, default_value = "f32")]
    precision: Precision,
}

/// One device's measurements.
struct Throughput {
    train: f64,
    infer: f64,
    peak_memory_mb: Option<f64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.steps == 0 || args.train_batch == 0 || args.infer_batch == 0 {
        eprintln!("error: --steps, --train-batch and --infer-batch must be at least 1");
        return ExitCode::FAILURE;
    }
    let Some(architecture) = find_architecture(&args.model).filter(|a| a.classifier.is_some())
    else {
        let known = ImageClassifier::names();
        eprintln!("error: {}", ModelError::unknown_model(&args.model, &known));
        return ExitCode::FAILURE;
    };
    println!(
        "{} ({}, {}), training batch {}, inference batch {}, {} timed steps after {} warm-up, {} allocator",
        architecture.name,
        args.norm
            .as_ref()
            .map_or_else(|| "its own normalizer".into(), ToString::to_string),
        args.precision,
        args.train_batch,
        args.infer_batch,
        args.steps,
        args.warmup,
        if cfg!(feature = "mimalloc") {
            "mimalloc"
        } else {
            "system"
        },
    );
    println!("| device | train images/s | inference images/s | peak memory (MB) |");
    println!("|---|---|---|---|");
    for name in &args.devices {
        let device = match device(name) {
            Ok(device) => device,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        };
        match measure(&args, &device) {
            Ok(result) => println!(
                "| {name} | {:.1} | {:.1} | {} |",
                result.train,
                result.infer,
                result
                    .peak_memory_mb
                    .map_or_else(|| "n/a".into(), |mb| format!("{mb:.0}"))
            ),
            Err(err) => {
                eprintln!("error: {name}: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn measure(args: &Args, device: &Device) -> Result<Throughput, String> {
    args.precision
        .check(device)
        .map_err(|err| err.to_string())?;
    let mixed = MixedPrecision::new(args.precision);
    let dtype = args.precision.float_dtype();
    reset_peak_memory();
    let autodiff = device.clone().autodiff();
    device.seed(42);
    let options = ModelOptions::new()
        .with_num_classes(10)
        .with_norm(args.norm.clone());
    let mut model =
        create_model(&args.model, &options, &autodiff).map_err(|err| err.to_string())?;
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
        .init();
    let loss = CrossEntropyLossConfig::new().init(&autodiff);
    let images = Tensor::<4>::random(
        [args.train_batch, 3, 32, 32],
        Distribution::Normal(0.0, 1.0),
        &autodiff,
    );
    let labels =
        Tensor::<1, Int>::arange(0..args.train_batch as i64, &autodiff).remainder_scalar(10);

    let mut train_time = Duration::ZERO;
    for step in 0..args.warmup + args.steps {
        let start = Instant::now();
        let images = images.clone().cast(dtype);
        let (grads, ()) = gradients(mixed.as_ref(), &model, |model| {
            let logits = model.forward(images).cast(FloatDType::F32);
            (loss.forward(logits, labels.clone()), ())
        });
        model = optim.step(0.01, model, grads);
        device.sync().map_err(|err| format!("{err:?}"))?;
        if step >= args.warmup {
            train_time += start.elapsed();
        }
    }

    let model = cast_outside_normalizers(model.valid(), dtype);
    let images = Tensor::<4>::random(
        [args.infer_batch, 3, 32, 32],
        Distribution::Normal(0.0, 1.0),
        device,
    )
    .cast(dtype);
    let mut infer_time = Duration::ZERO;
    for step in 0..args.warmup + args.steps {
        let start = Instant::now();
        let logits = model.forward(images.clone());
        device.sync().map_err(|err| format!("{err:?}"))?;
        drop(logits);
        if step >= args.warmup {
            infer_time += start.elapsed();
        }
    }

    let images_per_second =
        |batch: usize, time: Duration| (batch * args.steps) as f64 / time.as_secs_f64();
    Ok(Throughput {
        train: images_per_second(args.train_batch, train_time),
        infer: images_per_second(args.infer_batch, infer_time),
        peak_memory_mb: peak_memory_mb(),
    })
}

/// Resets the kernel's record of this process's peak resident set (Linux; elsewhere a no-op).
fn reset_peak_memory() {
    // Writing 5 to clear_refs resets VmHWM (proc(5)); failure only leaves the peak unreset.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak resident set since the last reset, from `/proc/self/status` (Linux).
fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
