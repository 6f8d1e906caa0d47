//! The experiments, what each one produces, and the files it writes.

mod advise;
mod batch_size;
mod convergence;
mod correlation;
mod distributions;
mod gradients;
mod init;
mod sequences;
mod swap;
mod train_eval;
mod training_loop;

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::str::FromStr;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::write_error;
use crate::plot::{self, Series};
use crate::{Lab, LabError};

/// One of the lab's experiments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Experiment {
    /// The same CNN with no norm, BatchNorm, LayerNorm, GroupNorm and InstanceNorm: loss and
    /// accuracy curves, at a normal and at a high learning rate.
    Convergence,
    /// Per-layer gradient norms of a deep MLP with and without normalization, at
    /// initialisation and after training.
    Gradients,
    /// Batch size 32 → 8 → 2 → 1 for BatchNorm, GroupNorm and LayerNorm: accuracy and the
    /// train/eval gap.
    BatchSize,
    /// BatchNorm swapped out of a ResNet18 for LayerNorm and GroupNorm: accuracy side by side,
    /// at batch 32 and batch 4.
    Swap,
    /// LayerNorm's `γ` (1, 0.1, 0) and `β` (0, 1) at the end of residual branches.
    Init,
    /// A BatchNorm model evaluated in training mode and in evaluation mode, before and after its
    /// running statistics converge.
    TrainEval,
    /// Each layer's activation distribution over training, with and without BatchNorm (an
    /// animated GIF and a still PNG).
    Distributions,
    /// Hidden-unit correlation heatmaps with and without LayerNorm.
    Correlation,
    /// An LSTM (none, LayerNorm, BatchNorm) and a Transformer (LayerNorm, RMSNorm, BatchNorm,
    /// none; pre-norm and post-norm) on a sequence task.
    Sequences,
    /// The decision guide: which normalizer for which task, batch size and architecture,
    /// citing the numbers the other experiments measured.
    Advise,
}

impl Experiment {
    /// Every experiment, in report order ([`Experiment::Advise`] last: it cites the others).
    pub const ALL: [Experiment; 10] = [
        Self::Convergence,
        Self::Gradients,
        Self::BatchSize,
        Self::Swap,
        Self::Init,
        Self::TrainEval,
        Self::Distributions,
        Self::Correlation,
        Self::Sequences,
        Self::Advise,
    ];

    /// The name on the command line and of the results subdirectory.
    pub fn name(self) -> &'static str {
        match self {
            Self::Convergence => "convergence",
            Self::Gradients => "gradients",
            Self::BatchSize => "batch-size",
            Self::Swap => "swap",
            Self::Init => "init",
            Self::TrainEval => "train-eval",
            Self::Distributions => "distributions",
            Self::Correlation => "correlation",
            Self::Sequences => "sequences",
            Self::Advise => "advise",
        }
    }

    /// The heading of the experiment's section in the report.
    pub fn title(self) -> &'static str {
        match self {
            Self::Convergence => "Convergence with each normalizer",
            Self::Gradients => "Gradient flow in a deep MLP",
            Self::BatchSize => "Batch size: BatchNorm against GroupNorm and LayerNorm",
            Self::Swap => "Swapping BatchNorm out of a ResNet18",
            Self::Init => "Initialising LayerNorm's γ and β",
            Self::TrainEval => "Training mode vs evaluation mode",
            Self::Distributions => "Activation distributions over training",
            Self::Correlation => "Hidden-unit correlation",
            Self::Sequences => "Normalization in sequence models",
            Self::Advise => "Which normalizer? A decision guide",
        }
    }

    /// Whether the experiment trains on the lab's images ([`LabData`](crate::LabData)): all
    /// but `sequences` (generated sums) and `advise` (no training).
    pub fn trains_on_images(self) -> bool {
        !matches!(self, Self::Sequences | Self::Advise)
    }

    /// The link to the experiment's section inside the report (GitHub's heading anchors).
    pub fn anchor(self) -> String {
        let slug: String = self
            .title()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        format!("#{slug}")
    }

    /// Runs the experiment, writes its figures, CSVs and report section into
    /// `<lab.out>/<name>/`, and returns the section.
    ///
    /// # Errors
    ///
    /// When a model cannot be built or a file cannot be written.
    pub fn run(self, lab: &Lab) -> Result<Section, LabError> {
        let mut out = Output::new(lab, self)?;
        match self {
            Self::Convergence => convergence::run(lab, &mut out)?,
            Self::Gradients => gradients::run(lab, &mut out)?,
            Self::BatchSize => batch_size::run(lab, &mut out)?,
            Self::Swap => swap::run(lab, &mut out)?,
            Self::Init => init::run(lab, &mut out)?,
            Self::TrainEval => train_eval::run(lab, &mut out)?,
            Self::Distributions => distributions::run(lab, &mut out)?,
            Self::Correlation => correlation::run(lab, &mut out)?,
            Self::Sequences => sequences::run(lab, &mut out)?,
            Self::Advise => advise::run(lab, &mut out)?,
        }
        out.finish()
    }
}

impl FromStr for Experiment {
    type Err = LabError;

    fn from_str(name: &str) -> Result<Self, LabError> {
        Self::ALL
            .into_iter()
            .find(|experiment| experiment.name() == name)
            .ok_or_else(|| LabError::UnknownExperiment(name.into()))
    }
}

/// A measured number an experiment reports, by name (also in `findings.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What was measured, e.g. `"gradient spread at init, none"`.
    pub name: String,
    /// The value.
    pub value: f64,
}

/// The value of the finding called `name` among `findings`.
pub(crate) fn lookup(findings: &[Finding], name: &str) -> Option<f64> {
    findings
        .iter()
        .find(|finding| finding.name == name)
        .map(|finding| finding.value)
}

