"""The normalizer table on Fashion-MNIST: ResNet18-CIFAR with each normalizer at batch 128 and
at batch 8, VGG16-BN and the CIFAR ConvNeXt with their own, all trained by the `resnet_cifar`
example on the same seeded subset; then the table (`normalizers.md`), the numbers
(`normalizers.csv`) and the test curves (`normalizers.png`) beside this script.

    cargo build --example resnet_cifar           # or --release, with --bin below
    python3 docs/fashion-mnist/normalizers.py    # 2 hours on a 2-core Xeon (dev profile)

Runs go into `--runs/<name>` and resume (see `runs.py`); `--only NAME…` runs some of them,
`--table-only` only writes the outputs.

The recipe is the example's (SGD, Nesterov momentum 0.9, weight decay 5e-4, one-cycle learning
rate, crops and flips); at batch 8 the peak learning rate is scaled with the batch, 0.1 × 8/128
(the linear scaling rule), so that an epoch moves the weights about as far at either size.
Needs matplotlib for the figure.
"""

import argparse
import sys
from pathlib import Path

from runs import add_study_arguments, finished, read_run, train, write_csv

HERE = Path(__file__).resolve().parent
PEAK_LR = 0.1
FULL_BATCH = 128
SMALL_BATCH = 8

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
    add_study_arguments(parser, "fashion-mnist-normalizers")
    parser.add_argument("--limit-train", type=int, default=3000)
    parser.add_argument("--limit-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    return parser.parse_args()


def learning_rate(batch):
    return PEAK_LR * batch / FULL_BATCH


def flags(args, model, norm, batch):
    flags = ["--model", model, "--batch-size", str(batch), "--lr", str(learning_rate(batch)),
             "--epochs", str(args.epochs), "--seed", str(args.seed),
             "--limit-train", str(args.limit_train), "--limit-test", str(args.limit_test)]
    return flags + (["--norm", norm] if norm else [])


def result(args, name, model, norm, batch):
    run = read_run(args.runs, name)
    run.update(
        name=name,
        model=model,
        norm=norm or {"vgg16-bn": "batch", "convnext": "layer2d"}[model],
        batch=batch,
        lr=learning_rate(batch),
        train_last_epoch=run["train_curve"][-1],
    )
    return run


def write_outputs(args, results):
    fields = ["name", "model", "norm", "batch", "lr", "test", "test_training_mode",
              "train_last_epoch", "minutes", "images_per_second"]
    write_csv(HERE / "normalizers.csv", results, fields)

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
            train(args.bin, args.runs, run[0], flags(args, *run[1:]))
    done = [run for run in RUNS if finished(args.runs, run[0])]
    if not done:
        sys.exit("no finished runs to tabulate")
    write_outputs(args, [result(args, *run) for run in done])


if __name__ == "__main__":
    main()
