//! Reading a saved [`NormConfig`](super::NormConfig) variant, today's form or the form before
//! the variants held the layer configs.
//!
//! Until then a variant held the layer's hyper-parameters without its channel count
//! (`{"Batch": {"eps": 1e-5, "momentum": 0.1, "affine": true, "track_running_stats": true}}`),
//! and runs saved that way must still resume. Such a variant lacks the layer config's channel
//! field; it is read with the placeholder the constructors put there, which `init` replaces.
//! Every other field is read as the layer config reads it, so a wrong or missing one is still
//! an error naming it. The layer configs added since (none yet) need no entry here.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error};
use serde_json::Value;

use super::CHANNELS_AT_INIT;
use crate::{
    BatchNormConfig, GroupNormConfig, InstanceNormConfig, LayerNorm2dConfig, LayerNormConfig,
    RmsNormConfig,
};

/// Reads `C` from the variant's fields, putting `placeholder` in `channel_field` when the
/// fields lack it.
fn with_channel_field<'de, D, C>(
    deserializer: D,
    channel_field: &str,
    placeholder: Value,
) -> Result<C, D::Error>
where
    D: Deserializer<'de>,
    C: DeserializeOwned,
{
    let mut fields = Value::deserialize(deserializer)?;
    if let Value::Object(fields) = &mut fields {
        fields.entry(channel_field).or_insert(placeholder);
    }
    C::deserialize(fields).map_err(D::Error::custom)
}

/// A count of channels, as `BatchNorm`, `LayerNorm2d`, `GroupNorm` and `InstanceNorm` take it.
fn count() -> Value {
    Value::from(CHANNELS_AT_INIT)
}

/// A normalized shape of one axis, as `LayerNorm` and `RmsNorm` take it.
fn shape() -> Value {
    Value::from(vec![CHANNELS_AT_INIT])
}

pub(super) fn batch<'de, D: Deserializer<'de>>(d: D) -> Result<BatchNormConfig, D::Error> {
    with_channel_field(d, "num_features", count())
}

pub(super) fn layer<'de, D: Deserializer<'de>>(d: D) -> Result<LayerNormConfig, D::Error> {
    with_channel_field(d, "normalized_shape", shape())
}

pub(super) fn layer2d<'de, D: Deserializer<'de>>(d: D) -> Result<LayerNorm2dConfig, D::Error> {
    with_channel_field(d, "num_channels", count())
}

pub(super) fn group<'de, D: Deserializer<'de>>(d: D) -> Result<GroupNormConfig, D::Error> {
    with_channel_field(d, "num_channels", count())
}

pub(super) fn instance<'de, D: Deserializer<'de>>(d: D) -> Result<InstanceNormConfig, D::Error> {
    with_channel_field(d, "num_features", count())
}

pub(super) fn rms<'de, D: Deserializer<'de>>(d: D) -> Result<RmsNormConfig, D::Error> {
    with_channel_field(d, "normalized_shape", shape())
}

#[cfg(test)]
mod tests {
    use crate::{BatchNormConfig, NormConfig, RmsNormConfig};

    /// Every variant as the old form wrote it (the defaults of that time).
    const BEFORE: &str = r#"[
        "None",
        {"Batch": {"eps": 0.00001, "momentum": 0.1, "affine": true, "track_running_stats": true}},
        {"Layer": {"eps": 0.00001, "elementwise_affine": true, "bias": true}},
        {"Layer2d": {"eps": 0.000001, "affine": true, "bias": true}},
        {"Group": {"num_groups": 8, "eps": 0.00001, "affine": true}},
        {"Instance": {"eps": 0.00001, "momentum": 0.1, "affine": false, "track_running_stats": false}},
        {"Rms": {"eps": null, "elementwise_affine": true}}
    ]"#;

    #[test]
    fn the_form_before_the_layer_configs_still_loads() {
        let loaded: Vec<NormConfig> = serde_json::from_str(BEFORE).unwrap();
        let expected = vec![
            NormConfig::None,
            NormConfig::batch(),
            NormConfig::layer(),
            NormConfig::layer2d(),
            NormConfig::group(8),
            NormConfig::instance(),
            NormConfig::rms(),
        ];
        assert_eq!(loaded, expected);
    }

    #[test]
    fn saved_fields_are_kept_and_bad_ones_named() {
        let loaded: NormConfig =
            serde_json::from_str(r#"{"Batch": {"eps": 0.001, "momentum": null, "affine": false, "track_running_stats": true}}"#)
                .unwrap();
        assert_eq!(
            loaded,
            NormConfig::Batch(
                BatchNormConfig::new(0)
                    .with_eps(1e-3)
                    .with_momentum(None)
                    .with_affine(false)
            )
        );
        let today = NormConfig::Rms(RmsNormConfig::new(vec![0]).with_eps(Some(1e-6)));
        let json = serde_json::to_string(&today).unwrap();
        assert_eq!(serde_json::from_str::<NormConfig>(&json).unwrap(), today);
        let err =
            serde_json::from_str::<NormConfig>(r#"{"Group": {"eps": 0.00001, "affine": true}}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("num_groups"), "{err}");
    }
}
