//! Counting trainable parameters.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// The number of trainable values in `module`: what PyTorch's
/// `sum(p.numel() for p in model.parameters())` counts, and torchvision publishes.
///
/// burn's [`Module::num_params`] also counts running statistics (PyTorch's buffers); this does
/// not. Build the module on an autodiff device (`device.autodiff()`): trainable parameters are
/// recognised by requiring gradients there, and running statistics never do.
pub fn num_trainable_params<M: Module>(module: &M) -> usize {
    struct Counter(usize);
    impl ModuleVisitor for Counter {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            if value.is_require_grad() {
                self.0 += value.shape().num_elements();
            }
        }
    }
    let mut counter = Counter(0);
    module.visit(&mut counter);
    counter.0
}
