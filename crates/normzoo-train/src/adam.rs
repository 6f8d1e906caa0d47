//! The plain training loop the small examples share: Adam on a fresh batch every step.

use burn::module::Module;
use burn::optim::AdamConfig;
use burn::tensor::Tensor;

use crate::precision::{MixedPrecision, Precision, gradients};

/// Runs `steps` Adam steps at learning rate `lr` in `precision`: at each, `loss(&model, step)`
/// (which draws its own batch), its gradients, an update, then `progress(step, loss)` with
/// `step` from 1. Returns the trained model and the loss of every step.
///
/// In f16 or bf16 each step is a [`MixedPrecision::step`] with PyTorch's default loss scaler:
/// `loss` gets the model's half-precision copy, casts its inputs to
/// [`precision.float_dtype()`](Precision::float_dtype) and returns an f32 loss; a step whose
/// gradients overflow leaves the model as it was. Check the device first with
/// [`Precision::check`].
pub fn train_with_adam<M: Module>(
    mut model: M,
    steps: usize,
    lr: f64,
    precision: Precision,
    mut loss: impl FnMut(&M, usize) -> Tensor<1>,
    mut progress: impl FnMut(usize, f32),
) -> (M, Vec<f32>) {
    let mixed = MixedPrecision::new(precision);
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        let (grads, value) = gradients(mixed.as_ref(), &model, |model| {
            let value = loss(model, step);
            (value.clone(), value)
        });
        let scalar = value.into_scalar::<f32>();
        model = optim.step(lr, model, grads);
        losses.push(scalar);
        progress(step + 1, scalar);
    }
    (model, losses)
}
