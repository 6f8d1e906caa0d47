//! The training loop the experiments share: SGD with momentum on the lab's images.

use std::ops::Range;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor};
use indicatif::ProgressBar;
use normzoo_models::{Mlp, ResNet};
use normzoo_norm::StatsMode;
use normzoo_train::data::{ImageBatcher, ImageDataset};

use crate::{Lab, SmallCnn};

/// A classifier of `[N, 3, 32, 32]` images.
pub(crate) trait ImageModel: Module {
    /// The logits, `[N, classes]`.
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;
}

impl ImageModel for SmallCnn {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

impl ImageModel for ResNet {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

impl ImageModel for Mlp {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images.flatten(1, 3))
    }
}

/// How long and how fast to train.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
}

/// The images a run trains on (a stream: batch `k` is images `k·B..(k+1)·B` of the training
/// split in its seeded order, wrapping around when a real dataset runs out) and the held-out
/// ones it is scored on, from the lab's [`LabData`](crate::LabData).
pub(crate) struct Data {
    train: ImageDataset,
    test: ImageDataset,
}

impl Data {
    /// The lab's images, ordered by its seed, with `test_len` test images.
    pub(crate) fn new(lab: &Lab, test_len: usize) -> Self {
        let (train, test) = lab.data.splits(lab.seed, test_len);
        Self { train, test }
    }

    pub(crate) fn train_batch(
        &self,
        step: usize,
        batch_size: usize,
        device: &Device,
    ) -> (Tensor<4>, Tensor<1, Int>) {
        let first = step * batch_size;
        let indices = (first..first + batch_size).map(|i| i % self.train.len());
        batch(&self.train, indices, device)
    }

    /// How many held-out images [`Self::test_set`] has.
    pub(crate) fn test_len(&self) -> usize {
        self.test.len()
    }

    pub(crate) fn test_set(&self, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        batch(&self.test, 0..self.test.len(), device)
    }
}

/// The images at `indices` of `dataset`, normalized as its [`ImageSpec`] says and not augmented,
/// with their labels.
///
/// [`ImageSpec`]: normzoo_train::data::ImageSpec
fn batch(
    dataset: &ImageDataset,
    indices: impl Iterator<Item = usize>,
    device: &Device,
) -> (Tensor<4>, Tensor<1, Int>) {
    let items = indices
        .map(|i| {
            dataset
                .get(i)
                .unwrap_or_else(|err| panic!("image {i} of {dataset:?}: {err}"))
        })
        .collect();
    let batch = ImageBatcher::eval(dataset.spec()).batch(items, device);
    (batch.images, batch.labels)
}

/// SGD with momentum 0.9 (no dampening, as PyTorch's).
fn sgd() -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init()
}

/// The cross-entropy of `model` on a batch.
pub(crate) fn loss(
    model: &impl ImageModel,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
) -> Tensor<1> {
    let logits = model.logits(images);
    CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits, labels)
}

/// Trains `model` (built on an autodiff device) for `schedule.steps` steps with a fresh
/// optimizer; returns it with the loss of every step (see [`train_steps`]).
pub(crate) fn train<M: ImageModel>(
    model: M,
    schedule: Schedule,
    data: &Data,
    device: &Device,
    bar: &ProgressBar,
) -> (M, Vec<f64>) {
    train_measuring(model, schedule, 1, data, device, bar, |_, _| {})
}

/// Trains `model` on the batches of `steps` with `optim`, so that a run can be cut into
/// stretches with measurements between them. A run whose loss stops being finite has
/// diverged: it stops there, and its remaining steps read NaN.
fn train_steps<M: ImageModel>(
    mut model: M,
    optim: &mut ModuleOptimizer,
    steps: Range<usize>,
    schedule: Schedule,
    data: &Data,
    device: &Device,
    bar: &ProgressBar,
) -> (M, Vec<f64>) {
    let mut losses = Vec::with_capacity(steps.len());
    for step in steps.clone() {
        let (images, labels) = data.train_batch(step, schedule.batch_size, device);
        let loss = loss(&model, images, labels);
        let value = loss.clone().into_scalar::<f32>() as f64;
        bar.inc(1);
        if !value.is_finite() {
            losses.resize(steps.len(), f64::NAN);
            bar.inc((steps.end - step - 1) as u64);
            break;
        }
        losses.push(value);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(schedule.lr, model, grads);
    }
    (model, losses)
}

