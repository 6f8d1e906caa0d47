"""Our normalizers and convolutions beside PyTorch's, in one sitting, and the ratios.

    python3 benches/compare.py --threads 2                 # the bench profile (release-like)
    python3 benches/compare.py --threads 2 --profile dev --features wgpu   # `cargo test`'s build
    python3 benches/compare.py --threads 2 --rounds 3 --no-conv
    python3 benches/compare.py --threads 2 --no-norms       # ResNet18-CIFAR's convolutions only
    python3 benches/compare.py --threads 2 --each-alone    # a process per normalizer case
    python3 benches/compare.py --features vulkan --device wgpu --pytorch-device cuda \
        --calls-per-sync 20                                # the normalizers on a GPU

Builds our criterion benches (`benches/norms.rs`, `benches/conv.rs`) with cargo, then runs,
round after round, ours (`--bench '/normzoo'`) and `benches/pytorch_norms.py` (`--conv`), each
as a process of its own, alternately, so that a machine whose speed drifts during the sitting
drifts for both. Prints, per layer and pass, the best of each side's medians over the rounds and
ours ÷ PyTorch's: below 1.00, ours is faster. With `--each-alone`, every normalizer case (layer
and pass) runs in a process of its own on both sides, as a program that trains one layer would:
what the allocator saw before a case changes which buffers come back as fresh memory (glibc's
page-fault mode, BENCHMARKS.md), and a case run after the others can hide it.

Both sides get this process's environment, so they run on the same allocator: glibc's own
unless `GLIBC_TUNABLES` or `LD_PRELOAD` change it (printed first), or `--features mimalloc`
puts mimalloc under ours alone (printed too). Our numbers on the CPU are flex's.

On a GPU (`--device wgpu`, built with `--features wgpu` or `vulkan`, beside `--pytorch-device
cuda`) only the normalizers are compared (the convolution bench is flex's), and
`--calls-per-sync k` has both sides issue k calls per wait for the device: one wait costs about a
millisecond on wgpu, more than most of these layers' work.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNITS_MS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def build(profile, features, targets, kind="bench", env=None):
    """Builds the `kind` targets (`bench`, `example`) named in `targets` and returns
    {name: executable}, as cargo reports them."""
    command = ["cargo", "build", "--profile", profile, "--message-format=json"]
    if features:
        command += ["--features", features]
    for target in targets:
        command += [f"--{kind}", target]
    print("building:", " ".join(command), file=sys.stderr)
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, check=True,
                            text=True)
    executables = {}
    for line in result.stdout.splitlines():
        message = json.loads(line)
        target = message.get("target", {})
        if message.get("executable") and kind in target.get("kind", []):
            executables[target["name"]] = message["executable"]
    missing = [target for target in targets if target not in executables]
    if missing:
        sys.exit(f"cargo built no executable for {', '.join(missing)}")
    return executables


def criterion_medians(output):
    """{benchmark id: median ms} from criterion's report (`id` then `time: [low median high]`,
    on one line or two)."""
    medians, name = {}, None
    for line in output.splitlines():
        if not line.strip() or line.startswith(("Benchmarking", "Found", "Warning")):
            continue
        if not line[0].isspace():
            name = line.split("time:")[0].strip()
        match = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if match and name and name not in medians:
            medians[name] = float(match.group(1)) * UNITS_MS[match.group(2)]
    return medians


def pytorch_medians(output):
    """{`layer/pass`: median ms} from `pytorch_norms.py`'s tables (`-`: a pass not timed)."""
    medians = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"[\d.]+|-", cells[2]):  # layer, shape, fwd, GB/s, both
            for pass_, ms in (("forward", cells[2]), ("forward+backward", cells[4])):
                if ms != "-":  # a pass not timed
                    medians[f"{cells[0]}/{pass_}"] = float(ms)
        elif len(cells) == 3 and re.fullmatch(r"[\d.]+", cells[1]):  # convolution, fwd, both
            medians[f"{cells[0]}/forward"] = float(cells[1])
            medians[f"{cells[0]}/forward+backward"] = float(cells[2])
    return medians


def run(command, env):
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}")
    return result.stdout


