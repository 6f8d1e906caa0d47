//! What the tests of the examples share: the built binaries, and how their output is checked.

use std::path::Path;
use std::process::{Command, Output};

use normzoo::norm::backend::COMPILED_BACKENDS;

/// The built example `name`, beside this test binary's directory, on the first compiled backend.
pub fn example(name: &str) -> Command {
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
    let mut command = Command::new(binary);
    // The first backend compiled in: flex when it is (ndarray is far too slow for ResNet18).
    command.args(["--device", COMPILED_BACKENDS[0]]);
    command
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
