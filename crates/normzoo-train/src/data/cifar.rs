//! CIFAR-10 from a local copy, in the binary-batch or the class-folder layout.

use std::fs;
use std::path::{Path, PathBuf};

use burn::data::dataset::{Dataset, DatasetError};

use super::{Augmentation, DataError, ImageFolder, ImageItem, ImageSpec, item_at};

/// Side of CIFAR-10's square RGB images.
pub(super) const IMAGE_SIZE: usize = 32;
/// Bytes of one image (`3·32·32`).
pub(super) const IMAGE_BYTES: usize = 3 * IMAGE_SIZE * IMAGE_SIZE;

/// CIFAR-10's class names, in label order (which is also alphabetical order).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The training or the test part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// 50,000 images: `data_batch_1.bin` … `data_batch_5.bin`, or `train/`.
    Train,
    /// 10,000 images: `test_batch.bin`, or `test/`.
    Test,
}

/// Where a CIFAR-10 copy lives and in which layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CifarLayout {
    /// The directory holding the original binary batches (`cifar-10-batches-bin`).
    Binary(PathBuf),
    /// The directory holding `train/` and `test/`, each with one folder of images per class.
    Folders(PathBuf),
}

/// One binary record: a label byte, then the 3072 pixel bytes.
const RECORD_BYTES: usize = 1 + IMAGE_BYTES;

/// CIFAR-10 (or any 10-class, 32×32 RGB set in the same layouts), held in memory.
#[derive(Debug, Clone)]
pub struct CifarDataset {
    items: Vec<ImageItem>,
}

impl CifarDataset {
    /// RGB, 32×32; CIFAR-10's per-channel mean and standard deviation of the training set (the
    /// population values; the widely copied `0.2023, 0.1994, 0.2010` are a miscomputation); the
    /// standard augmentation: random crops of the image zero-padded by 4, horizontal flips.
    pub const SPEC: ImageSpec = ImageSpec {
        name: "CIFAR-10",
        channels: 3,
        size: IMAGE_SIZE,
        mean: &[0.4914, 0.4822, 0.4465],
        std: &[0.2470, 0.2435, 0.2616],
        augmentation: Augmentation {
            crop_padding: 4,
            horizontal_flip: true,
            erase_probability: 0.0,
        },
    };

    /// The images in the training and the test split.
    pub const LEN: [usize; 2] = [50_000, 10_000];

    /// Finds the layout of the copy in `dir`: the binary batches in `dir` itself or in
    /// `dir/cifar-10-batches-bin` (what the official archive unpacks to), or `dir/train` and
    /// `dir/test` class folders.
    ///
    /// # Errors
    ///
    /// [`DataError::MissingDirectory`] when `dir` is not a directory,
    /// [`DataError::UnknownLayout`] when it holds neither layout.
    pub fn detect(dir: &Path) -> Result<CifarLayout, DataError> {
        if !dir.is_dir() {
            return Err(DataError::MissingDirectory { path: dir.into() });
        }
        for candidate in [dir.to_path_buf(), dir.join("cifar-10-batches-bin")] {
            if candidate.join("data_batch_1.bin").is_file()
                || candidate.join("test_batch.bin").is_file()
            {
                return Ok(CifarLayout::Binary(candidate));
            }
        }
        if dir.join("train").is_dir() || dir.join("test").is_dir() {
            return Ok(CifarLayout::Folders(dir.into()));
        }
        Err(DataError::UnknownLayout { path: dir.into() })
    }

