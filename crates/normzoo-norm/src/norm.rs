//! [`NormConfig`] and [`Norm`]: a normalizer chosen at run time, for architectures that let the
//! user swap it.

use core::fmt;
use core::str::FromStr;

use burn::module::{DisplaySettings, Module, ModuleDisplay, Param};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{
    BatchNorm, BatchNormConfig, GroupNorm, GroupNormConfig, InstanceNorm, InstanceNormConfig,
    LayerNorm, LayerNorm2d, LayerNorm2dConfig, LayerNormConfig, NormError, RmsNorm, RmsNormConfig,
    StatsMode,
};

/// Which normalizer an architecture uses, with its hyper-parameters but without the channel
/// count, which the architecture supplies at [`init`](Self::init) (timm's habit: every
/// normalizer takes the channel count first, so swapping one is one word).
///
/// Parses from the short names used on command lines and in experiments:
///
/// | name | variant | applies to |
/// |---|---|---|
/// | `none` (`identity`) | [`NormConfig::None`] | anything |
/// | `batch` (`bn`) | [`NormConfig::Batch`] | `[N, C, *]` |
/// | `layer` (`ln`) | [`NormConfig::Layer`] | `[*, C]`: channels last (MLP, Transformer) |
/// | `layer2d` (`ln2d`) | [`NormConfig::Layer2d`] | `[N, C, H, W]`: channels first (CNN) |
/// | `group:G` (`gn:G`; `group` is `group:32`) | [`NormConfig::Group`] | `[N, C, *]` |
/// | `instance` (`in`) | [`NormConfig::Instance`] | `[N, C, *]`, rank 3 to 5 |
/// | `rms` | [`NormConfig::Rms`] | `[*, C]`: channels last |
///
/// Every variant's defaults are the layer's own (PyTorch's).
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use normzoo_norm::NormConfig;
///
/// let device = Device::default();
/// let norm: NormConfig = "group:4".parse()?;
/// let layer = norm.init(16, &device)?;
/// assert_eq!(layer.forward(Tensor::<4>::ones([2, 16, 8, 8], &device)).dims(), [2, 16, 8, 8]);
/// assert_eq!(norm.to_string(), "group:4");
/// # Ok::<(), normzoo_norm::NormError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NormConfig {
    /// No normalization: the identity.
    None,
    /// [`BatchNorm`]; see [`BatchNormConfig`] for the fields.
    Batch {
        /// See [`BatchNormConfig::eps`].
        eps: f64,
        /// See [`BatchNormConfig::momentum`].
        momentum: Option<f64>,
        /// See [`BatchNormConfig::affine`].
        affine: bool,
        /// See [`BatchNormConfig::track_running_stats`].
        track_running_stats: bool,
    },
    /// [`LayerNorm`] over the last axis (of size the channel count).
    Layer {
        /// See [`LayerNormConfig::eps`].
        eps: f64,
        /// See [`LayerNormConfig::elementwise_affine`].
        elementwise_affine: bool,
        /// See [`LayerNormConfig::bias`].
        bias: bool,
    },
    /// [`LayerNorm2d`]: over the channels of `[N, C, H, W]`.
    Layer2d {
        /// See [`LayerNorm2dConfig::eps`].
        eps: f64,
        /// See [`LayerNorm2dConfig::affine`].
        affine: bool,
        /// See [`LayerNorm2dConfig::bias`].
        bias: bool,
    },
    /// [`GroupNorm`].
    Group {
        /// See [`GroupNormConfig::num_groups`].
        num_groups: usize,
        /// See [`GroupNormConfig::eps`].
        eps: f64,
        /// See [`GroupNormConfig::affine`].
        affine: bool,
    },
    /// [`InstanceNorm`].
    Instance {
        /// See [`InstanceNormConfig::eps`].
        eps: f64,
        /// See [`InstanceNormConfig::momentum`].
        momentum: Option<f64>,
        /// See [`InstanceNormConfig::affine`].
        affine: bool,
        /// See [`InstanceNormConfig::track_running_stats`].
        track_running_stats: bool,
    },
    /// [`RmsNorm`] over the last axis (of size the channel count).
    Rms {
        /// See [`RmsNormConfig::eps`].
        eps: Option<f64>,
        /// See [`RmsNormConfig::elementwise_affine`].
        elementwise_affine: bool,
    },
}

impl burn::config::Config for NormConfig {}

impl NormConfig {
    /// The short names [`FromStr`] accepts (without aliases), one per variant.
    pub const NAMES: [&'static str; 7] = [
        "none", "batch", "layer", "layer2d", "group", "instance", "rms",
    ];

