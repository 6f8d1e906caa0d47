//! ImageNet inference: torchvision's evaluation transform reproduced (checked against
//! torchvision's own output, `tests/fixtures/generate_imagenet.py`), and the `classify` and
//! `validate` examples as a user runs them, on full-size ResNet18 checkpoints in torchvision's
//! layout.

mod common;

use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use common::{Data, assert_clear_error, example, fixture_cases, fixture_path, run, text};
use normzoo::backend::test_devices;
use normzoo::models::{ResNet, ResNetConfig, TorchvisionWeights};
use normzoo::train::data::imagenet::{EvalTransform, imagenet_classes, top_classes};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    resize: u32,
    crop: u32,
    from_float: Data,
    from_uint8: Data,
}

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/imagenet"
    ))
}

fn values(tensor: Tensor<3>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// The largest `|actual − expected|`.
fn worst(actual: &[f32], expected: &[f32]) -> f32 {
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f32::max)
}

/// torchvision on a float image computes what we do (1e-5); on an 8-bit image it rounds the
/// resized pixels to 8 bits, at most half a level away. Odd sizes put the centre crop's
/// offset on .5 (7.5 and 6.5), where torchvision rounds to even: one off and every pixel moves.
#[test]
fn the_transform_is_torchvisions() {
    let cases: Vec<Case> = fixture_cases("imagenet/preprocess.json");
    assert_eq!(cases.len(), 2);
    // Half a level of 255, through the smallest standard deviation.
    let half_level = 0.5 / 255.0 / 0.224 + 1e-5;
    for case in &cases {
        let transform = EvalTransform::new(case.resize, case.crop).unwrap();
        for (backend, device) in test_devices() {
            let path = fixtures().join(format!("{}.png", case.name));
            let input = transform.open(&path, &device).unwrap();
            assert_eq!(input.dims().to_vec(), case.from_float.shape);
            let actual = values(input);
            let from_float = worst(&actual, &case.from_float.data);
            assert!(
                from_float <= 1e-5,
                "[{backend}] {}: {from_float} from torchvision's float result",
                case.name
            );
            let from_uint8 = worst(&actual, &case.from_uint8.data);
            assert!(
                from_uint8 <= half_level,
                "[{backend}] {}: {from_uint8} from torchvision's 8-bit result",
                case.name
            );
        }
    }
}

#[test]
fn an_unreadable_image_is_a_clear_error() {
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    let not_an_image = dir.path().join("notes.png");
    std::fs::write(&not_an_image, "not a picture").unwrap();
    for path in [not_an_image, dir.path().join("missing.jpg")] {
        let err = EvalTransform::RESNET.open(&path, &device).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(path.to_str().unwrap()) && message.contains("cannot read the image"),
            "{message}"
        );
    }
}

/// A full-size ResNet18 with random weights, saved as a torchvision checkpoint in `dir`.
fn resnet18_checkpoint(dir: &Path, num_classes: usize, device: &Device) -> (ResNet, PathBuf) {
    let model = ResNetConfig::resnet18(num_classes).init(device).unwrap();
    let path = dir.join(format!("resnet18_{num_classes}.safetensors"));
    model.save_torchvision(&path).unwrap();
    (model, path)
}

#[test]
fn the_classify_example_ranks_imagenet_classes() {
    let dir = tempfile::tempdir().unwrap();
    let images = [
        fixtures().join("photo.jpg"),
        fixtures().join("landscape.png"),
    ];
    let device = Device::default();
    let (model, weights) = resnet18_checkpoint(dir.path(), 1000, &device);
    // The top class of each image, computed here.
    let inputs = images
        .iter()
        .map(|image| EvalTransform::RESNET.open(image, &device).unwrap())
        .collect();
    let logits = model.valid().forward(Tensor::stack(inputs, 0));
    let top1: Vec<usize> = top_classes(logits, 1).iter().map(|top| top[0].0).collect();

    let output = run(example("classify")
        .args(["--weights", weights.to_str().unwrap(), "--top", "3"])
        .args(&images));
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("loaded 122 tensors"));

    let classes = imagenet_classes();
    let blocks: Vec<&str> = stdout.split(" (resnet18):\n").skip(1).collect();
    assert_eq!(blocks.len(), 2, "{stdout}");
    for (block, expected) in blocks.iter().zip(&top1) {
        // `  1.  12.34%  name (index)`, three lines, most probable first.
        let ranked: Vec<(f32, usize)> = block
            .lines()
            .take(3)
            .map(|line| {
                let (_, rest) = line.split_once(". ").unwrap();
                let (percent, rest) = rest.trim_start().split_once("%  ").unwrap();
                let (name, index) = rest.rsplit_once(" (").unwrap();
                let index: usize = index.trim_end_matches(')').parse().unwrap();
                assert_eq!(name, classes[index], "{stdout}");
                (percent.parse().unwrap(), index)
            })
            .collect();
        assert_eq!(ranked.len(), 3, "{stdout}");
        assert_eq!(ranked[0].1, *expected, "the example's top class: {stdout}");
        assert!(
            ranked.windows(2).all(|pair| pair[0].0 >= pair[1].0),
            "{stdout}"
        );
    }
}

