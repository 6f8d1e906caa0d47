//! Winograd's F(2×2, 3×3) for 3×3 convolutions with stride 1 and padding 1 (ResNet's and
//! VGG's, and their input gradients): each 2×2 block of the output from a 4×4 tile of the
//! input with 16 multiplications per channel pair instead of 36.
//!
//! With `Bᵀ`, `G` and `Aᵀ` the transforms of Lavin and Gray (2015), `d` an input tile, `g` a
//! 3×3 kernel:
//!
//! ```text
//! Y = Aᵀ [ Σ_ci (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! ```
//!
//! The sum over input channels is, for each of the 16 tile positions `k`, one matrix
//! product: `M_k[Co, tiles] = U_k[Co, Ci] · V_k[Ci, tiles]`. So a convolution is the weight's
//! transform `U` (once per call), then per chunk of images the input's transform `V`, 16
//! products, and the output transform, in the threads and chunks the im2col path uses. The
//! result is PyTorch's `F.conv2d(x, w, padding=1)` up to rounding (the transforms add and
//! halve values: a few units in the last place more than the direct sum).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gemm::{RowMajor, Scratch, matmul, sized, split_runs, thread_runs, with_scratch};
use super::geometry::Geometry;
use crate::flex::buffers::filled;

/// Values in a transformed tile.
pub(super) const TILE: usize = 16;

/// About this many tiles are transformed and multiplied at once: a chunk's `V` and `M` then
/// take `16 · (Ci + Co) · 256` values, 2–4 MB for ResNet18's layers.
pub(super) const CHUNK_TILES: usize = 256;

/// The fewest input and output channels for which Winograd's products beat im2col's one
/// product: with fewer, the 16 products are too thin for gemm's blocking.
const MIN_CHANNELS: usize = 32;

/// Whether `g` is a convolution this file computes: a 3×3 kernel, stride 1, dilation 1,
/// padding 1 on every side, and at least [`MIN_CHANNELS`] channels in and out.
pub(super) fn applies(g: &Geometry) -> bool {
    g.kernel == [3, 3]
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.padding == [1; 4]
        && g.channels_in >= MIN_CHANNELS
        && g.channels_out >= MIN_CHANNELS
}

/// How an image's output is cut into 2×2 blocks, each computed from one 4×4 input tile.
#[derive(Clone, Copy)]
pub(super) struct Tiles {
    pub(super) rows: usize,
    pub(super) cols: usize,
}

impl Tiles {
    pub(super) fn of(g: &Geometry) -> Self {
        Self {
            rows: g.output[0].div_ceil(2),
            cols: g.output[1].div_ceil(2),
        }
    }

    pub(super) fn per_image(self) -> usize {
        self.rows * self.cols
    }
}

/// `x` convolved with `weight` (`[Co, Ci, 3, 3]`) as `g` describes, where [`applies`].
pub(super) fn convolve(x: &[f32], weight: &[f32], g: &Geometry) -> Vec<f32> {
    debug_assert!(applies(g));
    let (ci, co) = (g.channels_in, g.channels_out);
    let positions = g.output_positions();
    let tiles = Tiles::of(g);
    let u = transformed_weight(weight, co, ci);
    let (runs, parallelism) = thread_runs(g.batch);
    let images_per_chunk = CHUNK_TILES.div_ceil(tiles.per_image());
    let write_runs = |output: &mut [MaybeUninit<f32>]| {
        let output_runs = split_runs(output, &runs, co * positions);
        runs.into_par_iter()
            .zip(output_runs)
            .for_each(|(run, output)| {
                with_scratch(|Scratch { col: v, packed: m }| {
                    for first in run.clone().step_by(images_per_chunk) {
                        let images = first..(first + images_per_chunk).min(run.end);
                        let t = images.len() * tiles.per_image();
                        let v = sized(v, ci * TILE * t);
                        let m = sized(m, co * TILE * t);
                        transform_input(x, g, tiles, images.clone(), v);
                        for k in 0..TILE {
                            // M_k[Co, t] = U_k[Co, Ci] · V_k[Ci, t]; the k-th of each
                            // row's 16 blocks.
                            matmul(
                                [co, t, ci],
                                (&mut m[k * t..], RowMajor(TILE * t)),
                                false,
                                (&u[k * ci..], RowMajor(TILE * ci)),
                                (&v[k * t..], RowMajor(TILE * t)),
                                parallelism,
                            );
                        }
                        let at = (images.start - run.start) * co * positions;
                        let out = &mut output[at..][..images.len() * co * positions];
                        transform_output(m, g, tiles, out);
                    }
                })
            });
    };
    // SAFETY: every value is written: the runs cover the batch, the chunks each run, and
    // the output transform every position of each of a chunk's output planes.
    unsafe { filled(g.batch * co * positions, write_runs) }.0
}

