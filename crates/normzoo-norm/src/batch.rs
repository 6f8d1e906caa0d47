//! Batch normalization, for inputs of rank 2 to 5 (PyTorch's `BatchNorm1d`, `2d` and `3d`).

use burn::config::Config;
use burn::module::{Content, DisplaySettings, Flag, Module, ModuleDisplay, Param, RunningState};
use burn::tensor::{Device, Tensor};

use crate::error::{NormError, check, check_input};
use crate::mode::StatsMode;
use crate::stats::{
    Blend, batch_normalize, init_affine, init_running_stats, normalize_with_running_stats,
    params_or_identity, unbiased, update_running,
};

/// Configuration of a [`BatchNorm`] layer. The defaults are PyTorch's.
#[derive(Config, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// The number of channels `C` (axis 1 of the input). Must be greater than zero.
    pub num_features: usize,
    /// Added to the variance before the square root. Finite and positive. Default: `1e-5`.
    #[config(default = 1e-5)]
    pub eps: f64,
    /// How far the running statistics move towards each batch's statistics, in `[0, 1]`:
    /// `running = (1 − momentum)·running + momentum·batch`. `None` takes the cumulative moving
    /// average instead (factor `1 / num_batches_tracked`). Default: `Some(0.1)`.
    #[config(default = "Some(0.1)")]
    pub momentum: Option<f64>,
    /// Whether the layer has a learnable per-channel scale `γ` and shift `β`. Default: `true`.
    #[config(default = true)]
    pub affine: bool,
    /// Whether the layer keeps running statistics for evaluation. Without them it normalizes
    /// with the batch's statistics in evaluation too. Default: `true`.
    #[config(default = true)]
    pub track_running_stats: bool,
    /// The number of spatial axes the input must have, as PyTorch's classes check it: `Some(1)`
    /// for `BatchNorm1d` (`[N, C]` or `[N, C, L]`), `Some(2)` for `BatchNorm2d`
    /// (`[N, C, H, W]`), `Some(3)` for `BatchNorm3d` (`[N, C, D, H, W]`). `None` accepts any of
    /// them. Default: `None`; [`new_1d`](Self::new_1d), [`new_2d`](Self::new_2d) and
    /// [`new_3d`](Self::new_3d) pin it.
    #[config(default = "None")]
    pub spatial_dims: Option<usize>,
}

/// PyTorch's `BatchNorm1d` (input `[N, C]` or `[N, C, L]`): the same layer, built with
/// [`BatchNormConfig::new_1d`] to refuse other ranks as PyTorch does.
pub type BatchNorm1d = BatchNorm;
/// PyTorch's `BatchNorm2d` (input `[N, C, H, W]`): the same layer, built with
/// [`BatchNormConfig::new_2d`] to refuse other ranks as PyTorch does (a 3D input is otherwise
/// normalized as `BatchNorm1d` would).
pub type BatchNorm2d = BatchNorm;
/// PyTorch's `BatchNorm3d` (input `[N, C, D, H, W]`): the same layer, built with
/// [`BatchNormConfig::new_3d`] to refuse other ranks as PyTorch does.
pub type BatchNorm3d = BatchNorm;

