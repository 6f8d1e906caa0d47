//! 2-D convolution on flex by im2col and large matrix products: see [`conv2d`].

use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

/// `conv.forward(input)`, computed on flex by im2col and large matrix products, forward and
/// backward; the same as `Conv2d::forward` elsewhere.
///
/// On flex with f32 tensors and one group, the op and its backward pass are ours, and the
/// models of this crate run every such convolution through it (it serves any [`Conv2d`]).
/// burn derives a convolution's weight gradient as another convolution, with the batch as
/// channels and the output gradient as a `Ho×Wo` kernel: one skinny matrix product per input
/// channel, each re-reading the whole output gradient, far slower than the forward
/// convolution. Here all three products are the textbook im2col ones, over chunks of images:
///
/// ```text
/// col[(c, i, j), (b, p)] = x[b, c, p·s − pad + (i, j)·d]         (0 outside the image)
/// y = W · col         dWᵀ += col · dYᵀ
/// dx = dY convolved with W flipped in space, its channel axes swapped     (stride 1)
/// dx[b, c, p·s − pad + (i, j)·d] += (Wᵀ · dY)[(c, i, j), (b, p)]          (otherwise)
/// ```
///
/// where `(b, p)` runs over a chunk's images and their output positions, so that each product
/// is large enough for gemm's kernels, and each operand is laid out the way gemm packs it
/// (`dY` as `[(b, p), Co]` for the weight gradient, rather than `dY · colᵀ`). Each thread
/// takes one contiguous run of the batch, with its own buffers and its own part of `dW`: a
/// weight gradient is a small output over a long sum, which gemm's own threading splits
/// poorly. Grouped convolutions, `Same` padding, other dtypes and other backends use burn's
/// convolution.
///
/// # Panics
///
/// As [`Conv2d::forward`]: on an input whose channels do not match the weight's, and on a
/// kernel that spans more than the padded input.
pub fn conv2d(conv: &Conv2d, input: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(output) = flex::try_conv2d(conv, &input) {
        return output;
    }
    conv.forward(input)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{
        Autodiff, Backend, Dispatch, DispatchDevice, Flex, TensorMetadata, backend_extension,
    };
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2d;
    use burn::tensor::{DType, Tensor, TensorData};
    use normzoo_norm::backend::flex_values;
    use rayon::prelude::*;

    /// The padding `[top, left, bottom, right]` of `conv`, where it does not depend on the
    /// input (`Same` does: burn computes it at each call).
    fn explicit_padding(conv: &Conv2d) -> Option<[usize; 4]> {
        match conv.padding {
            PaddingConfig2d::Valid => Some([0; 4]),
            PaddingConfig2d::Explicit(top, left, bottom, right) => Some([top, left, bottom, right]),
            PaddingConfig2d::Same => None,
        }
    }

    /// `conv2d` on the extension op, or `None` where it does not apply.
    pub(super) fn try_conv2d(conv: &Conv2d, input: &Tensor<4>) -> Option<Tensor<4>> {
        let weight = conv.weight.val();
        let on_flex = matches!(
            input.device().inner().as_dispatch(),
            DispatchDevice::Flex(_)
        );
        if !on_flex
            || conv.groups != 1
            || input.dtype() != DType::F32
            || weight.dtype() != DType::F32
            || input.dims()[1] != weight.dims()[1]
        {
            return None;
        }
        let padding = explicit_padding(conv)?;
        let output = Tensor::from_dispatch(<Dispatch as ConvBackend>::conv2d_im2col(
            input.clone().into_dispatch(),
            weight.into_dispatch(),
            conv.stride,
            padding,
            conv.dilation,
        ));
        Some(match &conv.bias {
            Some(bias) => output + bias.val().reshape([1, -1, 1, 1]),
            None => output,
        })
    }

    /// The convolution as a burn backend extension.
    #[backend_extension(Flex, Autodiff)]
    pub(crate) trait ConvBackend: Backend {
        /// `x` (`[N, Ci, H, W]`) convolved with `weight` (`[Co, Ci, Kh, Kw]`), no bias, one
        /// group, `padding` as `[top, left, bottom, right]`.
        fn conv2d_im2col(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            stride: [usize; 2],
            padding: [usize; 4],
            dilation: [usize; 2],
        ) -> FloatTensor<Self>;
    }

    /// The convolution of flex tensors.
    fn forward(x: &FlexTensor, weight: &FlexTensor, geometry: &Geometry) -> FlexTensor {
        let g = geometry;
        let output = convolve(&flex_values(x), &flex_values(weight), g);
        FlexTensor::from_data(TensorData::new(
            output,
            vec![g.batch, g.channels_out, g.output[0], g.output[1]],
        ))
    }

    /// `x` convolved with `weight` as `g` describes: per thread, a run of images; per chunk of
    /// them, `out = W · col`, then `out` (`[Co, (b, p)]`) moved to the output's `[b, Co, p]`.
    fn convolve(x: &[f32], weight: &[f32], g: &Geometry) -> Vec<f32> {
        let positions = g.output_positions();
        let rows = g.col_rows();
        let (runs, parallelism) = thread_runs(g.batch);
        // Written in full below: no zero-fill first.
        let len = g.batch * g.channels_out * positions;
        let mut output = Vec::with_capacity(len);
        let output_runs = split_runs(
            &mut output.spare_capacity_mut()[..len],
            &runs,
            g.channels_out * positions,
        );
        runs.into_par_iter()
            .zip(output_runs)
            .for_each(|(run, output)| {
                with_scratch(|Scratch { col, packed: out }| {
                    for images in chunks(run.clone(), positions) {
                        let columns = images.len() * positions;
                        let col = sized(col, rows * columns);
                        let out = sized(out, g.channels_out * columns);
                        im2col(x, g, images.clone(), col);
                        // out[Co, columns] = W[Co, rows] · col[rows, columns].
                        matmul(
                            [g.channels_out, columns, rows],
                            (out, RowMajor(columns)),
                            false,
                            (weight, RowMajor(rows)),
                            (col, RowMajor(columns)),
                            parallelism,
                        );
                        // `[Co, (b, p)]` to the output's `[b, Co, p]`.
                        let first = (images.start - run.start) * g.channels_out * positions;
                        let images_out = &mut output[first..][..g.channels_out * columns];
                        for (image, image_out) in images_out
                            .chunks_exact_mut(g.channels_out * positions)
                            .enumerate()
                        {
                            for (channel, plane) in
                                image_out.chunks_exact_mut(positions).enumerate()
                            {
                                let values = &out[channel * columns + image * positions..];
                                // SAFETY: `values` holds at least `positions` values, `plane`
                                // is `positions` long, and they are different buffers.
                                unsafe {
                                    std::ptr::copy_nonoverlapping(
                                        values.as_ptr(),
                                        plane.as_mut_ptr().cast::<f32>(),
                                        positions,
                                    );
                                }
                            }
                        }
                    }
                })
            });
        // SAFETY: every value was written: the runs cover the batch, the chunks cover each
        // run, and each chunk writes every channel plane of each of its images.
        unsafe { output.set_len(len) };
        output
    }

    /// How a matrix lies in its buffer.
    #[derive(Clone, Copy)]
    enum Layout {
        /// Rows `stride` values apart, each contiguous.
        RowMajor(usize),
        /// Columns `stride` values apart, each contiguous.
        ColumnMajor(usize),
    }

    use Layout::{ColumnMajor, RowMajor};

    impl Layout {
        /// gemm's (column stride, row stride).
        fn strides(self) -> (isize, isize) {
            match self {
                RowMajor(stride) => (1, stride as isize),
                ColumnMajor(stride) => (stride as isize, 1),
            }
        }

        /// How many values of its buffer a `rows × cols` matrix laid out this way reaches.
        fn span(self, rows: usize, cols: usize) -> usize {
            if rows == 0 || cols == 0 {
                return 0;
            }
            match self {
                RowMajor(stride) => (rows - 1) * stride + cols,
                ColumnMajor(stride) => (cols - 1) * stride + rows,
            }
        }
    }

    /// `dst = lhs · rhs` (`m × k` times `k × n`), or `dst += lhs · rhs` when `accumulate`,
    /// each matrix given with its layout in its buffer.
    fn matmul(
        [m, n, k]: [usize; 3],
        (dst, dst_layout): (&mut [f32], Layout),
        accumulate: bool,
        (lhs, lhs_layout): (&[f32], Layout),
        (rhs, rhs_layout): (&[f32], Layout),
        parallelism: gemm::Parallelism,
    ) {
        assert!(
            dst_layout.span(m, n) <= dst.len()
                && lhs_layout.span(m, k) <= lhs.len()
                && rhs_layout.span(k, n) <= rhs.len(),
            "matmul: a matrix larger than its buffer"
        );
        let ((dst_cs, dst_rs), (lhs_cs, lhs_rs), (rhs_cs, rhs_rs)) = (
            dst_layout.strides(),
            lhs_layout.strides(),
            rhs_layout.strides(),
        );
        // SAFETY: every matrix lies inside its buffer (asserted above), and `dst` is borrowed
        // mutably, so it overlaps neither operand.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                dst_cs,
                dst_rs,
                accumulate,
                lhs.as_ptr(),
                lhs_cs,
                lhs_rs,
                rhs.as_ptr(),
                rhs_cs,
                rhs_rs,
                if accumulate { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }

    /// A thread's buffers for column matrices and repacked operands.
    #[derive(Default)]
    struct Scratch {
        col: Vec<f32>,
        packed: Vec<f32>,
    }

    thread_local! {
        /// Each thread's [`Scratch`], kept from one convolution to the next (at most a few
        /// tens of MB per thread: the largest column buffer of a chunk). Allocating them per
        /// call would zero-fill and page-fault every buffer on every call.
        static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
    }

    /// Runs `work` with this thread's [`Scratch`]. Re-entrant: while a thread waits inside
    /// `work`, rayon may run another run's work on it, which then starts from empty buffers.
    fn with_scratch<R>(work: impl FnOnce(&mut Scratch) -> R) -> R {
        let mut scratch = SCRATCH.take();
        let result = work(&mut scratch);
        SCRATCH.set(scratch);
        result
    }

    /// The first `len` values of `buffer`, grown if it is shorter. Whatever it held before
    /// is left there: every user overwrites all `len` values.
    fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        &mut buffer[..len]
    }

    /// The batch split into one contiguous run of images per thread, and the threading gemm
    /// should use inside each run: none, unless the batch is smaller than the thread pool.
    fn thread_runs(batch: usize) -> (Vec<std::ops::Range<usize>>, gemm::Parallelism) {
        let available = rayon::current_num_threads();
        let threads = available.clamp(1, batch.max(1));
        let runs = (0..threads)
            .map(|t| t * batch / threads..(t + 1) * batch / threads)
            .collect();
        let parallelism = match threads < available {
            true => gemm::Parallelism::Rayon(0),
            false => gemm::Parallelism::None,
        };
        (runs, parallelism)
    }

    /// `values` (`image_len` values per image) cut at the runs' boundaries.
    fn split_runs<'a, T>(
        mut values: &'a mut [T],
        runs: &[std::ops::Range<usize>],
        image_len: usize,
    ) -> Vec<&'a mut [T]> {
        runs.iter()
            .map(|run| {
                let (head, tail) = std::mem::take(&mut values).split_at_mut(run.len() * image_len);
                values = tail;
                head
            })
            .collect()
    }

    /// The chunks of a run whose column buffer is built at once, about [`CHUNK_COLUMNS`]
    /// columns each.
    fn chunks(
        run: std::ops::Range<usize>,
        positions: usize,
    ) -> impl Iterator<Item = std::ops::Range<usize>> {
        let images_per_chunk = CHUNK_COLUMNS.div_ceil(positions).max(1);
        run.clone()
            .step_by(images_per_chunk)
            .map(move |first| first..(first + images_per_chunk).min(run.end))
    }

    impl ConvBackend for Flex {
        fn conv2d_im2col(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            stride: [usize; 2],
            padding: [usize; 4],
            dilation: [usize; 2],
        ) -> FloatTensor<Self> {
            let geometry = Geometry::new(&x, &weight, stride, padding, dilation);
            forward(&x, &weight, &geometry)
        }
    }

    impl<C: CheckpointStrategy> ConvBackend for Autodiff<Flex, C> {
        fn conv2d_im2col(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            stride: [usize; 2],
            padding: [usize; 4],
            dilation: [usize; 2],
        ) -> FloatTensor<Self> {
            let guards = [x.node(), weight.node()];
            let (x, weight) = (x.into_primitive(), weight.into_primitive());
            let geometry = Geometry::new(&x, &weight, stride, padding, dilation);
            match ConvBackward.prepare::<C>(guards).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let output = forward(&x, &weight, &geometry);
                    prep.finish((x, weight, geometry), output)
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(&x, &weight, &geometry)),
            }
        }
    }

    /// The shapes, stride, padding and dilation of one convolution.
    #[derive(Debug, Clone, Copy)]
    struct Geometry {
        batch: usize,
        channels_in: usize,
        channels_out: usize,
        input: [usize; 2],
        kernel: [usize; 2],
        output: [usize; 2],
        stride: [usize; 2],
        /// `[top, left, bottom, right]`.
        padding: [usize; 4],
        dilation: [usize; 2],
    }

    impl Geometry {
        fn new(
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
        fn transposed(&self) -> Option<Self> {
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

        /// Values per input image.
        fn image_len(&self) -> usize {
            self.channels_in * self.input[0] * self.input[1]
        }

        /// Rows of a column buffer: one per input channel and kernel position.
        fn col_rows(&self) -> usize {
            self.channels_in * self.kernel[0] * self.kernel[1]
        }

        /// Positions per output channel.
        fn output_positions(&self) -> usize {
            self.output[0] * self.output[1]
        }

        /// The output positions `o` along `axis` whose input position `o·s − pad + k·d` (for
        /// kernel offset `k`) falls inside the image, as a range, and that input position's
        /// value for `o = 0` (possibly negative).
        fn valid_outputs(&self, axis: usize, k: usize) -> (std::ops::Range<usize>, isize) {
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

    /// The backward step: the gradients its tracked parents need, from the saved input and
    /// weight.
    #[derive(Debug)]
    struct ConvBackward;

    impl Backward<Flex, 2> for ConvBackward {
        type State = (FlexTensor, FlexTensor, Geometry);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let output_grad = grads.consume::<Flex>(&ops.node);
            let (x, weight, geometry) = ops.state;
            let [x_parent, weight_parent] = ops.parents;
            let (x_grad, weight_grad) = backward(
                &output_grad,
                &x,
                &weight,
                &geometry,
                x_parent.is_some(),
                weight_parent.is_some(),
            );
            if let (Some(parent), Some(grad)) = (x_parent, x_grad) {
                grads.register::<Flex>(parent.id, grad);
            }
            if let (Some(parent), Some(grad)) = (weight_parent, weight_grad) {
                grads.register::<Flex>(parent.id, grad);
            }
        }
    }

    /// The images whose column buffer is built at once: about this many columns (output
    /// positions), large enough for gemm's blocking, small enough to stay near the caches.
    const CHUNK_COLUMNS: usize = 2048;

    /// The gradients of `x` and the weight (those asked for) from the output's.
    ///
    /// With stride 1 the input gradient is itself a convolution (see
    /// [`Geometry::transposed`]); otherwise it is `col2im(Wᵀ · dY)`. The weight gradient is
    /// `dWᵀ = col · dYᵀ`, with `dY` repacked as `[(b, p), Co]`: gemm reads both operands in
    /// the order it packs them, unlike `dY · colᵀ`. Each thread sums its own run of the batch
    /// (a weight gradient is a small output over a long sum, which gemm's own threading splits
    /// poorly), and the parts are added at the end.
    fn backward(
        output_grad: &FlexTensor,
        x: &FlexTensor,
        weight: &FlexTensor,
        geometry: &Geometry,
        need_x: bool,
        need_weight: bool,
    ) -> (Option<FlexTensor>, Option<FlexTensor>) {
        let (output_grad, x, weight) = (
            flex_values(output_grad),
            flex_values(x),
            flex_values(weight),
        );
        let (output_grad, x, weight) = (&*output_grad, &*x, &*weight);
        let g = geometry;
        let image_len = g.image_len();

        let (runs, parallelism) = thread_runs(g.batch);
        let x_grad_convolved = match (need_x, g.transposed()) {
            (true, Some(transposed)) => {
                Some(convolve(output_grad, &flipped(weight, g), &transposed))
            }
            _ => None,
        };
        let mut x_grad_scattered =
            (need_x && x_grad_convolved.is_none()).then(|| vec![0.0f32; g.batch * image_len]);
        let scatter = x_grad_scattered.is_some();
        let x_grad_runs: Vec<Option<&mut [f32]>> = match &mut x_grad_scattered {
            Some(buffer) => split_runs(buffer, &runs, image_len)
                .into_iter()
                .map(Some)
                .collect(),
            None => runs.iter().map(|_| None).collect(),
        };
        let inputs = RunInputs {
            output_grad,
            x,
            weight,
        };
        let weight_grad_parts: Vec<Vec<f32>> = match need_weight || scatter {
            true => runs
                .into_par_iter()
                .zip(x_grad_runs)
                .filter_map(|(run, x_grad)| {
                    backward_run(inputs, g, run, x_grad, need_weight, parallelism)
                })
                .collect(),
            false => Vec::new(),
        };
        let weight_grad = (!weight_grad_parts.is_empty())
            .then(|| sum_transposed(&weight_grad_parts, g.col_rows(), g.channels_out));
        let x_grad = x_grad_convolved.or(x_grad_scattered);
        let tensor = |values: Vec<f32>, shape: [usize; 4]| {
            FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
        };
        (
            x_grad.map(|values| tensor(values, [g.batch, g.channels_in, g.input[0], g.input[1]])),
            weight_grad.map(|values| {
                tensor(
                    values,
                    [g.channels_out, g.channels_in, g.kernel[0], g.kernel[1]],
                )
            }),
        )
    }

    /// The weight `[Co, Ci, Kh, Kw]` as `[Ci, Co, Kh, Kw]`, flipped in both spatial axes.
    fn flipped(weight: &[f32], g: &Geometry) -> Vec<f32> {
        let [kernel_h, kernel_w] = g.kernel;
        let taps = kernel_h * kernel_w;
        let mut out = Vec::with_capacity(weight.len());
        for c in 0..g.channels_in {
            for o in 0..g.channels_out {
                let kernel = &weight[(o * g.channels_in + c) * taps..][..taps];
                out.extend(kernel.iter().rev());
            }
        }
        out
    }

    /// The sum of `parts` (each `[rows, cols]`, row-major), transposed.
    fn sum_transposed(parts: &[Vec<f32>], rows: usize, cols: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; rows * cols];
        out.par_chunks_exact_mut(rows)
            .enumerate()
            .for_each(|(col, out_row)| {
                for (row, value) in out_row.iter_mut().enumerate() {
                    *value = parts.iter().map(|part| part[row * cols + col]).sum();
                }
            });
        out
    }

    /// What every run of [`backward`] reads.
    #[derive(Clone, Copy)]
    struct RunInputs<'a> {
        output_grad: &'a [f32],
        x: &'a [f32],
        weight: &'a [f32],
    }

    /// One thread's share of [`backward`]: the images of `run`, in chunks of columns. Scatters
    /// their input gradient into `x_grad` (their images only) when it is given, and returns
    /// their part of `dWᵀ` (`[Ci·Kh·Kw, Co]`) when `need_weight`.
    fn backward_run(
        inputs: RunInputs<'_>,
        g: &Geometry,
        run: std::ops::Range<usize>,
        mut x_grad: Option<&mut [f32]>,
        need_weight: bool,
        parallelism: gemm::Parallelism,
    ) -> Option<Vec<f32>> {
        let RunInputs {
            output_grad,
            x,
            weight,
        } = inputs;
        let positions = g.output_positions();
        let rows = g.col_rows();
        let image_len = g.image_len();
        let mut weight_grad = need_weight.then(|| vec![0.0f32; rows * g.channels_out]);
        with_scratch(|Scratch { col, packed }| {
            for images in chunks(run.clone(), positions) {
                let columns = images.len() * positions;
                let col = sized(col, rows * columns);
                let packed = sized(packed, g.channels_out * columns);
                if let Some(weight_grad) = &mut weight_grad {
                    pack_output_grad(
                        output_grad,
                        g,
                        images.clone(),
                        Packing::PositionMajor,
                        packed,
                    );
                    im2col(x, g, images.clone(), col);
                    // dWᵀ[rows, Co] (+)= col[rows, columns] · dYᵀ[columns, Co].
                    matmul(
                        [rows, g.channels_out, columns],
                        (weight_grad, RowMajor(g.channels_out)),
                        images.start > run.start,
                        (col, RowMajor(columns)),
                        (packed, RowMajor(g.channels_out)),
                        parallelism,
                    );
                }
                if let Some(x_grad) = &mut x_grad {
                    pack_output_grad(
                        output_grad,
                        g,
                        images.clone(),
                        Packing::ChannelMajor,
                        packed,
                    );
                    // dcol[rows, columns] = Wᵀ[rows, Co] · dY[Co, columns].
                    matmul(
                        [rows, columns, g.channels_out],
                        (col, RowMajor(columns)),
                        false,
                        (weight, ColumnMajor(rows)),
                        (packed, RowMajor(columns)),
                        parallelism,
                    );
                    let local = (images.start - run.start) * image_len
                        ..(images.end - run.start) * image_len;
                    col2im(col, g, &mut x_grad[local]);
                }
            }
        });
        weight_grad
    }

    /// How [`pack_output_grad`] lays out a chunk's output gradient.
    #[derive(Clone, Copy)]
    enum Packing {
        /// `[Co, (b, p)]`.
        ChannelMajor,
        /// `[(b, p), Co]`.
        PositionMajor,
    }

    /// The output gradient of `images` laid out as `packing` says, into `packed` (its
    /// `Co · images · positions` values).
    fn pack_output_grad(
        output_grad: &[f32],
        g: &Geometry,
        images: std::ops::Range<usize>,
        packing: Packing,
        packed: &mut [f32],
    ) {
        let positions = g.output_positions();
        let columns = images.len() * positions;
        let channels = g.channels_out;
        let source = &output_grad[images.start * channels * positions..][..channels * columns];
        match packing {
            Packing::ChannelMajor => {
                packed
                    .par_chunks_exact_mut(columns)
                    .enumerate()
                    .for_each(|(channel, row)| {
                        for (image, out) in row.chunks_exact_mut(positions).enumerate() {
                            let start = (image * channels + channel) * positions;
                            out.copy_from_slice(&source[start..][..positions]);
                        }
                    })
            }
            Packing::PositionMajor => packed
                .par_chunks_exact_mut(channels * positions)
                .zip(source.par_chunks_exact(channels * positions))
                .for_each(|(out, image)| {
                    for (position, out) in out.chunks_exact_mut(channels).enumerate() {
                        for (channel, value) in out.iter_mut().enumerate() {
                            *value = image[channel * positions + position];
                        }
                    }
                }),
        }
    }

    /// The column buffer of `images` (`[(c, i, j), (b, p)]`, see the module docs) into `col`.
    fn im2col(x: &[f32], g: &Geometry, images: std::ops::Range<usize>, col: &mut [f32]) {
        let [height, width] = g.input;
        let [kernel_h, kernel_w] = g.kernel;
        let [out_h, out_w] = g.output;
        let columns = images.len() * out_h * out_w;
        col.par_chunks_exact_mut(columns)
            .enumerate()
            .for_each(|(row, col_row)| {
                let channel = row / (kernel_h * kernel_w);
                let (i, j) = (row / kernel_w % kernel_h, row % kernel_w);
                let (rows_in, row_offset) = g.valid_outputs(0, i);
                let (cols_in, col_offset) = g.valid_outputs(1, j);
                for (image, out) in images.clone().zip(col_row.chunks_exact_mut(out_h * out_w)) {
                    let plane =
                        &x[(image * g.channels_in + channel) * height * width..][..height * width];
                    for (oh, out_row) in out.chunks_exact_mut(out_w).enumerate() {
                        if !rows_in.contains(&oh) {
                            out_row.fill(0.0);
                            continue;
                        }
                        let ih = (oh * g.stride[0]) as isize + row_offset;
                        let source = &plane[ih as usize * width..][..width];
                        out_row[..cols_in.start].fill(0.0);
                        out_row[cols_in.end..].fill(0.0);
                        let out_row = &mut out_row[cols_in.clone()];
                        match g.stride[1] {
                            1 => {
                                let start = (cols_in.start as isize + col_offset) as usize;
                                out_row.copy_from_slice(&source[start..][..out_row.len()]);
                            }
                            stride => {
                                let inputs = along(&cols_in, col_offset, stride);
                                for (out, value) in out_row.iter_mut().zip(inputs) {
                                    *out = source[value];
                                }
                            }
                        }
                    }
                }
            });
    }

    /// The input positions `o·stride + offset` of the output positions `outputs` (all inside
    /// the input, as [`Geometry::valid_outputs`] gives them).
    fn along(
        outputs: &std::ops::Range<usize>,
        offset: isize,
        stride: usize,
    ) -> impl Iterator<Item = usize> {
        let first = (outputs.start * stride) as isize + offset;
        (first as usize..).step_by(stride).take(outputs.len())
    }

    /// Adds the column gradient of a chunk of images (`[(c, i, j), (b, p)]`) into `x_grad`,
    /// their planes.
    fn col2im(col: &[f32], g: &Geometry, x_grad: &mut [f32]) {
        let [height, width] = g.input;
        let [kernel_h, kernel_w] = g.kernel;
        let [out_h, out_w] = g.output;
        let positions = out_h * out_w;
        let plane_len = height * width;
        let columns = x_grad.len() / (g.channels_in * plane_len) * positions;
        x_grad
            .par_chunks_exact_mut(plane_len)
            .enumerate()
            .for_each(|(index, plane)| {
                let (image, channel) = (index / g.channels_in, index % g.channels_in);
                for i in 0..kernel_h {
                    let (rows_in, row_offset) = g.valid_outputs(0, i);
                    for j in 0..kernel_w {
                        let (cols_in, col_offset) = g.valid_outputs(1, j);
                        let row = (channel * kernel_h + i) * kernel_w + j;
                        let source = &col[row * columns + image * positions..][..positions];
                        for oh in rows_in.clone() {
                            let ih = ((oh * g.stride[0]) as isize + row_offset) as usize;
                            let target = &mut plane[ih * width..][..width];
                            let values = &source[oh * out_w..][cols_in.clone()];
                            match g.stride[1] {
                                // Contiguous: vectorized.
                                1 => {
                                    let start = (cols_in.start as isize + col_offset) as usize;
                                    let target = &mut target[start..][..values.len()];
                                    target.iter_mut().zip(values).for_each(|(t, v)| *t += v);
                                }
                                stride => {
                                    let inputs = along(&cols_in, col_offset, stride);
                                    for (value, iw) in values.iter().zip(inputs) {
                                        target[iw] += value;
                                    }
                                }
                            }
                        }
                    }
                }
            });
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, Distribution, Tensor, Tolerance};

    use super::*;

    /// One convolution to compare.
    struct Case {
        batch: usize,
        channels: [usize; 2],
        input: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: PaddingConfig2d,
        dilation: [usize; 2],
        bias: bool,
        /// Whether the input takes part in autodiff (a network's first layer's does not).
        input_grad: bool,
    }

    impl Default for Case {
        fn default() -> Self {
            Self {
                batch: 3,
                channels: [5, 4],
                input: [9, 9],
                kernel: [3, 3],
                stride: [1, 1],
                padding: PaddingConfig2d::Explicit(1, 1, 1, 1),
                dilation: [1, 1],
                bias: false,
                input_grad: true,
            }
        }
    }

    /// Our op's output and gradients (input, weight, bias) against burn's own module's, on
    /// flex with autodiff.
    fn assert_matches_burn(case: Case) {
        let device = Device::flex().autodiff();
        let conv = Conv2dConfig::new(case.channels, case.kernel)
            .with_stride(case.stride)
            .with_padding(case.padding)
            .with_dilation(case.dilation)
            .with_bias(case.bias)
            .init(&device);
        let [height, width] = case.input;
        let x = Tensor::<4>::random(
            [case.batch, case.channels[0], height, width],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let x = if case.input_grad { x.require_grad() } else { x };
        let reference = conv.forward(x.clone());
        let output_grad =
            Tensor::<4>::random(reference.dims(), Distribution::Normal(0.0, 1.0), &device);
        let gradients = |output: Tensor<4>| {
            let grads = (output * output_grad.clone()).sum().backward();
            (
                x.grad(&grads),
                conv.weight.grad(&grads).expect("the weight's gradient"),
                conv.bias
                    .as_ref()
                    .map(|bias| bias.grad(&grads).expect("the bias's gradient")),
            )
        };
        let output = conv2d(&conv, x.clone());
        let tolerance = Tolerance::<f32>::rel_abs(1e-4, 1e-4);
        let assert_close = |ours: Tensor<4>, theirs: Tensor<4>| {
            ours.into_data()
                .assert_approx_eq::<f32>(&theirs.into_data(), tolerance)
        };
        assert_close(output.clone(), reference.clone());
        let (x_grad, weight_grad, bias_grad) = gradients(output);
        let (x_ref, weight_ref, bias_ref) = gradients(reference);
        assert_eq!(x_grad.is_some(), case.input_grad);
        if let (Some(ours), Some(theirs)) = (x_grad, x_ref) {
            assert_close(ours, theirs);
        }
        // Each weight's gradient sums a product over every output position of every image
        // (thousands), which the two sides add in different orders: an entry that nearly cancels
        // keeps an error of about 1e-6 of the largest entries, not of its own size.
        let scale = weight_ref.clone().abs().max().into_scalar::<f32>();
        weight_grad.into_data().assert_approx_eq::<f32>(
            &weight_ref.into_data(),
            Tolerance::rel_abs(1e-4, 1e-5 * scale.max(1.0)),
        );
        assert_eq!(bias_grad.is_some(), case.bias);
        if let (Some(ours), Some(theirs)) = (bias_grad, bias_ref) {
            ours.into_data()
                .assert_approx_eq::<f32>(&theirs.into_data(), tolerance);
        }
    }

    #[test]
    fn same_size_3x3_with_bias() {
        assert_matches_burn(Case {
            bias: true,
            ..Case::default()
        });
    }

    #[test]
    fn strided_on_an_odd_sized_input() {
        assert_matches_burn(Case {
            input: [9, 7],
            stride: [2, 2],
            ..Case::default()
        });
    }

    #[test]
    fn strided_1x1_projection() {
        assert_matches_burn(Case {
            channels: [6, 8],
            input: [8, 8],
            kernel: [1, 1],
            stride: [2, 2],
            padding: PaddingConfig2d::Valid,
            ..Case::default()
        });
    }

    #[test]
    fn asymmetric_padding_rectangular_kernel_and_dilation() {
        assert_matches_burn(Case {
            input: [10, 8],
            kernel: [3, 2],
            stride: [1, 2],
            padding: PaddingConfig2d::Explicit(1, 0, 2, 1),
            dilation: [2, 1],
            bias: true,
            ..Case::default()
        });
    }

    #[test]
    fn stride_one_with_asymmetric_padding() {
        // The input gradient as a convolution of the output gradient, padded (0, 2, 1, 1).
        assert_matches_burn(Case {
            input: [7, 9],
            padding: PaddingConfig2d::Explicit(2, 0, 1, 1),
            ..Case::default()
        });
    }

    #[test]
    fn padding_wider_than_the_kernel() {
        // Stride 1, but no convolution gives this input gradient: it is scattered instead.
        assert_matches_burn(Case {
            kernel: [1, 1],
            padding: PaddingConfig2d::Explicit(1, 1, 1, 1),
            ..Case::default()
        });
    }

    #[test]
    fn images_in_several_chunks() {
        // 48·48 output positions per image: one image per chunk of columns.
        assert_matches_burn(Case {
            channels: [2, 3],
            input: [48, 48],
            ..Case::default()
        });
    }

    #[test]
    fn a_single_image() {
        assert_matches_burn(Case {
            batch: 1,
            bias: true,
            ..Case::default()
        });
    }

    #[test]
    fn weight_gradient_alone_for_an_untracked_input() {
        assert_matches_burn(Case {
            input_grad: false,
            ..Case::default()
        });
    }

    #[test]
    #[should_panic(
        expected = "Conv2d: the kernel spans 5 positions on axis 2, more than the padded input's 4"
    )]
    fn kernels_larger_than_the_padded_input_are_refused() {
        let device = Device::flex();
        let conv = Conv2dConfig::new([1, 1], [5, 5])
            .with_padding(PaddingConfig2d::Explicit(1, 0, 0, 0))
            .init(&device);
        conv2d(&conv, Tensor::<4>::zeros([1, 1, 3, 3], &device));
    }
}
