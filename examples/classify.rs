//! Classify images with torchvision's ImageNet weights in any model of the registry that has
//! them (ResNet18 … ResNet152, VGG11 … VGG19 with and without batch norm, ConvNeXt-T … L).
//!
//! ```sh
//! # torchvision's ResNet18 weights, downloaded once into torch's cache (shared with PyTorch).
//! cargo run --release --example classify -- cat.jpg
//! # Another model, a checkpoint already on disk, several images in one batch, on a GPU.
//! cargo run --release --features wgpu --example classify -- --model convnext-tiny \
//!     --weights convnext_tiny-983f1562.pth --device wgpu cat.jpg dog.png
//! ```
//!
//! Each image goes through the evaluation transform of the model's torchvision weights (shorter
//! side resized to 256, or 230 to 236 for ConvNeXt; centre crop 224; ImageNet's mean and standard
//! deviation), and the most probable of ImageNet's 1000 classes are printed with their softmax
//! probabilities.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::module::Module;
use burn::tensor::Tensor;
use clap::Parser;
use normzoo::backend::choose_device;
use normzoo::models::{ImageClassifier, TorchvisionWeights, checkpoint_path, imagenet_weights};
use normzoo::train::TrainError;
use normzoo::train::data::imagenet::{
    EvalTransform, imagenet_classes, imagenet_models_help, top_classes,
};
use normzoo::train::progress::exit_code;

/// Classify images with a torchvision ImageNet checkpoint.
#[derive(Parser, Debug)]
#[command(version, after_help = imagenet_models_help())]
struct Args {
    /// The images (JPEG or PNG), classified in one batch.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// The model, one of those listed below.
    #[arg(long, default_value = "resnet18")]
    model: String,
    /// The checkpoint (.pth or .safetensors), a path or an address [default: torchvision's
    /// ImageNet weights for the model, downloaded into torch's cache].
    #[arg(long)]
    weights: Option<String>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
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
    let chosen = choose_device(&args.device)?;
    println!("{chosen}");
    let device = chosen.device;
    let classes = imagenet_classes();
    // The images first: a typo should not wait for a download.
    let images = args
        .images
        .iter()
        .map(|image| transform.open(image, &device))
        .collect::<Result<Vec<_>, _>>()?;

    let source = args.weights.as_deref().unwrap_or(weights.url);
    let path = checkpoint_path(source).map_err(|err| invalid("--weights", err.to_string()))?;
    let model = ImageClassifier::from_name(&args.model, classes.len(), None, &device)?;
    let (model, report) = model
        .load_torchvision(&path)
        .map_err(|err| invalid("--weights", err.to_string()))?;
    if let Some((checkpoint, _)) = report.head_replaced {
        return Err(invalid(
            "--weights",
            format!(
                "{}: its classifier has {checkpoint} classes, not ImageNet's {}",
                path.display(),
                classes.len()
            ),
        ));
    }
    eprintln!("{}: {report}", path.display());

    let logits = model.valid().forward(Tensor::stack(images, 0));
    for (image, top) in args.images.iter().zip(top_classes(logits, args.top)) {
        println!("{} ({}):", image.display(), args.model);
        for (rank, (class, probability)) in top.into_iter().enumerate() {
            println!(
                "{:>3}. {:>6.2}%  {} ({class})",
                rank + 1,
                100.0 * probability,
                classes[class]
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    exit_code(run(Args::parse()))
}
