//! Every normalizer against PyTorch: outputs, running statistics after each step, and gradients
//! with respect to the input, the weight and the bias, on every compiled backend.
//!
//! The expected values come from `tests/fixtures/generate.py` (PyTorch), which wrote
//! `tests/fixtures/norm_cases.json`; each case there says what it covers.

use std::collections::HashMap;

use burn::module::{Module, Param, RunningState};
use burn::tensor::{Device, Tensor, TensorData};
use normzoo::backend::test_devices;
use normzoo::norm::{
    BatchNormConfig, GroupNormConfig, InstanceNormConfig, LayerNorm2dConfig, LayerNormConfig, Norm,
    RmsNormConfig, StatsMode,
};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Fixture {
    torch: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    layer: String,
    config: HashMap<String, Value>,
    params: HashMap<String, Data>,
    steps: Vec<Step>,
    grads: Option<Grads>,
    tolerance: f32,
    /// Outputs within `tolerance` absolutely, not relative to their size: the large-mean cases,
    /// whose expected values are float64 statistics of the same f32 input.
    #[serde(default)]
    absolute: bool,
    /// How far PyTorch's own f32 layer is from the float64 outputs (the large-mean cases).
    pytorch_f32_error: Option<f32>,
}

#[derive(Deserialize, Clone)]
struct Data {
    shape: Vec<usize>,
    data: Vec<f32>,
}

#[derive(Deserialize)]
struct Step {
    mode: String,
    input: Data,
    output: Data,
    running_mean: Option<Data>,
    running_var: Option<Data>,
    num_batches_tracked: Option<f32>,
}

#[derive(Deserialize)]
struct Grads {
    upstream: Data,
    input: Data,
    weight: Option<Data>,
    bias: Option<Data>,
}

impl Data {
    /// The same values as a vector: PyTorch shapes LayerNorm's and RMSNorm's weight like
    /// `normalized_shape`, normzoo stores it flattened (row-major, the same order).
    fn flattened(&self) -> Data {
        Data {
            shape: vec![self.data.len()],
            data: self.data.clone(),
        }
    }
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/norm_cases.json"
    );
    let text = std::fs::read_to_string(path).expect("read tests/fixtures/norm_cases.json");
    serde_json::from_str(&text).expect("parse tests/fixtures/norm_cases.json")
}

