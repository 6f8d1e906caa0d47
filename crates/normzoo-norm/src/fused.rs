//! Fused normalization on the flex backend, with a closed-form backward pass.
//!
//! GroupNorm, InstanceNorm, LayerNorm and RMSNorm all standardize the rows of a `[rows, K]`
//! view and then scale and shift by a per-channel `γ`, `β`. Composed of tensor ops, that costs a
//! pass over memory and a fresh buffer per op, and an autodiff node per op whose backward takes
//! more passes. Here one kernel computes each row's statistics and output (the row is read
//! twice while it is in cache, and written once), and one backward kernel computes every
//! gradient from the saved statistics (`dx` overwrites `dy` when nothing else holds it):
//!
//! ```text
//! x̂ = (x − μ)·r,   r = 1 / sqrt(σ² + ε),   y = x̂·γ + β            (RMSNorm: μ = 0)
//! g = dy·γ,   dx = r·(g − mean(g) − x̂·mean(g·x̂)),   dγ = Σ dy·x̂,   dβ = Σ dy
//! ```
//!
//! The mean is carried as two f32 values, the one nearest it and the remainder
//! (`μ = μ₀ + μ₁`), and every kernel centres before it scales: `x − μ₀` is exact for the values
//! near the mean, so a mean far from 0 against the spread (1e4 and 0.1) loses none of the
//! output's digits, where `x·(r·γ) + (β − μ·r·γ)` would lose them in the cancellation and a
//! single f32 mean would be off by up to half its last place (5e-4 at 1e4, 5e-3 after dividing
//! by a std of 0.1).
//!
//! where the means run over the row (RMSNorm drops the `mean(g)` term) and `dγ`, `dβ` sum over
//! every position of their channel. BatchNorm is the same formula with the statistics taken per
//! channel across the batch (`[N, C, S]`, `N` runs of `S` values each): one op computes them,
//! and a second normalizes with them, its backward pass accounting for their dependence on `x`.
//! LayerNorm2d (channels first) is the row formula with each row's values `P` apart: its
//! kernels, in [`channels_first`], read them in place instead of transposing. The kernels read
//! f32 only; every other case, and every
//! other backend, takes the composed path in [`stats`](crate::stats), which the tests compare
//! this one against.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, DispatchDevice, Flex, backend_extension,
};
use burn::tensor::TensorData;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::backend::flex_values as values;
use crate::stats::{Grouping, Kernels};

mod channels_first;

/// flex's kernels, as `stats` runs them.
pub(crate) const KERNELS: Kernels = Kernels {
    backend: is_flex,
    normalize_rows: <Dispatch as FusedNormBackend>::normalize_rows,
    normalize_channels: <Dispatch as FusedNormBackend>::normalize_channels,
    channel_statistics: <Dispatch as FusedNormBackend>::channel_statistics,
    batch_normalize: <Dispatch as FusedNormBackend>::batch_normalize,
};

/// Whether a device is flex's (the backend these kernels run on).
fn is_flex(device: &DispatchDevice) -> bool {
    matches!(device, DispatchDevice::Flex(_))
}

/// The fused normalization as a burn backend extension.
#[backend_extension(Flex, Autodiff)]
pub(crate) trait FusedNormBackend: Backend {
    /// `x̂·γ + β` over the rows of `x` (`[rows, K]`), grouped as the arguments of a
    /// [`Grouping`] say.
    #[allow(clippy::too_many_arguments)]
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

