//! Instance normalization, for inputs of rank 3 to 5 (PyTorch's `InstanceNorm1d`, `2d`, `3d`).

use burn::config::Config;
use burn::module::{Content, DisplaySettings, Flag, Module, ModuleDisplay, Param, RunningState};
use burn::tensor::{Device, Tensor};
use normzoo_kernels::Grouping;

use crate::error::{NormError, check, check_input};
use crate::mode::StatsMode;
use crate::stats::{
    Blend, init_affine, init_running_stats, normalize_with_running_stats, scale_shift, standardize,
    unbiased, update_running,
};

/// Configuration of an [`InstanceNorm`] layer. The defaults are PyTorch's.
#[derive(Config, Debug, PartialEq)]
pub struct InstanceNormConfig {
    /// The number of channels `C` (axis 1). Must be greater than zero.
    pub num_features: usize,
    /// Added to the variance before the square root. Finite and positive. Default: `1e-5`.
    #[config(default = 1e-5)]
    pub eps: f64,
    /// How far the running statistics move towards each batch's statistics, in `[0, 1]`.
    /// `None` leaves them unchanged: PyTorch's InstanceNorm passes momentum 0 in that case (it
    /// has no cumulative average, unlike BatchNorm). Default: `Some(0.1)`.
    #[config(default = "Some(0.1)")]
    pub momentum: Option<f64>,
    /// Whether the layer has a learnable per-channel scale `γ` and shift `β`. Default: `false`.
    #[config(default = false)]
    pub affine: bool,
    /// Whether the layer keeps running statistics and evaluates with them. Default: `false`.
    #[config(default = false)]
    pub track_running_stats: bool,
    /// The number of spatial axes the input must have: `Some(1)` for `InstanceNorm1d`
    /// (`[N, C, L]`), `Some(2)` for `InstanceNorm2d` (`[N, C, H, W]`), `Some(3)` for
    /// `InstanceNorm3d` (`[N, C, D, H, W]`). `None` accepts any of them. PyTorch's classes also
    /// take an input without the batch axis; this layer always wants it. Default: `None`;
    /// [`new_1d`](Self::new_1d), [`new_2d`](Self::new_2d) and [`new_3d`](Self::new_3d) pin it.
    #[config(default = "None")]
    pub spatial_dims: Option<usize>,
}

/// PyTorch's `InstanceNorm1d` (input `[N, C, L]`): the same layer, built with
/// [`InstanceNormConfig::new_1d`] to refuse other ranks.
pub type InstanceNorm1d = InstanceNorm;
/// PyTorch's `InstanceNorm2d` (input `[N, C, H, W]`): the same layer, built with
/// [`InstanceNormConfig::new_2d`] to refuse other ranks (a 3D input is otherwise normalized as
/// `InstanceNorm1d` would, where PyTorch reads it as one unbatched image).
pub type InstanceNorm2d = InstanceNorm;
/// PyTorch's `InstanceNorm3d` (input `[N, C, D, H, W]`): the same layer, built with
/// [`InstanceNormConfig::new_3d`] to refuse other ranks.
pub type InstanceNorm3d = InstanceNorm;

