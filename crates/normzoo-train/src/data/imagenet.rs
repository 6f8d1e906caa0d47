//! ImageNet inference as torchvision does it: the evaluation transform of its classification
//! weights, ImageNet-1k's class names, and the most probable classes of a batch of logits.

use std::path::Path;

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use image::DynamicImage;
use image::imageops::{self, FilterType};
use rayon::prelude::*;

use super::DataError;
use crate::TrainError;

/// ImageNet's per-channel mean (red, green, blue), which torchvision's weights expect
/// subtracted.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];

/// ImageNet's per-channel standard deviation (red, green, blue), which torchvision's weights
/// expect divided by.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// ImageNet-1k's 1000 class names in index order, as torchvision's weights list them
/// (`weights.meta["categories"]`).
pub fn imagenet_classes() -> Vec<&'static str> {
    include_str!("imagenet_classes.txt").lines().collect()
}

/// The evaluation transform of torchvision's classification weights (`weights.transforms()`,
/// torchvision's `ImageClassification`): resize the shorter side to `resize` pixels (the longer
/// one in proportion, rounded down) with antialiased bilinear interpolation, crop the centre
/// `crop`×`crop` square, scale to `[0, 1]` and normalize with [`IMAGENET_MEAN`] and
/// [`IMAGENET_STD`].
///
/// The resized image is kept in floating point. torchvision, given an 8-bit image, rounds it
/// back to 8 bits after resizing, so its input differs from ours by at most half a level
/// (0.5/255 before normalizing); given a float image it computes what we do. PIL's resampling
/// (a PIL image given to the transform) works in 8-bit fixed point and differs by about a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalTransform {
    resize: u32,
    crop: u32,
}

impl EvalTransform {
    /// The transform of ResNet18's and VGG16's ImageNet weights: resize to 256, crop 224.
    pub const RESNET: Self = Self {
        resize: 256,
        crop: 224,
    };

    /// The transform of ConvNeXt-T's ImageNet weights: resize to 236, crop 224.
    pub const CONVNEXT: Self = Self {
        resize: 236,
        crop: 224,
    };

    /// Resize the shorter side to `resize`, then crop the centre `crop`×`crop`.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] when `crop` is zero or larger than `resize`.
    pub fn new(resize: u32, crop: u32) -> Result<Self, TrainError> {
        if crop == 0 || crop > resize {
            return Err(TrainError::InvalidConfig {
                setting: "crop",
                message: format!(
                    "the crop ({crop}) must be positive and no larger than the resized shorter \
                     side ({resize})"
                ),
            });
        }
        Ok(Self { resize, crop })
    }

    /// The normalized `[3, crop, crop]` input of `image` (any colour type; alpha is dropped,
    /// grey is repeated in the three channels).
    pub fn apply(&self, image: &DynamicImage, device: &Device) -> Tensor<3> {
        let side = self.crop as usize;
        Tensor::from_data(TensorData::new(self.values(image), [3, side, side]), device)
    }

    /// [`apply`](Self::apply) to the image file at `path` (PNG or JPEG).
    ///
    /// # Errors
    ///
    /// [`DataError::BadImage`] when the file cannot be read or decoded.
    pub fn open(&self, path: &Path, device: &Device) -> Result<Tensor<3>, DataError> {
        Ok(self.apply(&read_image(path)?, device))
    }

    /// The `[N, 3, crop, crop]` inputs of the image files at `paths`, read and transformed in
    /// parallel (on rayon's threads), in order.
    ///
    /// # Errors
    ///
    /// [`DataError::BadImage`] for the first file, in order, that cannot be read or decoded.
    pub fn open_batch(&self, paths: &[&Path], device: &Device) -> Result<Tensor<4>, DataError> {
        let inputs = paths
            .par_iter()
            .map(|path| Ok(self.values(&read_image(path)?)))
            .collect::<Result<Vec<_>, DataError>>()?;
        let side = self.crop as usize;
        let shape = [paths.len(), 3, side, side];
        Ok(Tensor::from_data(
            TensorData::new(inputs.concat(), shape),
            device,
        ))
    }

