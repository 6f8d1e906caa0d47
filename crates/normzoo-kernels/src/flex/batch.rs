//! BatchNorm's kernels: each channel's statistics over the batch, and the normalization with
//! them, forward and backward.

use std::mem::MaybeUninit;

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::buffers::{ReusedBuffer, flex_values as values, narrow, tensor_from, written_rows};
use super::simd::{lane_sums, moments, vectorized};

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
pub(super) fn channel_statistics(x: &FlexTensor) -> FlexTensor {
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
pub(super) struct ChannelScale {
    mean: Vec<f32>,
    mean_low: Vec<f32>,
    rstd: Vec<f32>,
}

/// What BatchNorm's backward pass needs from its forward pass.
#[derive(Debug, Clone)]
pub(super) struct BatchSaved {
    pub(super) x: FlexTensor,
    pub(super) gamma: FlexTensor,
    pub(super) channels: ChannelScale,
}

/// BatchNorm's forward kernel: `(x − μ₀)·(r·γ) + (β − μ₁·r·γ)` per channel, and the scale it
/// used.
pub(super) fn batch_forward(
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
pub(super) fn batch_backward(
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
    let mut buffer = ReusedBuffer::new(output_grad);
    let grad = buffer.values_mut();
    // Pass 1, per channel: Σ dy and Σ dy·x̂.
    let sums: Vec<(f64, f64)> = (0..channel_count)
        .into_par_iter()
        .map(|c| {
            vectorized(
                #[inline(always)]
                || {
                    // Σ dy·x̂ = r·(Σ dy·(x − μ₀) − μ₁·Σ dy), both sums in one pass.
                    let (mut dy_sum, mut dy_centred) = (0.0, 0.0);
                    let mean = mean[c];
                    for (dy, x) in channel_runs(grad, dims, c).zip(channel_runs(&x, dims, c)) {
                        let [run_sum, run_centred] =
                            lane_sums(dy, x, |dy, x| [dy, dy * (x - mean)]);
                        dy_sum += run_sum;
                        dy_centred += run_centred;
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