    /// `x̂·γ + β` for every position of `x` (`[N, C, P]`), normalized over its `C` channels.
    fn normalize_channels(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;

    /// Each channel's mean, biased variance and the mean's f32 remainder over `x`
    /// (`[N, C, S]`), as `[3, C]`. Not differentiable:
    /// [`batch_normalize`](Self::batch_normalize)'s backward pass accounts for the statistics'
    /// dependence on `x`.
    fn channel_statistics(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// BatchNorm's `x̂·γ + β` per channel of `x` (`[N, C, S]`), with `statistics` computed by
    /// [`channel_statistics`](Self::channel_statistics) from the same `x`.
    fn batch_normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
}

impl FusedNormBackend for Flex {
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
        forward(&x, &gamma, &beta, grouping).0
    }

    fn normalize_channels(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        channels_first::forward(&x, &gamma, &beta, eps).0
    }

    fn channel_statistics(x: FloatTensor<Self>) -> FloatTensor<Self> {
        channel_statistics(&x)
    }

    fn batch_normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        batch_forward(&x, &gamma, &beta, &statistics, eps).0
    }
}

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
        let step = KernelBackward {
            kernel: |grad, saved: Saved| {
                let Saved {
                    x,
                    gamma,
                    statistics,
                    grouping,
                } = saved;
                backward(grad, &x, &gamma, &statistics, grouping)
            },
        };
        recorded::<C, _>(step, [x, gamma, beta], |x, gamma, beta| {
            let (output, statistics) = forward(&x, &gamma, &beta, grouping);
            let saved = Saved {
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
        recorded::<C, _>(
            KernelBackward {
                kernel: |grad, saved: ChannelsSaved| {
                    channels_first::backward(grad, &saved.x, &saved.gamma, &saved.statistics)
                },
            },
            [x, gamma, beta],
            |x, gamma, beta| {
                let (output, statistics) = channels_first::forward(&x, &gamma, &beta, eps);
                let saved = ChannelsSaved {
                    x,
                    gamma,
                    statistics,
                };
                (output, saved)
            },
        )
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
        recorded::<C, _>(
            KernelBackward {
                kernel: batch_backward,
            },
            [x, gamma, beta],
            |x, gamma, beta| {
                let (output, channels) = batch_forward(&x, &gamma, &beta, &statistics, eps);
                (output, BatchSaved { x, gamma, channels })
            },
        )
    }
}

/// Runs a forward `kernel` on the values of `x`, `γ` and `β`, and when any of the three is
/// tracked records `backward` with the state the kernel returns.
fn recorded<C: CheckpointStrategy, B: Backward<Flex, 3>>(
    backward: B,
    [x, gamma, beta]: [FloatTensor<Autodiff<Flex, C>>; 3],
    kernel: impl FnOnce(FlexTensor, FlexTensor, FlexTensor) -> (FlexTensor, B::State),
) -> FloatTensor<Autodiff<Flex, C>> {
    let guards = [x.node(), gamma.node(), beta.node()];
    let (x, gamma, beta) = (
        x.into_primitive(),
        gamma.into_primitive(),
        beta.into_primitive(),
    );
    match backward.prepare::<C>(guards).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (output, state) = kernel(x, gamma, beta);
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(kernel(x, gamma, beta).0),
    }
}

/// Each row's statistics, interleaved as [`STATISTICS`] values per row: the mean (the f32
/// nearest it, then the remainder) and `1 / sqrt(σ² + ε)`.
type RowStatistics = Vec<f32>;

/// Values per row (or channel, or position) in the saved statistics: `[μ₀, μ₁, r]`.
const STATISTICS: usize = 3;

/// What the backward pass needs from the forward pass.
#[derive(Debug, Clone)]
struct Saved {
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

/// The backward step of a fused kernel: `kernel` computes the gradients of `x`, `γ` and `β`
/// from the output's and the state `S` its forward pass saved.
struct KernelBackward<S> {
    kernel: fn(FlexTensor, S) -> (FlexTensor, FlexTensor, FlexTensor),
}

impl<S> std::fmt::Debug for KernelBackward<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelBackward")
    }
}

impl<S: Clone + Send + std::fmt::Debug + 'static> Backward<Flex, 3> for KernelBackward<S> {
    type State = S;

    /// Runs the kernel and registers the gradients it returns for the tracked parents.
    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let output_grad = grads.consume::<Flex>(&ops.node);
        let (x_grad, gamma_grad, beta_grad) = (self.kernel)(output_grad, ops.state);
        for (parent, grad) in ops.parents.into_iter().zip([x_grad, gamma_grad, beta_grad]) {
            if let Some(parent) = parent {
                grads.register::<Flex>(parent.id, grad);
            }
        }
    }
}

