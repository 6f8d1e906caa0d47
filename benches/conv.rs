//! Forward and forward + backward of ResNet18-CIFAR's convolutions at batch 64: our
//! [`conv2d`](normzoo::models::conv2d) next to burn's own `Conv2d::forward`, on flex.
//!
//! `cargo bench --bench conv` (add `-- stage1` to run one shape). Throughput is in
//! multiply-adds of the forward pass (criterion prints them as elements); forward + backward
//! does three times as many. The backward pass computes the input's and the weight's
//! gradients from a dense random output gradient, as inside a network (`(y · g).sum()`, whose
//! two cheap ops both sides pay).

use std::time::{Duration, Instant};

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use normzoo::models::conv2d;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A convolution's forward pass: ours or burn's.
type Forward = fn(&Conv2d, Tensor<4>) -> Tensor<4>;

/// One of ResNet18-CIFAR's convolutions.
struct Shape {
    name: &'static str,
    channels: [usize; 2],
    size: usize,
    kernel: usize,
    stride: usize,
}

const BATCH: usize = 64;

const SHAPES: [Shape; 6] = [
    Shape {
        name: "stage1 3x3 64->64 32x32",
        channels: [64, 64],
        size: 32,
        kernel: 3,
        stride: 1,
    },
    Shape {
        name: "stage2 3x3 stride 2 64->128 32x32",
        channels: [64, 128],
        size: 32,
        kernel: 3,
        stride: 2,
    },
    Shape {
        name: "stage2 1x1 stride 2 64->128 32x32",
        channels: [64, 128],
        size: 32,
        kernel: 1,
        stride: 2,
    },
    Shape {
        name: "stage2 3x3 128->128 16x16",
        channels: [128, 128],
        size: 16,
        kernel: 3,
        stride: 1,
    },
    Shape {
        name: "stage3 3x3 256->256 8x8",
        channels: [256, 256],
        size: 8,
        kernel: 3,
        stride: 1,
    },
    Shape {
        name: "stage4 3x3 512->512 4x4",
        channels: [512, 512],
        size: 4,
        kernel: 3,
        stride: 1,
    },
];

fn bench_conv(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    for shape in SHAPES {
        let pad = shape.kernel / 2;
        let conv = Conv2dConfig::new(shape.channels, [shape.kernel, shape.kernel])
            .with_stride([shape.stride, shape.stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(false)
            .init(&device);
        let x = Tensor::<4>::random(
            [BATCH, shape.channels[0], shape.size, shape.size],
            Distribution::Default,
            &device,
        );
        let out = shape.size.div_ceil(shape.stride);
        let multiply_adds =
            BATCH * shape.channels[0] * shape.channels[1] * shape.kernel.pow(2) * out * out;
        let output_grad = Tensor::<4>::random(
            [BATCH, shape.channels[1], out, out],
            Distribution::Default,
            &device,
        );
        let mut group = c.benchmark_group(shape.name);
        group.throughput(Throughput::Elements(multiply_adds as u64));
        group.sample_size(10);
        let burns: Forward = |conv, x| conv.forward(x);
        for (who, forward) in [("normzoo", conv2d as Forward), ("burn", burns)] {
            group.bench_function(BenchmarkId::new("forward", who), |b| {
                b.iter_custom(|iters| time_calls(iters, || forward(&conv, x.clone())))
            });
            group.bench_function(BenchmarkId::new("forward+backward", who), |b| {
                b.iter_custom(|iters| {
                    time_calls(iters, || {
                        let x = x.clone().require_grad();
                        let output = forward(&conv, x.clone());
                        let grads = (output * output_grad.clone()).sum().backward();
                        x.grad(&grads).unwrap()
                    })
                })
            });
        }
        group.finish();
    }
}

/// The time of `iters` calls, each waited for.
fn time_calls(iters: u64, call: impl Fn() -> Tensor<4>) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        call().device().sync().unwrap();
    }
    start.elapsed()
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);
