//! Fashion-MNIST from its IDX files, gzipped or not.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::data::dataset::{Dataset, DatasetError};
use flate2::read::GzDecoder;

use super::{Augmentation, DataError, ImageItem, ImageSpec, Split, item_at};

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The environment variable naming a directory with Fashion-MNIST's IDX files, looked at when
/// no directory is given.
pub const FASHION_MNIST_ENV: &str = "NORMZOO_FASHION_MNIST_DIR";

/// Where Debian's and Ubuntu's `dataset-fashion-mnist` package installs the files.
pub const FASHION_MNIST_DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Side of Fashion-MNIST's square grey images.
const SIDE: usize = 28;
/// The IDX magic numbers: two zero bytes, the element type (`0x08`, unsigned byte) and the
/// number of dimensions.
const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 60,000 training and 10,000 test 28×28 grey
/// photographs of clothing in ten classes ([`FASHION_MNIST_CLASSES`]), held in memory.
///
/// Read from the four IDX files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each optionally gzipped (`.gz`, as
/// distributed). The PyTorch equivalent is `torchvision.datasets.FashionMNIST`, which reads the
/// same files.
#[derive(Debug, Clone)]
pub struct FashionMnist {
    items: Vec<ImageItem>,
}

impl FashionMnist {
    /// One grey channel, 28×28; mean and standard deviation of the 47,040,000 training pixels
    /// (0.2860, 0.3530); training crops of the zero-padded input (padding 2) and horizontal flips
    /// (clothes photographed from the front are left–right symmetric in kind).
    pub const SPEC: ImageSpec = ImageSpec {
        name: "Fashion-MNIST",
        channels: 1,
        size: SIDE,
        mean: &[0.2860],
        std: &[0.3530],
        augmentation: Augmentation {
            crop_padding: 2,
            horizontal_flip: true,
            erase_probability: 0.0,
        },
    };

    /// The images in the training and the test split.
    pub const LEN: [usize; 2] = [60_000, 10_000];

    /// The directory to read: `dir` when given, else the one [`FASHION_MNIST_ENV`] names, else
    /// [`FASHION_MNIST_DEBIAN_DIR`].
    pub fn locate(dir: Option<&Path>) -> PathBuf {
        locate(dir, env::var_os(FASHION_MNIST_ENV))
    }

    /// Reads one split from `dir`, or from where [`locate`](Self::locate) looks.
    ///
    /// # Errors
    ///
    /// [`DataError::NotInstalled`] when a file is missing (naming the package that installs
    /// them), [`DataError::BadMagic`], [`DataError::WrongLength`] for a truncated file,
    /// [`DataError::BadHeader`] for images other than 28×28 or a corrupt gzip stream,
    /// [`DataError::CountMismatch`] when the images and labels disagree in number, and
    /// [`DataError::BadLabel`] for a label of 10 or more.
    pub fn new(split: Split, dir: Option<&Path>) -> Result<Self, DataError> {
        let dir = Self::locate(dir);
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let images_path = find(&dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find(&dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        Self::from_bytes(
            (&images_path, &read(&images_path)?),
            (&labels_path, &read(&labels_path)?),
        )
    }

    /// Parses an images file and a labels file (their decompressed bytes, with the paths they
    /// came from for messages).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), but for the missing files.
    pub fn from_bytes(
        (images_path, images): (&Path, &[u8]),
        (labels_path, labels): (&Path, &[u8]),
    ) -> Result<Self, DataError> {
        let (image_dims, pixels) = parse_idx(images_path, images, IMAGES_MAGIC)?;
        if image_dims[1..] != [SIDE, SIDE] {
            return Err(DataError::BadHeader {
                path: images_path.into(),
                reason: format!(
                    "expected 28×28 images, the header says {}×{}",
                    image_dims[1], image_dims[2]
                ),
            });
        }
        let (label_dims, labels) = parse_idx(labels_path, labels, LABELS_MAGIC)?;
        if image_dims[0] != label_dims[0] {
            return Err(DataError::CountMismatch {
                images: images_path.into(),
                image_count: image_dims[0],
                labels: labels_path.into(),
                label_count: label_dims[0],
            });
        }
        if let Some(&label) = labels
            .iter()
            .find(|&&label| label as usize >= FASHION_MNIST_CLASSES.len())
        {
            return Err(DataError::BadLabel {
                path: labels_path.into(),
                label: label as usize,
            });
        }
        let items = pixels
            .chunks_exact(SIDE * SIDE)
            .zip(labels)
            .map(|(pixels, &label)| ImageItem {
                pixels: pixels.to_vec(),
                label: label as usize,
            })
            .collect();
        Ok(Self { items })
    }

    /// The images, in file order.
    pub fn items(&self) -> &[ImageItem] {
        &self.items
    }
}

/// `dir`, else `from_env` when set and not empty, else Debian's directory.
fn locate(dir: Option<&Path>, from_env: Option<OsString>) -> PathBuf {
    match (dir, from_env) {
        (Some(dir), _) => dir.into(),
        (None, Some(dir)) if !dir.is_empty() => dir.into(),
        _ => FASHION_MNIST_DEBIAN_DIR.into(),
    }
}

/// `dir/name`, or `dir/name.gz`.
fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let plain = dir.join(name);
    let gzipped = dir.join(format!("{name}.gz"));
    [plain, gzipped]
        .into_iter()
        .find(|path| path.is_file())
        .ok_or_else(|| DataError::NotInstalled {
            dir: dir.into(),
            file: name.into(),
        })
}

/// The file's bytes, decompressed when it starts with gzip's magic bytes.
fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = fs::read(path).map_err(|source| DataError::Io {
        path: path.into(),
        source,
    })?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    GzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .map_err(|err| DataError::BadHeader {
            path: path.into(),
            reason: format!("not a complete gzip file ({err})"),
        })?;
    Ok(out)
}

