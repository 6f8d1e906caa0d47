//! Segmentation of generated shapes, for the `unet` example: circles, squares and triangles in
//! random colours on a textured background, with a mask giving each pixel's class. The colour
//! says nothing about the class; only the shape does.

use std::path::Path;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use normzoo_models::UNet;

use crate::adam::train_with_adam;
use crate::data::SplitMix;
use crate::precision::Precision;
use crate::progress::{save_grid, signed_to_byte};

/// The pixel classes.
pub const SHAPE_CLASSES: [&str; 4] = ["background", "circle", "square", "triangle"];
/// Height and width of every image.
pub const SHAPE_SIZE: usize = 32;

/// The colour each class is drawn in, in pictures of masks.
const PALETTE: [[u8; 3]; 4] = [[30, 30, 30], [230, 80, 60], [80, 200, 90], [70, 120, 240]];

/// One generated image and its mask.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeSample {
    /// `[3, 32, 32]`, channel-major, in `[0, 1]`.
    pub image: Vec<f32>,
    /// `[32, 32]`: the class of each pixel (an index into [`SHAPE_CLASSES`]).
    pub mask: Vec<u8>,
}

/// Whether the point `(dx, dy)` from a shape's centre is inside the shape of `class` with
/// size `r`.
fn inside(class: u8, dx: f32, dy: f32, r: f32) -> bool {
    match class {
        1 => dx * dx + dy * dy <= r * r,
        2 => dx.abs() <= 0.8 * r && dy.abs() <= 0.8 * r,
        // Apex up, base down: the half-width grows from 0 at the top to r at the bottom.
        _ => dy.abs() <= r && dx.abs() <= (dy + r) / 2.0,
    }
}

/// The sample drawn from `seed`: a smooth background with noise, and one to three shapes
/// (later ones drawn over earlier ones).
pub fn shape_sample(seed: u64) -> ShapeSample {
    let mut rng = SplitMix(seed ^ 0x7F4A_7C15_9E37_79B9);
    let plane = SHAPE_SIZE * SHAPE_SIZE;
    let base: [f32; 3] = [rng.uniform(), rng.uniform(), rng.uniform()];
    let tilt = [rng.normal() * 0.01, rng.normal() * 0.01];
    let mut image = vec![0.0; 3 * plane];
    for y in 0..SHAPE_SIZE {
        for x in 0..SHAPE_SIZE {
            let shade = tilt[0] * x as f32 + tilt[1] * y as f32;
            for (c, base) in base.iter().enumerate() {
                image[c * plane + y * SHAPE_SIZE + x] = base * 0.6 + 0.2 + shade;
            }
        }
    }
    let mut mask = vec![0u8; plane];
    let shapes = 1 + rng.next() % 3;
    for _ in 0..shapes {
        let class = 1 + (rng.next() % 3) as u8;
        let r = 4.0 + 5.0 * rng.uniform();
        let (cx, cy) = (
            r + (SHAPE_SIZE as f32 - 2.0 * r) * rng.uniform(),
            r + (SHAPE_SIZE as f32 - 2.0 * r) * rng.uniform(),
        );
        let colour: [f32; 3] = [rng.uniform(), rng.uniform(), rng.uniform()];
        for y in 0..SHAPE_SIZE {
            for x in 0..SHAPE_SIZE {
                if inside(class, x as f32 + 0.5 - cx, y as f32 + 0.5 - cy, r) {
                    mask[y * SHAPE_SIZE + x] = class;
                    for (c, colour) in colour.iter().enumerate() {
                        image[c * plane + y * SHAPE_SIZE + x] = *colour;
                    }
                }
            }
        }
    }
    for value in &mut image {
        *value = (*value + 0.05 * rng.normal()).clamp(0.0, 1.0);
    }
    ShapeSample { image, mask }
}

/// `len` samples from `seed`: the images `[N, 3, 32, 32]` (scaled to `[-1, 1]`) and the masks
/// `[N, 32, 32]`.
pub fn shape_batch(len: usize, seed: u64, device: &Device) -> (Tensor<4>, Tensor<3, Int>) {
    let mut images = Vec::with_capacity(len * 3 * SHAPE_SIZE * SHAPE_SIZE);
    let mut masks = Vec::with_capacity(len * SHAPE_SIZE * SHAPE_SIZE);
    for i in 0..len {
        let sample = shape_sample(seed.wrapping_mul(0x9E37_79B9).wrapping_add(i as u64));
        images.extend(sample.image.iter().map(|v| 2.0 * v - 1.0));
        masks.extend(sample.mask.iter().map(|&class| class as i64));
    }
    (
        Tensor::from_data(
            TensorData::new(images, [len, 3, SHAPE_SIZE, SHAPE_SIZE]),
            device,
        ),
        Tensor::from_data(
            TensorData::new(masks, [len, SHAPE_SIZE, SHAPE_SIZE]),
            device,
        ),
    )
}

