//! What burn-train does not measure or record by itself: images per second, and one CSV of
//! every metric per epoch.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::TensorReadError;
use burn::train::ClassificationOutput;
use burn::train::logger::MetricLogger;
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{
    Adaptor, Metric, MetricAttributes, MetricDefinition, MetricId, MetricMetadata, MetricName,
    Numeric, NumericAttributes, NumericEntry, SerializedEntry,
};

/// The number of images in a batch: what [`ImagesPerSecondMetric`] reads.
#[derive(Debug, Clone, Copy)]
pub struct BatchImages(pub usize);

impl Adaptor<BatchImages> for ClassificationOutput {
    fn adapt(&self) -> BatchImages {
        BatchImages(self.targets.dims()[0])
    }
}

/// Throughput in images per second over the epoch so far.
///
/// The clock starts at the first batch of each epoch (so start-up is not counted); after that,
/// the epoch value is the images of every later batch over the time they took.
#[derive(Clone)]
pub struct ImagesPerSecondMetric {
    name: MetricName,
    state: NumericMetricState,
    last: Option<Instant>,
}

impl ImagesPerSecondMetric {
    /// A new metric, named "Throughput" (images per second).
    pub fn new() -> Self {
        Self {
            name: Arc::new("Throughput".to_string()),
            state: NumericMetricState::new(),
            last: None,
        }
    }

    fn format(&self) -> FormatOptions {
        FormatOptions::new(self.name()).unit("img/s").precision(1)
    }
}

impl Default for ImagesPerSecondMetric {
    fn default() -> Self {
        Self::new()
    }
}

impl Metric for ImagesPerSecondMetric {
    type Input = BatchImages;

    fn update(
        &mut self,
        batch: &BatchImages,
        _metadata: &MetricMetadata,
    ) -> Result<SerializedEntry, TensorReadError> {
        let now = Instant::now();
        if let Some(last) = self.last.replace(now) {
            // The batch rate, weighted by the time it took: the epoch value is then the images
            // over the total time.
            let micros = (now - last).as_micros().max(1);
            let rate = batch.0 as f64 / (micros as f64 * 1e-6);
            self.state.update(rate, micros as usize);
        }
        Ok(self.state.compute_update(self.format()))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        Ok(self.state.compute_final(self.format()))
    }

    fn clear(&mut self) {
        self.state.reset();
        self.last = None;
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: Some("img/s".to_string()),
            higher_is_better: true,
        }
        .into()
    }
}

impl Numeric for ImagesPerSecondMetric {
    fn value(&self) -> Option<NumericEntry> {
        Some(self.state.current_value())
    }

    fn running_value(&self) -> Option<NumericEntry> {
        Some(self.state.running_value())
    }

    fn final_value(&self) -> NumericEntry {
        self.state.final_value()
    }
}

/// Appends one row per metric, split and epoch to a CSV file (`epoch,split,metric,value`, the
/// value being the epoch's mean), written when the split's epoch ends: a run killed mid-epoch
/// keeps the rows of every finished epoch, and a resumed run appends after them.
///
/// Register it beside burn-train's `FileMetricLogger`, which answers the learner's queries:
/// this logger keeps only the epoch values it writes.
pub struct CsvMetricLogger {
    path: PathBuf,
    file: BufWriter<File>,
    names: HashMap<MetricId, MetricName>,
    /// The latest epoch value of each metric, per split, since the split's epoch began.
    latest: HashMap<String, Vec<(MetricName, f64)>>,
}

impl CsvMetricLogger {
    /// The header row.
    pub const HEADER: &'static str = "epoch,split,metric,value";

    /// Appends to the CSV file at `path`, writing the header when the file is new.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or written.
    pub fn append(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let is_new = !path.exists();
        let mut file = BufWriter::new(OpenOptions::new().create(true).append(true).open(&path)?);
        if is_new {
            writeln!(file, "{}", Self::HEADER)?;
            file.flush()?;
        }
        Ok(Self {
            path,
            file,
            names: HashMap::new(),
            latest: HashMap::new(),
        })
    }

    fn write_rows(&mut self, summary: &EpochSummary) -> std::io::Result<()> {
        let split = summary.split.to_string();
        for (name, value) in self.latest.remove(&split).unwrap_or_default() {
            writeln!(
                self.file,
                "{},{split},{},{value}",
                summary.epoch_number,
                csv_field(&name)
            )?;
        }
        self.file.flush()
    }
}

/// A CSV field, quoted when it holds a comma or a quote.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

impl MetricLogger for CsvMetricLogger {
    fn log(&mut self, update: MetricsUpdate, _epoch: usize, split: &Split) {
        let values = self.latest.entry(split.to_string()).or_default();
        for numeric in update.entries_numeric {
            let entry = numeric.running_entry.or(numeric.numeric_entry);
            let (Some(entry), Some(name)) = (entry, self.names.get(&numeric.entry.metric_id))
            else {
                continue;
            };
            let value = entry.current();
            match values.iter_mut().find(|(known, _)| known == name) {
                Some(slot) => slot.1 = value,
                None => values.push((name.clone(), value)),
            }
        }
    }

    fn read_numeric(
        &mut self,
        _name: &str,
        _epoch: usize,
        _split: &Split,
    ) -> Result<Vec<NumericEntry>, String> {
        Err(format!(
            "{} keeps epoch values only; read them from the file",
            self.path.display()
        ))
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        if let Err(err) = self.write_rows(&summary) {
            log::error!("cannot write {}: {err}", self.path.display());
        }
    }
}

/// One row of the file [`CsvMetricLogger`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// The epoch, from 1.
    pub epoch: usize,
    /// `train` or `valid`.
    pub split: String,
    /// The metric's name, e.g. `Loss`, `Accuracy`, `Throughput`.
    pub metric: String,
    /// The epoch's value.
    pub value: f64,
}

/// Reads the file [`CsvMetricLogger`] writes.
///
/// # Errors
///
/// When the file cannot be read or a row is not `epoch,split,metric,value`.
pub fn read_metrics_csv(path: &Path) -> std::io::Result<Vec<MetricRow>> {
    let invalid = |line: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: not an `epoch,split,metric,value` row: {line}",
                path.display()
            ),
        )
    };
    let text = std::fs::read_to_string(path)?;
    let mut rows = Vec::new();
    for line in text.lines().skip(1).filter(|line| !line.is_empty()) {
        let (epoch, rest) = line.split_once(',').ok_or_else(|| invalid(line))?;
        let (split, rest) = rest.split_once(',').ok_or_else(|| invalid(line))?;
        let (metric, value) = rest.rsplit_once(',').ok_or_else(|| invalid(line))?;
        let metric = match metric.strip_prefix('"').and_then(|m| m.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => metric.to_string(),
        };
        rows.push(MetricRow {
            epoch: epoch.parse().map_err(|_| invalid(line))?,
            split: split.to_string(),
            metric,
            value: value.parse().map_err(|_| invalid(line))?,
        });
    }
    Ok(rows)
}
