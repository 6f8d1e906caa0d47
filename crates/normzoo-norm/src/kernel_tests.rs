//! The fused kernels of `normzoo-kernels` (flex's and the GPU's) against the same
//! normalization composed of tensor ops (this crate's `stats`), output and every gradient. The
//! composed reference runs in f64 on flex, so that it is exact next to any f32 kernel: an f32
//! reference on a GPU carries rounding of its own as large as the tolerance.

use burn::tensor::{Device, Distribution, FloatDType, Int, Tensor};

use normzoo_kernels::{Grouping, Kernels};

use crate::stats::{rms_normalize, scale_shift, standardize};

/// The same normalization composed of tensor ops (what every other backend runs).
fn composed(x: Tensor<2>, gamma: Tensor<1>, beta: Tensor<1>, grouping: Grouping) -> Tensor<2> {
    let [rows, width] = x.dims();
    let normalized = if grouping.center {
        standardize(x, grouping.eps).output
    } else {
        rms_normalize(x, grouping.eps)
    };
    let by_channel = normalized.reshape([
        rows / grouping.groups,
        grouping.channels(),
        grouping.spatial,
    ]);
    scale_shift(by_channel, Some(gamma), Some(beta), 1).reshape([rows, width])
}

/// The means and standard deviations of the inputs: far from 0 against the spread, so that the
/// statistics must not cancel (50 and 2), and must keep the digits a single f32 mean loses (1e4
/// and 0.1: such a mean is off by up to 5e-4, 5e-3 of the output).
const SPREADS: [(f64, f64); 2] = [(50.0, 2.0), (1e4, 0.1)];

/// A grouping with PyTorch's default `eps`.
fn grouping(groups: usize, channels_per_group: usize, spatial: usize, center: bool) -> Grouping {
    Grouping {
        groups,
        channels_per_group,
        spatial,
        center,
        eps: 1e-5,
    }
}

/// Asserts each of output, d input, d γ, d β (and for BatchNorm the statistics) agrees to
/// 2e-5, relative to `1 + |expected|`.
fn assert_all_close(name: &str, expected: &[Vec<f32>], actual: &[Vec<f32>]) {
    let names = ["output", "d input", "d gamma", "d beta", "mean", "variance"];
    for (what, (expected, actual)) in names.iter().zip(expected.iter().zip(actual)) {
        let worst = expected
            .iter()
            .zip(actual)
            .map(|(e, a)| (e - a).abs() / (1.0 + e.abs()))
            .fold(0.0f32, f32::max);
        assert!(worst < 2e-5, "{name} {what}: fused differs by {worst:e}");
    }
}

/// `tensor` as a kernel takes it, or for the reference in f64 on flex's autodiff device.
fn prepared<const D: usize>(tensor: &Tensor<D>, reference: bool) -> Tensor<D> {
    if reference {
        tensor
            .clone()
            .to_device(&Device::flex().autodiff())
            .cast(FloatDType::F64)
    } else {
        tensor.clone()
    }
}

/// The values of `tensor` as f32.
fn read<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Output, input gradient, γ gradient and β gradient of `kernels`' rows (or, without one, of the
/// composed ops in f64).
fn run(
    kernels: Option<Kernels>,
    [x, gamma, beta, upstream]: [&Tensor<2>; 4],
    grouping: Grouping,
) -> [Vec<f32>; 4] {
    let reference = kernels.is_none();
    let x = prepared(x, reference).require_grad();
    let upstream = prepared(upstream, reference);
    let gamma = prepared(gamma, reference).flatten::<1>(0, 1).require_grad();
    let beta = prepared(beta, reference).flatten::<1>(0, 1).require_grad();
    let y = match kernels {
        Some(kernels) => kernels
            .normalize_rows(&x, Some(gamma.clone()), Some(beta.clone()), grouping)
            .expect("the kernel applies to f32 on its backend"),
        None => composed(x.clone(), gamma.clone(), beta.clone(), grouping),
    };
    let grads = y.clone().mul(upstream).sum().backward();
    [
        read(y),
        read(x.grad(&grads).unwrap()),
        read(gamma.grad(&grads).unwrap()),
        read(beta.grad(&grads).unwrap()),
    ]
}

