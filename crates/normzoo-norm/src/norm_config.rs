//! [`NormConfig`]: which normalizer an architecture uses, one of the layer configs, named on
//! command lines by a short name.

use core::fmt;
use core::mem::discriminant;
use core::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::check;
use crate::norm::Identity;
use crate::{
    BatchNormConfig, GroupNormConfig, InstanceNormConfig, LayerNorm2dConfig, LayerNormConfig, Norm,
    NormError, RmsNormConfig,
};

mod saved;

/// Which normalizer an architecture uses: one of the layer configs, whose channel count the
/// architecture supplies at [`init`](Self::init) (timm's habit: every normalizer takes the
/// channel count first, so swapping one is one word). burn-nn's `NormalizationConfig` has the
/// same shape.
///
/// `init` replaces the wrapped config's own channel count (`num_features`, `num_channels`, or
/// `normalized_shape`, which becomes `[C]`: `Layer` and `Rms` normalize the last axis only);
/// the constructors leave it at 0. Everything else is the layer config's, with its defaults
/// (PyTorch's; timm's for [`LayerNorm2d`](crate::LayerNorm2d)), so a field is changed on the
/// layer config:
///
/// ```
/// use normzoo_norm::{BatchNormConfig, NormConfig};
///
/// let norm = NormConfig::Batch(BatchNormConfig::new_2d(0).with_momentum(Some(0.01)));
/// assert_eq!(norm.to_string(), "batch");
/// ```
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
///
/// Serialized (a run's `config.json`, a model's config) as the variant holding its layer
/// config. A config saved before the variants held the layer configs (the hyper-parameters
/// without a channel count) still loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NormConfig {
    /// No normalization: the identity.
    None,
    /// [`BatchNorm`](crate::BatchNorm).
    #[serde(deserialize_with = "saved::batch")]
    Batch(BatchNormConfig),
    /// [`LayerNorm`](crate::LayerNorm) over the last axis (of size the channel count).
    #[serde(deserialize_with = "saved::layer")]
    Layer(LayerNormConfig),
    /// [`LayerNorm2d`](crate::LayerNorm2d): over the channels of `[N, C, H, W]`.
    #[serde(deserialize_with = "saved::layer2d")]
    Layer2d(LayerNorm2dConfig),
    /// [`GroupNorm`](crate::GroupNorm).
    #[serde(deserialize_with = "saved::group")]
    Group(GroupNormConfig),
    /// [`InstanceNorm`](crate::InstanceNorm).
    #[serde(deserialize_with = "saved::instance")]
    Instance(InstanceNormConfig),
    /// [`RmsNorm`](crate::RmsNorm) over the last axis (of size the channel count).
    #[serde(deserialize_with = "saved::rms")]
    Rms(RmsNormConfig),
}

impl burn::config::Config for NormConfig {}

/// The channel count the constructors put in the wrapped configs; [`NormConfig::init`]
/// replaces it with the architecture's.
const CHANNELS_AT_INIT: usize = 0;

/// One kind of normalizer as command lines name it.
struct Kind {
    /// The name [`NormConfig`]'s `Display` writes and `FromStr` reads.
    name: &'static str,
    /// Other names `FromStr` accepts.
    aliases: &'static [&'static str],
    /// What may follow the name after a colon, as the unknown-name error shows it.
    argument: Option<&'static str>,
    /// The config `FromStr` returns for the name alone.
    default: fn() -> NormConfig,
}

