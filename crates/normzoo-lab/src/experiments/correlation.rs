//! How correlated a deep MLP's hidden units are, with and without LayerNorm: the correlation
//! matrix of the last hidden layer's units (the input of its ReLU) over held-out images, at
//! initialisation and after training.

use normzoo_models::MlpConfig;
use normzoo_norm::NormConfig;

use super::Output;
use super::training_loop::{Data, Schedule, host_values, relu_inputs, train};
use crate::plot::{Heatmap, Panel, Series, render};
use crate::{Lab, LabError};

const NORMS: [(&str, &str); 2] = [("none", "none"), ("layer", "LayerNorm")];
/// The units shown: a 32 × 32 heatmap stays readable.
const UNITS: usize = 32;

/// The Pearson correlation matrix of the columns of `values` (`rows × columns`, row-major). A
/// constant column (a dead unit) correlates 0 with every other and 1 with itself.
fn correlation(values: &[f32], columns: usize) -> Vec<Vec<f32>> {
    let rows = values.len() / columns;
    let column = |j: usize| values.iter().skip(j).step_by(columns).map(|&v| v as f64);
    let centred: Vec<Vec<f64>> = (0..columns)
        .map(|j| {
            let mean = column(j).sum::<f64>() / rows as f64;
            column(j).map(|v| v - mean).collect()
        })
        .collect();
    let norms: Vec<f64> = centred
        .iter()
        .map(|c| c.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    (0..columns)
        .map(|i| {
            (0..columns)
                .map(|j| {
                    if i == j {
                        1.0
                    } else if norms[i] == 0.0 || norms[j] == 0.0 {
                        0.0
                    } else {
                        let dot: f64 = centred[i].iter().zip(&centred[j]).map(|(a, b)| a * b).sum();
                        (dot / (norms[i] * norms[j])) as f32
                    }
                })
                .collect()
        })
        .collect()
}

/// The mean absolute off-diagonal entry of a correlation matrix.
fn mean_abs_off_diagonal(matrix: &[Vec<f32>]) -> f64 {
    let n = matrix.len();
    let sum: f64 = matrix
        .iter()
        .enumerate()
        .flat_map(|(i, row)| {
            row.iter()
                .enumerate()
                .filter(move |(j, _)| *j != i)
                .map(|(_, &r)| r.abs() as f64)
        })
        .sum();
    sum / (n * (n - 1)) as f64
}

pub(super) fn run(lab: &Lab, out: &mut Output) -> Result<(), LabError> {
    let depth = lab.size.pick(4, 8, 12);
    let schedule = Schedule {
        steps: lab.size.pick(10, 300, 2000),
        batch_size: 32,
        lr: 0.02,
    };
    let data = Data::new(lab, lab.size.pick(64, 512, 1000));
    let (images, _) = data.test_set(&lab.device);
    let device = lab.device.clone().autodiff();
    let bar = lab.progress_bar(NORMS.len() * schedule.steps, "correlation: training");

    let mut panels = Vec::new();
    let mut rows = Vec::new();
    let mut matrices = Vec::new();
    for (norm, label) in NORMS {
        device.seed(lab.seed);
        let mlp = MlpConfig::new(32 * 32 * 3, UNITS, depth, 10)
            .with_norm(norm.parse::<NormConfig>()?)
            .init(&device)?;
        let last_layer = |mlp: &normzoo_models::Mlp| {
            let inputs = relu_inputs(mlp, images.clone());
            correlation(&host_values(inputs[depth - 1].clone()), UNITS)
        };
        let at_init = last_layer(&mlp);
        let (mlp, _) = train(mlp, schedule, &data, &device, &bar);
        let trained = last_layer(&mlp);
        let key = label.to_lowercase();
        let before = out.finding(
            format!("mean |r| at init, {key}"),
            mean_abs_off_diagonal(&at_init),
        );
        let after = out.finding(
            format!("mean |r| after training, {key}"),
            mean_abs_off_diagonal(&trained),
        );
        rows.push(format!("| {label} | {before:.3} | {after:.3} |"));
        for (when, matrix) in [("at init", at_init), ("after training", trained)] {
            matrices.extend(matrix.iter().enumerate().map(|(i, row)| {
                Series::new(
                    format!("{label} {when} unit {i}"),
                    row.iter()
                        .enumerate()
                        .map(|(j, &r)| (j as f64, r as f64))
                        .collect(),
                )
            }));
            panels.push(Panel::Heatmap(Heatmap {
                title: format!("{label}, {when}"),
                values: matrix,
            }));
        }
    }
    bar.finish_and_clear();
    out.csv("correlations.csv", "other unit", "correlation", &matrices)?;
    let figure = render(
        Some(&format!(
            "Correlation of the last hidden layer's {UNITS} units"
        )),
        &panels,
        2,
        (420, 420),
    )?;

    out.text(format!(
        "A {depth}-layer ReLU MLP with {UNITS} units per layer, without normalization and with \
         LayerNorm after each linear layer, trained from the same seed for {} steps (SGD, \
         batch {}, lr {}, momentum 0.9). The heatmaps show the Pearson correlation between \
         each pair of units of the last hidden layer (their ReLU inputs), over {} held-out \
         {images}: red +1, white 0, blue −1.",
        schedule.steps,
        schedule.batch_size,
        schedule.lr,
        data.test_len(),
        images = lab.data.images(),
    ));
    out.figure(
        "correlation.png",
        &figure,
        "Unit-by-unit correlation of the last hidden layer",
    )?;
    out.text(format!(
        "| normalizer | mean \\|r\\| off the diagonal, at init | after training |\n|---|---|---|\n{}",
        rows.join("\n")
    ));
    let value = |what: &str, out: &Output| out.value(&format!("mean |r| {what}"));
    out.text(format!(
        "Mean |r| off the diagonal: {:.2} without normalization and {:.2} with LayerNorm at \
         initialisation; {:.2} and {:.2} after training.",
        value("at init, none", out),
        value("at init, layernorm", out),
        value("after training, none", out),
        value("after training, layernorm", out),
    ));
    if value("after training, none", out) > value("after training, layernorm", out) {
        out.text(
            "Without normalization, every unit of a deep layer is scaled by the same factor that \
             the layers below give each image (how large its activations came out), and that \
             shared factor makes units move together. LayerNorm divides it out of each image's \
             vector of units, and subtracting each image's mean across units leaves the units \
             summing to zero, which pulls their correlations towards −1/(units − 1).",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_of_known_columns() {
        // Columns: x, 2x + 1, −x, constant.
        let values: Vec<f32> = (0..5)
            .flat_map(|i| {
                let x = i as f32;
                [x, 2.0 * x + 1.0, -x, 3.0]
            })
            .collect();
        let r = correlation(&values, 4);
        assert!((r[0][1] - 1.0).abs() < 1e-6);
        assert!((r[0][2] + 1.0).abs() < 1e-6);
        assert_eq!(r[0][3], 0.0);
        assert_eq!(r[3][3], 1.0);
        // |r| off the diagonal: three pairs of 1 and three pairs with the constant column.
        assert!((mean_abs_off_diagonal(&r) - 0.5).abs() < 1e-6);
    }
}
