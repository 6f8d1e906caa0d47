//! The CubeCL kernels the launchers in [`super`] run (CubeCL's `Tensor` is not burn's).

use cubecl::prelude::*;

/// The sum of `value` over the units of the cube, given to every unit. Every unit of the cube
/// must call it (it synchronizes the cube).
#[cube]
fn sum_over_cube<F: Float>(value: F, #[comptime] cube_size: usize) -> F {
    let mut partial_sums = Shared::<[F]>::new_slice(cube_size);
    let unit = UNIT_POS as usize;
    partial_sums[unit] = value;
    sync_cube();
    // The halving runs at run time: `cube_size` is a compile-time value.
    let mut stride = CUBE_DIM as usize / 2;
    while stride > 0 {
        if unit < stride {
            let sum = partial_sums[unit] + partial_sums[unit + stride];
            partial_sums[unit] = sum;
        }
        sync_cube();
        stride /= 2;
    }
    let total = partial_sums[0];
    sync_cube();
    total
}

/// The mean `first + offset` as the f32 nearest it and the remainder, `(μ₀, μ₁)`:
/// `first − μ₀` is exact when the offset is small next to `first` (Sterbenz), so `μ₁`
/// keeps the digits that `μ₀` rounded away.
#[cube]
fn mean_parts<F: Float>(first: F, offset: F) -> (F, F) {
    let mean = first + offset;
    (mean, (first - mean) + offset)
}

/// `rows_forward`: cube `r` normalizes row `r` of `x` into `output` and writes its
/// `[μ₀, μ₁, r]` into `statistics`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn rows_forward_kernel<F: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    beta: &Tensor<F>,
    output: &mut Tensor<F>,
    statistics: &mut Tensor<F>,
    rows: u32,
    groups: u32,
    channels_per_group: u32,
    spatial: u32,
    eps: f32,
    #[comptime] center: bool,
    #[comptime] cube_size: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let spatial = spatial as usize;
    let row_len = channels_per_group as usize * spatial;
    let start = row * row_len;
    let unit = UNIT_POS as usize;
    let count = F::cast_from(row_len as f32);

    // The mean as `μ₀ + μ₁` (see `mean_parts`), from the values' offsets from the first;
    // 0 without centering.
    let mut first = F::new(0.0);
    let mut offset = F::new(0.0);
    if center {
        first = x[start];
        let mut partial = F::new(0.0);
        let mut i = unit;
        while i < row_len {
            partial += x[start + i] - first;
            i += cube_size;
        }
        offset = sum_over_cube::<F>(partial, cube_size) / count;
    }
    let (mean, low) = mean_parts::<F>(first, offset);
    let mut partial = F::new(0.0);
    let mut i = unit;
    while i < row_len {
        let deviation = (x[start + i] - mean) - low;
        partial += deviation * deviation;
        i += cube_size;
    }
    let variance = sum_over_cube::<F>(partial, cube_size) / count;
    let rstd = F::new(1.0) / F::sqrt(variance + F::cast_from(eps));
    if unit == 0 {
        statistics[row * 3] = mean;
        statistics[row * 3 + 1] = low;
        statistics[row * 3 + 2] = rstd;
    }

    let first_channel = (row % groups as usize) * channels_per_group as usize;
    let mut i = unit;
    while i < row_len {
        let channel = first_channel + i / spatial;
        let xhat = ((x[start + i] - mean) - low) * rstd;
        output[start + i] = xhat * gamma[channel] + beta[channel];
        i += cube_size;
    }
}

/// `rows_input_grad`: cube `r` writes row `r` of `dx` from the same row of the output gradient
/// and of `x`, and the row's `[μ₀, μ₁, r]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn rows_input_grad_kernel<F: Float>(
    grad: &Tensor<F>,
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    statistics: &Tensor<F>,
    input_grad: &mut Tensor<F>,
    rows: u32,
    groups: u32,
    channels_per_group: u32,
    spatial: u32,
    #[comptime] center: bool,
    #[comptime] cube_size: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let spatial = spatial as usize;
    let row_len = channels_per_group as usize * spatial;
    let start = row * row_len;
    let unit = UNIT_POS as usize;
    let count = F::cast_from(row_len as f32);
    let mean = statistics[row * 3];
    let low = statistics[row * 3 + 1];
    let rstd = statistics[row * 3 + 2];
    let first_channel = (row % groups as usize) * channels_per_group as usize;

    let mut partial_g = F::new(0.0);
    let mut partial_g_xhat = F::new(0.0);
    let mut i = unit;
    while i < row_len {
        let g = grad[start + i] * gamma[first_channel + i / spatial];
        partial_g += g;
        partial_g_xhat += g * (((x[start + i] - mean) - low) * rstd);
        i += cube_size;
    }
    let mut mean_g = F::new(0.0);
    if center {
        mean_g = sum_over_cube::<F>(partial_g, cube_size) / count;
    }
    let mean_g_xhat = sum_over_cube::<F>(partial_g_xhat, cube_size) / count;

    let mut i = unit;
    while i < row_len {
        let g = grad[start + i] * gamma[first_channel + i / spatial];
        let xhat = ((x[start + i] - mean) - low) * rstd;
        input_grad[start + i] = rstd * (g - mean_g - xhat * mean_g_xhat);
        i += cube_size;
    }
}

