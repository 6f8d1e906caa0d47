//! torchvision checkpoints into our ResNet18, 34, 50, 101 and 152, ConvNeXt (T's and S's
//! depths), VGG11-BN, VGG13, VGG13-BN, VGG16, VGG16-BN and VGG19: the logits must be PyTorch's,
//! from `.pth` and `.safetensors` alike, on every compiled backend; and every way a checkpoint
//! can fail to fit is reported by name.
//!
//! The checkpoints are torchvision's own ResNet (basic blocks and bottlenecks), ConvNeXt and VGG
//! classes, narrowed to commit: `tests/fixtures/generate_checkpoints.py` wrote them and
//! `checkpoints/checkpoints.json` (configuration, input, logits in evaluation mode).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::module::Module;
use burn::store::{ModuleStore, SafetensorsStore, bridge};
use burn::tensor::{Device, Tensor, TensorData};
use common::{Data, fixture_cases, fixture_path};
use normzoo::backend::test_devices;
use normzoo::models::{
    CheckpointError, ConvNext, ConvNextConfig, LoadReport, ResNet, ResNetConfig,
    TorchvisionWeights, Vgg, VggConfig,
};
use normzoo::norm::NormConfig;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    input: Data,
    logits: Data,
}

fn checkpoints() -> PathBuf {
    fixture_path("checkpoints")
}

fn case(name: &str) -> Case {
    fixture_cases::<Case>("checkpoints/checkpoints.json")
        .into_iter()
        .find(|case| case.name == name)
        .unwrap_or_else(|| panic!("checkpoints.json has no case {name}"))
}

/// ResNet18 as in the fixture: 4 channels in the first stage, 10 classes.
fn resnet(num_classes: usize, device: &Device) -> ResNet {
    ResNetConfig::resnet18(num_classes)
        .with_width(4)
        .init(device)
        .unwrap()
}

/// ConvNeXt as in the fixture: dims 8 … 64, depths 1, 1, 2, 1, 10 classes.
fn convnext(device: &Device) -> ConvNext {
    ConvNextConfig::tiny(10)
        .with_dims([8, 16, 32, 64])
        .with_depths([1, 1, 2, 1])
        .init(device)
        .unwrap()
}

/// VGG16's stages as in the fixtures: widths 4 … 16 instead of 64 … 512.
fn vgg_stages() -> Vec<Vec<usize>> {
    vec![
        vec![4, 4],
        vec![8, 8],
        vec![8, 8, 8],
        vec![16, 16, 16],
        vec![16, 16, 16],
    ]
}

/// VGG16 as in the fixtures: [`vgg_stages`], 32 hidden units, 10 classes; BatchNorm for
/// VGG16-BN.
fn vgg(norm: NormConfig, device: &Device) -> Vgg {
    VggConfig::vgg16(10)
        .with_stages(vgg_stages())
        .with_hidden(32)
        .with_norm(norm)
        .init(device)
        .unwrap()
}

/// VGG11-BN and VGG19 as in the fixtures: their stage lengths, widths 4 … 16, 16 hidden units.
fn vgg11_bn(device: &Device) -> Vgg {
    let stages = vec![vec![4], vec![8], vec![8, 8], vec![16, 16], vec![16, 16]];
    let config = VggConfig::vgg11(10).with_norm(NormConfig::batch());
    config
        .with_stages(stages)
        .with_hidden(16)
        .init(device)
        .unwrap()
}

fn vgg19(device: &Device) -> Vgg {
    let stages = vec![vec![4; 2], vec![8; 2], vec![8; 4], vec![16; 4], vec![16; 4]];
    let config = VggConfig::vgg19(10);
    config
        .with_stages(stages)
        .with_hidden(16)
        .init(device)
        .unwrap()
}

/// VGG13 and VGG13-BN as in the fixtures: stages of 2, widths 4 … 16, 16 hidden units.
fn vgg13(norm: NormConfig, device: &Device) -> Vgg {
    let stages = vec![vec![4; 2], vec![8; 2], vec![8; 2], vec![16; 2], vec![16; 2]];
    VggConfig::vgg13(10)
        .with_norm(norm)
        .with_stages(stages)
        .with_hidden(16)
        .init(device)
        .unwrap()
}

