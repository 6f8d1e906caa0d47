//! Channels-first layer normalization (LayerNorm2d) on flex: each position of `x` (`[N, C, P]`,
//! `P` pixels) is normalized over its `C` channels, which lie `P` values apart.
//!
//! Transposing to channels last, normalizing rows and transposing back costs two copies of the
//! tensor. These kernels read it where it is instead: a block of up to [`PIXELS`] neighbouring
//! pixels is one work item, and every loop runs along the pixels of a channel (contiguous, so
//! vectorised), keeping one sum per pixel. The block's `C × PIXELS` values stay in cache for
//! the passes over them: two for the statistics ([`moments`](super::moments)' offset mean, then
//! squared deviations from it) and one for the output. The formulas are the row kernel's, with
//! the means over the channels.

use std::mem::MaybeUninit;

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::buffers::{Disjoint, ReusedBuffer, filled, flex_values as values, narrow, tensor_from};
use super::rows::STATISTICS;
use super::simd::{BLOCK, LANES};

/// Pixels per work item: the width of every per-pixel sum.
const PIXELS: usize = 32;

/// One work item: sample `sample`, pixels `start..start + width`.
#[derive(Debug, Clone, Copy)]
struct Block {
    sample: usize,
    start: usize,
    width: usize,
}

/// The blocks covering `[N, C, P]`, in order of position (`n·P + p`).
fn blocks([samples, _, pixels]: [usize; 3]) -> Vec<Block> {
    (0..samples)
        .flat_map(|sample| {
            (0..pixels).step_by(PIXELS).map(move |start| Block {
                sample,
                start,
                width: PIXELS.min(pixels - start),
            })
        })
        .collect()
}

/// Where channel `channel` of `block` starts in the `[N, C, P]` values.
fn offset([_, channels, pixels]: [usize; 3], block: Block, channel: usize) -> usize {
    (block.sample * channels + channel) * pixels + block.start
}

/// `Σ_c term(x[c, p], a[p], b[p])` for every pixel `p` of `block`, in f32 over [`BLOCK`]
/// channels at a time and in f64 across them, so that many channels keep their digits.
fn pixel_sums(
    x: &[f32],
    dims: [usize; 3],
    block: Block,
    [a, b]: [&[f32; PIXELS]; 2],
    term: impl Fn(f32, f32, f32) -> f32,
) -> [f64; PIXELS] {
    let mut totals = [0.0f64; PIXELS];
    let width = block.width;
    for first in (0..dims[1]).step_by(BLOCK) {
        let mut partial = [0.0f32; PIXELS];
        for channel in first..dims[1].min(first + BLOCK) {
            let at = offset(dims, block, channel);
            let terms = x[at..at + width].iter().zip(a).zip(b);
            for (sum, ((&x, &a), &b)) in partial.iter_mut().zip(terms) {
                *sum += term(x, a, b);
            }
        }
        for (total, partial) in totals.iter_mut().zip(partial).take(width) {
            *total += f64::from(partial);
        }
    }
    totals
}

/// The sum of `values` in [`LANES`] independent f32 accumulators (so that it vectorises).
fn lane_total(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for chunk in values.chunks(LANES) {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane += value;
        }
    }
    lanes.iter().sum()
}

/// Each pixel's mean (as the f32 nearest it and the f32 remainder) and `1 / sqrt(σ² + ε)`.
struct PixelStatistics {
    mean: [f32; PIXELS],
    mean_low: [f32; PIXELS],
    rstd: [f32; PIXELS],
}

