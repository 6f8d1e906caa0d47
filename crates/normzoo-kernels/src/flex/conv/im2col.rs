//! The convolution's kernels: the forward product over im2col columns, and the backward
//! products with col2im.

use std::mem::MaybeUninit;

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::gemm::{
    ColumnMajor, RowMajor, Scratch, chunks, matmul, sized, split_runs, thread_runs, with_scratch,
};
use super::geometry::Geometry;
use super::winograd_weight_grad;
use crate::flex::buffers::{filled, flex_values, tensor_from, written_rows};

/// `x` convolved with `weight` as `g` describes: per thread, a run of images; per chunk of
/// them, `out = W · col`, then `out` (`[Co, (b, p)]`) moved to the output's `[b, Co, p]`.
pub(super) fn convolve(x: &[f32], weight: &[f32], g: &Geometry) -> Vec<f32> {
    let positions = g.output_positions();
    let rows = g.col_rows();
    let (runs, parallelism) = thread_runs(g.batch);
    let len = g.batch * g.channels_out * positions;
    let write_runs = |output: &mut [MaybeUninit<f32>]| {
        let output_runs = split_runs(output, &runs, g.channels_out * positions);
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
    };
    // SAFETY: every value is written: the runs cover the batch, the chunks cover each run, and
    // each chunk writes every channel plane of each of its images.
    unsafe { filled(len, write_runs) }.0
}

/// The gradients of `x` and the weight (those asked for) from the output's.
///
/// With stride 1 the input gradient is itself a convolution (see
/// [`Geometry::transposed`]); otherwise it is `col2im(Wᵀ · dY)`. The weight gradient is
/// Winograd's where that pays (see `winograd_weight_grad.rs`), else
/// `dWᵀ = col · dYᵀ`, with `dY` repacked as `[(b, p), Co]`: gemm reads both operands in
/// the order it packs them, unlike `dY · colᵀ`. Each thread sums its own run of the batch
/// (a weight gradient is a small output over a long sum, which gemm's own threading splits
/// poorly), and the parts are added at the end.
pub(super) fn backward(
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
        (true, Some(transposed)) => Some(super::convolve(
            output_grad,
            &flipped(weight, g),
            &transposed,
        )),
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
    let winograd_weight = need_weight && winograd_weight_grad::pays(g);
    let im2col_weight = need_weight && !winograd_weight;
    let weight_grad_parts: Vec<Vec<f32>> = match im2col_weight || scatter {
        true => runs
            .into_par_iter()
            .zip(x_grad_runs)
            .filter_map(|(run, x_grad)| {
                backward_run(inputs, g, run, x_grad, im2col_weight, parallelism)
            })
            .collect(),
        false => Vec::new(),
    };
    let weight_grad = match winograd_weight {
        true => Some(winograd_weight_grad::weight_grad(output_grad, x, g)),
        false => (!weight_grad_parts.is_empty())
            .then(|| sum_transposed(&weight_grad_parts, g.col_rows(), g.channels_out)),
    };
    let x_grad = x_grad_convolved.or(x_grad_scattered);
    (
        x_grad.map(|values| tensor_from(values, [g.batch, g.channels_in, g.input[0], g.input[1]])),
        weight_grad.map(|values| {
            tensor_from(
                values,
                [g.channels_out, g.channels_in, g.kernel[0], g.kernel[1]],
            )
        }),
    )
}

/// The weight `[Co, Ci, Kh, Kw]` as `[Ci, Co, Kh, Kw]`, flipped in both spatial axes (one
/// input channel per work item: ResNet18's last-stage weight, 2.4 M values, took 1.65 ms on
/// one thread).
pub(super) fn flipped(weight: &[f32], g: &Geometry) -> Vec<f32> {
    let [kernel_h, kernel_w] = g.kernel;
    let taps = kernel_h * kernel_w;
    let write_channel = |c: usize, out: &mut [MaybeUninit<f32>]| {
        for (o, out) in out.chunks_exact_mut(taps).enumerate() {
            let kernel = &weight[(o * g.channels_in + c) * taps..][..taps];
            for (out, &value) in out.iter_mut().zip(kernel.iter().rev()) {
                out.write(value);
            }
        }
    };
    // SAFETY: each input channel's row holds `Co` kernels of `taps` values, all written.
    unsafe { written_rows(weight.len(), g.channels_out * taps, write_channel) }.0
}

