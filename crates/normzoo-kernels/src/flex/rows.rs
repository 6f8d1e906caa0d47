//! The row kernels: GroupNorm, InstanceNorm, LayerNorm and RMSNorm over the rows of a
//! `[rows, K]` view, forward and backward.

use std::mem::MaybeUninit;

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::buffers::{ReusedBuffer, flex_values as values, narrow, tensor_from, written_rows};
use super::simd::{LANES, lane_sum, lane_sums, moments, vectorized};
use crate::Grouping;

/// Each row's statistics, interleaved as [`STATISTICS`] values per row: the mean (the f32
/// nearest it, then the remainder) and `1 / sqrt(σ² + ε)`.
pub(super) type RowStatistics = Vec<f32>;

/// Values per row (or channel, or position) in the saved statistics: `[μ₀, μ₁, r]`.
pub(super) const STATISTICS: usize = 3;

/// The forward kernel: the output, and each row's statistics.
pub(super) fn forward(
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
pub(super) fn backward(
    output_grad: FlexTensor,
    x: &FlexTensor,
    gamma: &FlexTensor,
    statistics: &[f32],
    grouping: Grouping,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let width = grouping.row_len();
    let channels = grouping.channels();
    let (x, gamma) = (values(x), values(gamma));
    let mut buffer = ReusedBuffer::new(output_grad);
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
            // Σ dy·x̂ = r·(Σ dy·(x − μ₀) − μ₁·Σ dy), both sums in one pass.
            let [dy_sum, dy_centred] = lane_sums(dy, x, |dy, x| [dy, dy * (x - mean)]);
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

/// The range of `γ`/`β` indices that row `row` uses.
fn group_channels(row: usize, grouping: Grouping) -> std::ops::Range<usize> {
    let start = (row % grouping.groups) * grouping.channels_per_group;
    start..start + grouping.channels_per_group
}
