//! Forward and forward + backward of every normalizer, ours next to burn-nn's own module, at the
//! shapes of `BENCHMARKS.md` (and of `benches/pytorch_norms.py`, which times PyTorch on them).
//!
//! `cargo bench --bench norms` (add `-- GroupNorm` to run one layer). The backend is flex unless
//! `NORMZOO_BENCH_DEVICE` names another compiled one (`NORMZOO_BENCH_DEVICE=wgpu cargo bench
//! --features wgpu --bench norms`). Throughput is reported in bytes read + written by the
//! forward pass. Forward + backward is the backward from an output gradient of ones (burn's
//! `backward` on a tensor of any shape), dense as the next layer's would be. Both run on the
//! autodiff device, so BatchNorm and InstanceNorm take their training path.
//!
//! Each call waits for the device to finish. `NORMZOO_BENCH_CALLS_PER_SYNC=k` instead issues `k`
//! calls back to back and waits once, and reports the time per call: on a GPU that separates the
//! work from the wait (`benches/pytorch_norms.py --calls-per-sync` does the same for CUDA).

use std::time::{Duration, Instant};

use burn::nn;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use normzoo::norm::{
    BatchNormConfig, GroupNormConfig, InstanceNormConfig, LayerNorm2dConfig, LayerNormConfig,
    RmsNormConfig,
};

// Large tensors make the system allocator return every buffer to the OS and fault it back
// in on the next op; `--features mimalloc` measures with a caching allocator instead.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Forward = Box<dyn Fn(Tensor<4>) -> Tensor<4>>;

struct Case {
    layer: &'static str,
    shape: [usize; 4],
    ours: Forward,
    burn_nn: Forward,
}

fn cases(device: &Device) -> Vec<Case> {
    let bn = BatchNormConfig::new(64).init(device).unwrap();
    let bn_burn = nn::BatchNormConfig::new(64).init(device);
    let ln = LayerNormConfig::new(vec![768]).init(device).unwrap();
    let ln_burn = nn::LayerNormConfig::new(768).init(device);
    let gn = GroupNormConfig::new(32, 128).init(device).unwrap();
    let gn_burn = nn::GroupNormConfig::new(32, 128).init(device);
    let inorm = InstanceNormConfig::new(64)
        .with_affine(true)
        .init(device)
        .unwrap();
    let inorm_burn = nn::InstanceNormConfig::new(64).init(device);
    let rms = RmsNormConfig::new(vec![768]).init(device).unwrap();
    let rms_burn = nn::RmsNormConfig::new(768).init(device);
    let ln2d = LayerNorm2dConfig::new(96).init(device).unwrap();
    // burn-nn has no channels-first LayerNorm: its LayerNorm between two permutes, as timm's
    // `LayerNorm2d` does in PyTorch.
    let ln2d_burn = nn::LayerNormConfig::new(96).with_epsilon(1e-6).init(device);
    vec![
        Case {
            layer: "BatchNorm",
            shape: [64, 64, 32, 32],
            ours: Box::new(move |x| bn.forward(x)),
            burn_nn: Box::new(move |x| bn_burn.forward(x)),
        },
        Case {
            layer: "LayerNorm",
            shape: [32, 128, 1, 768],
            ours: Box::new(move |x| ln.forward(x)),
            burn_nn: Box::new(move |x| ln_burn.forward(x)),
        },
        Case {
            layer: "GroupNorm",
            shape: [16, 128, 32, 32],
            ours: Box::new(move |x| gn.forward(x)),
            burn_nn: Box::new(move |x| gn_burn.forward(x)),
        },
        Case {
            layer: "InstanceNorm",
            shape: [16, 64, 64, 64],
            ours: Box::new(move |x| inorm.forward(x)),
            burn_nn: Box::new(move |x| inorm_burn.forward(x)),
        },
        Case {
            layer: "RmsNorm",
            shape: [32, 128, 1, 768],
            ours: Box::new(move |x| rms.forward(x)),
            burn_nn: Box::new(move |x| rms_burn.forward(x)),
        },
        Case {
            layer: "LayerNorm2d",
            shape: [16, 96, 56, 56],
            ours: Box::new(move |x| ln2d.forward(x)),
            burn_nn: Box::new(move |x| {
                ln2d_burn
                    .forward(x.permute([0, 2, 3, 1]))
                    .permute([0, 3, 1, 2])
            }),
        },
    ]
}

fn bench_norms(c: &mut Criterion) {
    let name = std::env::var("NORMZOO_BENCH_DEVICE").unwrap_or_else(|_| "flex".into());
    let device = normzoo::backend::device(&name)
        .unwrap_or_else(|err| panic!("NORMZOO_BENCH_DEVICE: {err}"))
        .autodiff();
    let calls_per_sync = match std::env::var("NORMZOO_BENCH_CALLS_PER_SYNC") {
        Ok(calls) => calls
            .parse::<u32>()
            .ok()
            .filter(|&calls| calls > 0)
            .unwrap_or_else(|| panic!("NORMZOO_BENCH_CALLS_PER_SYNC: `{calls}` is not a count")),
        Err(_) => 1,
    };
    for case in cases(&device) {
        let mut group = c.benchmark_group(case.layer);
        let numel: usize = case.shape.iter().product();
        group.throughput(Throughput::Bytes(2 * 4 * numel as u64));
        group.sample_size(20);
        let x = Tensor::<4>::random(case.shape, Distribution::Default, &device);
        for (who, forward) in [("normzoo", &case.ours), ("burn-nn", &case.burn_nn)] {
            let forward_only = || forward(x.clone());
            let forward_backward = || {
                let x = x.clone().require_grad();
                let grads = forward(x.clone()).backward();
                x.grad(&grads).unwrap()
            };
            for (name, call) in [
                ("forward", &forward_only as &dyn Fn() -> Tensor<4>),
                ("forward+backward", &forward_backward),
            ] {
                // The first calls compile (on a GPU also autotune) their kernels: made before
                // criterion's warm-up, they no longer inflate the estimate it sizes samples by.
                // Made in the closure, which runs only for the cases `--bench` selects, so a
                // case run alone runs after nothing else (what the allocator saw before
                // matters: BENCHMARKS.md, "the page-fault mode").
                let mut compiled = false;
                group.bench_function(BenchmarkId::new(name, who), |b| {
                    if !compiled {
                        time_calls(3, 1, call);
                        compiled = true;
                    }
                    b.iter_custom(|iters| time_calls(iters, calls_per_sync, call))
                });
            }
        }
        group.finish();
    }
}

/// The time per call of `iters` rounds of `calls_per_sync` calls of `call` back to back, each
/// round waiting for the device to finish its last call.
fn time_calls(iters: u64, calls_per_sync: u32, call: &dyn Fn() -> Tensor<4>) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let last = (1..calls_per_sync).fold(call(), |_, _| call());
        last.device().sync().unwrap();
    }
    start.elapsed() / calls_per_sync
}

criterion_group!(benches, bench_norms);
criterion_main!(benches);
