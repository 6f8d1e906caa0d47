//! Mixed-precision training: the precision a run trains in, PyTorch's dynamic loss scaling,
//! and the training step that puts them together.
//!
//! burn has no automatic mixed precision; this is PyTorch's recipe (`torch.autocast` with a
//! `torch.amp.GradScaler`) built from what burn has (`Tensor::cast` with a backward pass):
//!
//! 1. the f32 model (the *master* weights) is cast to f16 or bf16 outside its normalizers
//!    ([`cast_outside_normalizers`]), the cast recorded by autodiff;
//! 2. the forward pass runs on the half-precision copy, the normalizers in f32, the logits cast
//!    back to f32 for the loss;
//! 3. the loss is multiplied by the [`LossScaler`]'s scale before the backward pass, so that
//!    small gradients do not underflow in half precision;
//! 4. the gradients arrive on the f32 master weights; they are divided by the scale and checked:
//!    any inf or NaN skips the optimizer step and halves the scale, and a run of finite steps
//!    doubles it.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, FloatDType, Tensor};
use normzoo_norm::cast_outside_normalizers;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// The precision a run's forward and backward passes compute in. The optimizer's weights and
/// the normalizers stay in f32 whatever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Single precision throughout.
    #[default]
    F32,
    /// Half precision (IEEE 754 binary16: 5 exponent bits, largest value 65504), with dynamic
    /// loss scaling.
    F16,
    /// bfloat16 (f32's 8 exponent bits, 8 significant bits), with dynamic loss scaling as for
    /// f16 (PyTorch needs none for bf16; here it costs one host read per step).
    BF16,
}

impl Precision {
    /// The names [`FromStr`] takes.
    pub const NAMES: &[&str] = &["f32", "f16", "bf16"];