/// Batch normalization ([Ioffe & Szegedy, 2015](https://arxiv.org/abs/1502.03167)), with
/// exactly the semantics of PyTorch's `torch.nn.BatchNorm1d/2d/3d`:
///
/// `y = (x − E[x]) / sqrt(Var[x] + ε) · γ + β`
///
/// with the statistics taken per channel over the batch and every spatial position (every axis
/// but axis 1).
///
/// - **Training** normalizes with the batch mean and the *biased* batch variance, and moves the
///   running statistics towards the batch mean and the *unbiased* batch variance (`·n/(n−1)`),
///   as PyTorch does. (burn-nn's own `BatchNorm` stores the biased one: its running variance
///   differs from PyTorch's by a factor `(n−1)/n`.) `num_batches_tracked` counts the updates.
/// - **Evaluation** normalizes with `running_mean` and `running_var`, or with the batch's
///   statistics when `track_running_stats` is off.
/// - Which of the two runs is decided by [`StatsMode`]: by default burn's convention (train on an
///   autodiff device unless [`valid`](Module::valid) turned the training flag off).
/// - A training step's update of the running statistics stays pending in burn's
///   [`RunningState`] until the next step, [`valid`](Module::valid) or
///   [`train`](Module::train) syncs it, as in burn-nn: save `model.valid()` (burn-train's
///   checkpoints do) to keep the last step's.
/// - **Data-parallel** (burn-train's multi-device training, the layer shared by one thread per
///   device): each device normalizes its own batch with that batch's statistics (PyTorch's
///   `BatchNorm2d` under DDP, not `SyncBatchNorm`), and at every step the running statistics
///   move by the mean of the devices' batch statistics, whichever device finishes first;
///   `num_batches_tracked` counts steps.
///
/// Field names follow burn-nn (`gamma`, `beta`, `running_mean`, `running_var`), so burn-store's
/// PyTorch adapter maps `weight`/`bias` onto this struct without a remap table.
///
/// # Example
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use normzoo_norm::{BatchNormConfig, StatsMode};
///
/// let device = Device::default();
/// let bn = BatchNormConfig::new(3).init(&device)?.with_mode(StatsMode::Train);
/// let y = bn.forward(Tensor::<4>::ones([2, 3, 4, 4], &device));
/// assert_eq!(y.dims(), [2, 3, 4, 4]);
/// # Ok::<(), normzoo_norm::NormError>(())
/// ```
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct BatchNorm {
    /// The learnable per-channel scale `γ` (PyTorch's `weight`), `[C]`; `None` without affine.
    pub gamma: Option<Param<Tensor<1>>>,
    /// The learnable per-channel shift `β` (PyTorch's `bias`), `[C]`; `None` without affine.
    pub beta: Option<Param<Tensor<1>>>,
    /// The running mean, `[C]`, starting at 0; `None` without running statistics.
    pub running_mean: Option<RunningState<Tensor<1>>>,
    /// The running (unbiased) variance, `[C]`, starting at 1; `None` without running statistics.
    pub running_var: Option<RunningState<Tensor<1>>>,
    /// How many training batches updated the running statistics, `[1]`. Held as a float (burn
    /// keeps running state in float tensors); exact up to 2²⁴ batches.
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
    /// The running statistics' momentum; `None` for a cumulative moving average.
    #[module(skip)]
    pub momentum: Option<f64>,
    /// The spatial axes the input must have (`BatchNorm1d`, `2d`, `3d`), or `None` for any.
    #[module(skip)]
    pub spatial_dims: Option<usize>,
}

impl BatchNormConfig {
    /// PyTorch's `BatchNorm1d(num_features)`: accepts `[N, C]` and `[N, C, L]` only.
    pub fn new_1d(num_features: usize) -> Self {
        Self::new(num_features).with_spatial_dims(Some(1))
    }

    /// PyTorch's `BatchNorm2d(num_features)`: accepts `[N, C, H, W]` only.
    pub fn new_2d(num_features: usize) -> Self {
        Self::new(num_features).with_spatial_dims(Some(2))
    }

    /// PyTorch's `BatchNorm3d(num_features)`: accepts `[N, C, D, H, W]` only.
    pub fn new_3d(num_features: usize) -> Self {
        Self::new(num_features).with_spatial_dims(Some(3))
    }

