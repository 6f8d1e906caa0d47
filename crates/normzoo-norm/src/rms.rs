//! Root-mean-square normalization over the last `k` axes.

use burn::config::Config;
use burn::module::{Content, DisplaySettings, Module, ModuleDisplay, Param};
use burn::tensor::{DType, Device, Tensor};
use normzoo_kernels::Grouping;

use crate::error::{NormError, check, check_input};
use crate::stats::{init_affine, rms_normalize, scale_shift};

/// Configuration of an [`RmsNorm`] layer. The defaults are PyTorch's.
#[derive(Config, Debug, PartialEq)]
pub struct RmsNormConfig {
    /// The trailing shape each sample is normalized over, e.g. `[d_model]`. Non-empty, every
    /// size greater than zero.
    pub normalized_shape: Vec<usize>,
    /// Added to the mean square before the square root. `None` takes the machine epsilon of the
    /// precision the statistic is computed in (f32 for f16, bf16 and f32 inputs, as PyTorch's
    /// `opmath` type: `1.1920929e-7`). Default: `None`.
    #[config(default = "None")]
    pub eps: Option<f64>,
    /// Whether the layer has a learnable element-wise scale `γ`. Default: `true`.
    #[config(default = true)]
    pub elementwise_affine: bool,
}

/// Root-mean-square normalization ([Zhang & Sennrich, 2019](https://arxiv.org/abs/1910.07467)),
/// PyTorch's `torch.nn.RMSNorm`:
///
/// `y = x / sqrt(mean(x²) + ε) · γ`
///
/// with the mean over the last `normalized_shape.len()` axes of each sample. No centering and
/// no shift. `γ` is stored flattened, `[∏ normalized_shape]`.
///
/// # Example
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use normzoo_norm::RmsNormConfig;
///
/// let device = Device::default();
/// let rms = RmsNormConfig::new(vec![8]).init(&device)?;
/// let y = rms.forward(Tensor::<3>::ones([2, 5, 8], &device));
/// assert_eq!(y.dims(), [2, 5, 8]);
/// # Ok::<(), normzoo_norm::NormError>(())
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct RmsNorm {
    /// The learnable scale `γ` (PyTorch's `weight`), flattened; `None` without
    /// `elementwise_affine`.
    pub gamma: Option<Param<Tensor<1>>>,
    /// The trailing shape normalized over.
    #[module(skip)]
    pub normalized_shape: Vec<usize>,
    /// Added to the mean square; `None` for the machine epsilon.
    #[module(skip)]
    pub eps: Option<f64>,
}

const LAYER: &str = "RmsNorm";

impl RmsNormConfig {
    /// Builds an [`RmsNorm`] layer with `γ = 1`, as PyTorch initializes it.
    ///
    /// # Errors
    ///
    /// [`NormError::InvalidConfig`] when `normalized_shape` is empty or holds a zero, or `eps`
    /// is given and not finite and positive.
    pub fn init(&self, device: &Device) -> Result<RmsNorm, NormError> {
        check::shape(LAYER, "normalized_shape", &self.normalized_shape)?;
        if let Some(eps) = self.eps {
            check::epsilon(LAYER, eps)?;
        }
        let width = self.normalized_shape.iter().product();
        let (gamma, _) = init_affine(self.elementwise_affine, false, width, device);
        Ok(RmsNorm {
            gamma,
            normalized_shape: self.normalized_shape.clone(),
            eps: self.eps,
        })
    }
}

impl RmsNorm {
    /// Normalizes each sample over the last `normalized_shape.len()` axes.
    ///
    /// # Shapes
    ///
    /// - `input`: `[*, normalized_shape…]`
    /// - output: the same as `input`
    ///
    /// # Panics
    ///
    /// With the message of [`try_forward`](Self::try_forward)'s error when the input's trailing
    /// axes are not `normalized_shape`.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.try_forward(input)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// [`forward`](Self::forward), returning bad input as an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`NormError::InvalidInput`] when the input's trailing axes are not `normalized_shape`.
    pub fn try_forward<const D: usize>(&self, input: Tensor<D>) -> Result<Tensor<D>, NormError> {
        let dims = input.dims();
        check_input::trailing(LAYER, &dims, &self.normalized_shape)?;
        let eps = self.eps.unwrap_or(match input.dtype() {
            DType::F64 => f64::EPSILON,
            _ => f32::EPSILON as f64,
        });
        let width: usize = self.normalized_shape.iter().product();
        let rows = input.shape().num_elements() / width;
        let gamma = self.gamma.as_ref().map(Param::val);
        let grouping = Grouping {
            groups: 1,
            channels_per_group: width,
            spatial: 1,
            center: false,
            eps,
        };
        let input = input.reshape([rows, width]);
        let scaled = normzoo_kernels::normalize_rows(&input, gamma.clone(), None, grouping)
            .unwrap_or_else(|| scale_shift(rms_normalize(input, eps), gamma, None, 1));
        Ok(scaled.reshape(dims))
    }
}

impl ModuleDisplay for RmsNorm {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        crate::display::one_line_display()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("normalized_shape", &format!("{:?}", self.normalized_shape))
            .add("eps", &format!("{:?}", self.eps))
            .add("elementwise_affine", &self.gamma.is_some())
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_config_and_input_are_refused() {
        let device = Device::default();
        assert!(RmsNormConfig::new(vec![]).init(&device).is_err());
        assert!(
            RmsNormConfig::new(vec![4])
                .with_eps(Some(0.0))
                .init(&device)
                .unwrap_err()
                .to_string()
                .contains("RmsNorm: eps must be finite and positive")
        );
        let rms = RmsNormConfig::new(vec![4]).init(&device).unwrap();
        assert_eq!(
            rms.try_forward(Tensor::<2>::ones([2, 3], &device))
                .unwrap_err()
                .to_string(),
            "RmsNorm: normalized_shape is [4], expected input with shape [*, 4], got input of shape [2, 3]"
        );
    }

    #[test]
    fn display_shows_hyper_parameters_and_parameter_count() {
        let rms = RmsNormConfig::new(vec![8])
            .init(&Device::default())
            .unwrap();
        assert_eq!(
            format!("{rms}"),
            "RmsNorm {normalized_shape: [8], eps: None, elementwise_affine: true, params: 8}"
        );
    }
}
