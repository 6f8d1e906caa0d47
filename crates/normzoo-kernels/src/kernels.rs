//! Which backend's kernels run a normalization: [`Kernels`], and the functions the layers call.

#[cfg(any(feature = "flex", feature = "wgpu"))]
use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::Tensor;
#[cfg(any(feature = "flex", feature = "wgpu"))]
use burn::tensor::{DType, Device};

use crate::Grouping;

/// A backend with fused normalization kernels in this build: flex's (hand-written SIMD loops)
/// or the GPU's (CubeCL kernels, run by wgpu). Each kernel computes its output and records its
/// own backward pass with autodiff; the kernels read f32 only.
#[cfg(any(feature = "flex", feature = "wgpu"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// flex's kernels.
    #[cfg(feature = "flex")]
    Flex,
    /// The CubeCL kernels, on wgpu.
    #[cfg(feature = "wgpu")]
    Wgpu,
}

#[cfg(any(feature = "flex", feature = "wgpu"))]
impl Kernels {
    /// The kernels of `device`'s backend (with or without autodiff), if this build has them.
    pub fn of(device: &Device) -> Option<Self> {
        match device.clone().inner().as_dispatch() {
            #[cfg(feature = "flex")]
            DispatchDevice::Flex(_) => Some(Self::Flex),
            #[cfg(feature = "wgpu")]
            DispatchDevice::Cube(_) => Some(Self::Wgpu),
            _ => None,
        }
    }

    /// `x̂·γ + β` over the rows of `x` (`[rows, K]`, grouped as `grouping` says), `γ` and `β`
    /// being the constants 1 and 0 where absent; `None` where these kernels do not apply: `x`
    /// on another backend, or a tensor other than f32.
    pub fn normalize_rows(
        self,
        x: &Tensor<2>,
        gamma: Option<Tensor<1>>,
        beta: Option<Tensor<1>>,
        grouping: Grouping,
    ) -> Option<Tensor<2>> {
        let (gamma, beta) = self.affine(x, gamma, beta, grouping.channels())?;
        let (x, gamma, beta) = (
            x.clone().into_dispatch(),
            gamma.into_dispatch(),
            beta.into_dispatch(),
        );
        let Grouping {
            groups,
            channels_per_group,
            spatial,
            center,
            eps,
        } = grouping;
        let output = match self {
            #[cfg(feature = "flex")]
            Self::Flex => <Dispatch as crate::flex::FusedNormBackend>::normalize_rows(
                x,
                gamma,
                beta,
                groups,
                channels_per_group,
                spatial,
                center,
                eps,
            ),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => <Dispatch as crate::wgpu::GpuNormBackend>::normalize_rows(
                x,
                gamma,
                beta,
                groups,
                channels_per_group,
                spatial,
                center,
                eps,
            ),
        };
        Some(Tensor::from_dispatch(output))
    }

    /// Channels-first layer normalization of `x` (`[N, C, P]`, each position over its `C`
    /// channels), scaled and shifted by `γ` and `β`; `None` where these kernels do not apply
    /// (as for [`normalize_rows`](Self::normalize_rows)).
    pub fn normalize_channels(
        self,
        x: &Tensor<3>,
        gamma: Option<Tensor<1>>,
        beta: Option<Tensor<1>>,
        eps: f64,
    ) -> Option<Tensor<3>> {
        let (gamma, beta) = self.affine(x, gamma, beta, x.dims()[1])?;
        let (x, gamma, beta) = (
            x.clone().into_dispatch(),
            gamma.into_dispatch(),
            beta.into_dispatch(),
        );
        let output = match self {
            #[cfg(feature = "flex")]
            Self::Flex => {
                <Dispatch as crate::flex::FusedNormBackend>::normalize_channels(x, gamma, beta, eps)
            }
            #[cfg(feature = "wgpu")]
            Self::Wgpu => {
                <Dispatch as crate::wgpu::GpuNormBackend>::normalize_channels(x, gamma, beta, eps)
            }
        };
        Some(Tensor::from_dispatch(output))
    }