    /// Reads one split of the copy in `dir`, whichever layout it is in.
    ///
    /// # Errors
    ///
    /// As [`detect`](Self::detect), then [`DataError::Io`] for a missing batch or folder,
    /// [`DataError::TruncatedBatch`], [`DataError::BadLabel`] and [`DataError::BadImage`].
    pub fn from_dir(dir: impl AsRef<Path>, split: Split) -> Result<Self, DataError> {
        match Self::detect(dir.as_ref())? {
            CifarLayout::Binary(dir) => {
                let files: Vec<PathBuf> = match split {
                    Split::Train => (1..=5)
                        .map(|i| dir.join(format!("data_batch_{i}.bin")))
                        .collect(),
                    Split::Test => vec![dir.join("test_batch.bin")],
                };
                Self::from_binary_batches(&files)
            }
            CifarLayout::Folders(dir) => Self::from_class_folders(dir.join(match split {
                Split::Train => "train",
                Split::Test => "test",
            })),
        }
    }

    /// Reads binary batches: records of one label byte and 3072 pixel bytes (channel-major).
    ///
    /// # Errors
    ///
    /// [`DataError::Io`], [`DataError::TruncatedBatch`] when a file is not a whole number of
    /// records, [`DataError::BadLabel`] for a label of 10 or more.
    pub fn from_binary_batches(files: &[PathBuf]) -> Result<Self, DataError> {
        let mut items = Vec::new();
        for path in files {
            let bytes = fs::read(path).map_err(|source| DataError::Io {
                path: path.clone(),
                source,
            })?;
            if bytes.is_empty() || bytes.len() % RECORD_BYTES != 0 {
                return Err(DataError::TruncatedBatch {
                    path: path.clone(),
                    len: bytes.len() as u64,
                });
            }
            for record in bytes.chunks_exact(RECORD_BYTES) {
                let label = record[0] as usize;
                if label >= CIFAR10_CLASSES.len() {
                    return Err(DataError::BadLabel {
                        path: path.clone(),
                        label,
                    });
                }
                items.push(ImageItem {
                    pixels: record[1..].to_vec(),
                    label,
                });
            }
        }
        Ok(Self { items })
    }

    /// Reads `root/<class>/<image>` ([`ImageFolder`]) for up to ten classes; labels follow the
    /// sorted class names (CIFAR-10's own order for its names). PNG and JPEG images of 32×32
    /// RGB.
    ///
    /// # Errors
    ///
    /// [`DataError::Io`] for an unreadable folder, [`DataError::UnknownLayout`] for no class
    /// folders or more than ten, [`DataError::EmptyClassFolder`] for a class folder without
    /// images, [`DataError::BadImage`] for an image that does not decode or is not 32×32.
    pub fn from_class_folders(root: impl AsRef<Path>) -> Result<Self, DataError> {
        let root = root.as_ref();
        let unknown = || DataError::UnknownLayout { path: root.into() };
        let folder = ImageFolder::open(root).map_err(|err| match err {
            DataError::NoClassFolders { .. } => unknown(),
            err => err,
        })?;
        if folder.classes().len() > CIFAR10_CLASSES.len() {
            return Err(unknown());
        }
        let items = folder
            .images()
            .iter()
            .map(|(path, label)| {
                Ok(ImageItem {
                    pixels: read_image(path)?,
                    label: *label,
                })
            })
            .collect::<Result<_, DataError>>()?;
        Ok(Self { items })
    }

    /// The images, in file order.
    pub fn items(&self) -> &[ImageItem] {
        &self.items
    }
}

/// A 32×32 RGB image file as channel-major bytes.
fn read_image(path: &Path) -> Result<Vec<u8>, DataError> {
    let bad = |reason: String| DataError::BadImage {
        path: path.into(),
        reason,
    };
    let image = image::open(path).map_err(|err| bad(format!("cannot decode: {err}")))?;
    if image.width() as usize != IMAGE_SIZE || image.height() as usize != IMAGE_SIZE {
        return Err(bad(format!(
            "expected a {IMAGE_SIZE}×{IMAGE_SIZE} image, got {}×{}",
            image.width(),
            image.height()
        )));
    }
    let rgb = image.to_rgb8();
    let plane = IMAGE_SIZE * IMAGE_SIZE;
    let mut pixels = vec![0; IMAGE_BYTES];
    for (i, pixel) in rgb.pixels().enumerate() {
        for channel in 0..3 {
            pixels[channel * plane + i] = pixel[channel];
        }
    }
    Ok(pixels)
}

