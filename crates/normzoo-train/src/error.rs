//! Why a training run could not start or finish.

use std::fmt;
use std::path::PathBuf;

use normzoo_kernels::backend::DeviceError;
use normzoo_models::ModelError;

use crate::data::DataError;
use crate::precision::Precision;

/// Why a training run could not start or finish. Every variant says what was expected, what
/// came, and what to do about it; none of them is raised after a user's file was changed.
#[derive(Debug)]
pub enum TrainError {
    /// The dataset could not be read.
    Data(DataError),
    /// The model could not be built (unknown name, a normalizer that does not apply, …).
    Model(ModelError),
    /// A setting is out of range.
    InvalidConfig {
        /// The setting, as the command line spells it (e.g. `--batch-size`).
        setting: &'static str,
        /// What was expected and what came.
        message: String,
    },
    /// A `--device` that is not compiled into this build, or that the machine cannot run.
    Device(DeviceError),
    /// A `--precision` the device does not compute in.
    UnsupportedPrecision {
        /// The precision asked for.
        precision: Precision,
        /// The device, as burn shows it.
        device: String,
    },
    /// The artifact directory already holds a run, and resuming was not asked for.
    ArtifactsExist {
        /// The artifact directory.
        dir: PathBuf,
    },
    /// Resuming was asked for but there is nothing to resume.
    NothingToResume {
        /// The artifact directory.
        dir: PathBuf,
        /// What is missing.
        missing: String,
    },
    /// A checkpoint exists but cannot be read.
    CorruptCheckpoint {
        /// The file.
        path: PathBuf,
        /// What went wrong reading it.
        reason: String,
        /// The newest earlier epoch whose checkpoint reads, if any.
        intact_epoch: Option<usize>,
    },
    /// A resumed run was given a setting that differs from the saved one.
    ConfigMismatch {
        /// The setting.
        setting: &'static str,
        /// The value the run was started with.
        saved: String,
        /// The value given now.
        given: String,
    },
    /// Reading or writing a file failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// burn-train stopped with an error.
    Training(String),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Data(err) => err.fmt(f),
            Self::Model(err) => err.fmt(f),
            Self::InvalidConfig { setting, message } => write!(f, "{setting}: {message}"),
            Self::Device(err) => write!(f, "--device: {err}"),
            Self::UnsupportedPrecision { precision, device } => write!(
                f,
                "--precision: {precision} is not supported on {device}; f32 is everywhere"
            ),
            Self::ArtifactsExist { dir } => write!(
                f,
                "{} already holds a training run; pass --resume to continue it, or choose \
                 another --artifact-dir (nothing was changed)",
                dir.display()
            ),
            Self::NothingToResume { dir, missing } => write!(
                f,
                "--resume: {} holds no run to resume: {missing}",
                dir.display()
            ),
            Self::CorruptCheckpoint {
                path,
                reason,
                intact_epoch,
            } => {
                write!(
                    f,
                    "checkpoint {} cannot be read ({reason}); nothing was changed",
                    path.display()
                )?;
                match intact_epoch {
                    Some(epoch) => write!(
                        f,
                        "; the checkpoint of epoch {epoch} is intact: resume from it with \
                         --resume-epoch {epoch}"
                    ),
                    None => write!(f, "; no earlier checkpoint is intact"),
                }
            }
            Self::ConfigMismatch {
                setting,
                saved,
                given,
            } => write!(
                f,
                "{setting}: the run being resumed was started with `{saved}`, not `{given}`; \
                 leave it out to keep the saved value"
            ),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Training(message) => write!(f, "training failed: {message}"),
        }
    }
}

impl std::error::Error for TrainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Data(err) => Some(err),
            Self::Model(err) => Some(err),
            Self::Device(err) => Some(err),
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<DataError> for TrainError {
    fn from(err: DataError) -> Self {
        Self::Data(err)
    }
}

impl From<DeviceError> for TrainError {
    fn from(err: DeviceError) -> Self {
        Self::Device(err)
    }
}

impl From<ModelError> for TrainError {
    fn from(err: ModelError) -> Self {
        Self::Model(err)
    }
}

/// Attaches `path` to an I/O error.
pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