def cpu():
    """The CPU's model name where Linux says it, else the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def allocator(features):
    glibc = []
    for variable in ("GLIBC_TUNABLES", "LD_PRELOAD"):
        if os.environ.get(variable):
            glibc.append(f"{variable}={os.environ[variable]}")
    system = "glibc's malloc as the system gives it" if not glibc else "glibc with " + ", ".join(glibc)
    if "mimalloc" in features.split(","):
        return f"ours mimalloc (--features mimalloc), PyTorch {system}"
    return f"both {system}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="bench", help="cargo profile of our benches")
    parser.add_argument("--features", default="", help="cargo features (e.g. wgpu, mimalloc)")
    parser.add_argument("--threads", type=int, help="PyTorch's CPU threads (ours: rayon's, all)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two sides")
    parser.add_argument("--no-conv", action="store_true", help="the normalizers only")
    parser.add_argument("--no-norms", action="store_true", help="the convolutions only")
    parser.add_argument("--each-alone", action="store_true",
                        help="every normalizer case in a process of its own, on both sides"
                        " (the normalizers only)")
    parser.add_argument("--measurement-time", type=float, default=3.0, help="criterion, seconds")
    parser.add_argument("--repeats", type=int, default=30, help="PyTorch's samples per case")
    parser.add_argument("--device", default="flex",
                        help="our normalizers' device (NORMZOO_BENCH_DEVICE), e.g. wgpu")
    parser.add_argument("--pytorch-device", default="cpu", help="PyTorch's device: cpu or cuda")
    parser.add_argument("--calls-per-sync", type=int, default=1,
                        help="normalizer calls per wait for the device, on both sides")
    args = parser.parse_args()

    if args.no_norms and (args.no_conv or args.each_alone):
        parser.error("--no-norms leaves only the convolutions: not with --no-conv or --each-alone")
    if args.device != "flex":
        if args.no_norms:
            parser.error(f"--device {args.device}: the convolution bench runs on flex only")
        args.no_conv = True
    benches = ([] if args.no_norms else ["norms"]) + (
        [] if args.no_conv or args.each_alone else ["conv"])
    executables = build(args.profile, args.features, benches)
    env = dict(os.environ, NORMZOO_BENCH_DEVICE=args.device,
               NORMZOO_BENCH_CALLS_PER_SYNC=str(args.calls_per_sync))
    criterion_args = ["--bench", "/normzoo", "--warm-up-time", "1",
                      "--measurement-time", str(args.measurement_time), "--noplot"]
    pytorch = [sys.executable, str(ROOT / "benches" / "pytorch_norms.py"),
               "--repeats", str(args.repeats), "--device", args.pytorch_device,
               "--calls-per-sync", str(args.calls_per_sync)]
    if args.threads:
        pytorch += ["--threads", str(args.threads)]
    if "conv" in benches:
        pytorch.append("--conv")
    if args.no_norms:
        pytorch.append("--no-norms")

    # The processes of a round, alternately ours and PyTorch's: (our bench and its arguments,
    # PyTorch's arguments).
    processes = [([executables[bench]] + criterion_args, None) for bench in benches]
    processes[-1] = (processes[-1][0], pytorch)
    if args.each_alone:
        listed = run([executables["norms"], "--list"], env).splitlines()
        cases = [line.removesuffix(": benchmark") for line in listed
                 if line.endswith("/normzoo: benchmark")]
        processes = []
        for case in cases:
            layer, pass_, _ = case.split("/")
            processes.append(([executables["norms"], "--bench", "--exact", case] + criterion_args[2:],
                              pytorch + ["--layer", layer, "--pass", pass_]))

    ours, theirs = {}, {}
    for round_ in range(1, args.rounds + 1):
        print(f"round {round_}/{args.rounds}", file=sys.stderr)
        for ours_command, pytorch_command in processes:
            for name, ms in criterion_medians(run(ours_command, env)).items():
                ours.setdefault(name.removesuffix("/normzoo"), []).append(ms)
            if pytorch_command:
                for name, ms in pytorch_medians(run(pytorch_command, env)).items():
                    theirs.setdefault(name, []).append(ms)

    print(f"{cpu()}, {os.cpu_count()} CPUs; ours on {args.device}, PyTorch on"
          f" {args.pytorch_device}, {args.calls_per_sync} call(s) per wait; our {args.profile} profile"
          + (f" with --features {args.features}" if args.features else "")
          + f"; allocator: {allocator(args.features)}; best median of {args.rounds} round(s), ms")
    print("| case | normzoo | PyTorch | normzoo ÷ PyTorch |")
    print("|---|---|---|---|")
    for name in ours:
        if name in theirs:
            mine, other = min(ours[name]), min(theirs[name])
            print(f"| {name} | {mine:.3f} | {other:.3f} | {mine / other:.2f} |")
    unmatched = sorted(set(ours) ^ set(theirs))
    if unmatched:
        print("not on both sides:", ", ".join(unmatched), file=sys.stderr)


if __name__ == "__main__":
    main()
