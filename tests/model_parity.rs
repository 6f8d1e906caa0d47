//! Architectures against PyTorch: small ResNet18-CIFAR, the Transformer block (pre- and
//! post-norm) and the layer-normalized LSTM, loaded with the weights PyTorch used, must give
//! PyTorch's outputs in evaluation mode, on every compiled backend.
//!
//! The expected values come from `tests/fixtures/generate_models.py`, which wrote
//! `tests/fixtures/model_cases.json`.

mod common;

use std::collections::{HashMap, VecDeque};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor, TensorData};
use common::{Data, fixture_cases};
use normzoo::backend::test_devices;
use normzoo::models::{LstmConfig, NormPosition, ResNetConfig, TransformerBlockConfig};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Case {
    name: String,
    config: HashMap<String, Value>,
    tensors: Vec<Named>,
    input: Data,
    output: Data,
}

#[derive(Deserialize, Clone)]
struct Named {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Replaces every float tensor of a module, in visiting order, with the fixture's tensors (in
/// the same order, under PyTorch's names). PyTorch stores linear weights `[out, in]`, burn
/// `[in, out]`: 2-D tensors are transposed.
struct LoadInOrder {
    tensors: VecDeque<Named>,
    device: Device,
}

impl ModuleMapper for LoadInOrder {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let next = self
            .tensors
            .pop_front()
            .expect("the module has more tensors than the fixture");
        let (id, current, mapper) = param.consume();
        let dims = current.dims().to_vec();
        let loaded = Tensor::<D>::from_data(
            TensorData::new(next.data.clone(), next.shape.clone()),
            &self.device,
        );
        let value = match D {
            // Every 2-D tensor in these fixtures is a linear weight (square ones included).
            2 => loaded.transpose(),
            _ => loaded,
        };
        assert_eq!(
            value.dims().to_vec(),
            dims,
            "{}: PyTorch shape {:?}",
            next.name,
            next.shape
        );
        Param::from_mapped_value(id, value, mapper)
    }
}

fn load<M: Module>(module: M, case: &Case, device: &Device) -> M {
    let mut loader = LoadInOrder {
        tensors: case.tensors.iter().cloned().collect(),
        device: device.clone(),
    };
    let module = module.map(&mut loader);
    let left: Vec<_> = loader.tensors.iter().map(|t| t.name.as_str()).collect();
    assert!(
        left.is_empty(),
        "{}: tensors the module has no place for: {left:?}",
        case.name
    );
    module
}

/// `|actual − expected| ≤ tol·(1 + |expected|)` element-wise.
fn assert_close<const D: usize>(actual: Tensor<D>, case: &Case, backend: &str, tol: f32) {
    assert_eq!(
        actual.dims().to_vec(),
        case.output.shape,
        "{}: shape",
        case.name
    );
    let actual = actual
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    for (i, (a, e)) in actual.iter().zip(&case.output.data).enumerate() {
        assert!(
            (a - e).abs() <= tol * (1.0 + e.abs()),
            "[{backend}] {}: output element {i} is {a} where PyTorch gives {e}",
            case.name
        );
    }
}

fn usize_of(case: &Case, key: &str) -> usize {
    case.config[key].as_u64().unwrap() as usize
}

#[test]
fn architectures_match_pytorch_in_evaluation() {
    let cases: Vec<Case> = fixture_cases("model_cases.json");
    assert_eq!(cases.len(), 4, "the fixture lost cases");
    for (backend, device) in test_devices() {
        for case in &cases {
            match case.name.as_str() {
                "resnet18_cifar_width4" => {
                    let config = ResNetConfig::resnet18_cifar(usize_of(case, "num_classes"))
                        .with_width(usize_of(case, "width"));
                    let model = load(config.init(&device).unwrap(), case, &device).valid();
                    assert_close(
                        model.forward(case.input.tensor(&device)),
                        case,
                        backend,
                        1e-5,
                    );
                }
                name if name.starts_with("transformer_block") => {
                    let position = match case.config["position"].as_str().unwrap() {
                        "pre" => NormPosition::Pre,
                        _ => NormPosition::Post,
                    };
                    let config = TransformerBlockConfig::new(
                        usize_of(case, "d_model"),
                        usize_of(case, "n_heads"),
                    )
                    .with_d_ff(usize_of(case, "d_ff"))
                    .with_position(position);
                    let block = load(config.init(&device).unwrap(), case, &device).valid();
                    assert_close(
                        block.forward(case.input.tensor(&device), None),
                        case,
                        backend,
                        1e-5,
                    );
                }
                "ln_lstm" => {
                    let config = LstmConfig::layer_normalized(
                        usize_of(case, "d_input"),
                        usize_of(case, "d_hidden"),
                    );
                    let lstm = load(config.init(&device).unwrap(), case, &device).valid();
                    let (output, _) = lstm.forward(case.input.tensor(&device), None);
                    assert_close(output, case, backend, 1e-5);
                }
                other => panic!("no test for fixture case {other}"),
            }
        }
    }
}