/// Instance normalization ([Ulyanov et al., 2016](https://arxiv.org/abs/1607.08022)), with
/// exactly the semantics of PyTorch's `torch.nn.InstanceNorm1d/2d/3d`:
///
/// `y = (x − E[x]) / sqrt(Var[x] + ε) · γ + β`
///
/// with the mean and biased variance taken over the spatial axes of each channel of each sample.
///
/// With `track_running_stats`, training also moves `running_mean` and `running_var` towards the
/// batch average of the per-instance means and *unbiased* variances, and evaluation normalizes
/// with them, as PyTorch does; PyTorch never increments an InstanceNorm's
/// `num_batches_tracked`, and neither does this layer (the buffer exists so that checkpoints
/// have the same keys). Without `track_running_stats` both modes use the input's statistics.
/// The running statistics are updated as [`BatchNorm`](crate::BatchNorm)'s are: pending until
/// synced, and by the mean over devices in data-parallel training.
///
/// Unlike PyTorch, which only warns when `affine` is off, a channel count other than
/// `num_features` is an error.
///
/// # Example
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use normzoo_norm::InstanceNormConfig;
///
/// let device = Device::default();
/// let norm = InstanceNormConfig::new(3).init(&device)?;
/// let y = norm.forward(Tensor::<4>::ones([2, 3, 8, 8], &device));
/// assert_eq!(y.dims(), [2, 3, 8, 8]);
/// # Ok::<(), normzoo_norm::NormError>(())
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct InstanceNorm {
    /// The learnable per-channel scale `γ` (PyTorch's `weight`), `[C]`; `None` without affine.
    pub gamma: Option<Param<Tensor<1>>>,
    /// The learnable per-channel shift `β` (PyTorch's `bias`), `[C]`; `None` without affine.
    pub beta: Option<Param<Tensor<1>>>,
    /// The running mean, `[C]`, starting at 0; `None` without running statistics.
    pub running_mean: Option<RunningState<Tensor<1>>>,
    /// The running (unbiased) variance, `[C]`, starting at 1; `None` without running statistics.
    pub running_var: Option<RunningState<Tensor<1>>>,
    /// Always 0, as in PyTorch; `None` without running statistics.
    pub num_batches_tracked: Option<RunningState<Tensor<1>>>,
    /// burn's training flag: turned off by [`Module::valid`].
    pub training: Param<Flag>,
    /// Forces train or eval behaviour; see [`StatsMode`].
    #[module(skip)]
    pub mode: StatsMode,
    /// The number of channels `C`.
    pub num_features: usize,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// The running statistics' momentum; `None` leaves them unchanged.
    #[module(skip)]
    pub momentum: Option<f64>,
    /// The spatial axes the input must have (`InstanceNorm1d`, `2d`, `3d`), or `None` for any.
    #[module(skip)]
    pub spatial_dims: Option<usize>,
}

const LAYER: &str = "InstanceNorm";

impl InstanceNormConfig {
    /// PyTorch's `InstanceNorm1d(num_features)`: accepts `[N, C, L]` only.
    pub fn new_1d(num_features: usize) -> Self {
        Self::new(num_features).with_spatial_dims(Some(1))
    }

    /// PyTorch's `InstanceNorm2d(num_features)`: accepts `[N, C, H, W]` only.
    pub fn new_2d(num_features: usize) -> Self {
        Self::new(num_features).with_spatial_dims(Some(2))
    }

    /// PyTorch's `InstanceNorm3d(num_features)`: accepts `[N, C, D, H, W]` only.
    pub fn new_3d(num_features: usize) -> Self {
        Self::new(num_features).with_spatial_dims(Some(3))
    }

    /// Builds an [`InstanceNorm`] layer: `γ = 1`, `β = 0`, `running_mean = 0`,
    /// `running_var = 1`, as PyTorch initializes them.
    ///
    /// # Errors
    ///
    /// [`NormError::InvalidConfig`] when `num_features` is zero, `eps` is not finite and
    /// positive, `momentum` is outside `[0, 1]`, or `spatial_dims` is not 1, 2 or 3.
    pub fn init(&self, device: &Device) -> Result<InstanceNorm, NormError> {
        check::positive(LAYER, "num_features", self.num_features)?;
        check::epsilon(LAYER, self.eps)?;
        check::momentum(LAYER, self.momentum)?;
        check::spatial_dims(LAYER, self.spatial_dims)?;
        let (gamma, beta) = init_affine(self.affine, self.affine, self.num_features, device);
        let (running_mean, running_var, num_batches_tracked) =
            init_running_stats(self.track_running_stats, self.num_features, device);
        Ok(InstanceNorm {
            gamma,
            beta,
            running_mean,
            running_var,
            num_batches_tracked,
            training: Param::from_bool(true),
            mode: StatsMode::Auto,
            num_features: self.num_features,
            eps: self.eps,
            momentum: self.momentum,
            spatial_dims: self.spatial_dims,
        })
    }
}