/// The mean per-pixel cross-entropy of `model` on `images` `[N, 3, H, W]` and `masks`
/// `[N, H, W]`, in f32 whatever precision the model computes in (`images` in the model's).
pub fn segmentation_loss(model: &UNet, images: Tensor<4>, masks: Tensor<3, Int>) -> Tensor<1> {
    let [n, h, w] = masks.dims();
    let logits = model.forward(images).cast(FloatDType::F32);
    let classes = logits.dims()[1];
    let logits = logits.permute([0, 2, 3, 1]).reshape([n * h * w, classes]);
    CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits, masks.reshape([n * h * w]))
}

/// The predicted class of every pixel, `[N, H, W]` flattened.
fn predict(model: &UNet, images: Tensor<4>) -> Vec<u8> {
    let [n, _, h, w] = images.dims();
    model
        .forward(images)
        .argmax(1)
        .reshape([n, h, w])
        .into_data()
        .iter::<i64>()
        .map(|class| class as u8)
        .collect()
}

/// How well a segmentation matches the masks.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentationScore {
    /// The fraction of pixels classified right.
    pub pixel_accuracy: f64,
    /// Intersection over union for each class of [`SHAPE_CLASSES`].
    pub iou: Vec<f64>,
}

impl SegmentationScore {
    /// The mean IoU over the classes.
    pub fn mean_iou(&self) -> f64 {
        self.iou.iter().sum::<f64>() / self.iou.len() as f64
    }
}

/// Scores `model` on `images` and their `masks`.
pub fn score(model: &UNet, images: Tensor<4>, masks: Tensor<3, Int>) -> SegmentationScore {
    let predicted = predict(model, images);
    let truth: Vec<u8> = masks.into_data().iter::<i64>().map(|c| c as u8).collect();
    score_classes(&predicted, &truth)
}

/// Pixel accuracy and per-class IoU of `predicted` against `truth` (a class absent from both
/// scores 1).
fn score_classes(predicted: &[u8], truth: &[u8]) -> SegmentationScore {
    let classes = SHAPE_CLASSES.len();
    let (mut intersection, mut union) = (vec![0usize; classes], vec![0usize; classes]);
    let mut right = 0;
    for (&p, &t) in predicted.iter().zip(truth) {
        union[t as usize] += 1;
        if p == t {
            right += 1;
            intersection[t as usize] += 1;
        } else {
            union[p as usize] += 1;
        }
    }
    SegmentationScore {
        pixel_accuracy: right as f64 / truth.len() as f64,
        iou: intersection
            .iter()
            .zip(&union)
            .map(|(&i, &u)| if u == 0 { 1.0 } else { i as f64 / u as f64 })
            .collect(),
    }
}

/// How a [`UNet`] is trained on the shapes: Adam on fresh samples every step.
#[derive(Debug, Clone, Copy)]
pub struct ShapeTraining {
    /// Optimizer steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// The seed of the samples.
    pub seed: u64,
    /// Images the score is measured on (drawn from another seed).
    pub test_images: usize,
    /// The precision of the training steps (mixed precision for f16 and bf16; see
    /// [`train_with_adam`]); the score is measured in f32.
    pub precision: Precision,
}

impl Default for ShapeTraining {
    fn default() -> Self {
        Self {
            steps: 1200,
            batch_size: 16,
            lr: 2e-3,
            seed: 1,
            test_images: 64,
            precision: Precision::F32,
        }
    }
}

/// What training did.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeReport {
    /// The training loss at every step.
    pub losses: Vec<f32>,
    /// The score on the test images before training.
    pub initial: SegmentationScore,
    /// The same after training.
    pub trained: SegmentationScore,
}

impl ShapeTraining {
    /// The test images and masks.
    pub fn test_set(&self, device: &Device) -> (Tensor<4>, Tensor<3, Int>) {
        shape_batch(self.test_images, !self.seed, device)
    }

    /// Trains `model` (on `device`, an autodiff device), calling `progress(step, loss)` after
    /// every step; returns the trained model in evaluation mode and the report.
    pub fn run(
        &self,
        model: UNet,
        device: &Device,
        progress: impl FnMut(usize, f32),
    ) -> (UNet, ShapeReport) {
        let inner = device.clone().inner();
        let (test_images, test_masks) = self.test_set(&inner);
        let initial = score(
            &model.clone().valid(),
            test_images.clone(),
            test_masks.clone(),
        );
        let (model, losses) = train_with_adam(
            model,
            self.steps,
            self.lr,
            self.precision,
            |model, step| {
                let (images, masks) =
                    shape_batch(self.batch_size, self.seed.wrapping_add(step as u64), device);
                segmentation_loss(model, images.cast(self.precision.float_dtype()), masks)
            },
            progress,
        );
        let model = model.valid();
        let trained = score(&model, test_images, test_masks);
        let report = ShapeReport {
            losses,
            initial,
            trained,
        };
        (model, report)
    }
}