/// Every kind, one row per variant of [`NormConfig`]: the one table the names, `FromStr`,
/// `Display` and the unknown-name error come from.
const KINDS: [Kind; 7] = [
    Kind {
        name: "none",
        aliases: &["identity"],
        argument: None,
        default: || NormConfig::None,
    },
    Kind {
        name: "batch",
        aliases: &["bn"],
        argument: None,
        default: NormConfig::batch,
    },
    Kind {
        name: "layer",
        aliases: &["ln"],
        argument: None,
        default: NormConfig::layer,
    },
    Kind {
        name: "layer2d",
        aliases: &["ln2d"],
        argument: None,
        default: NormConfig::layer2d,
    },
    Kind {
        name: "group",
        aliases: &["gn"],
        argument: Some("G"),
        default: || NormConfig::group(NormConfig::DEFAULT_GROUPS),
    },
    Kind {
        name: "instance",
        aliases: &["in"],
        argument: None,
        default: NormConfig::instance,
    },
    Kind {
        name: "rms",
        aliases: &[],
        argument: None,
        default: NormConfig::rms,
    },
];

impl NormConfig {
    /// The short names [`FromStr`] accepts (without aliases), one per variant.
    pub const NAMES: [&'static str; KINDS.len()] = {
        let mut names = [""; KINDS.len()];
        let mut i = 0;
        while i < KINDS.len() {
            names[i] = KINDS[i].name;
            i += 1;
        }
        names
    };

    /// The default number of groups for `group` without `:G` (GroupNorm paper's and timm's 32).
    pub const DEFAULT_GROUPS: usize = 32;

    /// [`NormConfig::Batch`] with PyTorch's defaults.
    pub fn batch() -> Self {
        Self::Batch(BatchNormConfig::new(CHANNELS_AT_INIT))
    }

    /// [`NormConfig::Layer`] with PyTorch's defaults.
    pub fn layer() -> Self {
        Self::Layer(LayerNormConfig::new(vec![CHANNELS_AT_INIT]))
    }

    /// [`NormConfig::Layer2d`] with timm's defaults.
    pub fn layer2d() -> Self {
        Self::Layer2d(LayerNorm2dConfig::new(CHANNELS_AT_INIT))
    }

    /// [`NormConfig::Group`] with `num_groups` groups and PyTorch's defaults.
    pub fn group(num_groups: usize) -> Self {
        Self::Group(GroupNormConfig::new(num_groups, CHANNELS_AT_INIT))
    }

    /// [`NormConfig::Instance`] with PyTorch's defaults (no affine, no running statistics).
    pub fn instance() -> Self {
        Self::Instance(InstanceNormConfig::new(CHANNELS_AT_INIT))
    }

    /// [`NormConfig::Rms`] with PyTorch's defaults.
    pub fn rms() -> Self {
        Self::Rms(RmsNormConfig::new(vec![CHANNELS_AT_INIT]))
    }

    /// Builds the normalizer for `num_features` channels.
    ///
    /// # Errors
    ///
    /// The layer's [`NormError::InvalidConfig`], e.g. when `num_groups` does not divide
    /// `num_features`.
    pub fn init(&self, num_features: usize, device: &Device) -> Result<Norm, NormError> {
        Ok(match self {
            Self::None => {
                check::positive("Identity", "num_features", num_features)?;
                Norm::Identity(Identity { num_features })
            }
            Self::Batch(config) => Norm::Batch(
                BatchNormConfig {
                    num_features,
                    ..config.clone()
                }
                .init(device)?,
            ),
            Self::Layer(config) => Norm::Layer(
                LayerNormConfig {
                    normalized_shape: vec![num_features],
                    ..config.clone()
                }
                .init(device)?,
            ),
            Self::Layer2d(config) => Norm::Layer2d(
                LayerNorm2dConfig {
                    num_channels: num_features,
                    ..config.clone()
                }
                .init(device)?,
            ),
            Self::Group(config) => Norm::Group(
                GroupNormConfig {
                    num_channels: num_features,
                    ..config.clone()
                }
                .init(device)?,
            ),
            Self::Instance(config) => Norm::Instance(
                InstanceNormConfig {
                    num_features,
                    ..config.clone()
                }
                .init(device)?,
            ),
            Self::Rms(config) => Norm::Rms(
                RmsNormConfig {
                    normalized_shape: vec![num_features],
                    ..config.clone()
                }
                .init(device)?,
            ),
        })
    }