fn tensor_from(values: Vec<f32>, shape: impl Into<Vec<usize>>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// A new buffer of `len` values (a multiple of `row_len`), its rows written in parallel:
/// `write_row(r, out)` writes row `r` into `out` (uninitialised on entry) and returns what else
/// it computed for the row.
///
/// This takes the place of `vec![0.0; len]` and a parallel write: zero-filling would be a
/// single-threaded pass over the whole output before the parallel write.
///
/// # Safety
///
/// `write_row` must write every value of the `out` it is given.
unsafe fn written_rows<T: Send>(
    len: usize,
    row_len: usize,
    write_row: impl Fn(usize, &mut [MaybeUninit<f32>]) -> T + Sync,
) -> (Vec<f32>, Vec<T>) {
    assert_eq!(len % row_len, 0, "rows of {row_len} values in {len}");
    let mut values = Vec::with_capacity(len);
    let per_row = values.spare_capacity_mut()[..len]
        .par_chunks_exact_mut(row_len)
        .enumerate()
        .map(|(row, out)| write_row(row, out))
        .collect();
    // SAFETY: the chunks cover the first `len` values of the capacity, and the caller promises
    // that `write_row` wrote each of them.
    unsafe { values.set_len(len) };
    (values, per_row)
}

/// The forward kernel: the output, and each row's statistics.
fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    grouping: Grouping,
) -> (FlexTensor, RowStatistics) {
    let shape = x.shape().to_vec();
    let width = grouping.row_len();
    let (x, gamma, beta) = (values(x), values(gamma), values(beta));
    // Every row's channels, a value or a run of `spatial` values each, cover the row: what
    // makes the writes below cover it.
    assert_eq!(group_channels(0, grouping).len() * grouping.spatial, width);
    let write_row = |row: usize, out: &mut [MaybeUninit<f32>]| {
        vectorized(
            #[inline(always)]
            || {
                let x = &x[row * width..(row + 1) * width];
                let [mean, low, rstd] = row_statistics(x, grouping);
                let channels = group_channels(row, grouping);
                let (gamma, beta) = (&gamma[channels.clone()], &beta[channels]);
                // `(x − μ₀)·s + (β − μ₁·s)` with `s = r·γ`: centred before it is scaled.
                if grouping.spatial == 1 {
                    // One channel per value (LayerNorm, RMSNorm): γ and β run along the row.
                    for (((out, &x), &gamma), &beta) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
                        let scale = rstd * gamma;
                        out.write((x - mean) * scale + (beta - low * scale));
                    }
                } else {
                    // Runs of `spatial` values per channel (GroupNorm, InstanceNorm).
                    let runs = out
                        .chunks_exact_mut(grouping.spatial)
                        .zip(x.chunks_exact(grouping.spatial));
                    for ((out, x), (&gamma, &beta)) in runs.zip(gamma.iter().zip(beta)) {
                        let scale = rstd * gamma;
                        let shift = beta - low * scale;
                        for (out, &x) in out.iter_mut().zip(x) {
                            out.write((x - mean) * scale + shift);
                        }
                    }
                }
                [mean, low, rstd]
            },
        )
    };
    // SAFETY: both branches write every value of the row: `out` and `x` have the row's length,
    // and the row's `γ` and `β` one value per value or per run of `spatial` values (asserted
    // above).
    let (output, statistics) = unsafe { written_rows(x.len(), width, write_row) };
    (tensor_from(output, shape), statistics.into_flattened())
}

/// One thread's sums of `dγ` and `dβ`. They add up over every row, so the totals are f64; rows
/// with one channel per value (LayerNorm, RMSNorm) add into f32 partial sums first, which are
/// moved into the totals every [`ROWS_PER_PARTIAL`] rows.
struct AffineGrads {
    gamma: Vec<f64>,
    beta: Vec<f64>,
    partial_gamma: Vec<f32>,
    partial_beta: Vec<f32>,
    partial_rows: usize,
}

/// How many rows an f32 partial sum of `dγ` or `dβ` covers.
const ROWS_PER_PARTIAL: usize = 16;

impl AffineGrads {
    fn zeros(channels: usize) -> Self {
        Self {
            gamma: vec![0.0; channels],
            beta: vec![0.0; channels],
            partial_gamma: vec![0.0; channels],
            partial_beta: vec![0.0; channels],
            partial_rows: 0,
        }
    }

    /// Counts a row added into the partial sums, and moves them into the totals when full.
    /// Inlined, like [`AffineGrads::flush`], into [`vectorized`]'s copies of the backward pass.
    #[inline(always)]
    fn row_done(&mut self) {
        self.partial_rows += 1;
        if self.partial_rows == ROWS_PER_PARTIAL {
            self.flush();
        }
    }

    #[inline(always)]
    fn flush(&mut self) {
        let sums = [
            (&mut self.gamma, &mut self.partial_gamma),
            (&mut self.beta, &mut self.partial_beta),
        ];
        for (totals, partials) in sums {
            for (total, partial) in totals.iter_mut().zip(partials.iter_mut()) {
                *total += f64::from(*partial);
                *partial = 0.0;
            }
        }
        self.partial_rows = 0;
    }

    /// Both threads' sums as one, its totals complete.
    fn merge(mut self, mut other: Self) -> Self {
        self.flush();
        other.flush();
        let totals = self.gamma.iter_mut().chain(self.beta.iter_mut());
        for (total, other) in totals.zip(other.gamma.into_iter().chain(other.beta)) {
            *total += other;
        }
        self
    }
}

