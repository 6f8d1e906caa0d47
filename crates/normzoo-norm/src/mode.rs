//! Train/eval behaviour of the layers that keep running statistics.

use burn::module::{Flag, Param};
use burn::tensor::Device;

/// Whether [`BatchNorm`](crate::BatchNorm) and [`InstanceNorm`](crate::InstanceNorm) normalize
/// with the statistics of the batch (and update their running statistics), or with the running
/// statistics they have kept.
///
/// PyTorch decides with `module.train()` / `module.eval()`; burn decides with the device and the
/// module's training flag. [`StatsMode::Auto`] follows burn; the other two force a behaviour
/// whatever the device, e.g. [`StatsMode::Train`] to recalibrate running statistics on a plain
/// (non-autodiff) device without building a graph, or [`StatsMode::Eval`] to freeze them while
/// fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatsMode {
    /// Train on an autodiff device while the module's training flag is on (burn's convention:
    /// [`Module::valid`](burn::module::Module::valid) and
    /// [`Module::freeze`](burn::module::Module::freeze) turn it off); evaluate otherwise.
    #[default]
    Auto,
    /// Always use batch statistics and update the running statistics (PyTorch's `.train()`).
    Train,
    /// Always use the running statistics (PyTorch's `.eval()`).
    Eval,
}

impl StatsMode {
    /// Whether a forward pass on `device` takes the training path.
    pub(crate) fn is_training(self, training_flag: &Param<Flag>, device: &Device) -> bool {
        match self {
            Self::Auto => device.is_autodiff() && training_flag.is_enabled(),
            Self::Train => true,
            Self::Eval => false,
        }
    }
}
