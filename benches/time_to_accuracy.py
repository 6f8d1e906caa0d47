"""Wall-clock time for ResNet18-CIFAR to reach a test accuracy on Fashion-MNIST: normzoo's
`resnet_cifar` example against PyTorch running the same recipe, one after the other in one
sitting, each timed the same way.

    cargo build --release --example resnet_cifar
    python3 benches/time_to_accuracy.py --epochs 2 --target 90
    python3 benches/time_to_accuracy.py --only pytorch --epochs 2      # one side

Both sides run as child processes of this script, and each writes `metrics.csv` in the same
`epoch,split,metric,value` form (normzoo's `CsvMetricLogger`; PyTorch's side below). The script
polls those files and notes, for each epoch, the seconds from starting the process to the
moment that epoch's test accuracy was written: start-up, data loading, training and the
evaluation after each epoch all count. A side is stopped as soon as it reaches `--target`
(percent), unless `--run-to-end`. The result is a Markdown table and `results.json` in `--out`.

The recipe, on both sides: ResNet18 with the CIFAR stem (3×3 convolution, stride 1, no
max-pool; torchvision's `resnet18(num_classes=10)` otherwise) with batch norm or `--norm`
(group[:G], layer2d, instance, none: torchvision's `norm_layer`), batch 128, SGD with Nesterov
momentum 0.9 and weight decay 5e-4 on every parameter, the learning rate warming up linearly
from a tenth of `--lr` to `--lr` over the first 15% of the steps then following a cosine to 0
(stepped every batch), the 28×28 images centred on a 32×32 input (a 2-pixel black border),
random crops of that input padded by 2 and horizontal flips for training, normalization with
Fashion-MNIST's mean and standard deviation (0.2860, 0.3530), the grey channel repeated three
times, the test set (10,000 images) scored after every epoch. Neither side is given an
allocator or thread settings beyond its defaults (PyTorch uses as many threads as cores; burn's
flex backend the same through rayon), so both run with the system's malloc.
"""

import argparse
import csv
import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
TEST_SPLIT = "valid"  # burn-train's name for the split scored after each epoch


def fashion_mnist_dir(given):
    """The directory as normzoo looks it up: the flag, then the variable, then Debian's."""
    return Path(given or os.environ.get("NORMZOO_FASHION_MNIST_DIR") or DEBIAN_DIR)


def read_idx(directory, stem):
    """One IDX file (gzipped or not) as (dimensions, bytes)."""
    for name, opener in ((stem + ".gz", gzip.open), (stem, open)):
        path = directory / name
        if path.exists():
            with opener(path, "rb") as file:
                data = file.read()
            rank = data[3]
            dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
            return dims, data[4 + 4 * rank :]
    sys.exit(f"{directory}: no {stem} or {stem}.gz (apt-get install dataset-fashion-mnist)")


# ---------------------------------------------------------------------------------------------
# PyTorch's side, run as a child process (`--pytorch-worker`).


def norm_layer(name):
    """torchvision's `norm_layer` for one of normzoo's normalizer names."""
    import torch.nn as nn
    from cifar_models import LayerNorm2d

    kind, _, groups = name.partition(":")
    layers = {
        "batch": nn.BatchNorm2d,
        "group": lambda channels: nn.GroupNorm(int(groups or 32), channels),
        "layer2d": LayerNorm2d,
        "instance": lambda channels: nn.InstanceNorm2d(channels, affine=True),
        "none": lambda channels: nn.Identity(),
    }
    if kind not in layers:
        sys.exit(f"--norm {name}: expected batch, group[:G], layer2d, instance or none")
    return layers[kind]


