//! GELU on flex, forward and backward each in one vectorized pass: see [`gelu`](crate::gelu).
//!
//! `Φ(x) = erfc(−x/√2) / 2` comes from Abramowitz and Stegun's 7.1.26 (`erfc(z) ≈
//! t·(a₁ + t·(a₂ + t·(a₃ + t·(a₄ + t·a₅))))·e^(−z²)`, `t = 1/(1 + p·z)`, `z ≥ 0`, within 1.5e-7
//! of `erf`), and `e^(−z²) = e^(−x²/2)` serves `φ(x)` too, so a value costs one exponential,
//! computed here without a library call (range reduction by `ln 2` and a degree-6 polynomial,
//! within 2 units in the last place), so that the loop vectorizes.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use rayon::prelude::*;

use super::buffers::{ReusedBuffer, filled, flex_values, tensor_from};
use super::simd::vectorized;
use crate::autodiff::{FusedBackward, recorded};

/// Values per parallel work item.
const CHUNK: usize = 1 << 14;

/// GELU as a burn backend extension.
#[backend_extension(Flex, Autodiff)]
pub(crate) trait GeluBackend: Backend {
    /// `x·Φ(x)` for every value of `x`.
    fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl GeluBackend for Flex {
    fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        forward(&x)
    }
}

impl<C: CheckpointStrategy> GeluBackend for Autodiff<Flex, C> {
    fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        recorded::<C, _, _, 1>([x], |[x]| (forward(&x), GeluSaved { x }))
    }
}

/// What the backward pass needs: the input.
#[derive(Debug, Clone)]
struct GeluSaved {
    x: FlexTensor,
}

impl FusedBackward<Flex, 1> for GeluSaved {
    fn gradients(self, grad: FlexTensor, _tracked: [bool; 1]) -> [Option<FlexTensor>; 1] {
        [Some(backward(grad, &self.x))]
    }
}

/// `x·Φ(x)`.
fn forward(x: &FlexTensor) -> FlexTensor {
    let values = flex_values(x);
    let write = |out: &mut [std::mem::MaybeUninit<f32>]| {
        out.par_chunks_mut(CHUNK)
            .zip(values.par_chunks(CHUNK))
            .for_each(|(out, x)| {
                vectorized(|| {
                    for (out, &x) in out.iter_mut().zip(x) {
                        out.write(x * normal_cdf_pdf(x).0);
                    }
                })
            });
    };
    // SAFETY: the chunks of `out` pair with those of `values`, of the same length, and each
    // value of each is written.
    let (output, ()) = unsafe { filled(values.len(), write) };
    tensor_from(output, x.shape().to_vec())
}

/// `dx = dy·(Φ(x) + x·φ(x))`, written over `dy` where nothing else holds it.
fn backward(grad: FlexTensor, x: &FlexTensor) -> FlexTensor {
    let values = flex_values(x);
    let mut grad = ReusedBuffer::new(grad);
    grad.values_mut()
        .par_chunks_mut(CHUNK)
        .zip(values.par_chunks(CHUNK))
        .for_each(|(dy, x)| {
            vectorized(|| {
                for (dy, &x) in dy.iter_mut().zip(x) {
                    let (cdf, pdf) = normal_cdf_pdf(x);
                    *dy *= cdf + x * pdf;
                }
            })
        });
    grad.into_tensor()
}

/// `(Φ(x), φ(x))`, the standard normal distribution and density at `x`.
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let polynomial = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let gauss = exp_nonpositive(-z * z); // e^(−x²/2)
    let tail = 0.5 * polynomial * gauss; // Φ(−|x|)
    let cdf = if x >= 0.0 { 1.0 - tail } else { tail };
    let pdf = gauss * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2);
    (cdf, pdf)
}

/// `eˣ` for `x ≤ 0` (0 below −87, where it would leave f32's normal range): `x = k·ln 2 + r`
/// with `|r| ≤ ln 2 / 2`, `eʳ` by its Taylor polynomial to `r⁶` (relative error under 2e-7),
/// and `2ᵏ` written into the exponent bits.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HIGH: f32 = 0.693_145_75; // ln 2 to 16 bits: k·LN2_HIGH is exact
    const LN2_LOW: f32 = 1.428_606_8e-6; // ln 2 − LN2_HIGH
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.max(-87.0);
    let k = (clamped * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (clamped - k * LN2_HIGH) - k * LN2_LOW;
    let er = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let two_k = f32::from_bits(((k as i32 + 127) as u32) << 23);
    let value = er * two_k;
    if x < -87.0 { 0.0 } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exponential_is_within_two_units_in_the_last_place() {
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let exact = (x as f64).exp();
            let error = (exp_nonpositive(x) as f64 - exact).abs() / exact;
            assert!(error < 2.5e-7, "e^{x}: relative error {error}");
        }
        assert_eq!(exp_nonpositive(-88.0), 0.0);
        assert_eq!(exp_nonpositive(-1e30), 0.0);
    }

    #[test]
    fn the_normal_distribution_and_density_are_within_3e7() {
        let mut worst = [0.0f64; 2];
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-4;
            let (cdf, pdf) = normal_cdf_pdf(x);
            let x = x as f64;
            let exact_cdf = 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
            let exact_pdf = (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            worst[0] = worst[0].max((cdf as f64 - exact_cdf).abs());
            worst[1] = worst[1].max((pdf as f64 - exact_pdf).abs());
        }
        // Abramowitz and Stegun's 1.5e-7 halved, and the f32 rounding of its polynomial.
        assert!(worst[0] < 3e-7, "Φ off by up to {}", worst[0]);
        assert!(worst[1] < 1e-7, "φ off by up to {}", worst[1]);
    }
}