/// The backward kernel: the gradients of `x`, `γ` and `β` from the output's.
fn backward(
    output_grad: FlexTensor,
    x: &FlexTensor,
    gamma: &FlexTensor,
    statistics: &[f32],
    grouping: Grouping,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let width = grouping.row_len();
    let channels = grouping.channels();
    let (x, gamma) = (values(x), values(gamma));
    let mut buffer = GradBuffer::new(output_grad);
    let grad = buffer.values_mut();
    let zeros = || AffineGrads::zeros(channels);
    let sums = grad
        .par_chunks_exact_mut(width)
        .zip(x.par_chunks_exact(width))
        .zip(statistics.par_chunks_exact(STATISTICS))
        .enumerate()
        .fold(zeros, |mut sums: AffineGrads, (row, ((grad, x), stats))| {
            vectorized(
                #[inline(always)]
                || backward_row(grad, x, stats, &gamma, row, grouping, &mut sums),
            );
            sums
        })
        .reduce(zeros, AffineGrads::merge);
    (
        buffer.into_tensor(),
        narrow(sums.gamma, channels),
        narrow(sums.beta, channels),
    )
}

/// `values` as an f32 tensor of shape `[len]`.
fn narrow(values: Vec<f64>, len: usize) -> FlexTensor {
    tensor_from(values.into_iter().map(|v| v as f32).collect(), [len])
}

/// The output gradient as a buffer the input gradient is written into: its own storage when
/// nothing else holds it (which saves allocating and faulting in a buffer the size of the
/// input), else a contiguous copy.
enum GradBuffer {
    Reused(FlexTensor),
    Copied(Vec<f32>, Vec<usize>),
}

impl GradBuffer {
    fn new(mut grad: FlexTensor) -> Self {
        let len = grad.shape().num_elements();
        let whole = grad.as_slice::<f32>().map(<[f32]>::len) == Some(len)
            && grad.try_storage_mut::<f32>().map(|s| s.len()) == Some(len);
        if whole {
            Self::Reused(grad)
        } else {
            Self::Copied(values(&grad).into_owned(), grad.shape().to_vec())
        }
    }

    fn values_mut(&mut self) -> &mut [f32] {
        match self {
            Self::Reused(tensor) => tensor
                .try_storage_mut::<f32>()
                .expect("checked unique and contiguous"),
            Self::Copied(values, _) => values,
        }
    }

    fn into_tensor(self) -> FlexTensor {
        match self {
            Self::Reused(tensor) => tensor,
            Self::Copied(values, shape) => tensor_from(values, shape),
        }
    }
}

/// One row of the backward pass: replaces the row's output gradient `grad` by its input
/// gradient and adds the row's share of `dγ` and `dβ` to `sums`. Inlined into
/// [`vectorized`]'s copies: a function called from them, not inlined, would be compiled for
/// the baseline instruction set only.
#[inline(always)]
fn backward_row(
    grad: &mut [f32],
    x: &[f32],
    stats: &[f32],
    gamma: &[f32],
    row: usize,
    grouping: Grouping,
    sums: &mut AffineGrads,
) {
    let [mean, low, rstd] = [stats[0], stats[1], stats[2]];
    let channels = group_channels(row, grouping);
    let gamma = &gamma[channels.clone()];
    let width = grad.len() as f64;
    // dx = r·γ·dy − r·mean(g) − r·x̂·mean(g·x̂), with x̂ = (x − μ₀ − μ₁)·r written as
    // dy·(r·γ) + (x − μ₀)·k₁ + k₀ (centred first, as in the forward pass).
    let coefficients = |sum_g: f64, sum_g_xhat: f64| {
        let mean_g = if grouping.center { sum_g / width } else { 0.0 };
        let mean_g_xhat = sum_g_xhat / width;
        let (r, low) = (f64::from(rstd), f64::from(low));
        let k1 = (-r * r * mean_g_xhat) as f32;
        let k0 = (-r * mean_g + low * r * r * mean_g_xhat) as f32;
        (k1, k0)
    };
    if grouping.spatial == 1 {
        // One channel per value (LayerNorm, RMSNorm): pass 1 sums Σ g and Σ g·x̂ (g = dy·γ),
        // pass 2 adds the row's dγ = Σ dy·x̂ and dβ = Σ dy into the partial sums as it
        // overwrites dy with dx.
        let (sum_g, sum_g_xhat) = row_sums(grad, x, gamma, [mean, low, rstd]);
        let (k1, k0) = coefficients(sum_g, sum_g_xhat);
        let (gamma_grad, beta_grad) = (
            &mut sums.partial_gamma[channels.clone()],
            &mut sums.partial_beta[channels],
        );
        row_grads(
            grad,
            x,
            gamma,
            gamma_grad,
            beta_grad,
            [mean, low, rstd, k1, k0],
        );
        sums.row_done();
    } else {
        // Runs of `spatial` values per channel (GroupNorm, InstanceNorm): each run's Σ dy
        // and Σ dy·x̂ give its channel's dβ and dγ, and with its γ the row's sums.
        let runs = grad
            .chunks_exact(grouping.spatial)
            .zip(x.chunks_exact(grouping.spatial));
        let (gamma_grad, beta_grad) = (&mut sums.gamma[channels.clone()], &mut sums.beta[channels]);
        let (mut sum_g, mut sum_g_xhat) = (0.0f64, 0.0f64);
        for (((dy, x), &gamma), (gamma_grad, beta_grad)) in runs
            .zip(gamma)
            .zip(gamma_grad.iter_mut().zip(beta_grad.iter_mut()))
        {
            // Σ dy·x̂ = r·(Σ dy·(x − μ₀) − μ₁·Σ dy).
            let dy_sum = lane_sum(dy, |dy| dy);
            let dy_centred = lane_sum_pairs(dy, x, |dy, x| dy * (x - mean));
            let dy_xhat = f64::from(rstd) * (dy_centred - f64::from(low) * dy_sum);
            *gamma_grad += dy_xhat;
            *beta_grad += dy_sum;
            sum_g += dy_sum * f64::from(gamma);
            sum_g_xhat += dy_xhat * f64::from(gamma);
        }
        let (k1, k0) = coefficients(sum_g, sum_g_xhat);
        let runs = grad
            .chunks_exact_mut(grouping.spatial)
            .zip(x.chunks_exact(grouping.spatial));
        for ((dy, x), &gamma) in runs.zip(gamma) {
            let scale = rstd * gamma;
            for (dy, &x) in dy.iter_mut().zip(x) {
                *dy = *dy * scale + (x - mean) * k1 + k0;
            }
        }
    }
}

