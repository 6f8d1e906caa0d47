//! The error type shared by every normalizer.

use core::fmt;

/// What went wrong when building a normalizer or running one.
///
/// Messages follow PyTorch's wording where PyTorch has one, and always name the layer, what it
/// expected and what it got, e.g.
/// `GroupNorm: num_channels (6) must be divisible by num_groups (4)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NormError {
    /// A configuration value is out of range (a zero size, a negative or NaN epsilon, a momentum
    /// outside `[0, 1]`, groups that do not divide the channels).
    InvalidConfig {
        /// The layer that rejected the configuration, e.g. `"BatchNorm"`.
        layer: &'static str,
        /// What was expected and what came.
        message: String,
    },
    /// An input the layer cannot normalize: wrong rank, wrong channel count, or too few values to
    /// compute batch statistics from.
    InvalidInput {
        /// The layer that rejected the input.
        layer: &'static str,
        /// What was expected and what came.
        message: String,
    },
    /// A normalizer name that [`NormConfig`](crate::NormConfig) does not know.
    UnknownNorm {
        /// The name as given.
        name: String,
        /// The names it could have been, comma-separated.
        expected: String,
    },
}

impl NormError {
    pub(crate) fn config(layer: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidConfig {
            layer,
            message: message.into(),
        }
    }

    pub(crate) fn input(layer: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            layer,
            message: message.into(),
        }
    }
}

impl fmt::Display for NormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { layer, message } | Self::InvalidInput { layer, message } => {
                write!(f, "{layer}: {message}")
            }
            Self::UnknownNorm { name, expected } => {
                write!(f, "unknown normalizer `{name}`: expected one of {expected}")
            }
        }
    }
}

impl std::error::Error for NormError {}

/// Checks shared by every configuration: sizes are positive, epsilon is finite and positive,
/// momentum (when given) is in `[0, 1]`.
pub(crate) mod check {
    use super::NormError;

    pub(crate) fn positive(layer: &'static str, name: &str, value: usize) -> Result<(), NormError> {
        if value == 0 {
            return Err(NormError::config(
                layer,
                format!("{name} must be greater than zero, got 0"),
            ));
        }
        Ok(())
    }

    pub(crate) fn epsilon(layer: &'static str, eps: f64) -> Result<(), NormError> {
        if !(eps.is_finite() && eps > 0.0) {
            return Err(NormError::config(
                layer,
                format!("eps must be finite and positive, got {eps}"),
            ));
        }
        Ok(())
    }

    pub(crate) fn momentum(layer: &'static str, momentum: Option<f64>) -> Result<(), NormError> {
        match momentum {
            Some(m) if !(0.0..=1.0).contains(&m) => Err(NormError::config(
                layer,
                format!(
                    "momentum must be within [0, 1] (or None for a cumulative average), got {m}"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `spatial_dims`, where a config pins it (PyTorch's 1d, 2d and 3d classes), is 1, 2 or 3.
    pub(crate) fn spatial_dims(
        layer: &'static str,
        spatial_dims: Option<usize>,
    ) -> Result<(), NormError> {
        match spatial_dims {
            Some(dims) if !(1..=3).contains(&dims) => Err(NormError::config(
                layer,
                format!("spatial_dims must be 1, 2 or 3 (or None for any), got {dims}"),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn shape(layer: &'static str, name: &str, shape: &[usize]) -> Result<(), NormError> {
        if shape.is_empty() || shape.contains(&0) {
            return Err(NormError::config(
                layer,
                format!(
                    "{name} must be non-empty with every size greater than zero, got {shape:?}"
                ),
            ));
        }
        Ok(())
    }
}

/// Checks shared by every forward pass.
pub(crate) mod check_input {
    use super::NormError;
    use core::ops::RangeInclusive;

    /// The input's rank is within `ranks`; `layout` names the expected layout, e.g. `[N, C, *]`.
    pub(crate) fn rank(
        layer: &'static str,
        dims: &[usize],
        ranks: RangeInclusive<usize>,
        layout: &str,
    ) -> Result<(), NormError> {
        if !ranks.contains(&dims.len()) {
            let expected = match (ranks.start(), ranks.end()) {
                (lo, hi) if lo == hi => format!("a {lo}D input"),
                (lo, hi) if *hi == usize::MAX => format!("an input of rank {lo} or more"),
                (lo, hi) => format!("a {lo}D to {hi}D input"),
            };
            return Err(NormError::input(
                layer,
                format!(
                    "expected {expected} {layout}, got a {}D input of shape {dims:?}",
                    dims.len()
                ),
            ));
        }
        Ok(())
    }

    /// PyTorch's rank check of its 1d, 2d and 3d classes (`BatchNorm2d`: "expected 4D input
    /// (got 3D input)"): `rank` is one of `accepted` (ascending), else an error from `layer`, the
    /// pinned class's name.
    pub(crate) fn pinned_rank(
        layer: &'static str,
        rank: usize,
        accepted: &[usize],
    ) -> Result<(), NormError> {
        if accepted.contains(&rank) {
            return Ok(());
        }
        let expected = accepted
            .iter()
            .map(|rank| format!("{rank}D"))
            .collect::<Vec<_>>()
            .join(" or ");
        Err(NormError::input(
            layer,
            format!("expected {expected} input (got {rank}D input)"),
        ))
    }

    /// The channel axis (axis 1) holds `expected` channels.
    pub(crate) fn channels(
        layer: &'static str,
        dims: &[usize],
        expected: usize,
    ) -> Result<(), NormError> {
        if dims[1] != expected {
            return Err(NormError::input(
                layer,
                format!(
                    "expected input with {expected} channels at dim 1, got {} channels in input of shape {dims:?}",
                    dims[1]
                ),
            ));
        }
        Ok(())
    }

    /// The last dimensions of the input equal `normalized_shape`.
    pub(crate) fn trailing(
        layer: &'static str,
        dims: &[usize],
        normalized_shape: &[usize],
    ) -> Result<(), NormError> {
        if !dims.ends_with(normalized_shape) {
            let pattern = normalized_shape
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(NormError::input(
                layer,
                format!(
                    "normalized_shape is {normalized_shape:?}, expected input with shape [*, {pattern}], got input of shape {dims:?}"
                ),
            ));
        }
        Ok(())
    }
}