#[test]
fn the_classify_example_refuses_what_it_cannot_classify() {
    let dir = tempfile::tempdir().unwrap();
    let photo = fixtures().join("photo.jpg");
    let (_, ten_classes) = resnet18_checkpoint(dir.path(), 10, &Device::default());
    let ten_classes = ten_classes.to_str().unwrap();

    let output = run(example("classify")
        .args(["--weights", ten_classes])
        .arg(&photo));
    assert_clear_error(
        &output,
        "its classifier has 10 classes, not ImageNet's 1000",
    );

    let output = run(example("classify")
        .args(["--model", "resnet50-cifar", "--weights", ten_classes])
        .arg(&photo));
    assert_clear_error(
        &output,
        "resnet50-cifar: no ImageNet weights here; expected one of",
    );

    let narrow = fixture_path("checkpoints/resnet18_width4.pth");
    let output = run(example("classify").arg("--weights").arg(narrow).arg(&photo));
    assert_clear_error(
        &output,
        "conv1.weight: model [64, 3, 7, 7], checkpoint [4, 3, 7, 7]",
    );

    let output = run(example("classify")
        .args(["--weights", ten_classes])
        .arg(dir.path().join("missing.jpg")));
    assert_clear_error(&output, "cannot read the image");
}

/// A full-size ResNet18 for `num_classes` classes whose logits are its classifier's bias,
/// `num_classes − 1` down to 0: it ranks the classes in index order whatever the image.
fn ranking_checkpoint(dir: &Path, num_classes: usize, device: &Device) -> PathBuf {
    let mut model = ResNetConfig::resnet18(num_classes).init(device).unwrap();
    model.fc.weight = Param::from_tensor(model.fc.weight.val().zeros_like());
    let bias: Vec<f32> = (0..num_classes).rev().map(|class| class as f32).collect();
    let bias = Tensor::from_data(TensorData::new(bias, [num_classes]), device);
    model.fc.bias = Some(Param::from_tensor(bias));
    let path = dir.join(format!("ranking_{num_classes}.safetensors"));
    model.save_torchvision(&path).unwrap();
    path
}

/// Writes `count` small images of different sizes into `root/<class>/`.
fn write_images(root: &Path, class: &str, count: usize) {
    let folder = root.join(class);
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..count {
        let (width, height) = (40 + 7 * i as u32, 30);
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 8) as u8, (i * 60) as u8])
        });
        image.save(folder.join(format!("{i}.png"))).unwrap();
    }
}

/// Seven classes, the model ranking them in folder order: the two images of the first class
/// count for top-1, those of the first five for top-5: 2 of 8 and 6 of 8, in batches of 3
/// (the last one short).
#[test]
fn the_validate_example_counts_top1_and_top5() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("val");
    // Created out of order: the labels follow the sorted names.
    for (class, count) in [
        ("g", 1),
        ("a", 2),
        ("c", 1),
        ("b", 1),
        ("e", 1),
        ("d", 1),
        ("f", 1),
    ] {
        write_images(&root, class, count);
    }
    std::fs::write(root.join("a").join("notes.txt"), "not an image").unwrap();
    let weights = ranking_checkpoint(dir.path(), 7, &Device::default());

    let output = run(example("validate")
        .args(["--weights", weights.to_str().unwrap(), "--batch-size", "3"])
        .arg(&root));
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains("8 images in 7 classes (1 other files skipped)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("resnet18: top-1 25.000%, top-5 75.000% over 8 images"),
        "{stdout}"
    );
    assert!(
        stdout.contains("torchvision publishes top-1 69.758%, top-5 89.078%"),
        "{stdout}"
    );
    assert!(stdout.contains("images/s (8 images in"), "{stdout}");
}

#[test]
fn the_validate_example_refuses_what_it_cannot_score() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("val");
    write_images(&root, "a", 1);
    write_images(&root, "b", 1);
    let (_, ten_classes) = resnet18_checkpoint(dir.path(), 10, &Device::default());
    let ten_classes = ten_classes.to_str().unwrap();

    let output = run(example("validate")
        .args(["--weights", ten_classes])
        .arg(&root));
    assert_clear_error(&output, "its classifier has 10 classes, but");

    let output = run(example("validate")
        .args(["--model", "resnet50-cifar", "--weights", ten_classes])
        .arg(&root));
    assert_clear_error(
        &output,
        "resnet50-cifar: no ImageNet weights here; expected one of",
    );

    let output = run(example("validate")
        .args(["--model", "resnet05", "--weights", ten_classes])
        .arg(&root));
    assert_clear_error(&output, "did you mean `resnet50`?");

    let output = run(example("validate")
        .args(["--weights", ten_classes])
        .arg(dir.path().join("missing")));
    assert_clear_error(&output, "does not exist");

    std::fs::create_dir_all(root.join("empty")).unwrap();
    let output = run(example("validate")
        .args(["--weights", ten_classes])
        .arg(&root));
    assert_clear_error(&output, "holds no PNG or JPEG image");

    let output = run(example("validate").arg("--help"));
    let help = text(&output.stdout);
    assert!(
        help.contains("resnet152") && help.contains("78.312 / 94.046"),
        "{help}"
    );
}