impl InstanceNorm {
    /// Normalizes each channel of each sample over its spatial axes.
    ///
    /// # Shapes
    ///
    /// - `input`: `[N, C, L]`, `[N, C, H, W]` or `[N, C, D, H, W]`
    /// - output: the same as `input`
    ///
    /// # Panics
    ///
    /// With the message of [`try_forward`](Self::try_forward)'s error: when the rank is not 3
    /// to 5 (or not the one `spatial_dims` pins), axis 1 is not `num_features`, or the input's
    /// statistics are needed and there is one spatial element.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.try_forward(input)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// [`forward`](Self::forward), returning bad input as an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`NormError::InvalidInput`] for a rank outside 3 to 5, a rank other than the one
    /// `spatial_dims` pins (`InstanceNorm2d`: "expected 4D input (got 3D input)"), a channel
    /// count other than `num_features`, or a single spatial element when the input's statistics
    /// are needed (PyTorch: "Expected more than 1 spatial element when training").
    pub fn try_forward<const D: usize>(&self, input: Tensor<D>) -> Result<Tensor<D>, NormError> {
        let dims = input.dims();
        check_input::rank(LAYER, &dims, 3..=5, "[N, C, *]")?;
        match self.spatial_dims {
            None => {}
            Some(1) => check_input::pinned_rank("InstanceNorm1d", D, &[3])?,
            Some(2) => check_input::pinned_rank("InstanceNorm2d", D, &[4])?,
            Some(_) => check_input::pinned_rank("InstanceNorm3d", D, &[5])?,
        }
        check_input::channels(LAYER, &dims, self.num_features)?;

        let training = self.is_training(&input.device());
        if !(training || self.running_mean.is_none()) {
            return Ok(normalize_with_running_stats(
                input,
                &self.gamma,
                &self.beta,
                &self.running_mean,
                &self.running_var,
                self.eps,
            ));
        }
        let spatial: usize = dims[2..].iter().product();
        if spatial <= 1 {
            return Err(NormError::input(
                LAYER,
                format!(
                    "Expected more than 1 spatial element when training, got input size {dims:?}"
                ),
            ));
        }
        let gamma = self.gamma.as_ref().map(Param::val);
        let beta = self.beta.as_ref().map(Param::val);
        // [N·C, ∏ spatial]: each instance's values are contiguous in a row. The fused kernel
        // keeps no statistics, so a training step that updates running ones composes.
        let rows = input.reshape([dims[0] * dims[1], spatial]);
        let grouping = Grouping {
            groups: dims[1],
            channels_per_group: 1,
            spatial,
            center: true,
            eps: self.eps,
        };
        if !(training && self.running_mean.is_some())
            && let Some(output) =
                normzoo_kernels::normalize_rows(&rows, gamma.clone(), beta.clone(), grouping)
        {
            return Ok(output.reshape(dims));
        }
        let standardized = standardize(rows.reshape([dims[0], dims[1], spatial]), self.eps);
        if training {
            self.update_running_stats(standardized.mean, standardized.var, spatial);
        }
        Ok(scale_shift(
            standardized.output.reshape(dims),
            gamma,
            beta,
            1,
        ))
    }

    /// This layer with its train/eval behaviour forced (or returned to burn's convention with
    /// [`StatsMode::Auto`]).
    pub fn with_mode(mut self, mode: StatsMode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether a forward pass on `device` takes the training path.
    pub fn is_training(&self, device: &Device) -> bool {
        self.mode.is_training(&self.training, device)
    }

    /// PyTorch blends each instance's statistics into a per-instance copy of the running
    /// statistics and then averages the copies over the batch; with one momentum for all, that
    /// is blending in the batch average of the per-instance statistics.
    fn update_running_stats(&self, mean: Tensor<3>, biased_var: Tensor<3>, spatial: usize) {
        let (Some(running_mean), Some(running_var), Some(momentum)) =
            (&self.running_mean, &self.running_var, self.momentum)
        else {
            return;
        };
        let [_, channels, _] = mean.dims();
        let batch_average = |stat: Tensor<3>| stat.mean_dim(0).reshape([channels]);
        let blend = Blend::Momentum(momentum);
        update_running(running_mean, batch_average(mean), &blend);
        update_running(
            running_var,
            unbiased(batch_average(biased_var), spatial),
            &blend,
        );
    }
}

impl ModuleDisplay for InstanceNorm {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        crate::display::one_line_display()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("num_features", &self.num_features)
            .add("eps", &self.eps)
            .add("momentum", &format!("{:?}", self.momentum))
            .add("affine", &self.gamma.is_some())
            .add("track_running_stats", &self.running_mean.is_some())
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use normzoo_kernels::backend::test_devices;

