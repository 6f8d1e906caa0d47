//! The images the lab's image experiments train on and are scored on: Fashion-MNIST when it is
//! installed, generated images otherwise.

use std::path::Path;

use normzoo_train::data::{DataError, FashionMnist, ImageDataset, Split, SyntheticCifar};

/// The images of the lab's image experiments (convergence, gradients, batch-size, swap, init,
/// train-eval, distributions, correlation).
///
/// Every model takes `[N, 3, 32, 32]` inputs: Fashion-MNIST's 28×28 grey images are centred on
/// 32×32 and the grey channel repeated, as `resnet_cifar` does (see its [`ImageSpec`]). The
/// images are normalized with the dataset's mean and standard deviation and never augmented:
/// the experiments compare normalizers under one recipe, not recipes.
///
/// [`ImageSpec`]: normzoo_train::data::ImageSpec
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per lab, never in a collection
pub enum LabData {
    /// Generated CIFAR-shaped gratings ([`SyntheticCifar`]): nothing to install, an endless
    /// training stream.
    Generated,
    /// A dataset read from disk: the training split, streamed in a seeded order (and again
    /// when it runs out), and the test split, of which each experiment scores a seeded sample.
    Real {
        /// The training split.
        train: ImageDataset,
        /// The test split.
        test: ImageDataset,
    },
}

impl LabData {
    /// Fashion-MNIST from `dir`, or from where [`FashionMnist::locate`] looks.
    ///
    /// # Errors
    ///
    /// When a file is missing (naming the package that installs them) or does not read as
    /// Fashion-MNIST, as [`FashionMnist::new`] says.
    pub fn fashion_mnist(dir: Option<&Path>) -> Result<Self, DataError> {
        Ok(Self::Real {
            train: FashionMnist::new(Split::Train, dir)?.into(),
            test: FashionMnist::new(Split::Test, dir)?.into(),
        })
    }

    /// Fashion-MNIST when it is installed where [`FashionMnist::locate`] looks, else the
    /// generated images: what the lab runs on by default.
    ///
    /// # Errors
    ///
    /// When Fashion-MNIST is there but does not read: a damaged copy is reported, not passed
    /// over.
    pub fn installed_or_generated() -> Result<Self, DataError> {
        match Self::fashion_mnist(None) {
            Err(DataError::NotInstalled { .. }) => Ok(Self::Generated),
            data => data,
        }
    }

    /// The dataset's name: `"Fashion-MNIST"`, or `"generated"`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Generated => "generated",
            Self::Real { train, .. } => train.spec().name,
        }
    }

    /// The images as a report names them, e.g. "Fashion-MNIST images".
    pub fn images(&self) -> String {
        format!("{} images", self.name())
    }

    /// The training images in the order a run draws them (`seed` orders a real dataset), and
    /// `test_len` test images (a seeded sample of a real test split, at most all of it).
    pub(crate) fn splits(&self, seed: u64, test_len: usize) -> (ImageDataset, ImageDataset) {
        match self {
            Self::Generated => (
                SyntheticCifar::new(usize::MAX, seed).into(),
                SyntheticCifar::new(test_len, seed ^ 0x7E57).into(),
            ),
            Self::Real { train, test } => (
                train.clone().shuffled(seed),
                test.clone().sample(test_len, seed ^ 0x7E57),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_copy_is_named_and_a_damaged_one_is_not_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let err = LabData::fashion_mnist(Some(dir.path())).unwrap_err();
        assert!(matches!(err, DataError::NotInstalled { .. }), "{err}");
        assert!(err.to_string().contains("dataset-fashion-mnist"), "{err}");

        for name in [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ] {
            std::fs::write(dir.path().join(name), b"not an IDX file").unwrap();
        }
        let err = LabData::fashion_mnist(Some(dir.path())).unwrap_err();
        assert!(!matches!(err, DataError::NotInstalled { .. }), "{err}");
    }

    #[test]
    fn generated_splits_are_an_endless_stream_and_the_test_images_asked_for() {
        let (train, test) = LabData::Generated.splits(3, 20);
        use burn::data::dataset::Dataset;
        assert_eq!(train.len(), usize::MAX);
        assert_eq!(test.len(), 20);
        assert_eq!(LabData::Generated.images(), "generated images");
    }
}