    /// Builds a [`BatchNorm`] layer: `γ = 1`, `β = 0`, `running_mean = 0`, `running_var = 1`,
    /// `num_batches_tracked = 0`, as PyTorch initializes them.
    ///
    /// # Errors
    ///
    /// [`NormError::InvalidConfig`] when `num_features` is zero, `eps` is not finite and
    /// positive, `momentum` is outside `[0, 1]`, or `spatial_dims` is not 1, 2 or 3.
    pub fn init(&self, device: &Device) -> Result<BatchNorm, NormError> {
        check::positive(LAYER, "num_features", self.num_features)?;
        check::epsilon(LAYER, self.eps)?;
        check::momentum(LAYER, self.momentum)?;
        check::spatial_dims(LAYER, self.spatial_dims)?;

        let (gamma, beta) = init_affine(self.affine, self.affine, self.num_features, device);
        let (running_mean, running_var, num_batches_tracked) =
            init_running_stats(self.track_running_stats, self.num_features, device);
        Ok(BatchNorm {
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

const LAYER: &str = "BatchNorm";

impl BatchNorm {
    /// Normalizes `input` per channel.
    ///
    /// # Shapes
    ///
    /// - `input`: `[N, C]`, `[N, C, L]`, `[N, C, H, W]` or `[N, C, D, H, W]`
    /// - output: the same as `input`
    ///
    /// # Panics
    ///
    /// With the message of [`try_forward`](Self::try_forward)'s error: when the rank is not 2 to
    /// 5 (or not the one `spatial_dims` pins), axis 1 is not `num_features`, or batch statistics
    /// are needed and there is only one value per channel.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.try_forward(input)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// [`forward`](Self::forward), returning bad input as an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`NormError::InvalidInput`] for a rank outside 2 to 5, a rank other than the one
    /// `spatial_dims` pins (PyTorch's `BatchNorm2d`: "expected 4D input (got 3D input)"), a
    /// channel count other than `num_features`, or a single value per channel when batch
    /// statistics are needed (PyTorch: "Expected more than 1 value per channel when training").
    pub fn try_forward<const D: usize>(&self, input: Tensor<D>) -> Result<Tensor<D>, NormError> {
        let dims = input.dims();
        check_input::rank(LAYER, &dims, 2..=5, "[N, C, *]")?;
        match self.spatial_dims {
            None => {}
            Some(1) => check_input::pinned_rank("BatchNorm1d", D, &[2, 3])?,
            Some(2) => check_input::pinned_rank("BatchNorm2d", D, &[4])?,
            Some(_) => check_input::pinned_rank("BatchNorm3d", D, &[5])?,
        }
        check_input::channels(LAYER, &dims, self.num_features)?;

        let training = self.is_training(&input.device());
        if training || self.running_mean.is_none() {
            let values_per_channel = dims[0] * dims[2..].iter().product::<usize>();
            if values_per_channel <= 1 {
                return Err(NormError::input(
                    LAYER,
                    format!(
                        "Expected more than 1 value per channel when training, got input size {dims:?}"
                    ),
                ));
            }
            Ok(self.forward_batch_stats(input, training, values_per_channel))
        } else {
            Ok(normalize_with_running_stats(
                input,
                &self.gamma,
                &self.beta,
                &self.running_mean,
                &self.running_var,
                self.eps,
            ))
        }
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

    fn forward_batch_stats<const D: usize>(
        &self,
        input: Tensor<D>,
        update_running_stats: bool,
        values_per_channel: usize,
    ) -> Tensor<D> {
        let (gamma, beta) =
            params_or_identity(&self.gamma, &self.beta, self.num_features, &input.device());
        let dims = input.dims();
        let channels_first: Tensor<3> =
            input.reshape([dims[0], dims[1], values_per_channel / dims[0]]);
        let (output, mean, var) =
            normzoo_kernels::batch_norm(&channels_first, gamma.clone(), beta.clone(), self.eps)
                .unwrap_or_else(|| batch_normalize(channels_first, gamma, beta, self.eps));
        if update_running_stats {
            self.update_running_stats(mean, var, values_per_channel);
        }
        output.reshape(dims)
    }

    fn update_running_stats(&self, mean: Tensor<1>, biased_var: Tensor<1>, n: usize) {
        let (Some(running_mean), Some(running_var), Some(count)) = (
            &self.running_mean,
            &self.running_var,
            &self.num_batches_tracked,
        ) else {
            return;
        };
        let tracked = count.value_sync().add_scalar(1.0);
        count.update(tracked.clone());
        let blend = match self.momentum {
            Some(momentum) => Blend::Momentum(momentum),
            None => Blend::Factor(tracked.recip().to_device(&mean.device())),
        };
        update_running(running_mean, mean, &blend);
        update_running(running_var, unbiased(biased_var, n), &blend);
    }
}

impl ModuleDisplay for BatchNorm {
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
    use burn::tensor::{TensorData, Tolerance};
    use normzoo_kernels::backend::{cpu_test_devices, test_devices};

    #[test]
    fn config_errors_name_the_problem() {
        let device = Device::default();
        let err = |config: BatchNormConfig| config.init(&device).unwrap_err().to_string();
        assert_eq!(
            err(BatchNormConfig::new(0)),
            "BatchNorm: num_features must be greater than zero, got 0"
        );
        for eps in [0.0, -1e-5, f64::NAN, f64::INFINITY] {
            assert!(
                err(BatchNormConfig::new(3).with_eps(eps))
                    .contains("eps must be finite and positive")
            );
        }
        for momentum in [-0.1, 1.5, f64::NAN] {
            assert!(
                err(BatchNormConfig::new(3).with_momentum(Some(momentum)))
                    .contains("momentum must be within [0, 1]")
            );
        }
    }

    #[test]
    fn one_value_per_channel_is_refused_when_training() {
        for (_, device) in test_devices() {
            let bn = BatchNormConfig::new(3)
                .init(&device)
                .unwrap()
                .with_mode(StatsMode::Train);
            let err = bn
                .try_forward(Tensor::<2>::ones([1, 3], &device))
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "BatchNorm: Expected more than 1 value per channel when training, got input size [1, 3]"
            );
            // Evaluation with running statistics needs no batch statistics.
            let bn = bn.with_mode(StatsMode::Eval);
            assert!(bn.try_forward(Tensor::<2>::ones([1, 3], &device)).is_ok());
            // Without running statistics evaluation needs batch statistics too, as in PyTorch.
            let bn = BatchNormConfig::new(3)
                .with_track_running_stats(false)
                .init(&device)
                .unwrap()
                .with_mode(StatsMode::Eval);
            assert!(
                bn.try_forward(Tensor::<4>::ones([1, 3, 1, 1], &device))
                    .is_err()
            );
        }
    }

    #[test]
    fn shape_errors_name_expected_and_actual() {
        let device = Device::default();
        let bn = BatchNormConfig::new(3).init(&device).unwrap();
        let err = bn
            .try_forward(Tensor::<3>::ones([2, 4, 5], &device))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "BatchNorm: expected input with 3 channels at dim 1, got 4 channels in input of shape [2, 4, 5]"
        );
        let err = bn.try_forward(Tensor::<1>::ones([3], &device)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "BatchNorm: expected a 2D to 5D input [N, C, *], got a 1D input of shape [3]"
        );
    }

    /// `new_1d`, `new_2d` and `new_3d` refuse the other ranks with PyTorch's messages; the plain
    /// config takes any.
    #[test]
    fn pinned_ranks_are_checked_as_pytorch_does() {
        let device = Device::default();
        let pinned = |config: BatchNormConfig| config.init(&device).unwrap();
        let err = |bn: &BatchNorm, shape: &[usize]| {
            let result = match *shape {
                [n, c] => bn.try_forward(Tensor::<2>::ones([n, c], &device)).err(),
                [n, c, l] => bn.try_forward(Tensor::<3>::ones([n, c, l], &device)).err(),
                [n, c, h, w] => bn
                    .try_forward(Tensor::<4>::ones([n, c, h, w], &device))
                    .err(),
                [n, c, d, h, w] => bn
                    .try_forward(Tensor::<5>::ones([n, c, d, h, w], &device))
                    .err(),
                _ => unreachable!(),
            };
            result.map(|err| err.to_string())
        };
        let bn2d = pinned(BatchNormConfig::new_2d(3));
        assert_eq!(
            err(&bn2d, &[2, 3, 5]).as_deref(),
            Some("BatchNorm2d: expected 4D input (got 3D input)")
        );
        assert_eq!(err(&bn2d, &[2, 3, 4, 4]), None);
        let bn1d = pinned(BatchNormConfig::new_1d(3));
        assert_eq!(err(&bn1d, &[2, 3]), None);
        assert_eq!(err(&bn1d, &[2, 3, 5]), None);
        assert_eq!(
            err(&bn1d, &[2, 3, 4, 4]).as_deref(),
            Some("BatchNorm1d: expected 2D or 3D input (got 4D input)")
        );
        let bn3d = pinned(BatchNormConfig::new_3d(3));
        assert_eq!(err(&bn3d, &[2, 3, 2, 2, 2]), None);
        assert_eq!(
            err(&bn3d, &[2, 3, 4, 4]).as_deref(),
            Some("BatchNorm3d: expected 5D input (got 4D input)")
        );
        let any = pinned(BatchNormConfig::new(3));
        for shape in [&[2, 3][..], &[2, 3, 5], &[2, 3, 4, 4], &[2, 3, 2, 2, 2]] {
            assert_eq!(err(&any, shape), None);
        }
        for dims in [0, 4] {
            let config = BatchNormConfig::new(3).with_spatial_dims(Some(dims));
            assert_eq!(
                config.init(&device).unwrap_err().to_string(),
                format!("BatchNorm: spatial_dims must be 1, 2 or 3 (or None for any), got {dims}")
            );
        }
    }

    #[test]
    #[should_panic(expected = "BatchNorm: expected input with 3 channels at dim 1")]
    fn forward_panics_with_the_same_message() {
        let device = Device::default();
        let bn = BatchNormConfig::new(3).init(&device).unwrap();
        bn.forward(Tensor::<2>::ones([2, 4], &device));
    }

    #[test]
    fn training_follows_burns_convention_unless_forced() {
        for (_, device) in test_devices() {
            let bn = BatchNormConfig::new(2)
                .init(&device.clone().autodiff())
                .unwrap();
            assert!(bn.is_training(&device.clone().autodiff()));
            assert!(!bn.is_training(&device));
            assert!(!bn.valid().is_training(&device.clone().autodiff()));
            // A frozen layer (partial fine-tuning) evaluates on the training device.
            let frozen = bn.clone().freeze();
            assert!(!frozen.is_training(&device.clone().autodiff()));
            let forced = bn.with_mode(StatsMode::Train);
            assert!(forced.is_training(&device));
            assert!(
                !forced
                    .with_mode(StatsMode::Eval)
                    .is_training(&device.autodiff())
            );
        }
    }

    /// `Train` mode on a plain device recalibrates the running statistics without a graph.
    #[test]
    fn forced_training_updates_running_stats_without_autodiff() {
        for (_, device) in test_devices() {
            let bn = BatchNormConfig::new(1)
                .with_momentum(Some(0.5))
                .init(&device)
                .unwrap()
                .with_mode(StatsMode::Train);
            bn.forward(Tensor::<2>::from_floats([[1.0], [3.0]], &device));
            let state =
                |s: &Option<RunningState<Tensor<1>>>| s.as_ref().unwrap().value_sync().into_data();
            // mean 2; unbiased variance 2 (the biased one is 1).
            state(&bn.running_mean)
                .assert_approx_eq::<f32>(&TensorData::from([1.0]), Tolerance::absolute(1e-6));
            state(&bn.running_var)
                .assert_approx_eq::<f32>(&TensorData::from([1.5]), Tolerance::absolute(1e-6));
            state(&bn.num_batches_tracked)
                .assert_approx_eq::<f32>(&TensorData::from([1.0]), Tolerance::absolute(0.0));
        }
    }

    #[test]
    fn display_shows_hyper_parameters_and_parameter_count() {
        let bn = BatchNormConfig::new(3).init(&Device::default()).unwrap();
        // params counts the running statistics too, as burn does (γ, β, mean, var: 4·3, + 1).
        assert_eq!(
            format!("{bn}"),
            "BatchNorm {num_features: 3, eps: 0.00001, momentum: Some(0.1), affine: true, track_running_stats: true, params: 13}"
        );
    }

    /// A training step's update waits in burn's `RunningState` until something syncs it; a
    /// model made ready to save with `valid()`, as burn-train does before its checkpoints,
    /// records it.
    #[test]
    fn the_last_update_is_recorded_once_synced() {
        for (_, device) in test_devices() {
            let config = BatchNormConfig::new(2);
            let bn = config.init(&device.clone().autodiff()).unwrap();
            let input =
                Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 6.0]], &device.clone().autodiff());
            bn.forward(input);
            let bytes = bn.valid().into_record().into_bytes().unwrap();
            let record = burn::store::ModuleRecord::from_bytes(bytes).unwrap();
            let loaded = config.init(&device).unwrap().load_record(record);
            let state = |s: &Option<RunningState<Tensor<1>>>| s.as_ref().unwrap().value();
            // momentum 0.1: mean [2, 4], unbiased variance [2, 8].
            let expected = [
                ([0.2, 0.4], &loaded.running_mean),
                ([1.1, 1.7], &loaded.running_var),
            ];
            for (expected, stat) in expected {
                state(stat).into_data().assert_approx_eq::<f32>(
                    &TensorData::from(expected),
                    Tolerance::absolute(1e-6),
                );
            }
            assert_eq!(state(&loaded.num_batches_tracked).into_scalar::<f32>(), 1.0);
        }
    }