/// `|actual − expected| ≤ 1e-5·(1 + |expected|)` for every logit.
fn assert_logits(actual: Tensor<2>, case: &Case, what: &str) {
    assert_eq!(actual.dims().to_vec(), case.logits.shape, "{what}: shape");
    let actual = actual
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    for (i, (a, e)) in actual.iter().zip(&case.logits.data).enumerate() {
        assert!(
            (a - e).abs() <= 1e-5 * (1.0 + e.abs()),
            "{what}: logit {i} is {a} where PyTorch gives {e}"
        );
    }
}

/// The narrow ResNet50 of the fixture: bottlenecks, 4 channels in the first stage, 2, 1, 1, 1
/// blocks.
fn resnet50(device: &Device) -> ResNet {
    ResNetConfig::resnet50(10)
        .with_width(4)
        .with_blocks([2, 1, 1, 1])
        .init(device)
        .unwrap()
}

/// The narrow ResNet101 and ResNet152 of the fixtures: 2 channels in the first stage, their
/// own blocks.
fn resnet101(device: &Device) -> ResNet {
    ResNetConfig::resnet101(10)
        .with_width(2)
        .init(device)
        .unwrap()
}

fn resnet152(device: &Device) -> ResNet {
    ResNetConfig::resnet152(10)
        .with_width(2)
        .init(device)
        .unwrap()
}

/// ConvNeXt-S's depths with dims 4 … 32, as in the fixture.
fn convnext_small(device: &Device) -> ConvNext {
    ConvNextConfig::small(10)
        .with_dims([4, 8, 16, 32])
        .init(device)
        .unwrap()
}

/// The narrow ResNet34 of the fixture: 2 channels in the first stage, ResNet34's blocks.
fn resnet34(device: &Device) -> ResNet {
    ResNetConfig::resnet34(10)
        .with_width(2)
        .init(device)
        .unwrap()
}

/// Loads the fixture checkpoint `name`, as `.pth` and as `.safetensors`, into `build`'s model on
/// every compiled backend, checks that `tensors` tensors were loaded, then hands the model, the
/// report, the device, the fixture case and a label to `check`.
fn for_each_load<M: TorchvisionWeights>(
    name: &str,
    tensors: usize,
    build: &dyn Fn(&Device) -> M,
    check: impl Fn(M, LoadReport, &Device, &Case, &str),
) {
    let case = case(name);
    for (backend, device) in test_devices() {
        for extension in ["pth", "safetensors"] {
            let what = format!("[{backend}] {name}.{extension}");
            let path = checkpoints().join(format!("{name}.{extension}"));
            let (model, report) = build(&device)
                .load_torchvision(&path)
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            assert_eq!(report.loaded.len(), tensors, "{what}");
            check(model, report, &device, &case, &what);
        }
    }
}

#[test]
fn every_resnet_depth_gives_torchvisions_logits_from_either_format() {
    let resnet18 = |device: &Device| resnet(10, device);
    // Convolutions and batch norms (5 tensors each), and the classifier's two: ResNet18's
    // 1 + 8·2 + 3 projections, ResNet34's 1 + 16·2 + 3, the narrow ResNet50's 1 + 5·3 + 4,
    // ResNet101's 1 + 33·3 + 4, ResNet152's 1 + 50·3 + 4.
    for (name, build, layers) in [
        (
            "resnet18_width4",
            &resnet18 as &dyn Fn(&Device) -> ResNet,
            20,
        ),
        ("resnet34_width2", &resnet34, 36),
        ("resnet50_width4", &resnet50, 20),
        ("resnet101_width2", &resnet101, 104),
        ("resnet152_width2", &resnet152, 155),
    ] {
        let tensors = layers + layers * 5 + 2;
        for_each_load(name, tensors, build, |model, report, device, case, what| {
            assert_eq!(report.head_replaced, None);
            let tracked = match model.bn1.clone() {
                normzoo::norm::Norm::Batch(bn) => bn.num_batches_tracked.unwrap().value(),
                other => panic!("{what}: the stem normalizer is {other:?}"),
            };
            tracked
                .into_data()
                .assert_eq(&TensorData::from([7.0f32]), false);
            let logits = model.valid().forward(case.input.tensor(device));
            assert_logits(logits, case, what);
        });
    }
}

