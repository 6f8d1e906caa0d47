//! One split of any image dataset, whole or a seeded sample, with its [`ImageSpec`]: what a run
//! trains on.

use std::fmt;
use std::sync::Arc;

use burn::data::dataset::{Dataset, DatasetError};

use super::rng::SplitMix;
use super::{CifarDataset, DataError, FashionMnist, ImageItem, ImageSpec, SyntheticCifar};

/// A split of an image dataset, whole or a seeded random sample of it
/// ([`sample`](Self::sample)), with the [`ImageSpec`] that says how its images are batched.
///
/// CIFAR-10, Fashion-MNIST and the synthetic set convert into it with `.into()`; any other
/// `Dataset<ImageItem>` joins with [`new`](Self::new).
#[derive(Clone)]
pub struct ImageDataset {
    source: Arc<dyn Dataset<ImageItem>>,
    spec: ImageSpec,
    /// The images kept, by index into the source; `None` keeps all of them in order.
    indices: Option<Arc<[usize]>>,
}

impl ImageDataset {
    /// All of `source`, whose images `spec` describes.
    ///
    /// # Panics
    ///
    /// When `spec` describes images the batcher cannot place (see [`ImageSpec`]).
    pub fn new(source: impl Dataset<ImageItem> + 'static, spec: ImageSpec) -> Self {
        spec.check();
        Self {
            source: Arc::new(source),
            spec,
            indices: None,
        }
    }

    /// How the images are stored, normalized and augmented.
    pub fn spec(&self) -> ImageSpec {
        self.spec
    }

    /// At most `len` images drawn without replacement, the same for the same `seed` (a sample,
    /// not the first `len`: class-folder copies are sorted by class).
    pub fn sample(self, len: usize, seed: u64) -> Self {
        if len >= self.len() {
            return self;
        }
        self.permuted(len, seed)
    }

    /// Every image, in an order drawn from `seed` (the same for the same seed): for reading a
    /// split as a stream of batches without an epoch's worth of one class at a time.
    pub fn shuffled(self, seed: u64) -> Self {
        let len = self.len();
        self.permuted(len, seed)
    }

    /// The first `len` places of a seeded permutation of the images kept (a partial
    /// Fisher–Yates shuffle).
    fn permuted(self, len: usize, seed: u64) -> Self {
        let mut order: Vec<usize> = match &self.indices {
            Some(indices) => indices.to_vec(),
            None => (0..self.source.len()).collect(),
        };
        let total = order.len();
        let mut rng = SplitMix(seed ^ 0x5A3D_1E2B_C0FF_EE11);
        for i in 0..len {
            let j = i + (rng.next() % (total - i) as u64) as usize;
            order.swap(i, j);
        }
        order.truncate(len);
        Self {
            indices: Some(order.into()),
            ..self
        }
    }
}

impl From<CifarDataset> for ImageDataset {
    fn from(dataset: CifarDataset) -> Self {
        Self::new(dataset, CifarDataset::SPEC)
    }
}

impl From<FashionMnist> for ImageDataset {
    fn from(dataset: FashionMnist) -> Self {
        Self::new(dataset, FashionMnist::SPEC)
    }
}

impl From<SyntheticCifar> for ImageDataset {
    fn from(dataset: SyntheticCifar) -> Self {
        Self::new(dataset, SyntheticCifar::SPEC)
    }
}

impl fmt::Debug for ImageDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageDataset")
            .field("spec", &self.spec.name)
            .field("len", &self.len())
            .field("of", &self.source.len())
            .finish()
    }
}

impl Dataset<ImageItem> for ImageDataset {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        let source_index = match &self.indices {
            Some(indices) => *indices.get(index).ok_or_else(|| {
                DatasetError::new(DataError::IndexOutOfRange {
                    index,
                    len: indices.len(),
                })
            })?,
            None => index,
        };
        self.source.get(source_index)
    }

    fn len(&self) -> usize {
        match &self.indices {
            Some(indices) => indices.len(),
            None => self.source.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_seeded_distinct_and_within_the_source() {
        let full = ImageDataset::from(SyntheticCifar::new(100, 3));
        let sample = full.clone().sample(30, 9);
        assert_eq!(sample.len(), 30);
        let indices = sample.indices.clone().unwrap().to_vec();
        let mut sorted = indices.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 30, "drawn without replacement");
        assert!(sorted.iter().all(|&i| i < 100));
        assert_eq!(*full.clone().sample(30, 9).indices.unwrap(), *indices);
        assert_ne!(*full.clone().sample(30, 10).indices.unwrap(), *indices);
        assert_eq!(sample.get(0).unwrap(), full.get(indices[0]).unwrap());
        assert!(sample.get(30).is_err());
        assert_eq!(
            full.clone().sample(500, 1).len(),
            100,
            "a sample never grows"
        );
    }

    #[test]
    fn a_shuffle_keeps_every_image_once_in_a_seeded_order() {
        let full = ImageDataset::from(SyntheticCifar::new(50, 3));
        let shuffled = full.clone().shuffled(4);
        let order = shuffled.indices.clone().unwrap().to_vec();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(order, sorted, "not the original order");
        assert_eq!(*full.clone().shuffled(4).indices.unwrap(), *order);
        assert_ne!(*full.shuffled(5).indices.unwrap(), *order);
        // A sample's shuffle keeps the sample.
        let sample = ImageDataset::from(SyntheticCifar::new(50, 3)).sample(10, 1);
        let mut kept = sample.indices.clone().unwrap().to_vec();
        let mut reshuffled = sample.shuffled(2).indices.unwrap().to_vec();
        kept.sort();
        reshuffled.sort();
        assert_eq!(kept, reshuffled);
    }
}