    /// Threads sharing one layer, as burn-train's data-parallel workers do (one per device),
    /// move its running statistics by the mean of their batches' statistics at every step,
    /// whichever thread finishes first, and count one batch per step.
    ///
    /// On the CPU backends: two threads on one wgpu device share one burn-fusion engine, which
    /// does not order their reads of each other's tensors (in about one run in five here, a
    /// thread read a statistic before the other had written it), so `choose_devices` refuses
    /// a GPU device named twice.
    #[test]
    fn threads_sharing_a_layer_move_the_statistics_by_their_mean() {
        for ((name, device), momentum) in cpu_test_devices()
            .into_iter()
            .flat_map(|device| [(device.clone(), Some(0.1)), (device, None)])
        {
            let bn = BatchNormConfig::new(1)
                .with_momentum(momentum)
                .init(&device)
                .unwrap()
                .with_mode(StatsMode::Train);
            // Per step and thread, a batch of two values: means 1 and 3, then 5 and 11;
            // unbiased variances 2 and 8, then 18 and 2.
            let batches = [[[0.0, 2.0], [1.0, 5.0]], [[2.0, 8.0], [10.0, 12.0]]];
            let barrier = std::sync::Barrier::new(2);
            std::thread::scope(|scope| {
                for thread in 0..2 {
                    let (bn, barrier) = (bn.clone(), &barrier);
                    scope.spawn(move || {
                        for step in batches {
                            let input = Tensor::<1>::from_floats(step[thread], &bn_device(&bn));
                            bn.forward(input.reshape([2, 1]));
                            barrier.wait();
                        }
                    });
                }
            });
            let bn = bn.valid();
            let state = |s: &Option<RunningState<Tensor<1>>>| s.as_ref().unwrap().value();
            // Step means 2 and 8, variances 5 and 10. With momentum 0.1: mean 0.2 then
            // 0.18 + 0.8; variance 0.9 + 0.5 = 1.4 then 1.26 + 1.0. Without (the cumulative
            // average): the plain mean of the steps, 5 and 7.5.
            let (mean, var) = match momentum {
                Some(_) => (0.98, 2.26),
                None => (5.0, 7.5),
            };
            for (expected, stat) in [(mean, &bn.running_mean), (var, &bn.running_var)] {
                let value = state(stat).into_scalar::<f32>();
                assert!(
                    (value - expected).abs() < 1e-5,
                    "[{name}] momentum {momentum:?}: {value}, expected {expected}"
                );
            }
            assert_eq!(state(&bn.num_batches_tracked).into_scalar::<f32>(), 2.0);
        }
    }

    fn bn_device(bn: &BatchNorm) -> Device {
        bn.gamma.as_ref().unwrap().val().device()
    }
}