/// An IDX file of unsigned bytes: a big-endian magic number (`0x0000_08_D`, `D` dimensions), `D`
/// big-endian u32 sizes, then exactly their product of bytes. Returns the sizes and the data.
fn parse_idx<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let word = |i: usize| {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0).unwrap_or(0);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.into(),
            expected: magic,
            found: word(0),
        });
    }
    let rank = (magic & 0xff) as usize;
    let header = 4 * (1 + rank);
    let dims: Vec<usize> = (1..=rank)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| DataError::WrongLength {
            path: path.into(),
            expected: header as u64,
            found: bytes.len() as u64,
        })?;
    let expected = dims
        .iter()
        .try_fold(1u64, |len, &d| len.checked_mul(d as u64))
        .and_then(|data| data.checked_add(header as u64))
        .unwrap_or(u64::MAX);
    if bytes.len() as u64 != expected {
        return Err(DataError::WrongLength {
            path: path.into(),
            expected,
            found: bytes.len() as u64,
        });
    }
    Ok((dims, &bytes[header..]))
}

impl Dataset<ImageItem> for FashionMnist {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        item_at(&self.items, index)
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use proptest::prelude::*;

    use super::*;
    use crate::data::CifarDataset;

    /// An IDX file of bytes: the magic number, the sizes, then `data`.
    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut bytes = magic.to_be_bytes().to_vec();
        for d in dims {
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend(data);
        bytes
    }

