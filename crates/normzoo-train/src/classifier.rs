//! An image classifier as burn-train drives it: cross-entropy training and evaluation steps.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Int, Tensor};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use normzoo_models::ImageClassifier;

use crate::data::ImageBatch;

/// An [`ImageClassifier`] trained with cross-entropy: the model burn-train's `Learner` fits.
///
/// burn-train's step traits live in another crate than the models, so the classifier is
/// wrapped; its record is the network's under the field name `network`.
#[derive(Module, Debug)]
pub struct Classifier {
    /// The network.
    pub network: ImageClassifier,
}

impl Classifier {
    /// Wraps `network`.
    pub fn new(network: ImageClassifier) -> Self {
        Self { network }
    }

    /// The logits, the mean cross-entropy loss and the labels of a batch.
    pub fn forward_classification(&self, batch: ImageBatch) -> ClassificationOutput {
        let logits = self.network.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.labels.clone());
        ClassificationOutput::new(loss, logits, batch.labels)
    }

    /// The number of images in a batch whose predicted class is its label.
    pub fn correct(&self, batch: ImageBatch) -> usize {
        let [n] = batch.labels.dims();
        let predicted: Tensor<1, Int> = self.network.forward(batch.images).argmax(1).reshape([n]);
        predicted
            .equal(batch.labels)
            .int()
            .sum()
            .into_scalar::<i64>() as usize
    }
}

impl TrainStep for Classifier {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> TrainOutput<ClassificationOutput> {
        let output = self.forward_classification(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl InferenceStep for Classifier {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> ClassificationOutput {
        self.forward_classification(batch)
    }
}
