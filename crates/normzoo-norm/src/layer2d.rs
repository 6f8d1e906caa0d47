//! Channels-first layer normalization, as ConvNeXt uses it.

use burn::config::Config;
use burn::module::{Content, DisplaySettings, Module, ModuleDisplay, Param};
use burn::tensor::{Device, Tensor};

use crate::error::{NormError, check, check_input};
use crate::stats::{init_affine, layer_normalize};

/// Configuration of a [`LayerNorm2d`] layer. The defaults are timm's and ConvNeXt's.
#[derive(Config, Debug, PartialEq)]
pub struct LayerNorm2dConfig {
    /// The number of channels `C` (axis 1). Must be greater than zero.
    pub num_channels: usize,
    /// Added to the variance before the square root. Finite and positive. Default: `1e-6`
    /// (ConvNeXt's value, not `LayerNorm`'s `1e-5`).
    #[config(default = 1e-6)]
    pub eps: f64,
    /// Whether the layer has a learnable per-channel scale `γ` (and shift `β`, see
    /// [`bias`](Self::bias)). Default: `true`.
    #[config(default = true)]
    pub affine: bool,
    /// Whether the layer has the learnable shift `β` (only with `affine`). Default: `true`.
    #[config(default = true)]
    pub bias: bool,
}

/// Layer normalization of `[N, C, H, W]` over the channels at every position: timm's
/// `LayerNorm2d` and the "channels_first" `LayerNorm` of ConvNeXt
/// ([Liu et al., 2022](https://arxiv.org/abs/2201.03545)). In PyTorch:
/// `F.layer_norm(x.permute(0, 2, 3, 1), (C,), weight, bias, eps).permute(0, 3, 1, 2)`.
///
/// `y[n, :, h, w] = (x[n, :, h, w] − mean) / sqrt(var + ε) · γ + β`
///
/// with the mean and biased variance over the `C` values at `(n, h, w)`.
///
/// # Example
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use normzoo_norm::LayerNorm2dConfig;
///
/// let device = Device::default();
/// let ln = LayerNorm2dConfig::new(16).init(&device)?;
/// let y = ln.forward(Tensor::<4>::ones([2, 16, 8, 8], &device));
/// assert_eq!(y.dims(), [2, 16, 8, 8]);
/// # Ok::<(), normzoo_norm::NormError>(())
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct LayerNorm2d {
    /// The learnable per-channel scale `γ` (timm's `weight`), `[C]`; `None` without affine.
    pub gamma: Option<Param<Tensor<1>>>,
    /// The learnable per-channel shift `β` (timm's `bias`), `[C]`; `None` without it.
    pub beta: Option<Param<Tensor<1>>>,
    /// The number of channels `C`.
    pub num_channels: usize,
    /// Added to the variance before the square root.
    pub eps: f64,
}

const LAYER: &str = "LayerNorm2d";

impl LayerNorm2dConfig {
    /// Builds a [`LayerNorm2d`] layer with `γ = 1` and `β = 0`.
    ///
    /// # Errors
    ///
    /// [`NormError::InvalidConfig`] when `num_channels` is zero or `eps` is not finite and
    /// positive.
    pub fn init(&self, device: &Device) -> Result<LayerNorm2d, NormError> {
        check::positive(LAYER, "num_channels", self.num_channels)?;
        check::epsilon(LAYER, self.eps)?;
        let (gamma, beta) = init_affine(
            self.affine,
            self.affine && self.bias,
            self.num_channels,
            device,
        );
        Ok(LayerNorm2d {
            gamma,
            beta,
            num_channels: self.num_channels,
            eps: self.eps,
        })
    }
}

