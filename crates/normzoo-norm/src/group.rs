//! Group normalization.

use burn::config::Config;
use burn::module::{Content, DisplaySettings, Module, ModuleDisplay, Param};
use burn::tensor::{Device, Tensor};
use normzoo_kernels::Grouping;

use crate::error::{NormError, check, check_input};
use crate::stats::{init_affine, scale_shift, standardize};

/// Configuration of a [`GroupNorm`] layer. The defaults are PyTorch's.
#[derive(Config, Debug, PartialEq)]
pub struct GroupNormConfig {
    /// The number of groups `G` the channels are split into. Must divide `num_channels`.
    pub num_groups: usize,
    /// The number of channels `C` (axis 1). Must be greater than zero.
    pub num_channels: usize,
    /// Added to the variance before the square root. Finite and positive. Default: `1e-5`.
    #[config(default = 1e-5)]
    pub eps: f64,
    /// Whether the layer has a learnable per-channel scale `γ` and shift `β`. Default: `true`.
    #[config(default = true)]
    pub affine: bool,
}

/// Group normalization ([Wu & He, 2018](https://arxiv.org/abs/1803.08494)), PyTorch's
/// `torch.nn.GroupNorm`:
///
/// `y = (x − E[x]) / sqrt(Var[x] + ε) · γ + β`
///
/// with the mean and biased variance of each sample taken over each group of `C / G`
/// consecutive channels and every spatial position; `γ` and `β` are per channel. `G = 1` is
/// layer normalization over `[C, *]` with a per-channel affine; `G = C` is instance
/// normalization. No batch statistics: the same computation in training and evaluation.
///
/// # Example
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use normzoo_norm::GroupNormConfig;
///
/// let device = Device::default();
/// let gn = GroupNormConfig::new(4, 16).init(&device)?;
/// let y = gn.forward(Tensor::<4>::ones([2, 16, 8, 8], &device));
/// assert_eq!(y.dims(), [2, 16, 8, 8]);
/// # Ok::<(), normzoo_norm::NormError>(())
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct GroupNorm {
    /// The learnable per-channel scale `γ` (PyTorch's `weight`), `[C]`; `None` without affine.
    pub gamma: Option<Param<Tensor<1>>>,
    /// The learnable per-channel shift `β` (PyTorch's `bias`), `[C]`; `None` without affine.
    pub beta: Option<Param<Tensor<1>>>,
    /// The number of groups `G`.
    pub num_groups: usize,
    /// The number of channels `C`.
    pub num_channels: usize,
    /// Added to the variance before the square root.
    pub eps: f64,
}

const LAYER: &str = "GroupNorm";

impl GroupNormConfig {
    /// Builds a [`GroupNorm`] layer with `γ = 1` and `β = 0`, as PyTorch initializes them.
    ///
    /// # Errors
    ///
    /// [`NormError::InvalidConfig`] when a size is zero, `num_groups` does not divide
    /// `num_channels`, or `eps` is not finite and positive.
    pub fn init(&self, device: &Device) -> Result<GroupNorm, NormError> {
        check::positive(LAYER, "num_groups", self.num_groups)?;
        check::positive(LAYER, "num_channels", self.num_channels)?;
        if !self.num_channels.is_multiple_of(self.num_groups) {
            return Err(NormError::config(
                LAYER,
                format!(
                    "num_channels ({}) must be divisible by num_groups ({})",
                    self.num_channels, self.num_groups
                ),
            ));
        }
        check::epsilon(LAYER, self.eps)?;
        let (gamma, beta) = init_affine(self.affine, self.affine, self.num_channels, device);
        Ok(GroupNorm {
            gamma,
            beta,
            num_groups: self.num_groups,
            num_channels: self.num_channels,
            eps: self.eps,
        })
    }
}

