//! The error type of the architectures.

use core::fmt;

use normzoo_norm::{NormConfig, NormError};

use crate::CheckpointError;

/// Why an architecture could not be built.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelError {
    /// The normalizer does not apply to this architecture's features.
    UnsupportedNorm {
        /// The architecture, e.g. `"ResNet"`.
        model: &'static str,
        /// The normalizer's short name.
        norm: String,
        /// Why, and what to use instead.
        reason: String,
    },
    /// A size or option is out of range.
    InvalidConfig {
        /// The architecture.
        model: &'static str,
        /// What was expected and what came.
        message: String,
    },
    /// A normalizer refused its configuration (e.g. groups that do not divide the channels).
    Norm(NormError),
    /// A model name that is not one of those asked for (e.g. the image classifiers, for
    /// [`ImageClassifier::from_name`](crate::ImageClassifier::from_name)).
    UnknownModel {
        /// The name as given.
        name: String,
        /// The names it could have been, comma-separated.
        expected: String,
        /// The one of them closest to the name, if one is close.
        suggestion: Option<&'static str>,
    },
    /// The weights a model was to start from could not be had or did not fit
    /// ([`create_model`](crate::create_model)).
    Checkpoint(CheckpointError),
}

impl ModelError {
    /// [`ModelError::UnknownModel`] for `name`, one of `known` expected: suggests the known name
    /// closest to it (Jaro-Winkler similarity at least 0.8, ignoring case, `_` as `-`), as a
    /// command line's "did you mean".
    pub fn unknown_model(name: &str, known: &[&'static str]) -> Self {
        let comparable = |name: &str| name.trim().to_ascii_lowercase().replace('_', "-");
        let given = comparable(name);
        let suggestion = known
            .iter()
            .map(|&candidate| {
                (
                    strsim::jaro_winkler(&given, &comparable(candidate)),
                    candidate,
                )
            })
            .filter(|&(similarity, _)| similarity >= 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, candidate)| candidate);
        Self::UnknownModel {
            name: name.into(),
            expected: known.join(", "),
            suggestion,
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedNorm {
                model,
                norm,
                reason,
            } => write!(
                f,
                "{model}: the normalizer `{norm}` does not apply: {reason}"
            ),
            Self::InvalidConfig { model, message } => write!(f, "{model}: {message}"),
            Self::Norm(err) => err.fmt(f),
            Self::UnknownModel {
                name,
                expected,
                suggestion,
            } => {
                write!(f, "unknown model `{name}`: ")?;
                if let Some(suggestion) = suggestion {
                    write!(f, "did you mean `{suggestion}`? ")?;
                }
                write!(f, "expected one of {expected}")
            }
            Self::Checkpoint(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for ModelError {}

impl From<CheckpointError> for ModelError {
    fn from(err: CheckpointError) -> Self {
        Self::Checkpoint(err)
    }
}

impl From<NormError> for ModelError {
    fn from(err: NormError) -> Self {
        Self::Norm(err)
    }
}

/// A CNN's features are channels-first `[N, C, H, W]`: refuse the normalizers that normalize
/// the last axis, and say what to use instead.
pub(crate) fn refuse_channels_last(
    model: &'static str,
    norm: &NormConfig,
) -> Result<(), ModelError> {
    match norm {
        NormConfig::Layer(_) | NormConfig::Rms(_) => Err(ModelError::UnsupportedNorm {
            model,
            norm: norm.to_string(),
            reason: "it normalizes the last axis, but a CNN's features are channels-first \
                     [N, C, H, W]: use `layer2d` (over channels, as ConvNeXt) or `group:1` \
                     (over C, H and W)"
                .into(),
        }),
        _ => Ok(()),
    }
}
