# Recipes for normzoo. The README's commands stay plain cargo; these are shortcuts.

# Run the tests on flex and wgpu (what CI runs; wgpu needs a Vulkan driver, a GPU's or
# Mesa's software one).
test:
    cargo test --workspace --features wgpu

# Run the tests on every backend, the deprecated ndarray too.
test-all:
    cargo test --workspace --features ndarray,wgpu

# Run every test on the CPU backends only.
test-cpu:
    cargo test --workspace --features ndarray

# Format check, clippy with warnings as errors, and rustdoc without warnings.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --features ndarray,wgpu,vulkan -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --features ndarray,wgpu,vulkan

# Regenerate the PyTorch fixtures (needs `pip install torch torchvision safetensors`).
fixtures:
    python3 tests/fixtures/generate.py
    python3 tests/fixtures/generate_models.py
    python3 tests/fixtures/generate_checkpoints.py
    python3 tests/fixtures/generate_imagenet.py

# Run the benchmarks.
bench:
    cargo bench --workspace

# Run every lab experiment and write results/REPORT.md.
lab:
    cargo run --release --example lab -- all