/// Pass 1 of [`backward_row`] for rows with one channel per value: `(Σ g, Σ g·x̂)` with
/// `g = dy·γ`, in [`LANES`] f32 accumulators (the row is centred, so nothing large cancels):
/// `Σ g·x̂ = r·(Σ g·(x − μ₀) − μ₁·Σ g)`. It reads only `dy`, `x` and `γ`. With the partial `dγ`, `dβ` added in this loop too, as they
/// were, the compiler kept the accumulators in memory rather than in registers (a load and a
/// store per addition); [`row_grads`] adds them instead.
#[inline(always)]
fn row_sums(dy: &[f32], x: &[f32], gamma: &[f32], [mean, low, rstd]: [f32; 3]) -> (f64, f64) {
    let (dy_chunks, dy_rest) = dy.as_chunks::<LANES>();
    let (x_chunks, x_rest) = x.as_chunks::<LANES>();
    let (gamma_chunks, gamma_rest) = gamma.as_chunks::<LANES>();
    let (mut lane_g, mut lane_g_centred) = ([0.0f32; LANES], [0.0f32; LANES]);
    for ((dy, x), gamma) in dy_chunks.iter().zip(x_chunks).zip(gamma_chunks) {
        for lane in 0..LANES {
            let g = dy[lane] * gamma[lane];
            lane_g[lane] += g;
            lane_g_centred[lane] += g * (x[lane] - mean);
        }
    }
    for ((&dy, &x), &gamma) in dy_rest.iter().zip(x_rest).zip(gamma_rest) {
        let g = dy * gamma;
        lane_g[0] += g;
        lane_g_centred[0] += g * (x - mean);
    }
    let (sum_g, sum_g_centred) = lane_g.iter().zip(lane_g_centred).fold(
        (0.0, 0.0),
        |(g, centred), (&lane_g, lane_g_centred)| {
            (g + f64::from(lane_g), centred + f64::from(lane_g_centred))
        },
    );
    let (low, rstd) = (f64::from(low), f64::from(rstd));
    (sum_g, rstd * (sum_g_centred - low * sum_g))
}

