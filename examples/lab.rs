//! The normalization lab: experiments on BatchNorm, LayerNorm, GroupNorm, InstanceNorm and no
//! normalization, each writing figures, CSVs and a section of `results/REPORT.md`.
//!
//! ```sh
//! cargo run --release --example lab -- all              # every experiment, then the report
//! cargo run --release --example lab -- gradients        # one (or several) by name
//! cargo run --release --example lab -- all --quick      # seconds each (what CI runs)
//! cargo run --release --features wgpu --example lab -- all --full --device wgpu
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use normzoo::lab::{Experiment, Lab, LabError, Size, write_report};
use normzoo::train::device_named;
use normzoo::train::progress::exit_code;

/// Run normalization experiments and write their report.
#[derive(Parser, Debug)]
#[command(version, args_override_self = true)]
struct Args {
    /// The experiments to run (`all` for every one): convergence, gradients, batch-size, swap,
    /// init, train-eval, distributions, correlation, sequences, advise.
    #[arg(required = true)]
    experiments: Vec<String>,
    /// Seconds per experiment (what CI runs).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Longer runs and wider models, for a GPU.
    #[arg(long)]
    full: bool,
    /// The results directory (one subdirectory per experiment, and REPORT.md).
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Seed of every weight and image.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The backend: flex, ndarray or wgpu, if compiled in.
    #[arg(long, default_value = "flex")]
    device: String,
}

fn experiments(names: &[String]) -> Result<Vec<Experiment>, LabError> {
    if names.iter().any(|name| name == "all") {
        return Ok(Experiment::ALL.to_vec());
    }
    names.iter().map(|name| name.parse()).collect()
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let experiments = experiments(&args.experiments)?;
    let size = match (args.quick, args.full) {
        (true, _) => Size::Quick,
        (_, true) => Size::Full,
        _ => Size::Default,
    };
    let mut lab = Lab::new(&args.out, size, device_named(&args.device)?);
    lab.seed = args.seed;
    for experiment in experiments {
        let start = Instant::now();
        let section = experiment.run(&lab)?;
        println!(
            "{} ({:.0} s): {}",
            experiment.name(),
            start.elapsed().as_secs_f64(),
            section.title
        );
        for finding in &section.findings {
            println!("  {}: {:.4}", finding.name, finding.value);
        }
    }
    let report = write_report(&args.out)?;
    println!("Report: {}", report.display());
    Ok(())
}

fn main() -> ExitCode {
    exit_code(run(Args::parse()))
}
