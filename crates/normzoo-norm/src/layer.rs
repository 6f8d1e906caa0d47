//! Layer normalization over the last `k` axes.

use burn::config::Config;
use burn::module::{Content, DisplaySettings, Module, ModuleDisplay, Param};
use burn::tensor::{Device, Tensor};
use normzoo_kernels::Grouping;

use crate::error::{NormError, check, check_input};
use crate::stats::{init_affine, layer_normalize};

/// Configuration of a [`LayerNorm`] layer. The defaults are PyTorch's.
#[derive(Config, Debug, PartialEq)]
pub struct LayerNormConfig {
    /// The trailing shape each sample is normalized over, e.g. `[d_model]` or `[C, H, W]`.
    /// Non-empty, every size greater than zero.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance before the square root. Finite and positive. Default: `1e-5`.
    #[config(default = 1e-5)]
    pub eps: f64,
    /// Whether the layer has a learnable element-wise scale `γ` (and shift `β`, see
    /// [`bias`](Self::bias)). Default: `true`.
    #[config(default = true)]
    pub elementwise_affine: bool,
    /// Whether the layer has the learnable shift `β` (only with `elementwise_affine`).
    /// Default: `true`.
    #[config(default = true)]
    pub bias: bool,
}

/// Layer normalization ([Ba, Kiros & Hinton, 2016](https://arxiv.org/abs/1607.06450)), PyTorch's
/// `torch.nn.LayerNorm`:
///
/// `y = (x − E[x]) / sqrt(Var[x] + ε) · γ + β`
///
/// with the mean and the biased variance of each sample taken over the last
/// `normalized_shape.len()` axes. The same computation in training and evaluation.
///
/// `γ` and `β` are stored flattened, `[∏ normalized_shape]`; PyTorch shapes them like
/// `normalized_shape` (the same values, row-major), which matters only when loading a
/// checkpoint with a multi-axis `normalized_shape`.
///
/// # Example
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use normzoo_norm::LayerNormConfig;
///
/// let device = Device::default();
/// let ln = LayerNormConfig::new(vec![8]).init(&device)?;
/// let y = ln.forward(Tensor::<3>::ones([2, 5, 8], &device));
/// assert_eq!(y.dims(), [2, 5, 8]);
/// # Ok::<(), normzoo_norm::NormError>(())
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct LayerNorm {
    /// The learnable scale `γ` (PyTorch's `weight`), flattened; `None` without
    /// `elementwise_affine`.
    pub gamma: Option<Param<Tensor<1>>>,
    /// The learnable shift `β` (PyTorch's `bias`), flattened; `None` without it.
    pub beta: Option<Param<Tensor<1>>>,
    /// The trailing shape normalized over.
    #[module(skip)]
    pub normalized_shape: Vec<usize>,
    /// Added to the variance before the square root.
    pub eps: f64,
}

const LAYER: &str = "LayerNorm";

impl LayerNormConfig {
    /// Builds a [`LayerNorm`] layer with `γ = 1` and `β = 0`, as PyTorch initializes them.
    ///
    /// # Errors
    ///
    /// [`NormError::InvalidConfig`] when `normalized_shape` is empty or holds a zero, or `eps`
    /// is not finite and positive.
    pub fn init(&self, device: &Device) -> Result<LayerNorm, NormError> {
        check::shape(LAYER, "normalized_shape", &self.normalized_shape)?;
        check::epsilon(LAYER, self.eps)?;
        let width = self.normalized_shape.iter().product();
        let affine = self.elementwise_affine;
        let (gamma, beta) = init_affine(affine, affine && self.bias, width, device);
        Ok(LayerNorm {
            gamma,
            beta,
            normalized_shape: self.normalized_shape.clone(),
            eps: self.eps,
        })
    }
}

