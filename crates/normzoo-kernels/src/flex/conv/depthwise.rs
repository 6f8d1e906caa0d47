//! The depthwise convolution of ConvNeXt's blocks on flex: one filter per channel, stride 1,
//! an odd kernel padded to keep the image's size (7×7, padding 3), forward and backward.
//!
//! ```text
//! y[n, c, h, w]  = Σᵢⱼ x[n, c, h + i − pₕ, w + j − p_w] · k[c, i, j]     (0 outside the image)
//! dx[n, c, h, w] = Σᵢⱼ dy[n, c, h − i + pₕ, w − j + p_w] · k[c, i, j]    (y's formula, k flipped)
//! dk[c, i, j]    = Σₙₕ_w dy[n, c, h, w] · x[n, c, h + i − pₕ, w + j − p_w]
//! ```
//!
//! Each tap adds a shifted row to a row, a loop that vectorizes; planes run in parallel, and
//! the filter gradient in parallel over channels. burn-flex has a grouped convolution, but
//! derives the input gradient through a 3-D transposed convolution and the filter gradient
//! through the generic one: the two took about a fifth of a CIFAR ConvNeXt's training step.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use crate::Kernels;
use crate::autodiff::{FusedBackward, recorded};
use crate::flex::buffers::{filled, flex_values, tensor_from};
use crate::flex::simd::vectorized;

/// `conv2d` on the depthwise op, or `None` where it does not apply.
pub(crate) fn try_depthwise(conv: &Conv2d, input: &Tensor<4>) -> Option<Tensor<4>> {
    let weight = conv.weight.val();
    let [channels_out, per_group, kernel_h, kernel_w] = weight.dims();
    let channels = input.dims()[1];
    let same_size = |kernel: usize, before: usize, after: usize| {
        kernel % 2 == 1 && before == kernel / 2 && after == kernel / 2
    };
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        return None;
    };
    let applies = Kernels::of(&input.device()) == Some(Kernels::Flex)
        && input.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && conv.groups == channels
        && channels_out == channels
        && per_group == 1
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && same_size(kernel_h, top, bottom)
        && same_size(kernel_w, left, right);
    if !applies {
        return None;
    }
    let output = Tensor::from_dispatch(<Dispatch as DepthwiseBackend>::depthwise_conv2d(
        input.clone().into_dispatch(),
        weight.into_dispatch(),
    ));
    Some(match &conv.bias {
        Some(bias) => output + bias.val().reshape([1, -1, 1, 1]),
        None => output,
    })
}

/// The depthwise convolution as a burn backend extension.
#[backend_extension(Flex, Autodiff)]
pub(crate) trait DepthwiseBackend: Backend {
    /// `x` (`[N, C, H, W]`) convolved channel by channel with `weight` (`[C, 1, Kh, Kw]`, both
    /// odd), stride 1, padded by `Kh / 2` and `Kw / 2`: the output has `x`'s shape. No bias.
    fn depthwise_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl DepthwiseBackend for Flex {
    fn depthwise_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        convolve(&x, &weight, false)
    }
}

impl<C: CheckpointStrategy> DepthwiseBackend for Autodiff<Flex, C> {
    fn depthwise_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        recorded::<C, _, _, 2>([x, weight], |[x, weight]| {
            let output = convolve(&x, &weight, false);
            (output, DepthwiseSaved { x, weight })
        })
    }
}

/// What the backward pass needs: the input and the filters.
#[derive(Debug, Clone)]
struct DepthwiseSaved {
    x: FlexTensor,
    weight: FlexTensor,
}

impl FusedBackward<Flex, 2> for DepthwiseSaved {
    fn gradients(
        self,
        grad: FlexTensor,
        [need_x, need_weight]: [bool; 2],
    ) -> [Option<FlexTensor>; 2] {
        let x_grad = need_x.then(|| convolve(&grad, &self.weight, true));
        let weight_grad = need_weight.then(|| filter_gradient(&grad, &self.x, &self.weight));
        [x_grad, weight_grad]
    }
}

