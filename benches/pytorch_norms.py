"""PyTorch's side of BENCHMARKS.md: the normalizers of `benches/norms.rs` at the same shapes,
ResNet18-CIFAR's convolutions of `benches/conv.rs` (with `--conv`), and ResNet18-CIFAR training
and inference images/s as `examples/throughput.rs` measures them (with `--resnet`, or another
of `benches/cifar_models.py`'s networks with `--model NAME`).

    python3 benches/pytorch_norms.py --threads 2            # CPU, as on our 2-core machine
    python3 benches/pytorch_norms.py --threads 2 --conv --resnet
    python3 benches/pytorch_norms.py --device cuda --resnet
    python3 benches/pytorch_norms.py --device cuda --no-norms --resnet --precision f16   # AMP
    python3 benches/pytorch_norms.py --threads 2 --no-norms --model vgg16-bn-cifar

Prints a Markdown table: median milliseconds of the forward pass and of forward + backward
(backward from an output gradient of ones, allocated in the call, as burn's `backward` does in
the Rust bench; `.sum().backward()` would hand PyTorch a broadcast scalar that it never reads
from memory, which no layer inside a network gets), and the forward's bytes read + written
per second. Inputs are uniform in [0, 1), as burn's `Distribution::Default`. Each call waits for
the device; with `--calls-per-sync k`, a sample is k calls back to back and one wait, divided by
k (as `NORMZOO_BENCH_CALLS_PER_SYNC` does for the Rust bench).

`--precision f16` or `bf16` trains and infers the network in PyTorch's automatic mixed precision,
as a PyTorch user would against `throughput --precision`: `torch.autocast` around the forward
pass (f32 weights, each op in the precision autocast picks for it) and, for f16, a
`torch.amp.GradScaler` for the loss. The normalizers and convolutions stay f32.
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn

import cifar_models
from cifar_models import LayerNorm2d

# (name, shape, module factory): the cases of benches/norms.rs.
CASES = [
    ("BatchNorm", (64, 64, 32, 32), lambda: nn.BatchNorm2d(64)),
    ("LayerNorm", (32, 128, 1, 768), lambda: nn.LayerNorm(768)),
    ("GroupNorm", (16, 128, 32, 32), lambda: nn.GroupNorm(32, 128)),
    ("InstanceNorm", (16, 64, 64, 64), lambda: nn.InstanceNorm2d(64, affine=True)),
    ("RmsNorm", (32, 128, 1, 768), lambda: nn.RMSNorm(768)),
    ("LayerNorm2d", (16, 96, 56, 56), lambda: LayerNorm2d(96)),
]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(run, device, warmup, repeats, calls_per_sync=1):
    for _ in range(warmup):
        run()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls_per_sync):
            run()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3 / calls_per_sync)
    return statistics.median(times)


def bench_norms(device, warmup, repeats, calls_per_sync, layers, passes):
    """Times the `CASES` named in `layers` (all if empty), the passes in `passes`; a pass not
    timed prints as `-`."""
    print("| layer | shape | forward ms | forward GB/s | forward+backward ms |")
    print("|---|---|---|---|---|")
    for name, shape, factory in CASES:
        if layers and name not in layers:
            continue
        layer = factory().to(device).train()
        x = torch.rand(shape, device=device)
        forward = gbs = both = "-"
        if "forward" in passes:
            ms = median_ms(lambda: layer(x), device, warmup, repeats, calls_per_sync)
            forward, gbs = f"{ms:.3f}", f"{2 * 4 * x.numel() / (ms * 1e-3) / 1e9:.1f}"
        if "forward+backward" in passes:
            xg = x.clone().requires_grad_(True)

            def forward_backward():
                xg.grad = None
                y = layer(xg)
                y.backward(torch.ones_like(y))

            ms = median_ms(forward_backward, device, warmup, repeats, calls_per_sync)
            both = f"{ms:.3f}"
        dims = "×".join(map(str, shape))
        print(f"| {name} | {dims} | {forward} | {gbs} | {both} |")


# (name, input channels, output channels, size, kernel, stride): the shapes of benches/conv.rs,
# at batch 64.
CONV_SHAPES = [
    ("stage1 3x3 64->64 32x32", 64, 64, 32, 3, 1),
    ("stage2 3x3 stride 2 64->128 32x32", 64, 128, 32, 3, 2),
    ("stage2 1x1 stride 2 64->128 32x32", 64, 128, 32, 1, 2),
    ("stage2 3x3 128->128 16x16", 128, 128, 16, 3, 1),
    ("stage3 3x3 256->256 8x8", 256, 256, 8, 3, 1),
    ("stage4 3x3 512->512 4x4", 512, 512, 4, 3, 1),
]


def bench_conv(device, warmup, repeats):
    """Forward, and forward + backward from a dense random output gradient through
    `(y * g).sum()`, as benches/conv.rs does; the input's and the weight's gradients."""
    print("| convolution, batch 64 | forward ms | forward+backward ms |")
    print("|---|---|---|")
    for name, c_in, c_out, size, kernel, stride in CONV_SHAPES:
        conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False).to(device)
        x = torch.rand(64, c_in, size, size, device=device)
        with torch.no_grad():
            g = torch.rand_like(conv(x))
        forward = median_ms(lambda: conv(x), device, warmup, repeats)
        xg = x.clone().requires_grad_(True)

        def forward_backward():
            xg.grad = None
            conv.weight.grad = None
            (conv(xg) * g).sum().backward()

        both = median_ms(forward_backward, device, warmup, repeats)
        print(f"| {name} | {forward:.2f} | {both:.2f} |")


# `--precision`: the dtype autocast computes in, None for plain f32.
AUTOCAST = {"f32": None, "f16": torch.float16, "bf16": torch.bfloat16}


def bench_model(name, device, train_batch, infer_batch, warmup, steps, precision="f32"):
    """Training (one SGD step with momentum) and inference images/s of the CIFAR network `name`
    on random 32×32 images, as `examples/throughput.rs` times ours; in automatic mixed
    precision (autocast, and a gradient scaler for f16) unless `precision` is f32."""
    torch.manual_seed(42)
    model = cifar_models.build(name).to(device)
    optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    images = torch.randn(train_batch, 3, 32, 32, device=device)
    labels = torch.arange(train_batch, device=device) % 10
    dtype = AUTOCAST[precision]
    autocast = lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def train_step():
        optim.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()

    model.train()
    train_ms = median_ms(train_step, device, warmup, steps)
    model.eval()
    batch = torch.randn(infer_batch, 3, 32, 32, device=device)
    with torch.no_grad(), autocast():
        infer_ms = median_ms(lambda: model(batch), device, warmup, steps)
    print(f"{name}, {precision}: training batch {train_batch}: {train_batch / train_ms * 1e3:.1f}"
          f" images/s; inference batch {infer_batch}: {infer_batch / infer_ms * 1e3:.1f} images/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--calls-per-sync", type=int, default=1,
                        help="normalizer calls per wait for the device")
    parser.add_argument("--no-norms", action="store_true", help="skip the normalizers")
    parser.add_argument("--layer", action="append", default=[], choices=[c[0] for c in CASES],
                        help="time only this normalizer (repeatable)")
    parser.add_argument("--pass", dest="passes", action="append",
                        choices=["forward", "forward+backward"],
                        help="time only this pass (repeatable; both by default)")
    parser.add_argument("--conv", action="store_true", help="also time ResNet18-CIFAR's convolutions")
    parser.add_argument("--resnet", action="store_true", help="also time ResNet18-CIFAR")
    parser.add_argument("--model", choices=cifar_models.NAMES,
                        help="also time this network (--resnet: resnet18-cifar)")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--infer-batch", type=int, default=256)
    parser.add_argument("--resnet-steps", type=int, default=10)
    parser.add_argument("--precision", choices=list(AUTOCAST), default="f32",
                        help="the network's precision: f16 and bf16 through autocast")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"PyTorch {torch.__version__} on {name}, median of {args.repeats}"
          + (f" samples of {args.calls_per_sync} calls" if args.calls_per_sync > 1 else ""))
    passes = args.passes or ["forward", "forward+backward"]
    if not args.no_norms:
        bench_norms(device, args.warmup, args.repeats, args.calls_per_sync, args.layer, passes)
    if args.conv:
        bench_conv(device, args.warmup, min(args.repeats, 10))
    model = args.model or ("resnet18-cifar" if args.resnet else None)
    if model:
        bench_model(model, device, args.train_batch, args.infer_batch, args.warmup,
                    args.resnet_steps, args.precision)


if __name__ == "__main__":
    main()
