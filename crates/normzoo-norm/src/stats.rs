//! The statistics code every normalizer shares: precision handling, standardization over the
//! last axis, the per-channel affine transform, and the running-statistics update.
//!
//! Each layer reshapes its input so that the values one statistic is taken over are contiguous
//! in the last axis (`[N·G, C/G·S]` for GroupNorm, `[N·C, S]` for InstanceNorm, `[rows, K]` for
//! LayerNorm and RmsNorm) and calls into this module; no layer repeats a reduction. This is the
//! composed path: tensor ops, any backend and dtype, differentiated by burn's autodiff. Where
//! `normzoo-kernels` has a fused kernel for the input's backend and dtype, the layers run that
//! instead, and its tests compare it with this path.

use burn::module::{Param, RunningState};
use burn::tensor::module::batch_norm;
use burn::tensor::{DType, Device, FloatDType, Tensor};

/// The precision statistics are computed in.
///
/// Half-precision inputs are widened to f32 before any reduction: a sum of squares over a large
/// group overflows f16 (largest value 65504) and a mean over many values loses its low bits in
/// f16 and bf16. PyTorch does the same (its CPU and CUDA kernels accumulate half inputs in f32).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Precision {
    original: FloatDType,
    widened: Option<FloatDType>,
}

impl Precision {
    /// The precision to use for an input of `dtype`.
    pub(crate) fn of(dtype: DType) -> Self {
        let widened = matches!(dtype, DType::F16 | DType::BF16).then_some(FloatDType::F32);
        Self {
            original: dtype.into(),
            widened,
        }
    }

    /// `tensor` in the accumulation precision.
    pub(crate) fn widen<const D: usize>(&self, tensor: Tensor<D>) -> Tensor<D> {
        match self.widened {
            Some(dtype) => tensor.cast(dtype),
            None => tensor,
        }
    }

    /// `tensor` back in the input's own precision.
    pub(crate) fn restore<const D: usize>(&self, tensor: Tensor<D>) -> Tensor<D> {
        match self.widened {
            Some(_) => tensor.cast(self.original),
            None => tensor,
        }
    }
}

/// `(x − mean) / sqrt(var + eps)` over some axes, with the statistics it used.
pub(crate) struct Standardized<const D: usize> {
    /// The standardized input, in the input's precision.
    pub output: Tensor<D>,
    /// The mean over the standardized axes (kept, of size 1), in the accumulation precision.
    pub mean: Tensor<D>,
    /// The biased (population) variance over the standardized axes (kept, of size 1), in the
    /// accumulation precision.
    pub var: Tensor<D>,
}

/// Standardizes `x` over its last axis with the biased variance, as every PyTorch normalizer
/// does (see [`standardize_over`]).
pub(crate) fn standardize<const D: usize>(x: Tensor<D>, eps: f64) -> Standardized<D> {
    let precision = Precision::of(x.dtype());
    let standardized = standardize_over(precision.widen(x), &[D - 1], eps);
    Standardized {
        output: precision.restore(standardized.output),
        ..standardized
    }
}

/// `(x − mean) / sqrt(var + eps)` with the statistics taken over `axes` (kept, of size 1), in
/// `x`'s own precision.
///
/// Two passes (mean, then the mean of squared deviations) rather than `E[x²] − E[x]²`: the
/// one-pass form cancels catastrophically when the mean is large against the spread (mean 1e4,
/// std 0.1 loses every significant digit of the variance in f32). The mean is the first value
/// plus the mean offset from it, carried as the nearest value of the dtype and the remainder
/// (`μ₀ + μ₁`), and `x` is centred as `(x − μ₀) − μ₁`: a single f32 mean is off by up to half
/// its last place (5e-4 at 1e4), an error of 5e-3 in the output once divided by a std of 0.1.
/// The returned mean is `μ₀`.
pub(crate) fn standardize_over<const D: usize>(
    x: Tensor<D>,
    axes: &[usize],
    eps: f64,
) -> Standardized<D> {
    let mean_over = |t: Tensor<D>| axes.iter().fold(t, |t, &axis| t.mean_dim(axis));
    // The shift carries no gradient: the mean does not depend on it.
    let first = axes
        .iter()
        .fold(x.clone(), |t, &axis| t.narrow(axis, 0, 1))
        .detach();
    let offset = mean_over(x.clone().sub(first.clone()));
    let mean = first.clone().add(offset.clone());
    let mean_low = first.sub(mean.clone()).add(offset);
    let centred = x.sub(mean.clone()).sub(mean_low);
    let var = mean_over(centred.clone().square());
    Standardized {
        output: centred.div(var.clone().add_scalar(eps).sqrt()),
        mean,
        var,
    }
}