    /// burn's float type for it.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
            Self::BF16 => FloatDType::BF16,
        }
    }

    /// Whether `device` computes in this precision.
    ///
    /// # Errors
    ///
    /// [`TrainError::UnsupportedPrecision`] naming the precision and the device when it does not.
    pub fn check(self, device: &Device) -> Result<(), TrainError> {
        match device.supports_dtype(self.float_dtype()) {
            true => Ok(()),
            false => Err(TrainError::UnsupportedPrecision {
                precision: self,
                device: format!("{device:?}"),
            }),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
        };
        f.write_str(name)
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::BF16),
            _ => Err(format!(
                "unknown precision `{name}`; expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Dynamic loss scaling, as PyTorch's `torch.amp.GradScaler(init_scale=2**16,
/// growth_factor=2, backoff_factor=0.5, growth_interval=2000)`.
///
/// The loss is multiplied by [`scale`](Self::scale) before the backward pass and the gradients
/// divided by it after; [`update`](Self::update) is told whether they came out finite.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    scale: f32,
    growth_interval: usize,
    finite_steps: usize,
}

impl LossScaler {
    /// PyTorch's initial scale: 2¹⁶.
    pub const INITIAL_SCALE: f32 = 65536.0;

    /// PyTorch's growth interval: the scale doubles after 2,000 finite steps in a row.
    pub const GROWTH_INTERVAL: usize = 2000;

    /// A scaler starting at `initial_scale` that doubles it after `growth_interval` finite
    /// steps in a row (PyTorch's `init_scale` and `growth_interval`; at least 1).
    pub fn new(initial_scale: f32, growth_interval: usize) -> Self {
        Self {
            scale: initial_scale,
            growth_interval: growth_interval.max(1),
            finite_steps: 0,
        }
    }

    /// The factor the loss is multiplied by.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Records a step whose unscaled gradients were all `finite` or not, and says whether the
    /// optimizer should take it. A step with an inf or NaN is skipped and halves the scale;
    /// `growth_interval` finite steps in a row double it.
    pub fn update(&mut self, finite: bool) -> bool {
        if !finite {
            self.scale *= 0.5;
            self.finite_steps = 0;
            return false;
        }
        self.finite_steps += 1;
        if self.finite_steps == self.growth_interval {
            self.scale *= 2.0;
            self.finite_steps = 0;
        }
        true
    }
}

impl Default for LossScaler {
    /// PyTorch's defaults: [`INITIAL_SCALE`](Self::INITIAL_SCALE) and
    /// [`GROWTH_INTERVAL`](Self::GROWTH_INTERVAL).
    fn default() -> Self {
        Self::new(Self::INITIAL_SCALE, Self::GROWTH_INTERVAL)
    }
}

/// A model's training in half precision: the type, and the loss scaler its steps share (the
/// workers of a data-parallel run too, each of whose batches updates it).
#[derive(Debug, Clone)]
pub struct MixedPrecision {
    dtype: FloatDType,
    scaler: Arc<Mutex<LossScaler>>,
}

impl MixedPrecision {
    /// Training in `precision` with PyTorch's default [`LossScaler`]; `None` for f32.
    pub fn new(precision: Precision) -> Option<Self> {
        Self::with_scaler(precision, LossScaler::default())
    }

    /// Training in `precision` with `scaler`; `None` for f32.
    pub fn with_scaler(precision: Precision, scaler: LossScaler) -> Option<Self> {
        (precision != Precision::F32).then(|| Self {
            dtype: precision.float_dtype(),
            scaler: Arc::new(Mutex::new(scaler)),
        })
    }

    /// The half-precision type the training steps compute in.
    pub fn float_dtype(&self) -> FloatDType {
        self.dtype
    }

    /// The scaler's state now.
    pub fn scaler(&self) -> LossScaler {
        self.scaler.lock().expect("the scaler's lock").clone()
    }

    /// One mixed-precision training step of `model`, an f32 module on an autodiff device:
    /// `loss` computes the f32 loss (and whatever else the step reports) from the model's
    /// half-precision copy. Returns the gradients of `model`'s parameters, unscaled, or none
    /// when they were not finite (the optimizer then skips the step), and `loss`'s output.
    pub fn step<M: Module, O>(
        &self,
        model: &M,
        loss: impl FnOnce(&M) -> (Tensor<1>, O),
    ) -> (GradientsParams, O) {
        let half = cast_outside_normalizers(model.clone(), self.dtype);
        let (loss, output) = loss(&half);
        let scale = self.scaler().scale();
        let grads = loss.mul_scalar(scale).backward();
        let (grads, finite) =
            unscale_gradients(GradientsParams::from_grads(grads, model), model, scale);
        let take = self
            .scaler
            .lock()
            .expect("the scaler's lock")
            .update(finite);
        match take {
            true => (grads, output),
            false => (GradientsParams::new(), output),
        }
    }
}

/// The gradients of `model`'s parameters (an f32 module on an autodiff device) for the loss
/// that `loss` computes from it, and whatever else `loss` returns: in f32 when `mixed` is
/// `None` (`loss` then gets `model` itself), otherwise by [`MixedPrecision::step`] (`loss` gets
/// the half-precision copy; no gradients when the step overflowed). `loss` must return an f32
/// loss; the training loops cast inputs with [`Precision::float_dtype`] and outputs back with
/// `cast(FloatDType::F32)`, both free in f32.
pub fn gradients<M: Module, O>(
    mixed: Option<&MixedPrecision>,
    model: &M,
    loss: impl FnOnce(&M) -> (Tensor<1>, O),
) -> (GradientsParams, O) {
    match mixed {
        Some(mixed) => mixed.step(model, loss),
        None => {
            let (loss, output) = loss(model);
            (GradientsParams::from_grads(loss.backward(), model), output)
        }
    }
}

/// `grads` of `module`'s parameters divided by `scale`, and whether every one of them is
/// finite (one host read: the sum of all gradients is finite exactly when they all are, but for
/// sums beyond f32's range, which no unscaled gradient reaches).
pub fn unscale_gradients<M: Module>(
    grads: GradientsParams,
    module: &M,
    scale: f32,
) -> (GradientsParams, bool) {
    struct Unscale {
        grads: GradientsParams,
        inverse: f64,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for Unscale {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let Some(grad) = self.grads.remove::<D>(param.id) else {
                return;
            };
            let grad = grad.mul_scalar(self.inverse);
            let sum = grad.clone().sum();
            self.total = Some(match self.total.take() {
                Some(total) => total.add(sum),
                None => sum,
            });
            self.grads.register(param.id, grad);
        }
    }
    let mut unscale = Unscale {
        grads,
        inverse: 1.0 / f64::from(scale),
        total: None,
    };
    module.visit(&mut unscale);
    let finite = unscale
        .total
        .is_none_or(|total| total.into_scalar::<f32>().is_finite());
    (unscale.grads, finite)
}

/// Asserts that the losses of a run in `precision` follow the f32 run's `reference` step by
/// step, each within `tolerance(f32 loss)`.
#[cfg(test)]
pub(crate) fn assert_follows(
    precision: Precision,
    losses: &[f32],
    reference: &[f32],
    tolerance: impl Fn(f32) -> f32,
) {
    assert_eq!(losses.len(), reference.len());
    for (step, (half, full)) in losses.iter().zip(reference).enumerate() {
        assert!(
            (half - full).abs() <= tolerance(*full),
            "{precision} step {step}: loss {half} against f32's {full}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for name in Precision::NAMES {
            assert_eq!(name.parse::<Precision>().unwrap().to_string(), *name);
        }
        assert_eq!(
            "fp16".parse::<Precision>().unwrap_err(),
            "unknown precision `fp16`; expected one of f32, f16, bf16"
        );
    }

    #[test]
    fn an_overflow_skips_the_step_and_halves_the_scale() {
        let mut scaler = LossScaler::new(65536.0, 3);
        assert_eq!(scaler.scale(), 65536.0);
        assert!(scaler.update(true));
        assert!(scaler.update(true));
        assert!(!scaler.update(false), "a step with an inf is skipped");
        assert_eq!(scaler.scale(), 32768.0);
        // The run of finite steps starts again after an overflow: three more to grow.
        assert!(scaler.update(true));
        assert!(scaler.update(true));
        assert_eq!(scaler.scale(), 32768.0);
        assert!(scaler.update(true));
        assert_eq!(scaler.scale(), 65536.0);
        for _ in 0..3 {
            scaler.update(false);
        }
        assert_eq!(scaler.scale(), 8192.0);
    }

    fn linear(device: &Device) -> Linear {
        LinearConfig::new(3, 2).init(device)
    }

    #[test]
    fn unscaling_divides_every_gradient_and_finds_infs_and_nans() {
        let device = crate::cpu().autodiff();
        let model = linear(&device);
        let input = Tensor::<2>::from_floats([[1.0, 2.0, 3.0]], &device);
        let loss = || model.forward(input.clone()).sum();
        let plain = GradientsParams::from_grads(loss().backward(), &model);
        let scaled = GradientsParams::from_grads(loss().mul_scalar(1024.0).backward(), &model);
        let (unscaled, finite) = unscale_gradients(scaled, &model, 1024.0);
        assert!(finite);
        let weight = |grads: &GradientsParams| grads.get::<2>(model.weight.id).unwrap().into_data();
        assert_eq!(weight(&unscaled), weight(&plain));

        for bad in [f32::INFINITY, f32::NAN] {
            let overflow = GradientsParams::from_grads(loss().mul_scalar(bad).backward(), &model);
            assert!(
                !unscale_gradients(overflow, &model, 1.0).1,
                "{bad} not found"
            );
        }
    }

    /// The whole step: half-precision forward, scaled backward, f32 gradients on the master
    /// weights equal to the f32 step's to half precision; an overflowing loss gives no
    /// gradients and halves the scale.
    #[test]
    fn a_mixed_precision_step_gives_the_f32_gradients_or_skips() {
        let device = crate::cpu().autodiff();
        let model = linear(&device);
        let input = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.25]], &device);
        // A loss whose gradient, scaled by 2¹⁶, stays within f16's range (65504).
        let loss = |output: Tensor<2>| output.cast(FloatDType::F32).sum().mul_scalar(0.01);
        let f32_grads =
            GradientsParams::from_grads(loss(model.forward(input.clone())).backward(), &model);
        let mixed = MixedPrecision::new(Precision::F16).unwrap();
        let (grads, ()) = mixed.step(&model, |half| {
            (loss(half.forward(input.clone().cast(FloatDType::F16))), ())
        });
        let weight = grads
            .get::<2>(model.weight.id)
            .expect("a gradient for the weight");
        assert_eq!(weight.dtype(), burn::tensor::DType::F32);
        weight.into_data().assert_approx_eq::<f32>(
            &f32_grads.get::<2>(model.weight.id).unwrap().into_data(),
            burn::tensor::Tolerance::absolute(1e-3),
        );
        assert_eq!(mixed.scaler().scale(), LossScaler::INITIAL_SCALE);

        // A gradient of 70000 × 2¹⁶ overflows f16 in the backward pass.
        let (grads, ()) = mixed.step(&model, |half| {
            let output = half.forward(input.clone().cast(FloatDType::F16));
            (loss(output).mul_scalar(70000.0 * 100.0), ())
        });
        assert!(grads.is_empty(), "an overflowing step has no gradients");
        assert_eq!(mixed.scaler().scale(), LossScaler::INITIAL_SCALE / 2.0);
    }

    #[test]
    fn a_precision_the_device_lacks_is_named() {
        let err = TrainError::UnsupportedPrecision {
            precision: Precision::BF16,
            device: "Wgpu(Cpu)".into(),
        };
        assert_eq!(
            err.to_string(),
            "--precision: bf16 is not supported on Wgpu(Cpu); f32 is everywhere"
        );
        for (name, device) in normzoo_kernels::backend::test_devices() {
            for precision in [Precision::F32, Precision::F16, Precision::BF16] {
                let supported = device.supports_dtype(precision.float_dtype());
                assert_eq!(
                    precision.check(&device).is_ok(),
                    supported,
                    "{name} {precision}"
                );
            }
            assert!(Precision::F32.check(&device).is_ok(), "{name}");
        }
    }
}
