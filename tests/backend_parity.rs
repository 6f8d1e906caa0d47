//! The GPU backend against the CPU: on `wgpu`, every normalizer's outputs, gradients and
//! running statistics, every architecture's forward pass in training and in evaluation and
//! its parameters after a training step, and CycleGAN's first training steps equal `flex`'s
//! within float tolerance.
//!
//! Each test builds its module once on flex, moves a copy to wgpu, and feeds both the same
//! numbers (drawn on the CPU). Built only when both backends are (CI builds
//! `--features ndarray,wgpu` and runs this on Mesa's software Vulkan, so the shapes are small).
#![cfg(all(feature = "flex", feature = "wgpu"))]

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{DType, Device, Distribution, Int, Tensor, TensorData};
use normzoo::backend::device;
use normzoo::models::{
    ConvNextConfig, LstmConfig, MlpConfig, NormPosition, PatchDiscriminatorConfig, ResNetConfig,
    ResnetGeneratorConfig, TransformerBlockConfig, TransformerConfig, UNetConfig, VggConfig,
};
use normzoo::norm::{GroupNormConfig, InstanceNormConfig, Norm, NormConfig};
use normzoo::train::translation::{Critics, CycleGan, CycleGanTraining};

/// Largest accepted `|flex − wgpu| / (1 + |flex|)` for one layer, and for a whole network.
const LAYER_TOLERANCE: f32 = 1e-5;
const NETWORK_TOLERANCE: f32 = 1e-4;
/// The same for losses after Adam steps. Adam moves every weight by about `lr` whatever its
/// gradient's size, so weights whose gradient is rounding noise move either way, and the two
/// runs drift apart. wgpu's own losses also vary between runs of the same binary (CycleGAN's
/// third critic loss 0.653476 to 0.653725 in three runs on Mesa's lavapipe), and one CI run
/// saw a difference of 1.35e-3. The bugs this guards against made the losses differ by 25%
/// and more; the losses before the first update are held to `NETWORK_TOLERANCE`.
const TRAINING_TOLERANCE: f32 = 1e-2;

/// The CPU and the GPU device, on autodiff.
fn devices() -> [Device; 2] {
    ["flex", "wgpu"].map(|name| {
        device(name)
            .unwrap_or_else(|err| panic!("{err}"))
            .autodiff()
    })
}

/// Normal values (mean 0.5, standard deviation `std`) drawn on the CPU from `seed`, so both
/// backends see the same numbers.
fn random<const D: usize>(shape: [usize; D], seed: u64, std: f64) -> TensorData {
    let cpu = device("flex").unwrap();
    cpu.seed(seed);
    Tensor::<D>::random(shape, Distribution::Normal(0.5, std), &cpu).read()
}

fn assert_close(what: &str, flex: &TensorData, wgpu: &TensorData, tolerance: f32) {
    assert_eq!(flex.shape(), wgpu.shape(), "{what}: shapes differ");
    let (flex, wgpu) = (
        flex.try_to_vec::<f32>().unwrap(),
        wgpu.try_to_vec::<f32>().unwrap(),
    );
    let worst = flex
        .iter()
        .zip(&wgpu)
        .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
        .fold(0.0f32, f32::max);
    assert!(
        worst <= tolerance,
        "{what}: wgpu differs from flex by {worst:e} (relative), more than {tolerance:e}"
    );
}

/// Reading a tensor's values now.
///
/// burn 0.22.1's wgpu backend returns `into_data()` lazily: the bytes are copied from the GPU
/// at their first access, from memory the dropped tensor no longer owns, so data kept for
/// later can hold whatever a later kernel wrote there. Every value kept is read at once.
trait ReadNow {
    fn read(self) -> TensorData;
}

impl<const D: usize> ReadNow for Tensor<D> {
    fn read(self) -> TensorData {
        let data = self.into_data();
        let shape = data.shape().to_vec();
        let values = data.try_to_vec::<f32>().unwrap();
        TensorData::new(values, shape)
    }
}

/// Every float tensor of a module (parameters and running statistics) with its path.
#[derive(Default)]
struct Tensors {
    path: Vec<String>,
    found: Vec<(String, TensorData)>,
}

