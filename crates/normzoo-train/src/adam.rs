//! The plain training loop the small examples share: Adam on a fresh batch every step.

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Tensor;

/// Runs `steps` Adam steps at learning rate `lr`: at each, `loss(&model, step)` (which draws its
/// own batch), its gradients, an update, then `progress(step, loss)` with `step` from 1.
/// Returns the trained model and the loss of every step.
pub fn train_with_adam<M: Module>(
    mut model: M,
    steps: usize,
    lr: f64,
    mut loss: impl FnMut(&M, usize) -> Tensor<1>,
    mut progress: impl FnMut(usize, f32),
) -> (M, Vec<f32>) {
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        let value = loss(&model, step);
        let scalar = value.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(value.backward(), &model);
        model = optim.step(lr, model, grads);
        losses.push(scalar);
        progress(step + 1, scalar);
    }
    (model, losses)
}