    /// The default number of groups for `group` without `:G` (GroupNorm paper's and timm's 32).
    pub const DEFAULT_GROUPS: usize = 32;

    /// [`NormConfig::Batch`] with PyTorch's defaults.
    pub fn batch() -> Self {
        let c = BatchNormConfig::new(1);
        Self::Batch {
            eps: c.eps,
            momentum: c.momentum,
            affine: c.affine,
            track_running_stats: c.track_running_stats,
        }
    }

    /// [`NormConfig::Layer`] with PyTorch's defaults.
    pub fn layer() -> Self {
        let c = LayerNormConfig::new(vec![1]);
        Self::Layer {
            eps: c.eps,
            elementwise_affine: c.elementwise_affine,
            bias: c.bias,
        }
    }

    /// [`NormConfig::Layer2d`] with timm's defaults.
    pub fn layer2d() -> Self {
        let c = LayerNorm2dConfig::new(1);
        Self::Layer2d {
            eps: c.eps,
            affine: c.affine,
            bias: c.bias,
        }
    }

    /// [`NormConfig::Group`] with `num_groups` groups and PyTorch's defaults.
    pub fn group(num_groups: usize) -> Self {
        let c = GroupNormConfig::new(num_groups, num_groups);
        Self::Group {
            num_groups,
            eps: c.eps,
            affine: c.affine,
        }
    }

    /// [`NormConfig::Instance`] with PyTorch's defaults (no affine, no running statistics).
    pub fn instance() -> Self {
        let c = InstanceNormConfig::new(1);
        Self::Instance {
            eps: c.eps,
            momentum: c.momentum,
            affine: c.affine,
            track_running_stats: c.track_running_stats,
        }
    }

    /// [`NormConfig::Rms`] with PyTorch's defaults.
    pub fn rms() -> Self {
        let c = RmsNormConfig::new(vec![1]);
        Self::Rms {
            eps: c.eps,
            elementwise_affine: c.elementwise_affine,
        }
    }

    /// Builds the normalizer for `num_features` channels.
    ///
    /// # Errors
    ///
    /// The layer's [`NormError::InvalidConfig`], e.g. when `num_groups` does not divide
    /// `num_features`.
    pub fn init(&self, num_features: usize, device: &Device) -> Result<Norm, NormError> {
        Ok(match *self {
            Self::None => {
                crate::error::check::positive("Identity", "num_features", num_features)?;
                Norm::Identity(Identity { num_features })
            }
            Self::Batch {
                eps,
                momentum,
                affine,
                track_running_stats,
            } => Norm::Batch(
                BatchNormConfig::new(num_features)
                    .with_eps(eps)
                    .with_momentum(momentum)
                    .with_affine(affine)
                    .with_track_running_stats(track_running_stats)
                    .init(device)?,
            ),
            Self::Layer {
                eps,
                elementwise_affine,
                bias,
            } => Norm::Layer(
                LayerNormConfig::new(vec![num_features])
                    .with_eps(eps)
                    .with_elementwise_affine(elementwise_affine)
                    .with_bias(bias)
                    .init(device)?,
            ),
            Self::Layer2d { eps, affine, bias } => Norm::Layer2d(
                LayerNorm2dConfig::new(num_features)
                    .with_eps(eps)
                    .with_affine(affine)
                    .with_bias(bias)
                    .init(device)?,
            ),
            Self::Group {
                num_groups,
                eps,
                affine,
            } => Norm::Group(
                GroupNormConfig::new(num_groups, num_features)
                    .with_eps(eps)
                    .with_affine(affine)
                    .init(device)?,
            ),
            Self::Instance {
                eps,
                momentum,
                affine,
                track_running_stats,
            } => Norm::Instance(
                InstanceNormConfig::new(num_features)
                    .with_eps(eps)
                    .with_momentum(momentum)
                    .with_affine(affine)
                    .with_track_running_stats(track_running_stats)
                    .init(device)?,
            ),
            Self::Rms {
                eps,
                elementwise_affine,
            } => Norm::Rms(
                RmsNormConfig::new(vec![num_features])
                    .with_eps(eps)
                    .with_elementwise_affine(elementwise_affine)
                    .init(device)?,
            ),
        })
    }

    /// The short name of this kind of normalizer (`group:G` for groups).
    pub fn name(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Batch { .. } => "batch".into(),
            Self::Layer { .. } => "layer".into(),
            Self::Layer2d { .. } => "layer2d".into(),
            Self::Group { num_groups, .. } => format!("group:{num_groups}"),
            Self::Instance { .. } => "instance".into(),
            Self::Rms { .. } => "rms".into(),
        }
    }
}

