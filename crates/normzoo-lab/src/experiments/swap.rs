//! BatchNorm swapped out of a ResNet18 for LayerNorm and GroupNorm: the same network, the same
//! initial convolutions and data, the normalizer the only change; accuracy side by side, at a
//! usual batch size and at a small one.

use burn::module::Module;
use normzoo_models::ResNetConfig;
use normzoo_norm::NormConfig;

use super::Output;
use super::training_loop::{Data, Schedule, accuracy, smoothed, tail_mean, train};
use crate::plot::{LineChart, Panel, Series, render};
use crate::{Lab, LabError};

/// The normalizers swapped in, with how the report names them. `group:1` is LayerNorm over
/// `C × H × W` (what "LayerNorm in a CNN" usually means); `layer2d` is ConvNeXt's LayerNorm,
/// over the channels of each position.
const NORMS: [(&str, &str); 4] = [
    ("batch", "BatchNorm"),
    ("group:1", "LayerNorm (C×H×W)"),
    ("layer2d", "LayerNorm2d (channels)"),
    ("group:4", "GroupNorm(4)"),
];
const BATCH_SIZES: [usize; 2] = [32, 4];

pub(super) fn run(lab: &Lab, out: &mut Output) -> Result<(), LabError> {
    let width = lab.size.pick(4, 8, 32);
    // Every run sees the same images: batch 4 takes eight times the steps of batch 32.
    let images_seen = 32 * lab.size.pick(6, 150, 1500);
    let lr = 0.02;
    let data = Data::new(lab, lab.size.pick(64, 320, 1000));
    let device = lab.device.clone().autodiff();
    let (images, labels) = data.test_set(&lab.device);
    let total_steps: usize = BATCH_SIZES.iter().map(|b| images_seen / b).sum();
    let bar = lab.progress_bar(NORMS.len() * total_steps, "swap: training");

    let mut panels = Vec::new();
    let mut table = String::from(
        "| normalizer | batch size | final training loss (last 10% of steps) | test accuracy |\n|---|---|---|---|\n",
    );
    let mut accuracies = vec![Vec::new(); NORMS.len()];
    for batch_size in BATCH_SIZES {
        let steps = images_seen / batch_size;
        let schedule = Schedule {
            steps,
            batch_size,
            lr,
        };
        let mut losses = Vec::new();
        for (index, (norm, label)) in NORMS.into_iter().enumerate() {
            device.seed(lab.seed);
            let model = ResNetConfig::resnet18_cifar(10)
                .with_width(width)
                .with_norm(norm.parse::<NormConfig>()?)
                .init(&device)?;
            let (model, curve) = train(model, schedule, &data, &device, &bar);
            let final_loss = tail_mean(&curve, 0.1);
            let score = 100.0 * accuracy(&model.valid(), images.clone(), labels.clone());
            let key = format!("{}, batch {batch_size}", label.to_lowercase());
            out.finding(format!("final loss, {key}"), final_loss);
            out.finding(format!("test accuracy, {key}"), score);
            table.push_str(&format!(
                "| {label} | {batch_size} | {final_loss:.3} | {score:.1}% |\n"
            ));
            accuracies[index].push((batch_size as f64, score));
            losses.push(Series::new(label, smoothed(&curve, (steps / 30).max(1))));
        }
        out.csv(
            &format!("loss-batch{batch_size}.csv"),
            "step",
            "training loss",
            &losses,
        )?;
        panels.push(Panel::Lines(LineChart {
            title: format!("training loss, batch {batch_size} ({steps} steps)"),
            x_label: "step".into(),
            y_label: "cross-entropy (window mean)".into(),
            log_y: true,
            series: losses,
            ..LineChart::default()
        }));
    }
    bar.finish_and_clear();
    let accuracy_series: Vec<Series> = NORMS
        .iter()
        .zip(accuracies)
        .map(|((_, label), points)| Series::new(*label, points))
        .collect();
    out.csv(
        "accuracy.csv",
        "batch size",
        "test accuracy (%)",
        &accuracy_series,
    )?;
    let figure = render(
        Some(&format!(
            "ResNet18 (width {width}) with its BatchNorm swapped out"
        )),
        &panels,
        2,
        (560, 380),
    )?;

    out.text(format!(
        "torchvision's ResNet18 layout with the CIFAR stem (3×3 first convolution, no \
         max-pool), {width} channels in the first stage (64 in the original), trained from the \
         same seed with every BatchNorm replaced by the normalizer named, on the same \
         {images_seen} {images}: {} steps at batch 32 and {} at batch 4, SGD (lr \
         {lr}, momentum 0.9). Test accuracy is on {} held-out images in evaluation mode. \
         LayerNorm (C×H×W) is GroupNorm with one group; LayerNorm2d normalizes the channels at \
         each position, as ConvNeXt does.",
        images_seen / 32,
        images_seen / 4,
        data.test_len(),
        images = lab.data.images(),
    ));
    out.figure(
        "swap.png",
        &figure,
        "Training loss of the same ResNet18 with each normalizer",
    )?;
    out.text(table);
    let mut summary = Vec::new();
    for batch_size in BATCH_SIZES {
        let scores: Vec<(&str, f64)> = NORMS
            .iter()
            .map(|(_, label)| {
                let name = format!(
                    "test accuracy, {}, batch {batch_size}",
                    label.to_lowercase()
                );
                (*label, out.value(&name))
            })
            .collect();
        let (best, best_score) = scores
            .iter()
            .copied()
            .fold(("", f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
        summary.push(format!(
            "at batch {batch_size} the best is {best} ({best_score:.1}%)"
        ));
    }
    let drop = |label: &str, out: &Output| {
        let key = label.to_lowercase();
        out.value(&format!("test accuracy, {key}, batch 32"))
            - out.value(&format!("test accuracy, {key}, batch 4"))
    };
    out.text(format!(
        "Swapping is one word in the configuration (`.with_norm(\"group:4\".parse()?)`), and \
         the parameter count does not change: every normalizer here has one scale and one \
         shift per channel. On these runs {}. From batch 32 to batch 4, with the same images \
         seen, BatchNorm's accuracy changed by {:+.1} points and GroupNorm's by {:+.1}.",
        summary.join("; "),
        -drop("BatchNorm", out),
        -drop("GroupNorm(4)", out),
    ));
    Ok(())
}
