//! The same CNN with each normalizer (and none), at a normal and at a high learning rate:
//! training loss and test accuracy as training goes.

use burn::module::Module;
use normzoo_norm::NormConfig;

use super::Output;
use super::training_loop::{Data, Schedule, accuracy, smoothed, tail_mean, train_measuring};
use crate::plot::{LineChart, Panel, Series, render};
use crate::{Lab, LabError, SmallCnnConfig};

/// The normalizers compared, with how the report names them. In a CNN "LayerNorm" normalizes
/// each sample over all of `C × H × W`, which is GroupNorm with one group.
pub(super) const CNN_NORMS: [(&str, &str); 5] = [
    ("none", "none"),
    ("batch", "BatchNorm"),
    ("group:1", "LayerNorm"),
    ("group:8", "GroupNorm(8)"),
    ("instance", "InstanceNorm"),
];

/// One training run: the loss of every step and the test accuracy at each checkpoint.
struct Curves {
    losses: Vec<f64>,
    accuracy: Vec<(f64, f64)>,
}

fn train_and_score(
    lab: &Lab,
    norm: &str,
    schedule: Schedule,
    checkpoints: usize,
    data: &Data,
    bar: &indicatif::ProgressBar,
) -> Result<Curves, LabError> {
    let device = lab.device.clone().autodiff();
    device.seed(lab.seed);
    let config = SmallCnnConfig::new().with_norm(norm.parse::<NormConfig>()?);
    let model = config.init(&device)?;
    let (images, labels) = data.test_set(&lab.device);
    let mut scores = Vec::new();
    let (_, losses) = train_measuring(
        model,
        schedule,
        checkpoints,
        data,
        &device,
        bar,
        |model, step| {
            let score = accuracy(&model.valid(), images.clone(), labels.clone());
            scores.push((step as f64, 100.0 * score));
        },
    );
    Ok(Curves {
        losses,
        accuracy: scores,
    })
}

pub(super) fn run(lab: &Lab, out: &mut Output) -> Result<(), LabError> {
    let steps = lab.size.pick(12, 300, 2000);
    let rates = [0.05, 0.5];
    let checkpoints = lab.size.pick(2, 6, 10);
    let data = Data::new(lab, lab.size.pick(64, 320, 1000));
    let bar = lab.progress_bar(
        CNN_NORMS.len() * rates.len() * steps,
        "convergence: training",
    );
    let mut panels = Vec::new();
    let mut rows = Vec::new();
    for lr in rates {
        let schedule = Schedule {
            steps,
            batch_size: 32,
            lr,
        };
        let mut losses = Vec::new();
        let mut scores = Vec::new();
        for (norm, label) in CNN_NORMS {
            let curves = train_and_score(lab, norm, schedule, checkpoints, &data, &bar)?;
            let final_loss = tail_mean(&curves.losses, 0.1);
            let final_accuracy = curves.accuracy.last().map_or(f64::NAN, |p| p.1);
            let diverged = curves.losses.iter().any(|loss| loss.is_nan());
            let key = label.to_lowercase();
            out.finding(format!("final loss, {key}, lr {lr}"), final_loss);
            out.finding(format!("final accuracy, {key}, lr {lr}"), final_accuracy);
            out.finding(format!("diverged, {key}, lr {lr}"), diverged as u8 as f64);
            rows.push((label, lr, final_loss, final_accuracy, diverged));
            losses.push(Series::new(
                label,
                smoothed(&curves.losses, (steps / 30).max(1)),
            ));
            scores.push(Series::new(label, curves.accuracy));
        }
        out.csv(
            &format!("loss-lr{lr}.csv"),
            "step",
            "training loss",
            &losses,
        )?;
        out.csv(
            &format!("accuracy-lr{lr}.csv"),
            "step",
            "test accuracy (%)",
            &scores,
        )?;
        panels.push(Panel::Lines(LineChart {
            title: format!("training loss, lr {lr}"),
            x_label: "step".into(),
            y_label: "cross-entropy (window mean)".into(),
            log_y: true,
            series: losses,
            ..LineChart::default()
        }));
        panels.push(Panel::Lines(LineChart {
            title: format!("test accuracy, lr {lr}"),
            x_label: "step".into(),
            y_label: "accuracy (%)".into(),
            log_y: false,
            series: scores,
            ..LineChart::default()
        }));
    }
    bar.finish_and_clear();
    let figure = render(
        Some("The same CNN with each normalizer"),
        &panels,
        2,
        (560, 380),
    )?;

    out.text(format!(
        "The lab's small CNN (three 3×3 convolutions, 16-32-64 channels, each followed by the \
         normalizer and ReLU; a convolution has a bias only without a normalizer) trains for \
         {steps} steps of 32 {images} with SGD (momentum 0.9) at lr {} and at lr {}, \
         from the same initial weights. LayerNorm in a CNN normalizes each sample over all of \
         C×H×W (GroupNorm with one group). Test accuracy is on {} held-out images, in \
         evaluation mode.",
        rates[0],
        rates[1],
        data.test_len(),
        images = lab.data.images(),
    ));
    out.figure(
        "convergence.png",
        &figure,
        "Training loss and test accuracy, per normalizer",
    )?;
    let mut table = String::from(
        "| normalizer | lr | final loss (last 10% of steps) | test accuracy |\n|---|---|---|---|\n",
    );
    for (label, lr, loss, accuracy, diverged) in &rows {
        if *diverged {
            table.push_str(&format!("| {label} | {lr} | diverged (NaN) | — |\n"));
        } else {
            table.push_str(&format!(
                "| {label} | {lr} | {loss:.3} | {accuracy:.1}% |\n"
            ));
        }
    }
    out.text(table);
    let high = rates[1];
    let none_high = rows
        .iter()
        .find(|(label, lr, ..)| *label == "none" && *lr == high)
        .expect("every normalizer ran at every rate");
    let outcome = match none_high {
        (.., true) => "diverged (its loss became NaN)".to_string(),
        (_, _, loss, accuracy, _) if *loss > 2.2 => format!(
            "did not learn: its loss sits at {loss:.3}, about ln 10 ≈ 2.303, the loss of \
             predicting every class alike, and it scores {accuracy:.1}%"
        ),
        (_, _, loss, accuracy, _) => {
            format!("still trained (loss {loss:.3}, accuracy {accuracy:.1}%)")
        }
    };
    let normalized_high: Vec<String> = rows
        .iter()
        .filter(|(label, lr, ..)| *label != "none" && *lr == high)
        .map(|(label, _, _, accuracy, _)| format!("{label} {accuracy:.1}%"))
        .collect();
    out.text(format!(
        "At lr {high} the network without normalization {outcome}. With a normalizer, at the \
         same learning rate, the test accuracies are: {}.",
        normalized_high.join(", ")
    ));
    Ok(())
}
