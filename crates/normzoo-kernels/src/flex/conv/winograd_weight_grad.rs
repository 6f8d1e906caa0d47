//! The weight gradient of a convolution [`winograd`](super::winograd) computes, in Winograd's
//! domain: 16 products of `Co × Ci` over the 2×2 output blocks instead of one of
//! `Co × 9·Ci` over the output positions, so 4 multiplications per input and output channel
//! and output position instead of 9.
//!
//! The forward pass is `Y = Aᵀ [ Σ_ci U ⊙ V ] A` per tile, with `U = G g Gᵀ` and
//! `V = Bᵀ d B`. Going back through it, for a tile's 2×2 output gradient `dY`:
//!
//! ```text
//! dM   = A dY Aᵀ                     (4×4, per output channel and tile)
//! dU_k = Σ_tiles dM_k ⊙ V_k          (for each of the 16 positions k: dM_k[Co, t] · V_k[Ci, t]ᵀ)
//! dg   = Gᵀ dU G                     (3×3, per output and input channel)
//! ```
//!
//! the exact gradient of the forward pass, so the weight gradient of PyTorch's
//! `F.conv2d(x, w, padding=1)` up to rounding. Taken where it [`pays`].

use rayon::prelude::*;

use super::gemm::{ColumnMajor, RowMajor, Scratch, matmul, sized, thread_runs, with_scratch};
use super::geometry::Geometry;
use super::winograd::{CHUNK_TILES, TILE, Tiles, applies, transform_input};

/// Whether the weight gradient of a convolution `g` is computed here rather than as im2col's
/// product: where [`applies`], on a CPU without AVX-512.
///
/// Its products have 4 multiplications where im2col's have 9, but its transforms move four
/// times a chunk's values through memory, and that costs the same with wider vectors. Measured
/// (BENCHMARKS.md, "The weight gradient in Winograd's domain"): on a 2-core Zen 3 EPYC (AVX2)
/// every 3×3 layer of ResNet18-CIFAR gained and the network trains 1.14–1.31× faster; on a
/// Zen 5 one (AVX-512), whose products run twice as fast, an earlier version made the 32×32
/// and 16×16 layers slower and left the others unchanged.
pub(super) fn pays(g: &Geometry) -> bool {
    applies(g) && !has_avx512()
}

/// Whether the CPU runs AVX-512F (gemm's products then take 16 values per instruction).
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The gradient of the weight (`[Co, Ci, 3, 3]`) of a convolution of `x` as `g` describes,
/// where [`applies`], from its output's gradient.
///
/// Each thread sums `dU` over its own run of the batch (a small output over a long sum, which
/// gemm's own threading splits poorly), and the parts are added before the last transform.
pub(super) fn weight_grad(output_grad: &[f32], x: &[f32], g: &Geometry) -> Vec<f32> {
    debug_assert!(applies(g));
    let (ci, co) = (g.channels_in, g.channels_out);
    let tiles = Tiles::of(g);
    let (runs, parallelism) = thread_runs(g.batch);
    let images_per_chunk = CHUNK_TILES.div_ceil(tiles.per_image());
    let parts: Vec<Vec<f32>> = runs
        .into_par_iter()
        .map(|run| {
            // `dU` laid out `[16, Co, Ci]`.
            let mut du = vec![0.0f32; TILE * co * ci];
            with_scratch(|Scratch { col: v, packed: dm }| {
                for first in run.clone().step_by(images_per_chunk) {
                    let images = first..(first + images_per_chunk).min(run.end);
                    let t = images.len() * tiles.per_image();
                    let v = sized(v, ci * TILE * t);
                    let dm = sized(dm, co * TILE * t);
                    transform_input(x, g, tiles, images.clone(), v);
                    transform_output_grad(output_grad, g, tiles, images, dm);
                    for (k, du) in du.chunks_exact_mut(co * ci).enumerate() {
                        // dU_k[Co, Ci] (+)= dM_k[Co, t] · V_k[Ci, t]ᵀ.
                        matmul(
                            [co, ci, t],
                            (du, RowMajor(ci)),
                            first > run.start,
                            (&dm[k * t..], RowMajor(TILE * t)),
                            (&v[k * t..], ColumnMajor(TILE * t)),
                            parallelism,
                        );
                    }
                }
            });
            du
        })
        .collect();
    untransformed(&parts, co, ci)
}

/// `dM = A dY Aᵀ` for every 2×2 block of `images`' output gradient (`[N, Co, H, W]`, 0
/// past its bottom and right edges) into `dm`, laid out `[Co, 16, t]` as the forward pass's
/// `M`: row `o` of `dM_k` starts at `(o·16 + k)·t`.
///
/// A row of blocks at a time: `A = [1 0; 1 1; 1 −1; 0 −1]` combines its two rows into
/// four, element by element, then `Aᵀ` each of those rows' column pairs, every block's at once.
fn transform_output_grad(
    output_grad: &[f32],
    g: &Geometry,
    tiles: Tiles,
    images: std::ops::Range<usize>,
    dm: &mut [f32],
) {
    match (tiles.cols, g.output[1] == 2 * tiles.cols) {
        (1, true) => transform_output_grad_of::<1>(output_grad, g, tiles, images, dm),
        (2, true) => transform_output_grad_of::<2>(output_grad, g, tiles, images, dm),
        (4, true) => transform_output_grad_of::<4>(output_grad, g, tiles, images, dm),
        (8, true) => transform_output_grad_of::<8>(output_grad, g, tiles, images, dm),
        (16, true) => transform_output_grad_of::<16>(output_grad, g, tiles, images, dm),
        _ => transform_output_grad_of::<0>(output_grad, g, tiles, images, dm),
    }
}

