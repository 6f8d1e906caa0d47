//! The GPU normalization on an autodiff device: the forward kernels run on the inner backend,
//! and one backward step ([`NormSaved`]) computes the gradients of the tracked inputs only.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Cube, TensorMetadata};

use super::GpuNormBackend;
use crate::Grouping;
use crate::autodiff::{FusedBackward, recorded};

impl<C: CheckpointStrategy> GpuNormBackend for Autodiff<Cube, C> {
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
        normalization::<C>(
            Layout::Rows(grouping),
            [x, gamma, beta],
            |x, gamma, beta| {
                Cube::rows_forward(
                    x,
                    gamma,
                    beta,
                    groups,
                    channels_per_group,
                    spatial,
                    center,
                    eps,
                )
            },
        )
    }

    fn rows_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        channels_per_group: usize,
        spatial: usize,
        center: bool,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (output, statistics) = Cube::rows_forward(
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            groups,
            channels_per_group,
            spatial,
            center,
            eps,
        );
        (Self::from_inner(output), Self::from_inner(statistics))
    }

    fn rows_input_grad(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        groups: usize,
        channels_per_group: usize,
        spatial: usize,
        center: bool,
    ) -> FloatTensor<Self> {
        Self::from_inner(Cube::rows_input_grad(
            grad.into_primitive(),
            x.into_primitive(),
            gamma.into_primitive(),
            statistics.into_primitive(),
            groups,
            channels_per_group,
            spatial,
            center,
        ))
    }

    fn normalize_channels(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let [samples, channels, positions] = x.primitive().shape().dims::<3>();
        let layout = Layout::ChannelsFirst {
            samples,
            channels,
            positions,
        };
        normalization::<C>(layout, [x, gamma, beta], |x, gamma, beta| {
            Cube::channels_forward(x, gamma, beta, eps)
        })
    }

    fn channels_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (output, statistics) = Cube::channels_forward(
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            eps,
        );
        (Self::from_inner(output), Self::from_inner(statistics))
    }

    fn channels_input_grad(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(Cube::channels_input_grad(
            grad.into_primitive(),
            x.into_primitive(),
            gamma.into_primitive(),
            statistics.into_primitive(),
        ))
    }

    fn channel_sums(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        samples: usize,
        channels: usize,
        spatial: usize,
        stats_per_sample: usize,
        channels_per_stat: usize,
        spatial_stride: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (scale, shift) = Cube::channel_sums(
            grad.into_primitive(),
            x.into_primitive(),
            statistics.into_primitive(),
            samples,
            channels,
            spatial,
            stats_per_sample,
            channels_per_stat,
            spatial_stride,
        );
        (Self::from_inner(scale), Self::from_inner(shift))
    }

    fn channel_statistics(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(Cube::channel_statistics(x.into_primitive()))
    }

    fn batch_normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let [samples, channels, spatial] = x.primitive().shape().dims::<3>();
        let layout = Layout::Batch {
            samples,
            channels,
            spatial,
        };
        let statistics = statistics.into_primitive();
        normalization::<C>(layout, [x, gamma, beta], |x, gamma, beta| {
            Cube::batch_forward(x, gamma, beta, statistics, eps)
        })
    }

    fn batch_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (output, scale) = Cube::batch_forward(
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            statistics.into_primitive(),
            eps,
        );
        (Self::from_inner(output), Self::from_inner(scale))
    }

    fn batch_input_grad(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        scale_sums: FloatTensor<Self>,
        shift_sums: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(Cube::batch_input_grad(
            grad.into_primitive(),
            x.into_primitive(),
            gamma.into_primitive(),
            statistics.into_primitive(),
            scale_sums.into_primitive(),
            shift_sums.into_primitive(),
        ))
    }
}

/// Runs a forward `kernel` (output and statistics) on `x`, `γ` and `β`, recording the
/// backward pass [`NormSaved`] describes when any of the three is tracked.
fn normalization<C: CheckpointStrategy>(
    layout: Layout,
    inputs: [FloatTensor<Autodiff<Cube, C>>; 3],
    kernel: impl FnOnce(
        FloatTensor<Cube>,
        FloatTensor<Cube>,
        FloatTensor<Cube>,
    ) -> (FloatTensor<Cube>, FloatTensor<Cube>),
) -> FloatTensor<Autodiff<Cube, C>> {
    recorded::<C, _, _, 3>(inputs, |[x, gamma, beta]| {
        let (output, statistics) = kernel(x.clone(), gamma.clone(), beta);
        let saved = NormSaved {
            x,
            gamma,
            statistics,
            layout,
        };
        (output, saved)
    })
}