impl ModuleVisitor for Tensors {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.into());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.found.push((self.path.join("."), param.val().read()));
    }
}

fn tensors_of(module: &impl Module) -> Vec<(String, TensorData)> {
    let mut tensors = Tensors::default();
    module.visit(&mut tensors);
    tensors.found
}

/// What one backend computes for a normalizer: two SGD steps in training mode (outputs and
/// input gradients of each), every tensor of the layer after them (γ and β moved by their
/// gradients, running statistics updated twice), and an evaluation-mode output.
fn normalizer_run<const D: usize>(
    mut norm: Norm,
    inputs: &[TensorData],
    upstream: &TensorData,
    device: &Device,
) -> Vec<(String, TensorData)> {
    let mut optim = SgdConfig::new().init();
    let mut seen = Vec::new();
    for (step, input) in inputs.iter().enumerate() {
        let input = Tensor::<D>::from_data(input.clone(), device).require_grad();
        let output = norm.forward(input.clone());
        seen.push((format!("step {step} output"), output.clone().read()));
        let upstream = Tensor::<D>::from_data(upstream.clone(), device);
        let grads = (output * upstream).sum().backward();
        let input_grad = input
            .grad(&grads)
            .expect("the input takes part in the output");
        seen.push((format!("step {step} input gradient"), input_grad.read()));
        let grads = GradientsParams::from_grads(grads, &norm);
        norm = optim.step(0.5, norm, grads);
    }
    seen.extend(tensors_of(&norm));
    let evaluated = norm.valid();
    let input = Tensor::<D>::from_data(inputs[0].clone(), &device.clone().inner());
    seen.push(("evaluation output".into(), evaluated.forward(input).read()));
    seen
}

fn assert_normalizer_agrees<const D: usize>(name: &str, config: NormConfig, shape: [usize; D]) {
    let [flex, wgpu] = devices();
    let channels = match config {
        NormConfig::Layer(_) | NormConfig::Rms(_) => shape[D - 1],
        _ => shape[1],
    };
    // A fresh layer for each backend: clones of a module share its running statistics.
    let norm = |device: &Device| config.init(channels, device).unwrap();
    let inputs = [random(shape, 1, 1.0), random(shape, 2, 3.0)];
    let upstream = random(shape, 3, 1.0);
    let on_flex = normalizer_run::<D>(norm(&flex), &inputs, &upstream, &flex);
    let on_wgpu = normalizer_run::<D>(norm(&wgpu), &inputs, &upstream, &wgpu);
    assert_eq!(on_flex.len(), on_wgpu.len());
    for ((what, expected), (_, actual)) in on_flex.iter().zip(&on_wgpu) {
        assert_close(
            &format!("{name}: {what}"),
            expected,
            actual,
            LAYER_TOLERANCE,
        );
    }
}

#[test]
fn batch_norm_agrees_at_every_rank() {
    assert_normalizer_agrees("BatchNorm1d [N, C]", NormConfig::batch(), [8, 4]);
    assert_normalizer_agrees("BatchNorm1d [N, C, L]", NormConfig::batch(), [4, 3, 5]);
    assert_normalizer_agrees("BatchNorm2d", NormConfig::batch(), [2, 3, 4, 5]);
    assert_normalizer_agrees("BatchNorm2d, 1×1", NormConfig::batch(), [4, 3, 1, 1]);
    assert_normalizer_agrees("BatchNorm3d", NormConfig::batch(), [2, 2, 3, 3, 3]);
}

#[test]
fn layer_and_rms_norm_agree() {
    assert_normalizer_agrees("LayerNorm", NormConfig::layer(), [4, 5, 8]);
    assert_normalizer_agrees("LayerNorm2d", NormConfig::layer2d(), [2, 4, 5, 5]);
    // One column, and one pixel (ConvNeXt's head normalizes pooled [N, C, 1, 1] features):
    // channels-last views of these once gave wrong γ gradients on wgpu.
    assert_normalizer_agrees("LayerNorm2d, W = 1", NormConfig::layer2d(), [2, 4, 5, 1]);
    assert_normalizer_agrees("LayerNorm2d, 1×1", NormConfig::layer2d(), [3, 4, 1, 1]);
    assert_normalizer_agrees("RMSNorm", NormConfig::rms(), [4, 5, 8]);
}