/// `channels_forward`: unit `q` normalizes position `q` (sample `q / P`, position `q % P`)
/// of `x` (`[N, C, P]`) over its `C` channels, and writes its `[μ₀, μ₁, r]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn channels_forward_kernel<F: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    beta: &Tensor<F>,
    output: &mut Tensor<F>,
    statistics: &mut Tensor<F>,
    samples: u32,
    channels: u32,
    positions: u32,
    eps: f32,
    #[define(F)] _dtype: ElemType,
) {
    let position = CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize;
    let positions = positions as usize;
    if position >= samples as usize * positions {
        terminate!();
    }
    let channels = channels as usize;
    let start = (position / positions) * channels * positions + position % positions;
    let count = F::cast_from(channels as f32);

    // Summed around the first value: one unit adds all `C` values in turn, and values far
    // from 0 against their spread would lose the mean's low digits in a plain sum.
    let first = x[start];
    let mut sum = F::new(0.0);
    for c in 0..channels {
        sum += x[start + c * positions] - first;
    }
    let (mean, low) = mean_parts::<F>(first, sum / count);
    let mut squares = F::new(0.0);
    for c in 0..channels {
        let deviation = (x[start + c * positions] - mean) - low;
        squares += deviation * deviation;
    }
    let rstd = F::new(1.0) / F::sqrt(squares / count + F::cast_from(eps));
    statistics[position * 3] = mean;
    statistics[position * 3 + 1] = low;
    statistics[position * 3 + 2] = rstd;
    for c in 0..channels {
        let index = start + c * positions;
        output[index] = ((x[index] - mean) - low) * rstd * gamma[c] + beta[c];
    }
}

/// `channels_input_grad`: unit `q` writes position `q`'s `dx` from its output gradient, `x`
/// and `[μ₀, μ₁, r]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn channels_input_grad_kernel<F: Float>(
    grad: &Tensor<F>,
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    statistics: &Tensor<F>,
    input_grad: &mut Tensor<F>,
    samples: u32,
    channels: u32,
    positions: u32,
    #[define(F)] _dtype: ElemType,
) {
    let position = CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize;
    let positions = positions as usize;
    if position >= samples as usize * positions {
        terminate!();
    }
    let channels = channels as usize;
    let start = (position / positions) * channels * positions + position % positions;
    let count = F::cast_from(channels as f32);
    let mean = statistics[position * 3];
    let low = statistics[position * 3 + 1];
    let rstd = statistics[position * 3 + 2];

    let mut sum_g = F::new(0.0);
    let mut sum_g_xhat = F::new(0.0);
    for c in 0..channels {
        let index = start + c * positions;
        let g = grad[index] * gamma[c];
        sum_g += g;
        sum_g_xhat += g * (((x[index] - mean) - low) * rstd);
    }
    let mean_g = sum_g / count;
    let mean_g_xhat = sum_g_xhat / count;
    for c in 0..channels {
        let index = start + c * positions;
        let xhat = ((x[index] - mean) - low) * rstd;
        input_grad[index] = rstd * (grad[index] * gamma[c] - mean_g - xhat * mean_g_xhat);
    }
}

/// Where `[N, C, S]` holds value `j` (of `N·S`) of channel `channel`.
#[cube]
fn channel_value(j: usize, channel: usize, channels: usize, spatial: usize) -> usize {
    ((j / spatial) * channels + channel) * spatial + j % spatial
}

/// The channel, and the first and one-past-the-last of its values, that cube `cube` sums
/// when each channel's `count` values are split into `parts` chunks of `chunk`.
#[cube]
fn channel_chunk(cube: usize, count: u32, chunk: u32, parts: u32) -> (usize, usize, usize) {
    let parts = parts as usize;
    let start = (cube % parts) * chunk as usize;
    let mut end = start + chunk as usize;
    if end > count as usize {
        end = count as usize;
    }
    (cube / parts, start, end)
}