/// Asserts `kernels` on `device` (an autodiff device) matches the composed ops and their
/// gradients for every normalizer's grouping.
fn assert_rows_kernel_matches_composed(kernels: Kernels, device: &Device) {
    let cases = [
        ("GroupNorm", grouping(4, 3, 5, true), 2),
        ("InstanceNorm", grouping(6, 1, 9, true), 3),
        ("LayerNorm", grouping(1, 13, 1, true), 7),
        ("RMSNorm", grouping(1, 13, 1, false), 7),
        // More rows than one f32 partial sum of dγ, dβ covers.
        ("LayerNorm, 40 rows", grouping(1, 24, 1, true), 40),
        // Rows longer than the units that share one (256 on the GPU).
        ("LayerNorm, 600 wide", grouping(1, 600, 1, true), 3),
        // More values per channel (2·5,000) than one GPU cube sums for dγ, dβ.
        (
            "InstanceNorm, 5,000 positions",
            grouping(2, 1, 5000, true),
            2,
        ),
        // GroupNorm of [N, C] features: one value per channel, several groups.
        (
            "GroupNorm, one value per channel",
            grouping(4, 3, 1, true),
            5,
        ),
    ];
    for ((name, grouping, samples), (mean, std)) in cases.into_iter().flat_map(with_spreads) {
        device.seed(11);
        let rows = samples * grouping.groups;
        let normal = |shape: [usize; 2], mean, std| {
            Tensor::<2>::random(shape, Distribution::Normal(mean, std), device)
        };
        let x = normal([rows, grouping.row_len()], mean, std);
        let gamma = normal([1, grouping.channels()], 1.0, 0.5);
        let beta = normal([1, grouping.channels()], 0.0, 0.5);
        let upstream = normal([rows, grouping.row_len()], 0.0, 1.0);
        let inputs = [&x, &gamma, &beta, &upstream];
        let expected = run(None, inputs, grouping);
        let actual = run(Some(kernels), inputs, grouping);
        assert_all_close(&format!("{name}, {mean} ± {std}"), &expected, &actual);
    }
}

/// Asserts `kernels` on `device` (no autodiff) gives the composed output, also for a transposed
/// (non-contiguous) input.
fn assert_rows_kernel_output_matches_composed(kernels: Kernels, device: &Device) {
    device.seed(3);
    let grouping_2x2 = grouping(2, 2, 6, true);
    let x = Tensor::<2>::random([4, 12], Distribution::Default, device);
    let gamma = Tensor::<1>::random([4], Distribution::Default, device);
    let beta = Tensor::<1>::random([4], Distribution::Default, device);
    let transposed = Tensor::<2>::random([5, 3], Distribution::Default, device).transpose();
    let (ones, zeros) = (Tensor::ones([5], device), Tensor::zeros([5], device));
    for (x, gamma, beta, grouping) in [
        (x, gamma, beta, grouping_2x2),
        (transposed, ones, zeros, grouping(1, 5, 1, true)),
    ] {
        let fused = kernels
            .normalize_rows(&x, Some(gamma.clone()), Some(beta.clone()), grouping)
            .expect("the kernel applies to f32 on its backend");
        fused.into_data().assert_approx_eq::<f32>(
            &composed(x, gamma, beta, grouping).into_data(),
            Default::default(),
        );
    }
}