    /// `n` 28×28 images whose pixels encode their index, and labels `i % 10`.
    fn split_files(n: usize) -> (Vec<u8>, Vec<u8>) {
        let pixels: Vec<u8> = (0..n * SIDE * SIDE).map(|p| (p / 7 % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        (
            idx(IMAGES_MAGIC, &[n as u32, 28, 28], &pixels),
            idx(LABELS_MAGIC, &[n as u32], &labels),
        )
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// A copy in `dir`: the training split gzipped, the test split plain.
    fn write_copy(dir: &Path, train: usize, test: usize) {
        let (images, labels) = split_files(train);
        fs::write(dir.join("train-images-idx3-ubyte.gz"), gzip(&images)).unwrap();
        fs::write(dir.join("train-labels-idx1-ubyte.gz"), gzip(&labels)).unwrap();
        let (images, labels) = split_files(test);
        fs::write(dir.join("t10k-images-idx3-ubyte"), images).unwrap();
        fs::write(dir.join("t10k-labels-idx1-ubyte"), labels).unwrap();
    }

    fn parse(images: &[u8], labels: &[u8]) -> Result<FashionMnist, DataError> {
        FashionMnist::from_bytes((Path::new("images"), images), (Path::new("labels"), labels))
    }

    #[test]
    fn gzipped_and_plain_files_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        write_copy(dir.path(), 5, 3);
        let train = FashionMnist::new(Split::Train, Some(dir.path())).unwrap();
        let test = FashionMnist::new(Split::Test, Some(dir.path())).unwrap();
        assert_eq!((train.len(), test.len()), (5, 3));
        let (images, labels) = split_files(5);
        let item = train.get(4).unwrap();
        assert_eq!(item.label, 4);
        assert_eq!(item.pixels, images[16 + 4 * 784..16 + 5 * 784]);
        assert_eq!(test.get(2).unwrap(), train.get(2).unwrap());
        assert!(test.get(3).is_err());
        assert_eq!(parse(&images, &labels).unwrap().items(), train.items());
    }

    #[test]
    fn the_directory_comes_from_the_flag_then_the_environment_then_debian() {
        let (flag, from_env) = (Path::new("/data/flag"), OsString::from("/data/env"));
        assert_eq!(locate(Some(flag), Some(from_env.clone())), flag);
        assert_eq!(locate(None, Some(from_env)), Path::new("/data/env"));
        assert_eq!(
            locate(None, Some(OsString::new())),
            Path::new(FASHION_MNIST_DEBIAN_DIR)
        );
        assert_eq!(locate(None, None), Path::new(FASHION_MNIST_DEBIAN_DIR));
    }

    #[test]
    fn missing_files_name_the_package_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing-here");
        let err = FashionMnist::new(Split::Train, Some(&missing)).unwrap_err();
        assert!(matches!(err, DataError::NotInstalled { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("apt-get install dataset-fashion-mnist"),
            "{message}"
        );
        assert!(message.contains("train-images-idx3-ubyte"), "{message}");
        assert!(message.contains(FASHION_MNIST_ENV), "{message}");

        // The test split's labels alone are missing.
        write_copy(dir.path(), 2, 2);
        fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
        assert!(FashionMnist::new(Split::Train, Some(dir.path())).is_ok());
        let message = FashionMnist::new(Split::Test, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz) is missing"),
            "{message}"
        );
    }

    #[test]
    fn a_wrong_magic_number_is_refused() {
        let (images, labels) = split_files(2);
        // The files swapped: labels where images belong.
        let err = parse(&labels, &images).unwrap_err();
        assert_eq!(
            err.to_string(),
            "images is not the IDX file expected: it starts with 0x00000801, expected the magic \
             number 0x00000803"
        );
        let err = parse(&images[..3], &labels).unwrap_err();
        assert!(
            err.to_string().contains("shorter than a magic number"),
            "{err}"
        );
    }

    #[test]
    fn images_and_labels_must_agree_in_number() {
        let (images, _) = split_files(3);
        let (_, labels) = split_files(2);
        let err = parse(&images, &labels).unwrap_err();
        assert!(matches!(
            err,
            DataError::CountMismatch {
                image_count: 3,
                label_count: 2,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "images holds 3 images but labels holds 2 labels; they must be the same split of one \
             copy"
        );
    }

    #[test]
    fn truncated_files_are_refused() {
        let (images, labels) = split_files(2);
        let err = parse(&images[..images.len() - 1], &labels).unwrap_err();
        assert_eq!(
            err.to_string(),
            "images is truncated or corrupt: its header promises 1584 bytes, it holds 1583"
        );
        // Cut inside the header.
        let err = parse(&images, &labels[..6]).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::WrongLength {
                    expected: 8,
                    found: 6,
                    ..
                }
            ),
            "{err}"
        );
        // A gzipped file cut short.
        let dir = tempfile::tempdir().unwrap();
        write_copy(dir.path(), 4, 1);
        let path = dir.path().join("train-images-idx3-ubyte.gz");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = FashionMnist::new(Split::Train, Some(dir.path())).unwrap_err();
        assert!(
            err.to_string().contains("not a complete gzip file"),
            "{err}"
        );
    }

    #[test]
    fn images_of_another_size_are_refused() {
        let images = idx(IMAGES_MAGIC, &[1, 32, 32], &[0; 1024]);
        let labels = idx(LABELS_MAGIC, &[1], &[0]);
        let err = parse(&images, &labels).unwrap_err();
        assert_eq!(
            err.to_string(),
            "images: expected 28×28 images, the header says 32×32"
        );
    }

    #[test]
    fn a_label_outside_the_classes_is_refused() {
        let (images, mut labels) = split_files(3);
        labels[8 + 1] = 10;
        let err = parse(&images, &labels).unwrap_err();
        assert_eq!(
            err.to_string(),
            "labels holds label 10, outside the ten classes 0..10"
        );
    }

    /// The copy CI and Debian users have (`apt-get install dataset-fashion-mnist`): the full
    /// splits, balanced classes, and the pixel statistics the spec normalizes with.
    #[test]
    fn the_installed_copy_reads_whole() {
        let dir = FashionMnist::locate(None);
        let read = |split| {
            FashionMnist::new(split, None).unwrap_or_else(|err| {
                panic!(
                    "this test reads the installed Fashion-MNIST in {}: {err}",
                    dir.display()
                )
            })
        };
        let (train, test) = (read(Split::Train), read(Split::Test));
        assert_eq!([train.len(), test.len()], FashionMnist::LEN);
        for (data, per_class) in [(&train, 6000), (&test, 1000)] {
            let mut counts = [0; 10];
            data.items().iter().for_each(|item| counts[item.label] += 1);
            assert_eq!(counts, [per_class; 10]);
        }
        let (sum, squares) = train
            .items()
            .iter()
            .flat_map(|item| &item.pixels)
            .fold((0u64, 0u64), |(sum, squares), &p| {
                (sum + p as u64, squares + (p as u64).pow(2))
            });
        let n = (60_000 * 784) as f64;
        let mean = sum as f64 / n / 255.0;
        let std = (squares as f64 / n / 255.0 / 255.0 - mean * mean).sqrt();
        assert!(
            (mean - FashionMnist::SPEC.mean[0] as f64).abs() < 5e-5,
            "{mean}"
        );
        assert!(
            (std - FashionMnist::SPEC.std[0] as f64).abs() < 5e-5,
            "{std}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random bytes in place of either file are an error, never a panic.
        #[test]
        fn random_bytes_are_refused(noise in proptest::collection::vec(any::<u8>(), 0..4000)) {
            let (images, labels) = split_files(2);
            prop_assert!(parse(&noise, &labels).is_err());
            prop_assert!(parse(&images, &noise).is_err());
        }

        /// A valid pair cut short anywhere, or after a byte of the header was changed, is an
        /// error, never a panic.
        #[test]
        fn damaged_files_are_refused(cut in 0usize..1584, header_byte in 0usize..16, flip in 1u8..) {
            let (images, labels) = split_files(2);
            prop_assert!(parse(&images[..cut], &labels).is_err());
            prop_assert!(parse(&images, &labels[..cut.min(labels.len() - 1)]).is_err());
            let mut damaged = images.clone();
            damaged[header_byte] ^= flip;
            prop_assert!(parse(&damaged, &labels).is_err());
        }

        /// The CIFAR-10 reader on random bytes: a file is accepted only when it is a whole
        /// number of records with labels in 0..10 (it then reads back exactly), else refused;
        /// never a panic. A valid batch cut short is refused, unless the cut falls between two
        /// records (then the records before it read back).
        #[test]
        fn cifar_batches_of_random_bytes(
            noise in proptest::collection::vec(any::<u8>(), 0..8000),
            records in 1usize..3,
            cut in 0usize..6146,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("data_batch_1.bin");
            fs::write(&path, &noise).unwrap();
            let well_formed = !noise.is_empty()
                && noise.len() % 3073 == 0
                && noise.chunks(3073).all(|record| record[0] < 10);
            match CifarDataset::from_binary_batches(std::slice::from_ref(&path)) {
                Ok(data) => {
                    prop_assert!(well_formed);
                    prop_assert_eq!(data.len(), noise.len() / 3073);
                }
                Err(_) => prop_assert!(!well_formed),
            }
            let valid: Vec<u8> = (0..records * 3073).map(|i| if i % 3073 == 0 { 3 } else { i as u8 }).collect();
            let cut = cut % valid.len();
            fs::write(&path, &valid[..cut]).unwrap();
            match CifarDataset::from_binary_batches(std::slice::from_ref(&path)) {
                // Cut between two records, the first is a whole batch of its own.
                Ok(data) => prop_assert!(cut > 0 && cut.is_multiple_of(3073) && data.len() == cut / 3073),
                Err(_) => prop_assert!(!cut.is_multiple_of(3073) || cut == 0),
            }
        }
    }
}
