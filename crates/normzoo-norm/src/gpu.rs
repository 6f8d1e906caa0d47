//! Fused normalization on the GPU backends (CubeCL kernels, run by wgpu), with a closed-form
//! backward pass.
//!
//! The same formulas as the flex kernels in `fused.rs`: GroupNorm, InstanceNorm, LayerNorm and
//! RMSNorm standardize the rows of a `[rows, K]` view and scale and shift per channel,
//!
//! ```text
//! x̂ = (x − μ)·r,   r = 1 / sqrt(σ² + ε),   y = x̂·γ + β            (RMSNorm: μ = 0)
//! g = dy·γ,   dx = r·(g − mean(g) − x̂·mean(g·x̂)),   dγ = Σ dy·x̂,   dβ = Σ dy
//! ```
//!
//! Composed of tensor ops, each of those is a chain of reductions and broadcasts, and autodiff
//! walks the chain backwards op by op. Here three kernels do the work:
//!
//! - `rows_forward`: one cube (workgroup) per row computes the row's mean, then its variance
//!   around that mean (two passes, as PyTorch's Welford is stable: no `E[x²] − E[x]²`), and
//!   writes the output and the row's `[μ₀, μ₁, r]`;
//! - `rows_input_grad`: one cube per row sums `g` and `g·x̂` and writes `dx`;
//! - `channel_sums`: sums `dy·x̂` and `dy` over each channel's values in every row: `dγ` and
//!   `dβ`. A channel's values are split into chunks of [`VALUES_PER_CUBE`], one cube each, and
//!   `combine_sums` adds a channel's chunks where there are several, so that a few channels of
//!   many values still fill the GPU.
//!
//! LayerNorm2d (channels first, `[N, C, P]`) normalizes each position over its `C` values, `P`
//! apart: there one unit per position computes its statistics, output and `dx` (neighbouring
//! units read neighbouring positions, so the reads coalesce), and `channel_sums` gives `dγ` and
//! `dβ` with a statistic per position instead of per row.
//!
//! BatchNorm (`[N, C, S]`) takes each channel's statistics over its `N·S` values, typically
//! many values in few channels. `channel_moments` computes each chunk's mean and sum of squared
//! deviations (two passes over the chunk), `combine_moments` merges a channel's chunks exactly
//! (Chan et al.'s pairwise update), and `batch_forward` writes the output, one unit per value.
//! The backward pass is the row formula with the means over the channel: `channel_sums` gives
//! `dγ` and `dβ` (a statistic per channel), and `batch_input_grad` writes
//! `dx = r·γ·(dy − dβ/M − x̂·dγ/M)`, `M = N·S`, one unit per value.
//!
//! The sums inside a cube go through shared memory as a tree, in f32 (each unit first adds its
//! strided share of the row). The means sum offsets from a first value, which stay small next
//! to a mean far from 0, and are carried as two f32 values, the one nearest the mean and the
//! remainder (`μ = μ₀ + μ₁`); every kernel centres before it scales, `((x − μ₀) − μ₁)·r`, so
//! that a large mean against a small spread (1e4 and 0.1) costs no digit of the output. Only
//! f32 takes these kernels; other dtypes and backends compose.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Cube, Dispatch, DispatchDevice, TensorMetadata,
    backend_extension,
};
use burn::tensor::Shape;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::{CubeCount, CubeDim};

use self::kernels::{
    batch_forward_kernel, batch_input_grad_kernel, channel_moments_kernel, channel_sums_kernel,
    channels_forward_kernel, channels_input_grad_kernel, combine_moments_kernel,
    combine_sums_kernel, rows_forward_kernel, rows_input_grad_kernel,
};

use crate::stats::{Grouping, Kernels};

/// Units per cube: each row (or channel) is summed by this many units, then as a tree.
const CUBE_SIZE: u32 = 256;

/// Values of one channel a cube sums (16 per unit) before the channel is split over more cubes.
const VALUES_PER_CUBE: usize = 16 * CUBE_SIZE as usize;

/// Cubes per grid dimension: wgpu allows 65,535, so longer launches wrap onto the next one.
const MAX_CUBES_PER_DIM: usize = 65_535;

/// The GPU's kernels, as `stats` runs them.
pub(crate) const KERNELS: Kernels = Kernels {
    backend: is_cube,
    normalize_rows: <Dispatch as GpuNormBackend>::normalize_rows,
    normalize_channels: <Dispatch as GpuNormBackend>::normalize_channels,
    channel_statistics: <Dispatch as GpuNormBackend>::channel_statistics,
    batch_normalize: <Dispatch as GpuNormBackend>::batch_normalize,
};

/// Whether a device is a CubeCL one (the backend these kernels run on).
fn is_cube(device: &DispatchDevice) -> bool {
    matches!(device, DispatchDevice::Cube(_))
}

/// The GPU normalization as a burn backend extension: the differentiable operations, and the
/// kernels their forward and backward passes run.
#[backend_extension(Cube: cfg(feature = "wgpu"), Fusion: cfg(feature = "wgpu"), Autodiff)]
pub(crate) trait GpuNormBackend: Backend {
    /// `x̂·γ + β` over the rows of `x` (`[rows, K]`), grouped as the arguments of a
    /// [`Grouping`] say; differentiable on an autodiff device.
    #[allow(clippy::too_many_arguments)]
    #[fusion(dtype = x, shape = x)]
    fn normalize_rows(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        channels_per_group: usize,
        spatial: usize,
        center: bool,
        eps: f64,
    ) -> FloatTensor<Self>;

