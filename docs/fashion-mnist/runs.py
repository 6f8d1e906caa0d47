"""Running the `resnet_cifar` example from a script and reading back what a run left: what the
Fashion-MNIST studies beside this file (`normalizers.py`, `recipe.py`, `headline.py`) share.

A run goes into `<runs>/<name>`; one whose `report.json` exists is not run again, and one that
stopped half-way is continued with the example's `--resume`, so a study can be stopped and
started again.
"""

import csv
import json
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = ROOT / "target/debug/examples/resnet_cifar"
TEST_SPLIT = "valid"  # burn-train's name for the split scored after each epoch


def add_study_arguments(parser, runs):
    """The arguments every study takes: the example binary, where its runs go (`runs`, under
    `target/runs`, by default), the seed, `--only` and `--table-only`."""
    parser.add_argument("--bin", default=str(DEFAULT_BIN))
    parser.add_argument("--runs", default=str(ROOT / "target/runs" / runs))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", nargs="*", help="run only these (names as in the table)")
    parser.add_argument("--table-only", action="store_true")


def train(binary, runs, name, flags):
    """Trains run `name` on Fashion-MNIST with the example's `flags`, its output in
    `<runs>/<name>.log`; nothing when it has finished already."""
    directory = Path(runs) / name
    if (directory / "report.json").exists():
        return
    command = [str(binary), "--dataset", "fashion-mnist", *flags,
               "--artifact-dir", str(directory)]
    if (directory / "config.json").exists():
        command.append("--resume")
    print(f"== {name}: {' '.join(command)}", flush=True)
    start = time.time()
    with open(Path(runs) / f"{name}.log", "a") as log:
        status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    outcome = "" if status == 0 else f", failed with status {status} (see {name}.log)"
    print(f"   {time.time() - start:.0f} s{outcome}", flush=True)


def finished(runs, name):
    return (Path(runs) / name / "report.json").exists()


def read_curves(runs, name):
    """What a run has written so far: the test and training accuracy after each epoch, and its
    training throughput per epoch."""
    curves = {"test": {}, "train": {}}
    throughput = {}
    with open(Path(runs) / name / "metrics.csv") as file:
        for row in csv.DictReader(file):
            epoch, value = int(row["epoch"]), float(row["value"])
            if row["metric"] == "Accuracy":
                curves["test" if row["split"] == TEST_SPLIT else "train"][epoch] = value
            elif row["metric"] == "Throughput" and row["split"] == "train":
                throughput[epoch] = value
    return {
        "test_curve": [curves["test"][e] for e in sorted(curves["test"])],
        "train_curve": [curves["train"][e] for e in sorted(curves["train"])],
        "throughput": [throughput[e] for e in sorted(throughput)],
    }


def read_run(runs, name):
    """What a finished run reports: the test accuracy in evaluation and in training mode, the
    test and training accuracy after each epoch, its minutes and its last training
    throughput."""
    report = json.loads((Path(runs) / name / "report.json").read_text())
    curves = read_curves(runs, name)
    return {
        "test": report["test_accuracy"],
        "test_training_mode": report["test_accuracy_training_mode"],
        "test_curve": curves["test_curve"],
        "train_curve": curves["train_curve"],
        "minutes": report["seconds"] / 60,
        "images_per_second": curves["throughput"][-1] if curves["throughput"] else float("nan"),
    }


def write_csv(path, rows, fields):
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v)
                             for k, v in row.items()})