/// Asserts `kernels` on `device` (an autodiff device) matches LayerNorm over the channels
/// (composed, between two transposes) and its gradients.
fn assert_channels_kernel_matches_composed(kernels: Kernels, device: &Device) {
    // [N, C, P]: pixels in several blocks and a partial one, channels in several f32
    // partial sums and a partial one; a single pixel (ConvNeXt's pooled head); many
    // channels.
    let shapes = [[3, 13, 70], [2, 5, 1], [2, 96, 9]];
    for (shape, (mean, std)) in shapes.into_iter().flat_map(with_spreads) {
        device.seed(17);
        let normal = |shape: [usize; 3], mean, std| {
            Tensor::<3>::random(shape, Distribution::Normal(mean, std), device)
        };
        let [_, channels, _] = shape;
        let x = normal(shape, mean, std);
        let gamma = normal([1, 1, channels], 1.0, 0.5).flatten::<1>(0, 2);
        let beta = normal([1, 1, channels], 0.0, 0.5).flatten::<1>(0, 2);
        let upstream = normal(shape, 0.0, 1.0);
        let run = |fused: bool| {
            let x = prepared(&x, !fused).require_grad();
            let upstream = prepared(&upstream, !fused);
            let gamma = prepared(&gamma, !fused).require_grad();
            let beta = prepared(&beta, !fused).require_grad();
            let y = if fused {
                kernels
                    .normalize_channels(&x, Some(gamma.clone()), Some(beta.clone()), 1e-6)
                    .expect("the kernel applies to f32 on its backend")
            } else {
                let channels_last = x.clone().swap_dims(1, 2);
                crate::stats::layer_normalize(
                    channels_last,
                    Some(gamma.clone()),
                    Some(beta.clone()),
                    1e-6,
                )
                .swap_dims(1, 2)
            };
            let grads = y.clone().mul(upstream).sum().backward();
            vec![
                read(y),
                read(x.grad(&grads).unwrap()),
                read(gamma.grad(&grads).unwrap()),
                read(beta.grad(&grads).unwrap()),
            ]
        };
        let name = format!("LayerNorm2d {shape:?}, {mean} ± {std}");
        assert_all_close(&name, &run(false), &run(true));
    }
}

/// Asserts `kernels` on `device` (an autodiff device) matches burn's `batch_norm_train` (output,
/// every gradient, batch mean and biased variance), also where a channel's values are split
/// over several GPU cubes, and where `x` alone or `γ` and `β` alone are tracked.
fn assert_batch_kernel_matches_composed(kernels: Kernels, device: &Device) {
    // [N, C, S]: a few values per channel; 9,000 per channel (three cubes' chunks on the GPU,
    // the last one partial); one value per sample (BatchNorm1d of `[N, C]`).
    let shapes = [[4, 3, 10], [3, 2, 3000], [6, 5, 1]];
    for (shape, (mean, std)) in shapes.into_iter().flat_map(with_spreads) {
        device.seed(13);
        let normal = |shape: [usize; 3], mean, std| {
            Tensor::<3>::random(shape, Distribution::Normal(mean, std), device)
        };
        // A step of half a std from one sample to the next, that a channel's chunks (on the
        // GPU) differ in mean.
        let [samples, channels, _] = shape;
        let steps = Tensor::<1, Int>::arange(0..samples as i64, device)
            .float()
            .mul_scalar(std / 2.0)
            .reshape([samples, 1, 1]);
        let x = normal(shape, mean, std) + steps;
        let upstream = normal(shape, 0.0, 1.0);
        let gamma = normal([1, 1, channels], 1.0, 0.5).flatten::<1>(0, 2);
        let beta = normal([1, 1, channels], 0.0, 0.5).flatten::<1>(0, 2);
        for (track_input, track_affine) in [(true, true), (true, false), (false, true)] {
            let run = |fused: bool| {
                let x = tracked(prepared(&x, !fused), track_input);
                let upstream = prepared(&upstream, !fused);
                let gamma = tracked(prepared(&gamma, !fused), track_affine);
                let beta = tracked(prepared(&beta, !fused), track_affine);
                let (y, mean, var) = if fused {
                    kernels
                        .batch_norm(&x, gamma.clone(), beta.clone(), 1e-5)
                        .expect("the kernel applies to f32 on its backend")
                } else {
                    let result = burn::tensor::module::batch_norm_train(
                        x.clone(),
                        gamma.clone(),
                        beta.clone(),
                        1e-5,
                    );
                    (result.output, result.mean, result.variance)
                };
                let grads = y.clone().mul(upstream).sum().backward();
                let grad = |tensor: &Tensor<1>| {
                    read(tensor.grad(&grads).unwrap_or_else(|| tensor.zeros_like()))
                };
                vec![
                    read(y),
                    read(x.grad(&grads).unwrap_or_else(|| x.zeros_like())),
                    grad(&gamma),
                    grad(&beta),
                    read(mean),
                    read(var),
                ]
            };
            let name = format!(
                "BatchNorm {shape:?}, {mean} ± {std}, x tracked {track_input}, γ β {track_affine}"
            );
            assert_all_close(&name, &run(false), &run(true));
        }
    }
}