#[test]
fn convnexts_give_torchvisions_logits_from_either_format() {
    // Stem, 3 downsampling layers and head: a convolution or linear layer and a norm each (2
    // tensors apiece); each block 4 such layers and a layer scale. ConvNeXt-S's 36 blocks are
    // ConvNeXt-B's and -L's too, which differ only in width.
    for (name, build, blocks) in [
        (
            "convnext_dims8",
            &convnext as &dyn Fn(&Device) -> ConvNext,
            5,
        ),
        ("convnext_small_dims4", &convnext_small, 36),
    ] {
        let tensors = 5 * 4 + blocks * 9;
        for_each_load(name, tensors, build, |model, report, device, case, what| {
            assert_eq!(report.head_replaced, None);
            let logits = model.valid().forward(case.input.tensor(device));
            assert_logits(logits, case, what);
        });
    }
}

#[test]
fn vggs_with_and_without_batch_norm_give_torchvisions_logits_from_either_format() {
    let vgg16 = |device: &Device| vgg(NormConfig::None, device);
    let vgg16_bn = |device: &Device| vgg(NormConfig::batch(), device);
    let vgg13_plain = |device: &Device| vgg13(NormConfig::None, device);
    let vgg13_bn = |device: &Device| vgg13(NormConfig::batch(), device);
    // Convolutions and 3 linear layers (2 tensors each), and the batch norms' 5.
    for (name, build, tensors) in [
        ("vgg16_width4", &vgg16 as &dyn Fn(&Device) -> Vgg, 16 * 2),
        ("vgg16_bn_width4", &vgg16_bn, 16 * 2 + 13 * 5),
        ("vgg11_bn_width4", &vgg11_bn, 11 * 2 + 8 * 5),
        ("vgg19_width4", &vgg19, 19 * 2),
        ("vgg13_width4", &vgg13_plain, 13 * 2),
        ("vgg13_bn_width4", &vgg13_bn, 13 * 2 + 10 * 5),
    ] {
        for_each_load(name, tensors, build, |model, _, device, case, what| {
            let logits = model.valid().forward(case.input.tensor(device));
            assert_logits(logits, case, what);
        });
    }
}

/// torchvision numbers VGG16-BN's layers differently from VGG16's: each checkpoint fits only its
/// own model, and the CIFAR variant takes the convolutions of either.
#[test]
fn vgg_checkpoints_fit_only_their_own_variant() {
    let device = Device::default();
    let bn = checkpoints().join("vgg16_bn_width4.pth");
    let err = vgg(NormConfig::None, &device)
        .load_torchvision(&bn)
        .unwrap_err();
    let CheckpointError::Mismatch { report, .. } = &err else {
        panic!("expected a mismatch, got {err}")
    };
    assert!(
        report
            .unexpected
            .contains(&"features.1.running_mean".to_string()),
        "{err}"
    );

    let cifar = VggConfig::vgg16_cifar(NormConfig::batch(), 10)
        .with_stages(vgg_stages())
        .init(&device)
        .unwrap();
    let fresh_head = cifar.fc.weight.val().into_data();
    let (cifar, report) = cifar.load_torchvision_partial(&bn).unwrap();
    assert_eq!(report.loaded.len(), 13 * 2 + 13 * 5, "{report}");
    // The ImageNet classifier has no counterpart in the CIFAR head.
    assert_eq!(report.unexpected.len(), 3 * 2, "{report}");
    assert!(
        report
            .unexpected
            .contains(&"classifier.6.weight".to_string())
    );
    assert_eq!(report.missing, ["fc.bias", "fc.weight"], "{report}");
    cifar
        .fc
        .weight
        .val()
        .into_data()
        .assert_eq(&fresh_head, true);
}

#[test]
fn another_class_count_keeps_the_models_own_classifier() {
    let device = Device::default();
    let model = resnet(5, &device);
    let fresh_head = model.fc.weight.val().into_data();
    let path = checkpoints().join("resnet18_width4.pth");
    let (model, report) = model.load_torchvision(&path).unwrap();
    assert_eq!(report.head_replaced, Some((10, 5)));
    assert_eq!(report.loaded.len(), 20 + 20 * 5);
    model
        .fc
        .weight
        .val()
        .into_data()
        .assert_eq(&fresh_head, true);
    assert!(
        report
            .to_string()
            .contains("10 classes in the checkpoint, 5 in the model")
    );
}