    /// The values of [`apply`](Self::apply)'s input, channel after channel, row after row.
    fn values(&self, image: &DynamicImage) -> Vec<f32> {
        let rgb = image.to_rgb32f();
        let (width, height) = rgb.dimensions();
        let (new_width, new_height) = self.resized_size(width, height);
        let resized = imageops::resize(&rgb, new_width, new_height, FilterType::Triangle);
        let top = centre_offset(new_height, self.crop);
        let left = centre_offset(new_width, self.crop);
        let side = self.crop as usize;
        let mut values = Vec::with_capacity(3 * side * side);
        for channel in 0..3 {
            for y in top..top + self.crop {
                for x in left..left + self.crop {
                    let value = resized.get_pixel(x, y).0[channel];
                    values.push((value - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]);
                }
            }
        }
        values
    }

    /// torchvision's size for a single-number resize: the shorter side (the width when both
    /// are equal) becomes `resize`, the longer `⌊resize · long / short⌋`.
    fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let long_side = |long: u32, short: u32| {
            (f64::from(self.resize) * f64::from(long) / f64::from(short)) as u32
        };
        if width <= height {
            (self.resize, long_side(height, width))
        } else {
            (long_side(width, height), self.resize)
        }
    }
}

/// The models with torchvision's ImageNet weights, a line each with what torchvision publishes
/// for them, for a command line's `--help`.
pub fn imagenet_models_help() -> String {
    let mut help = String::from(
        "Models with torchvision's ImageNet weights (published top-1 / top-5 %, parameters):\n",
    );
    for (model, classifier) in normzoo_models::image_classifiers() {
        if let Some(weights) = classifier.imagenet {
            help.push_str(&format!(
                "  {:<15} {:>6.3} / {:>6.3}  {:>5.1} M\n",
                model.name,
                weights.top1,
                weights.top5,
                weights.num_params as f64 / 1e6
            ));
        }
    }
    help
}

/// The image file at `path`, decoded.
fn read_image(path: &Path) -> Result<DynamicImage, DataError> {
    image::open(path).map_err(|err| DataError::BadImage {
        path: path.into(),
        reason: format!("cannot read the image: {err}"),
    })
}

/// torchvision's centre-crop offset, `round((size − crop) / 2)` with Python's rounding (half
/// to even).
fn centre_offset(size: u32, crop: u32) -> u32 {
    (f64::from(size - crop) / 2.0).round_ties_even() as u32
}

/// The `k` most probable classes of each row of `logits` (`[N, classes]`), most probable first,
/// as `(class index, softmax probability)`.
pub fn top_classes(logits: Tensor<2>, k: usize) -> Vec<Vec<(usize, f32)>> {
    let [rows, classes] = logits.dims();
    let probabilities = softmax(logits, 1)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("softmax gives floats");
    (0..rows)
        .map(|row| {
            let row = &probabilities[row * classes..(row + 1) * classes];
            let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            ranked.truncate(k);
            ranked
        })
        .collect()
}

/// Top-1 … top-`k` accuracies over batches of logits, as torchvision's reference scripts and
/// timm's `validate.py` count them: an image counts for top-`j` when its label is among its
/// `j` most probable classes (ties to the lower index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopKAccuracy {
    /// `hits[j]`: the images whose label is among their `j + 1` most probable classes.
    hits: Vec<usize>,
    count: usize,
}

impl TopKAccuracy {
    /// Counting top-1 … top-`k`.
    ///
    /// # Panics
    ///
    /// When `k` is zero.
    pub fn new(k: usize) -> Self {
        assert!(k > 0, "TopKAccuracy: k must be at least 1, got 0");
        Self {
            hits: vec![0; k],
            count: 0,
        }
    }

