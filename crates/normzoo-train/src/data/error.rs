//! Errors reading a dataset.

use std::fmt;
use std::path::PathBuf;

/// Why a dataset could not be read. Every variant names the path and what was expected.
#[derive(Debug)]
pub enum DataError {
    /// The directory does not exist or is not a directory.
    MissingDirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The directory holds neither CIFAR-10 layout.
    UnknownLayout {
        /// The path given.
        path: PathBuf,
    },
    /// A binary batch whose size is not a whole number of records.
    TruncatedBatch {
        /// The batch file.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
    },
    /// Fashion-MNIST's files are not in the directory looked in.
    NotInstalled {
        /// The directory looked in.
        dir: PathBuf,
        /// The file missing there (found neither plain nor with `.gz`).
        file: String,
    },
    /// A file that does not start with the magic number of its format.
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number expected.
        expected: u32,
        /// The first four bytes read as one, if the file has four.
        found: Option<u32>,
    },
    /// A file whose length is not what its header promises (truncated, or with bytes after
    /// its data).
    WrongLength {
        /// The file (decompressed).
        path: PathBuf,
        /// The bytes its header promises.
        expected: u64,
        /// The bytes it holds.
        found: u64,
    },
    /// A header that describes something else than the dataset, or a compressed file that does
    /// not decompress.
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What was expected and what came.
        reason: String,
    },
    /// An images file and its labels file that disagree on how many images there are.
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// The images it holds.
        image_count: usize,
        /// The labels file.
        labels: PathBuf,
        /// The labels it holds.
        label_count: usize,
    },
    /// A label outside the ten classes.
    BadLabel {
        /// The file it came from.
        path: PathBuf,
        /// The label read.
        label: usize,
    },
    /// An image that cannot be decoded or is not 32×32 RGB.
    BadImage {
        /// The image file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A directory without sub-directories where one folder of images per class is expected.
    NoClassFolders {
        /// The directory.
        path: PathBuf,
    },
    /// A class folder without PNG or JPEG images.
    EmptyClassFolder {
        /// The class folder.
        path: PathBuf,
    },
    /// An index past the end of the dataset.
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The dataset's length.
        len: usize,
    },
    /// CIFAR-10 is not on this machine and cannot be downloaded.
    Offline {
        /// Where it would come from.
        url: String,
        /// Why it cannot be reached.
        reason: String,
    },
    /// The download started and failed.
    Download {
        /// Where it came from.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A copy with fewer images than CIFAR-10 has (e.g. an interrupted download).
    Incomplete {
        /// The copy.
        path: PathBuf,
        /// The images expected.
        expected: usize,
        /// The images found.
        found: usize,
    },
    /// Reading failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingDirectory { path } => {
                write!(f, "dataset directory {} does not exist", path.display())
            }
            Self::UnknownLayout { path } => write!(
                f,
                "{} holds no CIFAR-10 copy: expected the binary batches (data_batch_1.bin … \
                 data_batch_5.bin and test_batch.bin, here or in cifar-10-batches-bin/) or class \
                 folders (train/<class>/*.png and test/<class>/*.png)",
                path.display()
            ),
            Self::TruncatedBatch { path, len } => write!(
                f,
                "{} is truncated or not a CIFAR-10 batch: {len} bytes is not a whole number of \
                 3073-byte records",
                path.display()
            ),
            Self::NotInstalled { dir, file } => write!(
                f,
                "Fashion-MNIST is not in {}: {file} (or {file}.gz) is missing. Install it with \
                 `apt-get install dataset-fashion-mnist` (Debian, Ubuntu), or point --data-dir \
                 (or the environment variable {}) at a directory holding the four IDX files \
                 (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, \
                 t10k-labels-idx1-ubyte, gzipped or not)",
                dir.display(),
                super::FASHION_MNIST_ENV
            ),
            Self::BadMagic {
                path,
                expected,
                found,
            } => {
                write!(f, "{} is not the IDX file expected: ", path.display())?;
                match found {
                    Some(found) => write!(f, "it starts with 0x{found:08x}")?,
                    None => write!(f, "it is shorter than a magic number")?,
                }
                write!(f, ", expected the magic number 0x{expected:08x}")
            }
            Self::WrongLength {
                path,
                expected,
                found,
            } => write!(
                f,
                "{} is truncated or corrupt: its header promises {expected} bytes, it holds \
                 {found}",
                path.display()
            ),
            Self::BadHeader { path, reason } => write!(f, "{}: {reason}", path.display()),
            Self::CountMismatch {
                images,
                image_count,
                labels,
                label_count,
            } => write!(
                f,
                "{} holds {image_count} images but {} holds {label_count} labels; they must be \
                 the same split of one copy",
                images.display(),
                labels.display()
            ),
            Self::BadLabel { path, label } => write!(
                f,
                "{} holds label {label}, outside the ten classes 0..10",
                path.display()
            ),
            Self::BadImage { path, reason } => {
                write!(f, "{}: {reason}", path.display())
            }
            Self::NoClassFolders { path } => write!(
                f,
                "{} has no sub-directory: expected one folder per class, holding that class's \
                 images",
                path.display()
            ),
            Self::EmptyClassFolder { path } => write!(
                f,
                "the class folder {} holds no PNG or JPEG image",
                path.display()
            ),
            Self::IndexOutOfRange { index, len } => {
                write!(
                    f,
                    "index {index} is past the end of a dataset of {len} items"
                )
            }
            Self::Offline { url, reason } => write!(
                f,
                "CIFAR-10 is not on this machine and {url} cannot be reached ({reason}); pass \
                 --data-dir with a local copy (the binary batches or class folders), or train \
                 offline on Fashion-MNIST (--dataset fashion-mnist, after `apt-get install \
                 dataset-fashion-mnist`) or on the built-in synthetic set (--dataset synthetic)"
            ),
            Self::Download { url, reason } => write!(
                f,
                "downloading CIFAR-10 from {url} failed: {reason}; rerun when online, or pass \
                 --data-dir with a local copy"
            ),
            Self::Incomplete {
                path,
                expected,
                found,
            } => write!(
                f,
                "{} holds {found} images where CIFAR-10 has {expected} (an interrupted \
                 download?); delete the directory and rerun to download it again",
                path.display()
            ),
            Self::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