/// How a normalization's values map onto its statistics and channels.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Rows of a `[rows, K]` view, each with its own statistics.
    Rows(Grouping),
    /// `[N, C, P]`, each position with its own statistics over its `C` channels.
    ChannelsFirst {
        samples: usize,
        channels: usize,
        positions: usize,
    },
    /// `[N, C, S]`, each channel with its own statistics over its `N·S` values (BatchNorm).
    Batch {
        samples: usize,
        channels: usize,
        spatial: usize,
    },
}

impl Layout {
    /// Whether [`input_grad`](Self::input_grad) takes the [`affine_grads`](Self::affine_grads):
    /// BatchNorm's `dx` is built from its channels' sums, the others' from their rows'.
    fn input_grad_takes_affine_grads(self) -> bool {
        matches!(self, Self::Batch { .. })
    }

    /// `dx` from the output gradient and the forward pass's `x`, `γ` and statistics (and for
    /// BatchNorm the [`affine_grads`](Self::affine_grads)).
    fn input_grad(
        self,
        grad: FloatTensor<Cube>,
        x: FloatTensor<Cube>,
        gamma: FloatTensor<Cube>,
        statistics: FloatTensor<Cube>,
        affine_grads: Option<(FloatTensor<Cube>, FloatTensor<Cube>)>,
    ) -> FloatTensor<Cube> {
        match self {
            Self::Rows(grouping) => Cube::rows_input_grad(
                grad,
                x,
                gamma,
                statistics,
                grouping.groups,
                grouping.channels_per_group,
                grouping.spatial,
                grouping.center,
            ),
            Self::ChannelsFirst { .. } => Cube::channels_input_grad(grad, x, gamma, statistics),
            Self::Batch { .. } => {
                let (scale_sums, shift_sums) =
                    affine_grads.expect("BatchNorm's dx is built from dγ and dβ");
                Cube::batch_input_grad(grad, x, gamma, statistics, scale_sums, shift_sums)
            }
        }
    }

    /// `(dγ, dβ)` from the output gradient and the forward pass's `x` and statistics.
    fn affine_grads(
        self,
        grad: FloatTensor<Cube>,
        x: FloatTensor<Cube>,
        statistics: FloatTensor<Cube>,
    ) -> (FloatTensor<Cube>, FloatTensor<Cube>) {
        // `x` as `[samples, channels, spatial]`, and where each value's statistics are.
        let [
            samples,
            channels,
            spatial,
            stats_per_sample,
            channels_per_stat,
            spatial_stride,
        ] = match self {
            Self::Rows(grouping) => {
                let samples = x.shape()[0] / grouping.groups;
                [
                    samples,
                    grouping.channels(),
                    grouping.spatial,
                    grouping.groups,
                    grouping.channels_per_group,
                    0,
                ]
            }
            Self::ChannelsFirst {
                samples,
                channels,
                positions,
            } => [samples, channels, positions, positions, channels, 1],
            Self::Batch {
                samples,
                channels,
                spatial,
            } => [samples, channels, spatial, 0, 1, 0],
        };
        Cube::channel_sums(
            grad,
            x,
            statistics,
            samples,
            channels,
            spatial,
            stats_per_sample,
            channels_per_stat,
            spatial_stride,
        )
    }
}

/// What the backward pass of a GPU normalization needs from its forward pass.
#[derive(Debug, Clone)]
struct NormSaved {
    x: FloatTensor<Cube>,
    gamma: FloatTensor<Cube>,
    statistics: FloatTensor<Cube>,
    layout: Layout,
}

impl FusedBackward<Cube, 3> for NormSaved {
    /// Computes the gradients of the tracked inputs only: `dγ` and `dβ` together by one kernel
    /// (also for BatchNorm's `dx`, which is built from them), `dx` by another.
    fn gradients(
        self,
        grad: FloatTensor<Cube>,
        [x_tracked, gamma_tracked, beta_tracked]: [bool; 3],
    ) -> [Option<FloatTensor<Cube>>; 3] {
        let NormSaved {
            x,
            gamma,
            statistics,
            layout,
        } = self;
        let affine_tracked = gamma_tracked || beta_tracked;
        let input_needs_affine = x_tracked && layout.input_grad_takes_affine_grads();
        let affine_grads = (affine_tracked || input_needs_affine)
            .then(|| layout.affine_grads(grad.clone(), x.clone(), statistics.clone()));
        let x_grad =
            x_tracked.then(|| layout.input_grad(grad, x, gamma, statistics, affine_grads.clone()));
        let (gamma_grad, beta_grad) = affine_grads.unzip();
        [x_grad, gamma_grad, beta_grad]
    }
}
