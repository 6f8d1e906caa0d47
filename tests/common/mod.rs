//! What the integration tests share: the fixtures' tensors, the built examples, and how their
//! output is checked. Each test crate compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::tensor::{Device, Tensor, TensorData};
use normzoo::backend::COMPILED_BACKENDS;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The cases of the fixture JSON at `tests/fixtures/<relative>` (`{"cases": [...], ...}`).
pub fn fixture_cases<C: DeserializeOwned>(relative: &str) -> Vec<C> {
    #[derive(Deserialize)]
    #[serde(bound = "C: DeserializeOwned")]
    struct Fixture<C> {
        cases: Vec<C>,
    }
    let path = fixture_path(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let fixture: Fixture<C> = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("cannot parse {}: {err}", path.display()));
    fixture.cases
}

/// A tensor in a fixture's JSON: its shape and its values in row-major order.
#[derive(Deserialize, Clone)]
pub struct Data {
    /// The shape.
    pub shape: Vec<usize>,
    /// The values.
    pub data: Vec<f32>,
}

impl Data {
    /// The tensor on `device`.
    pub fn tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        Tensor::from_data(
            TensorData::new(self.data.clone(), self.shape.clone()),
            device,
        )
    }
}

/// `tests/fixtures/<relative>`.
pub fn fixture_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// The built example `name`, beside this test binary's directory, on the first compiled backend.
pub fn example(name: &str) -> Command {
    let mut command = example_choosing_its_device(name);
    // The first backend compiled in: flex when it is (ndarray is far too slow for ResNet18).
    command.args(["--device", COMPILED_BACKENDS[0]]);
    command
}

/// The built example `name`, left to choose its device (`--device auto`).
pub fn example_choosing_its_device(name: &str) -> Command {
    let test_exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: run these tests with `cargo test`, which builds the examples",
        binary.display()
    );
    Command::new(binary)
}

/// Runs `command` to the end.
pub fn run(command: &mut Command) -> Output {
    command.output().expect("the example starts")
}

/// Bytes of output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the example failed with `expected` in its error and no panic.
pub fn assert_clear_error(output: &Output, expected: &str) {
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "expected a failure; stderr: {stderr}"
    );
    assert!(
        stderr.contains(expected),
        "expected `{expected}` in the error; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
}