#[test]
fn group_and_instance_norm_agree() {
    assert_normalizer_agrees("GroupNorm", NormConfig::group(2), [3, 4, 5, 5]);
    assert_normalizer_agrees("GroupNorm, W = 1", NormConfig::group(2), [3, 4, 5, 1]);
    assert_normalizer_agrees("InstanceNorm2d", NormConfig::instance(), [3, 4, 6, 6]);
    assert_normalizer_agrees(
        "InstanceNorm2d, W = 1",
        NormConfig::instance(),
        [3, 4, 6, 1],
    );
    let tracked = NormConfig::Instance(
        InstanceNormConfig::new(0)
            .with_affine(true)
            .with_track_running_stats(true),
    );
    assert_normalizer_agrees("InstanceNorm2d, affine and tracked", tracked, [3, 4, 6, 6]);
}

/// A network on both backends: its forward pass in training mode (batch statistics; dropout
/// is off in every config below) and in evaluation mode, and every parameter and running
/// statistic after one SGD step on a linear loss (`Σ output · w`, `w` drawn on the CPU). The
/// learning rate, 10⁻³, keeps rounding below the tolerance (these tiny networks' gradients reach
/// about 80 and differ by up to 5·10⁻⁴ of that between flex and ndarray too), while a wrong
/// gradient, or an update written to the wrong elements, moves a weight by much more.
/// `build` makes the network once, on the CPU; each backend trains its own deep copy. `run`
/// feeds a network its input, made on the device it is given.
fn assert_network_agrees<M: Module, const D: usize>(
    name: &str,
    build: impl Fn(&Device) -> M,
    run: impl Fn(&M, &Device) -> Tensor<D>,
) {
    let [flex, wgpu] = devices();
    let model = build(&flex);
    let [on_flex, on_wgpu] = [&flex, &wgpu].map(|device| {
        // `valid().train()` gives fresh running statistics, which plain clones share.
        let copy = model.valid().train().map(&mut CopyTo(device.clone()));
        let evaluated = run(&copy.valid(), &device.clone().inner()).read();
        let output = run(&copy, device);
        let weights = random([output.shape().num_elements()], 11, 1.0);
        let loss = output
            .clone()
            .flatten::<1>(0, D - 1)
            .mul(Tensor::from_data(weights, device))
            .sum();
        let grads = GradientsParams::from_grads(loss.backward(), &copy);
        let trained = SgdConfig::new().init().step(1e-3, copy, grads);
        let mut seen = vec![
            ("training output".to_string(), output.read()),
            ("evaluation output".to_string(), evaluated),
        ];
        for (path, tensor) in tensors_of(&trained) {
            seen.push((format!("{path} after one SGD step"), tensor));
        }
        seen
    });
    for ((what, expected), (_, actual)) in on_flex.iter().zip(&on_wgpu) {
        assert_close(
            &format!("{name}: {what}"),
            expected,
            actual,
            NETWORK_TOLERANCE,
        );
    }
}

fn images(shape: [usize; 4]) -> impl Fn(&Device) -> Tensor<4> {
    let data = random(shape, 7, 1.0);
    move |device| Tensor::from_data(data.clone(), device)
}

#[test]
fn image_classifiers_agree() {
    let input = images([2, 3, 32, 32]);
    assert_network_agrees(
        "ResNet18 (ImageNet stem), width 4",
        |device| {
            ResNetConfig::resnet18(4)
                .with_width(4)
                .init(device)
                .unwrap()
        },
        |model, device| model.forward(input(device)),
    );
    assert_network_agrees(
        "VGG16-BN (CIFAR), narrow",
        |device| {
            VggConfig::vgg16_cifar(NormConfig::batch(), 4)
                .with_stages(vec![vec![4], vec![8, 8], vec![8], vec![8], vec![8]])
                .init(device)
                .unwrap()
        },
        |model, device| model.forward(input(device)),
    );
    assert_network_agrees(
        "ConvNeXt (CIFAR), dims 8-16",
        |device| {
            ConvNextConfig::cifar(4)
                .with_dims([8, 8, 16, 16])
                .with_drop_path_rate(0.0)
                .init(device)
                .unwrap()
        },
        |model, device| model.forward(input(device)),
    );
    let features = random([6, 12], 8, 1.0);
    assert_network_agrees(
        "MLP with BatchNorm",
        |device| MlpConfig::new(12, 16, 3, 4).init(device).unwrap(),
        |model, device| model.forward(Tensor::from_data(features.clone(), device)),
    );
}

