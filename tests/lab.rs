//! The lab at `--quick` size: every experiment runs, writes figures that are real images (not
//! blank) and CSVs, the report gathers them, and the effects that are robust even at this size
//! hold.

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use normzoo::backend::test_devices;
use normzoo::lab::{Experiment, Lab, LabData, REPORT_FILE, Section, Size, write_report};

/// The lab's default images: Fashion-MNIST where it is installed (as in CI), read once.
fn data() -> LabData {
    static DATA: OnceLock<LabData> = OnceLock::new();
    DATA.get_or_init(|| LabData::installed_or_generated().unwrap_or_else(|err| panic!("{err}")))
        .clone()
}

fn quick_lab(out: &Path) -> Lab {
    let (_, device) = test_devices().remove(0);
    let mut lab = Lab::new(out, Size::Quick, device);
    lab.progress = false;
    lab.data = data();
    lab
}

/// A PNG or GIF that decodes, is of a sensible size and shows more than a few colours.
fn assert_real_image(path: &Path) {
    let image = image::open(path)
        .unwrap_or_else(|err| panic!("{} does not decode: {err}", path.display()))
        .into_rgb8();
    let (width, height) = image.dimensions();
    assert!(
        width >= 200 && height >= 200,
        "{}: {width}×{height}",
        path.display()
    );
    let mut colors: Vec<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    colors.sort_unstable();
    colors.dedup();
    assert!(
        colors.len() > 20,
        "{} is nearly blank ({} colours)",
        path.display(),
        colors.len()
    );
}

fn assert_files(section: &Section) {
    let figures = section
        .files
        .iter()
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("png" | "gif")));
    let mut count = 0;
    for figure in figures {
        assert_real_image(figure);
        count += 1;
    }
    assert!(count > 0, "{} drew no figure", section.title);
    let csvs: Vec<_> = section
        .files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    assert!(!csvs.is_empty(), "{} wrote no CSV", section.title);
    for csv in csvs {
        let text = fs::read_to_string(csv).unwrap();
        let mut lines = text.lines();
        let columns = lines.next().unwrap().split(',').count();
        assert!(columns == 3, "{}: header", csv.display());
        assert!(lines.clone().count() > 1, "{} has no rows", csv.display());
        for line in lines {
            // series (quoted when it holds a comma), x, y
            let fields: Vec<&str> = line.rsplitn(3, ',').collect();
            assert_eq!(fields.len(), 3, "{}: {line}", csv.display());
            for number in &fields[..2] {
                assert!(number.parse::<f64>().is_ok(), "{}: {line}", csv.display());
            }
        }
    }
}

#[test]
fn gradient_flow_is_even_with_normalization_and_not_without() {
    let dir = tempfile::tempdir().unwrap();
    let section = Experiment::Gradients.run(&quick_lab(dir.path())).unwrap();
    assert_files(&section);
    let none = section.finding("output spread at init, none");
    let batch = section.finding("output spread at init, batchnorm");
    let layer = section.finding("output spread at init, layernorm");
    assert!(none > 100.0 * batch, "none {none:e}, batch {batch:e}");
    assert!(none > 100.0 * layer, "none {none:e}, layer {layer:e}");
}

#[test]
fn batch_norm_outputs_depend_on_the_mode_and_layer_norm_outputs_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let section = Experiment::TrainEval.run(&quick_lab(dir.path())).unwrap();
    assert_files(&section);
    let batch = section.finding("fresh model train/eval max logit difference, batch");
    let layer = section.finding("fresh model train/eval max logit difference, layer");
    assert!(batch > 1e-2, "BatchNorm's modes differ by only {batch}");
    assert!(layer < 1e-5, "LayerNorm's modes differ by {layer}");
}

#[test]
fn batch_size_one_with_batch_norm_is_refused_and_the_rest_runs() {
    let dir = tempfile::tempdir().unwrap();
    let section = Experiment::BatchSize.run(&quick_lab(dir.path())).unwrap();
    assert_files(&section);
    assert_eq!(section.finding("refused, batchnorm, batch 1"), 1.0);
    assert!(
        section
            .body
            .contains("error: BatchNorm: Expected more than 1 value per channel when training"),
        "{}",
        section.body
    );
    for norm in ["groupnorm(8)", "layernorm"] {
        for batch in [32, 8, 2, 1] {
            let gap = section.finding(&format!("train/eval gap, {norm}, batch {batch}"));
            assert_eq!(
                gap, 0.0,
                "{norm} at batch {batch}: per-sample statistics have no gap"
            );
        }
    }
}

#[test]
fn convergence_runs_every_normalizer_and_the_report_gathers_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let lab = quick_lab(dir.path());
    let section = Experiment::Convergence.run(&lab).unwrap();
    assert_files(&section);
    // The section and the experiment's directory say which images it trained on.
    assert!(
        section.body.contains(&lab.data.images()),
        "{}",
        section.body
    );
    let data = fs::read_to_string(dir.path().join("convergence").join("data.txt")).unwrap();
    assert_eq!(data, lab.data.name());
    for norm in [
        "none",
        "batchnorm",
        "layernorm",
        "groupnorm(8)",
        "instancenorm",
    ] {
        let accuracy = section.finding(&format!("final accuracy, {norm}, lr 0.05"));
        assert!((0.0..=100.0).contains(&accuracy), "{norm}: {accuracy}");
    }

    let report = fs::read_to_string(write_report(dir.path()).unwrap()).unwrap();
    assert!(report.contains(&format!("## {}", section.title)));
    assert!(report.contains("convergence/convergence.png"));
    // The experiments not run here are listed with their command.
    assert!(report.contains("`cargo run --release --example lab -- gradients`"));
    assert_eq!(dir.path().join(REPORT_FILE), dir.path().join("REPORT.md"));
}

