//! The `resnet_cifar` example as a user runs it: a smoke run on a tiny synthetic subset, a run
//! killed mid-epoch and resumed, and every kind of bad input answered with a clear error and
//! no panic.
//!
//! `cargo test` builds the examples before it runs the tests; these run the built binary.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_clear_error, run, text};

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::ModuleRecord;
use burn::tensor::Tensor;
use normzoo::models::{ResNetConfig, TorchvisionWeights};
use normzoo::train::metrics::{MetricRow, read_metrics_csv};
use normzoo::train::{Classifier, RunConfig, RunReport, cifar_model, data::CifarDataset};

/// The built `resnet_cifar` example, on the first compiled backend.
fn example() -> Command {
    common::example("resnet_cifar")
}

/// A tiny synthetic run: ResNet18 at full width, a few small batches per epoch.
fn tiny_run(command: &mut Command, artifacts: &Path, limit_train: usize, epochs: usize) {
    command.args([
        "--dataset",
        "synthetic",
        "--limit-train",
        &limit_train.to_string(),
        "--limit-test",
        "32",
        "--batch-size",
        "16",
        "--epochs",
        &epochs.to_string(),
        "--lr",
        "0.01",
        "--num-workers",
        "1",
        "--artifact-dir",
        artifacts.to_str().expect("a UTF-8 temp path"),
    ]);
}

/// The mean of `metric` in `split` for each epoch, in epoch order.
fn per_epoch(rows: &[MetricRow], split: &str, metric: &str) -> Vec<(usize, f64)> {
    rows.iter()
        .filter(|row| row.split == split && row.metric == metric)
        .map(|row| (row.epoch, row.value))
        .collect()
}

fn report(artifacts: &Path) -> RunReport {
    let text = fs::read_to_string(artifacts.join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("a report")
}

#[test]
fn a_tiny_synthetic_run_learns_and_leaves_its_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("run");
    let mut command = example();
    tiny_run(&mut command, &artifacts, 64, 4);
    let output = run(&mut command);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Test accuracy:"));
    // The first line says which device it runs on, and why.
    let first = stdout.lines().next().unwrap_or_default();
    let backend = normzoo::backend::COMPILED_BACKENDS[0];
    assert_eq!(first, format!("device: {backend} (as asked)"), "{stdout}");
    // Not a terminal: progress as readable lines, a summary per split, no debug dumps.
    assert!(stdout.contains("training for 4 epochs"), "{stdout}");
    for epoch in 1..=4 {
        for split in ["train", "valid"] {
            let line = format!("epoch {epoch}/4 {split}  done in ");
            assert!(stdout.contains(&line), "no `{line}` in {stdout}");
        }
    }
    assert!(stdout.contains("  accuracy "), "{stdout}");
    assert!(!stdout.contains("ProgressSnapshot"), "{stdout}");

    for file in ["config.json", "metrics.csv", "model.bpk", "report.json"] {
        assert!(artifacts.join(file).is_file(), "{file} is missing");
    }
    for kind in ["model", "optim", "scheduler"] {
        let checkpoint = artifacts.join("checkpoint").join(format!("{kind}-4.bpk"));
        assert!(checkpoint.is_file(), "{} is missing", checkpoint.display());
    }

    let rows = read_metrics_csv(&artifacts.join("metrics.csv")).unwrap();
    let loss = per_epoch(&rows, "train", "Loss");
    assert_eq!(
        loss.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(
        loss[3].1 < loss[0].1,
        "the training loss did not fall: {loss:?}"
    );
    assert_eq!(per_epoch(&rows, "valid", "Accuracy").len(), 4);
    assert!(!per_epoch(&rows, "train", "Throughput").is_empty());

    let report = report(&artifacts);
    assert_eq!(report.epochs_completed, 4);
    assert_eq!((report.train_images, report.test_images), (64, 32));
    assert!((0.0..=100.0).contains(&report.test_accuracy));
    let training_mode = report
        .test_accuracy_training_mode
        .expect("training-mode accuracy");
    assert!((0.0..=100.0).contains(&training_mode));
    assert!(
        stdout.contains("In training mode (each test batch of 16"),
        "{stdout}"
    );
    assert!(!report.interrupted);

    // A second fresh run into the same directory is refused and changes nothing.
    let before = fs::read(artifacts.join("model.bpk")).unwrap();
    let mut again = example();
    tiny_run(&mut again, &artifacts, 64, 4);
    assert_clear_error(&run(&mut again), "already holds a training run");
    assert_eq!(fs::read(artifacts.join("model.bpk")).unwrap(), before);
}

/// `--devices` with one CPU backend named twice: two burn-train workers, each taking half of
/// every epoch (32 images: two batches of 16), so an epoch is two steps, not four. BatchNorm's
/// running statistics move once per step, by the mean of the two workers' batches: every
/// layer of the saved model counts 2 epochs × 2 steps.
#[test]
fn a_data_parallel_run_splits_each_epoch_between_the_devices() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("run");
    let backend = normzoo::backend::COMPILED_BACKENDS[0];
    let mut command = common::example_choosing_its_device("resnet_cifar");
    command.args(["--devices", &format!("{backend},{backend}")]);
    tiny_run(&mut command, &artifacts, 64, 2);
    command.args(["--width", "8"]);
    let output = run(&mut command);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<_> = stdout.lines().take(3).collect();
    let device = format!("device: {backend} (as asked)");
    let expected = [
        device.as_str(),
        device.as_str(),
        "data-parallel on 2 devices: each step runs a batch of 16 on each",
    ];
    assert_eq!(lines, expected, "{stdout}");
    let report = report(&artifacts);
    assert_eq!((report.epochs_completed, report.train_images), (2, 64));

    let config = RunConfig::load(&artifacts).unwrap();
    let device = normzoo::backend::device(backend).unwrap();
    let record = ModuleRecord::load(artifacts.join("model.bpk")).unwrap();
    let model = Classifier::new(config.build_model(&device).unwrap()).load_record(record);
    let counts = batches_tracked(&model);
    assert_eq!(counts.len(), 20, "ResNet18 has 20 BatchNorm layers");
    assert!(counts.iter().all(|&count| count == 4.0), "{counts:?}");

    let mut both = example();
    both.args(["--devices", &format!("{backend},{backend}")]);
    assert_clear_error(&run(&mut both), "--devices");
}