/// The short name; hyper-parameters other than the number of groups are not shown.
impl fmt::Display for NormConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for NormConfig {
    type Err = NormError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let unknown = || NormError::UnknownNorm { name: name.into() };
        let lowered = name.trim().to_ascii_lowercase();
        let (kind, argument) = match lowered.split_once(':') {
            Some((kind, argument)) => (kind, Some(argument)),
            None => (lowered.as_str(), None),
        };
        let config = match kind {
            "none" | "identity" => Self::None,
            "batch" | "bn" => Self::batch(),
            "layer" | "ln" => Self::layer(),
            "layer2d" | "ln2d" => Self::layer2d(),
            "group" | "gn" => {
                let groups = match argument {
                    None => Self::DEFAULT_GROUPS,
                    Some(groups) => match groups.parse::<usize>() {
                        Ok(groups) if groups > 0 => groups,
                        _ => {
                            return Err(NormError::config(
                                "GroupNorm",
                                format!(
                                    "the number of groups in `{name}` must be a positive integer, got `{groups}`"
                                ),
                            ));
                        }
                    },
                };
                return Ok(Self::group(groups));
            }
            "instance" | "in" => Self::instance(),
            "rms" => Self::rms(),
            _ => return Err(unknown()),
        };
        match argument {
            Some(_) => Err(unknown()),
            None => Ok(config),
        }
    }
}

/// The identity: what [`NormConfig::None`] builds.
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

/// A normalizer chosen at run time, built by [`NormConfig::init`].
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
    /// # Errors
    ///
    /// The chosen layer's [`NormError::InvalidInput`].
    pub fn try_forward<const D: usize>(&self, input: Tensor<D>) -> Result<Tensor<D>, NormError> {
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
    use crate::backend::test_devices;
    use burn::tensor::Distribution;

    #[test]
    fn names_round_trip() {
        for name in NormConfig::NAMES {
            let config: NormConfig = name.parse().unwrap();
            let expected = if name == "group" { "group:32" } else { name };
            assert_eq!(config.to_string(), expected);
        }
        assert_eq!("GN:8".parse::<NormConfig>().unwrap(), NormConfig::group(8));
        assert_eq!("bn".parse::<NormConfig>().unwrap(), NormConfig::batch());
    }

    #[test]
    fn unknown_names_are_refused_clearly() {
        assert_eq!(
            "batchnorm".parse::<NormConfig>().unwrap_err().to_string(),
            "unknown normalizer `batchnorm`: expected one of none, batch, layer, layer2d, group[:G], instance, rms"
        );
        assert!(matches!(
            "layer:3".parse::<NormConfig>(),
            Err(NormError::UnknownNorm { .. })
        ));
        assert_eq!(
            "group:x".parse::<NormConfig>().unwrap_err().to_string(),
            "GroupNorm: the number of groups in `group:x` must be a positive integer, got `x`"
        );
        assert!("group:0".parse::<NormConfig>().is_err());
    }

    #[test]
    fn every_kind_builds_and_normalizes_its_layout() {
        for (_, device) in test_devices() {
            let channels_first = Tensor::<4>::random([2, 8, 3, 3], Distribution::Default, &device);
            let channels_last = Tensor::<3>::random([2, 5, 8], Distribution::Default, &device);
            for name in NormConfig::NAMES {
                let config = match name.parse::<NormConfig>().unwrap() {
                    NormConfig::Group { .. } => NormConfig::group(4),
                    other => other,
                };
                let layer = config.init(8, &device).unwrap().with_mode(StatsMode::Train);
                let changed = |input: Tensor<4>, output: Tensor<4>| {
                    assert_eq!(output.dims(), input.dims(), "{name}");
                    !input.all_close(output, None, Some(1e-3))
                };
                let changed = match config {
                    NormConfig::Layer { .. } | NormConfig::Rms { .. } => {
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
    fn channel_count_errors_come_from_the_layer() {
        let device = Device::default();
        assert_eq!(
            NormConfig::group(4)
                .init(6, &device)
                .unwrap_err()
                .to_string(),
            "GroupNorm: num_channels (6) must be divisible by num_groups (4)"
        );
        assert!(NormConfig::None.init(0, &device).is_err());
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

    #[test]
    fn configs_serialize() {
        let config = NormConfig::group(8);
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<NormConfig>(&json).unwrap(), config);
    }
}