#[test]
fn a_checkpoint_with_more_blocks_is_refused_with_its_extra_keys() {
    let device = Device::default();
    let model = ResNetConfig::resnet18(10)
        .with_width(4)
        .with_blocks([1, 1, 1, 1])
        .init(&device)
        .unwrap();
    let path = checkpoints().join("resnet18_width4.safetensors");
    let err = model.load_torchvision(&path).unwrap_err();
    let CheckpointError::Mismatch { report, .. } = &err else {
        panic!("expected a mismatch, got {err}")
    };
    // The second block of each stage: 2 convolutions, 2 batch norms (5 tensors each).
    assert_eq!(report.unexpected.len(), 4 * 12, "{err}");
    assert!(
        report
            .unexpected
            .contains(&"layer1.1.conv1.weight".to_string())
    );
    assert!(report.missing.is_empty() && report.wrong_shape.is_empty());
    assert!(err.to_string().contains("48 not in the model: "), "{err}");

    // Partially, everything else loads.
    let model = ResNetConfig::resnet18(10)
        .with_width(4)
        .with_blocks([1, 1, 1, 1])
        .init(&device)
        .unwrap();
    let (_, report) = model.load_torchvision_partial(&path).unwrap();
    assert_eq!(report.loaded.len(), 20 + 20 * 5 + 2 - 4 * 12);
    assert_eq!(report.unexpected.len(), 48);
}

#[test]
fn missing_tensors_and_other_shapes_are_listed_by_name() {
    let device = Device::default();
    let path = checkpoints().join("resnet18_width4.pth");
    let deeper = ResNetConfig::resnet18(10)
        .with_width(4)
        .with_blocks([3, 2, 2, 2])
        .init(&device)
        .unwrap();
    let err = deeper.load_torchvision(&path).unwrap_err();
    let CheckpointError::Mismatch { report, .. } = &err else {
        panic!("expected a mismatch, got {err}")
    };
    assert_eq!(report.missing.len(), 12, "{err}");
    assert!(
        report
            .missing
            .contains(&"layer1.2.bn2.running_var".to_string()),
        "{err}"
    );

    let wider = ResNetConfig::resnet18(10)
        .with_width(8)
        .init(&device)
        .unwrap();
    let err = wider.load_torchvision(&path).unwrap_err();
    assert!(
        err.to_string()
            .contains("conv1.weight: model [8, 3, 7, 7], checkpoint [4, 3, 7, 7]"),
        "{err}"
    );
}

#[test]
fn a_missing_unknown_or_corrupt_file_is_a_clear_error() {
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();

    let absent = dir.path().join("resnet18.pth");
    let err = resnet(10, &device).load_torchvision(&absent).unwrap_err();
    assert_eq!(err, CheckpointError::NotFound { path: absent });

    let text = dir.path().join("weights.txt");
    std::fs::write(&text, "not weights").unwrap();
    let err = resnet(10, &device).load_torchvision(&text).unwrap_err();
    assert!(
        matches!(err, CheckpointError::UnknownFormat { .. }),
        "{err}"
    );

    for name in ["resnet18_width4.pth", "resnet18_width4.safetensors"] {
        let bytes = std::fs::read(checkpoints().join(name)).unwrap();
        let truncated = dir.path().join(name);
        std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
        let err = resnet(10, &device)
            .load_torchvision(&truncated)
            .unwrap_err();
        assert!(
            matches!(err, CheckpointError::Unreadable { .. }),
            "{name} cut to a third: {err}"
        );
    }
}

/// Every tensor of a `.safetensors` file: name → (dtype, shape, bytes).
fn safetensors_contents(path: &std::path::Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let mut store = SafetensorsStore::from_file(path);
    let tensors = store.get_all_tensors().unwrap().clone();
    tensors
        .into_iter()
        .map(|(name, tensor)| {
            let data = bridge::into_data(tensor).unwrap();
            let dtype = format!("{:?}", data.dtype());
            (
                name,
                (dtype, data.shape().to_vec(), data.as_bytes().to_vec()),
            )
        })
        .collect()
}

