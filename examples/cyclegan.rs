//! CycleGAN learns to translate between two generated image domains from unpaired examples:
//! bright "day" scenes of shapes and dark "night" scenes (every value inverted). It never sees one scene in
//! both styles; because the scenes are generated, we can, and measure how close its
//! translations come to the true night scenes. Saves the translations as a PNG.
//!
//! ```sh
//! cargo run --release --example cyclegan                          # BatchNorm
//! cargo run --release --example cyclegan -- --norm instance --out cyclegan-in.png
//! cargo run --release --features wgpu --example cyclegan -- --precision f16  # mixed precision
//! ```
//!
//! The default normalizer is BatchNorm, not the paper's InstanceNorm: this translation must carry
//! each scene's overall colour across, and InstanceNorm removes exactly that (every channel's
//! mean and scale, per image) in the generator's first layer. Run both and compare the errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use normzoo::backend::choose_device;
use normzoo::models::{PatchDiscriminatorConfig, ResnetGeneratorConfig};
use normzoo::norm::NormConfig;
use normzoo::train::Precision;
use normzoo::train::progress::{LossWindow, exit_code};
use normzoo::train::translation::{Critics, CycleGan, CycleGanTraining, save_translations};

/// Train CycleGAN between two generated image domains.
#[derive(Parser, Debug)]
#[command(version, args_override_self = true)]
struct Args {
    /// The normalizer of the generators and discriminators: batch, instance (the paper's),
    /// group:G or none.
    #[arg(long, default_value = "batch")]
    norm: NormConfig,
    /// Filters of the generators' first convolution.
    #[arg(long, default_value_t = 16)]
    ngf: usize,
    /// Residual blocks in each generator.
    #[arg(long, default_value_t = 3)]
    blocks: usize,
    /// Filters of the discriminators' first convolution.
    #[arg(long, default_value_t = 16)]
    ndf: usize,
    /// Steps (one generator and one discriminator update each).
    #[arg(long, default_value_t = 400)]
    steps: usize,
    /// Images of each domain per step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Adam's learning rate (β₁ = 0.5).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Seed of the weights and the scenes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the picture of the translations goes.
    #[arg(long, default_value = "cyclegan-translations.png")]
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
    let generator = || {
        ResnetGeneratorConfig::new()
            .with_ngf(args.ngf)
            .with_n_blocks(args.blocks)
            .with_norm(args.norm.clone())
            .init(&device)
    };
    let critic = || {
        PatchDiscriminatorConfig::new()
            .with_ndf(args.ndf)
            .with_n_layers(2)
            .with_norm(args.norm.clone())
            .init(&device)
    };
    let gan = CycleGan {
        a_to_b: generator()?,
        b_to_a: generator()?,
    };
    let critics = Critics {
        a: critic()?,
        b: critic()?,
    };
    println!(
        "CycleGAN (generators ngf {} with {} blocks, PatchGAN ndf {}, norm `{}`): day ↔ night",
        args.ngf, args.blocks, args.ndf, args.norm
    );
    let training = CycleGanTraining {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        precision: args.precision,
        ..Default::default()
    };
    let (mut generators, mut critics_window) = (
        LossWindow::tenths(args.steps),
        LossWindow::tenths(args.steps),
    );
    let (gan, report) = training.run(gan, critics, &device, |step, generator, critic| {
        if let (Some(generator), Some(critic)) = (
            generators.push(step, generator),
            critics_window.push(step, critic),
        ) {
            println!("  step {step:>5}  generators {generator:.4}  discriminators {critic:.4}");
        }
    });
    println!(
        "Day → night error on {} unseen scenes (mean absolute pixel error, 0–1): {:.3} after \
         training, {:.3} before; the average night scene scores {:.3}, the unchanged day \
         scene {:.3}.",
        training.test_images,
        report.error,
        report.initial_error,
        report.average_error,
        report.unchanged_error
    );
    println!(
        "Round trip day → night → day error: {:.3} after training, {:.3} before.",
        report.cycle_error, report.initial_cycle_error
    );
    let (days, nights) = training.test_set(&device.inner());
    let rows = 6.min(training.test_images);
    save_translations(
        &args.out,
        &gan,
        days.narrow(0, 0, rows),
        nights.narrow(0, 0, rows),
        4,
    )?;
    println!(
        "Saved {}: day, day → night, true night, night → day.",
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    exit_code(run(Args::parse()))
}