    /// The kernel of [`normalize_rows`](Self::normalize_rows): its output, and each row's
    /// `[μ₀, μ₁, r]` (`[rows, 3]`). Not differentiable.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |x, _gamma, _beta, _groups, _channels_per_group, _spatial, _center, _eps| (
        x.clone(),
        TensorSpec::new(Shape::new([x.shape[0], 3]), x.dtype),
    ))]
    fn rows_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        channels_per_group: usize,
        spatial: usize,
        center: bool,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `dx` from the output gradient `grad` and the forward pass's `x`, `γ` and `statistics`.
    /// Not differentiable.
    #[allow(clippy::too_many_arguments)]
    #[fusion(dtype = x, shape = x)]
    fn rows_input_grad(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        groups: usize,
        channels_per_group: usize,
        spatial: usize,
        center: bool,
    ) -> FloatTensor<Self>;

    /// `x̂·γ + β` for every position of `x` (`[N, C, P]`), normalized over its `C` channels;
    /// differentiable on an autodiff device.
    #[fusion(dtype = x, shape = x)]
    fn normalize_channels(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;

    /// The kernel of [`normalize_channels`](Self::normalize_channels): its output, and each
    /// position's `[μ₀, μ₁, r]` (`[N · P, 3]`). Not differentiable.
    #[fusion(meta = |x, _gamma, _beta, _eps| (
        x.clone(),
        TensorSpec::new(Shape::new([x.shape[0] * x.shape[2], 3]), x.dtype),
    ))]
    fn channels_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `dx` of [`normalize_channels`](Self::normalize_channels) from the output gradient and
    /// the forward pass's `x`, `γ` and `statistics`. Not differentiable.
    #[fusion(dtype = x, shape = x)]
    fn channels_input_grad(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `(Σ dy·x̂, Σ dy)` per channel (`dγ` and `dβ`) from the output gradient `grad` and the
    /// forward pass's `x` and `statistics`, with `x` read as `[samples, channels, spatial]`
    /// and the `[μ₀, μ₁, r]` of value `(n, c, s)` at `n·stats_per_sample + c / channels_per_stat +
    /// s·spatial_stride`. Not differentiable.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |_grad, x, _statistics, _samples, channels, _spatial, _stats_per_sample,
                     _channels_per_stat, _spatial_stride| {
        let channels = Shape::new([*channels]);
        (TensorSpec::new(channels.clone(), x.dtype), TensorSpec::new(channels, x.dtype))
    })]
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Each channel's mean, biased variance and the mean's f32 remainder over `x`
    /// (`[N, C, S]`), as `[3, C]`. Not differentiable:
    /// [`batch_normalize`](Self::batch_normalize)'s backward pass accounts for the statistics'
    /// dependence on `x`.
    #[fusion(meta = |x| TensorSpec::new(Shape::new([3, x.shape[1]]), x.dtype))]
    fn channel_statistics(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// BatchNorm's `x̂·γ + β` per channel of `x` (`[N, C, S]`), with `statistics` computed by
    /// [`channel_statistics`](Self::channel_statistics) from the same `x`; differentiable on an
    /// autodiff device.
    #[fusion(dtype = x, shape = x)]
    fn batch_normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;

    /// The kernel of [`batch_normalize`](Self::batch_normalize): its output, and each channel's
    /// `[μ₀, μ₁, r]` (`[C, 3]`). Not differentiable.
    #[fusion(meta = |x, _gamma, _beta, _statistics, _eps| (
        x.clone(),
        TensorSpec::new(Shape::new([x.shape[1], 3]), x.dtype),
    ))]
    fn batch_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `dx` of [`batch_normalize`](Self::batch_normalize) from the output gradient, the forward
    /// pass's `x`, `γ` and `[μ₀, μ₁, r]`, and the channel sums `Σ dy·x̂` and `Σ dy`
    /// ([`channel_sums`](Self::channel_sums)). Not differentiable.
    #[fusion(dtype = x, shape = x)]
    fn batch_input_grad(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        scale_sums: FloatTensor<Self>,
        shift_sums: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl GpuNormBackend for CubeBackend {
    fn normalize_rows(
        x: CubeTensor,
        gamma: CubeTensor,
        beta: CubeTensor,
        groups: usize,
        channels_per_group: usize,
        spatial: usize,
        center: bool,
        eps: f64,
    ) -> CubeTensor {
        Self::rows_forward(
            x,
            gamma,
            beta,
            groups,
            channels_per_group,
            spatial,
            center,
            eps,
        )
        .0
    }

    fn rows_forward(
        x: CubeTensor,
        gamma: CubeTensor,
        beta: CubeTensor,
        groups: usize,
        channels_per_group: usize,
        spatial: usize,
        center: bool,
        eps: f64,
    ) -> (CubeTensor, CubeTensor) {
        let [x, gamma, beta] = [x, gamma, beta].map(into_contiguous);
        let rows = x.shape()[0];
        let output = empty_like(&x, x.shape());
        let statistics = empty_like(&x, Shape::new([rows, 3]));
        rows_forward_kernel::launch(
            &x.client,
            grid(rows),
            CubeDim::new_1d(CUBE_SIZE),
            x.clone().into_tensor_arg(),
            gamma.into_tensor_arg(),
            beta.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            statistics.clone().into_tensor_arg(),
            rows as u32,
            groups as u32,
            channels_per_group as u32,
            spatial as u32,
            eps as f32,
            center,
            CUBE_SIZE as usize,
            dtype_to_storage_type(x.dtype),
        );
        (output, statistics)
    }

    fn rows_input_grad(
        grad: CubeTensor,
        x: CubeTensor,
        gamma: CubeTensor,
        statistics: CubeTensor,
        groups: usize,
        channels_per_group: usize,
        spatial: usize,
        center: bool,
    ) -> CubeTensor {
        let [grad, x, gamma, statistics] = [grad, x, gamma, statistics].map(into_contiguous);
        let rows = x.shape()[0];
        let input_grad = empty_like(&x, x.shape());
        rows_input_grad_kernel::launch(
            &x.client,
            grid(rows),
            CubeDim::new_1d(CUBE_SIZE),
            grad.into_tensor_arg(),
            x.clone().into_tensor_arg(),
            gamma.into_tensor_arg(),
            statistics.into_tensor_arg(),
            input_grad.clone().into_tensor_arg(),
            rows as u32,
            groups as u32,
            channels_per_group as u32,
            spatial as u32,
            center,
            CUBE_SIZE as usize,
            dtype_to_storage_type(x.dtype),
        );
        input_grad
    }

    fn normalize_channels(
        x: CubeTensor,
        gamma: CubeTensor,
        beta: CubeTensor,
        eps: f64,
    ) -> CubeTensor {
        Self::channels_forward(x, gamma, beta, eps).0
    }

    fn channels_forward(
        x: CubeTensor,
        gamma: CubeTensor,
        beta: CubeTensor,
        eps: f64,
    ) -> (CubeTensor, CubeTensor) {
        let [x, gamma, beta] = [x, gamma, beta].map(into_contiguous);
        let [samples, channels, positions] = x.shape().dims::<3>();
        let output = empty_like(&x, x.shape());
        let statistics = empty_like(&x, Shape::new([samples * positions, 3]));
        channels_forward_kernel::launch(
            &x.client,
            grid((samples * positions).div_ceil(CUBE_SIZE as usize)),
            CubeDim::new_1d(CUBE_SIZE),
            x.clone().into_tensor_arg(),
            gamma.into_tensor_arg(),
            beta.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            statistics.clone().into_tensor_arg(),
            samples as u32,
            channels as u32,
            positions as u32,
            eps as f32,
            dtype_to_storage_type(x.dtype),
        );
        (output, statistics)
    }

    fn channels_input_grad(
        grad: CubeTensor,
        x: CubeTensor,
        gamma: CubeTensor,
        statistics: CubeTensor,
    ) -> CubeTensor {
        let [grad, x, gamma, statistics] = [grad, x, gamma, statistics].map(into_contiguous);
        let [samples, channels, positions] = x.shape().dims::<3>();
        let input_grad = empty_like(&x, x.shape());
        channels_input_grad_kernel::launch(
            &x.client,
            grid((samples * positions).div_ceil(CUBE_SIZE as usize)),
            CubeDim::new_1d(CUBE_SIZE),
            grad.into_tensor_arg(),
            x.clone().into_tensor_arg(),
            gamma.into_tensor_arg(),
            statistics.into_tensor_arg(),
            input_grad.clone().into_tensor_arg(),
            samples as u32,
            channels as u32,
            positions as u32,
            dtype_to_storage_type(x.dtype),
        );
        input_grad
    }

    fn channel_sums(
        grad: CubeTensor,
        x: CubeTensor,
        statistics: CubeTensor,
        samples: usize,
        channels: usize,
        spatial: usize,
        stats_per_sample: usize,
        channels_per_stat: usize,
        spatial_stride: usize,
    ) -> (CubeTensor, CubeTensor) {
        let [grad, x, statistics] = [grad, x, statistics].map(into_contiguous);
        let split = Split::of(samples * spatial);
        let partials = Shape::new([channels * split.parts]);
        let scale_sums = empty_like(&x, partials.clone());
        let shift_sums = empty_like(&x, partials);
        channel_sums_kernel::launch(
            &x.client,
            grid(channels * split.parts),
            CubeDim::new_1d(CUBE_SIZE),
            grad.into_tensor_arg(),
            x.clone().into_tensor_arg(),
            statistics.into_tensor_arg(),
            scale_sums.clone().into_tensor_arg(),
            shift_sums.clone().into_tensor_arg(),
            channels as u32,
            spatial as u32,
            stats_per_sample as u32,
            channels_per_stat as u32,
            spatial_stride as u32,
            split.count as u32,
            VALUES_PER_CUBE as u32,
            split.parts as u32,
            CUBE_SIZE as usize,
            dtype_to_storage_type(x.dtype),
        );
        if split.parts == 1 {
            return (scale_sums, shift_sums);
        }
        let [scale, shift] =
            [Shape::new([channels]), Shape::new([channels])].map(|shape| empty_like(&x, shape));
        combine_sums_kernel::launch(
            &x.client,
            grid(channels.div_ceil(CUBE_SIZE as usize)),
            CubeDim::new_1d(CUBE_SIZE),
            scale_sums.into_tensor_arg(),
            shift_sums.into_tensor_arg(),
            scale.clone().into_tensor_arg(),
            shift.clone().into_tensor_arg(),
            channels as u32,
            split.parts as u32,
            dtype_to_storage_type(x.dtype),
        );
        (scale, shift)
    }

    fn channel_statistics(x: CubeTensor) -> CubeTensor {
        let x = into_contiguous(x);
        let [samples, channels, spatial] = x.shape().dims::<3>();
        let split = Split::of(samples * spatial);
        let partials = Shape::new([channels * split.parts]);
        let means = empty_like(&x, partials.clone());
        let squares = empty_like(&x, partials);
        channel_moments_kernel::launch(
            &x.client,
            grid(channels * split.parts),
            CubeDim::new_1d(CUBE_SIZE),
            x.clone().into_tensor_arg(),
            means.clone().into_tensor_arg(),
            squares.clone().into_tensor_arg(),
            channels as u32,
            spatial as u32,
            split.count as u32,
            VALUES_PER_CUBE as u32,
            split.parts as u32,
            CUBE_SIZE as usize,
            dtype_to_storage_type(x.dtype),
        );
        let statistics = empty_like(&x, Shape::new([3, channels]));
        combine_moments_kernel::launch(
            &x.client,
            grid(channels.div_ceil(CUBE_SIZE as usize)),
            CubeDim::new_1d(CUBE_SIZE),
            x.clone().into_tensor_arg(),
            means.into_tensor_arg(),
            squares.into_tensor_arg(),
            statistics.clone().into_tensor_arg(),
            channels as u32,
            spatial as u32,
            split.count as u32,
            VALUES_PER_CUBE as u32,
            split.parts as u32,
            dtype_to_storage_type(x.dtype),
        );
        statistics
    }

    fn batch_normalize(
        x: CubeTensor,
        gamma: CubeTensor,
        beta: CubeTensor,
        statistics: CubeTensor,
        eps: f64,
    ) -> CubeTensor {
        Self::batch_forward(x, gamma, beta, statistics, eps).0
    }

    fn batch_forward(
        x: CubeTensor,
        gamma: CubeTensor,
        beta: CubeTensor,
        statistics: CubeTensor,
        eps: f64,
    ) -> (CubeTensor, CubeTensor) {
        let [x, gamma, beta, statistics] = [x, gamma, beta, statistics].map(into_contiguous);
        let [_, channels, spatial] = x.shape().dims::<3>();
        let len = x.shape().num_elements();
        let output = empty_like(&x, x.shape());
        let scale = empty_like(&x, Shape::new([channels, 3]));
        batch_forward_kernel::launch(
            &x.client,
            grid(len.div_ceil(CUBE_SIZE as usize)),
            CubeDim::new_1d(CUBE_SIZE),
            x.clone().into_tensor_arg(),
            gamma.into_tensor_arg(),
            beta.into_tensor_arg(),
            statistics.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            scale.clone().into_tensor_arg(),
            len as u32,
            channels as u32,
            spatial as u32,
            eps as f32,
            dtype_to_storage_type(x.dtype),
        );
        (output, scale)
    }

    fn batch_input_grad(
        grad: CubeTensor,
        x: CubeTensor,
        gamma: CubeTensor,
        statistics: CubeTensor,
        scale_sums: CubeTensor,
        shift_sums: CubeTensor,
    ) -> CubeTensor {
        let [grad, x, gamma, statistics, scale_sums, shift_sums] =
            [grad, x, gamma, statistics, scale_sums, shift_sums].map(into_contiguous);
        let [samples, channels, spatial] = x.shape().dims::<3>();
        let len = x.shape().num_elements();
        let input_grad = empty_like(&x, x.shape());
        batch_input_grad_kernel::launch(
            &x.client,
            grid(len.div_ceil(CUBE_SIZE as usize)),
            CubeDim::new_1d(CUBE_SIZE),
            grad.into_tensor_arg(),
            x.clone().into_tensor_arg(),
            gamma.into_tensor_arg(),
            statistics.into_tensor_arg(),
            scale_sums.into_tensor_arg(),
            shift_sums.into_tensor_arg(),
            input_grad.clone().into_tensor_arg(),
            len as u32,
            channels as u32,
            spatial as u32,
            (samples * spatial) as f32,
            dtype_to_storage_type(x.dtype),
        );
        input_grad
    }
}

/// How a channel's values (`N·S` of them in `[N, C, S]`) are split over cubes: in consecutive
/// chunks of [`VALUES_PER_CUBE`], so that a few channels of many values still fill the GPU.
#[derive(Debug, Clone, Copy)]
struct Split {
    /// The values per channel.
    count: usize,
    /// The cubes per channel.
    parts: usize,
}

impl Split {
    fn of(count: usize) -> Self {
        Self {
            count,
            parts: count.div_ceil(VALUES_PER_CUBE).max(1),
        }
    }
}

/// An uninitialised contiguous tensor of `shape` on `like`'s device, of its dtype.
fn empty_like(like: &CubeTensor, shape: Shape) -> CubeTensor {
    empty_device_dtype(like.client.clone(), like.device.clone(), shape, like.dtype)
}

/// `cubes` cubes, laid over two grid dimensions where one is not enough.
fn grid(cubes: usize) -> CubeCount {
    let x = cubes.clamp(1, MAX_CUBES_PER_DIM);
    CubeCount::Static(x as u32, cubes.div_ceil(x) as u32, 1)
}

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
        recorded::<C>(
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
        recorded::<C>(layout, [x, gamma, beta], |x, gamma, beta| {
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
        recorded::<C>(layout, [x, gamma, beta], |x, gamma, beta| {
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

/// Runs a forward `kernel` (output and statistics) on `x`, `γ` and `β`, and when any of the
/// three is tracked records [`NormBackward`] with what its backward pass needs.
fn recorded<C: CheckpointStrategy>(
    layout: Layout,
    [x, gamma, beta]: [FloatTensor<Autodiff<Cube, C>>; 3],
    kernel: impl FnOnce(
        FloatTensor<Cube>,
        FloatTensor<Cube>,
        FloatTensor<Cube>,
    ) -> (FloatTensor<Cube>, FloatTensor<Cube>),
) -> FloatTensor<Autodiff<Cube, C>> {
    let guards = [x.node(), gamma.node(), beta.node()];
    let (x, gamma, beta) = (
        x.into_primitive(),
        gamma.into_primitive(),
        beta.into_primitive(),
    );
    match NormBackward.prepare::<C>(guards).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (output, statistics) = kernel(x.clone(), gamma.clone(), beta);
            let saved = NormSaved {
                x,
                gamma,
                statistics,
                layout,
            };
            prep.finish(saved, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(kernel(x, gamma, beta).0),
    }
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

/// The backward step of [`GpuNormBackend::normalize_rows`],
/// [`GpuNormBackend::normalize_channels`] and [`GpuNormBackend::batch_normalize`].
#[derive(Debug)]
struct NormBackward;

impl Backward<Cube, 3> for NormBackward {
    type State = NormSaved;

    /// Computes the gradients of the tracked parents only: `dγ` and `dβ` together by one kernel
    /// (also for BatchNorm's `dx`, which is built from them), `dx` by another.
    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<Cube>(&ops.node);
        let NormSaved {
            x,
            gamma,
            statistics,
            layout,
        } = ops.state;
        let [x_node, gamma_node, beta_node] = ops.parents;
        let affine_tracked = gamma_node.is_some() || beta_node.is_some();
        let input_needs_affine = x_node.is_some() && layout.input_grad_takes_affine_grads();
        let affine_grads = (affine_tracked || input_needs_affine)
            .then(|| layout.affine_grads(grad.clone(), x.clone(), statistics.clone()));
        if let Some((gamma_grad, beta_grad)) = affine_grads.clone() {
            if let Some(node) = gamma_node {
                grads.register::<Cube>(node.id, gamma_grad);
            }
            if let Some(node) = beta_node {
                grads.register::<Cube>(node.id, beta_grad);
            }
        }
        if let Some(node) = x_node {
            let x_grad = layout.input_grad(grad, x, gamma, statistics, affine_grads);
            grads.register::<Cube>(node.id, x_grad);
        }
    }
}

/// The CubeCL kernels (in their own module: CubeCL's `Tensor` is not burn's).
mod kernels {
    use cubecl::prelude::*;

    /// The sum of `value` over the units of the cube, given to every unit. Every unit of the cube
    /// must call it (it synchronizes the cube).
    #[cube]
    fn sum_over_cube<F: Float>(value: F, #[comptime] cube_size: usize) -> F {
        let mut partial_sums = Shared::<[F]>::new_slice(cube_size);
        let unit = UNIT_POS as usize;
        partial_sums[unit] = value;
        sync_cube();
        // The halving runs at run time: `cube_size` is a compile-time value.
        let mut stride = CUBE_DIM as usize / 2;
        while stride > 0 {
            if unit < stride {
                let sum = partial_sums[unit] + partial_sums[unit + stride];
                partial_sums[unit] = sum;
            }
            sync_cube();
            stride /= 2;
        }
        let total = partial_sums[0];
        sync_cube();
        total
    }

    /// The mean `first + offset` as the f32 nearest it and the remainder, `(μ₀, μ₁)`:
    /// `first − μ₀` is exact when the offset is small next to `first` (Sterbenz), so `μ₁`
    /// keeps the digits that `μ₀` rounded away.
    #[cube]
    fn mean_parts<F: Float>(first: F, offset: F) -> (F, F) {
        let mean = first + offset;
        (mean, (first - mean) + offset)
    }

    /// `rows_forward`: cube `r` normalizes row `r` of `x` into `output` and writes its
    /// `[μ₀, μ₁, r]` into `statistics`.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rows_forward_kernel<F: Float>(
        x: &Tensor<F>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        output: &mut Tensor<F>,
        statistics: &mut Tensor<F>,
        rows: u32,
        groups: u32,
        channels_per_group: u32,
        spatial: u32,
        eps: f32,
        #[comptime] center: bool,
        #[comptime] cube_size: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let row = CUBE_POS;
        if row >= rows as usize {
            terminate!();
        }
        let spatial = spatial as usize;
        let row_len = channels_per_group as usize * spatial;
        let start = row * row_len;
        let unit = UNIT_POS as usize;
        let count = F::cast_from(row_len as f32);

        // The mean as `μ₀ + μ₁` (see `mean_parts`), from the values' offsets from the first;
        // 0 without centering.
        let mut first = F::new(0.0);
        let mut offset = F::new(0.0);
        if center {
            first = x[start];
            let mut partial = F::new(0.0);
            let mut i = unit;
            while i < row_len {
                partial += x[start + i] - first;
                i += cube_size;
            }
            offset = sum_over_cube::<F>(partial, cube_size) / count;
        }
        let (mean, low) = mean_parts::<F>(first, offset);
        let mut partial = F::new(0.0);
        let mut i = unit;
        while i < row_len {
            let deviation = (x[start + i] - mean) - low;
            partial += deviation * deviation;
            i += cube_size;
        }
        let variance = sum_over_cube::<F>(partial, cube_size) / count;
        let rstd = F::new(1.0) / F::sqrt(variance + F::cast_from(eps));
        if unit == 0 {
            statistics[row * 3] = mean;
            statistics[row * 3 + 1] = low;
            statistics[row * 3 + 2] = rstd;
        }

        let first_channel = (row % groups as usize) * channels_per_group as usize;
        let mut i = unit;
        while i < row_len {
            let channel = first_channel + i / spatial;
            let xhat = ((x[start + i] - mean) - low) * rstd;
            output[start + i] = xhat * gamma[channel] + beta[channel];
            i += cube_size;
        }
    }

    /// `rows_input_grad`: cube `r` writes row `r` of `dx` from the same row of the output gradient
    /// and of `x`, and the row's `[μ₀, μ₁, r]`.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rows_input_grad_kernel<F: Float>(
        grad: &Tensor<F>,
        x: &Tensor<F>,
        gamma: &Tensor<F>,
        statistics: &Tensor<F>,
        input_grad: &mut Tensor<F>,
        rows: u32,
        groups: u32,
        channels_per_group: u32,
        spatial: u32,
        #[comptime] center: bool,
        #[comptime] cube_size: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let row = CUBE_POS;
        if row >= rows as usize {
            terminate!();
        }
        let spatial = spatial as usize;
        let row_len = channels_per_group as usize * spatial;
        let start = row * row_len;
        let unit = UNIT_POS as usize;
        let count = F::cast_from(row_len as f32);
        let mean = statistics[row * 3];
        let low = statistics[row * 3 + 1];
        let rstd = statistics[row * 3 + 2];
        let first_channel = (row % groups as usize) * channels_per_group as usize;

        let mut partial_g = F::new(0.0);
        let mut partial_g_xhat = F::new(0.0);
        let mut i = unit;
        while i < row_len {
            let g = grad[start + i] * gamma[first_channel + i / spatial];
            partial_g += g;
            partial_g_xhat += g * (((x[start + i] - mean) - low) * rstd);
            i += cube_size;
        }
        let mut mean_g = F::new(0.0);
        if center {
            mean_g = sum_over_cube::<F>(partial_g, cube_size) / count;
        }
        let mean_g_xhat = sum_over_cube::<F>(partial_g_xhat, cube_size) / count;

        let mut i = unit;
        while i < row_len {
            let g = grad[start + i] * gamma[first_channel + i / spatial];
            let xhat = ((x[start + i] - mean) - low) * rstd;
            input_grad[start + i] = rstd * (g - mean_g - xhat * mean_g_xhat);
            i += cube_size;
        }
    }

    /// `channels_forward`: unit `q` normalizes position `q` (sample `q / P`, position `q % P`)
    /// of `x` (`[N, C, P]`) over its `C` channels, and writes its `[μ₀, μ₁, r]`.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn channels_forward_kernel<F: Float>(
        x: &Tensor<F>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        output: &mut Tensor<F>,
        statistics: &mut Tensor<F>,
        samples: u32,
        channels: u32,
        positions: u32,
        eps: f32,
        #[define(F)] _dtype: ElemType,
    ) {
        let position = CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize;
        let positions = positions as usize;
        if position >= samples as usize * positions {
            terminate!();
        }
        let channels = channels as usize;
        let start = (position / positions) * channels * positions + position % positions;
        let count = F::cast_from(channels as f32);

        // Summed around the first value: one unit adds all `C` values in turn, and values far
        // from 0 against their spread would lose the mean's low digits in a plain sum.
        let first = x[start];
        let mut sum = F::new(0.0);
        for c in 0..channels {
            sum += x[start + c * positions] - first;
        }
        let (mean, low) = mean_parts::<F>(first, sum / count);
        let mut squares = F::new(0.0);
        for c in 0..channels {
            let deviation = (x[start + c * positions] - mean) - low;
            squares += deviation * deviation;
        }
        let rstd = F::new(1.0) / F::sqrt(squares / count + F::cast_from(eps));
        statistics[position * 3] = mean;
        statistics[position * 3 + 1] = low;
        statistics[position * 3 + 2] = rstd;
        for c in 0..channels {
            let index = start + c * positions;
            output[index] = ((x[index] - mean) - low) * rstd * gamma[c] + beta[c];
        }
    }

    /// `channels_input_grad`: unit `q` writes position `q`'s `dx` from its output gradient, `x`
    /// and `[μ₀, μ₁, r]`.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn channels_input_grad_kernel<F: Float>(
        grad: &Tensor<F>,
        x: &Tensor<F>,
        gamma: &Tensor<F>,
        statistics: &Tensor<F>,
        input_grad: &mut Tensor<F>,
        samples: u32,
        channels: u32,
        positions: u32,
        #[define(F)] _dtype: ElemType,
    ) {
        let position = CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize;
        let positions = positions as usize;
        if position >= samples as usize * positions {
            terminate!();
        }
        let channels = channels as usize;
        let start = (position / positions) * channels * positions + position % positions;
        let count = F::cast_from(channels as f32);
        let mean = statistics[position * 3];
        let low = statistics[position * 3 + 1];
        let rstd = statistics[position * 3 + 2];

        let mut sum_g = F::new(0.0);
        let mut sum_g_xhat = F::new(0.0);
        for c in 0..channels {
            let index = start + c * positions;
            let g = grad[index] * gamma[c];
            sum_g += g;
            sum_g_xhat += g * (((x[index] - mean) - low) * rstd);
        }
        let mean_g = sum_g / count;
        let mean_g_xhat = sum_g_xhat / count;
        for c in 0..channels {
            let index = start + c * positions;
            let xhat = ((x[index] - mean) - low) * rstd;
            input_grad[index] = rstd * (grad[index] * gamma[c] - mean_g - xhat * mean_g_xhat);
        }
    }

    /// Where `[N, C, S]` holds value `j` (of `N·S`) of channel `channel`.
    #[cube]
    fn channel_value(j: usize, channel: usize, channels: usize, spatial: usize) -> usize {
        ((j / spatial) * channels + channel) * spatial + j % spatial
    }

    /// The channel, and the first and one-past-the-last of its values, that cube `cube` sums
    /// when each channel's `count` values are split into `parts` chunks of `chunk`.
    #[cube]
    fn channel_chunk(cube: usize, count: u32, chunk: u32, parts: u32) -> (usize, usize, usize) {
        let parts = parts as usize;
        let start = (cube % parts) * chunk as usize;
        let mut end = start + chunk as usize;
        if end > count as usize {
            end = count as usize;
        }
        (cube / parts, start, end)
    }

    /// `channel_sums`: cube `k` sums `dy·x̂` and `dy` over chunk `k % parts` of channel
    /// `k / parts`'s values (see `channel_chunk`), `x` read as `[samples, channels, spatial]` and
    /// the `[μ₀, μ₁, r]` of value `(n, c, s)` at `n·stats_per_sample + c / channels_per_stat +
    /// s·spatial_stride`. The sums of a channel's chunks are its `parts` consecutive outputs.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn channel_sums_kernel<F: Float>(
        grad: &Tensor<F>,
        x: &Tensor<F>,
        statistics: &Tensor<F>,
        scale_sums: &mut Tensor<F>,
        shift_sums: &mut Tensor<F>,
        channels: u32,
        spatial: u32,
        stats_per_sample: u32,
        channels_per_stat: u32,
        spatial_stride: u32,
        count: u32,
        chunk: u32,
        parts: u32,
        #[comptime] cube_size: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let cube = CUBE_POS;
        let channels = channels as usize;
        if cube >= channels * parts as usize {
            terminate!();
        }
        let (channel, start, end) = channel_chunk(cube, count, chunk, parts);
        let spatial = spatial as usize;
        let stats_per_sample = stats_per_sample as usize;
        let spatial_stride = spatial_stride as usize;
        let channel_stat = channel / channels_per_stat as usize;
        let unit = UNIT_POS as usize;

        let mut partial_scale = F::new(0.0);
        let mut partial_shift = F::new(0.0);
        let mut j = start + unit;
        while j < end {
            let index = channel_value(j, channel, channels, spatial);
            let s = j % spatial;
            let stat = ((j / spatial) * stats_per_sample + channel_stat + s * spatial_stride) * 3;
            let dy = grad[index];
            let xhat =
                ((x[index] - statistics[stat]) - statistics[stat + 1]) * statistics[stat + 2];
            partial_scale += dy * xhat;
            partial_shift += dy;
            j += cube_size;
        }
        let scale = sum_over_cube::<F>(partial_scale, cube_size);
        let shift = sum_over_cube::<F>(partial_shift, cube_size);
        if unit == 0 {
            scale_sums[cube] = scale;
            shift_sums[cube] = shift;
        }
    }

    /// `combine_sums`: unit `c` adds channel `c`'s `parts` partial sums of `channel_sums`.
    #[cube(launch)]
    pub(super) fn combine_sums_kernel<F: Float>(
        scale_partials: &Tensor<F>,
        shift_partials: &Tensor<F>,
        scale_sums: &mut Tensor<F>,
        shift_sums: &mut Tensor<F>,
        channels: u32,
        parts: u32,
        #[define(F)] _dtype: ElemType,
    ) {
        let channel = CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize;
        if channel >= channels as usize {
            terminate!();
        }
        let parts = parts as usize;
        let mut scale = F::new(0.0);
        let mut shift = F::new(0.0);
        for part in 0..parts {
            scale += scale_partials[channel * parts + part];
            shift += shift_partials[channel * parts + part];
        }
        scale_sums[channel] = scale;
        shift_sums[channel] = shift;
    }

    /// `channel_moments`: cube `k` computes the mean of chunk `k % parts` of channel
    /// `k / parts`'s values in `x` (`[N, C, S]`, see `channel_chunk`), as its offset from the
    /// channel's first value, and the sum of squared deviations from it (two passes over the
    /// chunk).
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn channel_moments_kernel<F: Float>(
        x: &Tensor<F>,
        means: &mut Tensor<F>,
        squares: &mut Tensor<F>,
        channels: u32,
        spatial: u32,
        count: u32,
        chunk: u32,
        parts: u32,
        #[comptime] cube_size: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let cube = CUBE_POS;
        let channels = channels as usize;
        if cube >= channels * parts as usize {
            terminate!();
        }
        let (channel, start, end) = channel_chunk(cube, count, chunk, parts);
        let spatial = spatial as usize;
        let unit = UNIT_POS as usize;
        let values = F::cast_from((end - start) as f32);

        // Offsets from the channel's first value: values far from 0 against their spread would
        // lose the mean's low digits in a plain f32 sum, and the offsets stay small.
        let first = x[channel * spatial];
        let mut partial = F::new(0.0);
        let mut j = start + unit;
        while j < end {
            partial += x[channel_value(j, channel, channels, spatial)] - first;
            j += cube_size;
        }
        let offset = sum_over_cube::<F>(partial, cube_size) / values;
        let mut partial = F::new(0.0);
        let mut j = start + unit;
        while j < end {
            let deviation = (x[channel_value(j, channel, channels, spatial)] - first) - offset;
            partial += deviation * deviation;
            j += cube_size;
        }
        let sum_of_squares = sum_over_cube::<F>(partial, cube_size);
        if unit == 0 {
            means[cube] = offset;
            squares[cube] = sum_of_squares;
        }
    }

    /// `combine_moments`: unit `c` merges channel `c`'s `parts` chunk means (offsets from the
    /// channel's first value in `x`) and sums of squared deviations (Chan et al.'s pairwise
    /// update, exact and stable) into its mean `μ₀ + μ₁`, and biased variance `σ²`, written as
    /// `statistics[0][c] = μ₀`, `statistics[1][c] = σ²` and `statistics[2][c] = μ₁` (`[3, C]`).
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn combine_moments_kernel<F: Float>(
        x: &Tensor<F>,
        means: &Tensor<F>,
        squares: &Tensor<F>,
        statistics: &mut Tensor<F>,
        channels: u32,
        spatial: u32,
        count: u32,
        chunk: u32,
        parts: u32,
        #[define(F)] _dtype: ElemType,
    ) {
        let channel = CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize;
        let channels = channels as usize;
        if channel >= channels {
            terminate!();
        }
        let mut values = F::new(0.0);
        let mut mean = F::new(0.0);
        let mut sum_of_squares = F::new(0.0);
        for part in 0..parts as usize {
            let (_, start, end) =
                channel_chunk(channel * parts as usize + part, count, chunk, parts);
            let part_values = F::cast_from((end - start) as f32);
            let part_mean = means[channel * parts as usize + part];
            let total = values + part_values;
            let delta = part_mean - mean;
            mean += delta * part_values / total;
            sum_of_squares += squares[channel * parts as usize + part]
                + delta * delta * values * part_values / total;
            values = total;
        }
        let (mean_high, mean_low) = mean_parts::<F>(x[channel * spatial as usize], mean);
        statistics[channel] = mean_high;
        statistics[channels + channel] = sum_of_squares / values;
        statistics[2 * channels + channel] = mean_low;
    }

    /// `batch_forward`: unit `i` writes value `i` of BatchNorm's output from `x` (`[N, C, S]`)
    /// and the `[3, C]` statistics of `combine_moments`; units `c < C` also write channel `c`'s
    /// `[μ₀, μ₁, r]` (`[C, 3]`) for the backward pass.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn batch_forward_kernel<F: Float>(
        x: &Tensor<F>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        moments: &Tensor<F>,
        output: &mut Tensor<F>,
        statistics: &mut Tensor<F>,
        len: u32,
        channels: u32,
        spatial: u32,
        eps: f32,
        #[define(F)] _dtype: ElemType,
    ) {
        let index = CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize;
        if index >= len as usize {
            terminate!();
        }
        let channels = channels as usize;
        let channel = (index / spatial as usize) % channels;
        let mean = moments[channel];
        let low = moments[2 * channels + channel];
        let rstd = F::new(1.0) / F::sqrt(moments[channels + channel] + F::cast_from(eps));
        output[index] = ((x[index] - mean) - low) * rstd * gamma[channel] + beta[channel];
        if index < channels {
            statistics[index * 3] = moments[index];
            statistics[index * 3 + 1] = moments[2 * channels + index];
            statistics[index * 3 + 2] =
                F::new(1.0) / F::sqrt(moments[channels + index] + F::cast_from(eps));
        }
    }

    /// `batch_input_grad`: unit `i` writes value `i` of `dx = r·γ·(dy − Σdy/M − x̂·Σ(dy·x̂)/M)`,
    /// `M = N·S` (`count`), from channel `c`'s `[μ₀, μ₁, r]` and sums.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn batch_input_grad_kernel<F: Float>(
        grad: &Tensor<F>,
        x: &Tensor<F>,
        gamma: &Tensor<F>,
        statistics: &Tensor<F>,
        scale_sums: &Tensor<F>,
        shift_sums: &Tensor<F>,
        input_grad: &mut Tensor<F>,
        len: u32,
        channels: u32,
        spatial: u32,
        count: f32,
        #[define(F)] _dtype: ElemType,
    ) {
        let index = CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize;
        if index >= len as usize {
            terminate!();
        }
        let channel = (index / spatial as usize) % channels as usize;
        let count = F::cast_from(count);
        let mean = statistics[channel * 3];
        let low = statistics[channel * 3 + 1];
        let rstd = statistics[channel * 3 + 2];
        let xhat = ((x[index] - mean) - low) * rstd;
        input_grad[index] = rstd
            * gamma[channel]
            * (grad[index] - shift_sums[channel] / count - xhat * scale_sums[channel] / count);
    }
}

