//! 2-D convolution on flex by im2col and large matrix products: see [`conv2d`].

use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

/// `conv.forward(input)`, computed on flex by im2col and large matrix products, forward and
/// backward; the same as `Conv2d::forward` elsewhere.
///
/// On flex with f32 tensors and one group, the op and its backward pass are ours, and the
/// models of this crate run every such convolution through it (it serves any [`Conv2d`]).
/// burn derives a convolution's weight gradient as another convolution, with the batch as
/// channels and the output gradient as a `Ho×Wo` kernel: one skinny matrix product per input
/// channel, each re-reading the whole output gradient, far slower than the forward
/// convolution. Here all three products are the textbook im2col ones, over chunks of images:
///
/// ```text
/// col[(c, i, j), (b, p)] = x[b, c, p·s − pad + (i, j)·d]         (0 outside the image)
/// y = W · col         dWᵀ += col · dYᵀ
/// dx = dY convolved with W flipped in space, its channel axes swapped     (stride 1)
/// dx[b, c, p·s − pad + (i, j)·d] += (Wᵀ · dY)[(c, i, j), (b, p)]          (otherwise)
/// ```
///
/// where `(b, p)` runs over a chunk's images and their output positions, so that each product
/// is large enough for gemm's kernels, and each operand is laid out the way gemm packs it
/// (`dY` as `[(b, p), Co]` for the weight gradient, rather than `dY · colᵀ`). Each thread
/// takes one contiguous run of the batch, with its own buffers and its own part of `dW`: a
/// weight gradient is a small output over a long sum, which gemm's own threading splits
/// poorly. Depthwise convolutions (a filter per channel) of stride 1 that keep the image's
/// size, ConvNeXt's, have kernels of their own (shifted rows added tap by tap). Other grouped
/// convolutions, `Same` padding, other dtypes and other backends use burn's convolution.
///
/// # Panics
///
/// As [`Conv2d::forward`]: on an input whose channels do not match the weight's, and on a
/// kernel that spans more than the padded input.
pub fn conv2d(conv: &Conv2d, input: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(output) = crate::flex::conv::try_conv2d(conv, &input)
        .or_else(|| crate::flex::conv::depthwise::try_depthwise(conv, &input))
    {
        return output;
    }
    conv.forward(input)
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, Distribution, Tensor, Tolerance};

    use super::*;

    /// One convolution to compare.
    struct Case {
        batch: usize,
        channels: [usize; 2],
        input: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: PaddingConfig2d,
        dilation: [usize; 2],
        groups: usize,
        bias: bool,
        /// Whether the input takes part in autodiff (a network's first layer's does not).
        input_grad: bool,
    }

    impl Default for Case {
        fn default() -> Self {
            Self {
                batch: 3,
                channels: [5, 4],
                input: [9, 9],
                kernel: [3, 3],
                stride: [1, 1],
                padding: PaddingConfig2d::Explicit(1, 1, 1, 1),
                dilation: [1, 1],
                groups: 1,
                bias: false,
                input_grad: true,
            }
        }
    }

    /// Our op's output and gradients (input, weight, bias) against burn's own module's, on
    /// flex with autodiff.
    fn assert_matches_burn(case: Case) {
        let device = Device::flex().autodiff();
        let conv = Conv2dConfig::new(case.channels, case.kernel)
            .with_stride(case.stride)
            .with_padding(case.padding)
            .with_dilation(case.dilation)
            .with_groups(case.groups)
            .with_bias(case.bias)
            .init(&device);
        let [height, width] = case.input;
        let x = Tensor::<4>::random(
            [case.batch, case.channels[0], height, width],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let x = if case.input_grad { x.require_grad() } else { x };
        let reference = conv.forward(x.clone());
        let output_grad =
            Tensor::<4>::random(reference.dims(), Distribution::Normal(0.0, 1.0), &device);
        let gradients = |output: Tensor<4>| {
            let grads = (output * output_grad.clone()).sum().backward();
            (
                x.grad(&grads),
                conv.weight.grad(&grads).expect("the weight's gradient"),
                conv.bias
                    .as_ref()
                    .map(|bias| bias.grad(&grads).expect("the bias's gradient")),
            )
        };
        let output = conv2d(&conv, x.clone());
        let tolerance = Tolerance::<f32>::rel_abs(1e-4, 1e-4);
        let assert_close = |ours: Tensor<4>, theirs: Tensor<4>| {
            ours.into_data()
                .assert_approx_eq::<f32>(&theirs.into_data(), tolerance)
        };
        assert_close(output.clone(), reference.clone());
        let (x_grad, weight_grad, bias_grad) = gradients(output);
        let (x_ref, weight_ref, bias_ref) = gradients(reference);
        assert_eq!(x_grad.is_some(), case.input_grad);
        if let (Some(ours), Some(theirs)) = (x_grad, x_ref) {
            assert_close(ours, theirs);
        }
        // Each weight's gradient sums a product over every output position of every image
        // (thousands), which the two sides add in different orders: an entry that nearly cancels
        // keeps an error of about 1e-6 of the largest entries, not of its own size.
        let scale = weight_ref.clone().abs().max().into_scalar::<f32>();
        weight_grad.into_data().assert_approx_eq::<f32>(
            &weight_ref.into_data(),
            Tolerance::rel_abs(1e-4, 1e-5 * scale.max(1.0)),
        );
        assert_eq!(bias_grad.is_some(), case.bias);
        if let (Some(ours), Some(theirs)) = (bias_grad, bias_ref) {
            ours.into_data()
                .assert_approx_eq::<f32>(&theirs.into_data(), tolerance);
        }
    }

    /// A depthwise case, checked to take the depthwise kernels.
    fn assert_depthwise_matches_burn(case: Case) {
        let device = Device::flex();
        let conv = Conv2dConfig::new(case.channels, case.kernel)
            .with_padding(case.padding.clone())
            .with_groups(case.groups)
            .init(&device);
        let x = Tensor::<4>::zeros([1, case.channels[0], case.input[0], case.input[1]], &device);
        assert!(crate::flex::conv::depthwise::try_depthwise(&conv, &x).is_some());
        assert_matches_burn(case);
    }

    #[test]
    fn depthwise_7x7_with_bias() {
        assert_depthwise_matches_burn(Case {
            channels: [6, 6],
            groups: 6,
            kernel: [7, 7],
            padding: PaddingConfig2d::Explicit(3, 3, 3, 3),
            bias: true,
            ..Case::default()
        });
    }

    #[test]
    fn depthwise_7x7_on_an_image_smaller_than_the_kernel_without_input_gradient() {
        // ConvNeXt-CIFAR's last stage: 2×2 maps.
        assert_depthwise_matches_burn(Case {
            channels: [4, 4],
            groups: 4,
            input: [3, 2],
            kernel: [7, 7],
            padding: PaddingConfig2d::Explicit(3, 3, 3, 3),
            input_grad: false,
            ..Case::default()
        });
    }

    #[test]
    fn depthwise_rectangular_kernel() {
        assert_depthwise_matches_burn(Case {
            channels: [3, 3],
            groups: 3,
            input: [6, 11],
            kernel: [3, 5],
            padding: PaddingConfig2d::Explicit(1, 2, 1, 2),
            ..Case::default()
        });
    }

    #[test]
    fn grouped_but_not_depthwise_takes_burns_convolution() {
        let case = Case {
            channels: [4, 4],
            groups: 2,
            ..Case::default()
        };
        let conv = Conv2dConfig::new(case.channels, case.kernel)
            .with_padding(case.padding.clone())
            .with_groups(case.groups)
            .init(&Device::flex());
        let x = Tensor::<4>::zeros([1, 4, 9, 9], &Device::flex());
        assert!(crate::flex::conv::depthwise::try_depthwise(&conv, &x).is_none());
        assert_matches_burn(case);
    }

    #[test]
    fn same_size_3x3_with_bias() {
        assert_matches_burn(Case {
            bias: true,
            ..Case::default()
        });
    }

    /// ResNet's 3×3 convolutions with enough channels take Winograd's F(2×2, 3×3), forward and
    /// input gradient, and on a CPU without AVX-512 weight gradient too; an odd-sized map leaves
    /// partial tiles on two edges.
    #[test]
    fn winograd_3x3_on_an_odd_sized_map() {
        assert_matches_burn(Case {
            channels: [32, 40],
            input: [7, 5],
            bias: true,
            ..Case::default()
        });
    }

    #[test]
    fn winograd_weight_gradient_alone_for_an_untracked_input() {
        // As a network's first layer, whose images need no gradient: Winograd's weight
        // gradient alone, on a CPU without AVX-512.
        assert_matches_burn(Case {
            channels: [32, 32],
            input: [8, 6],
            input_grad: false,
            ..Case::default()
        });
    }

    #[test]
    fn strided_on_an_odd_sized_input() {
        assert_matches_burn(Case {
            input: [9, 7],
            stride: [2, 2],
            ..Case::default()
        });
    }

    #[test]
    fn strided_1x1_projection() {
        assert_matches_burn(Case {
            channels: [6, 8],
            input: [8, 8],
            kernel: [1, 1],
            stride: [2, 2],
            padding: PaddingConfig2d::Valid,
            ..Case::default()
        });
    }

    #[test]
    fn asymmetric_padding_rectangular_kernel_and_dilation() {
        assert_matches_burn(Case {
            input: [10, 8],
            kernel: [3, 2],
            stride: [1, 2],
            padding: PaddingConfig2d::Explicit(1, 0, 2, 1),
            dilation: [2, 1],
            bias: true,
            ..Case::default()
        });
    }

    #[test]
    fn stride_one_with_asymmetric_padding() {
        // The input gradient as a convolution of the output gradient, padded (0, 2, 1, 1).
        assert_matches_burn(Case {
            input: [7, 9],
            padding: PaddingConfig2d::Explicit(2, 0, 1, 1),
            ..Case::default()
        });
    }

    #[test]
    fn whole_rows_shifted_with_one_sided_padding_and_a_dilated_height() {
        // Output rows as wide as the input's: each kernel position's column row is the input
        // shifted by a constant, here past the top and left edges only, and on a map smaller
        // than the kernel's reach.
        for (input, padding, dilation) in [
            ([6, 5], PaddingConfig2d::Explicit(2, 2, 0, 0), [1, 1]),
            ([7, 6], PaddingConfig2d::Explicit(2, 1, 2, 1), [2, 1]),
            ([2, 2], PaddingConfig2d::Explicit(1, 1, 1, 1), [1, 1]),
        ] {
            assert_matches_burn(Case {
                input,
                padding,
                dilation,
                ..Case::default()
            });
        }
    }

    #[test]
    fn padding_wider_than_the_kernel() {
        // Stride 1, but no convolution gives this input gradient: it is scattered instead.
        assert_matches_burn(Case {
            kernel: [1, 1],
            padding: PaddingConfig2d::Explicit(1, 1, 1, 1),
            ..Case::default()
        });
    }

    #[test]
    fn images_in_several_chunks() {
        // 48·48 output positions per image: one image per chunk of columns.
        assert_matches_burn(Case {
            channels: [2, 3],
            input: [48, 48],
            ..Case::default()
        });
    }

    #[test]
    fn a_single_image() {
        assert_matches_burn(Case {
            batch: 1,
            bias: true,
            ..Case::default()
        });
    }

    #[test]
    fn weight_gradient_alone_for_an_untracked_input() {
        assert_matches_burn(Case {
            input_grad: false,
            ..Case::default()
        });
    }

    #[test]
    #[should_panic(
        expected = "Conv2d: the kernel spans 5 positions on axis 2, more than the padded input's 4"
    )]
    fn kernels_larger_than_the_padded_input_are_refused() {
        let device = Device::flex();
        let conv = Conv2dConfig::new([1, 1], [5, 5])
            .with_padding(PaddingConfig2d::Explicit(1, 0, 0, 0))
            .init(&device);
        conv2d(&conv, Tensor::<4>::zeros([1, 1, 3, 3], &device));
    }
}