/// What an experiment reports: its section of the report and its numbers.
#[derive(Debug, Clone)]
pub struct Section {
    /// The experiment.
    pub experiment: Experiment,
    /// The section's heading.
    pub title: String,
    /// Markdown: the setup, the figures (linked relative to the report) and the findings.
    pub body: String,
    /// The numbers, by name.
    pub findings: Vec<Finding>,
    /// Every file written, figures and CSVs.
    pub files: Vec<PathBuf>,
}

impl Section {
    /// The finding called `name`.
    ///
    /// # Panics
    ///
    /// When the experiment reported no such finding.
    pub fn finding(&self, name: &str) -> f64 {
        lookup(&self.findings, name)
            .unwrap_or_else(|| panic!("{} reported no finding `{name}`", self.title))
    }
}

/// What an experiment builds up while it runs: the files it wrote, the findings, and the
/// Markdown of its section.
pub(crate) struct Output {
    experiment: Experiment,
    dir: PathBuf,
    files: Vec<PathBuf>,
    findings: Vec<Finding>,
    markdown: String,
}

/// `text` as one CSV field: quoted (with quotes doubled) when it holds a comma, a quote or a
/// line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// The file holding a section's Markdown inside its experiment's directory.
pub(crate) const SECTION_FILE: &str = "section.md";
/// The file holding an experiment's findings (JSON) inside its directory.
pub(crate) const FINDINGS_FILE: &str = "findings.json";
/// The file naming the images an image experiment trained on (e.g. `Fashion-MNIST`) inside its
/// directory.
pub(crate) const DATA_FILE: &str = "data.txt";

impl Output {
    fn new(lab: &Lab, experiment: Experiment) -> Result<Self, LabError> {
        let dir = lab.out.join(experiment.name());
        fs::create_dir_all(&dir).map_err(write_error(&dir))?;
        let mut out = Self {
            experiment,
            dir,
            files: Vec::new(),
            findings: Vec::new(),
            markdown: String::new(),
        };
        if experiment.trains_on_images() {
            out.write(DATA_FILE, lab.data.name().as_bytes())?;
        }
        Ok(out)
    }

    /// Appends a paragraph (or any Markdown block) to the section.
    pub(crate) fn text(&mut self, markdown: impl AsRef<str>) {
        self.markdown.push_str(markdown.as_ref().trim_end());
        self.markdown.push_str("\n\n");
    }

    /// Records a finding and returns its value.
    pub(crate) fn finding(&mut self, name: impl Into<String>, value: f64) -> f64 {
        self.findings.push(Finding {
            name: name.into(),
            value,
        });
        value
    }

    /// The value of the finding recorded as `name`.
    ///
    /// # Panics
    ///
    /// When no finding has that name (a typo in the experiment).
    pub(crate) fn value(&self, name: &str) -> f64 {
        lookup(&self.findings, name).unwrap_or_else(|| panic!("no finding `{name}` was recorded"))
    }

    /// Writes `series` as `<file>` (columns `series,<x>,<y>`, one row per point).
    pub(crate) fn csv(
        &mut self,
        file: &str,
        x: &str,
        y: &str,
        series: &[Series],
    ) -> Result<(), LabError> {
        let mut text = format!("series,{x},{y}\n");
        for line in series {
            for (px, py) in &line.points {
                writeln!(text, "{},{px},{py}", csv_field(&line.name)).expect("writing to a String");
            }
        }
        self.write(file, text.as_bytes())
    }

    /// Writes `image` as `<file>` (PNG) and shows it in the section with `caption`.
    pub(crate) fn figure(
        &mut self,
        file: &str,
        image: &RgbImage,
        caption: &str,
    ) -> Result<(), LabError> {
        let path = self.dir.join(file);
        plot::save_png(image, &path)?;
        self.files.push(path);
        self.embed(file, caption);
        Ok(())
    }

    /// Writes `frames` as the looping animation `<file>` (GIF, `frame_ms` per frame) and shows
    /// it in the section with `caption`.
    pub(crate) fn animation(
        &mut self,
        file: &str,
        frames: &[RgbImage],
        frame_ms: u32,
        caption: &str,
    ) -> Result<(), LabError> {
        let path = self.dir.join(file);
        plot::save_gif(frames, frame_ms, &path)?;
        self.files.push(path);
        self.embed(file, caption);
        Ok(())
    }

    fn embed(&mut self, file: &str, caption: &str) {
        let name = self.experiment.name();
        self.text(format!("![{caption}]({name}/{file})\n\n*{caption}*"));
    }

    fn write(&mut self, file: &str, bytes: &[u8]) -> Result<(), LabError> {
        let path = self.dir.join(file);
        fs::write(&path, bytes).map_err(write_error(&path))?;
        self.files.push(path);
        Ok(())
    }

    /// Saves the section (`section.md`, `findings.json`) and returns it.
    fn finish(mut self) -> Result<Section, LabError> {
        let title = self.experiment.title().to_string();
        let body = std::mem::take(&mut self.markdown);
        self.write(SECTION_FILE, format!("## {title}\n\n{body}").as_bytes())?;
        let findings = serde_json::to_string_pretty(&self.findings).expect("findings serialize");
        self.write(FINDINGS_FILE, findings.as_bytes())?;
        Ok(Section {
            experiment: self.experiment,
            title,
            body,
            findings: self.findings,
            files: self.files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("BatchNorm"), "BatchNorm");
        assert_eq!(
            csv_field("training mode, batches of 32"),
            "\"training mode, batches of 32\""
        );
        assert_eq!(csv_field("a \"b\""), "\"a \"\"b\"\"\"");
    }
}
