//! Weights for tests that must not depend on the random generator: burn-flex's is one seed for
//! the whole process, so tests running in parallel draw from it in whatever order they run.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};

/// `module` with every weight redrawn by a fixed sequence: each weight tensor of `k` inputs per
/// output (its first axis) uniform in `±√(6/k)` (He's bound for ReLU networks), the other 1-d
/// parameters (biases) 0, and constant ones (a normalizer's γ = 1 and β = 0) as they are.
pub(crate) fn fixed_weights<M: Module>(module: M) -> M {
    module.map(&mut Redraw(7))
}

struct Redraw(u64);

impl Redraw {
    /// The next value of a 64-bit linear congruential sequence, uniform in `[-1, 1)`.
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        2.0 * (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 1.0
    }
}

impl ModuleMapper for Redraw {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (shape, device) = (param.val().shape(), param.val().device());
        let values: Vec<f32> = match D {
            1 if param.val().min().into_scalar::<f32>()
                == param.val().max().into_scalar::<f32>() =>
            {
                return param;
            }
            1 => vec![0.0; shape.num_elements()],
            _ => {
                let outputs = param.val().dims()[0];
                let bound = (6.0 * outputs as f32 / shape.num_elements() as f32).sqrt();
                (0..shape.num_elements())
                    .map(|_| bound * self.next())
                    .collect()
            }
        };
        param.map(|_| Tensor::from_data(TensorData::new(values, shape), &device))
    }
}