    /// BatchNorm with batch statistics over `x` (`[N, C, S]`): the output, and each channel's
    /// batch mean and biased variance; `None` where these kernels do not apply (as for
    /// [`normalize_rows`](Self::normalize_rows)).
    pub fn batch_norm(
        self,
        x: &Tensor<3>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        eps: f64,
    ) -> Option<(Tensor<3>, Tensor<1>, Tensor<1>)> {
        if !self.apply(x, [&gamma, &beta]) {
            return None;
        }
        let channels = x.dims()[1];
        let x = x.clone().into_dispatch();
        // Each channel's mean, biased variance and the mean's f32 remainder, as `[3, C]`.
        let statistics = match self {
            #[cfg(feature = "flex")]
            Self::Flex => {
                <Dispatch as crate::flex::FusedNormBackend>::channel_statistics(x.clone())
            }
            #[cfg(feature = "wgpu")]
            Self::Wgpu => <Dispatch as crate::wgpu::GpuNormBackend>::channel_statistics(x.clone()),
        };
        let (gamma, beta) = (gamma.into_dispatch(), beta.into_dispatch());
        let output = match self {
            #[cfg(feature = "flex")]
            Self::Flex => <Dispatch as crate::flex::FusedNormBackend>::batch_normalize(
                x,
                gamma,
                beta,
                statistics.clone(),
                eps,
            ),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => <Dispatch as crate::wgpu::GpuNormBackend>::batch_normalize(
                x,
                gamma,
                beta,
                statistics.clone(),
                eps,
            ),
        };
        let statistics: Tensor<2> = Tensor::from_dispatch(statistics);
        let row = |index: usize| statistics.clone().narrow(0, index, 1).reshape([channels]);
        Some((Tensor::from_dispatch(output), row(0), row(1)))
    }

    /// Whether these kernels run for `x` and its parameters: on their backend, and f32 only.
    fn apply<'a, const D: usize>(
        self,
        x: &Tensor<D>,
        params: impl IntoIterator<Item = &'a Tensor<1>>,
    ) -> bool {
        Self::of(&x.device()) == Some(self)
            && x.dtype() == DType::F32
            && params.into_iter().all(|param| param.dtype() == DType::F32)
    }

    /// `γ` and `β` for a kernel on `x` (the constants 1 and 0 over `channels` where absent),
    /// or `None` where these kernels do not apply to `x` and them.
    fn affine<const D: usize>(
        self,
        x: &Tensor<D>,
        gamma: Option<Tensor<1>>,
        beta: Option<Tensor<1>>,
        channels: usize,
    ) -> Option<(Tensor<1>, Tensor<1>)> {
        if !self.apply(x, gamma.iter().chain(&beta)) {
            return None;
        }
        let device = x.device();
        Some((
            gamma.unwrap_or_else(|| Tensor::ones([channels], &device)),
            beta.unwrap_or_else(|| Tensor::zeros([channels], &device)),
        ))
    }
}

/// [`Kernels::normalize_rows`] on `x`'s backend's kernels, or `None` where none apply (another
/// backend, a dtype other than f32, a build without flex or wgpu): the caller then composes
/// the same result from tensor ops.
pub fn normalize_rows(
    x: &Tensor<2>,
    gamma: Option<Tensor<1>>,
    beta: Option<Tensor<1>>,
    grouping: Grouping,
) -> Option<Tensor<2>> {
    #[cfg(any(feature = "flex", feature = "wgpu"))]
    {
        Kernels::of(&x.device())?.normalize_rows(x, gamma, beta, grouping)
    }
    #[cfg(not(any(feature = "flex", feature = "wgpu")))]
    {
        let _ = (x, gamma, beta, grouping);
        None
    }
}

/// [`Kernels::normalize_channels`] on `x`'s backend's kernels, or `None` where none apply.
pub fn normalize_channels(
    x: &Tensor<3>,
    gamma: Option<Tensor<1>>,
    beta: Option<Tensor<1>>,
    eps: f64,
) -> Option<Tensor<3>> {
    #[cfg(any(feature = "flex", feature = "wgpu"))]
    {
        Kernels::of(&x.device())?.normalize_channels(x, gamma, beta, eps)
    }
    #[cfg(not(any(feature = "flex", feature = "wgpu")))]
    {
        let _ = (x, gamma, beta, eps);
        None
    }
}

/// [`Kernels::batch_norm`] on `x`'s backend's kernels, or `None` where none apply.
pub fn batch_norm(
    x: &Tensor<3>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Option<(Tensor<3>, Tensor<1>, Tensor<1>)> {
    #[cfg(any(feature = "flex", feature = "wgpu"))]
    {
        Kernels::of(&x.device())?.batch_norm(x, gamma, beta, eps)
    }
    #[cfg(not(any(feature = "flex", feature = "wgpu")))]
    {
        let _ = (x, gamma, beta, eps);
        None
    }
}
