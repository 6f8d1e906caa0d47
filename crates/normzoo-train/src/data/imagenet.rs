//! ImageNet inference as torchvision does it: the evaluation transform of its classification
//! weights, ImageNet-1k's class names, and the most probable classes of a batch of logits.

use std::path::Path;

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use image::DynamicImage;
use image::imageops::{self, FilterType};

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
        Tensor::from_data(TensorData::new(values, [3, side, side]), device)
    }

    /// [`apply`](Self::apply) to the image file at `path` (PNG or JPEG).
    ///
    /// # Errors
    ///
    /// [`DataError::BadImage`] when the file cannot be read or decoded.
    pub fn open(&self, path: &Path, device: &Device) -> Result<Tensor<3>, DataError> {
        let image = image::open(path).map_err(|err| DataError::BadImage {
            path: path.into(),
            reason: format!("cannot read the image: {err}"),
        })?;
        Ok(self.apply(&image, device))
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
    fn there_are_a_thousand_classes() {
        let classes = imagenet_classes();
        assert_eq!(classes.len(), 1000);
        assert_eq!(classes[0], "tench");
        assert_eq!(classes[999], "toilet tissue");
    }
}
