"""Choosing the Fashion-MNIST recipe by measurement: a narrow ResNet18 (`--width 16`, 1/16 of
the multiply-adds) trained by the `resnet_cifar` example on a seeded 10,000-image subset for 8
epochs, changing one setting of the recipe at a time (the peak learning rate, the crops, the
flips, the epochs), once the seed, and 16 epochs with and without augmentation; then the table (`recipe.md`), the numbers (`recipe.csv`)
and the test curves (`recipe.png`) beside this script.

    cargo build --example resnet_cifar           # or --release, with --bin below
    python3 docs/fashion-mnist/recipe.py         # 1 h 40 min on a 2-core Xeon (dev profile)

Runs go into `--runs/<name>` and resume (see `runs.py`); `--only NAME…` runs some of them,
`--table-only` only writes the outputs. Needs matplotlib for the figure.
"""

import argparse
import sys
from pathlib import Path

from runs import add_study_arguments, finished, read_run, train, write_csv

HERE = Path(__file__).resolve().parent

# (name, what changes from the recipe, its flags); the recipe: peak lr 0.1, crops of the input
# padded by 2, flips, batch 128, SGD with Nesterov momentum 0.9, weight decay 5e-4, one cycle.
RUNS = [
    ("recipe", "the recipe", []),
    ("lr0.05", "peak lr 0.05", ["--lr", "0.05"]),
    ("lr0.2", "peak lr 0.2", ["--lr", "0.2"]),
    ("no-augmentation", "no crops, no flips", ["--crop-padding", "0", "--flip", "false"]),
    ("flips-only", "no crops", ["--crop-padding", "0"]),
    ("crops-only", "no flips", ["--flip", "false"]),
    ("seed43", "another seed (weights, order, augmentation)", ["--seed", "43"]),
    ("epochs16", "16 epochs", ["--epochs", "16"]),
    ("epochs16-no-augmentation", "16 epochs, no crops, no flips",
     ["--epochs", "16", "--crop-padding", "0", "--flip", "false"]),
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_study_arguments(parser, "fashion-mnist-recipe")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--limit-train", type=int, default=10000)
    parser.add_argument("--limit-test", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=8)
    return parser.parse_args()


def flags(args, extra):
    common = ["--width", str(args.width), "--epochs", str(args.epochs), "--seed", str(args.seed),
              "--limit-train", str(args.limit_train), "--limit-test", str(args.limit_test)]
    return common + extra  # the example takes the last of a repeated flag


def write_outputs(args, results):
    fields = ["name", "change", "test", "test_training_mode", "train_last_epoch", "minutes",
              "images_per_second"]
    write_csv(HERE / "recipe.csv", results, fields)

    best = max(r["test"] for r in results)
    lines = ["| run | change from the recipe | test accuracy | best epoch's | "
             "train accuracy, last epoch | minutes |",
             "|---|---|---|---|---|---|"]
    for r in results:
        mark = "**" if r["test"] == best else ""
        lines.append(
            f"| {r['name']} | {r['change']} | {mark}{r['test']:.2f}%{mark} | "
            f"{max(r['test_curve']):.2f}% | {r['train_last_epoch']:.1f}% | "
            f"{r['minutes']:.1f} |")
    (HERE / "recipe.md").write_text(
        f"ResNet18-CIFAR at width {args.width}, Fashion-MNIST: a seeded subset of "
        f"{args.limit_train} training and {args.limit_test} test images (`--seed {args.seed}`), "
        f"{args.epochs} epochs unless the run changes them; written by `recipe.py`.\n\n"
        + "\n".join(lines) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for r in results:
        epochs = range(1, len(r["test_curve"]) + 1)
        style = "-" if r["name"].startswith(("recipe", "seed", "epochs")) else "--"
        axis.plot(epochs, r["test_curve"], style, marker=".", label=r["change"])
    axis.set_xlabel("epoch")
    axis.set_ylabel("test accuracy (%)")
    axis.set_ylim(bottom=max(0, min(min(r["test_curve"][1:] or r["test_curve"])
                                    for r in results) - 2))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"ResNet18 at width {args.width}, {args.limit_train} Fashion-MNIST images")
    figure.tight_layout()
    figure.savefig(HERE / "recipe.png", dpi=100)


def main():
    args = parse_args()
    selected = [run for run in RUNS if not args.only or run[0] in args.only]
    if not args.table_only:
        Path(args.runs).mkdir(parents=True, exist_ok=True)
        for name, _, extra in selected:
            train(args.bin, args.runs, name, flags(args, extra))
    results = []
    for name, change, _ in RUNS:
        if finished(args.runs, name):
            run = read_run(args.runs, name)
            run.update(name=name, change=change, train_last_epoch=run["train_curve"][-1])
            results.append(run)
    if not results:
        sys.exit("no finished runs to tabulate")
    write_outputs(args, results)


if __name__ == "__main__":
    main()
