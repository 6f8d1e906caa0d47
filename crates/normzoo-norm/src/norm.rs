//! [`Norm`]: the normalizer a [`NormConfig`](crate::NormConfig) builds, for architectures
//! that let the user swap it.

use burn::module::{DisplaySettings, Module, ModuleDisplay, Param};
use burn::tensor::{DType, FloatDType, Tensor};

use crate::precision::{first_float_dtype, is_half};
use crate::{
    BatchNorm, GroupNorm, InstanceNorm, LayerNorm, LayerNorm2d, NormError, RmsNorm, StatsMode,
};

/// The identity: what [`NormConfig::None`](crate::NormConfig::None) builds.
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct Identity {
    /// The channel count the architecture asked for (kept for display).
    pub num_features: usize,
}

impl ModuleDisplay for Identity {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        crate::display::one_line_display()
    }
}

/// A normalizer chosen at run time, built by [`NormConfig::init`](crate::NormConfig::init).
///
/// [`forward`](Self::forward) takes the input in the layout the chosen layer takes: `[N, C, *]`
/// for batch, group and instance norm, `[N, C, H, W]` for `Layer2d`, channels last `[*, C]`
/// for `Layer` and `Rms`.
#[derive(Module, Debug)]
#[module(custom_display)]
#[allow(clippy::large_enum_variant)]
pub enum Norm {
    /// No normalization.
    Identity(Identity),
    /// Batch normalization.
    Batch(BatchNorm),
    /// Layer normalization over the last axis.
    Layer(LayerNorm),
    /// Channels-first layer normalization.
    Layer2d(LayerNorm2d),
    /// Group normalization.
    Group(GroupNorm),
    /// Instance normalization.
    Instance(InstanceNorm),
    /// Root-mean-square normalization over the last axis.
    Rms(RmsNorm),
}

impl Norm {
    /// Applies the chosen normalizer.
    ///
    /// # Shapes
    ///
    /// The chosen layer's; the output has the input's shape.
    ///
    /// # Panics
    ///
    /// With the chosen layer's message when the input does not fit it.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.try_forward(input)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// [`forward`](Self::forward), returning bad input as an error instead of panicking.
    ///
    /// A half-precision input (f16, bf16) to a normalizer whose parameters are f32, as
    /// [`cast_outside_normalizers`](crate::cast_outside_normalizers) leaves them for mixed
    /// precision (or one without parameters), is normalized in f32 and the output cast back
    /// to the input's precision: the statistics of a half-precision activation are taken in
    /// f32, as under PyTorch's `torch.autocast`.
    ///
    /// # Errors
    ///
    /// The chosen layer's [`NormError::InvalidInput`].
    pub fn try_forward<const D: usize>(&self, input: Tensor<D>) -> Result<Tensor<D>, NormError> {
        let dtype = input.dtype();
        if is_half(dtype)
            && !matches!(self, Self::Identity(_))
            && first_float_dtype(self).is_none_or(|params| params == DType::F32)
        {
            let output = self.forward_as_given(input.cast(FloatDType::F32))?;
            return Ok(output.cast(FloatDType::from(dtype)));
        }
        self.forward_as_given(input)
    }

    /// The chosen layer's forward pass, in the input's precision.
    fn forward_as_given<const D: usize>(&self, input: Tensor<D>) -> Result<Tensor<D>, NormError> {
        match self {
            Self::Identity(_) => Ok(input),
            Self::Batch(layer) => layer.try_forward(input),
            Self::Layer(layer) => layer.try_forward(input),
            Self::Layer2d(layer) => layer.try_forward(input),
            Self::Group(layer) => layer.try_forward(input),
            Self::Instance(layer) => layer.try_forward(input),
            Self::Rms(layer) => layer.try_forward(input),
        }
    }

    /// This normalizer with its scale `γ` set to `value` in every channel: PyTorch's
    /// `nn.init.constant_(norm.weight, value)`, e.g. 0 for the last normalizer of a residual
    /// branch (ResNet's `zero_init_residual`). A normalizer without `γ` is returned unchanged.
    pub fn with_scale(mut self, value: f32) -> Self {
        let gamma = match &mut self {
            Self::Identity(_) => return self,
            Self::Batch(layer) => &mut layer.gamma,
            Self::Layer(layer) => &mut layer.gamma,
            Self::Layer2d(layer) => &mut layer.gamma,
            Self::Group(layer) => &mut layer.gamma,
            Self::Instance(layer) => &mut layer.gamma,
            Self::Rms(layer) => &mut layer.gamma,
        };
        fill(gamma, value);
        self
    }

    /// This normalizer with its shift `β` set to `value` in every channel: PyTorch's
    /// `nn.init.constant_(norm.bias, value)`. A normalizer without `β` (RMSNorm, or one built
    /// without a bias) is returned unchanged.
    pub fn with_shift(mut self, value: f32) -> Self {
        let beta = match &mut self {
            Self::Identity(_) | Self::Rms(_) => return self,
            Self::Batch(layer) => &mut layer.beta,
            Self::Layer(layer) => &mut layer.beta,
            Self::Layer2d(layer) => &mut layer.beta,
            Self::Group(layer) => &mut layer.beta,
            Self::Instance(layer) => &mut layer.beta,
        };
        fill(beta, value);
        self
    }

