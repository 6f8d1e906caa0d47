//! Activations with flex kernels of their own: [`gelu`] and [`relu`].

use burn::tensor::Tensor;

/// GELU, `x·Φ(x)` with `Φ` the standard normal distribution (`Φ(x) = (1 + erf(x/√2)) / 2`),
/// as burn's [`gelu`](burn::tensor::activation::gelu) and PyTorch's `nn.GELU()` (its exact
/// form, `approximate="none"`).
///
/// On flex with f32 values the forward pass is one vectorized pass, and the backward pass,
/// `dx = dy·(Φ(x) + x·φ(x))`, another, written over `dy`: burn composes its backward pass of
/// several element-wise ops, and evaluates `erf` one value at a time. `Φ` is computed to
/// 3e-7 (Abramowitz and Stegun's 7.1.26 for `erfc`), where burn's and PyTorch's f32 `erf` are
/// within a unit in the last place; a training step cannot tell them apart. Other dtypes and
/// backends use burn's `gelu` (on wgpu its fusion already merges the element-wise ops).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if crate::Kernels::of(&x.device()) == Some(crate::Kernels::Flex)
        && x.dtype() == burn::tensor::DType::F32
    {
        use burn::backend::Dispatch;

        use crate::flex::gelu::GeluBackend;
        return Tensor::from_dispatch(<Dispatch as GeluBackend>::gelu(x.into_dispatch()));
    }
    burn::tensor::activation::gelu(x)
}

/// ReLU, `max(x, 0)` (NaN stays NaN), as burn's [`relu`](burn::tensor::activation::relu) and
/// PyTorch's `nn.ReLU()`.
///
/// On flex with f32 values it writes over its input when nothing else holds it, and saves its
/// output for the backward pass (`dx = dy` where the output is positive, else 0), written over
/// `dy`. burn's ReLU saves its input instead, so that its output is always a new buffer: after
/// a normalizer, whose output nothing else holds, this one allocates nothing. Other dtypes and
/// backends use burn's `relu`.
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if crate::Kernels::of(&x.device()) == Some(crate::Kernels::Flex)
        && x.dtype() == burn::tensor::DType::F32
    {
        use burn::backend::Dispatch;

        use crate::flex::relu::ReluBackend;
        return Tensor::from_dispatch(<Dispatch as ReluBackend>::relu(x.into_dispatch()));
    }
    burn::tensor::activation::relu(x)
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::tensor::{Distribution, Tolerance};

    use super::*;
    use crate::backend::device;

    /// burn's composed GELU, values and input gradients, on a training device.
    #[test]
    fn gelu_and_its_gradient_match_burns_within_1e6() {
        let device = device("flex").unwrap().autodiff();
        for shape in [[3, 5, 7], [2, 64, 1000]] {
            let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 3.0), &device);
            let dy = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let run = |gelu: &dyn Fn(Tensor<3>) -> Tensor<3>| {
                let x = x.clone().require_grad();
                let y = gelu(x.clone());
                let grads = (y.clone() * dy.clone()).sum().backward();
                (y, x.grad(&grads).unwrap())
            };
            let (ours, our_grad) = run(&gelu);
            let (burns, burn_grad) = run(&burn::tensor::activation::gelu);
            let tolerance = Tolerance::absolute(1e-6);
            ours.into_data()
                .assert_approx_eq::<f32>(&burns.into_data(), tolerance);
            our_grad
                .into_data()
                .assert_approx_eq::<f32>(&burn_grad.into_data(), tolerance);
        }
    }

    /// burn's ReLU, values and input gradients, including NaN and zeros, on a training device;
    /// and the input's storage reused where nothing else holds it.
    #[test]
    fn relu_and_its_gradient_match_burns() {
        let device = device("flex").unwrap().autodiff();
        let x = Tensor::<2>::random([4, 5000], Distribution::Normal(0.0, 1.0), &device);
        let x = x.slice_assign(
            [0..1, 0..3],
            Tensor::from_floats([[f32::NAN, 0.0, -0.0]], &device),
        );
        let dy = Tensor::<2>::random([4, 5000], Distribution::Normal(0.0, 1.0), &device);
        let run = |relu: &dyn Fn(Tensor<2>) -> Tensor<2>| {
            let x = x.clone().require_grad();
            let y = relu(x.clone() * 1.0);
            let grads = (y.clone() * dy.clone()).sum().backward();
            (y, x.grad(&grads).unwrap())
        };
        let (ours, our_grad) = run(&relu);
        let (burns, burn_grad) = run(&burn::tensor::activation::relu);
        let bits =
            |t: Tensor<2>| -> Vec<u32> { t.into_data().iter::<f32>().map(f32::to_bits).collect() };
        assert_eq!(bits(ours), bits(burns));
        assert_eq!(bits(our_grad), bits(burn_grad));
    }

    #[test]
    fn gelu_of_extremes_is_exact() {
        let device = device("flex").unwrap();
        let x = Tensor::<1>::from_floats([-1e30, -100.0, -10.0, 0.0, 10.0, 100.0, 1e30], &device);
        let y: Vec<f32> = gelu(x).into_data().try_into_vec().unwrap();
        assert_eq!(y[..2], [-0.0, -0.0]);
        assert!(y[2].abs() < 1e-20, "GELU(−10) = {}", y[2]);
        assert_eq!(y[3..], [0.0, 10.0, 100.0, 1e30]);
    }
}
