//! The distribution of each layer's activations (the input of its ReLU) as a deep MLP trains,
//! without normalization and with BatchNorm: Ioffe & Szegedy's picture of "internal covariate
//! shift", measured. An animated GIF of the histograms and a still PNG of their percentiles.

use normzoo_models::MlpConfig;
use normzoo_norm::NormConfig;

use super::Output;
use super::training_loop::{Data, Schedule, host_values, relu_inputs, train_measuring};
use crate::plot::{LineChart, Panel, Series, render};
use crate::{Lab, LabError};

const NORMS: [(&str, &str); 2] = [("none", "none"), ("batch", "BatchNorm")];
const PERCENTILES: [f64; 3] = [15.0, 50.0, 85.0];
const BINS: usize = 40;

/// The `p`-th percentile of sorted values (nearest rank).
fn percentile(sorted: &[f32], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64
}

/// A density histogram of `values` over `range` in [`BINS`] bins, as `(bin centre, density)`;
/// values outside the range are not counted.
fn histogram(values: &[f32], (lo, hi): (f64, f64)) -> Vec<(f64, f64)> {
    let width = (hi - lo) / BINS as f64;
    let mut counts = [0usize; BINS];
    for &v in values {
        let bin = ((v as f64 - lo) / width).floor();
        if (0.0..BINS as f64).contains(&bin) {
            counts[bin as usize] += 1;
        }
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            (
                lo + (i as f64 + 0.5) * width,
                c as f64 / (values.len() as f64 * width),
            )
        })
        .collect()
}

/// One normalizer's activations: per snapshot (a step), per layer, sorted.
struct Snapshots {
    steps: Vec<usize>,
    layers: Vec<Vec<Vec<f32>>>,
}

impl Snapshots {
    /// The range from the 0.5th to the 99.5th percentile over every snapshot and layer.
    fn range(&self) -> (f64, f64) {
        self.layers
            .iter()
            .flatten()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), values| {
                (
                    lo.min(percentile(values, 0.5)),
                    hi.max(percentile(values, 99.5)),
                )
            })
    }

    /// The spread between the 15th and the 85th percentile of `layer` at `snapshot`.
    fn spread(&self, snapshot: usize, layer: usize) -> f64 {
        let values = &self.layers[snapshot][layer];
        percentile(values, 85.0) - percentile(values, 15.0)
    }

    fn median(&self, snapshot: usize, layer: usize) -> f64 {
        percentile(&self.layers[snapshot][layer], 50.0)
    }
}