/// Layer normalization over the last axis, `(x − mean) / sqrt(var + eps) · γ + β`
/// ([`standardize_over`], then the scale and shift in the same precision). Either of `γ` and
/// `β` may be absent.
pub(crate) fn layer_normalize<const D: usize>(
    x: Tensor<D>,
    gamma: Option<Tensor<1>>,
    beta: Option<Tensor<1>>,
    eps: f64,
) -> Tensor<D> {
    let precision = Precision::of(x.dtype());
    let widen = |t: Option<Tensor<1>>| t.map(|t| precision.widen(t));
    let standardized = standardize_over(precision.widen(x), &[D - 1], eps);
    let output = scale_shift(standardized.output, widen(gamma), widen(beta), D - 1);
    precision.restore(output)
}

/// BatchNorm with batch statistics composed of tensor ops: `x` (`[N, C, S]`) standardized per
/// channel over `N` and `S` ([`standardize_over`]), scaled by `γ` and shifted by `β`, with
/// each channel's mean and biased variance (`[C]`, in the accumulation precision).
pub(crate) fn batch_normalize(
    x: Tensor<3>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<3>, Tensor<1>, Tensor<1>) {
    let precision = Precision::of(x.dtype());
    let channels = x.dims()[1];
    let standardized = standardize_over(precision.widen(x), &[0, 2], eps);
    let output = scale_shift(
        standardized.output,
        Some(precision.widen(gamma)),
        Some(precision.widen(beta)),
        1,
    );
    (
        precision.restore(output),
        standardized.mean.reshape([channels]),
        standardized.var.reshape([channels]),
    )
}

/// `x / sqrt(mean(x²) + eps)` over the last axis (RMSNorm's statistic: no centering).
pub(crate) fn rms_normalize<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let precision = Precision::of(x.dtype());
    let x = precision.widen(x);
    let mean_square = x.clone().square().mean_dim(D - 1);
    precision.restore(x.div(mean_square.add_scalar(eps).sqrt()))
}

/// `x · γ + β` with `γ` and `β` running along axis `dim` of `x` (broadcast over every other
/// axis). Either may be absent.
pub(crate) fn scale_shift<const D: usize>(
    x: Tensor<D>,
    gamma: Option<Tensor<1>>,
    beta: Option<Tensor<1>>,
    dim: usize,
) -> Tensor<D> {
    let along = |t: Tensor<1>| {
        let mut shape = [1; D];
        shape[dim] = t.dims()[0];
        t.reshape(shape)
    };
    let x = match gamma {
        Some(gamma) => x.mul(along(gamma)),
        None => x,
    };
    match beta {
        Some(beta) => x.add(along(beta)),
        None => x,
    }
}

/// A fresh learnable scale `γ = 1` (when `scale`) and shift `β = 0` (when `shift`) of
/// `width` values, as PyTorch initializes every normalizer's `weight` and `bias`.
pub(crate) fn init_affine(
    scale: bool,
    shift: bool,
    width: usize,
    device: &Device,
) -> (Option<Param<Tensor<1>>>, Option<Param<Tensor<1>>>) {
    (
        scale.then(|| Param::from_tensor(Tensor::ones([width], device))),
        shift.then(|| Param::from_tensor(Tensor::zeros([width], device))),
    )
}

