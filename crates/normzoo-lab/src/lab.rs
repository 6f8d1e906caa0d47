//! Where and how the experiments run: [`Lab`] and its [`Size`].

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};

use crate::LabData;

/// How big an experiment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Seconds: for CI and a first look; the effects that are robust already show.
    Quick,
    /// Minutes on two CPU cores: the numbers the report is meant to show.
    Default,
    /// Longer runs and wider models, for a GPU.
    Full,
}

impl Size {
    /// `quick`, `default` or `full`, as this size is.
    pub fn pick<T>(self, quick: T, default: T, full: T) -> T {
        match self {
            Self::Quick => quick,
            Self::Default => default,
            Self::Full => full,
        }
    }
}

/// Where and how the experiments run.
#[derive(Debug, Clone)]
pub struct Lab {
    /// The results directory: each experiment writes into `<out>/<name>/`, the report is
    /// `<out>/REPORT.md`.
    pub out: PathBuf,
    /// How big the runs are.
    pub size: Size,
    /// The device to run on (made autodiff where an experiment trains).
    pub device: Device,
    /// The images the image experiments train on and are scored on.
    pub data: LabData,
    /// The seed of every random draw (weights, data).
    pub seed: u64,
    /// Whether to draw progress bars (on standard error).
    pub progress: bool,
}

impl Lab {
    /// A lab writing into `out`, on generated images ([`LabData::Generated`]; set
    /// [`data`](Self::data) to [`LabData::installed_or_generated`] or
    /// [`LabData::fashion_mnist`] for real ones), seed 0, with progress bars.
    pub fn new(out: impl AsRef<Path>, size: Size, device: Device) -> Self {
        Self {
            out: out.as_ref().to_path_buf(),
            size,
            device,
            data: LabData::Generated,
            seed: 0,
            progress: true,
        }
    }

    /// A progress bar over `steps` for `what`, or a hidden one.
    pub(crate) fn progress_bar(&self, steps: usize, what: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(steps as u64).with_message(what.to_string());
        bar.set_style(
            ProgressStyle::with_template("{msg:32} [{bar:30}] {pos}/{len} ({eta} left)")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    }
}