    /// Adds a batch: `logits` `[N, classes]` and the `N` labels.
    ///
    /// # Panics
    ///
    /// When `labels` does not hold one label per row of `logits`.
    pub fn update(&mut self, logits: Tensor<2>, labels: &[usize]) {
        let rows = logits.dims()[0];
        assert_eq!(
            rows,
            labels.len(),
            "TopKAccuracy: expected one label per row of logits ({rows}), got {}",
            labels.len()
        );
        for (top, label) in top_classes(logits, self.hits.len()).iter().zip(labels) {
            if let Some(rank) = top.iter().position(|&(class, _)| class == *label) {
                self.hits[rank..].iter_mut().for_each(|hits| *hits += 1);
            }
        }
        self.count += rows;
    }

    /// The images counted.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The top-`j` accuracy in percent (0 before any image).
    ///
    /// # Panics
    ///
    /// When `j` is not in `1..=k`.
    pub fn accuracy(&self, j: usize) -> f64 {
        let k = self.hits.len();
        assert!(
            (1..=k).contains(&j),
            "TopKAccuracy: top-{j} asked, expected 1 to {k}"
        );
        100.0 * self.hits[j - 1] as f64 / self.count.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu;

    #[test]
    fn the_shorter_side_is_resized_and_the_longer_rounded_down() {
        let transform = EvalTransform::RESNET;
        assert_eq!(transform.resized_size(640, 480), (341, 256));
        assert_eq!(transform.resized_size(480, 640), (256, 341));
        assert_eq!(transform.resized_size(300, 300), (256, 256));
    }

    #[test]
    fn centre_offsets_round_half_to_even() {
        assert_eq!(centre_offset(39, 24), 8); // 7.5
        assert_eq!(centre_offset(37, 24), 6); // 6.5
        assert_eq!(centre_offset(38, 24), 7);
    }

    #[test]
    fn a_crop_larger_than_the_resize_is_refused() {
        let err = EvalTransform::new(224, 256).unwrap_err();
        assert!(err.to_string().contains("the crop (256)"), "{err}");
        assert!(EvalTransform::new(10, 0).is_err());
    }

    #[test]
    fn top_classes_are_ranked_by_probability() {
        let logits = Tensor::<2>::from_data([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]], &cpu());
        let top = top_classes(logits, 2);
        assert_eq!(top[0].iter().map(|c| c.0).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(top[1][0].0, 0);
        let total: f32 = (0..3).map(|i| (i as f32 - 2.0).exp()).sum();
        assert!((top[0][0].1 - 1.0 / total).abs() < 1e-6);
    }

    #[test]
    fn top_k_accuracy_counts_the_rank_of_each_label() {
        let device = cpu();
        let mut accuracy = TopKAccuracy::new(2);
        // Ranked classes: [1, 2, 0], [0, 1, 2] (a tie goes to the lower index), [2, 1, 0].
        let logits = [[0.0, 2.0, 1.0], [3.0, 3.0, 0.0], [0.0, 1.0, 2.0]];
        accuracy.update(Tensor::from_data(logits, &device), &[1, 1, 0]);
        assert_eq!(accuracy.count(), 3);
        assert!((accuracy.accuracy(1) - 100.0 / 3.0).abs() < 1e-9);
        assert!((accuracy.accuracy(2) - 200.0 / 3.0).abs() < 1e-9);
        accuracy.update(Tensor::from_data([[5.0, 0.0, 0.0]], &device), &[0]);
        assert_eq!(accuracy.accuracy(1), 50.0);
        assert_eq!(accuracy.accuracy(2), 75.0);
    }

    #[test]
    fn there_are_a_thousand_classes() {
        let classes = imagenet_classes();
        assert_eq!(classes.len(), 1000);
        assert_eq!(classes[0], "tench");
        assert_eq!(classes[999], "toilet tissue");
    }
}