    /// Forces train or eval behaviour on a layer with running statistics (batch and instance
    /// norm); the others behave the same in both and are returned unchanged.
    pub fn with_mode(self, mode: StatsMode) -> Self {
        match self {
            Self::Batch(layer) => Self::Batch(layer.with_mode(mode)),
            Self::Instance(layer) => Self::Instance(layer.with_mode(mode)),
            other => other,
        }
    }
}

/// Replaces a per-channel parameter, if there is one, with a fresh one holding `value` in every
/// channel (a fresh parameter: an optimizer's state for the old one does not carry over).
fn fill(param: &mut Option<Param<Tensor<1>>>, value: f32) {
    if let Some(old) = param.take() {
        let old = old.val();
        *param = Some(Param::from_tensor(Tensor::full(
            old.dims(),
            value,
            &old.device(),
        )));
    }
}

/// Shown as the layer it holds.
impl ModuleDisplay for Norm {
    fn format(&self, settings: DisplaySettings) -> String {
        match self {
            Self::Identity(layer) => layer.format(settings),
            Self::Batch(layer) => layer.format(settings),
            Self::Layer(layer) => layer.format(settings),
            Self::Layer2d(layer) => layer.format(settings),
            Self::Group(layer) => layer.format(settings),
            Self::Instance(layer) => layer.format(settings),
            Self::Rms(layer) => layer.format(settings),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NormConfig;
    use burn::tensor::Device;
    use burn::tensor::Distribution;
    use normzoo_kernels::backend::test_devices;

    #[test]
    fn every_kind_builds_and_normalizes_its_layout() {
        for (_, device) in test_devices() {
            let channels_first = Tensor::<4>::random([2, 8, 3, 3], Distribution::Default, &device);
            let channels_last = Tensor::<3>::random([2, 5, 8], Distribution::Default, &device);
            for name in NormConfig::NAMES {
                let config = match name.parse::<NormConfig>().unwrap() {
                    NormConfig::Group(_) => NormConfig::group(4),
                    other => other,
                };
                let layer = config.init(8, &device).unwrap().with_mode(StatsMode::Train);
                let changed = |input: Tensor<4>, output: Tensor<4>| {
                    assert_eq!(output.dims(), input.dims(), "{name}");
                    !input.all_close(output, None, Some(1e-3))
                };
                let changed = match config {
                    NormConfig::Layer(_) | NormConfig::Rms(_) => {
                        let out = layer.forward(channels_last.clone());
                        changed(channels_last.clone().unsqueeze(), out.unsqueeze())
                    }
                    _ => changed(
                        channels_first.clone(),
                        layer.forward(channels_first.clone()),
                    ),
                };
                // Only the identity leaves its input unchanged.
                assert_eq!(changed, name != "none", "{name}");
            }
        }
    }

    #[test]
    fn with_scale_sets_gamma_and_leaves_the_rest() {
        let device = Device::default();
        let norm = NormConfig::batch()
            .init(3, &device)
            .unwrap()
            .with_scale(0.0);
        let Norm::Batch(bn) = &norm else {
            unreachable!()
        };
        let gamma = bn.gamma.as_ref().unwrap().val().into_data();
        assert_eq!(gamma, burn::tensor::TensorData::from([0.0f32, 0.0, 0.0]));
        let output = norm
            .with_mode(StatsMode::Train)
            .forward(Tensor::<2>::ones([2, 3], &device));
        assert_eq!(output.abs().max().into_scalar::<f32>(), 0.0);
        let none = NormConfig::None.init(3, &device).unwrap().with_scale(0.0);
        assert!(matches!(none, Norm::Identity(_)));
    }

    #[test]
    fn with_shift_sets_beta_and_leaves_gamma() {
        let device = Device::default();
        let norm = NormConfig::layer()
            .init(3, &device)
            .unwrap()
            .with_shift(1.0);
        let Norm::Layer(ln) = &norm else {
            unreachable!()
        };
        let beta = ln.beta.as_ref().unwrap().val().into_data();
        assert_eq!(beta, burn::tensor::TensorData::from([1.0f32, 1.0, 1.0]));
        let gamma = ln.gamma.as_ref().unwrap().val().into_data();
        assert_eq!(gamma, burn::tensor::TensorData::from([1.0f32, 1.0, 1.0]));
        // A constant row normalizes to zero, so the output is the shift alone.
        let output = norm.forward(Tensor::<2>::ones([2, 3], &device));
        assert_eq!(
            output.into_data(),
            burn::tensor::TensorData::from([[1.0f32; 3]; 2])
        );
        let rms = NormConfig::rms().init(3, &device).unwrap().with_shift(1.0);
        assert!(matches!(rms, Norm::Rms(_)));
    }

    #[test]
    fn displays_as_the_layer_it_holds() {
        let device = Device::default();
        let norm = NormConfig::group(2).init(4, &device).unwrap();
        assert_eq!(
            format!("{norm}"),
            "GroupNorm {num_groups: 2, num_channels: 4, eps: 0.00001, affine: true, params: 8}"
        );
        let none = NormConfig::None.init(4, &device).unwrap();
        assert_eq!(format!("{none}"), "Identity {num_features: 4}");
    }
}
