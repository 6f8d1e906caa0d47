//! The convolution on an autodiff device: the forward pass saves the input and weight, and
//! the backward pass computes the gradients of the tracked ones.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};

use super::geometry::Geometry;
use super::im2col::backward;
use super::{ConvBackend, forward};
use crate::autodiff::{FusedBackward, recorded};

impl<C: CheckpointStrategy> ConvBackend for Autodiff<Flex, C> {
    fn conv2d_im2col(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
    ) -> FloatTensor<Self> {
        recorded::<C, _, _, 2>([x, weight], |[x, weight]| {
            let geometry = Geometry::new(&x, &weight, stride, padding, dilation);
            let output = forward(&x, &weight, &geometry);
            (
                output,
                ConvSaved {
                    x,
                    weight,
                    geometry,
                },
            )
        })
    }
}

/// What the backward pass needs from the forward pass.
#[derive(Debug, Clone)]
struct ConvSaved {
    x: FlexTensor,
    weight: FlexTensor,
    geometry: Geometry,
}

impl FusedBackward<Flex, 2> for ConvSaved {
    /// Computes the gradients of the tracked inputs only.
    fn gradients(
        self,
        output_grad: FlexTensor,
        [need_x, need_weight]: [bool; 2],
    ) -> [Option<FlexTensor>; 2] {
        let Self {
            x,
            weight,
            geometry,
        } = self;
        let (x_grad, weight_grad) =
            backward(&output_grad, &x, &weight, &geometry, need_x, need_weight);
        [x_grad, weight_grad]
    }
}
