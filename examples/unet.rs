//! A U-Net learns to segment generated shapes (circles, squares, triangles in random colours on
//! a textured background) and saves its masks as a PNG.
//!
//! ```sh
//! cargo run --release --example unet                      # GroupNorm (the default)
//! cargo run --release --example unet -- --norm batch --out masks-bn.png
//! cargo run --release --features wgpu --example unet -- --precision f16   # mixed precision
//! ```
//!
//! Prints the loss as it trains, the pixel accuracy and the IoU of each class on 64 unseen
//! images before and after, and writes `unet-masks.png`: image, true mask, predicted mask.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use normzoo::backend::choose_device;
use normzoo::models::UNetConfig;
use normzoo::norm::NormConfig;
use normzoo::train::Precision;
use normzoo::train::progress::{LossWindow, exit_code};
use normzoo::train::shapes::{SHAPE_CLASSES, ShapeTraining, save_segmentations};

/// Train a U-Net to segment generated shapes.
#[derive(Parser, Debug)]
#[command(version, args_override_self = true)]
struct Args {
    /// The normalizer: group:G, batch, instance, layer2d or none.
    #[arg(long, default_value = "group:8")]
    norm: NormConfig,
    /// Channels of the first level (doubled at each level down).
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// Levels (poolings).
    #[arg(long, default_value_t = 3)]
    depth: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1200)]
    steps: usize,
    /// Images per step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Seed of the weights and the images.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the picture of the masks goes.
    #[arg(long, default_value = "unet-masks.png")]
    out: PathBuf,
    /// The backend: auto (a hardware GPU through wgpu where there is one, else flex), flex
    /// (CPU), ndarray (CPU) or wgpu (GPU, any adapter), if compiled in.
    #[arg(long, default_value = "auto")]
    device: String,
    /// The training steps' precision: f32, or f16/bf16 with f32 master weights, the
    /// normalizers in f32 and dynamic loss scaling (PyTorch's autocast with a GradScaler).
    #[arg(long, default_value = "f32")]
    precision: Precision,
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let chosen = choose_device(&args.device)?;
    println!("{chosen}");
    args.precision.check(&chosen.device)?;
    let device = chosen.device.autodiff();
    device.seed(args.seed);
    let model = UNetConfig::new()
        .with_num_classes(SHAPE_CLASSES.len())
        .with_base_width(args.width)
        .with_depth(args.depth)
        .with_norm(args.norm.clone())
        .init(&device)?;
    println!(
        "U-Net (width {}, depth {}, norm `{}`): segmenting {}",
        args.width,
        args.depth,
        args.norm,
        SHAPE_CLASSES[1..].join(", ")
    );
    let training = ShapeTraining {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        precision: args.precision,
        ..Default::default()
    };
    let mut window = LossWindow::tenths(args.steps);
    let (model, report) = training.run(model, &device, |step, loss| {
        if let Some(mean) = window.push(step, loss) {
            println!("  step {step:>5}  pixel loss {mean:.4}");
        }
    });
    println!(
        "On {} unseen images: pixel accuracy {:.1}% (before training {:.1}%), mean IoU {:.3} \
         (before {:.3})",
        training.test_images,
        100.0 * report.trained.pixel_accuracy,
        100.0 * report.initial.pixel_accuracy,
        report.trained.mean_iou(),
        report.initial.mean_iou()
    );
    for (class, iou) in SHAPE_CLASSES.iter().zip(&report.trained.iou) {
        println!("  IoU {class:<10} {iou:.3}");
    }
    let (images, masks) = training.test_set(&device.inner());
    let rows = 6.min(training.test_images);
    save_segmentations(
        &args.out,
        &model,
        images.narrow(0, 0, rows),
        masks.narrow(0, 0, rows),
        4,
    )?;
    println!(
        "Saved {}: image, true mask, predicted mask.",
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    exit_code(run(Args::parse()))
}
