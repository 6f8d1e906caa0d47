//! Batch size 32 → 8 → 2 → 1 for BatchNorm, GroupNorm and LayerNorm in an MLP: test accuracy,
//! and the gap between scoring in training mode (batch statistics) and in evaluation mode.

use burn::module::Module;
use burn::tensor::{Int, Tensor};
use normzoo_models::{Mlp, MlpConfig};
use normzoo_norm::NormConfig;

use super::Output;
use super::training_loop::{Data, Schedule, accuracy, batched_accuracy, tail_mean, train};
use crate::plot::{LineChart, Panel, Series, render};
use crate::{Lab, LabError};

const NORMS: [(&str, &str); 3] = [
    ("batch", "BatchNorm"),
    ("group:8", "GroupNorm(8)"),
    ("layer", "LayerNorm"),
];
const BATCH_SIZES: [usize; 4] = [32, 8, 2, 1];

/// What one (normalizer, batch size) run ended with.
enum Outcome {
    Trained {
        final_loss: f64,
        eval_accuracy: f64,
        train_mode_accuracy: f64,
    },
    /// The first training step was refused, as PyTorch refuses it.
    Refused(String),
}

/// The accuracy of `mlp` in training mode (batch statistics of test batches of `batch_size`),
/// on a copy, so the model's running statistics are untouched.
fn train_mode_accuracy(
    mlp: &Mlp,
    images: &Tensor<4>,
    labels: &Tensor<1, Int>,
    batch_size: usize,
) -> f64 {
    let copy = mlp.valid().train();
    batched_accuracy(
        &copy,
        &Tensor::from_inner(images.clone()),
        labels,
        batch_size,
    )
}