impl LayerNorm2d {
    /// Normalizes over the channels at every position.
    ///
    /// # Shapes
    ///
    /// - `input`: `[N, C, H, W]`
    /// - output: `[N, C, H, W]`
    ///
    /// # Panics
    ///
    /// With the message of [`try_forward`](Self::try_forward)'s error when the input is not 4D
    /// or axis 1 is not `num_channels`.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        self.try_forward(input)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// [`forward`](Self::forward), returning bad input as an error instead of panicking.
    ///
    /// Generic over the rank so that callers holding a tensor of unknown rank (such as
    /// [`Norm`](crate::Norm)) get an error instead of a compile-time restriction.
    ///
    /// # Errors
    ///
    /// [`NormError::InvalidInput`] when the input is not 4D or axis 1 is not `num_channels`.
    pub fn try_forward<const D: usize>(&self, input: Tensor<D>) -> Result<Tensor<D>, NormError> {
        let dims = input.dims();
        check_input::rank(LAYER, &dims, 4..=4, "[N, C, H, W]")?;
        check_input::channels(LAYER, &dims, self.num_channels)?;
        // Where no kernel applies: channels last over the flattened pixels, `[N, H·W, C]`, then
        // layer normalization over the last axis, and channels first again. A single pixel is already channels last, so
        // it is only reshaped: burn 0.22.1's wgpu backend computes wrong gradients through
        // channels-last views that keep a size-1 axis (ConvNeXt's head normalizes pooled
        // `[N, C, 1, 1]` features), and `tests/backend_parity.rs` checks these shapes.
        let [n, c, pixels] = [dims[0], dims[1], dims[2] * dims[3]];
        let gamma = self.gamma.as_ref().map(Param::val);
        let beta = self.beta.as_ref().map(Param::val);
        // On flex in f32, one kernel reads the channels where they lie (see `fused`).
        let channels_first = input.clone().reshape([n, c, pixels]);
        if let Some(output) = normzoo_kernels::normalize_channels(
            &channels_first,
            gamma.clone(),
            beta.clone(),
            self.eps,
        ) {
            return Ok(output.reshape(dims));
        }
        let normalize = |x: Tensor<3>| layer_normalize(x, gamma.clone(), beta.clone(), self.eps);
        let output = if pixels == 1 {
            normalize(input.reshape([n, 1, c]))
        } else {
            normalize(input.reshape([n, c, pixels]).swap_dims(1, 2)).swap_dims(1, 2)
        };
        Ok(output.reshape(dims))
    }
}

impl ModuleDisplay for LayerNorm2d {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        crate::display::one_line_display()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("num_channels", &self.num_channels)
            .add("eps", &self.eps)
            .add("affine", &self.gamma.is_some())
            .add("bias", &self.beta.is_some())
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LayerNormConfig;
    use burn::tensor::{Distribution, Tolerance};
    use normzoo_kernels::backend::test_devices;

    /// The channels-first layer equals `LayerNorm([C])` applied to the channels-last input.
    #[test]
    fn equals_layer_norm_over_channels_last() {
        for (_, device) in test_devices() {
            let ln2d = LayerNorm2dConfig::new(6).init(&device).unwrap();
            let ln = LayerNormConfig::new(vec![6])
                .with_eps(1e-6)
                .init(&device)
                .unwrap();
            let x = Tensor::<4>::random([2, 6, 3, 5], Distribution::Normal(1.0, 2.0), &device);
            let expected = ln
                .forward(x.clone().permute([0, 2, 3, 1]))
                .permute([0, 3, 1, 2]);
            ln2d.forward(x)
                .into_data()
                .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-6));
        }
    }

    #[test]
    fn bad_input_is_refused() {
        let device = Device::default();
        let ln = LayerNorm2dConfig::new(6).init(&device).unwrap();
        assert_eq!(
            ln.try_forward(Tensor::<3>::ones([2, 6, 3], &device))
                .unwrap_err()
                .to_string(),
            "LayerNorm2d: expected a 4D input [N, C, H, W], got a 3D input of shape [2, 6, 3]"
        );
        assert_eq!(
            ln.try_forward(Tensor::<4>::ones([2, 5, 3, 3], &device))
                .unwrap_err()
                .to_string(),
            "LayerNorm2d: expected input with 6 channels at dim 1, got 5 channels in input of shape [2, 5, 3, 3]"
        );
        assert!(LayerNorm2dConfig::new(0).init(&device).is_err());
    }

    #[test]
    fn display_shows_hyper_parameters_and_parameter_count() {
        let ln = LayerNorm2dConfig::new(6).init(&Device::default()).unwrap();
        assert_eq!(
            format!("{ln}"),
            "LayerNorm2d {num_channels: 6, eps: 0.000001, affine: true, bias: true, params: 12}"
        );
    }
}