/// Fresh running statistics for `channels` channels when `track` is on: `running_mean = 0`,
/// `running_var = 1` and `num_batches_tracked = 0`, as PyTorch initializes its buffers.
#[allow(clippy::type_complexity)]
pub(crate) fn init_running_stats(
    track: bool,
    channels: usize,
    device: &Device,
) -> (
    Option<RunningState<Tensor<1>>>,
    Option<RunningState<Tensor<1>>>,
    Option<RunningState<Tensor<1>>>,
) {
    let state = |value: Tensor<1>| track.then(|| RunningState::new(value));
    (
        state(Tensor::zeros([channels], device)),
        state(Tensor::ones([channels], device)),
        state(Tensor::zeros([1], device)),
    )
}

/// Normalizes `[N, C, *]` per channel with kept running statistics (evaluation of BatchNorm and
/// of InstanceNorm with `track_running_stats`), through burn's fused inference `batch_norm`.
pub(crate) fn normalize_with_running_stats<const D: usize>(
    input: Tensor<D>,
    gamma: &Option<Param<Tensor<1>>>,
    beta: &Option<Param<Tensor<1>>>,
    running_mean: &Option<RunningState<Tensor<1>>>,
    running_var: &Option<RunningState<Tensor<1>>>,
    eps: f64,
) -> Tensor<D> {
    let device = input.device();
    let channels = input.dims()[1];
    let (gamma, beta) = params_or_identity(gamma, beta, channels, &device);
    let state = |s: &Option<RunningState<Tensor<1>>>| {
        s.as_ref()
            .expect("evaluation with running statistics requires them")
            .value_sync()
            .to_device(&device)
    };
    batch_norm(
        input,
        gamma,
        beta,
        state(running_mean),
        state(running_var),
        eps,
    )
}

/// The affine parameters as burn's fused batch-norm ops want them: always present, the
/// constants 1 and 0 for a layer without affine.
pub(crate) fn params_or_identity(
    gamma: &Option<Param<Tensor<1>>>,
    beta: &Option<Param<Tensor<1>>>,
    channels: usize,
    device: &Device,
) -> (Tensor<1>, Tensor<1>) {
    (
        gamma
            .as_ref()
            .map_or_else(|| Tensor::ones([channels], device), |g| g.val()),
        beta.as_ref()
            .map_or_else(|| Tensor::zeros([channels], device), |b| b.val()),
    )
}

/// How far a running statistic moves towards the batch statistic in one update.
// Built once per forward pass and dropped at its end: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Blend {
    /// PyTorch's `momentum`: `running = (1 − m)·running + m·batch`.
    Momentum(f64),
    /// A factor held on the device, shape `[1]`: `1 / num_batches_tracked` for PyTorch's
    /// cumulative moving average (`momentum=None`). Kept on the device so training never waits
    /// for a host read.
    Factor(Tensor<1>),
}

/// Moves `running` towards `batch` (both `[C]`) by `blend`, detached from any graph.
///
/// The update stays pending in burn's [`RunningState`] until something syncs it: the next
/// update's read, [`Module::valid`](burn::module::Module::valid) or
/// [`train`](burn::module::Module::train). Several threads sharing the module (burn-train's
/// data-parallel workers, one per device) each leave their update pending, and the sync takes
/// their mean: every device's step starts from the same running statistics, and moves them by
/// the mean of the devices' batch statistics, whatever order the devices finish in. (Syncing
/// each thread's update at once would make the result depend on that order: a thread could
/// read the statistics before or after another had moved them.)
pub(crate) fn update_running(running: &RunningState<Tensor<1>>, batch: Tensor<1>, blend: &Blend) {
    let current = running.value_sync().to_device(&batch.device());
    let batch = batch.detach().cast(current.dtype());
    let updated = match blend {
        Blend::Momentum(m) => current.mul_scalar(1.0 - m).add(batch.mul_scalar(*m)),
        Blend::Factor(factor) => {
            let factor = factor.clone().expand(current.dims());
            current
                .mul(factor.clone().neg().add_scalar(1.0))
                .add(batch.mul(factor))
        }
    };
    running.update(updated.detach());
}

