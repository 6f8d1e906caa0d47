//! Every architecture survives save → load with its parameters and running statistics bit for
//! bit, and evaluates deterministically.
//!
//! Saving reads the same bytes whatever the backend, so the architectures round-trip on the
//! CPU; the MLP also does on the default device (the GPU when one is compiled in), where
//! tensors are read back from device memory.

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::ModuleRecord;
use burn::tensor::{Device, Int, Tensor, TensorData};
use normzoo_models::{
    ConvNextConfig, LstmConfig, MlpConfig, ResNetConfig, ResnetGeneratorConfig,
    TransformerBlockConfig, TransformerConfig, UNetConfig, VggConfig,
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

/// Fixed, varied images `[N, C, H, W]` on `device`.
fn images(shape: [usize; 4], device: &Device) -> Tensor<4> {
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The first CPU backend's device, on autodiff.
fn cpu() -> Device {
    let devices = normzoo_kernels::backend::compiled_cpu_devices();
    let (_, device) = devices.unwrap_or_else(|err| panic!("{err}")).remove(0);
    device.autodiff()
}

/// Runs one training-mode forward pass of `model` on `device`, an autodiff device (moving
/// BatchNorm's running statistics), saves it to bytes as it is ready for evaluation (`valid()`,
/// which syncs the pending update of the running statistics, as burn-train does before its
/// checkpoints), loads the bytes into `fresh`, and checks that both hold the same values and
/// compute the same outputs in evaluation, twice in a row. `forward` builds its own fixed input
/// on the device it is given.
fn round_trip<M: Module>(
    device: &Device,
    model: M,
    fresh: M,
    forward: impl Fn(&M, &Device) -> Tensor<2>,
) {
    forward(&model, device);
    let model = model.valid();

    let bytes = model.clone().into_record().into_bytes().expect("save");
    let loaded = fresh
        .load_record(ModuleRecord::from_bytes(bytes).expect("read"))
        .valid();
    assert_eq!(
        floats(&model),
        floats(&loaded),
        "parameters or running statistics differ"
    );

    let device = device.clone().inner();
    let expected = forward(&model, &device).into_data();
    assert_eq!(
        forward(&model, &device).into_data(),
        expected,
        "evaluation is not deterministic"
    );
    assert_eq!(
        forward(&loaded, &device).into_data(),
        expected,
        "the loaded model computes differently"
    );
}

#[test]
fn resnet_round_trips() {
    let device = cpu();
    let config = ResNetConfig::resnet18_cifar(10).with_width(8);
    round_trip(
        &device,
        config.init(&device).unwrap(),
        config.init(&device).unwrap(),
        |m, d| m.forward(images([2, 3, 32, 32], d)),
    );
}

#[test]
fn vgg_bn_round_trips() {
    let device = cpu();
    let config = VggConfig::vgg16_cifar(NormConfig::batch(), 10).with_stages(vec![
        vec![4],
        vec![8],
        vec![8],
        vec![8],
        vec![8],
    ]);
    round_trip(
        &device,
        config.init(&device).unwrap(),
        config.init(&device).unwrap(),
        |m, d| m.forward(images([2, 3, 32, 32], d)),
    );
}

#[test]
fn convnext_round_trips() {
    let device = cpu();
    let config = ConvNextConfig::cifar(10)
        .with_dims([8, 8, 16, 16])
        .with_depths([1, 1, 1, 1])
        .with_norm(NormConfig::batch());
    round_trip(
        &device,
        config.init(&device).unwrap(),
        config.init(&device).unwrap(),
        |m, d| m.forward(images([2, 3, 32, 32], d)),
    );
}

#[test]
fn mlp_round_trips() {
    let config = MlpConfig::new(12, 16, 3, 4);
    for device in [cpu(), Device::default().autodiff()] {
        round_trip(
            &device,
            config.init(&device).unwrap(),
            config.init(&device).unwrap(),
            |m, d| m.forward(images([4, 3, 2, 2], d).flatten(1, 3)),
        );
    }
}

#[test]
fn cyclegan_generator_round_trips() {
    let device = cpu();
    // BatchNorm, so that there are running statistics to carry.
    let config = ResnetGeneratorConfig::new()
        .with_ngf(4)
        .with_n_blocks(2)
        .with_norm(NormConfig::batch());
    round_trip(
        &device,
        config.init(&device).unwrap(),
        config.init(&device).unwrap(),
        |m, d| m.forward(images([2, 3, 8, 8], d)).flatten(1, 3),
    );
}

#[test]
fn unet_round_trips() {
    let device = cpu();
    let config = UNetConfig::new()
        .with_base_width(4)
        .with_depth(2)
        .with_norm(NormConfig::batch());
    round_trip(
        &device,
        config.init(&device).unwrap(),
        config.init(&device).unwrap(),
        |m, d| m.forward(images([2, 3, 8, 8], d)).flatten(1, 3),
    );
}

#[test]
fn transformer_round_trips() {
    let device = cpu();
    // BatchNorm over tokens, so that there are running statistics to carry.
    let block = TransformerBlockConfig::new(8, 2).with_norm(NormConfig::batch());
    let config = TransformerConfig::new(10, 6, block);
    let tokens = |d: &Device| Tensor::<2, Int>::from_ints([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]], d);
    round_trip(
        &device,
        config.init_encoder(3, &device).unwrap(),
        config.init_encoder(3, &device).unwrap(),
        |m, d| m.forward(tokens(d)),
    );
    round_trip(
        &device,
        config.init_causal_lm(&device).unwrap(),
        config.init_causal_lm(&device).unwrap(),
        |m, d| m.forward(tokens(d)).flatten(1, 2),
    );
}

#[test]
fn lstm_round_trips() {
    let device = cpu();
    let config = LstmConfig::new(3, 4)
        .with_num_layers(2)
        .with_norm(NormConfig::batch());
    let sequence = |d: &Device| images([2, 5, 3, 1], d).reshape([2, 5, 3]);
    round_trip(
        &device,
        config.init(&device).unwrap(),
        config.init(&device).unwrap(),
        |m, d| m.forward(sequence(d), None).0.flatten(1, 2),
    );
}