/// Every plane of `x` (`[N, C, H, W]`) convolved with its channel's filter of `weight`
/// (`[C, 1, Kh, Kw]`), the filter turned by half a turn where `flipped` (the input gradient).
fn convolve(x: &FlexTensor, weight: &FlexTensor, flipped: bool) -> FlexTensor {
    let shape = x.shape().to_vec();
    let [_, channels, height, width] = [shape[0], shape[1], shape[2], shape[3]];
    let [_, _, kernel_h, kernel_w] = weight.shape().dims::<4>();
    let taps = kernel_h * kernel_w;
    let weight = flex_values(weight);
    let values = flex_values(x);
    let plane_len = height * width;
    let write = |out: &mut [std::mem::MaybeUninit<f32>]| {
        out.par_chunks_mut(plane_len)
            .zip(values.par_chunks(plane_len))
            .enumerate()
            .for_each(|(plane, (out, x))| {
                // SAFETY: zeroed before any read; every value is then a sum of taps.
                let out = unsafe {
                    out.fill(std::mem::MaybeUninit::new(0.0));
                    &mut *(out as *mut [std::mem::MaybeUninit<f32>] as *mut [f32])
                };
                let filter = &weight[(plane % channels) * taps..][..taps];
                // Tap (i, j) reads the value (i − Kh/2, j − Kw/2) away; turned, the opposite.
                let direction = if flipped { -1 } else { 1 };
                let offset =
                    |tap: usize, kernel: usize| direction * (tap as isize - (kernel / 2) as isize);
                vectorized(|| {
                    for (i, row) in filter.chunks_exact(kernel_w).enumerate() {
                        for (j, &tap) in row.iter().enumerate() {
                            let shift = [offset(i, kernel_h), offset(j, kernel_w)];
                            add_shifted(out, x, [height, width], shift, tap);
                        }
                    }
                })
            });
    };
    // SAFETY: the planes cover the buffer and each is written whole (zeroed, then summed into).
    let (output, ()) = unsafe { filled(values.len(), write) };
    tensor_from(output, shape)
}

/// `out[h, w] += tap · x[h + di, w + dj]` over the positions where both are inside the
/// `[height, width]` plane.
#[inline(always)]
fn add_shifted(
    out: &mut [f32],
    x: &[f32],
    [height, width]: [usize; 2],
    [di, dj]: [isize; 2],
    tap: f32,
) {
    let columns = inside(width, dj);
    if columns.is_empty() {
        return;
    }
    for h in inside(height, di) {
        let source = (h as isize + di) as usize * width;
        let out = &mut out[h * width..][columns.clone()];
        let x = &x[(source as isize + columns.start as isize + dj) as usize..][..out.len()];
        for (out, &x) in out.iter_mut().zip(x) {
            *out += tap * x;
        }
    }
}

/// The positions `p` of `0..len` with `p + shift` also in `0..len`.
fn inside(len: usize, shift: isize) -> std::ops::Range<usize> {
    let start = (-shift).clamp(0, len as isize) as usize;
    let end = (len as isize - shift).clamp(0, len as isize) as usize;
    start..end.max(start)
}

/// `dk[c, i, j] = Σ dy[n, c, h, w] · x[n, c, h + i − pₕ, w + j − p_w]`, as `[C, 1, Kh, Kw]`.
fn filter_gradient(grad: &FlexTensor, x: &FlexTensor, weight: &FlexTensor) -> FlexTensor {
    let [batch, channels, height, width] = x.shape().dims::<4>();
    let weight_shape = weight.shape().to_vec();
    let [kernel_h, kernel_w] = [weight_shape[2], weight_shape[3]];
    let (grad, x) = (flex_values(grad), flex_values(x));
    let plane_len = height * width;
    let filters: Vec<f32> = (0..channels)
        .into_par_iter()
        .flat_map_iter(|channel| {
            let mut sums = vec![0.0f64; kernel_h * kernel_w];
            for image in 0..batch {
                let at = (image * channels + channel) * plane_len;
                let (dy, x) = (&grad[at..][..plane_len], &x[at..][..plane_len]);
                for i in 0..kernel_h {
                    for j in 0..kernel_w {
                        let shift = [
                            i as isize - (kernel_h / 2) as isize,
                            j as isize - (kernel_w / 2) as isize,
                        ];
                        sums[i * kernel_w + j] += shifted_dot(dy, x, [height, width], shift);
                    }
                }
            }
            sums.into_iter().map(|sum| sum as f32)
        })
        .collect();
    tensor_from(filters, weight_shape)
}

/// `Σ dy[h, w] · x[h + di, w + dj]` over the positions where both are inside the plane.
fn shifted_dot(dy: &[f32], x: &[f32], [height, width]: [usize; 2], [di, dj]: [isize; 2]) -> f64 {
    let columns = inside(width, dj);
    if columns.is_empty() {
        return 0.0;
    }
    inside(height, di)
        .map(|h| {
            let dy = &dy[h * width..][columns.clone()];
            let source =
                ((h as isize + di) as usize * width) as isize + columns.start as isize + dj;
            let x = &x[source as usize..][..dy.len()];
            f64::from(dy.iter().zip(x).map(|(dy, x)| dy * x).sum::<f32>())
        })
        .sum()
}