impl Case {
    fn usize(&self, key: &str) -> usize {
        self.config[key].as_u64().unwrap() as usize
    }
    fn shape(&self, key: &str) -> Vec<usize> {
        self.config[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    }
    fn flag(&self, key: &str, default: bool) -> bool {
        self.config
            .get(key)
            .map_or(default, |v| v.as_bool().unwrap())
    }
    fn float(&self, key: &str, default: f64) -> f64 {
        self.config
            .get(key)
            .map_or(default, |v| v.as_f64().unwrap())
    }
    /// An optional float: absent means `default`, JSON null means `None`.
    fn optional(&self, key: &str, default: Option<f64>) -> Option<f64> {
        self.config.get(key).map_or(default, Value::as_f64)
    }

    fn build(&self, device: &Device) -> Norm {
        let built = match self.layer.as_str() {
            "batch" => BatchNormConfig::new(self.usize("num_features"))
                .with_eps(self.float("eps", 1e-5))
                .with_momentum(self.optional("momentum", Some(0.1)))
                .with_affine(self.flag("affine", true))
                .with_track_running_stats(self.flag("track_running_stats", true))
                .init(device)
                .map(Norm::Batch),
            "instance" => InstanceNormConfig::new(self.usize("num_features"))
                .with_eps(self.float("eps", 1e-5))
                .with_momentum(self.optional("momentum", Some(0.1)))
                .with_affine(self.flag("affine", false))
                .with_track_running_stats(self.flag("track_running_stats", false))
                .init(device)
                .map(Norm::Instance),
            "layer" => LayerNormConfig::new(self.shape("normalized_shape"))
                .with_eps(self.float("eps", 1e-5))
                .with_elementwise_affine(self.flag("elementwise_affine", true))
                .with_bias(self.flag("bias", true))
                .init(device)
                .map(Norm::Layer),
            "layer2d" => LayerNorm2dConfig::new(self.usize("num_channels"))
                .with_eps(self.float("eps", 1e-6))
                .with_affine(self.flag("affine", true))
                .with_bias(self.flag("bias", true))
                .init(device)
                .map(Norm::Layer2d),
            "group" => GroupNormConfig::new(self.usize("num_groups"), self.usize("num_channels"))
                .with_eps(self.float("eps", 1e-5))
                .with_affine(self.flag("affine", true))
                .init(device)
                .map(Norm::Group),
            "rms" => RmsNormConfig::new(self.shape("normalized_shape"))
                .with_eps(self.optional("eps", None))
                .with_elementwise_affine(self.flag("elementwise_affine", true))
                .init(device)
                .map(Norm::Rms),
            other => panic!("unknown layer {other} in the fixture"),
        };
        let mut norm = built.unwrap_or_else(|err| panic!("{}: {err}", self.name));
        let param = |name: &str| {
            self.params
                .get(name)
                .map(|d| Param::from_tensor(tensor::<1>(&d.flattened(), device)))
        };
        let (gamma, beta) = affine_mut(&mut norm);
        assert_eq!(
            gamma.is_some(),
            self.params.contains_key("weight"),
            "{}",
            self.name
        );
        *gamma = param("weight");
        match beta {
            Some(beta) => {
                assert_eq!(
                    beta.is_some(),
                    self.params.contains_key("bias"),
                    "{}",
                    self.name
                );
                *beta = param("bias");
            }
            None => assert!(!self.params.contains_key("bias"), "{}", self.name),
        }
        norm
    }
}

type Affine = Option<Param<Tensor<1>>>;

/// The learnable scale and shift of whichever layer `norm` holds (RmsNorm has no shift).
fn affine_mut(norm: &mut Norm) -> (&mut Affine, Option<&mut Affine>) {
    match norm {
        Norm::Batch(l) => (&mut l.gamma, Some(&mut l.beta)),
        Norm::Instance(l) => (&mut l.gamma, Some(&mut l.beta)),
        Norm::Layer(l) => (&mut l.gamma, Some(&mut l.beta)),
        Norm::Layer2d(l) => (&mut l.gamma, Some(&mut l.beta)),
        Norm::Group(l) => (&mut l.gamma, Some(&mut l.beta)),
        Norm::Rms(l) => (&mut l.gamma, None),
        Norm::Identity(_) => unreachable!("the fixture has no identity case"),
    }
}

/// `(running_mean, running_var, num_batches_tracked)` of a layer that keeps them.
fn running_stats(
    norm: &Norm,
) -> Option<(
    &RunningState<Tensor<1>>,
    &RunningState<Tensor<1>>,
    &RunningState<Tensor<1>>,
)> {
    let (mean, var, count) = match norm {
        Norm::Batch(l) => (&l.running_mean, &l.running_var, &l.num_batches_tracked),
        Norm::Instance(l) => (&l.running_mean, &l.running_var, &l.num_batches_tracked),
        _ => return None,
    };
    Some((mean.as_ref()?, var.as_ref()?, count.as_ref()?))
}

fn tensor<const D: usize>(data: &Data, device: &Device) -> Tensor<D> {
    Tensor::from_data(
        TensorData::new(data.data.clone(), data.shape.clone()),
        device,
    )
}

/// How close to PyTorch's values ours must be.
#[derive(Clone, Copy)]
enum Tolerance {
    /// `|actual − expected| ≤ tol + tol·|expected|`.
    Relative(f32),
    /// `|actual − expected| ≤ tol`.
    Absolute(f32),
}

impl Tolerance {
    fn allowed(self, expected: f32) -> f32 {
        match self {
            Self::Relative(tol) => tol * (1.0 + expected.abs()),
            Self::Absolute(tol) => tol,
        }
    }
}

/// `actual` within `tol` of `expected` element-wise, with the worst element reported. Returns
/// the largest absolute difference.
fn assert_close<const D: usize>(
    actual: Tensor<D>,
    expected: &Data,
    tol: Tolerance,
    what: &str,
) -> f32 {
    assert_eq!(actual.dims().to_vec(), expected.shape, "{what}: shape");
    let actual = actual
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    let (worst, excess) = actual
        .iter()
        .zip(&expected.data)
        .enumerate()
        .map(|(i, (a, e))| (i, (a - e).abs() - tol.allowed(*e)))
        .fold((0, f32::NEG_INFINITY), |best, this| {
            if this.1 > best.1 { this } else { best }
        });
    assert!(
        excess <= 0.0 && actual.iter().all(|a| a.is_finite()),
        "{what}: element {worst} is {} where PyTorch gives {} (tolerance {})",
        actual[worst],
        expected.data[worst],
        match tol {
            Tolerance::Relative(tol) => format!("{tol} abs + rel"),
            Tolerance::Absolute(tol) => format!("{tol} abs"),
        }
    );
    actual
        .iter()
        .zip(&expected.data)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f32::max)
}

