//! What differs between image datasets: the stored image's shape, its normalization and its
//! training augmentation. Everything else (sampling, batching) is shared.

/// Side of the square images every batch holds: the input the CIFAR models are built for.
pub const INPUT_SIZE: usize = 32;
/// Channels of every batch: the models take RGB, so a grey image is repeated on all three.
pub const INPUT_CHANNELS: usize = 3;

/// How one dataset's images are stored and how they become a model's input.
///
/// Images are stored channel-major, one byte per value (`[channels, size, size]`), at the
/// dataset's own size. [`ImageBatcher`](super::ImageBatcher) turns them into
/// `[N, 3, 32, 32]` model inputs:
///
/// 1. a smaller image is centred on a 32×32 black canvas (Fashion-MNIST's 28×28 gets a border of
///    2 pixels; its background is black, so the border is more background),
/// 2. a grey image is repeated on the three channels,
/// 3. each value becomes `(pixel / 255 − mean) / std`, with the mean and standard deviation of
///    the channel it came from,
/// 4. for training, the [`Augmentation`]: crops and flips of the canvas, erasing after normalizing.
///
/// Why not a one-channel 28×28 stem: every model then takes the same input, a torchvision
/// checkpoint loads unchanged with `--pretrained`, and VGG's five 2×2 pools need a side
/// divisible by 32 (28 would pool to nothing). The three repeated channels cost only the first
/// convolution (0.3% of ResNet18-CIFAR's multiply-adds); the border costs 31% more pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageSpec {
    /// The dataset's name, for messages and reports.
    pub name: &'static str,
    /// Channels stored per image: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Side of the square images stored, at most [`INPUT_SIZE`].
    pub size: usize,
    /// Per-channel mean of the training set, pixels scaled to `[0, 1]`.
    pub mean: &'static [f32],
    /// Per-channel standard deviation of the training set, pixels scaled to `[0, 1]`.
    pub std: &'static [f32],
    /// What training does to each image.
    pub augmentation: Augmentation,
}

/// Random changes to each training image, drawn afresh every time it is batched (as
/// torchvision's `RandomCrop(32, padding)`, `RandomHorizontalFlip()` and, after `Normalize`,
/// `RandomErasing(p)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augmentation {
    /// A random 32×32 crop of the input zero-padded by this many pixels on every side (in
    /// pixel space, so the padding is black); 0 for none.
    pub crop_padding: usize,
    /// Mirror left to right with probability ½.
    pub horizontal_flip: bool,
    /// With this probability, a random rectangle of the (cropped, mirrored, normalized) input
    /// is set to 0, the dataset's mean, on every channel: 2–33% of its area, an aspect ratio
    /// between 0.3 and 3.3 (torchvision's `RandomErasing(p)` defaults). 0 for none.
    pub erase_probability: f32,
}

impl Augmentation {
    /// No augmentation: what evaluation uses.
    pub const NONE: Self = Self {
        crop_padding: 0,
        horizontal_flip: false,
        erase_probability: 0.0,
    };
}

impl ImageSpec {
    /// Bytes of one stored image (`channels · size · size`).
    pub fn image_bytes(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// Checks the spec describes images the batcher can place.
    ///
    /// # Panics
    ///
    /// When `channels` is neither 1 nor 3, `size` is 0 or above [`INPUT_SIZE`], or `mean` and
    /// `std` do not have one value per channel.
    pub(crate) fn check(&self) {
        assert!(
            self.channels == 1 || self.channels == INPUT_CHANNELS,
            "{}: expected 1 or 3 channels, got {}",
            self.name,
            self.channels
        );
        assert!(
            (1..=INPUT_SIZE).contains(&self.size),
            "{}: expected an image side in 1..={INPUT_SIZE}, got {}",
            self.name,
            self.size
        );
        assert!(
            self.mean.len() == self.channels && self.std.len() == self.channels,
            "{}: expected a mean and a standard deviation per channel ({}), got {} and {}",
            self.name,
            self.channels,
            self.mean.len(),
            self.std.len()
        );
    }
}