impl PixelStatistics {
    fn of(x: &[f32], dims: [usize; 3], block: Block, eps: f64) -> Self {
        let n = dims[1] as f64;
        let at = offset(dims, block, 0);
        let mut first = [0.0f32; PIXELS];
        first[..block.width].copy_from_slice(&x[at..at + block.width]);
        let unused = [0.0f32; PIXELS];
        let offsets = pixel_sums(x, dims, block, [&first, &unused], |x, first, _| x - first);
        let (mut mean, mut mean_low) = ([0.0f32; PIXELS], [0.0f32; PIXELS]);
        for pixel in 0..block.width {
            let exact = f64::from(first[pixel]) + offsets[pixel] / n;
            mean[pixel] = exact as f32;
            mean_low[pixel] = (exact - f64::from(mean[pixel])) as f32;
        }
        let squares = pixel_sums(x, dims, block, [&mean, &mean_low], |x, mean, low| {
            let deviation = (x - mean) - low;
            deviation * deviation
        });
        let mut rstd = [0.0f32; PIXELS];
        for (rstd, squares) in rstd.iter_mut().zip(&squares).take(block.width) {
            *rstd = (1.0 / (squares / n + eps).sqrt()) as f32;
        }
        Self {
            mean,
            mean_low,
            rstd,
        }
    }
}

/// The forward kernel: `x̂·γ + β`, and each position's mean (the f32 nearest it and the
/// remainder) and `1 / sqrt(σ² + ε)` as `[μ₀, μ₁, r]` in position order.
pub(super) fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    eps: f64,
) -> (FlexTensor, Vec<f32>) {
    let shape = x.shape().to_vec();
    let dims = [shape[0], shape[1], shape[2]];
    let (x, gamma, beta) = (values(x), values(gamma), values(beta));
    let stats_len = STATISTICS * dims[0] * dims[2];
    let write_blocks = |out: &mut [MaybeUninit<f32>], saved: &mut [MaybeUninit<f32>]| {
        let (out, saved) = (Disjoint::new(out), Disjoint::new(saved));
        blocks(dims).into_par_iter().for_each(|block| {
            let stats = PixelStatistics::of(&x, dims, block, eps);
            let width = block.width;
            for (channel, (&gamma, &beta)) in gamma.iter().zip(beta.iter()).enumerate() {
                let at = offset(dims, block, channel);
                // SAFETY: this block's run of channel `channel`; blocks do not overlap.
                let out = unsafe { out.run(at, width) };
                let per_pixel = stats.mean.iter().zip(&stats.mean_low).zip(&stats.rstd);
                for ((out, &x), ((&mean, &low), &rstd)) in
                    out.iter_mut().zip(&x[at..]).zip(per_pixel)
                {
                    out.write(((x - mean) - low) * rstd * gamma + beta);
                }
            }
            let position = block.sample * dims[2] + block.start;
            // SAFETY: this block's positions; blocks do not overlap.
            let saved = unsafe { saved.run(STATISTICS * position, STATISTICS * width) };
            for (pixel, saved) in saved.chunks_exact_mut(STATISTICS).enumerate() {
                saved[0].write(stats.mean[pixel]);
                saved[1].write(stats.mean_low[pixel]);
                saved[2].write(stats.rstd[pixel]);
            }
        });
    };
    // SAFETY: the blocks cover every position, and each block writes all its channels and its
    // positions' statistics, so every value of both buffers is written.
    let (output, (statistics, ())) = unsafe {
        filled(x.len(), |out| {
            filled(stats_len, |saved| write_blocks(out, saved))
        })
    };
    (tensor_from(output, shape), statistics)
}

