//! A small causal Transformer learns two-digit addition written as text (`37+58=095`), with the
//! normalizer and its position of your choice.
//!
//! ```sh
//! cargo run --release --example transformer                        # pre-norm LayerNorm
//! cargo run --release --example transformer -- --norm rms
//! cargo run --release --example transformer -- --norm none --position post
//! cargo run --release --features wgpu --example transformer -- --precision f16  # mixed precision
//! ```
//!
//! Prints the loss as it trains, the fraction of 1,000 unseen problems answered right before and
//! after, and a few answers.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use normzoo::backend::choose_device;
use normzoo::models::{NormPosition, TransformerBlockConfig, TransformerConfig};
use normzoo::norm::NormConfig;
use normzoo::train::Precision;
use normzoo::train::progress::{LossWindow, exit_code};
use normzoo::train::sequence::{PROBLEM_LEN, SequenceModel, SequenceTraining, VOCAB};

/// Train a causal Transformer on two-digit addition.
#[derive(Parser, Debug)]
#[command(version, args_override_self = true)]
struct Args {
    /// The normalizer: layer, rms, batch, group:G or none.
    #[arg(long, default_value = "layer")]
    norm: NormConfig,
    /// Where the normalizer sits in each residual sub-layer.
    #[arg(long, value_enum, default_value = "pre")]
    position: Position,
    /// Model width.
    #[arg(long, default_value_t = 64)]
    d_model: usize,
    /// Blocks.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1500)]
    steps: usize,
    /// Problems per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Seed of the weights and the problems.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The backend: auto (a hardware GPU through wgpu where there is one, else flex), flex
    /// (CPU), ndarray (CPU) or wgpu (GPU, any adapter), if compiled in.
    #[arg(long, default_value = "auto")]
    device: String,
    /// The training steps' precision: f32, or f16/bf16 with f32 master weights, the
    /// normalizers in f32 and dynamic loss scaling (PyTorch's autocast with a GradScaler).
    #[arg(long, default_value = "f32")]
    precision: Precision,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Position {
    Pre,
    Post,
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let chosen = choose_device(&args.device)?;
    println!("{chosen}");
    args.precision.check(&chosen.device)?;
    let device = chosen.device.autodiff();
    device.seed(args.seed);
    let position = match args.position {
        Position::Pre => NormPosition::Pre,
        Position::Post => NormPosition::Post,
    };
    let block = TransformerBlockConfig::new(args.d_model, 4)
        .with_norm(args.norm.clone())
        .with_position(position);
    let model = TransformerConfig::new(VOCAB.len(), PROBLEM_LEN, block)
        .with_num_layers(args.layers)
        .init_causal_lm(&device)?;
    println!(
        "Transformer, {} blocks of width {}, {} {:?}-norm: learning two-digit addition",
        args.layers, args.d_model, args.norm, args.position
    );
    let training = SequenceTraining {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        precision: args.precision,
        ..Default::default()
    };
    let mut window = LossWindow::tenths(args.steps);
    let (model, report) = training.run(SequenceModel::Transformer(model), &device, |step, loss| {
        if let Some(mean) = window.push(step, loss) {
            println!("  step {step:>5}  answer loss {mean:.4}");
        }
    });
    println!(
        "Problems answered right: {:.1}% before training, {:.1}% after (1,000 unseen problems).",
        100.0 * report.initial_accuracy,
        100.0 * report.accuracy
    );
    let inner = device.inner();
    for (a, b) in [(37, 58), (99, 1), (12, 34), (85, 96)] {
        println!(
            "  {a:02}+{b:02}= {} (right: {:03})",
            model.solve(a, b, &inner),
            a + b
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    exit_code(run(Args::parse()))
}