/// Every `num_batches_tracked` of `model` (its only one-value float tensors).
fn batches_tracked<M: Module>(model: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.val().shape().num_elements() == 1 {
                self.0.push(param.val().into_scalar());
            }
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

/// Fashion-MNIST, as installed by `apt-get install dataset-fashion-mnist`: the run reads it
/// from where Debian puts it, and says which dataset a full epoch was estimated for. With
/// layer norm, which keeps no running statistics, training and evaluation mode score alike. A
/// narrow ResNet18 and the augmentation flags (erasing too) are saved with the run.
#[test]
fn a_tiny_fashion_mnist_run() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("run");
    let mut command = example();
    tiny_run(&mut command, &artifacts, 32, 1);
    command.args(["--dataset", "fashion-mnist", "--norm", "layer2d"]);
    command.args(["--width", "8", "--crop-padding", "1", "--flip", "false"]);
    command.args(["--erase", "0.5"]);
    let output = run(&mut command);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("a full fashion-mnist epoch (60000 images)"),
        "{}",
        text(&output.stdout)
    );
    let config = RunConfig::load(&artifacts).unwrap();
    assert_eq!(
        config.dataset,
        normzoo::train::DatasetSource::FashionMnist { dir: None }
    );
    assert_eq!(
        (config.width, config.crop_padding, config.horizontal_flip),
        (Some(8), Some(1), Some(false))
    );
    assert_eq!(config.erase_probability, Some(0.5));
    let report = report(&artifacts);
    assert_eq!((report.train_images, report.test_images), (32, 32));
    assert_eq!(
        report.test_accuracy_training_mode,
        Some(report.test_accuracy)
    );
}

#[test]
fn a_run_starts_from_what_fits_of_a_torchvision_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // ImageNet ResNet18's layout: all but the 7×7 stem and the 1000-class head fit the CIFAR one.
    let imagenet = dir.path().join("resnet18.safetensors");
    let device = burn::tensor::Device::default();
    ResNetConfig::resnet18(1000)
        .init(&device)
        .unwrap()
        .save_torchvision(&imagenet)
        .unwrap();
    let artifacts = dir.path().join("run");
    let mut command = example();
    tiny_run(&mut command, &artifacts, 16, 1);
    command.args(["--pretrained", imagenet.to_str().unwrap()]);
    let output = run(&mut command);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert!(text(&output.stdout).contains("Started from"));
    let loaded = report(&artifacts)
        .pretrained
        .expect("the report says what was loaded");
    assert!(loaded.starts_with("loaded 119 tensors"), "{loaded}");
    assert!(
        loaded.contains("(1000 classes in the checkpoint, 10 in the model)"),
        "{loaded}"
    );
    assert!(
        loaded.contains("conv1.weight: model [64, 3, 3, 3], checkpoint [64, 3, 7, 7]"),
        "{loaded}"
    );

    // A checkpoint of which nothing fits is refused before anything is written.
    let narrow = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/checkpoints/resnet18_width4.pth");
    let artifacts = dir.path().join("narrow");
    let mut command = example();
    tiny_run(&mut command, &artifacts, 16, 1);
    command.args(["--pretrained", narrow.to_str().unwrap()]);
    assert_clear_error(&run(&mut command), "nothing in it fits resnet18");
    assert!(!artifacts.exists());
}

