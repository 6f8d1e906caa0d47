//! Normalization in sequence models, on two-digit addition written out as text
//! (`37+58=095`): an LSTM without normalization, with LayerNorm and with BatchNorm; a causal
//! Transformer with LayerNorm, RMSNorm, BatchNorm and none, each pre-norm and post-norm.

use burn::tensor::Device;
use normzoo_models::{LstmConfig, NormPosition, TransformerBlockConfig, TransformerConfig};
use normzoo_norm::NormConfig;
use normzoo_train::sequence::{
    LstmLm, PROBLEM_LEN, SequenceModel, SequenceReport, SequenceTraining, VOCAB,
};

use super::Output;
use super::training_loop::{smoothed, tail_mean};
use crate::plot::{LineChart, Panel, Series, render};
use crate::{Lab, LabError};

const LSTM_NORMS: [(&str, &str); 3] = [
    ("none", "none"),
    ("layer", "LayerNorm"),
    ("batch", "BatchNorm"),
];
const TRANSFORMER_NORMS: [(&str, &str); 4] = [
    ("layer", "LayerNorm"),
    ("rms", "RMSNorm"),
    ("batch", "BatchNorm"),
    ("none", "none"),
];

/// One trained model: its name and what training did.
struct Run {
    label: String,
    report: SequenceReport,
}

fn lstm(d_hidden: usize, norm: &str, device: &Device) -> Result<SequenceModel, LabError> {
    let config = LstmConfig::new(32, d_hidden).with_norm(norm.parse::<NormConfig>()?);
    Ok(SequenceModel::Lstm(LstmLm::new(&config, device)?))
}

fn transformer(
    d_model: usize,
    norm: &str,
    position: NormPosition,
    device: &Device,
) -> Result<SequenceModel, LabError> {
    let block = TransformerBlockConfig::new(d_model, 4)
        .with_norm(norm.parse::<NormConfig>()?)
        .with_position(position);
    let config = TransformerConfig::new(VOCAB.len(), PROBLEM_LEN, block);
    Ok(SequenceModel::Transformer(config.init_causal_lm(device)?))
}

pub(super) fn run(lab: &Lab, out: &mut Output) -> Result<(), LabError> {
    let training = SequenceTraining {
        steps: lab.size.pick(8, 1500, 5000),
        batch_size: 64,
        lr: 3e-3,
        seed: lab.seed,
        test_problems: lab.size.pick(64, 1000, 2000),
        ..Default::default()
    };
    let d_hidden = lab.size.pick(16, 64, 128);
    let d_model = lab.size.pick(16, 32, 64);
    let device = lab.device.clone().autodiff();
    let models = LSTM_NORMS.len() + 2 * TRANSFORMER_NORMS.len();
    let bar = lab.progress_bar(models * training.steps, "sequences: training");
    let fit = |model: SequenceModel, label: String| {
        let (_, report) = training.run(model, &device, |_, _| bar.inc(1));
        Run { label, report }
    };

    let mut lstms = Vec::new();
    for (norm, label) in LSTM_NORMS {
        device.seed(lab.seed);
        lstms.push(fit(lstm(d_hidden, norm, &device)?, label.to_string()));
    }
    let mut transformers = Vec::new();
    for (position, where_) in [(NormPosition::Pre, "pre"), (NormPosition::Post, "post")] {
        for (norm, label) in TRANSFORMER_NORMS {
            device.seed(lab.seed);
            let model = transformer(d_model, norm, position, &device)?;
            transformers.push(fit(model, format!("{label}, {where_}-norm")));
        }
    }
    bar.finish_and_clear();

    let window = (training.steps / 30).max(1);
    let curves = |runs: &[Run]| -> Vec<Series> {
        runs.iter()
            .map(|run| {
                let losses: Vec<f64> = run.report.losses.iter().map(|&l| l as f64).collect();
                Series::new(run.label.clone(), smoothed(&losses, window))
            })
            .collect()
    };
    let mut table = String::from(
        "| model | normalizer | final loss (last 10%) | answers right |\n|---|---|---|---|\n",
    );
    for (model, runs) in [("LSTM", &lstms), ("Transformer", &transformers)] {
        for run in runs {
            let losses: Vec<f64> = run.report.losses.iter().map(|&l| l as f64).collect();
            let final_loss = tail_mean(&losses, 0.1);
            let accuracy = 100.0 * run.report.accuracy;
            let key = format!("{}, {}", model.to_lowercase(), run.label.to_lowercase());
            out.finding(format!("final loss, {key}"), final_loss);
            out.finding(format!("accuracy, {key}"), accuracy);
            let loss = if final_loss.is_finite() {
                format!("{final_loss:.3}")
            } else {
                "diverged (NaN)".into()
            };
            table.push_str(&format!(
                "| {model} | {} | {loss} | {accuracy:.1}% |\n",
                run.label
            ));
        }
    }
    let lstm_curves = curves(&lstms);
    let transformer_curves = curves(&transformers);
    out.csv("loss-lstm.csv", "step", "training loss", &lstm_curves)?;
    out.csv(
        "loss-transformer.csv",
        "step",
        "training loss",
        &transformer_curves,
    )?;
    let panel = |title: String, series| {
        Panel::Lines(LineChart {
            title,
            x_label: "step".into(),
            y_label: "cross-entropy of the answer digits".into(),
            log_y: true,
            series,
            ..LineChart::default()
        })
    };
    let figure = render(
        Some("Two-digit addition, one answer digit at a time"),
        &[
            panel(format!("LSTM (hidden {d_hidden})"), lstm_curves),
            panel(
                format!("Transformer (2 blocks, width {d_model})"),
                transformer_curves,
            ),
        ],
        2,
        (600, 420),
    )?;

    out.text(format!(
        "Causal models read `ab+cd=` and predict the three answer digits one at a time \
         (`37+58=095`). Each trains from the same seed for {} steps of Adam (lr {}) on {} \
         fresh problems per step; *answers right* is the share of {} held-out problems whose \
         three digits are all right, in evaluation mode. The LSTM (one layer, hidden {d_hidden}) \
         normalizes its gate pre-activations and its cell output (Ba et al.'s layer-normalized \
         LSTM); the Transformer has 2 blocks of width {d_model} with 4 heads. BatchNorm in a \
         causal model computes its statistics over the batch *and every position*, so in \
         training each position's output depends on the later tokens of its sequence: its \
         training loss sees a little of the answer, and its evaluation, with running \
         statistics, does not.",
        training.steps, training.lr, training.batch_size, training.test_problems
    ));
    out.figure(
        "sequences.png",
        &figure,
        "Training loss of the LSTM and the Transformer with each normalizer",
    )?;
    out.text(table);
    // The best accuracy and every model that reached it (ties are common at 100%).
    let best = |runs: &[Run]| {
        let top = runs
            .iter()
            .map(|run| run.report.accuracy)
            .fold(f64::MIN, f64::max);
        let labels: Vec<&str> = runs
            .iter()
            .filter(|run| run.report.accuracy == top)
            .map(|run| run.label.as_str())
            .collect();
        format!("{} ({:.1}%)", labels.join("; "), 100.0 * top)
    };
    out.text(format!(
        "In this run the best LSTM has {} and the best Transformers have {}. Without a normalizer, pre-norm and post-norm are the same network (the same \
         numbers twice). These models are shallow (one LSTM layer, two Transformer blocks) and \
         trained briefly: normalization earns its keep with depth and long training, which \
         this run does not test.",
        best(&lstms),
        best(&transformers)
    ));
    Ok(())
}