    /// `new_1d`, `new_2d` and `new_3d` refuse the other ranks; the plain config takes any.
    #[test]
    fn pinned_ranks_are_refused_clearly() {
        let device = Device::default();
        let norm = |config: InstanceNormConfig| config.init(&device).unwrap();
        let in2d = norm(InstanceNormConfig::new_2d(3));
        assert_eq!(
            in2d.try_forward(Tensor::<3>::ones([2, 3, 5], &device))
                .unwrap_err()
                .to_string(),
            "InstanceNorm2d: expected 4D input (got 3D input)"
        );
        assert!(
            in2d.try_forward(Tensor::<4>::ones([2, 3, 4, 4], &device))
                .is_ok()
        );
        let in1d = norm(InstanceNormConfig::new_1d(3));
        assert!(
            in1d.try_forward(Tensor::<3>::ones([2, 3, 5], &device))
                .is_ok()
        );
        assert_eq!(
            in1d.try_forward(Tensor::<4>::ones([2, 3, 4, 4], &device))
                .unwrap_err()
                .to_string(),
            "InstanceNorm1d: expected 3D input (got 4D input)"
        );
        let in3d = norm(InstanceNormConfig::new_3d(3));
        assert!(
            in3d.try_forward(Tensor::<5>::ones([2, 3, 2, 2, 2], &device))
                .is_ok()
        );
        assert_eq!(
            in3d.try_forward(Tensor::<4>::ones([2, 3, 4, 4], &device))
                .unwrap_err()
                .to_string(),
            "InstanceNorm3d: expected 5D input (got 4D input)"
        );
        let any = norm(InstanceNormConfig::new(3));
        assert!(
            any.try_forward(Tensor::<3>::ones([2, 3, 5], &device))
                .is_ok()
        );
        assert!(
            any.try_forward(Tensor::<5>::ones([2, 3, 2, 2, 2], &device))
                .is_ok()
        );
        let err = InstanceNormConfig::new(3)
            .with_spatial_dims(Some(0))
            .init(&device)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "InstanceNorm: spatial_dims must be 1, 2 or 3 (or None for any), got 0"
        );
    }

    #[test]
    fn bad_input_is_refused() {
        let device = Device::default();
        let norm = InstanceNormConfig::new(3).init(&device).unwrap();
        assert_eq!(
            norm.try_forward(Tensor::<2>::ones([2, 3], &device))
                .unwrap_err()
                .to_string(),
            "InstanceNorm: expected a 3D to 5D input [N, C, *], got a 2D input of shape [2, 3]"
        );
        assert_eq!(
            norm.try_forward(Tensor::<3>::ones([2, 4, 5], &device))
                .unwrap_err()
                .to_string(),
            "InstanceNorm: expected input with 3 channels at dim 1, got 4 channels in input of shape [2, 4, 5]"
        );
    }

    #[test]
    fn one_spatial_element_is_refused_when_input_statistics_are_needed() {
        for (_, device) in test_devices() {
            let norm = InstanceNormConfig::new(3).init(&device).unwrap();
            assert_eq!(
                norm.try_forward(Tensor::<4>::ones([2, 3, 1, 1], &device))
                    .unwrap_err()
                    .to_string(),
                "InstanceNorm: Expected more than 1 spatial element when training, got input size [2, 3, 1, 1]"
            );
            let tracked = InstanceNormConfig::new(3)
                .with_track_running_stats(true)
                .init(&device)
                .unwrap()
                .with_mode(StatsMode::Eval);
            assert!(
                tracked
                    .try_forward(Tensor::<4>::ones([2, 3, 1, 1], &device))
                    .is_ok()
            );
        }
    }

    #[test]
    fn config_errors_name_the_problem() {
        let device = Device::default();
        assert_eq!(
            InstanceNormConfig::new(0)
                .init(&device)
                .unwrap_err()
                .to_string(),
            "InstanceNorm: num_features must be greater than zero, got 0"
        );
        assert!(
            InstanceNormConfig::new(3)
                .with_momentum(Some(2.0))
                .init(&device)
                .unwrap_err()
                .to_string()
                .contains("momentum must be within [0, 1]")
        );
    }

    #[test]
    fn display_shows_hyper_parameters_and_parameter_count() {
        let norm = InstanceNormConfig::new(3)
            .with_affine(true)
            .init(&Device::default())
            .unwrap();
        assert_eq!(
            format!("{norm}"),
            "InstanceNorm {num_features: 3, eps: 0.00001, momentum: Some(0.1), affine: true, track_running_stats: false, params: 6}"
        );
    }
}
