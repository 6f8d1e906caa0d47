//! Image classification data: CIFAR-10 from disk and a synthetic stand-in; ImageNet's evaluation
//! transform and class names for pretrained models.

mod batcher;
mod cifar;
mod download;
mod error;
pub mod imagenet;
mod rng;
mod sampled;
mod synthetic;

pub use batcher::{CIFAR10_MEAN, CIFAR10_STD, ImageBatch, ImageBatcher};
pub use cifar::{CIFAR10_CLASSES, CifarDataset, CifarLayout, Split};
pub use download::{CIFAR10_URL, cifar10_cache_dir, download_cifar10};
pub use error::DataError;
pub(crate) use rng::SplitMix;
pub use sampled::ImageDataset;
pub use synthetic::SyntheticCifar;

/// One 32×32 RGB image and its class, as CIFAR-10 stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageItem {
    /// The pixels, channel-major (`[3, 32, 32]`: the red plane, then green, then blue), one byte
    /// each: CIFAR's own binary layout.
    pub pixels: Vec<u8>,
    /// The class index, `0..10`.
    pub label: usize,
}

/// Height and width of every image.
pub const IMAGE_SIZE: usize = 32;
/// Bytes of one image (`3·32·32`).
pub const IMAGE_BYTES: usize = 3 * IMAGE_SIZE * IMAGE_SIZE;