#[test]
fn a_run_killed_mid_epoch_resumes_from_its_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("run");
    let mut command = example();
    tiny_run(&mut command, &artifacts, 192, 3);
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the example starts");

    // Kill it once epoch 1 is checkpointed and epoch 2 has logged a batch.
    let checkpoint_1 = artifacts.join("checkpoint").join("model-1.bpk");
    let epoch_2 = artifacts.join("train").join("epoch-2");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !(checkpoint_1.is_file() && epoch_2.is_dir()) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "epoch 2 never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !artifacts.join("checkpoint").join("model-2.bpk").exists(),
        "epoch 2 finished before the kill: the test did not stop it mid-epoch"
    );
    assert!(!artifacts.join("model.bpk").exists());

    let mut resume = example();
    resume.args(["--resume", "--artifact-dir", artifacts.to_str().unwrap()]);
    let output = run(&mut resume);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));

    let report = report(&artifacts);
    assert_eq!(report.resumed_after_epoch, Some(1));
    assert_eq!(report.epochs_completed, 3);
    assert!(artifacts.join("model.bpk").is_file());

    // Epoch 1 was kept, not redone; the killed epoch 2 left no row; 2 and 3 were trained.
    let rows = read_metrics_csv(&artifacts.join("metrics.csv")).unwrap();
    let lr = per_epoch(&rows, "train", "Learning Rate");
    assert_eq!(lr.iter().map(|(e, _)| *e).collect::<Vec<_>>(), [1, 2, 3]);
    // The learning-rate schedule continued from the checkpoint: each epoch's mean is the
    // uninterrupted schedule's (a schedule restarted from scratch would repeat epoch 1's
    // warm-up in epoch 2).
    let config = RunConfig::load(&artifacts).unwrap();
    let steps_per_epoch = 192 / 16;
    let mut scheduler = config.lr_scheduler(3 * steps_per_epoch).unwrap();
    let schedule: Vec<f64> = (0..3 * steps_per_epoch)
        .map(|_| scheduler.step().base())
        .collect();
    for (epoch, mean) in &lr {
        let steps = &schedule[(epoch - 1) * steps_per_epoch..epoch * steps_per_epoch];
        let expected = steps.iter().sum::<f64>() / steps_per_epoch as f64;
        assert!(
            (mean - expected).abs() < 1e-9,
            "epoch {epoch}: learning rate {mean}, the schedule says {expected}: {lr:?}"
        );
    }
    assert!((lr[1].1 - lr[0].1).abs() > 1e-3, "{lr:?}");
}

