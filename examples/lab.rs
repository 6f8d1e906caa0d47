//! The normalization lab: experiments on BatchNorm, LayerNorm, GroupNorm, InstanceNorm and no
//! normalization, each writing figures, CSVs and a section of `results/REPORT.md`.
//!
//! ```sh
//! cargo run --release --example lab -- all              # every experiment, then the report
//! cargo run --release --example lab -- gradients        # one (or several) by name
//! cargo run --release --example lab -- all --quick      # seconds each (what CI runs)
//! cargo run --release --features wgpu --example lab -- all --full --device wgpu
//! cargo run --release --example lab -- convergence --data generated
//! ```
//!
//! The image experiments train on Fashion-MNIST when it is installed (Debian's
//! `dataset-fashion-mnist`, `--data-dir`, or `NORMZOO_FASHION_MNIST_DIR`) and on generated
//! images otherwise; the first line printed and each section of the report say which.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use normzoo::backend::choose_device;
use normzoo::lab::{Experiment, Lab, LabData, LabError, Size, write_report};
use normzoo::train::data::DataError;
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
    /// The backend: auto (a hardware GPU through wgpu where there is one, else flex), flex
    /// (CPU), ndarray (CPU) or wgpu (GPU, any adapter), if compiled in.
    #[arg(long, default_value = "auto")]
    device: String,
    /// The images: `auto` (Fashion-MNIST when it is installed, else generated),
    /// `fashion-mnist` or `generated`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "fashion-mnist", "generated"])]
    data: String,
    /// The directory holding Fashion-MNIST's four IDX files (gzipped or not); implies
    /// `--data fashion-mnist`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The images `--data` and `--data-dir` ask for.
fn data(args: &Args) -> Result<LabData, DataError> {
    match (args.data.as_str(), &args.data_dir) {
        (_, Some(dir)) => LabData::fashion_mnist(Some(dir)),
        ("fashion-mnist", None) => LabData::fashion_mnist(None),
        ("generated", None) => Ok(LabData::Generated),
        _ => LabData::installed_or_generated(),
    }
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
    let chosen = choose_device(&args.device)?;
    println!("{chosen}");
    let mut lab = Lab::new(&args.out, size, chosen.device);
    lab.seed = args.seed;
    lab.data = data(&args)?;
    match &lab.data {
        LabData::Generated if args.data == "auto" => println!(
            "Images: generated (Fashion-MNIST is not installed: `apt-get install \
             dataset-fashion-mnist`, or --data-dir)"
        ),
        data => println!("Images: {}", data.name()),
    }
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