/// [`transform_output_grad`] for maps `2·COLS` wide, the loops' lengths then known to the
/// compiler (as the forward pass's transforms); `COLS = 0` for any width.
fn transform_output_grad_of<const COLS: usize>(
    output_grad: &[f32],
    g: &Geometry,
    tiles: Tiles,
    images: std::ops::Range<usize>,
    dm: &mut [f32],
) {
    let cols = if COLS == 0 { tiles.cols } else { COLS };
    let [h, w] = [g.output[0], if COLS == 0 { g.output[1] } else { 2 * COLS }];
    let co = g.channels_out;
    let t = images.len() * tiles.per_image();
    let width = 2 * cols;
    // The block row's two rows of `dY`, 0 past the output's edges.
    let mut rows = vec![0.0f32; 2 * width];
    // `A dY` for one row of blocks: four rows of `width`.
    let mut ad = vec![0.0f32; 4 * width];
    // Channel by channel, so that each channel's rows of `dM` are written while in cache.
    for o in 0..co {
        for (local, image) in images.clone().enumerate() {
            let plane = &output_grad[(image * co + o) * h * w..][..h * w];
            let dm = &mut dm[o * TILE * t..][..TILE * t];
            for ty in 0..tiles.rows {
                for (r, row) in rows.chunks_exact_mut(width).enumerate() {
                    let y = 2 * ty + r;
                    match y < h {
                        true => row[..w].copy_from_slice(&plane[y * w..][..w]),
                        false => row.fill(0.0),
                    }
                }
                let (r0, r1) = rows.split_at(width);
                let (q0, rest) = ad.split_at_mut(width);
                let (q1, rest) = rest.split_at_mut(width);
                let (q2, q3) = rest.split_at_mut(width);
                for j in 0..width {
                    q0[j] = r0[j];
                    q1[j] = r0[j] + r1[j];
                    q2[j] = r0[j] - r1[j];
                    q3[j] = -r1[j];
                }
                let first = local * tiles.per_image() + ty * cols;
                for (i, q) in ad.chunks_exact(width).enumerate() {
                    // Times Aᵀ = [1 1 1 0; 0 1 −1 −1]: block `tx` reads columns 2·tx and
                    // 2·tx + 1.
                    let mut rows = dm[4 * i * t..][..4 * t].chunks_exact_mut(t);
                    let mut row = || &mut rows.next().expect("four rows")[first..][..cols];
                    for (tx, out) in row().iter_mut().enumerate() {
                        *out = q[2 * tx];
                    }
                    for (tx, out) in row().iter_mut().enumerate() {
                        *out = q[2 * tx] + q[2 * tx + 1];
                    }
                    for (tx, out) in row().iter_mut().enumerate() {
                        *out = q[2 * tx] - q[2 * tx + 1];
                    }
                    for (tx, out) in row().iter_mut().enumerate() {
                        *out = -q[2 * tx + 1];
                    }
                }
            }
        }
    }
}

/// `dg = Gᵀ (Σ parts) G` for every output and input channel: the weight gradient
/// `[Co, Ci, 3, 3]` from the threads' parts of `dU` (each `[16, Co, Ci]`).
fn untransformed(parts: &[Vec<f32>], co: usize, ci: usize) -> Vec<f32> {
    let mut weight_grad = vec![0.0f32; co * ci * 9];
    weight_grad
        .par_chunks_exact_mut(ci * 9)
        .enumerate()
        .for_each(|(o, kernels)| {
            for (c, dg) in kernels.chunks_exact_mut(9).enumerate() {
                let at = o * ci + c;
                let du: [f32; TILE] =
                    std::array::from_fn(|k| parts.iter().map(|part| part[k * co * ci + at]).sum());
                // Gᵀ = [1 ½ ½ 0; 0 ½ −½ 0; 0 ½ ½ 1], down the columns, then along the rows.
                let combine =
                    |[a, b, c, d]: [f32; 4]| [a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d];
                let columns: [[f32; 3]; 4] =
                    std::array::from_fn(|j| combine(std::array::from_fn(|i| du[4 * i + j])));
                for r in 0..3 {
                    let row = combine(std::array::from_fn(|j| columns[j][r]));
                    dg[3 * r..][..3].copy_from_slice(&row);
                }
            }
        });
    weight_grad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flex::conv::im2col::{RunInputs, backward_run, sum_transposed};
    use crate::flex::conv::winograd::tests::{geometries, values, worst_difference};

    /// The weight gradient in Winograd's domain is im2col's (the direct sum) up to rounding,
    /// on the forward pass's test shapes.
    #[test]
    fn matches_the_im2col_weight_gradient() {
        for g in geometries() {
            let (ci, co) = (g.channels_in, g.channels_out);
            let positions = g.batch * g.output_positions();
            let x = values(ci * positions, 1);
            let output_grad = values(co * positions, 3);
            let weight = values(co * ci * 9, 2);
            let inputs = RunInputs {
                output_grad: &output_grad,
                x: &x,
                weight: &weight,
            };
            let direct = backward_run(inputs, &g, 0..g.batch, None, true, gemm::Parallelism::None)
                .expect("a weight gradient");
            let expected = sum_transposed(&[direct], g.col_rows(), co);
            let actual = weight_grad(&output_grad, &x, &g);
            let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = worst_difference(&expected, &actual);
            assert!(
                worst < 1e-5 * scale.max(1.0),
                "{g:?}: off by {worst} (largest value {scale})"
            );
        }
    }
}