/// `U = G g Gᵀ` for every kernel `g` of `weight` (`[Co, Ci, 3, 3]`), laid out
/// `[Co, 16, Ci]`: row `co` of `U_k` starts at `(co·16 + k)·Ci`.
fn transformed_weight(weight: &[f32], co: usize, ci: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; co * TILE * ci];
    u.par_chunks_exact_mut(TILE * ci)
        .zip(weight.par_chunks_exact(ci * 9))
        .for_each(|(u, kernels)| {
            for (channel, g) in kernels.chunks_exact(9).enumerate() {
                // G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1] down the columns (`G g`), then along the
                // rows (`· Gᵀ`).
                let rows = |j: usize| {
                    let (a, b, c) = (g[j], g[3 + j], g[6 + j]);
                    [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c]
                };
                let gg = [rows(0), rows(1), rows(2)];
                for i in 0..4 {
                    let (a, b, c) = (gg[0][i], gg[1][i], gg[2][i]);
                    let row = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
                    for (j, value) in row.into_iter().enumerate() {
                        u[(4 * i + j) * ci + channel] = value;
                    }
                }
            }
        });
    u
}

/// `V = Bᵀ d B` for every tile `d` of `images`' planes into `v`, laid out `[Ci, 16, t]`
/// (`t` the chunk's tiles, image by image, row by row): row `c` of `V_k` starts at
/// `(c·16 + k)·t`.
///
/// A row of tiles at a time: `Bᵀ` combines its four input rows into four, element by
/// element, then `B` combines each of those rows' columns two apart, every tile's at once.
pub(super) fn transform_input(
    x: &[f32],
    g: &Geometry,
    tiles: Tiles,
    images: std::ops::Range<usize>,
    v: &mut [f32],
) {
    match (tiles.cols, g.input[1] == 2 * tiles.cols) {
        (1, true) => transform_input_of::<1>(x, g, tiles, images, v),
        (2, true) => transform_input_of::<2>(x, g, tiles, images, v),
        (4, true) => transform_input_of::<4>(x, g, tiles, images, v),
        (8, true) => transform_input_of::<8>(x, g, tiles, images, v),
        (16, true) => transform_input_of::<16>(x, g, tiles, images, v),
        _ => transform_input_of::<0>(x, g, tiles, images, v),
    }
}