#[test]
fn swap_trains_the_resnet_with_each_normalizer_at_both_batch_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let section = Experiment::Swap.run(&quick_lab(dir.path())).unwrap();
    assert_files(&section);
    for norm in [
        "batchnorm",
        "layernorm (c×h×w)",
        "layernorm2d (channels)",
        "groupnorm(4)",
    ] {
        for batch in [32, 4] {
            let loss = section.finding(&format!("final loss, {norm}, batch {batch}"));
            assert!(loss.is_finite() && loss > 0.0, "{norm} at {batch}: {loss}");
        }
    }
}

#[test]
fn layer_norm_gamma_sets_how_much_each_residual_branch_adds_at_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let section = Experiment::Init.run(&quick_lab(dir.path())).unwrap();
    assert_files(&section);
    let std = |init: &str| section.finding(&format!("stream std at init, {init}"));
    let (one, tenth, zero) = (
        std("γ = 1, β = 0"),
        std("γ = 0.1, β = 0"),
        std("γ = 0, β = 0"),
    );
    assert!(
        one > tenth && tenth > zero,
        "γ 1: {one}, 0.1: {tenth}, 0: {zero}"
    );
    // β = 1 adds one per block to the stream: 8 blocks at quick size.
    let mean = |init: &str| section.finding(&format!("stream mean at init, {init}"));
    let shift = mean("γ = 1, β = 1") - mean("γ = 1, β = 0");
    assert!(
        (shift - 8.0).abs() < 1e-3,
        "β = 1 shifted the stream by {shift}"
    );
}

#[test]
fn distributions_are_animated_and_batch_norm_keeps_every_layer_at_one_scale() {
    let dir = tempfile::tempdir().unwrap();
    let section = Experiment::Distributions
        .run(&quick_lab(dir.path()))
        .unwrap();
    assert_files(&section);
    let gif = section
        .files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "gif"))
        .expect("an animated GIF");
    let decoder =
        image::codecs::gif::GifDecoder::new(std::io::BufReader::new(fs::File::open(gif).unwrap()))
            .unwrap();
    use image::AnimationDecoder;
    assert_eq!(decoder.into_frames().count(), 4, "one frame per snapshot");
    // PyTorch's default initialisation shrinks each plain ReLU layer's output; BatchNorm
    // rescales every layer to unit variance.
    let none = section.finding("spread last/first layer at init, none");
    let batch = section.finding("spread last/first layer at init, batchnorm");
    assert!(none < 0.5, "without normalization: {none}");
    assert!((0.5..2.0).contains(&batch), "with BatchNorm: {batch}");
}

#[test]
fn correlation_draws_the_unit_by_unit_heatmaps() {
    let dir = tempfile::tempdir().unwrap();
    let section = Experiment::Correlation.run(&quick_lab(dir.path())).unwrap();
    assert_files(&section);
    for norm in ["none", "layernorm"] {
        for when in ["at init", "after training"] {
            let r = section.finding(&format!("mean |r| {when}, {norm}"));
            assert!((0.0..=1.0).contains(&r), "{norm} {when}: {r}");
        }
    }
}

#[test]
fn sequences_train_the_lstm_and_the_transformer_with_each_normalizer() {
    let dir = tempfile::tempdir().unwrap();
    let section = Experiment::Sequences.run(&quick_lab(dir.path())).unwrap();
    assert_files(&section);
    for model in [
        "lstm, none",
        "lstm, layernorm",
        "lstm, batchnorm",
        "transformer, layernorm, pre-norm",
        "transformer, rmsnorm, post-norm",
        "transformer, batchnorm, pre-norm",
        "transformer, none, post-norm",
    ] {
        let accuracy = section.finding(&format!("accuracy, {model}"));
        assert!((0.0..=100.0).contains(&accuracy), "{model}: {accuracy}");
    }
}

#[test]
fn the_guide_cites_what_has_run_and_names_the_command_for_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let lab = quick_lab(dir.path());
    Experiment::BatchSize.run(&lab).unwrap();
    let section = Experiment::Advise.run(&lab).unwrap();
    assert_eq!(section.finding("rows citing a measurement"), 1.0);
    assert!(
        section
            .body
            .contains("MLP test accuracy at batch 2: BatchNorm "),
        "{}",
        section.body
    );
    // Each number names the images it was measured on.
    let data = format!("({} images; [batch-size]", lab.data.name());
    assert!(section.body.contains(&data), "{}", section.body);
    assert!(
        section
            .body
            .contains("at batch 1 BatchNorm is refused (PyTorch's error)")
    );
    assert!(
        section
            .body
            .contains("not run yet: `cargo run --release --example lab -- sequences`")
    );
    assert!(
        section
            .body
            .contains("](#batch-size-batchnorm-against-groupnorm-and-layernorm))")
    );

    // A findings file the lab did not write is an error naming it.
    fs::create_dir_all(dir.path().join("swap")).unwrap();
    fs::write(dir.path().join("swap").join("findings.json"), "{").unwrap();
    let err = Experiment::Advise.run(&lab).unwrap_err().to_string();
    assert!(err.starts_with("cannot read "), "{err}");
    assert!(
        err.contains("findings.json: not a list of findings"),
        "{err}"
    );
}

#[test]
fn unknown_experiments_are_named_with_the_known_ones() {
    let err = "batchsize".parse::<Experiment>().unwrap_err().to_string();
    assert!(err.starts_with("unknown experiment `batchsize`: expected one of convergence, "));
    for experiment in Experiment::ALL {
        assert_eq!(experiment.name().parse::<Experiment>().unwrap(), experiment);
    }
}
