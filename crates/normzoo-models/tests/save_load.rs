//! Every architecture survives save → load with its parameters and running statistics bit for
//! bit, and evaluates deterministically.

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::ModuleRecord;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use normzoo_models::{
    ConvNextConfig, MlpConfig, ResNetConfig, ResnetGeneratorConfig, UNetConfig, VggConfig,
};
use normzoo_norm::NormConfig;

/// Every float tensor of a module (parameters and running statistics), in visiting order.
fn floats<M: Module>(module: &M) -> Vec<TensorData> {
    struct Collect(Vec<TensorData>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().into_data());
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

/// Trains one step's worth of running statistics into `model` (a forward pass on the autodiff
/// device), saves it to bytes, loads the bytes into `fresh`, and checks that both hold the same
/// values and compute the same outputs in evaluation, twice in a row.
fn round_trip<M: Module>(
    model: M,
    fresh: M,
    forward: impl Fn(&M, Tensor<4>) -> Tensor<2>,
    input: [usize; 4],
) {
    let device = Device::default().autodiff();
    let images = Tensor::<4>::random(input, Distribution::Default, &device);
    forward(&model, images.clone()); // moves BatchNorm's running statistics

    let bytes = model.clone().into_record().into_bytes().expect("save");
    let loaded = fresh.load_record(ModuleRecord::from_bytes(bytes).expect("read"));
    assert_eq!(
        floats(&model),
        floats(&loaded),
        "parameters or running statistics differ"
    );

    let (model, loaded, images) = (model.valid(), loaded.valid(), images.inner());
    let expected = forward(&model, images.clone()).into_data();
    assert_eq!(
        forward(&model, images.clone()).into_data(),
        expected,
        "evaluation is not deterministic"
    );
    assert_eq!(
        forward(&loaded, images).into_data(),
        expected,
        "the loaded model computes differently"
    );
}

#[test]
fn resnet_round_trips() {
    let device = Device::default().autodiff();
    let config = ResNetConfig::resnet18_cifar(10).with_width(8);
    round_trip(
        config.init(&device).unwrap(),
        config.init(&device).unwrap(),
        |m, x| m.forward(x),
        [2, 3, 32, 32],
    );
}

#[test]
fn vgg_bn_round_trips() {
    let device = Device::default().autodiff();
    let config = VggConfig::vgg16_cifar(NormConfig::batch(), 10).with_stages(vec![
        vec![4],
        vec![8],
        vec![8],
        vec![8],
        vec![8],
    ]);
    round_trip(
        config.init(&device).unwrap(),
        config.init(&device).unwrap(),
        |m, x| m.forward(x),
        [2, 3, 32, 32],
    );
}

#[test]
fn convnext_round_trips() {
    let device = Device::default().autodiff();
    let config = ConvNextConfig::cifar(10)
        .with_dims([8, 8, 16, 16])
        .with_depths([1, 1, 1, 1])
        .with_norm(NormConfig::batch());
    round_trip(
        config.init(&device).unwrap(),
        config.init(&device).unwrap(),
        |m, x| m.forward(x),
        [2, 3, 32, 32],
    );
}

#[test]
fn mlp_round_trips() {
    let device = Device::default().autodiff();
    let config = MlpConfig::new(12, 16, 3, 4);
    round_trip(
        config.init(&device).unwrap(),
        config.init(&device).unwrap(),
        |m, x: Tensor<4>| m.forward(x.flatten(1, 3)),
        [4, 3, 2, 2],
    );
}

#[test]
fn cyclegan_generator_round_trips() {
    let device = Device::default().autodiff();
    // BatchNorm, so that there are running statistics to carry.
    let config = ResnetGeneratorConfig::new()
        .with_ngf(4)
        .with_n_blocks(2)
        .with_norm(NormConfig::batch());
    round_trip(
        config.init(&device).unwrap(),
        config.init(&device).unwrap(),
        |m, x| m.forward(x).flatten(1, 3),
        [2, 3, 8, 8],
    );
}

#[test]
fn unet_round_trips() {
    let device = Device::default().autodiff();
    let config = UNetConfig::new()
        .with_base_width(4)
        .with_depth(2)
        .with_norm(NormConfig::batch());
    round_trip(
        config.init(&device).unwrap(),
        config.init(&device).unwrap(),
        |m, x| m.forward(x).flatten(1, 3),
        [2, 3, 8, 8],
    );
}