    /// This config's row of [`KINDS`].
    fn kind(&self) -> &'static Kind {
        KINDS
            .iter()
            .find(|kind| discriminant(&(kind.default)()) == discriminant(self))
            .expect("KINDS has a row for every variant")
    }
}

/// The short name; hyper-parameters other than the number of groups are not shown. Honours
/// width and alignment (`{:<10}`).
impl fmt::Display for NormConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.kind().name;
        match self {
            Self::Group(config) => f.pad(&format!("{name}:{}", config.num_groups)),
            _ => f.pad(name),
        }
    }
}

impl FromStr for NormConfig {
    type Err = NormError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let unknown = || NormError::UnknownNorm {
            name: name.into(),
            expected: KINDS
                .iter()
                .map(|kind| match kind.argument {
                    Some(argument) => format!("{}[:{argument}]", kind.name),
                    None => kind.name.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        let lowered = name.trim().to_ascii_lowercase();
        let (kind_name, argument) = match lowered.split_once(':') {
            Some((kind_name, argument)) => (kind_name, Some(argument)),
            None => (lowered.as_str(), None),
        };
        let kind = KINDS
            .iter()
            .find(|kind| kind.name == kind_name || kind.aliases.contains(&kind_name))
            .ok_or_else(unknown)?;
        match ((kind.default)(), argument) {
            (config, None) => Ok(config),
            (Self::Group(config), Some(groups)) => Ok(Self::Group(GroupNormConfig {
                num_groups: parse_groups(name, groups)?,
                ..config
            })),
            (_, Some(_)) => Err(unknown()),
        }
    }
}

/// The `G` of `group:G`: a positive integer.
fn parse_groups(name: &str, groups: &str) -> Result<usize, NormError> {
    match groups.parse::<usize>() {
        Ok(groups) if groups > 0 => Ok(groups),
        _ => Err(NormError::config(
            "GroupNorm",
            format!("the number of groups in `{name}` must be a positive integer, got `{groups}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in NormConfig::NAMES {
            let config: NormConfig = name.parse().unwrap();
            let expected = if name == "group" { "group:32" } else { name };
            assert_eq!(config.to_string(), expected);
        }
        assert_eq!("GN:8".parse::<NormConfig>().unwrap(), NormConfig::group(8));
        assert_eq!("bn".parse::<NormConfig>().unwrap(), NormConfig::batch());
        assert_eq!(format!("[{:<8}]", NormConfig::group(4)), "[group:4 ]");
        assert_eq!(
            NormConfig::NAMES,
            [
                "none", "batch", "layer", "layer2d", "group", "instance", "rms"
            ]
        );
    }

    #[test]
    fn every_variant_has_its_own_row() {
        let configs = [
            NormConfig::None,
            NormConfig::batch(),
            NormConfig::layer(),
            NormConfig::layer2d(),
            NormConfig::group(4),
            NormConfig::instance(),
            NormConfig::rms(),
        ];
        let names: Vec<_> = configs.iter().map(|config| config.kind().name).collect();
        assert_eq!(names, NormConfig::NAMES);
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
    fn init_supplies_the_channel_count_and_keeps_the_rest() {
        let device = Device::default();
        let config = NormConfig::Batch(BatchNormConfig::new(7).with_momentum(None));
        let Norm::Batch(layer) = config.init(3, &device).unwrap() else {
            unreachable!()
        };
        assert_eq!(layer.num_features, 3);
        assert_eq!(layer.momentum, None);
        let Norm::Layer(layer) = NormConfig::layer().init(5, &device).unwrap() else {
            unreachable!()
        };
        assert_eq!(layer.normalized_shape, [5]);
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
    fn configs_serialize() {
        for config in [
            NormConfig::None,
            NormConfig::group(8),
            NormConfig::Instance(InstanceNormConfig::new_2d(0).with_affine(true)),
        ] {
            let json = serde_json::to_string(&config).unwrap();
            assert_eq!(serde_json::from_str::<NormConfig>(&json).unwrap(), config);
        }
    }
}
