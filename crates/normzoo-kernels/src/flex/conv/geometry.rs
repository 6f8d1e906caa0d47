//! The shapes, stride, padding and dilation of one convolution.

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;

/// The shapes, stride, padding and dilation of one convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) batch: usize,
    pub(super) channels_in: usize,
    pub(super) channels_out: usize,
    pub(super) input: [usize; 2],
    pub(super) kernel: [usize; 2],
    pub(super) output: [usize; 2],
    pub(super) stride: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub(super) padding: [usize; 4],
    pub(super) dilation: [usize; 2],
}

impl Geometry {
    pub(super) fn new(
        x: &FlexTensor,
        weight: &FlexTensor,
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
    ) -> Self {
        let [batch, channels_in, height, width] = x.shape().dims::<4>();
        let [channels_out, _, kernel_h, kernel_w] = weight.shape().dims::<4>();
        let output = |axis: usize, size: usize, kernel: usize| {
            let padded = size + padding[axis] + padding[axis + 2];
            let span = dilation[axis] * (kernel - 1) + 1;
            assert!(
                padded >= span,
                "Conv2d: the kernel spans {span} positions on axis {}, more than the padded \
                 input's {padded}",
                axis + 2
            );
            (padded - span) / stride[axis] + 1
        };
        Self {
            batch,
            channels_in,
            channels_out,
            input: [height, width],
            kernel: [kernel_h, kernel_w],
            output: [output(0, height, kernel_h), output(1, width, kernel_w)],
            stride,
            padding,
            dilation,
        }
    }

    /// The convolution whose output is this one's input gradient, where there is one:
    /// with stride 1, `dx` is `dY` convolved with the weight flipped in space and with its
    /// channel axes swapped, padded by `d·(K − 1) − pad` on each side (which must not be
    /// negative).
    pub(super) fn transposed(&self) -> Option<Self> {
        if self.stride != [1, 1] {
            return None;
        }
        let span = |axis: usize| self.dilation[axis] * (self.kernel[axis] - 1);
        let padding = [0, 1, 2, 3].map(|side| span(side % 2).checked_sub(self.padding[side]));
        let [Some(top), Some(left), Some(bottom), Some(right)] = padding else {
            return None;
        };
        Some(Self {
            channels_in: self.channels_out,
            channels_out: self.channels_in,
            input: self.output,
            output: self.input,
            padding: [top, left, bottom, right],
            ..*self
        })
    }

    /// Whether every kernel position reads the input shifted by a constant in row-major
    /// order: stride 1 and dilation 1 along the width, stride 1 along the height, and an
    /// output as wide as the input (so both have the same row length). ResNet's 3×3
    /// convolutions with padding 1 do, and so do their input gradients.
    pub(super) fn shifts_whole_rows(&self) -> bool {
        self.stride == [1, 1] && self.dilation[1] == 1 && self.output[1] == self.input[1]
    }

    /// Values per input image.
    pub(super) fn image_len(&self) -> usize {
        self.channels_in * self.input[0] * self.input[1]
    }

    /// Rows of a column buffer: one per input channel and kernel position.
    pub(super) fn col_rows(&self) -> usize {
        self.channels_in * self.kernel[0] * self.kernel[1]
    }

    /// Positions per output channel.
    pub(super) fn output_positions(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// The output positions `o` along `axis` whose input position `o·s − pad + k·d` (for
    /// kernel offset `k`) falls inside the image, as a range, and that input position's
    /// value for `o = 0` (possibly negative).
    pub(super) fn valid_outputs(&self, axis: usize, k: usize) -> (std::ops::Range<usize>, isize) {
        let offset = (k * self.dilation[axis]) as isize - self.padding[axis] as isize;
        let stride = self.stride[axis] as isize;
        let size = self.input[axis] as isize;
        let outputs = self.output[axis] as isize;
        // The first `o` with `o·s + offset ≥ 0`, and the first with `o·s + offset ≥ size`.
        let first = |bound: isize| ((bound - offset + stride - 1).div_euclid(stride)).max(0);
        let start = first(0).min(outputs);
        let end = first(size).clamp(start, outputs);
        (start as usize..end as usize, offset)
    }
}