/// `channel_sums`: cube `k` sums `dy·x̂` and `dy` over chunk `k % parts` of channel
/// `k / parts`'s values (see `channel_chunk`), `x` read as `[samples, channels, spatial]` and
/// the `[μ₀, μ₁, r]` of value `(n, c, s)` at `n·stats_per_sample + c / channels_per_stat +
/// s·spatial_stride`. The sums of a channel's chunks are its `parts` consecutive outputs.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn channel_sums_kernel<F: Float>(
    grad: &Tensor<F>,
    x: &Tensor<F>,
    statistics: &Tensor<F>,
    scale_sums: &mut Tensor<F>,
    shift_sums: &mut Tensor<F>,
    channels: u32,
    spatial: u32,
    stats_per_sample: u32,
    channels_per_stat: u32,
    spatial_stride: u32,
    count: u32,
    chunk: u32,
    parts: u32,
    #[comptime] cube_size: usize,
    #[define(F)] _dtype: ElemType,
) {
    let cube = CUBE_POS;
    let channels = channels as usize;
    if cube >= channels * parts as usize {
        terminate!();
    }
    let (channel, start, end) = channel_chunk(cube, count, chunk, parts);
    let spatial = spatial as usize;
    let stats_per_sample = stats_per_sample as usize;
    let spatial_stride = spatial_stride as usize;
    let channel_stat = channel / channels_per_stat as usize;
    let unit = UNIT_POS as usize;

    let mut partial_scale = F::new(0.0);
    let mut partial_shift = F::new(0.0);
    let mut j = start + unit;
    while j < end {
        let index = channel_value(j, channel, channels, spatial);
        let s = j % spatial;
        let stat = ((j / spatial) * stats_per_sample + channel_stat + s * spatial_stride) * 3;
        let dy = grad[index];
        let xhat = ((x[index] - statistics[stat]) - statistics[stat + 1]) * statistics[stat + 2];
        partial_scale += dy * xhat;
        partial_shift += dy;
        j += cube_size;
    }
    let scale = sum_over_cube::<F>(partial_scale, cube_size);
    let shift = sum_over_cube::<F>(partial_shift, cube_size);
    if unit == 0 {
        scale_sums[cube] = scale;
        shift_sums[cube] = shift;
    }
}

/// `combine_sums`: unit `c` adds channel `c`'s `parts` partial sums of `channel_sums`.
#[cube(launch)]
pub(super) fn combine_sums_kernel<F: Float>(
    scale_partials: &Tensor<F>,
    shift_partials: &Tensor<F>,
    scale_sums: &mut Tensor<F>,
    shift_sums: &mut Tensor<F>,
    channels: u32,
    parts: u32,
    #[define(F)] _dtype: ElemType,
) {
    let channel = CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize;
    if channel >= channels as usize {
        terminate!();
    }
    let parts = parts as usize;
    let mut scale = F::new(0.0);
    let mut shift = F::new(0.0);
    for part in 0..parts {
        scale += scale_partials[channel * parts + part];
        shift += shift_partials[channel * parts + part];
    }
    scale_sums[channel] = scale;
    shift_sums[channel] = shift;
}

/// `channel_moments`: cube `k` computes the mean of chunk `k % parts` of channel
/// `k / parts`'s values in `x` (`[N, C, S]`, see `channel_chunk`), as its offset from the
/// channel's first value, and the sum of squared deviations from it (two passes over the
/// chunk).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn channel_moments_kernel<F: Float>(
    x: &Tensor<F>,
    means: &mut Tensor<F>,
    squares: &mut Tensor<F>,
    channels: u32,
    spatial: u32,
    count: u32,
    chunk: u32,
    parts: u32,
    #[comptime] cube_size: usize,
    #[define(F)] _dtype: ElemType,
) {
    let cube = CUBE_POS;
    let channels = channels as usize;
    if cube >= channels * parts as usize {
        terminate!();
    }
    let (channel, start, end) = channel_chunk(cube, count, chunk, parts);
    let spatial = spatial as usize;
    let unit = UNIT_POS as usize;
    let values = F::cast_from((end - start) as f32);

    // Offsets from the channel's first value: values far from 0 against their spread would
    // lose the mean's low digits in a plain f32 sum, and the offsets stay small.
    let first = x[channel * spatial];
    let mut partial = F::new(0.0);
    let mut j = start + unit;
    while j < end {
        partial += x[channel_value(j, channel, channels, spatial)] - first;
        j += cube_size;
    }
    let offset = sum_over_cube::<F>(partial, cube_size) / values;
    let mut partial = F::new(0.0);
    let mut j = start + unit;
    while j < end {
        let deviation = (x[channel_value(j, channel, channels, spatial)] - first) - offset;
        partial += deviation * deviation;
        j += cube_size;
    }
    let sum_of_squares = sum_over_cube::<F>(partial, cube_size);
    if unit == 0 {
        means[cube] = offset;
        squares[cube] = sum_of_squares;
    }
}

