//! Mixed precision: the half-precision copy of a model that keeps its normalizers in f32.
//!
//! PyTorch's `torch.autocast` runs convolutions and matrix products in half precision and
//! normalization in f32. burn has no autocast; [`cast_outside_normalizers`] gives the same
//! split for a whole model at once: every float parameter outside the normalizers is cast to
//! the half type, and [`Norm`](crate::Norm) normalizes a half-precision input in f32 when its
//! own parameters are f32 (see [`Norm::try_forward`](crate::Norm::try_forward)).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, FloatDType, Tensor};

/// The normalizer structs, as burn's derive names them to a [`ModuleMapper`]: their
/// parameters and running statistics stay in f32.
const NORMALIZERS: &[&str] = &[
    "Struct:BatchNorm",
    "Struct:LayerNorm",
    "Struct:LayerNorm2d",
    "Struct:GroupNorm",
    "Struct:InstanceNorm",
    "Struct:RmsNorm",
];

/// `module` with every float parameter outside the normalizers cast to `dtype`, the cast
/// recorded by autodiff: a training step's forward pass on the copy runs in `dtype`, and its
/// backward pass leaves the gradients, in the parameters' own precision, on `module`'s
/// parameters (the f32 master weights an optimizer steps). The normalizers' parameters and
/// running statistics are left as they are, so BatchNorm's running statistics are updated in
/// f32 on the shared state.
///
/// PyTorch has no single equivalent: it is what `torch.autocast` does op by op, done once per
/// step for the model's parameters.
pub fn cast_outside_normalizers<M: Module>(module: M, dtype: FloatDType) -> M {
    module.map(&mut CastOutsideNormalizers {
        dtype,
        containers: Vec::new(),
    })
}

struct CastOutsideNormalizers {
    dtype: FloatDType,
    /// The container of each module entered, innermost last.
    containers: Vec<String>,
}

impl ModuleMapper for CastOutsideNormalizers {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.containers.push(container_type.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.containers.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let in_normalizer = self
            .containers
            .last()
            .is_some_and(|container| NORMALIZERS.contains(&container.as_str()));
        if in_normalizer {
            param
        } else {
            param.map(|tensor| tensor.cast(self.dtype))
        }
    }
}

/// Whether `dtype` is a half-precision float (f16 or bf16).
pub(crate) fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// The dtype of `module`'s first float tensor (parameter or running statistic), if it has one.
pub(crate) fn first_float_dtype<M: Module>(module: &M) -> Option<DType> {
    struct First(Option<DType>);
    impl ModuleVisitor for First {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.0.is_none() {
                self.0 = Some(param.val().dtype());
            }
        }
    }
    let mut first = First(None);
    module.visit(&mut first);
    first.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NormConfig;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    #[derive(Module, Debug)]
    struct Block {
        linear: Linear,
        norm: crate::Norm,
    }

    fn block(device: &Device) -> Block {
        Block {
            linear: LinearConfig::new(4, 3).init(device),
            norm: NormConfig::batch().init(3, device).unwrap(),
        }
    }

    fn dtypes<M: Module>(module: &M) -> Vec<DType> {
        struct All(Vec<DType>);
        impl ModuleVisitor for All {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(param.val().dtype());
            }
        }
        let mut all = All(Vec::new());
        module.visit(&mut all);
        all.0
    }

    /// The linear layer's weight and bias are cast; BatchNorm's γ, β, running mean, running
    /// variance and count are not, in the copy or in the shared running state.
    #[test]
    fn everything_but_the_normalizers_is_cast() {
        let device = Device::default().autodiff();
        let master = block(&device);
        for dtype in [FloatDType::F16, FloatDType::BF16] {
            let half = cast_outside_normalizers(master.clone(), dtype);
            let expected: DType = dtype.into();
            let mut wanted = vec![expected, expected];
            wanted.extend([DType::F32; 5]);
            assert_eq!(dtypes(&half), wanted);
            assert_eq!(dtypes(&master), [DType::F32; 7]);
        }
    }

    /// The backward pass through the copy gives the master's f32 parameters their gradients.
    #[test]
    fn gradients_reach_the_master_parameters_in_f32() {
        let device = Device::default().autodiff();
        let master = block(&device);
        let half = cast_outside_normalizers(master.clone(), FloatDType::F16);
        let input =
            Tensor::<2>::from_floats([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0]], &device)
                .cast(FloatDType::F16);
        let output = half.norm.forward(half.linear.forward(input));
        assert_eq!(output.dtype(), DType::F16);
        let weights = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], &device);
        let grads = output.cast(FloatDType::F32).mul(weights).sum().backward();
        let weight = master
            .linear
            .weight
            .grad(&grads)
            .expect("the master weight's gradient");
        assert_eq!(weight.dtype(), DType::F32);
        assert!(weight.abs().sum().into_scalar::<f32>() > 0.0);
    }
}
