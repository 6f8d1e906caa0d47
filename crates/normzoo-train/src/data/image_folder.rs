//! A directory of images with one folder per class, read as torchvision's `ImageFolder` reads
//! it: the classes are the folders' names in sorted order, their indices the labels.

use std::fs;
use std::path::{Path, PathBuf};

use super::DataError;

/// The images of a class-folder directory, `root/<class>/<image>`, and their labels
/// (torchvision's `datasets.ImageFolder(root)`): class `i` is the `i`-th folder name in sorted
/// order (ImageNet's validation set, one folder per WordNet id, gives the 1000 classes in the
/// order of torchvision's weights), its images are its PNG and JPEG files in sorted order.
/// Other files are skipped and counted (torchvision reads a few more formats, such as BMP and
/// WebP, which normzoo does not decode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    images: Vec<(PathBuf, usize)>,
    skipped: usize,
}

impl ImageFolder {
    /// Lists the classes and images under `root` (no image is read).
    ///
    /// # Errors
    ///
    /// [`DataError::MissingDirectory`] when `root` is not a directory, [`DataError::Io`] for a
    /// folder that cannot be listed, [`DataError::NoClassFolders`] when `root` has no
    /// sub-directory, [`DataError::EmptyClassFolder`] when a class folder holds no image.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, DataError> {
        let root = root.as_ref();
        if !root.is_dir() {
            return Err(DataError::MissingDirectory { path: root.into() });
        }
        let mut class_dirs: Vec<PathBuf> = list(root)?
            .into_iter()
            .filter(|path| path.is_dir())
            .collect();
        class_dirs.sort();
        if class_dirs.is_empty() {
            return Err(DataError::NoClassFolders { path: root.into() });
        }
        let mut classes = Vec::with_capacity(class_dirs.len());
        let mut images = Vec::new();
        let mut skipped = 0;
        for (label, dir) in class_dirs.iter().enumerate() {
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            let (mut found, others): (Vec<PathBuf>, Vec<PathBuf>) =
                list(dir)?.into_iter().partition(|path| is_image(path));
            if found.is_empty() {
                return Err(DataError::EmptyClassFolder { path: dir.clone() });
            }
            found.sort();
            skipped += others.len();
            images.extend(found.into_iter().map(|path| (path, label)));
            classes.push(name.into_owned());
        }
        Ok(Self {
            root: root.into(),
            classes,
            images,
            skipped,
        })
    }

    /// The directory read.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The class names (the folders' names), in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Every image's path and label, class after class, each class's in sorted order.
    pub fn images(&self) -> &[(PathBuf, usize)] {
        &self.images
    }

    /// How many files in the class folders are not PNG or JPEG images (sub-folders included).
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

/// The entries of `dir`.
fn list(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: dir.into(),
        source,
    };
    fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|entry| entry.path()).map_err(io))
        .collect()
}

/// Whether `path` is a file named as a PNG or JPEG image (any case).
fn is_image(path: &Path) -> bool {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    path.is_file()
        && matches!(
            extension.to_ascii_lowercase().as_str(),
            "png" | "jpg" | "jpeg"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"").unwrap();
    }

    #[test]
    fn classes_and_images_are_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "n02/b.JPEG",
            "n02/a.png",
            "n01/z.jpg",
            "n01/notes.txt",
            "n03/c.jpeg",
        ] {
            touch(&root.join(file));
        }
        fs::create_dir_all(root.join("n01/nested")).unwrap();
        let folder = ImageFolder::open(root).unwrap();
        assert_eq!(folder.classes(), ["n01", "n02", "n03"]);
        let images: Vec<_> = folder
            .images()
            .iter()
            .map(|(path, label)| (path.strip_prefix(root).unwrap().to_owned(), *label))
            .collect();
        let expected = [
            ("n01/z.jpg", 0),
            ("n02/a.png", 1),
            ("n02/b.JPEG", 1),
            ("n03/c.jpeg", 2),
        ]
        .map(|(path, label)| (PathBuf::from(path), label));
        assert_eq!(images, expected);
        assert_eq!(folder.skipped(), 2); // notes.txt and nested/
        assert_eq!(folder.root(), root);
    }

    #[test]
    fn what_is_not_a_class_folder_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let missing = ImageFolder::open(root.join("missing")).unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");

        touch(&root.join("loose.png"));
        let flat = ImageFolder::open(root).unwrap_err().to_string();
        assert!(
            flat.contains("has no sub-directory: expected one folder per class"),
            "{flat}"
        );

        touch(&root.join("cat/cat.png"));
        touch(&root.join("dog/readme.txt"));
        let empty = ImageFolder::open(root).unwrap_err().to_string();
        assert!(empty.contains("dog holds no PNG or JPEG image"), "{empty}");
    }
}
