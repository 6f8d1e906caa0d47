//! Why an experiment could not run or write its results.

use std::fmt;
use std::path::PathBuf;

use normzoo_models::ModelError;
use normzoo_norm::NormError;

/// Why an experiment could not run or write its results.
#[derive(Debug)]
pub enum LabError {
    /// A model could not be built.
    Model(ModelError),
    /// A normalizer could not be built.
    Norm(NormError),
    /// A figure could not be drawn.
    Plot(String),
    /// A result file could not be written.
    Write(PathBuf, String),
    /// A result file could not be read, or does not hold what the lab wrote there.
    Read(PathBuf, String),
    /// An experiment name the lab does not know.
    UnknownExperiment(String),
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model(err) => err.fmt(f),
            Self::Norm(err) => err.fmt(f),
            Self::Plot(message) => write!(f, "cannot draw a figure: {message}"),
            Self::Write(path, message) => write!(f, "cannot write {}: {message}", path.display()),
            Self::Read(path, message) => write!(f, "cannot read {}: {message}", path.display()),
            Self::UnknownExperiment(name) => write!(
                f,
                "unknown experiment `{name}`: expected one of {}",
                crate::Experiment::ALL
                    .iter()
                    .map(|e| e.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl std::error::Error for LabError {}

impl From<ModelError> for LabError {
    fn from(err: ModelError) -> Self {
        Self::Model(err)
    }
}

impl From<NormError> for LabError {
    fn from(err: NormError) -> Self {
        Self::Norm(err)
    }
}

/// Attaches `path` to an I/O error while reading.
pub(crate) fn read_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LabError {
    let path = path.into();
    move |err| LabError::Read(path, err.to_string())
}

/// Attaches `path` to an I/O error while writing.
pub(crate) fn write_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LabError {
    let path = path.into();
    move |err| LabError::Write(path, err.to_string())
}