impl LayerNorm {
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
        // Flatten to [samples, ∏ normalized_shape] so one fused op covers any k.
        let width: usize = self.normalized_shape.iter().product();
        let rows = input.shape().num_elements() / width;
        let gamma = self.gamma.as_ref().map(Param::val);
        let beta = self.beta.as_ref().map(Param::val);
        let grouping = Grouping {
            groups: 1,
            channels_per_group: width,
            spatial: 1,
            center: true,
            eps: self.eps,
        };
        let input = input.reshape([rows, width]);
        let output = normzoo_kernels::normalize_rows(&input, gamma.clone(), beta.clone(), grouping)
            .unwrap_or_else(|| layer_normalize(input, gamma, beta, self.eps));
        Ok(output.reshape(dims))
    }
}

impl ModuleDisplay for LayerNorm {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        crate::display::one_line_display()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("normalized_shape", &format!("{:?}", self.normalized_shape))
            .add("eps", &self.eps)
            .add("elementwise_affine", &self.gamma.is_some())
            .add("bias", &self.beta.is_some())
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData, Tolerance};
    use normzoo_kernels::backend::test_devices;

    #[test]
    fn config_errors_name_the_problem() {
        let device = Device::default();
        let err = |config: LayerNormConfig| config.init(&device).unwrap_err().to_string();
        assert_eq!(
            err(LayerNormConfig::new(vec![])),
            "LayerNorm: normalized_shape must be non-empty with every size greater than zero, got []"
        );
        assert!(err(LayerNormConfig::new(vec![4, 0])).contains("got [4, 0]"));
        assert!(
            err(LayerNormConfig::new(vec![4]).with_eps(-1.0))
                .contains("eps must be finite and positive, got -1")
        );
    }

    #[test]
    fn wrong_trailing_shape_is_refused() {
        let device = Device::default();
        let ln = LayerNormConfig::new(vec![10]).init(&device).unwrap();
        let err = ln
            .try_forward(Tensor::<2>::ones([2, 3], &device))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "LayerNorm: normalized_shape is [10], expected input with shape [*, 10], got input of shape [2, 3]"
        );
    }

    /// An input with mean 1e4 and std 0.1: `E[x²] − E[x]²` in f32 loses every digit of the
    /// variance; the statistics used here must not.
    #[test]
    fn large_mean_keeps_its_variance() {
        for (_, device) in test_devices() {
            let ln = LayerNormConfig::new(vec![256]).init(&device).unwrap();
            let noise = Tensor::<2>::random([4, 256], Distribution::Normal(0.0, 0.1), &device);
            let reference = ln.forward(noise.clone());
            let shifted = ln.forward(noise.add_scalar(1e4));
            // f32 spacing at 1e4 is 1e-3, i.e. 1% of the std: the inputs themselves carry
            // that error, so the outputs agree to about 1e-2, not 1e-5.
            shifted
                .into_data()
                .assert_approx_eq::<f32>(&reference.into_data(), Tolerance::absolute(3e-2));
        }
    }

    #[test]
    fn display_shows_hyper_parameters_and_parameter_count() {
        let ln = LayerNormConfig::new(vec![4, 3])
            .with_bias(false)
            .init(&Device::default())
            .unwrap();
        assert_eq!(
            format!("{ln}"),
            "LayerNorm {normalized_shape: [4, 3], eps: 0.00001, elementwise_affine: true, bias: false, params: 12}"
        );
    }

    #[test]
    fn output_has_zero_mean_and_unit_variance_per_sample() {
        for (_, device) in test_devices() {
            let ln = LayerNormConfig::new(vec![3, 4]).init(&device).unwrap();
            let x = Tensor::<3>::random([2, 3, 4], Distribution::Normal(5.0, 3.0), &device);
            let y = ln.forward(x).reshape([2, 12]);
            let (var, mean) = y.var_mean_bias(1);
            mean.into_data().assert_approx_eq::<f32>(
                &TensorData::zeros::<f32, _>([2, 1]),
                Tolerance::absolute(1e-5),
            );
            var.into_data().assert_approx_eq::<f32>(
                &TensorData::from([[1.0f32], [1.0]]),
                Tolerance::absolute(1e-4),
            );
        }
    }
}