def pytorch_worker(args):
    import torch
    import torch.nn.functional as F
    from cifar_models import resnet18_cifar

    torch.manual_seed(args.seed)
    directory = fashion_mnist_dir(args.data_dir)

    def load(prefix):
        dims, pixels = read_idx(directory, f"{prefix}-images-idx3-ubyte")
        _, labels = read_idx(directory, f"{prefix}-labels-idx1-ubyte")
        images = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(dims[0], 1, 28, 28)
        images = F.pad(images, (2, 2, 2, 2))  # centred on the 32×32 input
        return images, torch.frombuffer(bytearray(labels), dtype=torch.uint8).long()

    def normalize(images):
        return ((images.float() / 255.0 - MEAN) / STD).expand(-1, 3, -1, -1).contiguous()

    train_images, train_labels = load("train")
    test_images, test_labels = load("t10k")
    sample = torch.Generator().manual_seed(args.seed)
    if args.limit_train:
        keep = torch.randperm(len(train_images), generator=sample)[: args.limit_train]
        train_images, train_labels = train_images[keep], train_labels[keep]
    if args.limit_test:
        keep = torch.randperm(len(test_images), generator=sample)[: args.limit_test]
        test_images, test_labels = test_images[keep], test_labels[keep]
    test_inputs = normalize(test_images)

    def augment(images, generator):
        padded = F.pad(images, (2, 2, 2, 2))
        offsets = torch.randint(0, 5, (len(images), 2), generator=generator)
        flips = torch.rand(len(images), generator=generator) < 0.5
        crops = []
        for image, (dy, dx), flip in zip(padded, offsets.tolist(), flips.tolist()):
            crop = image[:, dy : dy + 32, dx : dx + 32]
            crops.append(crop.flip(-1) if flip else crop)
        return torch.stack(crops)

    model = resnet18_cifar(10, norm_layer(args.norm))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    steps_per_epoch = math.ceil(len(train_images) / args.batch_size)
    total = max(steps_per_epoch * args.epochs, 2)
    warmup = max(total * 15 // 100, 1)

    def lr_at(step):
        if step < warmup:
            return args.lr / 10 + (args.lr - args.lr / 10) * step / warmup
        progress = (step - warmup) / (total - warmup)
        return args.lr * (1 + math.cos(math.pi * progress)) / 2

    out = Path(args.artifact_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as file:
        metrics = csv.writer(file)
        metrics.writerow(["epoch", "split", "metric", "value"])
        file.flush()
        generator = torch.Generator().manual_seed(args.seed)
        step = 0
        for epoch in range(1, args.epochs + 1):
            model.train()
            order = torch.randperm(len(train_images), generator=generator)
            loss_sum, correct, seen = 0.0, 0, 0
            start = time.perf_counter()
            for first in range(0, len(order), args.batch_size):
                batch = order[first : first + args.batch_size]
                inputs = normalize(augment(train_images[batch], generator))
                targets = train_labels[batch]
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step)
                logits = model(inputs)
                loss = F.cross_entropy(logits, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum += loss.item() * len(batch)
                correct += (logits.argmax(1) == targets).sum().item()
                seen += len(batch)
            rate = seen / (time.perf_counter() - start)
            model.eval()
            with torch.no_grad():
                right = sum(
                    (model(test_inputs[i : i + 500]).argmax(1) == test_labels[i : i + 500])
                    .sum()
                    .item()
                    for i in range(0, len(test_inputs), 500)
                )
            for split, metric, value in [
                ("train", "Loss", loss_sum / seen),
                ("train", "Accuracy", 100 * correct / seen),
                ("train", "Throughput", rate),
                (TEST_SPLIT, "Accuracy", 100 * right / len(test_inputs)),
            ]:
                metrics.writerow([epoch, split, metric, value])
            file.flush()


# ---------------------------------------------------------------------------------------------
# The driver.


def test_accuracies(path):
    """{epoch: test accuracy in percent} from a metrics.csv written so far."""
    found = {}
    try:
        with open(path, newline="") as file:
            for row in csv.DictReader(file):
                if row["split"] == TEST_SPLIT and row["metric"] == "Accuracy":
                    found[int(row["epoch"])] = float(row["value"])
    except (FileNotFoundError, KeyError, ValueError):
        pass
    return found


def timed_run(name, command, metrics_path, target, run_to_end, log_path):
    """Runs `command`, noting when each epoch's test accuracy appears in `metrics_path`."""
    print(f"== {name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        epochs, reached = [], None
        while True:
            finished = process.poll() is not None
            for epoch, accuracy in sorted(test_accuracies(metrics_path).items()):
                if epoch > len(epochs):
                    seconds = time.perf_counter() - start
                    epochs.append({"epoch": epoch, "accuracy": accuracy, "seconds": seconds})
                    print(f"   epoch {epoch}: {accuracy:.2f}% at {seconds / 60:.1f} min", flush=True)
                    if reached is None and accuracy >= target:
                        reached = seconds
            if finished or (reached is not None and not run_to_end):
                break
            time.sleep(0.5)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait()
        elif process.returncode != 0:
            sys.exit(f"{name} failed (exit {process.returncode}); see {log_path}")
    return {"name": name, "command": command, "epochs": epochs, "seconds_to_target": reached}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="the schedule's length")
    parser.add_argument("--target", type=float, default=90.0, help="test accuracy, percent")
    parser.add_argument("--lr", type=float, default=0.1, help="the peak learning rate")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--norm", default="batch", help="batch, group[:G], layer2d, instance or none"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-dir", help="Fashion-MNIST's IDX files (default: as normzoo)")
    parser.add_argument(
        "--limit-train",
        type=int,
        help="train on a seeded sample of this many images (a quick check of the script; each "
        "side draws its own sample)",
    )
    parser.add_argument("--limit-test", type=int, help="score a seeded sample of the test set")
    parser.add_argument("--out", default="target/time_to_accuracy", help="logs and results")
    parser.add_argument("--only", choices=["normzoo", "pytorch"], help="run one side")
    parser.add_argument("--run-to-end", action="store_true", help="finish every epoch")
    parser.add_argument(
        "--normzoo-bin",
        default="target/release/examples/resnet_cifar",
        help="the built resnet_cifar example",
    )
    parser.add_argument("--pytorch-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--artifact-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pytorch_worker:
        return pytorch_worker(args)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = ["--epochs", str(args.epochs), "--lr", str(args.lr)]
    recipe += ["--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    recipe += ["--norm", args.norm]
    data_dir = ["--data-dir", args.data_dir] if args.data_dir else []
    for flag, limit in (("--limit-train", args.limit_train), ("--limit-test", args.limit_test)):
        if limit:
            recipe += [flag, str(limit)]
    sides = {
        "normzoo": (
            [args.normzoo_bin, "--dataset", "fashion-mnist", *recipe, *data_dir]
            + ["--artifact-dir", str(out / "normzoo")]
        ),
        "pytorch": (
            [sys.executable, __file__, "--pytorch-worker", *recipe, *data_dir]
            + ["--artifact-dir", str(out / "pytorch")]
        ),
    }
    results = []
    for name, command in sides.items():
        if args.only not in (None, name):
            continue
        run_dir = out / name
        if (run_dir / "metrics.csv").exists():
            sys.exit(f"{run_dir} holds an earlier run; remove it or choose another --out")
        results.append(
            timed_run(
                name,
                command,
                run_dir / "metrics.csv",
                args.target,
                args.run_to_end,
                out / f"{name}.log",
            )
        )
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n| side | minutes to {args.target:g}% | test accuracy by epoch (minutes) |")
    print("|---|---|---|")
    for result in results:
        reached = result["seconds_to_target"]
        minutes = f"{reached / 60:.1f}" if reached is not None else "not reached"
        curve = ", ".join(
            f"{e['accuracy']:.2f}% ({e['seconds'] / 60:.1f})" for e in result["epochs"]
        )
        print(f"| {result['name']} | {minutes} | {curve} |")


if __name__ == "__main__":
    main()
