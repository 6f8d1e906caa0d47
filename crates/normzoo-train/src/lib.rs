//! Training normzoo's architectures on burn-train.
//!
//! - [`data`]: CIFAR-10 from a local copy in either layout it is distributed in (the binary
//!   batches or class folders of images), or downloaded through burn-dataset after checking the
//!   network; [`data::FashionMnist`] from its IDX files (Debian's `dataset-fashion-mnist`);
//!   [`data::SyntheticCifar`], a deterministic CIFAR-shaped set for offline runs; one sampled
//!   dataset type and one batcher for all of them, each with its own normalization and
//!   augmentation.
//! - [`RunConfig`] and [`train`]: the image-classification recipes (SGD with Nesterov momentum,
//!   weight decay, one-cycle or cosine learning rate) run by burn-train's `Learner` with its
//!   terminal UI (or [`LineRenderer`]'s progress lines when the output is not a terminal),
//!   per-epoch validation, checkpoints, a metrics CSV, and resuming from the last checkpoint.
//! - [`Classifier`]: an image classifier as burn-train trains it.
//! - [`Precision`] and [`MixedPrecision`]: training in f16 or bf16 with f32 master weights,
//!   the normalizers in f32 and dynamic loss scaling ([`LossScaler`]), as PyTorch's
//!   `torch.autocast` with a `GradScaler`.
//! - [`progress`]: loss curves, pictures and exits for the examples.
//! - [`sequence`]: a generated sequence task (two-digit addition as text) and the training loop
//!   of the `transformer` and `lstm` examples.
//! - [`shapes`]: generated shapes with segmentation masks, and the training loop of the `unet`
//!   example.
//! - [`translation`]: two generated image domains and the CycleGAN training loop of the
//!   `cyclegan` example.

#![warn(missing_docs)]

mod adam;
mod classifier;
pub mod data;
mod error;
#[cfg(test)]
mod fixed_weights;
mod log_lines;
pub mod metrics;
mod precision;
pub mod progress;
mod recipe;
mod run;
pub mod sequence;
pub mod shapes;
pub mod translation;

pub use adam::train_with_adam;
pub use classifier::Classifier;
pub use error::TrainError;
pub use log_lines::LineRenderer;
pub use precision::{LossScaler, MixedPrecision, Precision, gradients, unscale_gradients};
pub use recipe::{
    DatasetSource, EARLIER_MODEL_NAMES, RunConfig, Schedule, cifar_model, cifar_models,
};
pub use run::{
    CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, MODEL_FILE, REPORT_FILE, Resume, RunOptions,
    RunReport, evaluate, evaluate_in_training_mode, train,
};

/// The first CPU backend's device, for tests that no backend changes.
#[cfg(test)]
pub(crate) fn cpu() -> burn::tensor::Device {
    normzoo_kernels::backend::cpu_test_devices().remove(0).1
}