/// Saves a PNG with one row per image: the image, its true mask and `model`'s mask, each
/// `scale` times enlarged.
///
/// # Errors
///
/// When the file cannot be written.
pub fn save_segmentations(
    path: &Path,
    model: &UNet,
    images: Tensor<4>,
    masks: Tensor<3, Int>,
    scale: u32,
) -> Result<(), image::ImageError> {
    let n = images.dims()[0];
    let pixels: Vec<f32> = images.clone().into_data().iter::<f32>().collect();
    let predicted = predict(model, images);
    let truth: Vec<u8> = masks.into_data().iter::<i64>().map(|c| c as u8).collect();
    let plane = SHAPE_SIZE * SHAPE_SIZE;
    save_grid(path, [n, 3], SHAPE_SIZE, scale, |i, column, x, y| {
        let at = i * plane + y * SHAPE_SIZE + x;
        match column {
            0 => std::array::from_fn(|c| {
                signed_to_byte(pixels[(i * 3 + c) * plane + y * SHAPE_SIZE + x])
            }),
            1 => PALETTE[truth[at] as usize],
            _ => PALETTE[predicted[at] as usize],
        }
    })
}

#[cfg(test)]
mod tests {
    use normzoo_kernels::backend::{cpu_test_devices, seed_for_test};
    use normzoo_models::UNetConfig;
    use normzoo_norm::NormConfig;

    use super::*;
    use crate::fixed_weights::fixed_weights;
    use crate::precision::assert_follows;

    #[test]
    fn samples_are_seeded_and_hold_every_class() {
        assert_eq!(shape_sample(4), shape_sample(4));
        assert_ne!(shape_sample(4), shape_sample(5));
        let mut seen = [false; 4];
        for seed in 0..50 {
            let sample = shape_sample(seed);
            assert_eq!(sample.image.len(), 3 * SHAPE_SIZE * SHAPE_SIZE);
            assert!(sample.image.iter().all(|v| (0.0..=1.0).contains(v)));
            for &class in &sample.mask {
                seen[class as usize] = true;
            }
        }
        assert_eq!(seen, [true; 4], "every class appears");
    }

    #[test]
    fn scores_count_pixels_and_overlaps() {
        let truth = [0, 1, 1, 2, 2, 2];
        let perfect = score_classes(&truth, &truth);
        assert_eq!(perfect.pixel_accuracy, 1.0);
        assert_eq!(perfect.iou, [1.0; 4]);
        // One circle pixel called a square: circle IoU 1/2, square 3/4.
        let score = score_classes(&[0, 1, 2, 2, 2, 2], &truth);
        assert!((score.pixel_accuracy - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(score.iou, [1.0, 0.5, 0.75, 1.0]);
        assert!((score.mean_iou() - 3.25 / 4.0).abs() < 1e-12);
    }

    /// A U-Net of width 8 and depth 2 with GroupNorm.
    fn tiny_unet(device: &Device) -> UNet {
        UNetConfig::new()
            .with_num_classes(SHAPE_CLASSES.len())
            .with_base_width(8)
            .with_depth(2)
            .with_norm(NormConfig::group(4))
            .init(device)
            .unwrap()
    }

    /// 12 steps of 4 images.
    fn short_training(precision: Precision) -> ShapeTraining {
        ShapeTraining {
            steps: 12,
            batch_size: 4,
            lr: 1e-2,
            seed: 3,
            test_images: 4,
            precision,
        }
    }

    /// A few steps of a tiny U-Net lower the loss on each CPU backend, and the picture is written.
    #[test]
    fn a_few_steps_lower_the_loss_and_the_picture_is_saved() {
        for (backend, device) in cpu_test_devices() {
            let device = device.autodiff();
            let _seed = seed_for_test(&device, 2);
            let training = short_training(Precision::F32);
            let (model, report) = training.run(tiny_unet(&device), &device, |_, _| {});
            let (first, last) = (report.losses[0], report.losses[11]);
            assert!(last < first, "[{backend}] loss {first} → {last}");
            assert_eq!(report.trained.iou.len(), SHAPE_CLASSES.len());
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("masks.png");
            let (images, masks) = training.test_set(&device.clone().inner());
            save_segmentations(&path, &model, images, masks, 2).unwrap();
            let picture = image::open(&path).unwrap().to_rgb8();
            assert_eq!(picture.width(), 3 * 64 + 4);
            let distinct: std::collections::HashSet<_> = picture.pixels().collect();
            assert!(distinct.len() > 10, "the picture is blank");
        }
    }

    /// A U-Net (GroupNorm) trained in f16 and bf16 follows the f32 run from the same weights,
    /// step by step, to 0.005 in f16 and 0.02 in bf16 (the largest gaps on flex: 0.0003 and
    /// 0.0005, at a loss falling from 1.30 to 1.06).
    #[test]
    fn half_precision_training_follows_the_f32_run() {
        let device = crate::cpu().autodiff();
        let model = fixed_weights(tiny_unet(&device));
        let run = |precision| {
            let training = short_training(precision);
            training.run(model.clone(), &device, |_, _| {}).1.losses
        };
        let reference = run(Precision::F32);
        assert!(reference[11] < reference[0], "f32 learns: {reference:?}");
        for (precision, tolerance) in [(Precision::F16, 0.005), (Precision::BF16, 0.02)] {
            assert_follows(precision, &run(precision), &reference, |_| tolerance);
        }
    }
}
