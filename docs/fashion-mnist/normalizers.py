"""The normalizer table on Fashion-MNIST: ResNet18-CIFAR with each normalizer at batch 128 and
at batch 8, VGG16-BN and the CIFAR ConvNeXt with their own, all trained by the `resnet_cifar`
example on the same seeded subset; then the table (`normalizers.md`), the numbers
(`normalizers.csv`) and the test curves (`normalizers.png`) beside this script.

    cargo build --example resnet_cifar           # or --release, with --bin below
    python3 docs/fashion-mnist/normalizers.py    # 2 hours on a 2-core Xeon (dev profile)

Each run goes into `--runs/<name>`; a run whose `report.json` exists is not run again, so the
script can be stopped and started again (a half-finished run is resumed with the example's
`--resume`). `--only NAME…` runs some of them, `--table-only` only writes the outputs.

The recipe is the example's (SGD, Nesterov momentum 0.9, weight decay 5e-4, one-cycle learning
rate, crops and flips); at batch 8 the peak learning rate is scaled with the batch, 0.1 × 8/128
(the linear scaling rule), so that an epoch moves the weights about as far at either size.
Needs matplotlib for the figure.
"""

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PEAK_LR = 0.1
FULL_BATCH = 128
SMALL_BATCH = 8
TEST_SPLIT = "valid"  # burn-train's name for the split scored after each epoch

NORMS = ("batch", "group:32", "layer2d", "instance", "none")
# (name, model, normalizer (None: the model's own), batch size)
RUNS = [
    *[(f"resnet18-{norm.replace(':', '')}-b{FULL_BATCH}", "resnet18", norm, FULL_BATCH)
      for norm in NORMS],
    ("vgg16-bn-b128", "vgg16-bn", None, FULL_BATCH),
    ("convnext-b128", "convnext", None, FULL_BATCH),
    *[(f"resnet18-{norm.replace(':', '')}-b{SMALL_BATCH}", "resnet18", norm, SMALL_BATCH)
      for norm in NORMS],
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=str(ROOT / "target/debug/examples/resnet_cifar"))
    parser.add_argument("--runs", default=str(ROOT / "target/runs/fashion-mnist-normalizers"))
    parser.add_argument("--limit-train", type=int, default=3000)
    parser.add_argument("--limit-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", nargs="*", help="run only these (names as in the table)")
    parser.add_argument("--table-only", action="store_true")
    return parser.parse_args()


def learning_rate(batch):
    return PEAK_LR * batch / FULL_BATCH


def train(args, name, model, norm, batch):
    directory = Path(args.runs) / name
    if (directory / "report.json").exists():
        return
    command = [args.bin, "--dataset", "fashion-mnist", "--model", model,
               "--batch-size", str(batch), "--lr", str(learning_rate(batch)),
               "--epochs", str(args.epochs), "--seed", str(args.seed),
               "--limit-train", str(args.limit_train), "--limit-test", str(args.limit_test),
               "--artifact-dir", str(directory)]
    if norm:
        command += ["--norm", norm]
    if (directory / "config.json").exists():
        command.append("--resume")
    print(f"== {name}: {' '.join(command)}", flush=True)
    start = time.time()
    with open(Path(args.runs) / f"{name}.log", "a") as log:
        status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    outcome = "" if status == 0 else f", failed with status {status} (see {name}.log)"
    print(f"   {time.time() - start:.0f} s{outcome}", flush=True)


def read_run(args, name, model, norm, batch):
    directory = Path(args.runs) / name
    report = json.loads((directory / "report.json").read_text())
    curves = {"test": {}, "train": {}}
    throughput = []
    with open(directory / "metrics.csv") as file:
        for row in csv.DictReader(file):
            epoch, value = int(row["epoch"]), float(row["value"])
            if row["metric"] == "Accuracy":
                curves["test" if row["split"] == TEST_SPLIT else "train"][epoch] = value
            elif row["metric"] == "Throughput" and row["split"] == "train":
                throughput.append(value)
    last = max(curves["train"])
    return {
        "name": name,
        "model": model,
        "norm": norm or {"vgg16-bn": "batch", "convnext": "layer2d"}[model],
        "batch": batch,
        "lr": learning_rate(batch),
        "test": report["test_accuracy"],
        "test_training_mode": report["test_accuracy_training_mode"],
        "train_last_epoch": curves["train"][last],
        "test_curve": [curves["test"][e] for e in sorted(curves["test"])],
        "minutes": report["seconds"] / 60,
        "images_per_second": throughput[-1] if throughput else float("nan"),
    }


def write_outputs(args, results):
    fields = ["name", "model", "norm", "batch", "lr", "test", "test_training_mode",
              "train_last_epoch", "minutes", "images_per_second"]
    with open(HERE / "normalizers.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for result in results:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v)
                             for k, v in result.items()})

    lines = [
        "| model | normalizer | batch | peak lr | test accuracy | in training mode | "
        "train/eval gap | train accuracy, last epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        gap = r["test_training_mode"] - r["test"]
        lines.append(
            f"| {r['model']} | {r['norm']} | {r['batch']} | {r['lr']:g} | {r['test']:.1f}% | "
            f"{r['test_training_mode']:.1f}% | {gap:+.1f} | {r['train_last_epoch']:.1f}% |")
    (HERE / "normalizers.md").write_text(
        f"Fashion-MNIST, a seeded subset of {args.limit_train} training and {args.limit_test} "
        f"test images (`--seed {args.seed}`), {args.epochs} epochs; written by "
        "`normalizers.py`.\n\n" + "\n".join(lines) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, batch in zip(axes, (FULL_BATCH, SMALL_BATCH)):
        for r in (r for r in results if r["batch"] == batch):
            label = f"{r['model']}, {r['norm']}"
            style = "-" if r["model"] == "resnet18" else "--"
            epochs = range(1, len(r["test_curve"]) + 1)
            axis.plot(epochs, r["test_curve"], style, marker="o", label=label)
        axis.set_title(f"batch {batch}, peak learning rate {learning_rate(batch):g}")
        axis.set_xlabel("epoch")
        axis.set_xticks(range(1, args.epochs + 1))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[0].set_ylabel("test accuracy (%)")
    figure.suptitle(f"Fashion-MNIST, {args.limit_train} training images, "
                    f"{args.limit_test} test images")
    figure.tight_layout()
    figure.savefig(HERE / "normalizers.png", dpi=100)


def main():
    args = parse_args()
    selected = [run for run in RUNS if not args.only or run[0] in args.only]
    if not args.table_only:
        Path(args.runs).mkdir(parents=True, exist_ok=True)
        for run in selected:
            train(args, *run)
    done = [run for run in RUNS if (Path(args.runs) / run[0] / "report.json").exists()]
    if not done:
        sys.exit("no finished runs to tabulate")
    write_outputs(args, [read_run(args, *run) for run in done])


if __name__ == "__main__":
    main()
