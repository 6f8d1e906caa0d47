//! The flex convolution behind [`conv2d`](crate::conv2d): im2col and gemm, and Winograd's
//! F(2×2, 3×3) for 3×3 stride-1 convolutions, forward and backward.
//!
//! Files: the extension trait and its launch here, the autodiff registration in
//! `autodiff.rs`, the depthwise convolution (ConvNeXt's) in `depthwise.rs`, the shapes in
//! `geometry.rs`, the kernels (im2col, the three products, col2im) in `im2col.rs`, Winograd's
//! forward pass (also the input gradient of a 3×3 stride-1 convolution) in `winograd.rs`, its
//! weight gradient in `winograd_weight_grad.rs`, and the matrix products, thread runs and
//! scratch buffers they share in `gemm.rs`.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor};

use self::geometry::Geometry;
use super::buffers::{flex_values, tensor_from};
use crate::Kernels;

mod autodiff;
pub(crate) mod depthwise;
mod gemm;
mod geometry;
mod im2col;
mod winograd;
mod winograd_weight_grad;

/// The padding `[top, left, bottom, right]` of `conv`, where it does not depend on the
/// input (`Same` does: burn computes it at each call).
fn explicit_padding(conv: &Conv2d) -> Option<[usize; 4]> {
    match conv.padding {
        PaddingConfig2d::Valid => Some([0; 4]),
        PaddingConfig2d::Explicit(top, left, bottom, right) => Some([top, left, bottom, right]),
        PaddingConfig2d::Same => None,
    }
}

/// `conv2d` on the extension op, or `None` where it does not apply.
pub(crate) fn try_conv2d(conv: &Conv2d, input: &Tensor<4>) -> Option<Tensor<4>> {
    let weight = conv.weight.val();
    if Kernels::of(&input.device()) != Some(Kernels::Flex)
        || conv.groups != 1
        || input.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || input.dims()[1] != weight.dims()[1]
    {
        return None;
    }
    let padding = explicit_padding(conv)?;
    let output = Tensor::from_dispatch(<Dispatch as ConvBackend>::conv2d_im2col(
        input.clone().into_dispatch(),
        weight.into_dispatch(),
        conv.stride,
        padding,
        conv.dilation,
    ));
    Some(match &conv.bias {
        Some(bias) => output + bias.val().reshape([1, -1, 1, 1]),
        None => output,
    })
}

/// The convolution as a burn backend extension.
#[backend_extension(Flex, Autodiff)]
pub(crate) trait ConvBackend: Backend {
    /// `x` (`[N, Ci, H, W]`) convolved with `weight` (`[Co, Ci, Kh, Kw]`), no bias, one
    /// group, `padding` as `[top, left, bottom, right]`.
    fn conv2d_im2col(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
    ) -> FloatTensor<Self>;
}

/// `x` convolved with `weight` as `g` describes: Winograd's F(2×2, 3×3) where it applies,
/// im2col and one product otherwise.
fn convolve(x: &[f32], weight: &[f32], g: &Geometry) -> Vec<f32> {
    match winograd::applies(g) {
        true => winograd::convolve(x, weight, g),
        false => im2col::convolve(x, weight, g),
    }
}

/// The convolution of flex tensors.
fn forward(x: &FlexTensor, weight: &FlexTensor, geometry: &Geometry) -> FlexTensor {
    let g = geometry;
    let output = convolve(&flex_values(x), &flex_values(weight), g);
    tensor_from(output, [g.batch, g.channels_out, g.output[0], g.output[1]])
}

impl ConvBackend for Flex {
    fn conv2d_im2col(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
    ) -> FloatTensor<Self> {
        let geometry = Geometry::new(&x, &weight, stride, padding, dilation);
        forward(&x, &weight, &geometry)
    }
}
