"""ResNet18-CIFAR training on a GPU, ours through wgpu beside PyTorch on CUDA, in one sitting.

    python3 benches/gpu.py                       # wgpu f32; vulkan f32 and f16; PyTorch f32 and AMP
    python3 benches/gpu.py --runs vulkan:f16 --pytorch f16
    python3 benches/gpu.py --norms               # and the normalizers (benches/compare.py)

Builds `examples/throughput.rs` once per cargo feature set named in `--runs` (`wgpu`: burn's
WGSL kernels; `vulkan`: SPIR-V, with subgroups and, for f16, tensor cores), each in a target
directory of its own under `target/gpu/` so that a second sitting rebuilds nothing, then runs
`throughput --devices wgpu` for each `features:precision`, and `benches/pytorch_norms.py --device
cuda --resnet` for each of `--pytorch`'s precisions (f16 and bf16 through `torch.autocast`, the
mixed precision a PyTorch user trains in). Prints one table: training and inference images/s and
each row's training speed as a fraction of each PyTorch run's. A run that fails (an adapter
without f16, an error from the driver) prints its error and `failed` in its row; the others
still run.

With `--norms`, then the normalizers: `benches/compare.py --device wgpu --pytorch-device cuda
--calls-per-sync 20` with the last feature set's build directory.
"""

import argparse
import os
import re
import subprocess
import sys

from compare import ROOT, build, cpu

# A row of `throughput`'s table: | device | train images/s | inference images/s | peak MB |
THROUGHPUT_ROW = re.compile(r"^\| (\S+) \| ([\d.]+) \| ([\d.]+) \|")
# `pytorch_norms.py`'s network line.
PYTORCH_LINE = re.compile(r"training batch \d+: ([\d.]+) images/s; inference batch \d+: ([\d.]+)")


def build_throughput(features):
    """Builds the `throughput` example with `features` into `target/gpu/<features>` and
    returns its executable."""
    env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir(features)))
    return build("release", features, ["throughput"], kind="example", env=env)["throughput"]


def target_dir(features):
    return ROOT / "target" / "gpu" / features.replace(",", "+")


def attempt(command, timeout, env=None):
    """`command`'s output, or None and its error printed when it fails or runs past
    `timeout` seconds."""
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{' '.join(command)}: still running after {timeout} s", file=sys.stderr)
        return None
    if result.returncode != 0:
        print(f"{' '.join(command)} failed:\n{result.stdout}", file=sys.stderr)
        return None
    return result.stdout


def gpu_name():
    """The first GPU's name as nvidia-smi gives it, else None."""
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                                 "--format=csv,noheader"], stdout=subprocess.PIPE, text=True)
    except OSError:
        return None
    lines = result.stdout.strip().splitlines()
    return lines[0] if result.returncode == 0 and lines else None


def commit():
    """The checked-out commit, marked when the tree has changes."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True).stdout.strip() or "unknown"
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True).stdout.strip()
    return head + (" with changes" if changed else "")


def parse_runs(runs):
    """`features:precision` pairs, in order."""
    pairs = []
    for run in runs:
        features, _, precision = run.partition(":")
        if not features or precision not in ("f32", "f16", "bf16"):
            sys.exit(f"--runs: expected `features:precision` (precision f32, f16 or bf16),"
                     f" got `{run}`")
        pairs.append((features, precision))
    return pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=["wgpu:f32", "vulkan:f32", "vulkan:f16"],
                        help="our runs, each `features:precision`")
    parser.add_argument("--pytorch", nargs="*", default=["f32", "f16"],
                        choices=["f32", "f16", "bf16"], help="PyTorch's precisions")
    parser.add_argument("--device", default="wgpu", help="our device (throughput --devices)")
    parser.add_argument("--pytorch-device", default="cuda")
    parser.add_argument("--model", default="resnet18-cifar")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--infer-batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per run")
    parser.add_argument("--norms", action="store_true",
                        help="then the normalizers beside PyTorch's (benches/compare.py)")
    args = parser.parse_args()
    runs = parse_runs(args.runs)

    executables = {}
    for features, _ in runs:
        if features not in executables:
            executables[features] = build_throughput(features)
    shape = ["--model", args.model, "--train-batch", str(args.train_batch),
             "--infer-batch", str(args.infer_batch)]
    timing = ["--warmup", str(args.warmup)]

    rows = []
    for features, precision in runs:
        output = attempt([executables[features], "--devices", args.device, "--precision", precision,
                          "--steps", str(args.steps)] + shape + timing, args.timeout)
        match = next(filter(None, map(THROUGHPUT_ROW.match, (output or "").splitlines())), None)
        rows.append((f"normzoo, --features {features}, {precision}",
                     match and (float(match.group(2)), float(match.group(3)))))
    for precision in args.pytorch:
        output = attempt([sys.executable, str(ROOT / "benches" / "pytorch_norms.py"), "--device",
                          args.pytorch_device, "--no-norms", "--precision", precision,
                          "--resnet-steps", str(args.steps)] + shape + timing, args.timeout)
        match = PYTORCH_LINE.search(output or "")
        label = "f32" if precision == "f32" else f"autocast {precision}"
        rows.append((f"PyTorch, {args.pytorch_device}, {label}",
                     match and (float(match.group(1)), float(match.group(2)))))

    print(f"{gpu_name() or 'GPU unknown to nvidia-smi'}; {cpu()}, {os.cpu_count()} CPUs;"
          f" {args.model}, training batch {args.train_batch}, inference batch {args.infer_batch},"
          f" {args.steps} timed steps after {args.warmup} warm-up; commit {commit()}")
    references = [(name, result[0]) for name, result in rows
                  if name.startswith("PyTorch") and result]
    print("| run | training images/s | inference images/s |"
          + "".join(f" training ÷ {name} |" for name, _ in references))
    print("|---|---|---|" + "---|" * len(references))
    for name, result in rows:
        if not result:
            print(f"| {name} | failed | failed |" + " |" * len(references))
            continue
        ratios = "".join(f" {result[0] / train:.2f} |" for _, train in references)
        print(f"| {name} | {result[0]:.1f} | {result[1]:.1f} |{ratios}")

    if args.norms:
        features = runs[-1][0]
        env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir(features)))
        subprocess.run([sys.executable, str(ROOT / "benches" / "compare.py"), "--features",
                        features, "--device", args.device, "--pytorch-device",
                        args.pytorch_device, "--calls-per-sync", "20", "--rounds", "1",
                        "--measurement-time", "2"], cwd=ROOT, env=env, check=False)


if __name__ == "__main__":
    main()