/// The sum of `parts` (each `[rows, cols]`, row-major), transposed: `[cols, rows]`.
///
/// In tiles of 16 × 16 values, so that both the parts and the output are read and
/// written a cache line at a time: going down the parts' columns value by value, ResNet18's
/// last-stage weight gradient (4608 × 512, two parts) took 4.5–5 ms, a tenth of that layer's
/// forward and backward passes.
pub(super) fn sum_transposed(parts: &[Vec<f32>], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 16;
    let write_blocks = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(TILE * rows)
            .enumerate()
            .for_each(|(block, out)| {
                let first_col = block * TILE;
                let width = out.len() / rows;
                let mut tile = [[0.0f32; TILE]; TILE];
                for first_row in (0..rows).step_by(TILE) {
                    let height = TILE.min(rows - first_row);
                    for (r, tile_row) in tile[..height].iter_mut().enumerate() {
                        let at = (first_row + r) * cols + first_col;
                        tile_row[..width].copy_from_slice(&parts[0][at..][..width]);
                        for part in &parts[1..] {
                            let values = &part[at..][..width];
                            tile_row.iter_mut().zip(values).for_each(|(t, v)| *t += v);
                        }
                    }
                    for (c, out_row) in out.chunks_exact_mut(rows).enumerate() {
                        let out_values = &mut out_row[first_row..][..height];
                        for (r, value) in out_values.iter_mut().enumerate() {
                            value.write(tile[r][c]);
                        }
                    }
                }
            })
    };
    // SAFETY: the blocks cover the output, and each writes every row of its block.
    unsafe { filled(rows * cols, write_blocks) }.0
}

/// What every run of [`backward`] reads.
#[derive(Clone, Copy)]
pub(super) struct RunInputs<'a> {
    pub(super) output_grad: &'a [f32],
    pub(super) x: &'a [f32],
    pub(super) weight: &'a [f32],
}

/// One thread's share of [`backward`]: the images of `run`, in chunks of columns. Scatters
/// their input gradient into `x_grad` (their images only) when it is given, and returns
/// their part of `dWᵀ` (`[Ci·Kh·Kw, Co]`) when `need_weight`.
pub(super) fn backward_run(
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
                let local =
                    (images.start - run.start) * image_len..(images.end - run.start) * image_len;
                col2im(col, g, &mut x_grad[local]);
            }
        }
    });
    weight_grad
}

/// How [`pack_output_grad`] lays out a chunk's output gradient.
#[derive(Clone, Copy)]
pub(super) enum Packing {
    /// `[Co, (b, p)]`.
    ChannelMajor,
    /// `[(b, p), Co]`.
    PositionMajor,
}

/// The output gradient of `images` laid out as `packing` says, into `packed` (its
/// `Co · images · positions` values).
pub(super) fn pack_output_grad(
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
pub(super) fn im2col(x: &[f32], g: &Geometry, images: std::ops::Range<usize>, col: &mut [f32]) {
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
                if g.shifts_whole_rows() {
                    let offset = row_offset * width as isize + col_offset;
                    shifted_plane(plane, offset, out_w, (&rows_in, &cols_in), out);
                    continue;
                }
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

/// One row of a column buffer for one image, where the convolution
/// [shifts whole rows](Geometry::shifts_whole_rows): output position `q` (`oh·W + ow`) takes
/// input value `q + offset` where `oh` is in `rows` and `ow` in `cols`, and 0 elsewhere. The
/// valid rows are one copy (where it strays past the rows' edges, the values land on columns
/// outside `cols`, which are zeroed after): a 3×3 kernel on a 4×4 map, done row by row, is 4
/// copies of 3–4 values each.
pub(super) fn shifted_plane(
    plane: &[f32],
    offset: isize,
    width: usize,
    (rows, cols): (&std::ops::Range<usize>, &std::ops::Range<usize>),
    out: &mut [f32],
) {
    let (start, end) = (rows.start * width, rows.end * width);
    out[..start].fill(0.0);
    out[end..].fill(0.0);
    if rows.is_empty() {
        return;
    }
    // The positions of the valid rows whose input lies inside the plane.
    let first = start.max((-offset).max(0) as usize);
    let last = end.min((plane.len() as isize - offset).max(0) as usize);
    if first < last {
        let source = (first as isize + offset) as usize;
        out[first..last].copy_from_slice(&plane[source..][..last - first]);
    }
    for row in out[start..end].chunks_exact_mut(width) {
        row[..cols.start].fill(0.0);
        row[cols.end..].fill(0.0);
    }
}

/// The input positions `o·stride + offset` of the output positions `outputs` (all inside
/// the input, as [`Geometry::valid_outputs`] gives them).
pub(super) fn along(
    outputs: &std::ops::Range<usize>,
    offset: isize,
    stride: usize,
) -> impl Iterator<Item = usize> {
    let first = (outputs.start * stride) as isize + offset;
    (first as usize..).step_by(stride).take(outputs.len())
}

/// Adds the column gradient of a chunk of images (`[(c, i, j), (b, p)]`) into `x_grad`,
/// their planes.
pub(super) fn col2im(col: &[f32], g: &Geometry, x_grad: &mut [f32]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_transposed_covers_partial_tiles() {
        // Neither dimension a multiple of the tile, and three parts.
        let (rows, cols) = (37, 21);
        let parts: Vec<Vec<f32>> = (0..3)
            .map(|p| (0..rows * cols).map(|i| (i * 3 + p) as f32).collect())
            .collect();
        let out = sum_transposed(&parts, rows, cols);
        for c in 0..cols {
            for r in 0..rows {
                let expected: f32 = parts.iter().map(|part| part[r * cols + c]).sum();
                assert_eq!(out[c * rows + r], expected, "row {r}, column {c}");
            }
        }
    }
}
