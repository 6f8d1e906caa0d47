//! Turning stored images of any dataset into normalized, optionally augmented model inputs.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::rng::SplitMix;
use super::{Augmentation, INPUT_CHANNELS, INPUT_SIZE, ImageItem, ImageSpec};

/// A batch of images and their labels.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// Normalized images, `[N, 3, 32, 32]`.
    pub images: Tensor<4>,
    /// Class indices, `[N]`.
    pub labels: Tensor<1, Int>,
}

/// Batches [`ImageItem`]s of one dataset as its [`ImageSpec`] says: centred on the 32×32
/// input, grey repeated to RGB, `(pixel / 255 − mean) / std` per channel, and for training the
/// spec's [`Augmentation`], reproducible from a seed.
#[derive(Debug)]
pub struct ImageBatcher {
    spec: ImageSpec,
    augmentation: Augmentation,
    seed: u64,
    batches: AtomicU64,
}

impl ImageBatcher {
    /// For evaluation: placement and normalization only.
    ///
    /// # Panics
    ///
    /// When `spec` describes images the batcher cannot place (see [`ImageSpec`]).
    pub fn eval(spec: ImageSpec) -> Self {
        Self::new(spec, Augmentation::NONE, 0)
    }

    /// For training: the spec's augmentation too, drawn from `seed`.
    ///
    /// # Panics
    ///
    /// As [`eval`](Self::eval).
    pub fn train(spec: ImageSpec, seed: u64) -> Self {
        Self::new(spec, spec.augmentation, seed)
    }

    fn new(spec: ImageSpec, augmentation: Augmentation, seed: u64) -> Self {
        spec.check();
        Self {
            spec,
            augmentation,
            seed,
            batches: AtomicU64::new(0),
        }
    }
}

/// Where an image lands on the input: the crop's offset in the padded input (`pad` means
/// none), whether it is mirrored, and the rectangle of the input erased, if any.
#[derive(Debug, Clone, Copy)]
struct Placement {
    dy: usize,
    dx: usize,
    flip: bool,
    erased: Option<Rect>,
}

impl Placement {
    fn draw(augmentation: Augmentation, rng: &mut SplitMix) -> Self {
        let positions = 2 * augmentation.crop_padding as u64 + 1;
        let dy = (rng.next() % positions) as usize;
        let dx = (rng.next() % positions) as usize;
        let flip = rng.next() & 1 == 1 && augmentation.horizontal_flip;
        // Nothing is drawn without erasing, so runs without it see the draws they always saw.
        let erase =
            augmentation.erase_probability > 0.0 && rng.uniform() < augmentation.erase_probability;
        let erased = if erase { Rect::erased(rng) } else { None };
        Self {
            dy,
            dx,
            flip,
            erased,
        }
    }
}

/// The share of the input's area an erased rectangle covers, drawn uniformly.
const ERASED_AREA: (f32, f32) = (0.02, 0.33);
/// Its height over its width, drawn uniformly in logarithm.
const ERASED_ASPECT: (f32, f32) = (0.3, 3.3);
/// Draws of a rectangle that fits before giving up on erasing the image.
const ERASE_TRIES: usize = 10;

/// A rectangle of the 32×32 input, in input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    top: usize,
    left: usize,
    height: usize,
    width: usize,
}

impl Rect {
    /// torchvision's `RandomErasing.get_params`: up to [`ERASE_TRIES`] draws of an area and an
    /// aspect ratio, the first whose rectangle fits inside the input placed uniformly; `None`
    /// when none fits.
    fn erased(rng: &mut SplitMix) -> Option<Self> {
        let side = INPUT_SIZE as f32;
        let uniform =
            |rng: &mut SplitMix, (low, high): (f32, f32)| low + (high - low) * rng.uniform();
        let log_aspect = (ERASED_ASPECT.0.ln(), ERASED_ASPECT.1.ln());
        (0..ERASE_TRIES).find_map(|_| {
            let area = side * side * uniform(rng, ERASED_AREA);
            let aspect = uniform(rng, log_aspect).exp();
            let height = (area * aspect).sqrt().round() as usize;
            let width = (area / aspect).sqrt().round() as usize;
            if height >= INPUT_SIZE || width >= INPUT_SIZE {
                return None;
            }
            let top = (rng.next() % (INPUT_SIZE - height + 1) as u64) as usize;
            let left = (rng.next() % (INPUT_SIZE - width + 1) as u64) as usize;
            Some(Self {
                top,
                left,
                height,
                width,
            })
        })
    }

