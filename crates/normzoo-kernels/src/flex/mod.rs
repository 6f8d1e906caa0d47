//! Fused normalization on the flex backend, with a closed-form backward pass.
//!
//! GroupNorm, InstanceNorm, LayerNorm and RMSNorm all standardize the rows of a `[rows, K]`
//! view and then scale and shift by a per-channel `γ`, `β`. Composed of tensor ops, that costs a
//! pass over memory and a fresh buffer per op, and an autodiff node per op whose backward takes
//! more passes. Here one kernel computes each row's statistics and output (the row is read
//! twice while it is in cache, and written once), and one backward kernel computes every
//! gradient from the saved statistics (`dx` overwrites `dy` when nothing else holds it):
//!
//! ```text
//! x̂ = (x − μ)·r,   r = 1 / sqrt(σ² + ε),   y = x̂·γ + β            (RMSNorm: μ = 0)
//! g = dy·γ,   dx = r·(g − mean(g) − x̂·mean(g·x̂)),   dγ = Σ dy·x̂,   dβ = Σ dy
//! ```
//!
//! The mean is carried as two f32 values, the one nearest it and the remainder
//! (`μ = μ₀ + μ₁`), and every kernel centres before it scales: `x − μ₀` is exact for the values
//! near the mean, so a mean far from 0 against the spread (1e4 and 0.1) loses none of the
//! output's digits, where `x·(r·γ) + (β − μ·r·γ)` would lose them in the cancellation and a
//! single f32 mean would be off by up to half its last place (5e-4 at 1e4, 5e-3 after dividing
//! by a std of 0.1).
//!
//! where the means run over the row (RMSNorm drops the `mean(g)` term) and `dγ`, `dβ` sum over
//! every position of their channel. BatchNorm is the same formula with the statistics taken per
//! channel across the batch (`[N, C, S]`, `N` runs of `S` values each): one op computes them,
//! and a second normalizes with them, its backward pass accounting for their dependence on `x`.
//! LayerNorm2d (channels first) is the row formula with each row's values `P` apart: its
//! kernels, in [`channels_first`], read them in place instead of transposing. The kernels read
//! f32 only; every other case, and every other backend, takes `normzoo-norm`'s composed path,
//! which the tests compare these kernels against.
//!
//! Files: the extension trait and its launch on flex here, the autodiff registration in
//! `autodiff.rs`, the kernels in `rows.rs`, `channels_first.rs` and `batch.rs` (and the
//! convolution in `conv.rs`, GELU and ReLU in `gelu.rs` and `relu.rs`), the summation and instruction-set helpers in `simd.rs`, and the
//! buffers between flex tensors and the kernels in `buffers.rs`.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};

use crate::Grouping;

mod autodiff;
mod batch;
mod buffers;
mod cache;
mod channels_first;
pub(crate) mod conv;
pub(crate) mod gelu;
pub(crate) mod relu;
mod rows;
mod simd;

use self::batch::{batch_forward, channel_statistics};
use self::rows::forward;

/// The fused normalization as a burn backend extension.
#[backend_extension(Flex, Autodiff)]
pub(crate) trait FusedNormBackend: Backend {
    /// `x̂·γ + β` over the rows of `x` (`[rows, K]`), grouped as the arguments of a
    /// [`Grouping`] say.
    #[allow(clippy::too_many_arguments)]
    fn normalize_rows(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        channels_per_group: usize,
        spatial: usize,
        center: bool,
        eps: f64,
    ) -> FloatTensor<Self>;

    /// `x̂·γ + β` for every position of `x` (`[N, C, P]`), normalized over its `C` channels.
    fn normalize_channels(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;

    /// Each channel's mean, biased variance and the mean's f32 remainder over `x`
    /// (`[N, C, S]`), as `[3, C]`. Not differentiable:
    /// [`batch_normalize`](Self::batch_normalize)'s backward pass accounts for the statistics'
    /// dependence on `x`.
    fn channel_statistics(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// BatchNorm's `x̂·γ + β` per channel of `x` (`[N, C, S]`), with `statistics` computed by
    /// [`channel_statistics`](Self::channel_statistics) from the same `x`.
    fn batch_normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
}

impl FusedNormBackend for Flex {
    fn normalize_rows(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        channels_per_group: usize,
        spatial: usize,
        center: bool,
        eps: f64,
    ) -> FloatTensor<Self> {
        let grouping = Grouping::new(groups, channels_per_group, spatial, center, eps);
        forward(&x, &gamma, &beta, grouping).0
    }

    fn normalize_channels(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        channels_first::forward(&x, &gamma, &beta, eps).0
    }

    fn channel_statistics(x: FloatTensor<Self>) -> FloatTensor<Self> {
        channel_statistics(&x)
    }

    fn batch_normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        batch_forward(&x, &gamma, &beta, &statistics, eps).0
    }
}