/// `case` with each of the [`SPREADS`].
fn with_spreads<T: Copy>(case: T) -> impl Iterator<Item = (T, (f64, f64))> {
    SPREADS.into_iter().map(move |spread| (case, spread))
}

/// `tensor`, tracked by autodiff when `track` is.
fn tracked<const D: usize>(tensor: Tensor<D>, track: bool) -> Tensor<D> {
    if track { tensor.require_grad() } else { tensor }
}

mod flex {
    use burn::tensor::{Device, FloatDType, Tensor};
    use normzoo_kernels::Kernels;

    use super::*;

    #[test]
    fn batch_norm_matches_burns_batch_norm_and_its_gradients() {
        assert_batch_kernel_matches_composed(Kernels::Flex, &Device::flex().autodiff());
    }

    #[test]
    fn rows_match_the_composed_ops_and_their_gradients() {
        assert_rows_kernel_matches_composed(Kernels::Flex, &Device::flex().autodiff());
    }

    #[test]
    fn channels_first_matches_the_composed_ops_and_their_gradients() {
        assert_channels_kernel_matches_composed(Kernels::Flex, &Device::flex().autodiff());
    }

    #[test]
    fn without_autodiff_the_output_is_the_same_also_for_a_transposed_input() {
        assert_rows_kernel_output_matches_composed(Kernels::Flex, &Device::flex());
    }

    #[test]
    fn other_dtypes_are_given_back_to_compose() {
        let device = Device::flex();
        let x = Tensor::<2>::ones([2, 4], &device).cast(FloatDType::F64);
        let fused = Kernels::Flex.normalize_rows(&x, None, None, grouping(1, 4, 1, true));
        assert!(fused.is_none());
    }
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use burn::tensor::{Device, Distribution, Tensor};
    use normzoo_kernels::Kernels;
    use normzoo_kernels::backend::device;

    use super::*;

    fn wgpu() -> Device {
        device("wgpu").unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn rows_match_the_composed_ops_and_their_gradients() {
        assert_rows_kernel_matches_composed(Kernels::Wgpu, &wgpu().autodiff());
    }

    #[test]
    fn batch_norm_matches_burns_batch_norm_and_its_gradients() {
        assert_batch_kernel_matches_composed(Kernels::Wgpu, &wgpu().autodiff());
    }

    #[test]
    fn channels_first_matches_the_composed_ops_and_their_gradients() {
        assert_channels_kernel_matches_composed(Kernels::Wgpu, &wgpu().autodiff());
    }

    #[test]
    fn without_autodiff_the_output_is_the_same_also_for_a_transposed_input() {
        assert_rows_kernel_output_matches_composed(Kernels::Wgpu, &wgpu());
    }

    #[test]
    fn rows_beyond_one_grid_dimension_wrap_onto_the_next() {
        // wgpu launches at most 65,535 cubes per grid dimension, one per row here.
        const MAX_CUBES_PER_DIM: usize = 65_535;
        let device = wgpu();
        device.seed(5);
        let rows = MAX_CUBES_PER_DIM + 3;
        let grouping = grouping(1, 2, 1, true);
        let x = Tensor::<2>::random([rows, 2], Distribution::Default, &device);
        let (gamma, beta) = (Tensor::ones([2], &device), Tensor::zeros([2], &device));
        let fused = Kernels::Wgpu
            .normalize_rows(&x, Some(gamma.clone()), Some(beta.clone()), grouping)
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
                Kernels::Wgpu
                    .normalize_rows(&x, Some(gamma.clone()), Some(beta.clone()), grouping)
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
        let fused = Kernels::Wgpu.normalize_rows(&x, None, None, grouping(1, 4, 1, true));
        assert!(fused.is_none());
    }
}
