//! A plain LSTM and a layer-normalized LSTM (or any normalizers you name) learn the same
//! sequence task side by side: two-digit addition written as text (`37+58=095`), read one token
//! at a time.
//!
//! ```sh
//! cargo run --release --example lstm                       # none vs layer
//! cargo run --release --example lstm -- --norms none,layer,rms --steps 3000
//! cargo run --release --features wgpu --example lstm -- --precision f16      # mixed precision
//! ```
//!
//! Prints the loss curves side by side, then the fraction of 1,000 unseen problems each answers
//! right.

use std::process::ExitCode;

use clap::Parser;
use normzoo::backend::choose_device;
use normzoo::models::LstmConfig;
use normzoo::norm::NormConfig;
use normzoo::train::Precision;
use normzoo::train::progress::{LossWindow, exit_code};
use normzoo::train::sequence::{LstmLm, SequenceModel, SequenceReport, SequenceTraining};

/// Train LSTM language models with different normalizers on two-digit addition.
#[derive(Parser, Debug)]
#[command(version, args_override_self = true)]
struct Args {
    /// The normalizers to compare, comma-separated: none, layer, rms, batch, group:G.
    #[arg(long, value_delimiter = ',', default_value = "none,layer")]
    norms: Vec<NormConfig>,
    /// Hidden size.
    #[arg(long, default_value_t = 128)]
    hidden: usize,
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

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let chosen = choose_device(&args.device)?;
    println!("{chosen}");
    args.precision.check(&chosen.device)?;
    let device = chosen.device.autodiff();
    let training = SequenceTraining {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        precision: args.precision,
        ..Default::default()
    };
    let mut reports: Vec<(NormConfig, SequenceReport)> = Vec::new();
    for norm in &args.norms {
        device.seed(args.seed);
        let lstm = LstmConfig::new(32, args.hidden).with_norm(norm.clone());
        let model = SequenceModel::Lstm(LstmLm::new(&lstm, &device)?);
        println!(
            "Training the LSTM with norm `{norm}` ({} steps)…",
            args.steps
        );
        let (_, report) = training.run(model, &device, |_, _| {});
        reports.push((norm.clone(), report));
    }

    println!("\nAnswer loss (mean over each tenth of training):");
    print!("{:>7}", "step");
    for (norm, _) in &reports {
        print!("  {:>10}", norm.to_string());
    }
    println!();
    let curves: Vec<Vec<(usize, f32)>> = reports
        .iter()
        .map(|(_, report)| LossWindow::tenth_means(&report.losses))
        .collect();
    for (row, (end, _)) in curves[0].iter().enumerate() {
        print!("{end:>7}");
        for curve in &curves {
            print!("  {:>10.4}", curve[row].1);
        }
        println!();
    }
    println!("\nProblems answered right (1,000 unseen):");
    for (norm, report) in &reports {
        println!(
            "  {:>10}: {:5.1}% (before training {:.1}%)",
            norm.to_string(),
            100.0 * report.accuracy,
            100.0 * report.initial_accuracy
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    exit_code(run(Args::parse()))
}