fn run_case<const D: usize>(case: &Case, backend: &str, device: &Device) {
    let autodiff = device.clone().autodiff();
    let tol = Tolerance::Relative(case.tolerance);
    let output_tol = if case.absolute {
        Tolerance::Absolute(case.tolerance)
    } else {
        tol
    };
    let mut norm = case.build(&autodiff);
    for (i, step) in case.steps.iter().enumerate() {
        let what =
            |part: &str| format!("[{backend}] {} step {i} ({}) {part}", case.name, step.mode);
        let last = i + 1 == case.steps.len();
        // Training uses burn's convention (an autodiff device trains); evaluation is forced so
        // that its gradients can be checked too, and checked below against `valid()`.
        let mode = match step.mode.as_str() {
            "train" => StatsMode::Auto,
            _ => StatsMode::Eval,
        };
        norm = norm.with_mode(mode);
        let x = tensor::<D>(&step.input, &autodiff);
        let x = if last { x.require_grad() } else { x };
        let y = norm.forward(x.clone());
        let error = assert_close(y.clone(), &step.output, output_tol, &what("output"));
        if let Some(pytorch) = case.pytorch_f32_error {
            println!(
                "{}: {error:.2e} from float64 (PyTorch's f32: {pytorch:.2e})",
                what("output")
            );
        }

        if step.mode == "eval" {
            let valid = norm.clone().with_mode(StatsMode::Auto).valid();
            let y_valid = valid.forward(tensor::<D>(&step.input, device));
            assert_close(
                y_valid,
                &step.output,
                output_tol,
                &what("output after valid()"),
            );
        }

        match (running_stats(&norm), &step.running_mean, &step.running_var) {
            (Some((mean, var, count)), Some(expected_mean), Some(expected_var)) => {
                assert_close(mean.value_sync(), expected_mean, tol, &what("running_mean"));
                assert_close(var.value_sync(), expected_var, tol, &what("running_var"));
                let expected_count = step.num_batches_tracked.expect("num_batches_tracked");
                let count = count.value_sync().into_scalar::<f32>();
                assert_eq!(count, expected_count, "{}", what("num_batches_tracked"));
            }
            (None, None, None) => {}
            _ => panic!("{}: running statistics present on one side only", what("")),
        }

        if let (true, Some(grads)) = (last, &case.grads) {
            let upstream = tensor::<D>(&grads.upstream, &autodiff);
            let gradients = y.mul(upstream).sum().backward();
            assert_close(
                x.grad(&gradients).unwrap(),
                &grads.input,
                tol,
                &what("d input"),
            );
            let (gamma, beta) = affine_mut(&mut norm);
            let beta = beta.and_then(|b| b.as_ref());
            for (param, expected, name) in [
                (gamma.as_ref(), &grads.weight, "d weight"),
                (beta, &grads.bias, "d bias"),
            ] {
                match (param, expected) {
                    (Some(p), Some(e)) => {
                        let grad = p.grad(&gradients).unwrap();
                        assert_close(grad, &e.flattened(), tol, &what(name));
                    }
                    (None, None) => {}
                    _ => panic!("{}", what(&format!("{name}: present on one side only"))),
                }
            }
        }
    }
}

#[test]
fn every_normalizer_matches_pytorch_on_every_backend() {
    let fixture = fixture();
    assert!(fixture.cases.len() >= 40, "the fixture lost cases");
    println!(
        "{} cases from PyTorch {}",
        fixture.cases.len(),
        fixture.torch
    );
    for (backend, device) in test_devices() {
        for case in &fixture.cases {
            let run = match case.steps[0].input.shape.len() {
                2 => run_case::<2>,
                3 => run_case::<3>,
                4 => run_case::<4>,
                5 => run_case::<5>,
                rank => panic!("{}: rank {rank}", case.name),
            };
            run(case, backend, &device);
        }
    }
}
