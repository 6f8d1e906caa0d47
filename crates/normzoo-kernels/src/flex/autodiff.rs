//! flex's normalization on an autodiff device: each kernel's forward pass saves what its
//! backward kernel needs, and [`recorded`] stores it in the graph.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex};

use super::FusedNormBackend;
use super::batch::{BatchSaved, batch_backward, batch_forward, channel_statistics};
use super::channels_first;
use super::rows::{RowStatistics, backward, forward};
use crate::Grouping;
use crate::autodiff::{FusedBackward, recorded};

impl<C: CheckpointStrategy> FusedNormBackend for Autodiff<Flex, C> {
    fn normalize_rows(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        channels_per_group: usize,
        spatial: usize,
        center: bool,
        eps: f64,
    ) -> FloatTensor<Self> {
        let grouping = Grouping::new(groups, channels_per_group, spatial, center, eps);
        recorded::<C, _, _, 3>([x, gamma, beta], |[x, gamma, beta]| {
            let (output, statistics) = forward(&x, &gamma, &beta, grouping);
            let saved = RowsSaved {
                x,
                gamma,
                statistics,
                grouping,
            };
            (output, saved)
        })
    }

    fn normalize_channels(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        recorded::<C, _, _, 3>([x, gamma, beta], |[x, gamma, beta]| {
            let (output, statistics) = channels_first::forward(&x, &gamma, &beta, eps);
            let saved = ChannelsSaved {
                x,
                gamma,
                statistics,
            };
            (output, saved)
        })
    }

    fn channel_statistics(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(channel_statistics(x.primitive()))
    }

    fn batch_normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let statistics = statistics.into_primitive();
        recorded::<C, _, _, 3>([x, gamma, beta], |[x, gamma, beta]| {
            let (output, channels) = batch_forward(&x, &gamma, &beta, &statistics, eps);
            (output, BatchSaved { x, gamma, channels })
        })
    }
}

/// What the row kernels' backward pass needs from their forward pass.
#[derive(Debug, Clone)]
struct RowsSaved {
    x: FlexTensor,
    gamma: FlexTensor,
    statistics: RowStatistics,
    grouping: Grouping,
}

/// What the channels-first backward pass needs from its forward pass: each position's
/// `[μ₀, μ₁, r]`.
#[derive(Debug, Clone)]
struct ChannelsSaved {
    x: FlexTensor,
    gamma: FlexTensor,
    statistics: Vec<f32>,
}

// flex's backward kernels compute the three gradients in one pass over the values, so they
// compute all three whichever are tracked.

impl FusedBackward<Flex, 3> for RowsSaved {
    fn gradients(self, grad: FlexTensor, _tracked: [bool; 3]) -> [Option<FlexTensor>; 3] {
        let grads = backward(grad, &self.x, &self.gamma, &self.statistics, self.grouping);
        <[FlexTensor; 3]>::from(grads).map(Some)
    }
}

impl FusedBackward<Flex, 3> for ChannelsSaved {
    fn gradients(self, grad: FlexTensor, _tracked: [bool; 3]) -> [Option<FlexTensor>; 3] {
        let grads = channels_first::backward(grad, &self.x, &self.gamma, &self.statistics);
        <[FlexTensor; 3]>::from(grads).map(Some)
    }
}

impl FusedBackward<Flex, 3> for BatchSaved {
    fn gradients(self, grad: FlexTensor, _tracked: [bool; 3]) -> [Option<FlexTensor>; 3] {
        <[FlexTensor; 3]>::from(batch_backward(grad, self)).map(Some)
    }
}