/// Pass 2 of [`backward_row`] for rows with one channel per value: adds `dy·x̂` and `dy` into
/// the partial `dγ`, `dβ` and overwrites `dy` with `dx = dy·(r·γ) + (x − μ₀)·k₁ + k₀`. A
/// function of its own so that its slices are known not to overlap, which lets the loop be
/// vectorised (the guarantee survives inlining, which puts it in [`vectorized`]'s AVX-512 and
/// AVX2 copies).
#[inline(always)]
fn row_grads(
    dy: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    gamma_grad: &mut [f32],
    beta_grad: &mut [f32],
    [mean, low, rstd, k1, k0]: [f32; 5],
) {
    let values = dy.iter_mut().zip(x).zip(gamma);
    for (((dy, &x), &gamma), (gamma_grad, beta_grad)) in
        values.zip(gamma_grad.iter_mut().zip(beta_grad.iter_mut()))
    {
        let grad = *dy;
        *gamma_grad += grad * (((x - mean) - low) * rstd);
        *beta_grad += grad;
        *dy = grad * (rstd * gamma) + (x - mean) * k1 + k0;
    }
}

/// One row's `[μ₀, μ₁, r]`: the mean as two f32 values (0 without centering) and
/// `1 / sqrt(σ² + ε)`, in two passes: the mean, then the mean squared deviation from it (so
/// that a large mean does not cancel the variance's digits). See [`moments`].
#[inline(always)]
fn row_statistics(x: &[f32], grouping: Grouping) -> [f32; STATISTICS] {
    let (mean, low, var) = if grouping.center {
        moments(|| std::iter::once(x), x.len())
    } else {
        (0.0, 0.0, lane_sum(x, |x| x * x) / x.len() as f64)
    };
    [mean, low, (1.0 / (var + grouping.eps).sqrt()) as f32]
}

/// The mean of the `count` values in `runs` (a fresh iterator per pass) as the f32 nearest it
/// and the f32 remainder, and their biased variance. The mean sums the values' offsets from the
/// first one, and the variance the deviations from the mean, so both sums stay small next to
/// the values even when the mean is large, and [`lane_sum`]'s short f32 blocks lose no digit
/// that matters.
#[inline(always)]
fn moments<'a, I: Iterator<Item = &'a [f32]>>(
    runs: impl Fn() -> I,
    count: usize,
) -> (f32, f32, f64) {
    let n = count as f64;
    let first = runs().find_map(|run| run.first().copied()).unwrap_or(0.0);
    // Loops rather than iterator sums: these inline into `vectorized`'s AVX-512 and AVX2 copies.
    let mut offset = 0.0;
    for run in runs() {
        offset += lane_sum(run, |x| x - first);
    }
    offset /= n;
    let mean = f64::from(first) + offset;
    // The f64 mean as an f32 and the remainder, subtracted in turn.
    let (mean_high, mean_low) = (mean as f32, (mean - f64::from(mean as f32)) as f32);
    let deviation = |x: f32| (x - mean_high) - mean_low;
    let mut squares = 0.0;
    for run in runs() {
        squares += lane_sum(run, |x| deviation(x) * deviation(x));
    }
    (mean_high, mean_low, squares / n)
}

/// Independent accumulators per sum. A single running sum would make every addition wait for
/// the previous one; this many fill four 8-wide (or eight 4-wide) vector registers, enough
/// independent additions to keep the adder busy while each waits for its own previous one.
const LANES: usize = 32;

/// How many terms each lane adds in f32 before moving its sum into an f64 total.
const BLOCK: usize = 8;

/// `Σ term(v)` over `values`; see [`lane_sum_pairs`].
#[inline(always)]
fn lane_sum(values: &[f32], term: impl Fn(f32) -> f32) -> f64 {
    lane_sum_pairs(values, values, |v, _| term(v))
}

/// `Σ term(a, b)` over the pairs of `a` and `b` (of equal length), in [`LANES`] accumulators.
/// Each adds [`BLOCK`] terms in f32 (fast, and exact to a few units in the last place over so
/// few), then moves them into an f64 total, so that long rows keep their digits.
#[inline(always)]
fn lane_sum_pairs(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f64 {
    let mut totals = [0.0f64; LANES];
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    for (a, b) in a_chunks.chunks(BLOCK).zip(b_chunks.chunks(BLOCK)) {
        let mut lanes = [0.0f32; LANES];
        for (a, b) in a.iter().zip(b) {
            for lane in 0..LANES {
                lanes[lane] += term(a[lane], b[lane]);
            }
        }
        for (total, lane) in totals.iter_mut().zip(lanes) {
            *total += f64::from(lane);
        }
    }
    let mut total = 0.0;
    for lane in totals {
        total += lane;
    }
    for (&a, &b) in a_rest.iter().zip(b_rest) {
        total += f64::from(term(a, b));
    }
    total
}

/// Runs `work` with AVX-512F or else AVX2 instructions where the CPU has them, else as compiled
/// for the baseline x86-64 (SSE2) or for another architecture. The f32 loops then take 16 or 8
/// values per instruction instead of 4. The values are the same bit for bit: each loop adds in
/// the order its source says, and Rust never fuses a multiplication and an addition.
#[inline(always)]
fn vectorized<R>(work: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { with_avx512(work) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { with_avx2(work) };
    }
    work()
}

/// `work`, compiled with AVX-512F (it is inlined here).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn with_avx512<R>(work: impl FnOnce() -> R) -> R {
    work()
}

