//! The "forgot `model.eval()`" mistake, measured: a BatchNorm CNN scored with its running
//! statistics (evaluation mode) and with batch statistics (training mode, on test batches of
//! 32 and on one image at a time), as training goes; and how far a fresh model's outputs
//! move between the two modes with BatchNorm and with LayerNorm.

use burn::module::Module;
use burn::tensor::Tensor;
use normzoo_norm::{NormConfig, StatsMode};

use super::Output;
use super::training_loop::{Data, Schedule, batched_accuracy, train_measuring};
use crate::plot::{LineChart, Panel, Series, render};
use crate::{Lab, LabError, SmallCnnConfig};

/// The largest difference between a fresh model's logits in training and in evaluation mode.
fn mode_gap(config: &SmallCnnConfig, images: Tensor<4>, lab: &Lab) -> Result<f64, LabError> {
    let device = lab.device.clone().autodiff();
    device.seed(lab.seed);
    let model = config.init(&device)?.valid();
    let evaluated = model.forward(images.clone());
    // `valid()` copies the running statistics, so the training-mode pass leaves them alone.
    let trained = model.valid().with_mode(StatsMode::Train).forward(images);
    Ok((trained - evaluated).abs().max().into_scalar::<f32>() as f64)
}

pub(super) fn run(lab: &Lab, out: &mut Output) -> Result<(), LabError> {
    let schedule = Schedule {
        steps: lab.size.pick(20, 400, 2000),
        batch_size: 32,
        lr: 0.05,
    };
    let checkpoints = lab.size.pick(4, 10, 20);
    let test_len = lab.size.pick(64, 320, 1000);
    let device = lab.device.clone().autodiff();
    let inner = lab.device.clone();
    let data = Data::new(lab, test_len);
    let (images, labels) = data.test_set(&inner);

    // A fresh model: the two modes with BatchNorm and with LayerNorm.
    let sample = images.clone().narrow(0, 0, 32.min(test_len));
    let batch_gap = out.finding(
        "fresh model train/eval max logit difference, batch",
        mode_gap(&SmallCnnConfig::new(), sample.clone(), lab)?,
    );
    let layer = SmallCnnConfig::new().with_norm(NormConfig::group(1));
    let layer_gap = out.finding(
        "fresh model train/eval max logit difference, layer",
        mode_gap(&layer, sample, lab)?,
    );

    // Training a BatchNorm model, scored both ways along the way.
    device.seed(lab.seed);
    let model = SmallCnnConfig::new().init(&device)?;
    let bar = lab.progress_bar(schedule.steps, "train-eval: training");
    let mut series = [
        Series::new("evaluation mode (running statistics)", Vec::new()),
        Series::new("training mode, test batches of 32", Vec::new()),
        Series::new("training mode, one image at a time", Vec::new()),
    ];
    train_measuring(
        model,
        schedule,
        checkpoints,
        &data,
        &device,
        &bar,
        |model, step| {
            let evaluated = model.valid();
            let forgot = || model.valid().with_mode(StatsMode::Train);
            let scores = [
                batched_accuracy(&evaluated, &images, &labels, 32),
                batched_accuracy(&forgot(), &images, &labels, 32),
                batched_accuracy(&forgot(), &images, &labels, 1),
            ];
            for (line, score) in series.iter_mut().zip(scores) {
                line.points.push((step as f64, 100.0 * score));
            }
        },
    );
    bar.finish_and_clear();
    let last = |line: &Series| line.points.last().map_or(f64::NAN, |p| p.1);
    let first_after_start = |line: &Series| line.points.get(1).map_or(f64::NAN, |p| p.1);
    let eval_final = out.finding("final accuracy, evaluation mode", last(&series[0]));
    let batch_final = out.finding(
        "final accuracy, training mode, batches of 32",
        last(&series[1]),
    );
    let single_final = out.finding("final accuracy, training mode, one image", last(&series[2]));
    let early_eval = out.finding(
        "early accuracy, evaluation mode",
        first_after_start(&series[0]),
    );
    let early_batch = out.finding(
        "early accuracy, training mode, batches of 32",
        first_after_start(&series[1]),
    );

    out.csv("accuracy.csv", "step", "test accuracy (%)", &series)?;
    let chart = LineChart {
        title: "A BatchNorm CNN scored in each mode".into(),
        x_label: "training step".into(),
        y_label: "test accuracy (%)".into(),
        log_y: false,
        series: series.to_vec(),
        ..LineChart::default()
    };
    let figure = render(None, &[Panel::Lines(chart)], 1, (760, 460))?;

    out.text(format!(
        "The lab's small CNN (three 3×3 convolutions, 16-32-64 channels, each followed by \
         BatchNorm and ReLU) trains on the {images} (batch {}, SGD lr {}, momentum \
         0.9). At {checkpoints} points along the way it is scored on {test_len} held-out images \
         in evaluation mode, as it should be, and in training mode: what a forgotten \
         `model.eval()` (burn: `model.valid()`) does, each test batch normalized with its own \
         statistics.",
        schedule.batch_size,
        schedule.lr,
        images = lab.data.images(),
    ));
    out.figure(
        "train-eval.png",
        &figure,
        "Test accuracy in evaluation and in training mode",
    )?;
    out.text(format!(
        "| | evaluation mode | training mode, batches of 32 | training mode, one image |\n\
         |---|---|---|---|\n\
         | after {} steps | {early_eval:.1}% | {early_batch:.1}% | {:.1}% |\n\
         | after {} steps | {eval_final:.1}% | {batch_final:.1}% | {single_final:.1}% |",
        schedule.steps / checkpoints,
        first_after_start(&series[2]),
        schedule.steps,
    ));
    let early_steps = schedule.steps / checkpoints;
    let lag = if early_batch - early_eval > 2.0 {
        format!(
            "After {early_steps} steps the running statistics (momentum 0.1) still lag the \
             weights: evaluation mode scores {early_eval:.1}% where batch statistics give \
             {early_batch:.1}%."
        )
    } else {
        format!(
            "After {early_steps} steps the two are already within {:.1} points \
             ({early_eval:.1}% with the running statistics, {early_batch:.1}% with batch \
             statistics): at momentum 0.1 the running averages forget a batch within a few \
             dozen steps, faster than these weights move.",
            (early_batch - early_eval).abs()
        )
    };
    out.text(format!(
        "Scoring one image at a time in training mode normalizes each image with its own \
         per-channel statistics, so the information BatchNorm's running averages carry is \
         lost: {single_final:.1}% against {eval_final:.1}%. {lag}\n\n\
         For a fresh model, the largest logit difference between the two modes is \
         {batch_gap:.3} with BatchNorm (running statistics start at mean 0, variance 1, far \
         from the batch's) and {layer_gap:.1e} with LayerNorm (GroupNorm with one group: every \
         statistic is per sample, so there is no mode to forget)."
    ));
    Ok(())
}