/// `combine_moments`: unit `c` merges channel `c`'s `parts` chunk means (offsets from the
/// channel's first value in `x`) and sums of squared deviations (Chan et al.'s pairwise
/// update, exact and stable) into its mean `μ₀ + μ₁`, and biased variance `σ²`, written as
/// `statistics[0][c] = μ₀`, `statistics[1][c] = σ²` and `statistics[2][c] = μ₁` (`[3, C]`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn combine_moments_kernel<F: Float>(
    x: &Tensor<F>,
    means: &Tensor<F>,
    squares: &Tensor<F>,
    statistics: &mut Tensor<F>,
    channels: u32,
    spatial: u32,
    count: u32,
    chunk: u32,
    parts: u32,
    #[define(F)] _dtype: ElemType,
) {
    let channel = CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize;
    let channels = channels as usize;
    if channel >= channels {
        terminate!();
    }
    let mut values = F::new(0.0);
    let mut mean = F::new(0.0);
    let mut sum_of_squares = F::new(0.0);
    for part in 0..parts as usize {
        let (_, start, end) = channel_chunk(channel * parts as usize + part, count, chunk, parts);
        let part_values = F::cast_from((end - start) as f32);
        let part_mean = means[channel * parts as usize + part];
        let total = values + part_values;
        let delta = part_mean - mean;
        mean += delta * part_values / total;
        sum_of_squares +=
            squares[channel * parts as usize + part] + delta * delta * values * part_values / total;
        values = total;
    }
    let (mean_high, mean_low) = mean_parts::<F>(x[channel * spatial as usize], mean);
    statistics[channel] = mean_high;
    statistics[channels + channel] = sum_of_squares / values;
    statistics[2 * channels + channel] = mean_low;
}

/// `batch_forward`: unit `i` writes value `i` of BatchNorm's output from `x` (`[N, C, S]`)
/// and the `[3, C]` statistics of `combine_moments`; units `c < C` also write channel `c`'s
/// `[μ₀, μ₁, r]` (`[C, 3]`) for the backward pass.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn batch_forward_kernel<F: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    beta: &Tensor<F>,
    moments: &Tensor<F>,
    output: &mut Tensor<F>,
    statistics: &mut Tensor<F>,
    len: u32,
    channels: u32,
    spatial: u32,
    eps: f32,
    #[define(F)] _dtype: ElemType,
) {
    let index = CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize;
    if index >= len as usize {
        terminate!();
    }
    let channels = channels as usize;
    let channel = (index / spatial as usize) % channels;
    let mean = moments[channel];
    let low = moments[2 * channels + channel];
    let rstd = F::new(1.0) / F::sqrt(moments[channels + channel] + F::cast_from(eps));
    output[index] = ((x[index] - mean) - low) * rstd * gamma[channel] + beta[channel];
    if index < channels {
        statistics[index * 3] = moments[index];
        statistics[index * 3 + 1] = moments[2 * channels + index];
        statistics[index * 3 + 2] =
            F::new(1.0) / F::sqrt(moments[channels + index] + F::cast_from(eps));
    }
}

/// `batch_input_grad`: unit `i` writes value `i` of `dx = r·γ·(dy − Σdy/M − x̂·Σ(dy·x̂)/M)`,
/// `M = N·S` (`count`), from channel `c`'s `[μ₀, μ₁, r]` and sums.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn batch_input_grad_kernel<F: Float>(
    grad: &Tensor<F>,
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    statistics: &Tensor<F>,
    scale_sums: &Tensor<F>,
    shift_sums: &Tensor<F>,
    input_grad: &mut Tensor<F>,
    len: u32,
    channels: u32,
    spatial: u32,
    count: f32,
    #[define(F)] _dtype: ElemType,
) {
    let index = CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize;
    if index >= len as usize {
        terminate!();
    }
    let channel = (index / spatial as usize) % channels as usize;
    let count = F::cast_from(count);
    let mean = statistics[channel * 3];
    let low = statistics[channel * 3 + 1];
    let rstd = statistics[channel * 3 + 2];
    let xhat = ((x[index] - mean) - low) * rstd;
    input_grad[index] = rstd
        * gamma[channel]
        * (grad[index] - shift_sums[channel] / count - xhat * scale_sums[channel] / count);
}