/// `work`, compiled with AVX2 (it is inlined here).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn with_avx2<R>(work: impl FnOnce() -> R) -> R {
    work()
}

/// The range of `γ`/`β` indices that row `row` uses.
fn group_channels(row: usize, grouping: Grouping) -> std::ops::Range<usize> {
    let start = (row % grouping.groups) * grouping.channels_per_group;
    start..start + grouping.channels_per_group
}

/// `[N, C, S]` of a rank-3 flex tensor.
fn dims3(x: &FlexTensor) -> [usize; 3] {
    let shape = x.shape();
    [shape[0], shape[1], shape[2]]
}

/// Channel `channel`'s runs of `x` (`[N, C, S]`): one run of `S` values per sample.
fn channel_runs(
    x: &[f32],
    [samples, channels, spatial]: [usize; 3],
    channel: usize,
) -> impl Iterator<Item = &[f32]> {
    (0..samples).map(move |sample| {
        let start = (sample * channels + channel) * spatial;
        &x[start..start + spatial]
    })
}

/// Each channel's mean, biased variance and the mean's f32 remainder (two passes, see
/// [`moments`]), as `[3, C]`.
fn channel_statistics(x: &FlexTensor) -> FlexTensor {
    let dims @ [samples, channels, spatial] = dims3(x);
    let x = values(x);
    let per_channel: Vec<[f32; 3]> = (0..channels)
        .into_par_iter()
        .map(|channel| {
            let runs = || channel_runs(&x, dims, channel);
            let (mean, low, var) = vectorized(
                #[inline(always)]
                || moments(runs, samples * spatial),
            );
            [mean, var as f32, low]
        })
        .collect();
    let row = |index: usize| per_channel.iter().map(move |stats| stats[index]);
    let values = row(0).chain(row(1)).chain(row(2)).collect();
    tensor_from(values, [3, channels])
}

/// Each channel's batch mean (the f32 nearest it and the remainder) and `1 / sqrt(σ² + ε)`.
#[derive(Debug, Clone)]
struct ChannelScale {
    mean: Vec<f32>,
    mean_low: Vec<f32>,
    rstd: Vec<f32>,
}

/// What BatchNorm's backward pass needs from its forward pass.
#[derive(Debug, Clone)]
struct BatchSaved {
    x: FlexTensor,
    gamma: FlexTensor,
    channels: ChannelScale,
}

/// BatchNorm's forward kernel: `(x − μ₀)·(r·γ) + (β − μ₁·r·γ)` per channel, and the scale it
/// used.
fn batch_forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    statistics: &FlexTensor,
    eps: f64,
) -> (FlexTensor, ChannelScale) {
    let [_, channels, spatial] = dims3(x);
    let statistics = values(statistics);
    let (mean, rest) = statistics.split_at(channels);
    let (var, mean_low) = rest.split_at(channels);
    let rstd: Vec<f32> = var
        .iter()
        .map(|&var| (1.0 / (f64::from(var) + eps).sqrt()) as f32)
        .collect();
    let (gamma, beta) = (values(gamma), values(beta));
    let scale: Vec<f32> = rstd.iter().zip(gamma.iter()).map(|(r, g)| r * g).collect();
    let shift: Vec<f32> = (0..channels)
        .map(|c| beta[c] - mean_low[c] * scale[c])
        .collect();
    let x_values = values(x);
    let write_run = |run: usize, out: &mut [MaybeUninit<f32>]| {
        let x = &x_values[run * spatial..(run + 1) * spatial];
        let channel = run % channels;
        let (mean, scale, shift) = (mean[channel], scale[channel], shift[channel]);
        vectorized(
            #[inline(always)]
            || {
                for (out, &x) in out.iter_mut().zip(x) {
                    out.write((x - mean) * scale + shift);
                }
            },
        );
    };
    // SAFETY: `out` and `x` are the same run of `spatial` values, each written once.
    let (output, _) = unsafe { written_rows(x_values.len(), spatial, write_run) };
    let channel_scale = ChannelScale {
        mean: mean.to_vec(),
        mean_low: mean_low.to_vec(),
        rstd,
    };
    (tensor_from(output, x.shape().to_vec()), channel_scale)
}