/// Loads torchvision's `{name}.safetensors` into `model`, saves it into `dir` and checks that
/// both files hold the same keys, dtypes, shapes and bytes.
fn assert_round_trip<M: TorchvisionWeights>(model: M, name: &str, dir: &std::path::Path) {
    let original = checkpoints().join(format!("{name}.safetensors"));
    let saved = dir.join(format!("{name}.safetensors"));
    let (model, _) = model.load_torchvision(&original).unwrap();
    model.save_torchvision(&saved).unwrap();
    // Never over an existing file.
    let err = model.save_torchvision(&saved).unwrap_err();
    assert!(err.to_string().contains("a file is already there"), "{err}");
    let (expected, actual) = (
        safetensors_contents(&original),
        safetensors_contents(&saved),
    );
    let keys = |contents: &BTreeMap<String, _>| contents.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&actual), keys(&expected), "{name}: the saved keys");
    for (key, expected) in &expected {
        assert!(
            actual[key] == *expected,
            "{name}: {key} differs after the round trip"
        );
    }
}

#[test]
fn a_torchvision_checkpoint_round_trips_through_our_models() {
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    assert_round_trip(resnet(10, &device), "resnet18_width4", dir.path());
    assert_round_trip(resnet50(&device), "resnet50_width4", dir.path());
    assert_round_trip(resnet34(&device), "resnet34_width2", dir.path());
    assert_round_trip(vgg11_bn(&device), "vgg11_bn_width4", dir.path());
    assert_round_trip(vgg19(&device), "vgg19_width4", dir.path());
    assert_round_trip(convnext(&device), "convnext_dims8", dir.path());
    assert_round_trip(convnext_small(&device), "convnext_small_dims4", dir.path());
    assert_round_trip(resnet152(&device), "resnet152_width2", dir.path());
    assert_round_trip(
        vgg13(NormConfig::batch(), &device),
        "vgg13_bn_width4",
        dir.path(),
    );
    assert_round_trip(vgg(NormConfig::None, &device), "vgg16_width4", dir.path());
    assert_round_trip(
        vgg(NormConfig::batch(), &device),
        "vgg16_bn_width4",
        dir.path(),
    );
}

/// A one-file HTTP server on loopback: `GET /<name>` answers `body`, any other path 404. Serves
/// `requests` requests, then stops.
fn serve(name: &'static str, body: Vec<u8>, requests: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut request = String::new();
            BufReader::new(&stream).read_line(&mut request).unwrap();
            let found = request.split(' ').nth(1) == Some(&format!("/{name}"));
            let (status, body) = match found {
                true => ("200 OK", body.as_slice()),
                false => ("404 Not Found", &b"no such file"[..]),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(body).unwrap();
        }
    });
    address
}

#[test]
fn a_checkpoint_downloads_once_into_the_cache_and_is_checked() {
    use normzoo::models::download_checkpoint;
    use sha2::Digest;

    let bytes = std::fs::read(checkpoints().join("resnet18_width4.pth")).unwrap();
    let hash: String = sha2::Sha256::digest(&bytes)[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    // torch's naming: the first hex digits of the file's SHA-256 after the last `-`.
    let name: &'static str = format!("resnet18_width4-{hash}.pth").leak();
    let cache = tempfile::tempdir().unwrap();
    let address = serve(name, bytes.clone(), 2);

    let path = download_checkpoint(&format!("{address}/{name}"), Some(cache.path())).unwrap();
    assert_eq!(path, cache.path().join(name));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let (_, report) = resnet(10, &Device::default())
        .load_torchvision(&path)
        .unwrap();
    assert_eq!(report.loaded.len(), 122);

    // Cached: asked again, it does not go to the network (the server is not asked).
    let again = download_checkpoint(&format!("{address}/{name}"), Some(cache.path())).unwrap();
    assert_eq!(again, path);

    // Not found: the server's answer, and nothing left in the cache.
    let err = download_checkpoint(&format!("{address}/missing.pth"), Some(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("404"), "{err}");
    let names = |dir: &std::path::Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(cache.path()), [name]);

    // A file whose hash is not its name's is refused and not kept.
    let wrong: &'static str = "resnet18_width4-00000000.pth";
    let address = serve(wrong, bytes, 1);
    let err = download_checkpoint(&format!("{address}/{wrong}"), Some(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the file name says it begins with 00000000"),
        "{err}"
    );
    assert_eq!(names(cache.path()), [name]);

    // Nobody listening: a clear error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/{name}", closed.local_addr().unwrap());
    drop(closed);
    let err = download_checkpoint(&url, Some(&cache.path().join("empty"))).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot download {url}")),
        "{err}"
    );
}
