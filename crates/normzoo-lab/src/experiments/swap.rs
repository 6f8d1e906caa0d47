//! BatchNorm swapped out of a ResNet18 for LayerNorm and GroupNorm: the same network, the same
//! initial convolutions and data, the normalizer the only change; accuracy side by side, at a
//! usual batch size and at a small one.

use burn::module::Module;
use normzoo_models::ResNetConfig;
use normzoo_norm::NormConfig;

use super::Output;
use super::train::{Data, Schedule, accuracy, smoothed, tail_mean, train};
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
    let steps = lab.size.pick(6, 150, 1500);
    let lr = 0.02;
    let data = Data::new(lab.seed, lab.size.pick(64, 320, 1000));
    let device = lab.device.clone().autodiff();
    let (images, labels) = data.test_set(&lab.device);
    let bar = lab.progress_bar(NORMS.len() * BATCH_SIZES.len() * steps, "swap: training");

    let mut panels = Vec::new();
    let mut table = String::from(
        "| normalizer | batch size | final training loss (last 10%) | test accuracy |\n|---|---|---|---|\n",
    );
    let mut accuracies = vec![Vec::new(); NORMS.len()];
    for batch_size in BATCH_SIZES {
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
            title: format!("training loss, batch {batch_size}"),
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
         same seed with every BatchNorm replaced by the normalizer named: {steps} steps of SGD \
         (lr {lr}, momentum 0.9) at batch 32 and at batch 4, on the generated images; test \
         accuracy on {} held-out images in evaluation mode. LayerNorm (C×H×W) is GroupNorm \
         with one group; LayerNorm2d normalizes the channels at each position, as ConvNeXt \
         does.",
        data.test_len()
    ));
    out.figure(
        "swap.png",
        &figure,
        "Training loss of the same ResNet18 with each normalizer",
    )?;
    out.text(table);
    let at = |label: &str, batch: usize, out: &Output| {
        out.value(&format!(
            "test accuracy, {}, batch {batch}",
            label.to_lowercase()
        ))
    };
    let (bn32, bn4) = (at("BatchNorm", 32, out), at("BatchNorm", 4, out));
    let (gn32, gn4) = (at("GroupNorm(4)", 32, out), at("GroupNorm(4)", 4, out));
    out.text(format!(
        "Swapping is one word in the configuration (`.with_norm(\"group:4\".parse()?)`): the \
         parameter count does not change, since every normalizer here has one scale and one \
         shift per channel. From batch 32 to batch 4, BatchNorm's test accuracy went from \
         {bn32:.1}% to {bn4:.1}% and GroupNorm's from {gn32:.1}% to {gn4:.1}%: the \
         normalizers with per-sample statistics do not see the batch size, BatchNorm's \
         estimates of the mean and variance get noisier as the batch shrinks."
    ));
    Ok(())
}
