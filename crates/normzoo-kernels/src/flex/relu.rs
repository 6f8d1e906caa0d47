//! ReLU on flex in place, saving its output for the backward pass: see
//! [`relu`](crate::relu).

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use rayon::prelude::*;

use super::buffers::{ReusedBuffer, flex_values};
use crate::autodiff::{FusedBackward, recorded};

/// Values per parallel work item.
const CHUNK: usize = 1 << 14;

/// ReLU as a burn backend extension.
#[backend_extension(Flex, Autodiff)]
pub(crate) trait ReluBackend: Backend {
    /// `max(x, 0)` for every value of `x` (NaN stays NaN).
    fn relu(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl ReluBackend for Flex {
    fn relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        forward(x)
    }
}

impl<C: CheckpointStrategy> ReluBackend for Autodiff<Flex, C> {
    fn relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        recorded::<C, _, _, 1>([x], |[x]| {
            let output = forward(x);
            (output.clone(), ReluSaved { output })
        })
    }
}

/// What the backward pass needs: the output, whose positive values mark where the gradient
/// passes.
#[derive(Debug, Clone)]
struct ReluSaved {
    output: FlexTensor,
}

impl FusedBackward<Flex, 1> for ReluSaved {
    fn gradients(self, grad: FlexTensor, _tracked: [bool; 1]) -> [Option<FlexTensor>; 1] {
        let output = flex_values(&self.output);
        let mut grad = ReusedBuffer::new(grad);
        grad.values_mut()
            .par_chunks_mut(CHUNK)
            .zip(output.par_chunks(CHUNK))
            .for_each(|(dy, y)| {
                for (dy, &y) in dy.iter_mut().zip(y) {
                    *dy = if passes(y) { *dy } else { 0.0 };
                }
            });
        [Some(grad.into_tensor())]
    }
}

/// Whether a value keeps its gradient: positive, or NaN (as PyTorch and burn keep it).
#[inline(always)]
fn passes(value: f32) -> bool {
    value.is_nan() || value > 0.0
}

/// `max(x, 0)`, written over `x` when nothing else holds its values, else into a new buffer.
fn forward(x: FlexTensor) -> FlexTensor {
    let mut values = ReusedBuffer::new(x);
    values
        .values_mut()
        .par_chunks_mut(CHUNK)
        .for_each(|values| {
            for value in values {
                *value = if passes(*value) { *value } else { 0.0 };
            }
        });
    values.into_tensor()
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;

    #[test]
    fn relu_writes_over_an_input_nothing_else_holds() {
        let x = FlexTensor::from_data(TensorData::new(vec![-1.0f32, 2.0, -3.0], [3]));
        let address = x.as_slice::<f32>().unwrap().as_ptr();
        let y = forward(x);
        assert_eq!(y.as_slice::<f32>().unwrap(), [0.0, 2.0, 0.0]);
        assert_eq!(y.as_slice::<f32>().unwrap().as_ptr(), address);

        let kept = FlexTensor::from_data(TensorData::new(vec![-1.0f32, 2.0], [2]));
        let y = forward(kept.clone());
        assert_eq!(y.as_slice::<f32>().unwrap(), [0.0, 2.0]);
        assert_eq!(
            kept.as_slice::<f32>().unwrap(),
            [-1.0, 2.0],
            "a shared input is kept"
        );
    }
}