#[test]
fn dense_prediction_networks_agree() {
    let input = images([2, 3, 16, 16]);
    assert_network_agrees(
        "U-Net with GroupNorm, width 4",
        |device| {
            UNetConfig::new()
                .with_norm(NormConfig::group(2))
                .with_base_width(4)
                .with_depth(3)
                .with_num_classes(3)
                .init(device)
                .unwrap()
        },
        |model, device| model.forward(input(device)),
    );
    assert_network_agrees(
        "CycleGAN generator, InstanceNorm",
        |device| {
            ResnetGeneratorConfig::new()
                .with_ngf(4)
                .with_n_blocks(2)
                .init(device)
                .unwrap()
        },
        |model, device| model.forward(input(device)),
    );
    let input = images([2, 3, 32, 32]);
    assert_network_agrees(
        "PatchGAN discriminator",
        |device| {
            PatchDiscriminatorConfig::new()
                .with_ndf(4)
                .init(device)
                .unwrap()
        },
        |model, device| model.forward(input(device)),
    );
}

#[test]
fn sequence_models_agree() {
    let tokens = TensorData::new((0..16).map(|t| (t * 7 % 11) as i64).collect(), [2, 8]);
    for position in [NormPosition::Pre, NormPosition::Post] {
        let block = TransformerBlockConfig::new(16, 2)
            .with_dropout(0.0)
            .with_position(position);
        assert_network_agrees(
            &format!("Transformer LM, {position:?}-norm"),
            |device| {
                TransformerConfig::new(11, 8, block.clone())
                    .init_causal_lm(device)
                    .unwrap()
            },
            |model, device| model.forward(Tensor::<2, Int>::from_data(tokens.clone(), device)),
        );
    }
    let sequence = random([2, 6, 3], 9, 1.0);
    assert_network_agrees(
        "LN-LSTM, 2 layers",
        |device| {
            LstmConfig::layer_normalized(3, 5)
                .with_num_layers(2)
                .init(device)
                .unwrap()
        },
        |model, device| {
            let (output, _) = model.forward(Tensor::from_data(sequence.clone(), device), None);
            output
        },
    );
}

/// A deep copy of a module's parameters onto a device, as fresh leaves: the copies share no
/// autodiff node with the original, so each backend can train its own.
struct CopyTo(Device);

impl ModuleMapper for CopyTo {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|tensor| {
            let tracked = tensor.is_require_grad();
            let copy = Tensor::from_data(tensor.read(), &self.0);
            if tracked { copy.require_grad() } else { copy }
        })
    }
}

/// One SGD step on a PatchGAN discriminator moves every parameter the same on both backends.
/// Its head, a 4×4 convolution to one channel, once had its weight gradient laid out so that
/// burn 0.22.1's wgpu backend updated the weights scrambled (off by up to 0.1 with `lr` 1e-3,
/// with SGD or Adam). SGD, because Adam's first step moves every weight by ±`lr` whatever its
/// gradient's size, so a gradient that is zero up to rounding moves either way.
#[test]
fn a_discriminator_training_step_agrees() {
    let [flex, wgpu] = devices();
    flex.seed(1);
    let critic = PatchDiscriminatorConfig::new()
        .with_ndf(8)
        .with_n_layers(2)
        .init(&flex)
        .unwrap();
    let [real, fake] = [5, 6].map(|seed| random([2, 3, 32, 32], seed, 0.5));
    let [on_flex, on_wgpu] = [&flex, &wgpu].map(|device| {
        let critic = critic.clone().map(&mut CopyTo(device.clone()));
        let score = |images: &TensorData, target: f32| {
            critic
                .forward(Tensor::from_data(images.clone(), device))
                .flatten::<1>(0, 3)
                .sub_scalar(target)
                .powi_scalar(2)
                .mean()
        };
        let loss = score(&real, 1.0) + score(&fake, 0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &critic);
        let critic = SgdConfig::new().init().step(0.1, critic, grads);
        tensors_of(&critic)
    });
    for ((name, expected), (_, actual)) in on_flex.iter().zip(&on_wgpu) {
        assert_close(
            &format!("PatchGAN {name} after one SGD step"),
            expected,
            actual,
            LAYER_TOLERANCE,
        );
    }
}

