//! Fused normalization on the GPU backends (CubeCL kernels, run by wgpu), with a closed-form
//! backward pass.
//!
//! The same formulas as the flex kernels (`flex/`): GroupNorm, InstanceNorm, LayerNorm and
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
//!
//! Files: the extension trait and its launch on the CubeCL backend here, the autodiff
//! registration in `autodiff.rs`, the `#[cube]` kernel bodies in `kernels.rs`.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata, backend_extension};
use burn::tensor::Shape;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::{CubeCount, CubeDim};

mod autodiff;
mod kernels;

use self::kernels::{
    batch_forward_kernel, batch_input_grad_kernel, channel_moments_kernel, channel_sums_kernel,
    channels_forward_kernel, channels_input_grad_kernel, combine_moments_kernel,
    combine_sums_kernel, rows_forward_kernel, rows_input_grad_kernel,
};

/// Units per cube: each row (or channel) is summed by this many units, then as a tree.
const CUBE_SIZE: u32 = 256;

/// Values of one channel a cube sums (16 per unit) before the channel is split over more cubes.
const VALUES_PER_CUBE: usize = 16 * CUBE_SIZE as usize;

/// Cubes per grid dimension: wgpu allows 65,535, so longer launches wrap onto the next one.
const MAX_CUBES_PER_DIM: usize = 65_535;

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
