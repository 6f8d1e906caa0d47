//! Top-1 and top-5 accuracy of a model with torchvision's ImageNet weights over a class-folder
//! directory, as torchvision's reference scripts and timm's `validate.py` measure them.
//!
//! ```sh
//! # ImageNet-1k's validation set, one folder per class (n01440764/ … n15075141/), 50,000 images.
//! cargo run --release --example validate -- --model resnet50 /data/imagenet/val
//! # A checkpoint already on disk, larger batches, on a GPU.
//! cargo run --release --features wgpu --example validate -- --model convnext-tiny \
//!     --weights convnext_tiny-983f1562.pth --batch-size 128 --device wgpu /data/imagenet/val
//! ```
//!
//! The classes are the folders' names in sorted order (torchvision's `ImageFolder`), as many as
//! the checkpoint's classifier has; each image goes through the evaluation transform of the
//! model's weights (shorter side resized, centre crop, ImageNet's mean and standard deviation).
//! Images are read and transformed on every core while the model runs on the previous batch.
//! At the end it prints the accuracies beside torchvision's published ones, and the throughput.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Instant;

use burn::module::Module;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use normzoo::backend::choose_device;
use normzoo::models::{ImageClassifier, TorchvisionWeights, checkpoint_path, imagenet_weights};
use normzoo::train::TrainError;
use normzoo::train::data::ImageFolder;
use normzoo::train::data::imagenet::{EvalTransform, TopKAccuracy, imagenet_models_help};
use normzoo::train::progress::exit_code;

/// Top-1 and top-5 accuracy of ImageNet weights over a class-folder directory.
#[derive(Parser, Debug)]
#[command(version, after_help = imagenet_models_help())]
struct Args {
    /// The directory: one folder of PNG or JPEG images per class.
    dir: PathBuf,
    /// The model, one of those listed below.
    #[arg(long, default_value = "resnet18")]
    model: String,
    /// The checkpoint (.pth or .safetensors), a path or an address [default: torchvision's
    /// ImageNet weights for the model, downloaded into torch's cache].
    #[arg(long)]
    weights: Option<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// The backend: auto (a hardware GPU through wgpu where there is one, else flex), flex
    /// (CPU), ndarray (CPU) or wgpu (GPU, any adapter), if compiled in.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn run(args: Args) -> Result<(), TrainError> {
    let invalid =
        |setting: &'static str, message: String| TrainError::InvalidConfig { setting, message };
    let weights =
        imagenet_weights(&args.model).map_err(|err| invalid("--model", err.to_string()))?;
    let transform = EvalTransform::new(weights.resize, weights.crop)?;
    let folder = ImageFolder::open(&args.dir)?;
    let classes = folder.classes().len();
    let images = folder.images();
    print!(
        "{}: {} images in {classes} classes",
        args.dir.display(),
        images.len()
    );
    match folder.skipped() {
        0 => println!(),
        skipped => println!(" ({skipped} other files skipped)"),
    }
    let chosen = choose_device(&args.device)?;
    println!("{chosen}");
    let device = chosen.device;

    let source = args.weights.as_deref().unwrap_or(weights.url);
    let path = checkpoint_path(source).map_err(|err| invalid("--weights", err.to_string()))?;
    let model = ImageClassifier::from_name(&args.model, classes, None, &device)?;
    let (model, report) = model
        .load_torchvision(&path)
        .map_err(|err| invalid("--weights", err.to_string()))?;
    if let Some((checkpoint, _)) = report.head_replaced {
        return Err(invalid(
            "--weights",
            format!(
                "{}: its classifier has {checkpoint} classes, but {} has {classes} class folders",
                path.display(),
                args.dir.display()
            ),
        ));
    }
    eprintln!("{}: {report}", path.display());
    let model = model.valid();

    let bar = ProgressBar::new(images.len() as u64).with_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images, {per_sec}, {eta} left, top-1 {msg}",
        )
        .expect("a valid template"),
    );
    let mut accuracy = TopKAccuracy::new(5);
    let start = Instant::now();
    // Reading and transforming the next batches on rayon's threads while the model runs.
    let batches = images.chunks(args.batch_size as usize);
    let reader_device = &device;
    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::sync_channel(2);
        scope.spawn(move || {
            for batch in batches {
                let paths: Vec<&Path> = batch.iter().map(|(path, _)| path.as_path()).collect();
                let labels: Vec<usize> = batch.iter().map(|&(_, label)| label).collect();
                let inputs = transform.open_batch(&paths, reader_device);
                if sender.send(inputs.map(|inputs| (inputs, labels))).is_err() {
                    break; // the model stopped on an error
                }
            }
        });
        for batch in receiver {
            let (inputs, labels) = batch?;
            accuracy.update(model.forward(inputs), &labels);
            bar.inc(labels.len() as u64);
            bar.set_message(format!("{:.3}%", accuracy.accuracy(1)));
        }
        Ok::<_, TrainError>(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();

    println!(
        "{}: top-1 {:.3}%, top-5 {:.3}% over {} images",
        args.model,
        accuracy.accuracy(1),
        accuracy.accuracy(5),
        accuracy.count()
    );
    println!(
        "torchvision publishes top-1 {:.3}%, top-5 {:.3}% on ImageNet-1k's 50,000 validation \
         images",
        weights.top1, weights.top5
    );
    println!(
        "{:.1} images/s ({} images in {seconds:.2} s, batch {}, reading and transforming \
         included)",
        accuracy.count() as f64 / seconds,
        accuracy.count(),
        args.batch_size
    );
    Ok(())
}

fn main() -> ExitCode {
    exit_code(run(Args::parse()))
}