impl Dataset<ImageItem> for CifarDataset {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        item_at(&self.items, index)
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary batch of `n` records whose pixels encode their index and label.
    fn write_batch(path: &Path, n: usize) {
        let mut bytes = Vec::with_capacity(n * RECORD_BYTES);
        for i in 0..n {
            bytes.push((i % 10) as u8);
            bytes.extend((0..IMAGE_BYTES).map(|p| ((i + p) % 256) as u8));
        }
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn binary_batches_in_either_place() {
        for nested in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let batches = match nested {
                true => dir.path().join("cifar-10-batches-bin"),
                false => dir.path().to_path_buf(),
            };
            fs::create_dir_all(&batches).unwrap();
            for i in 1..=5 {
                write_batch(&batches.join(format!("data_batch_{i}.bin")), 3);
            }
            write_batch(&batches.join("test_batch.bin"), 4);
            let train = CifarDataset::from_dir(dir.path(), Split::Train).unwrap();
            let test = CifarDataset::from_dir(dir.path(), Split::Test).unwrap();
            assert_eq!((train.len(), test.len()), (15, 4));
            let item = test.get(3).unwrap();
            assert_eq!(item.label, 3);
            assert_eq!(&item.pixels[..3], &[3, 4, 5]);
            assert!(test.get(4).is_err());
        }
    }

    #[test]
    fn a_truncated_batch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_batch(&dir.path().join("test_batch.bin"), 2);
        let file = dir.path().join("test_batch.bin");
        let bytes = fs::read(&file).unwrap();
        fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
        let err = CifarDataset::from_dir(dir.path(), Split::Test).unwrap_err();
        assert!(
            matches!(err, DataError::TruncatedBatch { len: 6046, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("is truncated or not a CIFAR-10 batch: 6046 bytes")
        );
        // The training batches are missing altogether.
        let err = CifarDataset::from_dir(dir.path(), Split::Train).unwrap_err();
        assert!(err.to_string().starts_with("cannot read "), "{err}");
        assert!(err.to_string().contains("data_batch_1.bin"), "{err}");
    }

    #[test]
    fn missing_and_unrecognised_directories_are_refused() {
        let err = CifarDataset::from_dir("/nonexistent/cifar", Split::Train).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dataset directory /nonexistent/cifar does not exist"
        );
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("readme.txt"), "hello").unwrap();
        let err = CifarDataset::from_dir(dir.path(), Split::Train).unwrap_err();
        assert!(matches!(err, DataError::UnknownLayout { .. }));
        assert!(err.to_string().contains("holds no CIFAR-10 copy"), "{err}");
    }

    #[test]
    fn class_folders_decode_to_channel_major_pixels() {
        let dir = tempfile::tempdir().unwrap();
        for (class, color) in [("airplane", [255u8, 0, 0]), ("truck", [0, 0, 255])] {
            let folder = dir.path().join("train").join(class);
            fs::create_dir_all(&folder).unwrap();
            let image = image::RgbImage::from_pixel(32, 32, image::Rgb(color));
            image.save(folder.join("0001.png")).unwrap();
        }
        let train = CifarDataset::from_dir(dir.path(), Split::Train).unwrap();
        assert_eq!(train.len(), 2);
        let truck = train.get(1).unwrap();
        assert_eq!(truck.label, 1); // the second class folder in sorted order
        assert!(truck.pixels[..2048].iter().all(|&p| p == 0)); // red and green planes
        assert!(truck.pixels[2048..].iter().all(|&p| p == 255)); // blue plane

        let wrong = dir.path().join("train").join("truck").join("0002.png");
        image::RgbImage::new(16, 16).save(&wrong).unwrap();
        let err = CifarDataset::from_dir(dir.path(), Split::Train).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("expected a 32×32 image, got 16×16"),
            "{err}"
        );
    }
}