pub(super) fn run(lab: &Lab, out: &mut Output) -> Result<(), LabError> {
    let depth = lab.size.pick(4, 6, 8);
    let width = lab.size.pick(32, 64, 128);
    let schedule = Schedule {
        steps: lab.size.pick(12, 400, 2000),
        batch_size: 32,
        lr: 0.02,
    };
    let frames = lab.size.pick(3, 16, 25);
    let data = Data::new(lab, lab.size.pick(64, 256, 512));
    let (images, _) = data.test_set(&lab.device);
    let device = lab.device.clone().autodiff();
    let bar = lab.progress_bar(NORMS.len() * schedule.steps, "distributions: training");

    let mut runs = Vec::new();
    for (norm, _) in NORMS {
        device.seed(lab.seed);
        let mlp = MlpConfig::new(32 * 32 * 3, width, depth, 10)
            .with_norm(norm.parse::<NormConfig>()?)
            .init(&device)?;
        let mut snapshots = Snapshots {
            steps: Vec::new(),
            layers: Vec::new(),
        };
        train_measuring(mlp, schedule, frames, &data, &device, &bar, |mlp, step| {
            let layers = relu_inputs(mlp, images.clone())
                .into_iter()
                .map(|z| {
                    let mut values = host_values(z);
                    values.sort_unstable_by(f32::total_cmp);
                    values
                })
                .collect();
            snapshots.steps.push(step);
            snapshots.layers.push(layers);
        });
        runs.push(snapshots);
    }
    bar.finish_and_clear();

    // The animation: one frame per snapshot, both normalizers side by side on fixed axes.
    let ranges: Vec<(f64, f64)> = runs.iter().map(Snapshots::range).collect();
    let mut histograms = Vec::new();
    let mut frames_drawn = Vec::new();
    let heights: Vec<f64> = runs
        .iter()
        .zip(&ranges)
        .map(|(run, &range)| {
            run.layers
                .iter()
                .flatten()
                .flat_map(|values| histogram(values, range))
                .fold(0.0, |max: f64, (_, density)| max.max(density))
        })
        .collect();
    // A run that diverged stopped being measured: show the snapshots both have.
    let snapshots = runs.iter().map(|run| run.steps.len()).min().unwrap_or(0);
    for snapshot in 0..snapshots {
        let step = runs[0].steps[snapshot];
        let panels: Vec<Panel> = runs
            .iter()
            .zip(NORMS)
            .enumerate()
            .map(|(index, (run, (_, label)))| {
                let series = (0..depth)
                    .map(|layer| {
                        let points = histogram(&run.layers[snapshot][layer], ranges[index]);
                        let name = format!("layer {}", layer + 1);
                        histograms.push(Series::new(
                            format!("{label} {name} step {step}"),
                            points.clone(),
                        ));
                        Series::new(name, points)
                    })
                    .collect();
                Panel::Lines(LineChart {
                    title: label.to_string(),
                    x_label: "input of the ReLU".into(),
                    y_label: "density".into(),
                    log_y: false,
                    series,
                    x_range: Some(ranges[index]),
                    y_range: Some((0.0, heights[index] * 1.05)),
                })
            })
            .collect();
        frames_drawn.push(render(
            Some(&format!("Activations per layer after {step} steps")),
            &panels,
            2,
            (480, 360),
        )?);
    }
    out.csv("histograms.csv", "activation", "density", &histograms)?;

    // The still: percentiles of the first and the last layer as training goes.
    let mut percentile_series = Vec::new();
    let panels: Vec<Panel> = runs
        .iter()
        .zip(NORMS)
        .map(|(run, (_, label))| {
            let series: Vec<Series> = [0, depth - 1]
                .into_iter()
                .flat_map(|layer| {
                    PERCENTILES.into_iter().map(move |p| {
                        let points = run
                            .steps
                            .iter()
                            .zip(&run.layers)
                            .map(|(&step, layers)| (step as f64, percentile(&layers[layer], p)))
                            .collect();
                        Series::new(format!("layer {}, p{p}", layer + 1), points)
                    })
                })
                .collect();
            percentile_series.extend(
                series
                    .iter()
                    .map(|s| Series::new(format!("{label} {}", s.name), s.points.clone())),
            );
            Panel::Lines(LineChart {
                title: label.to_string(),
                x_label: "training step".into(),
                y_label: "percentiles of the ReLU input".into(),
                log_y: false,
                series,
                ..LineChart::default()
            })
        })
        .collect();
    out.csv("percentiles.csv", "step", "activation", &percentile_series)?;
    let still = render(
        Some("15th, 50th and 85th percentiles of the first and last layer"),
        &panels,
        2,
        (520, 380),
    )?;

    out.text(format!(
        "A {depth}-layer ReLU MLP (width {width}) trains on the {images} ({} steps of \
         SGD, batch {}, lr {}, momentum 0.9), once without normalization and once with \
         BatchNorm after each linear layer. At {} points along the way the input of every \
         ReLU is recorded on the same {} held-out images, with batch statistics as training \
         sees them.",
        schedule.steps,
        schedule.batch_size,
        schedule.lr,
        frames + 1,
        data.test_len(),
        images = lab.data.images(),
    ));
    out.animation(
        "distributions.gif",
        &frames_drawn,
        500,
        "Histograms of each layer's ReLU input as training goes (animated)",
    )?;
    out.figure(
        "percentiles.png",
        &still,
        "Percentiles (15, 50, 85) of the first and last layer's ReLU input over training",
    )?;

    let last = snapshots - 1;
    let mut table = String::from(
        "| normalizer | last/first layer spread at init | last layer: spread after / before training | last layer: median moved by (in initial spreads) |\n|---|---|---|---|\n",
    );
    for (run, (_, label)) in runs.iter().zip(NORMS) {
        let key = label.to_lowercase();
        let depth_ratio = out.finding(
            format!("spread last/first layer at init, {key}"),
            run.spread(0, depth - 1) / run.spread(0, 0),
        );
        let growth = out.finding(
            format!("spread after/before training, last layer, {key}"),
            run.spread(last, depth - 1) / run.spread(0, depth - 1),
        );
        let drift = out.finding(
            format!("median drift in initial spreads, last layer, {key}"),
            (run.median(last, depth - 1) - run.median(0, depth - 1)).abs()
                / run.spread(0, depth - 1),
        );
        table.push_str(&format!(
            "| {label} | {depth_ratio:.3} | {growth:.3} | {drift:.3} |\n"
        ));
    }
    out.text(table);
    out.text(
        "The *spread* is the distance between the 15th and 85th percentiles. With BatchNorm \
         every layer's ReLU input has mean β and standard deviation γ per unit, whatever the \
         weights do, so its distribution can only move as fast as γ and β are trained; without \
         normalization each layer's scale is whatever the layers below make it, and it moves \
         whenever they are updated.",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_histograms_of_known_values() {
        let values: Vec<f32> = (0..=100).map(|v| v as f32).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 15.0), 15.0);
        // 400 evenly spaced values in [0, 100): ten in each bin of width 2.5.
        let spaced: Vec<f32> = (0..400).map(|i| (i as f32 + 0.5) * 0.25).collect();
        let density = histogram(&spaced, (0.0, 100.0));
        assert_eq!(density.len(), BINS);
        assert!(density.iter().all(|&(_, d)| (d - 0.01).abs() < 1e-12));
        assert_eq!(density[0].0, 1.25);
        // Values outside the range are not counted.
        let density = histogram(&spaced, (0.0, 50.0));
        let mass: f64 = density.iter().map(|&(_, d)| d * 50.0 / BINS as f64).sum();
        assert!((mass - 0.5).abs() < 1e-12, "{mass}");
    }
}