impl GroupNorm {
    /// Normalizes each group of channels of each sample.
    ///
    /// # Shapes
    ///
    /// - `input`: `[N, C, *]` (rank 2 or more)
    /// - output: the same as `input`
    ///
    /// # Panics
    ///
    /// With the message of [`try_forward`](Self::try_forward)'s error when the rank is below 2
    /// or axis 1 is not `num_channels`.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.try_forward(input)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// [`forward`](Self::forward), returning bad input as an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`NormError::InvalidInput`] when the rank is below 2 or axis 1 is not `num_channels`.
    pub fn try_forward<const D: usize>(&self, input: Tensor<D>) -> Result<Tensor<D>, NormError> {
        let dims = input.dims();
        check_input::rank(LAYER, &dims, 2..=usize::MAX, "[N, C, *]")?;
        check_input::channels(LAYER, &dims, self.num_channels)?;
        let group_size = input.shape().num_elements() / (dims[0] * self.num_groups);
        let channels_per_group = self.num_channels / self.num_groups;
        let grouping = Grouping {
            groups: self.num_groups,
            channels_per_group,
            spatial: group_size / channels_per_group,
            center: true,
            eps: self.eps,
        };
        // [N·G, C/G · ∏ spatial]: each group's values are contiguous in a row.
        let rows = input.reshape([dims[0] * self.num_groups, group_size]);
        let gamma = self.gamma.as_ref().map(Param::val);
        let beta = self.beta.as_ref().map(Param::val);
        if let Some(output) =
            normzoo_kernels::normalize_rows(&rows, gamma.clone(), beta.clone(), grouping)
        {
            return Ok(output.reshape(dims));
        }
        let grouped = rows.reshape([dims[0], self.num_groups, group_size]);
        let normalized = standardize(grouped, self.eps).output.reshape(dims);
        Ok(scale_shift(normalized, gamma, beta, 1))
    }
}

impl ModuleDisplay for GroupNorm {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        crate::display::one_line_display()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("num_groups", &self.num_groups)
            .add("num_channels", &self.num_channels)
            .add("eps", &self.eps)
            .add("affine", &self.gamma.is_some())
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{DType, Distribution, Tolerance};
    use normzoo_kernels::backend::test_devices;

    #[test]
    fn config_errors_name_the_problem() {
        let device = Device::default();
        let err = |config: GroupNormConfig| config.init(&device).unwrap_err().to_string();
        assert_eq!(
            err(GroupNormConfig::new(4, 6)),
            "GroupNorm: num_channels (6) must be divisible by num_groups (4)"
        );
        assert_eq!(
            err(GroupNormConfig::new(0, 6)),
            "GroupNorm: num_groups must be greater than zero, got 0"
        );
        assert_eq!(
            err(GroupNormConfig::new(2, 0)),
            "GroupNorm: num_channels must be greater than zero, got 0"
        );
        assert!(err(GroupNormConfig::new(2, 6).with_eps(f64::NAN)).contains("eps must be finite"));
    }

    #[test]
    fn bad_input_is_refused() {
        let device = Device::default();
        let gn = GroupNormConfig::new(2, 6).init(&device).unwrap();
        assert_eq!(
            gn.try_forward(Tensor::<3>::ones([2, 4, 5], &device))
                .unwrap_err()
                .to_string(),
            "GroupNorm: expected input with 6 channels at dim 1, got 4 channels in input of shape [2, 4, 5]"
        );
        assert_eq!(
            gn.try_forward(Tensor::<1>::ones([6], &device))
                .unwrap_err()
                .to_string(),
            "GroupNorm: expected an input of rank 2 or more [N, C, *], got a 1D input of shape [6]"
        );
    }

    /// f16 input with 2¹⁶ values per group: the sum of squares overflows f16 (max 65504), so
    /// the statistics must be accumulated in f32. (burn-nn once returned NaN here.)
    #[test]
    fn half_precision_large_group_stays_finite_and_correct() {
        let half_devices: Vec<_> = test_devices()
            .into_iter()
            .map(|(_, device)| device)
            .filter(|device| device.supports_dtype(DType::F16))
            .collect();
        assert!(!half_devices.is_empty(), "no compiled backend runs f16");
        for device in half_devices {
            let gn = GroupNormConfig::new(1, 4)
                .with_affine(false)
                .init(&device)
                .unwrap();
            let x = Tensor::<3>::random([1, 4, 1 << 14], Distribution::Normal(3.0, 2.0), &device);
            let expected = gn.forward(x.clone());
            let half = gn.forward(x.cast(DType::F16));
            assert_eq!(half.dtype(), DType::F16);
            half.cast(DType::F32)
                .into_data()
                .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-2));
        }
    }

    #[test]
    fn display_shows_hyper_parameters_and_parameter_count() {
        let gn = GroupNormConfig::new(3, 6).init(&Device::default()).unwrap();
        assert_eq!(
            format!("{gn}"),
            "GroupNorm {num_groups: 3, num_channels: 6, eps: 0.00001, affine: true, params: 12}"
        );
    }
}
