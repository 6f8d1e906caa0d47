//! burn-train's progress as plain lines, for output that is not a terminal (a log file, a
//! pipe, CI): its own fallback prints a debug dump of its progress state on every batch.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};

/// Progress lines: one at every tenth of an epoch's training images, and one when each split
/// of an epoch ends, with the epoch's running loss, accuracy, learning rate and images/s:
///
/// ```text
/// epoch 2/15 train   6016/60000 images  loss 0.3512  accuracy 87.12%  lr 9.84e-2  61.2 images/s
/// epoch 2/15 train  done in 16m 21s  loss 0.2990  accuracy 89.01%  lr 9.12e-2  61.1 images/s
/// epoch 2/15 valid  done in 41s  loss 0.2511  accuracy 90.86%
/// ```
///
/// What burn-train's terminal UI shows, as a log can hold it; the training code passes it to
/// burn-train when standard output is not a terminal.
pub struct LineRenderer {
    out: Box<dyn Write + Send + Sync>,
    /// Metric names in the order burn-train registered them.
    names: Vec<(MetricId, String)>,
    epoch: usize,
    epochs: usize,
    split: Option<SplitProgress>,
}

/// The split under way.
struct SplitProgress {
    name: String,
    total: usize,
    started: Instant,
    /// The next tenth of `total` that prints a line.
    next_tenth: usize,
    values: HashMap<MetricId, Value>,
}

/// A metric over the split so far.
#[derive(Default)]
struct Value {
    weighted_sum: f64,
    weight: f64,
    last: Option<f64>,
    final_value: Option<f64>,
}

impl Value {
    fn add(&mut self, entry: &NumericEntry) {
        match *entry {
            NumericEntry::Value(value) => self.last = Some(value),
            NumericEntry::Aggregated {
                aggregated_value,
                count,
            } => {
                if aggregated_value.is_finite() && count > 0 {
                    self.weighted_sum += aggregated_value * count as f64;
                    self.weight += count as f64;
                    self.last = Some(aggregated_value);
                }
            }
            NumericEntry::Final(value) => self.final_value = Some(value),
        }
    }

    /// The epoch's value: burn-train's final one once there is one, else the running mean.
    fn epoch_value(&self) -> Option<f64> {
        self.final_value
            .or((self.weight > 0.0).then(|| self.weighted_sum / self.weight))
            .or(self.last)
    }
}

impl LineRenderer {
    /// Lines to standard output.
    pub fn new() -> Self {
        Self::to_writer(io::stdout())
    }

    /// Lines to `out`.
    pub fn to_writer(out: impl Write + Send + Sync + 'static) -> Self {
        Self {
            out: Box::new(out),
            names: Vec::new(),
            epoch: 1,
            epochs: 0,
            split: None,
        }
    }

    fn line(&mut self, text: &str) {
        // A log that cannot be written must not stop training.
        let _ = writeln!(self.out, "{text}").and_then(|()| self.out.flush());
    }

    /// `epoch E/N split` and then the metrics, in registration order.
    fn status(&self, progress: &str) -> String {
        let Some(split) = &self.split else {
            return String::new();
        };
        let mut text = format!(
            "epoch {}/{} {}  {progress}",
            self.epoch, self.epochs, split.name
        );
        for (id, name) in &self.names {
            let value = split.values.get(id).and_then(|value| match name.as_str() {
                "Learning Rate" => value.last.or(value.final_value),
                _ => value.epoch_value(),
            });
            if let Some(value) = value {
                text.push_str("  ");
                text.push_str(&format_metric(name, value));
            }
        }
        text
    }

    fn update(&mut self, state: MetricState) {
        if let (Some(split), MetricState::Numeric(entry, Some(value))) = (&mut self.split, state) {
            split.values.entry(entry.metric_id).or_default().add(&value);
        }
    }
}

impl Default for LineRenderer {
    fn default() -> Self {
        Self::new()
    }
}

/// `loss 0.3512`, `accuracy 87.12%`, `lr 9.84e-2`, `61.2 images/s`, or `name value`.
fn format_metric(name: &str, value: f64) -> String {
    match name {
        "Loss" => format!("loss {value:.4}"),
        "Accuracy" => format!("accuracy {value:.2}%"),
        "Learning Rate" => format!("lr {value:.2e}"),
        "Throughput" => format!("{value:.1} images/s"),
        other => format!("{} {value:.4}", other.to_lowercase()),
    }
}

/// `41s`, `16m 21s`, `2h 05m`.
fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m", seconds / 3600, seconds / 60 % 60),
    }
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.update(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.update(state);
    }
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.update(state);
    }
}