    fn contains(&self, y: usize, x: usize) -> bool {
        (self.top..self.top + self.height).contains(&y)
            && (self.left..self.left + self.width).contains(&x)
    }
}

/// Appends the `[3, 32, 32]` input made of one stored image: input pixel `(y, x)` shows the
/// padded, cropped, possibly mirrored canvas, and the canvas holds the image at its centre;
/// what falls outside the image is black; the erased rectangle is 0 (the mean) on every channel.
/// `levels[c][p]` is the normalized value of byte `p` in stored channel `c`.
fn write_input(
    pixels: &[u8],
    spec: &ImageSpec,
    pad: usize,
    placement: Placement,
    levels: &[[f32; 256]],
    out: &mut Vec<f32>,
) {
    let size = spec.size;
    // From input coordinates to stored ones: + d − pad (the crop), − border (the centring).
    let shift = |d: usize| d as isize - pad as isize - ((INPUT_SIZE - size) / 2) as isize;
    let stored = |i: usize, d: usize| {
        let s = i as isize + shift(d);
        (0..size as isize).contains(&s).then_some(s as usize)
    };
    for channel in 0..INPUT_CHANNELS {
        let source = if spec.channels == 1 { 0 } else { channel };
        let levels = &levels[source];
        let plane = &pixels[source * size * size..(source + 1) * size * size];
        for y in 0..INPUT_SIZE {
            let row = stored(y, placement.dy).map(|sy| &plane[sy * size..(sy + 1) * size]);
            out.extend((0..INPUT_SIZE).map(|x| {
                if placement.erased.is_some_and(|rect| rect.contains(y, x)) {
                    return 0.0;
                }
                let x = if placement.flip {
                    INPUT_SIZE - 1 - x
                } else {
                    x
                };
                let byte = row
                    .zip(stored(x, placement.dx))
                    .map_or(0, |(row, sx)| row[sx]);
                levels[byte as usize]
            }));
        }
    }
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    /// # Panics
    ///
    /// When an item does not hold the spec's number of bytes.
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let spec = &self.spec;
        let n = items.len();
        let mut rng = SplitMix(
            self.seed
                ^ self
                    .batches
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0xA24B_AED4_963E_E407),
        );
        let levels: Vec<[f32; 256]> = (0..spec.channels)
            .map(|c| std::array::from_fn(|p| (p as f32 / 255.0 - spec.mean[c]) / spec.std[c]))
            .collect();
        let pad = self.augmentation.crop_padding;
        let mut values = Vec::with_capacity(n * INPUT_CHANNELS * INPUT_SIZE * INPUT_SIZE);
        let mut labels = Vec::with_capacity(n);
        for item in &items {
            assert_eq!(
                item.pixels.len(),
                spec.image_bytes(),
                "{}: expected images of {}×{}×{} bytes",
                spec.name,
                spec.channels,
                spec.size,
                spec.size
            );
            let placement = Placement::draw(self.augmentation, &mut rng);
            write_input(&item.pixels, spec, pad, placement, &levels, &mut values);
            labels.push(item.label as i64);
        }
        ImageBatch {
            images: Tensor::from_data(
                TensorData::new(values, [n, INPUT_CHANNELS, INPUT_SIZE, INPUT_SIZE]),
                device,
            ),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{CifarDataset, FashionMnist};

    fn item(spec: &ImageSpec, value: u8, label: usize) -> ImageItem {
        ImageItem {
            pixels: vec![value; spec.image_bytes()],
            label,
        }
    }

    fn values(batch: ImageBatch) -> Vec<f32> {
        batch.images.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn evaluation_batches_are_normalized() {
        let device = crate::cpu();
        let spec = CifarDataset::SPEC;
        let batch =
            ImageBatcher::eval(spec).batch(vec![item(&spec, 255, 3), item(&spec, 0, 7)], &device);
        assert_eq!(batch.images.dims(), [2, 3, 32, 32]);
        let labels = batch.labels.clone().into_data().convert::<i64>();
        assert_eq!(labels.try_to_vec::<i64>().unwrap(), vec![3, 7]);
        let values = values(batch);
        assert!(
            (values[0] - (1.0 - 0.4914) / 0.2470).abs() < 1e-5,
            "{}",
            values[0]
        );
        assert!((values[2048] - (1.0 - 0.4465) / 0.2616).abs() < 1e-5);
        assert!((values[3072] - (0.0 - 0.4914) / 0.2470).abs() < 1e-5);
    }

    /// A 28×28 grey image lands in the middle of the input with a black border of 2, the same
    /// on all three channels, normalized with the grey channel's statistics.
    #[test]
    fn grey_images_are_centred_and_repeated() {
        let device = crate::cpu();
        let spec = FashionMnist::SPEC;
        let batch = ImageBatcher::eval(spec).batch(vec![item(&spec, 255, 1)], &device);
        assert_eq!(batch.images.dims(), [1, 3, 32, 32]);
        let values = values(batch);
        let (white, black) = (
            (1.0 - spec.mean[0]) / spec.std[0],
            (0.0 - spec.mean[0]) / spec.std[0],
        );
        for channel in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let inside = (2..30).contains(&y) && (2..30).contains(&x);
                    let expected = if inside { white } else { black };
                    assert_eq!(
                        values[channel * 1024 + y * 32 + x],
                        expected,
                        "({channel}, {y}, {x})"
                    );
                }
            }
        }
    }

    /// A crop moves the image by at most the padding and fills with black; a flip mirrors it.
    #[test]
    fn augmentation_crops_and_flips() {
        for spec in [CifarDataset::SPEC, FashionMnist::SPEC] {
            let pad = spec.augmentation.crop_padding;
            let border = (INPUT_SIZE - spec.size) / 2;
            let mut pixels = vec![0u8; spec.image_bytes()];
            pixels[0] = 255; // the top-left pixel of the first channel
            let levels: Vec<[f32; 256]> = (0..spec.channels)
                .map(|_| std::array::from_fn(|p| p as f32))
                .collect();
            let (mut seen_flip, mut seen_shift) = (false, false);
            let mut rng = SplitMix(7);
            for _ in 0..64 {
                let placement = Placement::draw(spec.augmentation, &mut rng);
                let mut out = Vec::new();
                write_input(&pixels, &spec, pad, placement, &levels, &mut out);
                assert_eq!(out.len(), 3 * 1024);
                let lit: Vec<usize> = (0..1024).filter(|&i| out[i] == 255.0).collect();
                assert!(lit.len() <= 1, "{lit:?}");
                if let Some(&i) = lit.first() {
                    let (y, x) = (i / INPUT_SIZE, i % INPUT_SIZE);
                    // Unmoved, the pixel sits at (border, border).
                    let near = |v: usize| v + pad >= border && v <= border + pad;
                    let mirrored = INPUT_SIZE - 1 - x;
                    assert!(near(y) && (near(x) || near(mirrored)), "({y}, {x})");
                    seen_flip |= !near(x);
                    seen_shift |= y != border;
                }
            }
            assert!(seen_flip && seen_shift, "{}", spec.name);
        }
    }

    /// Erasing sets a rectangle of the input to 0 on every channel, as often as asked, in
    /// torchvision's bounds (2–33% of the area, give or take the rounding of its sides).
    #[test]
    fn erasing_zeroes_a_rectangle_as_often_as_asked() {
        let spec = FashionMnist::SPEC;
        let augmentation = Augmentation {
            erase_probability: 0.25,
            ..Augmentation::NONE
        };
        let pixels = vec![255u8; spec.image_bytes()];
        // Every byte, the border's too, becomes 1, so only the erased pixels are 0.
        let levels = vec![[1.0f32; 256]];
        let mut rng = SplitMix(11);
        let mut erased = 0;
        for _ in 0..2000 {
            let placement = Placement::draw(augmentation, &mut rng);
            let mut out = Vec::new();
            write_input(&pixels, &spec, 0, placement, &levels, &mut out);
            let plane = INPUT_SIZE * INPUT_SIZE;
            for channel in 1..3 {
                assert_eq!(out[channel * plane..(channel + 1) * plane], out[..plane]);
            }
            let zeros: Vec<usize> = (0..plane).filter(|&i| out[i] == 0.0).collect();
            let Some(rect) = placement.erased else {
                assert!(zeros.is_empty(), "{zeros:?}");
                continue;
            };
            erased += 1;
            assert_eq!(zeros.len(), rect.height * rect.width, "{rect:?}");
            assert!(
                zeros
                    .iter()
                    .all(|&i| rect.contains(i / INPUT_SIZE, i % INPUT_SIZE))
            );
            assert!((15..=400).contains(&zeros.len()), "{rect:?}");
        }
        // 500 expected; 4 standard deviations (19 each) either side.
        assert!((424..=576).contains(&erased), "{erased} of 2000 erased");
    }
}
