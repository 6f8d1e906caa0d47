//! Small pieces the architectures share.

use burn::module::Param;
use burn::nn::{Initializer, Linear};
use burn::tensor::{Device, Tensor};
use normzoo_norm::NormConfig;

use crate::ModelError;

/// A classifier's last linear layer `old` replaced by one for `num_classes` classes, from the
/// same inputs, on the same device, made by `init(inputs, num_classes, device)`: what every
/// `reset_classifier` does.
pub(crate) fn reset_linear(
    model: &'static str,
    old: &Linear,
    num_classes: usize,
    init: impl FnOnce(usize, usize, &Device) -> Linear,
) -> Result<Linear, ModelError> {
    if num_classes == 0 {
        return Err(ModelError::InvalidConfig {
            model,
            message: "num_classes must be greater than zero, got 0".into(),
        });
    }
    let weight = old.weight.val();
    let [inputs, _] = weight.dims();
    Ok(init(inputs, num_classes, &weight.device()))
}

/// The same parameter with every value zero (torchvision's `nn.init.zeros_(bias)`).
pub(crate) fn zeroed(param: Option<Param<Tensor<1>>>) -> Option<Param<Tensor<1>>> {
    param.map(|p| {
        let p = p.val();
        Param::from_tensor(Tensor::zeros(p.dims(), &p.device()))
    })
}

/// Whether a convolution followed by `norm` needs its own bias: only when the normalizer has no
/// learnable shift to play that part (`none`, or `instance` without affine).
pub fn conv_bias_before(norm: &NormConfig) -> bool {
    match norm {
        NormConfig::None => true,
        NormConfig::Instance(config) => !config.affine,
        _ => false,
    }
}

/// `N(0, 0.02)`: the weight initialisation of ConvNeXt (timm truncates it at ±2σ) and of the
/// CycleGAN reference's `init_weights("normal")`.
pub(crate) fn normal_002() -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: 0.02,
    }
}

/// A square convolution initialised `N(0, 0.02)` with zero bias (the CycleGAN reference's
/// `init_weights("normal")`), zero-padding by `padding` on every side.
pub(crate) fn conv_normal_002(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
    device: &burn::tensor::Device,
) -> burn::nn::conv::Conv2d {
    let mut conv = burn::nn::conv::Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(burn::nn::PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_bias(bias)
        .with_initializer(normal_002())
        .init(device);
    conv.bias = zeroed(conv.bias);
    conv
}

/// The first compiled backend's device (a CPU one whenever flex or ndarray is built), for tests
/// of structure (parameter counts, shapes, refusals) that no backend changes.
#[cfg(test)]
pub(crate) fn cpu() -> burn::tensor::Device {
    normzoo_kernels::backend::test_devices().remove(0).1
}

/// Test helper: `steps` plain SGD steps at `lr` on `loss`; the trained model and the loss
/// before and after.
#[cfg(test)]
pub(crate) fn sgd_steps<M: burn::module::Module>(
    mut model: M,
    steps: usize,
    lr: f64,
    loss: impl Fn(&M) -> Tensor<1>,
) -> (M, f32, f32) {
    use burn::optim::{GradientsParams, SgdConfig};
    let mut optim = SgdConfig::new().init();
    let first = loss(&model).into_scalar::<f32>();
    for _ in 0..steps {
        let grads = GradientsParams::from_grads(loss(&model).backward(), &model);
        model = optim.step(lr, model, grads);
    }
    let last = loss(&model).into_scalar::<f32>();
    (model, first, last)
}