/// Trains `model` (built on an autodiff device) for `schedule.steps` steps with a fresh
/// optimizer, cut into `stretches` equal stretches, calling `measure(&model, step)` at step 0
/// and after each stretch. A run that diverges stops being measured (see [`train_steps`]).
/// Returns the model and the loss of every step.
pub(crate) fn train_measuring<M: ImageModel>(
    mut model: M,
    schedule: Schedule,
    stretches: usize,
    data: &Data,
    device: &Device,
    bar: &ProgressBar,
    mut measure: impl FnMut(&M, usize),
) -> (M, Vec<f64>) {
    let mut optim = sgd();
    let mut losses = Vec::with_capacity(schedule.steps);
    measure(&model, 0);
    for stretch in 1..=stretches {
        let end = schedule.steps * stretch / stretches;
        let start = losses.len();
        let (trained, stretch_losses) =
            train_steps(model, &mut optim, start..end, schedule, data, device, bar);
        model = trained;
        let diverged = stretch_losses.iter().any(|loss| loss.is_nan());
        losses.extend(stretch_losses);
        if diverged {
            losses.resize(schedule.steps, f64::NAN);
            bar.inc((schedule.steps - end) as u64);
            break;
        }
        measure(&model, end);
    }
    (model, losses)
}

/// The fraction of `labels` the model's largest logit gets right.
pub(crate) fn accuracy(model: &impl ImageModel, images: Tensor<4>, labels: Tensor<1, Int>) -> f64 {
    let n = labels.dims()[0];
    let predicted = model.logits(images).argmax(1).flatten::<1>(0, 1);
    let correct = predicted.equal(labels).int().sum().into_scalar::<i64>();
    correct as f64 / n as f64
}

/// The input of each hidden layer's ReLU (its normalizer's output), input side first, as
/// training sees it: on a copy of `mlp` whose normalizers use the batch's statistics, so the
/// model's own running statistics are untouched. `images` live on the inner (non-autodiff)
/// device.
pub(crate) fn relu_inputs(mlp: &Mlp, images: Tensor<4>) -> Vec<Tensor<2>> {
    let mut x = images.flatten(1, 3);
    mlp.valid()
        .hidden
        .into_iter()
        .map(|block| {
            let z = block
                .norm
                .with_mode(StatsMode::Train)
                .forward(block.linear.forward(x.clone()));
            x = relu(z.clone());
            z
        })
        .collect()
}

/// The values of a tensor, read to the host.
pub(crate) fn host_values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_into_vec::<f32>()
        .expect("the lab computes in f32")
}

/// The accuracy of `model` fed the test set in batches of `batch_size`.
pub(crate) fn batched_accuracy(
    model: &impl ImageModel,
    images: &Tensor<4>,
    labels: &Tensor<1, Int>,
    batch_size: usize,
) -> f64 {
    let n = labels.dims()[0];
    let correct: f64 = (0..n)
        .step_by(batch_size)
        .map(|start| {
            let len = batch_size.min(n - start);
            let images = images.clone().narrow(0, start, len);
            let labels = labels.clone().narrow(0, start, len);
            accuracy(model, images, labels) * len as f64
        })
        .sum();
    correct / n as f64
}

/// The mean of the last `fraction` of `values` (a smoothed final loss).
pub(crate) fn tail_mean(values: &[f64], fraction: f64) -> f64 {
    let n = ((values.len() as f64 * fraction).ceil() as usize).clamp(1, values.len().max(1));
    let tail = &values[values.len().saturating_sub(n)..];
    tail.iter().sum::<f64>() / tail.len().max(1) as f64
}

/// A loss curve as `(step, loss)` points, averaged over windows of `window` steps so that the
/// plot shows the trend (NaN windows, after a divergence, stay NaN).
pub(crate) fn smoothed(losses: &[f64], window: usize) -> Vec<(f64, f64)> {
    losses
        .chunks(window.max(1))
        .enumerate()
        .map(|(i, chunk)| {
            let step = (i * window + chunk.len()) as f64;
            (step, chunk.iter().sum::<f64>() / chunk.len() as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Size, SmallCnnConfig};
    use normzoo_kernels::backend::compiled_devices;

    #[test]
    fn batched_accuracy_weighs_a_short_last_batch_by_its_size() {
        let (_, cpu) = compiled_devices().unwrap().remove(0);
        let model = SmallCnnConfig::new().init(&cpu).unwrap();
        let mut lab = Lab::new("unused", Size::Quick, cpu.clone());
        lab.seed = 3;
        let data = Data::new(&lab, 10);
        let (images, labels) = data.test_set(&cpu);
        let whole = batched_accuracy(&model, &images, &labels, 10);
        let in_fours = batched_accuracy(&model.valid(), &images, &labels, 4);
        assert!((whole - in_fours).abs() < 1e-9, "{whole} vs {in_fours}");
    }
}