// The tests compare against references computed on flex.
#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;
    use crate::kernel_tests::{
        assert_batch_kernel_matches_composed, assert_channels_kernel_matches_composed,
        assert_rows_kernel_matches_composed, assert_rows_kernel_output_matches_composed, composed,
        grouping,
    };

    fn wgpu() -> Device {
        crate::backend::device("wgpu").unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn gpu_rows_match_the_composed_ops_and_their_gradients() {
        assert_rows_kernel_matches_composed(&KERNELS, &wgpu().autodiff());
    }

    #[test]
    fn gpu_batch_norm_matches_burns_batch_norm_and_its_gradients() {
        assert_batch_kernel_matches_composed(&KERNELS, &wgpu().autodiff());
    }

    #[test]
    fn gpu_channels_first_matches_the_composed_ops_and_their_gradients() {
        assert_channels_kernel_matches_composed(&KERNELS, &wgpu().autodiff());
    }

    #[test]
    fn without_autodiff_the_gpu_output_is_the_same_also_for_a_transposed_input() {
        assert_rows_kernel_output_matches_composed(&KERNELS, &wgpu());
    }

    #[test]
    fn rows_beyond_one_grid_dimension_wrap_onto_the_next() {
        let device = wgpu();
        device.seed(5);
        let rows = MAX_CUBES_PER_DIM + 3;
        let grouping = grouping(1, 2, 1, true);
        let x = Tensor::<2>::random([rows, 2], Distribution::Default, &device);
        let (gamma, beta) = (Tensor::ones([2], &device), Tensor::zeros([2], &device));
        let fused = KERNELS
            .rows(&x, Some(gamma.clone()), Some(beta.clone()), grouping)
            .expect("applies to f32 on wgpu");
        fused.into_data().assert_approx_eq::<f32>(
            &composed(x, gamma, beta, grouping).into_data(),
            Default::default(),
        );
    }

    #[test]
    fn with_gamma_and_beta_untracked_only_the_input_gradient_is_computed() {
        let device = wgpu().autodiff();
        device.seed(7);
        let grouping = grouping(2, 3, 4, true);
        let x = Tensor::<2>::random([4, 12], Distribution::Default, &device);
        let gamma = Tensor::<1>::random([6], Distribution::Default, &device);
        let beta = Tensor::<1>::random([6], Distribution::Default, &device);
        let input_grad = |fused: bool| {
            let x = x.clone().require_grad();
            let y = if fused {
                KERNELS
                    .rows(&x, Some(gamma.clone()), Some(beta.clone()), grouping)
                    .expect("applies to f32 on wgpu")
            } else {
                composed(x.clone(), gamma.clone(), beta.clone(), grouping)
            };
            let grads = y.powi_scalar(2).sum().backward();
            assert!(gamma.grad(&grads).is_none() && beta.grad(&grads).is_none());
            x.grad(&grads).expect("x is tracked").into_data()
        };
        input_grad(true).assert_approx_eq::<f32>(&input_grad(false), Default::default());
    }

    #[test]
    fn other_backends_are_given_back_to_compose() {
        let x = Tensor::<2>::ones([2, 4], &Device::flex());
        assert!(
            KERNELS
                .rows(&x, None, None, grouping(1, 4, 1, true))
                .is_none()
        );
    }
}