/// The unbiased (Bessel-corrected) variance from the biased one over `n` values, which PyTorch
/// stores in `running_var` while it normalizes with the biased one.
pub(crate) fn unbiased(biased_var: Tensor<1>, n: usize) -> Tensor<1> {
    biased_var.mul_scalar(n as f64 / (n as f64 - 1.0))
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use normzoo_kernels::backend::test_devices;

    /// `[N, C, S]` values standardized in f64, over each row of `S` (`per_channel` false) or
    /// over each channel's `N·S` values.
    fn reference(values: &[f32], [n, c, s]: [usize; 3], per_channel: bool) -> Vec<f64> {
        let group = |i: usize| {
            let (sample, channel) = (i / (c * s), i / s % c);
            if per_channel {
                channel
            } else {
                sample * c + channel
            }
        };
        let groups = if per_channel { c } else { n * c };
        let (mut sums, mut counts) = (vec![0.0f64; groups], vec![0.0f64; groups]);
        for (i, &v) in values.iter().enumerate() {
            sums[group(i)] += f64::from(v);
            counts[group(i)] += 1.0;
        }
        let means: Vec<f64> = sums.iter().zip(&counts).map(|(s, n)| s / n).collect();
        let mut squares = vec![0.0f64; groups];
        for (i, &v) in values.iter().enumerate() {
            squares[group(i)] += (f64::from(v) - means[group(i)]).powi(2);
        }
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let g = group(i);
                (f64::from(v) - means[g]) / (squares[g] / counts[g] + 1e-5).sqrt()
            })
            .collect()
    }

    /// The largest absolute difference between `actual` and `expected`.
    fn worst(actual: Tensor<3>, expected: &[f64]) -> f64 {
        let actual = actual
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        actual
            .iter()
            .zip(expected)
            .map(|(&a, e)| (f64::from(a) - e).abs())
            .fold(0.0, f64::max)
    }

    /// The composed path (every backend and dtype without a fused kernel) on f32 values far
    /// from 0 against their spread stays within 1e-4 of float64, as the kernels do
    /// (`tests/pytorch_parity.rs`); a single f32 mean would be off by up to 5e-3 here.
    #[test]
    fn composed_statistics_stay_within_1e_4_of_float64_for_a_large_mean() {
        let dims = [4, 3, 50];
        for (_, device) in test_devices() {
            for std in [0.1, 0.5] {
                device.seed(5);
                let x = Tensor::<3>::random(dims, Distribution::Normal(1e4, std), &device);
                let values = x.to_data().try_to_vec::<f32>().unwrap();
                let rows = reference(&values, dims, false);
                let channels = reference(&values, dims, true);
                let (ones, zeros) = (Tensor::ones([3], &device), Tensor::zeros([3], &device));
                let [n, c, s] = dims;
                let cases = [
                    ("standardize", standardize(x.clone(), 1e-5).output, &rows),
                    (
                        "layer_normalize",
                        layer_normalize(x.clone().reshape([n * c, 1, s]), None, None, 1e-5)
                            .reshape(dims),
                        &rows,
                    ),
                    (
                        "batch_normalize",
                        batch_normalize(x.clone(), ones, zeros, 1e-5).0,
                        &channels,
                    ),
                ];
                for (name, actual, expected) in cases {
                    let error = worst(actual, expected);
                    assert!(error < 1e-4, "{name}, std {std}: {error:e} from float64");
                }
            }
        }
    }
}