/// BatchNorm's backward kernel. With `M = N·S` values per channel:
/// `dx = r·γ·(dy − Σdy/M − x̂·Σ(dy·x̂)/M)`, `dγ = Σ dy·x̂`, `dβ = Σ dy`.
fn batch_backward(
    output_grad: FlexTensor,
    saved: BatchSaved,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let BatchSaved { x, gamma, channels } = saved;
    let dims @ [samples, channel_count, spatial] = dims3(&x);
    let (x, gamma) = (values(&x), values(&gamma));
    let ChannelScale {
        mean,
        mean_low,
        rstd,
    } = channels;
    let mut buffer = GradBuffer::new(output_grad);
    let grad = buffer.values_mut();
    // Pass 1, per channel: Σ dy and Σ dy·x̂.
    let sums: Vec<(f64, f64)> = (0..channel_count)
        .into_par_iter()
        .map(|c| {
            vectorized(
                #[inline(always)]
                || {
                    // Σ dy·x̂ = r·(Σ dy·(x − μ₀) − μ₁·Σ dy).
                    let (mut dy_sum, mut dy_centred) = (0.0, 0.0);
                    let mean = mean[c];
                    for (dy, x) in channel_runs(grad, dims, c).zip(channel_runs(&x, dims, c)) {
                        dy_sum += lane_sum(dy, |dy| dy);
                        dy_centred += lane_sum_pairs(dy, x, |dy, x| dy * (x - mean));
                    }
                    let (low, rstd) = (f64::from(mean_low[c]), f64::from(rstd[c]));
                    (dy_sum, rstd * (dy_centred - low * dy_sum))
                },
            )
        })
        .collect();
    // Pass 2: dx = dy·(r·γ) + (x − μ₀)·k₁ + k₀ per channel.
    let count = (samples * spatial) as f64;
    let coefficients: Vec<(f32, f32, f32)> = (0..channel_count)
        .map(|c| {
            let (r, low, scale) = (
                f64::from(rstd[c]),
                f64::from(mean_low[c]),
                f64::from(rstd[c] * gamma[c]),
            );
            let (mean_dy, mean_dy_xhat) = (sums[c].0 / count, sums[c].1 / count);
            let k1 = -scale * r * mean_dy_xhat;
            let k0 = -scale * mean_dy + scale * r * low * mean_dy_xhat;
            (scale as f32, k1 as f32, k0 as f32)
        })
        .collect();
    grad.par_chunks_exact_mut(spatial)
        .zip(x.par_chunks_exact(spatial))
        .enumerate()
        .for_each(|(row, (dy, x))| {
            let channel = row % channel_count;
            let ((scale, k1, k0), mean) = (coefficients[channel], mean[channel]);
            vectorized(
                #[inline(always)]
                || {
                    for (dy, &x) in dy.iter_mut().zip(x) {
                        *dy = *dy * scale + (x - mean) * k1 + k0;
                    }
                },
            );
        });
    let (beta_grad, gamma_grad): (Vec<f64>, Vec<f64>) = sums.into_iter().unzip();
    (
        buffer.into_tensor(),
        narrow(gamma_grad, channel_count),
        narrow(beta_grad, channel_count),
    )
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, FloatDType, Tensor};

    use super::*;
    use crate::kernel_tests::{
        assert_batch_kernel_matches_composed, assert_channels_kernel_matches_composed,
        assert_rows_kernel_matches_composed, assert_rows_kernel_output_matches_composed, grouping,
    };

    #[test]
    fn fused_batch_norm_matches_burns_batch_norm_and_its_gradients() {
        assert_batch_kernel_matches_composed(&KERNELS, &Device::flex().autodiff());
    }

    #[test]
    fn fused_rows_match_the_composed_ops_and_their_gradients() {
        assert_rows_kernel_matches_composed(&KERNELS, &Device::flex().autodiff());
    }

    #[test]
    fn fused_channels_first_matches_the_composed_ops_and_their_gradients() {
        assert_channels_kernel_matches_composed(&KERNELS, &Device::flex().autodiff());
    }

    #[test]
    fn without_autodiff_the_fused_output_is_the_same_also_for_a_transposed_input() {
        assert_rows_kernel_output_matches_composed(&KERNELS, &Device::flex());
    }

    #[test]
    fn other_dtypes_are_given_back_to_compose() {
        let device = Device::flex();
        let x = Tensor::<2>::ones([2, 4], &device).cast(FloatDType::F64);
        assert!(
            KERNELS
                .rows(&x, None, None, grouping(1, 4, 1, true))
                .is_none()
        );
    }
}
