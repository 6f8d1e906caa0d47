//! One split of CIFAR-10 or of the synthetic set, whole or a seeded sample: what a run trains on.

use burn::data::dataset::{Dataset, DatasetError};

use super::rng::SplitMix;
use super::{CifarDataset, DataError, ImageItem, SyntheticCifar};

/// A split of CIFAR-10 or of [`SyntheticCifar`], whole or a seeded random sample of it
/// ([`sample`](Self::sample)), behind one [`Dataset`].
#[derive(Debug, Clone)]
pub struct ImageDataset {
    source: Source,
    /// The images kept, by index into the source; `None` keeps all of them in order.
    indices: Option<Vec<usize>>,
}

#[derive(Debug, Clone)]
enum Source {
    Cifar(CifarDataset),
    Synthetic(SyntheticCifar),
}

impl From<CifarDataset> for ImageDataset {
    fn from(dataset: CifarDataset) -> Self {
        Self {
            source: Source::Cifar(dataset),
            indices: None,
        }
    }
}

impl From<SyntheticCifar> for ImageDataset {
    fn from(dataset: SyntheticCifar) -> Self {
        Self {
            source: Source::Synthetic(dataset),
            indices: None,
        }
    }
}

impl ImageDataset {
    /// At most `len` images drawn without replacement, the same for the same `seed` (a sample,
    /// not the first `len`: class-folder copies are sorted by class).
    pub fn sample(self, len: usize, seed: u64) -> Self {
        let total = self.source_len();
        if len >= total {
            return self;
        }
        // A partial Fisher–Yates shuffle: the first `len` places of a seeded permutation.
        let mut order: Vec<usize> = (0..total).collect();
        let mut rng = SplitMix(seed ^ 0x5A3D_1E2B_C0FF_EE11);
        for i in 0..len {
            let j = i + (rng.next() % (total - i) as u64) as usize;
            order.swap(i, j);
        }
        order.truncate(len);
        Self {
            indices: Some(order),
            ..self
        }
    }

    fn source_len(&self) -> usize {
        match &self.source {
            Source::Cifar(dataset) => dataset.len(),
            Source::Synthetic(dataset) => dataset.len(),
        }
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
        match &self.source {
            Source::Cifar(dataset) => dataset.get(source_index),
            Source::Synthetic(dataset) => dataset.get(source_index),
        }
    }

    fn len(&self) -> usize {
        match &self.indices {
            Some(indices) => indices.len(),
            None => self.source_len(),
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
        let indices = sample.indices.clone().unwrap();
        let mut sorted = indices.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 30, "drawn without replacement");
        assert!(sorted.iter().all(|&i| i < 100));
        assert_eq!(full.clone().sample(30, 9).indices.unwrap(), indices);
        assert_ne!(full.clone().sample(30, 10).indices.unwrap(), indices);
        assert_eq!(sample.get(0).unwrap(), full.get(indices[0]).unwrap());
        assert!(sample.get(30).is_err());
        assert_eq!(
            full.clone().sample(500, 1).len(),
            100,
            "a sample never grows"
        );
    }
}
