//! A synthetic CIFAR-shaped dataset for offline runs and tests.

use burn::data::dataset::{Dataset, DatasetError};

use super::cifar::{IMAGE_BYTES, IMAGE_SIZE};
use super::rng::SplitMix;
use super::{CifarDataset, DataError, ImageItem, ImageSpec};

/// Ten classes of generated 32×32 RGB images: deterministic (the same seed and index always
/// give the same image), balanced, and learnable but not trivially.
///
/// Class `c` draws a sinusoidal grating whose orientation is `c mod 5` (five angles) in a tint
/// shared by two classes (`c / 2`), so neither colour nor texture alone separates the classes.
/// Each image gets its own phase, contrast, brightness, a small random shift of the tint and
/// Gaussian pixel noise.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticCifar {
    len: usize,
    seed: u64,
}

/// The tints, one per pair of classes (RGB in `0..1`).
const TINTS: [[f32; 3]; 5] = [
    [0.9, 0.3, 0.3],
    [0.3, 0.8, 0.3],
    [0.3, 0.4, 0.9],
    [0.8, 0.8, 0.2],
    [0.7, 0.3, 0.8],
];

impl SyntheticCifar {
    /// CIFAR-10's: the same shape, normalization and augmentation.
    pub const SPEC: ImageSpec = ImageSpec {
        name: "synthetic",
        ..CifarDataset::SPEC
    };

    /// `len` images generated from `seed`.
    pub fn new(len: usize, seed: u64) -> Self {
        Self { len, seed }
    }

    /// The image at `index` (any index: the set is defined beyond `len` too).
    pub fn generate(&self, index: usize) -> ImageItem {
        let label = index % 10;
        let mut rng = SplitMix(self.seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let angle = (label % 5) as f32 * std::f32::consts::PI / 5.0;
        let (sin, cos) = angle.sin_cos();
        let frequency = 0.35 + 0.1 * rng.uniform();
        let phase = std::f32::consts::TAU * rng.uniform();
        let contrast = 0.25 + 0.15 * rng.uniform();
        let brightness = 0.1 * rng.normal();
        let tint = TINTS[label / 2].map(|c| c + 0.1 * rng.normal());
        let plane = IMAGE_SIZE * IMAGE_SIZE;
        let mut pixels = vec![0u8; IMAGE_BYTES];
        for y in 0..IMAGE_SIZE {
            for x in 0..IMAGE_SIZE {
                let along = x as f32 * cos + y as f32 * sin;
                let wave = (frequency * along + phase).sin();
                for (channel, tint) in tint.iter().enumerate() {
                    let value = tint * (0.6 + contrast * wave) + brightness + 0.08 * rng.normal();
                    pixels[channel * plane + y * IMAGE_SIZE + x] =
                        (value.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
        ImageItem { pixels, label }
    }
}

impl Dataset<ImageItem> for SyntheticCifar {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        if index >= self.len {
            return Err(DatasetError::new(DataError::IndexOutOfRange {
                index,
                len: self.len,
            }));
        }
        Ok(self.generate(index))
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean(item: &ImageItem, channel: usize) -> f32 {
        let plane = &item.pixels[channel * 1024..(channel + 1) * 1024];
        plane.iter().map(|&p| p as f32).sum::<f32>() / 1024.0
    }

    #[test]
    fn deterministic_balanced_and_varied() {
        let data = SyntheticCifar::new(100, 42);
        assert_eq!(data.len(), 100);
        assert_eq!(data.get(7).unwrap(), data.get(7).unwrap());
        assert_eq!(
            data.get(7).unwrap(),
            SyntheticCifar::new(100, 42).generate(7)
        );
        assert_ne!(
            data.get(7).unwrap(),
            SyntheticCifar::new(100, 43).generate(7)
        );
        let mut counts = [0; 10];
        for i in 0..100 {
            counts[data.get(i).unwrap().label] += 1;
        }
        assert_eq!(counts, [10; 10]);
        // Two images of one class differ; so do the textures of two classes sharing a tint.
        assert_ne!(data.generate(3).pixels, data.generate(13).pixels);
        assert!(data.get(100).is_err());
    }

    /// Classes 0 and 1 share a tint: their colour statistics overlap, so colour alone cannot
    /// separate them; classes 0 and 2 have different tints.
    #[test]
    fn colour_alone_does_not_give_the_class_away() {
        let data = SyntheticCifar::new(1000, 1);
        let red = |label: usize| {
            (0..50)
                .map(|k| mean(&data.generate(label + 10 * k), 0))
                .sum::<f32>()
                / 50.0
        };
        assert!((red(0) - red(1)).abs() < 10.0, "{} vs {}", red(0), red(1));
        assert!((red(0) - red(2)).abs() > 30.0, "{} vs {}", red(0), red(2));
    }
}