#[test]
fn resuming_checks_the_checkpoint_and_never_touches_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("run");

    // Nothing to resume.
    let mut command = example();
    command.args(["--resume", "--artifact-dir", artifacts.to_str().unwrap()]);
    assert_clear_error(&run(&mut command), "holds no run to resume");
    assert!(!artifacts.exists(), "a failed resume created the directory");

    // A corrupt checkpoint: the run's config, and garbage where epoch 1's model should be.
    fs::create_dir_all(artifacts.join("checkpoint")).unwrap();
    let config = RunConfig {
        dataset: normzoo::train::DatasetSource::Synthetic,
        limit_train: Some(32),
        ..Default::default()
    };
    fs::write(
        artifacts.join("config.json"),
        serde_json::to_string(&config).unwrap(),
    )
    .unwrap();
    for kind in ["model", "optim", "scheduler"] {
        fs::write(
            artifacts.join("checkpoint").join(format!("{kind}-1.bpk")),
            b"not a checkpoint",
        )
        .unwrap();
    }
    let listing = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        for entry in walk(dir) {
            files.push((entry.clone(), fs::read(&entry).unwrap()));
        }
        files.sort();
        files
    };
    let before = listing(&artifacts);
    let mut command = example();
    command.args(["--resume", "--artifact-dir", artifacts.to_str().unwrap()]);
    assert_clear_error(&run(&mut command), "model-1.bpk cannot be read");
    assert_eq!(
        listing(&artifacts),
        before,
        "the failed resume changed files"
    );

    // A setting that contradicts the saved run.
    let mut command = example();
    command.args([
        "--resume",
        "--model",
        "vgg16",
        "--artifact-dir",
        artifacts.to_str().unwrap(),
    ]);
    assert_clear_error(&run(&mut command), "--model: the run being resumed");
    assert_eq!(listing(&artifacts), before);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn bad_input_gets_a_clear_error_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("run");
    let artifacts = artifacts.to_str().unwrap();
    let case = |args: &[&str], expected: &str| {
        let mut command = example();
        command.args(args).args(["--artifact-dir", artifacts]);
        assert_clear_error(&run(&mut command), expected);
    };

    case(&["--model", "resnet50"], "resnet50");
    case(&["--norm", "batchy"], "batchy");
    case(&["--norm", "layer"], "does not apply");
    case(&["--norm", "group:7"], "divisible");
    case(&["--batch-size", "0"], "--batch-size");
    case(
        &["--model", "vgg16", "--width", "16"],
        "--width: applies to resnet18-cifar only, got --model vgg16",
    );
    case(&["--width", "0"], "--width: expected at least 1 channel");
    case(
        &["--crop-padding", "9"],
        "--crop-padding: expected at most 8",
    );
    case(
        &["--erase", "1.5"],
        "--erase: expected a probability in [0, 1], got 1.5",
    );
    case(
        &["--device", "tpu"],
        "`tpu` is not compiled into this build",
    );
    case(
        &["--data-dir", dir.path().join("missing").to_str().unwrap()],
        "does not exist",
    );
    case(
        &["--data-dir", dir.path().to_str().unwrap()],
        "holds no CIFAR-10 copy",
    );
    case(
        &[
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        "apt-get install dataset-fashion-mnist",
    );
    case(
        &[
            "--dataset",
            "synthetic",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        "--data-dir: a dataset directory was given with --dataset synthetic",
    );

    // A truncated binary batch.
    let batches = dir.path().join("batches");
    fs::create_dir_all(&batches).unwrap();
    fs::write(batches.join("data_batch_1.bin"), vec![0u8; 3073 + 100]).unwrap();
    case(&["--data-dir", batches.to_str().unwrap()], "truncated");
    assert!(
        CifarDataset::from_dir(&batches, normzoo::train::data::Split::Train).is_err(),
        "the library refuses it too"
    );
    assert!(
        !Path::new(artifacts).exists(),
        "a refused run wrote artifacts"
    );
}

/// The default device (`auto`) on a machine with no graphics driver (hidden as below) is flex,
/// and the first line says why.
#[cfg(feature = "wgpu")]
#[test]
fn without_an_adapter_the_default_device_is_flex_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("run");
    let mut command = common::example_choosing_its_device("resnet_cifar");
    tiny_run(&mut command, &artifacts, 64, 1);
    let output = run(command
        .env("VK_ICD_FILENAMES", dir.path().join("no-driver.json"))
        .env("VK_DRIVER_FILES", dir.path().join("no-driver.json"))
        .env(
            "__EGL_VENDOR_LIBRARY_FILENAMES",
            dir.path().join("no-egl.json"),
        ));
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert_eq!(
        stdout.lines().next(),
        Some("device: flex (wgpu finds no graphics adapter on this machine)"),
        "{stdout}"
    );
}

/// `--device wgpu` on a machine with no graphics driver (hidden here: no Vulkan driver
/// manifest, no EGL vendor library for the GL fallback) stops before touching any file, with
/// a message naming the driver to install and the CPU backend to use instead.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_without_an_adapter_names_the_missing_driver() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("run");
    let output = run(example()
        .args(["--device", "wgpu", "--dataset", "synthetic"])
        .args(["--artifact-dir", artifacts.to_str().unwrap()])
        .env("VK_ICD_FILENAMES", dir.path().join("no-driver.json"))
        .env("VK_DRIVER_FILES", dir.path().join("no-driver.json"))
        .env(
            "__EGL_VENDOR_LIBRARY_FILENAMES",
            dir.path().join("no-egl.json"),
        ));
    assert_clear_error(&output, "--device: wgpu: no graphics adapter found");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("apt-get install mesa-vulkan-drivers libvulkan1"),
        "{stderr}"
    );
    assert!(stderr.contains("choose `flex`"), "{stderr}");
    assert!(!artifacts.exists(), "a refused run wrote artifacts");
}

#[test]
fn a_run_saved_before_norm_config_held_the_layer_configs_still_loads() {
    // Written by `resnet_cifar --dataset fashion-mnist --norm batch --epochs 1 --limit-train
    // 512 --limit-test 256` when `NormConfig::Batch` held the hyper-parameters alone.
    let saved =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runs/before-norm-layer-configs");
    let config = RunConfig::load(&saved).unwrap();
    let expected = RunConfig {
        model: "resnet18".into(),
        norm: Some(normzoo::norm::NormConfig::batch()),
        dataset: normzoo::train::DatasetSource::FashionMnist { dir: None },
        epochs: 1,
        limit_train: Some(512),
        limit_test: Some(256),
        ..RunConfig::default()
    };
    assert_eq!(config, expected);
    // "resnet18" was `--model`'s name for what the registry calls resnet18-cifar.
    assert_eq!(cifar_model(&config.model).unwrap().name, "resnet18-cifar");
}