/// [`transform_input`] for maps `2·COLS` wide, the loops' lengths then known to the compiler
/// (unrolled, without bounds checks); `COLS = 0` for any width.
fn transform_input_of<const COLS: usize>(
    x: &[f32],
    g: &Geometry,
    tiles: Tiles,
    images: std::ops::Range<usize>,
    v: &mut [f32],
) {
    let cols = if COLS == 0 { tiles.cols } else { COLS };
    let [h, w] = [g.input[0], if COLS == 0 { g.input[1] } else { 2 * COLS }];
    let t = images.len() * tiles.per_image();
    // The plane with its padding: row `r`, column `j` is input row `r − 1`, column `j − 1`
    // (0 outside the input), enough rows and columns for every tile.
    let width = 2 * cols + 2;
    let mut padded = vec![0.0f32; (2 * tiles.rows + 2) * width];
    // `Bᵀ d` for one row of tiles: four rows of `width`.
    let mut bd = vec![0.0f32; 4 * width];
    // Channel by channel, so that each channel's rows of `V` are written while in cache.
    for c in 0..g.channels_in {
        for (local, image) in images.clone().enumerate() {
            let plane = &x[(image * g.channels_in + c) * h * w..][..h * w];
            for (row, input) in padded[width..]
                .chunks_exact_mut(width)
                .zip(plane.chunks_exact(w))
            {
                row[1..=w].copy_from_slice(input);
            }
            let v = &mut v[c * TILE * t..][..TILE * t];
            for ty in 0..tiles.rows {
                let rows = &padded[2 * ty * width..][..4 * width];
                let (r0, rest) = rows.split_at(width);
                let (r1, rest) = rest.split_at(width);
                let (r2, r3) = rest.split_at(width);
                // Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1].
                let (q0, rest) = bd.split_at_mut(width);
                let (q1, rest) = rest.split_at_mut(width);
                let (q2, q3) = rest.split_at_mut(width);
                for j in 0..width {
                    q0[j] = r0[j] - r2[j];
                    q1[j] = r1[j] + r2[j];
                    q2[j] = r2[j] - r1[j];
                    q3[j] = r1[j] - r3[j];
                }
                let first = local * tiles.per_image() + ty * cols;
                for (i, q) in bd.chunks_exact(width).enumerate() {
                    // Times B: tile `tx` reads columns 2·tx to 2·tx + 3.
                    let mut rows = v[4 * i * t..][..4 * t].chunks_exact_mut(t);
                    let mut row = || &mut rows.next().expect("four rows")[first..][..cols];
                    for (tx, out) in row().iter_mut().enumerate() {
                        *out = q[2 * tx] - q[2 * tx + 2];
                    }
                    for (tx, out) in row().iter_mut().enumerate() {
                        *out = q[2 * tx + 1] + q[2 * tx + 2];
                    }
                    for (tx, out) in row().iter_mut().enumerate() {
                        *out = q[2 * tx + 2] - q[2 * tx + 1];
                    }
                    for (tx, out) in row().iter_mut().enumerate() {
                        *out = q[2 * tx + 1] - q[2 * tx + 3];
                    }
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` for every tile of a chunk (`m` laid out `[Co, 16, t]`), each 2×2 block
/// written where it lies inside the output planes `out` (`[images, Co, H, W]`).
///
/// A row of tiles at a time, as [`transform_input`]: `Aᵀ` combines the 16 rows of `M` into
/// eight, element by element, then `A` each of those into an output row's even and odd
/// columns.
fn transform_output(m: &[f32], g: &Geometry, tiles: Tiles, out: &mut [MaybeUninit<f32>]) {
    match (tiles.cols, g.output[1] == 2 * tiles.cols) {
        (1, true) => transform_output_of::<1>(m, g, tiles, out),
        (2, true) => transform_output_of::<2>(m, g, tiles, out),
        (4, true) => transform_output_of::<4>(m, g, tiles, out),
        (8, true) => transform_output_of::<8>(m, g, tiles, out),
        (16, true) => transform_output_of::<16>(m, g, tiles, out),
        _ => transform_output_of::<0>(m, g, tiles, out),
    }
}

/// [`transform_output`] for maps `2·COLS` wide (see [`transform_input_of`]); `COLS = 0` for
/// any width.
fn transform_output_of<const COLS: usize>(
    m: &[f32],
    g: &Geometry,
    tiles: Tiles,
    out: &mut [MaybeUninit<f32>],
) {
    let cols = if COLS == 0 { tiles.cols } else { COLS };
    let [h, w] = [g.output[0], if COLS == 0 { g.output[1] } else { 2 * COLS }];
    let co = g.channels_out;
    let images = out.len() / (co * h * w);
    let t = images * tiles.per_image();
    // `Aᵀ M` for one row of tiles: rows `(i, j)`, `cols` values each.
    let mut am = vec![0.0f32; 8 * cols];
    // One output row, as wide as the tiles reach.
    let mut y_row = vec![0.0f32; 2 * cols];
    // Channel by channel, so that each channel's rows of `M` are read while in cache.
    for (o, local) in (0..co).flat_map(|o| (0..images).map(move |local| (o, local))) {
        let plane = &mut out[(local * co + o) * h * w..][..h * w];
        let m = &m[o * TILE * t..][..TILE * t];
        for ty in 0..tiles.rows {
            let first = local * tiles.per_image() + ty * cols;
            let row = |k: usize| &m[k * t + first..][..cols];
            // Aᵀ = [1 1 1 0; 0 1 −1 −1].
            for (j, am) in am.chunks_exact_mut(cols).enumerate().take(4) {
                let (m0, m1, m2) = (row(j), row(4 + j), row(8 + j));
                for (tx, value) in am.iter_mut().enumerate() {
                    *value = m0[tx] + m1[tx] + m2[tx];
                }
            }
            for (j, am) in am[4 * cols..].chunks_exact_mut(cols).enumerate() {
                let (m1, m2, m3) = (row(4 + j), row(8 + j), row(12 + j));
                for (tx, value) in am.iter_mut().enumerate() {
                    *value = m1[tx] - m2[tx] - m3[tx];
                }
            }
            for i in 0..2 {
                let y = 2 * ty + i;
                if y >= h {
                    break;
                }
                let p = &am[4 * i * cols..][..4 * cols];
                let (p0, rest) = p.split_at(cols);
                let (p1, rest) = rest.split_at(cols);
                let (p2, p3) = rest.split_at(cols);
                // Times A: output columns 2·tx and 2·tx + 1.
                for (tx, pair) in y_row.chunks_exact_mut(2).enumerate() {
                    pair[0] = p0[tx] + p1[tx] + p2[tx];
                    pair[1] = p1[tx] - p2[tx] - p3[tx];
                }
                for (out, &value) in plane[y * w..][..w].iter_mut().zip(&y_row) {
                    out.write(value);
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// 3×3 convolutions Winograd's transforms apply to: maps of odd and even sizes (partial
    /// tiles on the bottom and right edges; the widths with transforms of their own and one
    /// without) and, at 8×8, a batch of 40 images where a chunk holds 16.
    pub(crate) fn geometries() -> impl Iterator<Item = Geometry> {
        [
            (3, 32, 40, [5, 7]),
            (9, 48, 32, [4, 4]),
            (2, 32, 32, [9, 2]),
            (40, 32, 32, [8, 8]),
            (2, 32, 32, [3, 16]),
            (1, 32, 32, [2, 32]),
        ]
        .into_iter()
        .map(|(batch, channels_in, channels_out, size)| Geometry {
            batch,
            channels_in,
            channels_out,
            input: size,
            kernel: [3, 3],
            output: size,
            stride: [1, 1],
            padding: [1; 4],
            dilation: [1, 1],
        })
    }

    /// `len` values in [−1, 1], a different sequence for each `seed`.
    pub(crate) fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5) - 1.0)
            .collect()
    }

    /// The largest difference between `expected` and `actual`, value by value.
    pub(crate) fn worst_difference(expected: &[f32], actual: &[f32]) -> f32 {
        expected
            .iter()
            .zip(actual)
            .map(|(e, a)| (e - a).abs())
            .fold(0.0f32, f32::max)
    }

    /// Winograd's result is im2col's (the direct sum) up to rounding.
    #[test]
    fn matches_the_im2col_convolution() {
        for g in geometries() {
            assert!(applies(&g));
            let x = values(g.batch * g.channels_in * g.input[0] * g.input[1], 1);
            let weight = values(g.channels_out * g.channels_in * 9, 2);
            let expected = super::super::im2col::convolve(&x, &weight, &g);
            let actual = convolve(&x, &weight, &g);
            let worst = worst_difference(&expected, &actual);
            assert!(worst < 1e-4, "{g:?}: off by {worst}");
        }
    }
}
