//! Image classification data: CIFAR-10 and Fashion-MNIST from disk and a synthetic stand-in,
//! behind one sampled [`ImageDataset`] and one [`ImageBatcher`]; class-folder directories
//! ([`ImageFolder`]); ImageNet's evaluation transform and class names for pretrained models.
//!
//! What is particular to a dataset is its reader and its [`ImageSpec`] (stored shape,
//! normalization, augmentation); sampling, batching and augmenting are shared.

mod batcher;
mod cifar;
mod download;
mod error;
mod fashion_mnist;
mod image_folder;
pub mod imagenet;
mod rng;
mod sampled;
mod spec;
mod synthetic;

use burn::data::dataset::DatasetError;

pub use batcher::{ImageBatch, ImageBatcher};
pub use cifar::{CIFAR10_CLASSES, CifarDataset, CifarLayout, Split};
pub use download::{CIFAR10_URL, cifar10_cache_dir, download_cifar10};
pub use error::DataError;
pub use fashion_mnist::{
    FASHION_MNIST_CLASSES, FASHION_MNIST_DEBIAN_DIR, FASHION_MNIST_ENV, FashionMnist,
};
pub use image_folder::ImageFolder;
pub(crate) use rng::SplitMix;
pub use sampled::ImageDataset;
pub use spec::{Augmentation, INPUT_CHANNELS, INPUT_SIZE, ImageSpec};
pub use synthetic::SyntheticCifar;

/// One image and its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageItem {
    /// The pixels, channel-major at the dataset's own size (`[C, H, W]`: for CIFAR-10 the red
    /// plane, then green, then blue), one byte each, as the datasets store them.
    pub pixels: Vec<u8>,
    /// The class index, `0..10`.
    pub label: usize,
}

/// The item at `index` of an in-memory dataset, or an error naming the index and the length.
fn item_at(items: &[ImageItem], index: usize) -> Result<ImageItem, DatasetError> {
    items.get(index).cloned().ok_or_else(|| {
        DatasetError::new(DataError::IndexOutOfRange {
            index,
            len: items.len(),
        })
    })
}