pub(super) fn run(lab: &Lab, out: &mut Output) -> Result<(), LabError> {
    let steps = lab.size.pick(10, 400, 3000);
    let width = lab.size.pick(64, 128, 256);
    let data = Data::new(lab, lab.size.pick(64, 320, 1000));
    let device = lab.device.clone().autodiff();
    let (images, labels) = data.test_set(&lab.device);
    let bar = lab.progress_bar(
        NORMS.len() * BATCH_SIZES.len() * steps,
        "batch-size: training",
    );
    let mut outcomes = Vec::new();
    for (norm, label) in NORMS {
        for batch_size in BATCH_SIZES {
            device.seed(lab.seed);
            let mlp = MlpConfig::new(32 * 32 * 3, width, 3, 10)
                .with_norm(norm.parse::<NormConfig>()?)
                .init(&device)?;
            let (first, _) = data.train_batch(0, batch_size, &device);
            let outcome = match mlp.try_forward(first.flatten(1, 3)) {
                Err(err) => {
                    bar.inc(steps as u64);
                    Outcome::Refused(err.to_string())
                }
                Ok(_) => {
                    let schedule = Schedule {
                        steps,
                        batch_size,
                        lr: 0.01,
                    };
                    let (mlp, losses) = train(mlp, schedule, &data, &device, &bar);
                    let eval_accuracy =
                        100.0 * accuracy(&mlp.valid(), images.clone(), labels.clone());
                    Outcome::Trained {
                        final_loss: tail_mean(&losses, 0.1),
                        eval_accuracy,
                        train_mode_accuracy: 100.0
                            * train_mode_accuracy(&mlp, &images, &labels, batch_size),
                    }
                }
            };
            outcomes.push((label, batch_size, outcome));
        }
    }
    bar.finish_and_clear();

    let mut accuracy_series = Vec::new();
    let mut gap_series = Vec::new();
    let mut table = String::from(
        "| normalizer | batch size | final training loss | test accuracy (evaluation mode) | in training mode | gap |\n|---|---|---|---|---|---|\n",
    );
    for (_, label) in NORMS {
        let mut accuracies = Vec::new();
        let mut gaps = Vec::new();
        for (_, batch_size, outcome) in outcomes.iter().filter(|(l, _, _)| *l == label) {
            let key = format!("{}, batch {batch_size}", label.to_lowercase());
            match outcome {
                Outcome::Trained {
                    final_loss,
                    eval_accuracy,
                    train_mode_accuracy,
                } => {
                    let gap = (train_mode_accuracy - eval_accuracy).abs();
                    out.finding(format!("test accuracy, {key}"), *eval_accuracy);
                    out.finding(format!("train/eval gap, {key}"), gap);
                    accuracies.push((*batch_size as f64, *eval_accuracy));
                    gaps.push((*batch_size as f64, gap));
                    table.push_str(&format!(
                        "| {label} | {batch_size} | {final_loss:.3} | {eval_accuracy:.1}% | {train_mode_accuracy:.1}% | {gap:.1} |\n"
                    ));
                }
                Outcome::Refused(message) => {
                    out.finding(format!("refused, {key}"), 1.0);
                    table.push_str(&format!(
                        "| {label} | {batch_size} | error: {message} | — | — | — |\n"
                    ));
                }
            }
        }
        accuracy_series.push(Series::new(label, accuracies));
        gap_series.push(Series::new(label, gaps));
    }
    out.csv(
        "accuracy.csv",
        "batch size",
        "test accuracy (%)",
        &accuracy_series,
    )?;
    out.csv(
        "gap.csv",
        "batch size",
        "train/eval gap (points)",
        &gap_series,
    )?;
    let figure = render(
        Some("Batch size and the normalizer"),
        &[
            Panel::Lines(LineChart {
                title: "test accuracy (evaluation mode)".into(),
                x_label: "batch size".into(),
                y_label: "accuracy (%)".into(),
                log_y: false,
                series: accuracy_series,
                ..LineChart::default()
            }),
            Panel::Lines(LineChart {
                title: "training-mode vs evaluation-mode accuracy".into(),
                x_label: "batch size".into(),
                y_label: "|difference| (points)".into(),
                log_y: false,
                series: gap_series,
                ..LineChart::default()
            }),
        ],
        2,
        (560, 380),
    )?;
    out.text(format!(
        "An MLP (3 hidden layers of {width}, each linear → normalizer → ReLU) classifies the \
         {images} (flattened), for {steps} SGD steps (lr 0.01, momentum 0.9) at each \
         batch size. Test accuracy is in evaluation mode on {} held-out images; the gap is how \
         far scoring the same images in training mode (each test batch, of the training batch \
         size, normalized with its own statistics) moves it.",
        data.test_len(),
        images = lab.data.images(),
    ));
    out.figure(
        "batch-size.png",
        &figure,
        "Accuracy and train/eval gap against batch size",
    )?;
    out.text(table);
    let at_two = |norm: &str, out: &Output| out.value(&format!("test accuracy, {norm}, batch 2"));
    let (batch, group, layer) = (
        at_two("batchnorm", out),
        at_two("groupnorm(8)", out),
        at_two("layernorm", out),
    );
    let verdict = if batch + 5.0 < group.min(layer) {
        "BatchNorm's statistics of two samples are too noisy to learn from, and its running \
         averages of them do not describe a single test image"
    } else {
        "at this size BatchNorm holds up against the per-sample normalizers"
    };
    out.text(format!(
        "Every run takes the same number of steps, so a smaller batch sees fewer images \
         ({} at batch 2): compare the normalizers at one batch size rather than one batch size \
         with another. At batch 2 BatchNorm reaches {batch:.1}%, GroupNorm {group:.1}% and \
         LayerNorm {layer:.1}%: {verdict}. BatchNorm cannot train \
         at batch size 1 in an MLP: with one value per channel there is no variance to \
         normalize by, and it refuses the batch with PyTorch's own error, shown above; the \
         experiment goes on without it. GroupNorm and LayerNorm compute every statistic \
         within one sample, so their gap is zero at every batch size.",
        2 * steps,
    ));
    Ok(())
}
