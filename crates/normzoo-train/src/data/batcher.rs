//! Turning images into normalized, optionally augmented tensors.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::rng::SplitMix;
use super::{IMAGE_BYTES, IMAGE_SIZE, ImageItem};

/// CIFAR-10's per-channel mean of the training set (pixels in `[0, 1]`).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10's per-channel standard deviation of the training set (the population values; the
/// widely copied `0.2023, 0.1994, 0.2010` are a miscomputation).
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// A batch of images and their labels.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// Normalized images, `[N, 3, 32, 32]`.
    pub images: Tensor<4>,
    /// Class indices, `[N]`.
    pub labels: Tensor<1, Int>,
}

/// Batches [`ImageItem`]s: `(pixel / 255 − mean) / std` per channel, and for training the
/// standard CIFAR augmentation (a random 32×32 crop of the image zero-padded by 4, and a
/// horizontal flip with probability ½), reproducible from a seed.
#[derive(Debug)]
pub struct ImageBatcher {
    augment: bool,
    seed: u64,
    batches: AtomicU64,
}

impl ImageBatcher {
    /// For evaluation: normalization only.
    pub fn eval() -> Self {
        Self {
            augment: false,
            seed: 0,
            batches: AtomicU64::new(0),
        }
    }

    /// For training: normalization and augmentation drawn from `seed`.
    pub fn train(seed: u64) -> Self {
        Self {
            augment: true,
            seed,
            batches: AtomicU64::new(0),
        }
    }
}

/// A random crop of the zero-padded image and a random flip, on channel-major bytes.
fn augment(pixels: &[u8], rng: &mut SplitMix) -> Vec<u8> {
    const PAD: usize = 4;
    let (dy, dx) = (
        (rng.next() % (2 * PAD as u64 + 1)) as usize,
        (rng.next() % (2 * PAD as u64 + 1)) as usize,
    );
    let flip = rng.next() & 1 == 1;
    let mut out = vec![0u8; IMAGE_BYTES];
    for channel in 0..3 {
        for y in 0..IMAGE_SIZE {
            // The source row in the padded image is y + dy, i.e. y + dy − PAD in the original.
            let Some(sy) = (y + dy).checked_sub(PAD).filter(|&sy| sy < IMAGE_SIZE) else {
                continue;
            };
            for x in 0..IMAGE_SIZE {
                let xo = if flip { IMAGE_SIZE - 1 - x } else { x };
                if let Some(sx) = (xo + dx).checked_sub(PAD).filter(|&sx| sx < IMAGE_SIZE) {
                    let plane = channel * IMAGE_SIZE * IMAGE_SIZE;
                    out[plane + y * IMAGE_SIZE + x] = pixels[plane + sy * IMAGE_SIZE + sx];
                }
            }
        }
    }
    out
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let n = items.len();
        let mut rng = SplitMix(
            self.seed
                ^ self
                    .batches
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0xA24B_AED4_963E_E407),
        );
        let plane = IMAGE_SIZE * IMAGE_SIZE;
        let mut values = Vec::with_capacity(n * IMAGE_BYTES);
        let mut labels = Vec::with_capacity(n);
        for item in &items {
            let augmented;
            let pixels = match self.augment {
                true => {
                    augmented = augment(&item.pixels, &mut rng);
                    &augmented
                }
                false => &item.pixels,
            };
            values.extend(pixels.iter().enumerate().map(|(i, &p)| {
                let c = i / plane;
                (p as f32 / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
            }));
            labels.push(item.label as i64);
        }
        ImageBatch {
            images: Tensor::from_data(
                TensorData::new(values, [n, 3, IMAGE_SIZE, IMAGE_SIZE]),
                device,
            ),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(value: u8, label: usize) -> ImageItem {
        ImageItem {
            pixels: vec![value; IMAGE_BYTES],
            label,
        }
    }

    #[test]
    fn evaluation_batches_are_normalized() {
        let device = crate::cpu();
        let batch = ImageBatcher::eval().batch(vec![item(255, 3), item(0, 7)], &device);
        assert_eq!(batch.images.dims(), [2, 3, 32, 32]);
        let labels = batch.labels.into_data().convert::<i64>();
        assert_eq!(labels.try_to_vec::<i64>().unwrap(), vec![3, 7]);
        let first: f32 = batch
            .images
            .clone()
            .narrow(0, 0, 1)
            .narrow(1, 0, 1)
            .mean()
            .into_scalar();
        assert!((first - (1.0 - 0.4914) / 0.2470).abs() < 1e-5, "{first}");
    }

    /// A crop moves the image by at most 4 pixels and fills with zeros; a flip mirrors it.
    #[test]
    fn augmentation_crops_and_flips() {
        let mut pixels = vec![0u8; IMAGE_BYTES];
        pixels[0] = 200; // top-left pixel of the red plane
        let mut seen_flip = false;
        let mut seen_shift = false;
        for seed in 0..64 {
            let out = augment(&pixels, &mut SplitMix(seed));
            let lit: Vec<usize> = out
                .iter()
                .enumerate()
                .filter(|(_, p)| **p == 200)
                .map(|(i, _)| i)
                .collect();
            assert!(lit.len() <= 1);
            if let Some(&i) = lit.first() {
                let (y, x) = (i / IMAGE_SIZE, i % IMAGE_SIZE);
                assert!(y <= 4 && (x <= 4 || x >= IMAGE_SIZE - 5), "({y}, {x})");
                seen_flip |= x >= IMAGE_SIZE - 5;
                seen_shift |= y > 0;
            }
        }
        assert!(seen_flip && seen_shift);
    }
}