impl TrainingProgressLogger for LineRenderer {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _total_items: Option<usize>,
        _label: Option<&str>,
    ) {
        (self.epoch, self.epochs) = (starting_epoch.max(1), total_epochs);
        let text = match starting_epoch {
            0 | 1 => format!("training for {total_epochs} epochs"),
            _ => format!("training epochs {starting_epoch} to {total_epochs}"),
        };
        self.line(&text);
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, total_items: usize) {
        self.split = Some(SplitProgress {
            name: split.into(),
            total: total_items,
            started: Instant::now(),
            next_tenth: 1,
            values: HashMap::new(),
        });
    }

    fn update_split(&mut self, items_processed: usize) {
        let Some(split) = &mut self.split else {
            return;
        };
        // Validation prints only its summary; training a line per tenth it passes.
        if split.name != "train" || split.total == 0 || items_processed >= split.total {
            return;
        }
        let tenth = items_processed * 10 / split.total;
        if tenth < split.next_tenth {
            return;
        }
        split.next_tenth = tenth + 1;
        let width = split.total.to_string().len();
        let progress = format!("{items_processed:>width$}/{} images", split.total);
        let text = self.status(&progress);
        self.line(&text);
    }

    fn end_split(&mut self) {
        let Some(split) = &self.split else {
            return;
        };
        let progress = format!("done in {}", format_duration(split.started.elapsed()));
        let text = self.status(&progress);
        self.line(&text);
        self.split = None;
    }

    fn end(&mut self) {}

    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for LineRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}

    fn start_test(&mut self, name: &str, total_items: usize) {
        self.start_split(name, total_items);
    }

    fn update_test_progress(&mut self, _items_processed: usize) {}

    fn end_test(&mut self) {
        self.end_split();
    }

    fn end_global_progress(&mut self) {}

    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        if !self.names.iter().any(|(id, _)| *id == definition.metric_id) {
            self.names
                .push((definition.metric_id, definition.name.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use burn::train::metric::{MetricAttributes, MetricEntry, SerializedEntry};

    use super::*;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().write(bytes)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn id(name: &str) -> MetricId {
        MetricId::new(Arc::new(name.to_string()))
    }

    fn numeric(name: &str, entry: NumericEntry) -> MetricState {
        let serialized = SerializedEntry::new(String::new(), String::new());
        MetricState::Numeric(MetricEntry::new(id(name), serialized), Some(entry))
    }

    fn batch(value: f64, count: usize) -> NumericEntry {
        NumericEntry::Aggregated {
            aggregated_value: value,
            count,
        }
    }

    /// Two epochs of 100 images in batches of 10 (resumed after epoch 1 of 3): a line per
    /// tenth of training with running means, a summary per split with burn-train's final
    /// values, nothing per validation batch.
    #[test]
    fn a_line_per_tenth_and_per_split() {
        let captured = Captured::default();
        let mut renderer = LineRenderer::to_writer(captured.clone());
        for name in ["Loss", "Accuracy", "Learning Rate", "Throughput"] {
            renderer.register_metric(MetricDefinition {
                metric_id: id(name),
                name: Arc::new(name.into()),
                description: None,
                attributes: MetricAttributes::None,
            });
        }
        renderer.start(3, 2, None, None);
        for epoch in 2..=3 {
            renderer.start_split("train", 100);
            for step in 1..=10 {
                renderer.update_train(numeric("Loss", batch(step as f64, 10)));
                renderer.update_train(numeric("Accuracy", batch(10.0 * step as f64, 10)));
                renderer.update_train(numeric(
                    "Learning Rate",
                    NumericEntry::Value(0.1 / step as f64),
                ));
                renderer.update_split(10 * step);
            }
            renderer.update_train(numeric("Loss", NumericEntry::Final(5.5)));
            renderer.end_split();
            renderer.start_split("valid", 30);
            for step in 1..=3 {
                renderer.update_valid(numeric("Accuracy", batch(90.0, 10)));
                renderer.update_split(10 * step);
            }
            renderer.end_split();
            renderer.update_epoch(epoch);
        }
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 2 * (9 + 2), "{text}");
        assert_eq!(lines[0], "training epochs 2 to 3");
        assert_eq!(
            lines[1],
            "epoch 2/3 train   10/100 images  loss 1.0000  accuracy 10.00%  lr 1.00e-1"
        );
        assert_eq!(
            lines[3],
            "epoch 2/3 train   30/100 images  loss 2.0000  accuracy 20.00%  lr 3.33e-2"
        );
        assert!(
            lines[10].starts_with("epoch 2/3 train  done in 0s  loss 5.5000  accuracy 55.00%"),
            "{}",
            lines[10]
        );
        assert_eq!(lines[11], "epoch 2/3 valid  done in 0s  accuracy 90.00%");
        assert!(
            lines[12].starts_with("epoch 3/3 train   10/100"),
            "{}",
            lines[12]
        );
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(format_duration(Duration::from_secs(41)), "41s");
        assert_eq!(format_duration(Duration::from_secs(981)), "16m 21s");
        assert_eq!(format_duration(Duration::from_secs(7500)), "2h 05m");
    }
}