/// The backward kernel: the gradients of `x`, `γ` and `β` from the output's, with the
/// statistics the forward kernel returned. Per position, over its channels (`g = dy·γ`):
/// `dx = r·(g − mean(g) − x̂·mean(g·x̂))`; per channel, over every position: `dγ = Σ dy·x̂`,
/// `dβ = Σ dy`.
pub(super) fn backward(
    output_grad: FlexTensor,
    x: &FlexTensor,
    gamma: &FlexTensor,
    statistics: &[f32],
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let shape = x.shape().to_vec();
    let dims @ [_, channels, pixels] = [shape[0], shape[1], shape[2]];
    let (x, gamma) = (values(x), values(gamma));
    let mut buffer = ReusedBuffer::new(output_grad);
    let grad = Disjoint::new(buffer.values_mut());
    let zeros = || (vec![0.0f64; channels], vec![0.0f64; channels]);
    let (gamma_grad, beta_grad) = blocks(dims)
        .into_par_iter()
        .fold(zeros, |(mut gamma_grad, mut beta_grad), block| {
            let width = block.width;
            let position = block.sample * pixels + block.start;
            let stats = &statistics[STATISTICS * position..STATISTICS * (position + width)];
            let [mut mean, mut low, mut rstd] = [[0.0f32; PIXELS]; STATISTICS];
            for (pixel, stats) in stats.chunks_exact(STATISTICS).enumerate() {
                [mean[pixel], low[pixel], rstd[pixel]] = [stats[0], stats[1], stats[2]];
            }
            // Pass 1: Σ g and Σ g·x̂ per pixel, Σ dy·x̂ and Σ dy per channel.
            let (mut sum_g, mut sum_g_xhat) = ([0.0f32; PIXELS], [0.0f32; PIXELS]);
            let mut dy_xhat = [0.0f32; PIXELS];
            for (channel, &gamma) in gamma.iter().enumerate() {
                let at = offset(dims, block, channel);
                // SAFETY: this block's run of channel `channel`; blocks do not overlap, and
                // the slice is gone before pass 2 takes the same run.
                let dy = unsafe { grad.run(at, width) };
                let per_pixel = mean
                    .iter()
                    .zip(&low)
                    .zip(&rstd)
                    .zip(sum_g.iter_mut().zip(&mut sum_g_xhat));
                let terms = dy
                    .iter()
                    .zip(&x[at..])
                    .zip(dy_xhat.iter_mut())
                    .zip(per_pixel);
                for (((&dy, &x), dy_xhat), (((&mean, &low), &rstd), (sum_g, sum_g_xhat))) in terms {
                    let xhat = ((x - mean) - low) * rstd;
                    let g = dy * gamma;
                    *dy_xhat = dy * xhat;
                    *sum_g += g;
                    *sum_g_xhat += g * xhat;
                }
                gamma_grad[channel] += f64::from(lane_total(&dy_xhat[..width]));
                beta_grad[channel] += f64::from(lane_total(dy));
            }
            // Pass 2: dx = dy·(r·γ) − r·mean(g) − x̂·r·mean(g·x̂), over dy.
            let n = channels as f32;
            let (mut k0, mut k1) = ([0.0f32; PIXELS], [0.0f32; PIXELS]);
            for pixel in 0..width {
                k0[pixel] = -rstd[pixel] * sum_g[pixel] / n;
                k1[pixel] = -rstd[pixel] * sum_g_xhat[pixel] / n;
            }
            for (channel, &gamma) in gamma.iter().enumerate() {
                let at = offset(dims, block, channel);
                // SAFETY: as in pass 1.
                let dy = unsafe { grad.run(at, width) };
                let per_pixel = mean.iter().zip(&low).zip(&rstd).zip(k0.iter().zip(&k1));
                for ((dy, &x), (((&mean, &low), &rstd), (&k0, &k1))) in
                    dy.iter_mut().zip(&x[at..]).zip(per_pixel)
                {
                    let xhat = ((x - mean) - low) * rstd;
                    *dy = *dy * gamma * rstd + k0 + xhat * k1;
                }
            }
            (gamma_grad, beta_grad)
        })
        .reduce(zeros, |(mut gamma, mut beta), (other_gamma, other_beta)| {
            gamma.iter_mut().zip(other_gamma).for_each(|(a, b)| *a += b);
            beta.iter_mut().zip(other_beta).for_each(|(a, b)| *a += b);
            (gamma, beta)
        });
    (
        buffer.into_tensor(),
        narrow(gamma_grad, channels),
        narrow(beta_grad, channels),
    )
}