/// Three CycleGAN training steps (generators, then critics, each with Adam; InstanceNorm, as
/// the paper) give the same losses on both backends. CycleGAN once diverged on wgpu from two
/// burn 0.22.1 bugs: its least-squares loss read a convolution's output through an op chain
/// that wgpu's fusion computed 16× too large, and the critics' one-channel head was updated
/// scrambled (see the test above).
#[test]
fn cyclegan_training_steps_agree() {
    let [flex, wgpu] = devices();
    flex.seed(1);
    let generator = || {
        ResnetGeneratorConfig::new()
            .with_ngf(8)
            .with_n_blocks(1)
            .init(&flex)
            .unwrap()
    };
    let critic = || {
        PatchDiscriminatorConfig::new()
            .with_ndf(8)
            .with_n_layers(2)
            .init(&flex)
            .unwrap()
    };
    let gan = CycleGan {
        a_to_b: generator(),
        b_to_a: generator(),
    };
    let critics = Critics {
        a: critic(),
        b: critic(),
    };
    let training = CycleGanTraining {
        steps: 3,
        batch_size: 2,
        test_images: 2,
        ..Default::default()
    };
    let reports = [&flex, &wgpu].map(|device| {
        let gan = gan.clone().map(&mut CopyTo(device.clone()));
        let critics = critics.clone().map(&mut CopyTo(device.clone()));
        training.run(gan, critics, device, |_, _, _| {}).1
    });
    let [first_step, every_step] = [1, training.steps].map(|steps| {
        reports.each_ref().map(|report| {
            let losses = [
                &report.generator_losses[..steps],
                &report.critic_losses[..steps],
            ]
            .concat();
            TensorData::new(losses, [2 * steps])
        })
    });
    assert_close(
        "CycleGAN generator and critic losses before any update",
        &first_step[0],
        &first_step[1],
        NETWORK_TOLERANCE,
    );
    assert_close(
        "CycleGAN generator and critic losses at each step",
        &every_step[0],
        &every_step[1],
        TRAINING_TOLERANCE,
    );
}

/// f16 on wgpu: GroupNorm over 2¹⁶ values per group, whose sum of squares overflows f16
/// (largest value 65504), equals the f32 result on the CPU, because the statistics are
/// accumulated in f32. (burn-nn's GroupNorm once returned NaN here.)
#[test]
fn half_precision_group_norm_on_wgpu_keeps_f32_statistics() {
    let [flex, wgpu] = devices().map(Device::inner);
    assert!(
        wgpu.supports_dtype(DType::F16),
        "this wgpu adapter offers no f16, so the f16 path cannot be checked here"
    );
    let input = random([1, 4, 1 << 14], 5, 2.0);
    let expected = GroupNormConfig::new(1, 4)
        .with_affine(false)
        .init(&flex)
        .unwrap()
        .forward(Tensor::<3>::from_data(input.clone(), &flex))
        .read();
    let gn = GroupNormConfig::new(1, 4)
        .with_affine(false)
        .init(&wgpu)
        .unwrap();
    let half = gn.forward(Tensor::<3>::from_data(input, &wgpu).cast(DType::F16));
    assert_eq!(half.dtype(), DType::F16);
    // f16 keeps about three significant digits.
    assert_close(
        "GroupNorm in f16",
        &expected,
        &half.cast(DType::F32).read(),
        1e-2,
    );
}
