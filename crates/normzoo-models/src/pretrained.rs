//! Pretrained weights: torchvision checkpoints loaded into our architectures by name; see
//! [`TorchvisionWeights`].

use core::fmt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    ApplyError, ApplyResult, BurnToPyTorchAdapter, KeyRemapper, ModuleAdapter, ModuleContext,
    ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore, bridge,
};
use burn::tensor::{DType, Shape, TensorData};

/// An architecture whose weights load from torchvision's checkpoints, and save as them.
///
/// A checkpoint is a PyTorch state dict, saved with `torch.save` (`.pth`, `.pt`, `.bin`) or as
/// `.safetensors`; both are read through burn-store. The `.pth` reader parses the pickle data
/// itself and never executes it, so a checkpoint cannot run code (unlike `torch.load` without
/// `weights_only=True`).
///
/// Our modules follow torchvision's names where they can; one table per architecture
/// ([`TorchvisionWeights::renames`]) maps the keys that differ. Besides the names, loading
/// transposes linear weights (burn stores them `[in, out]`), renames normalizers' `weight` and
/// `bias` to `gamma` and `beta`, reshapes torchvision's `[C, 1, 1]` layer scale to our `[C]`
/// and its 0-d integer `num_batches_tracked` to our `[1]` float, and casts half-precision
/// weights to f32.
///
/// Loading is strict by default, as `load_state_dict` is: a key the model lacks, a parameter
/// the checkpoint lacks or a shape that differs is an error that lists them all. The partial
/// mode loads what matches and reports the rest. Either way a classifier for a different
/// number of classes is not an error: the model keeps its own freshly initialised head, as
/// timm's `num_classes` does, and the [`LoadReport`] says so.
///
/// ```no_run
/// use burn::tensor::Device;
/// use normzoo_models::{ResNetConfig, TorchvisionWeights};
///
/// let device = Device::default();
/// let (model, report) = ResNetConfig::resnet18(1000)
///     .init(&device)?
///     .load_torchvision("resnet18-f37072fd.pth")?;
/// println!("{report}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait TorchvisionWeights: Module + Sized {
    /// The architecture's name in messages.
    fn name(&self) -> &'static str;

    /// The classifier's key prefix (ours): its weight and bias are not loaded when the
    /// checkpoint has another number of classes.
    fn head(&self) -> &'static str;

    /// torchvision's key prefixes and ours, for every prefix that differs; `{}` stands for a
    /// block index, in the same order on both sides. A method, not a constant table, because
    /// some of torchvision's numbering depends on the configuration (VGG's layer indices
    /// count its normalizers).
    fn renames(&self) -> Vec<(String, String)>;

    /// Loads every parameter and running statistic from the torchvision checkpoint at `path`;
    /// any key that is missing, unexpected or of the wrong shape is an error (the classifier
    /// excepted, see [`TorchvisionWeights`]).
    ///
    /// # Errors
    ///
    /// [`CheckpointError`]: the file is missing, of an unknown format or unreadable, or does
    /// not fit the model (all mismatches listed). The model is consumed either way.
    fn load_torchvision(
        self,
        path: impl AsRef<Path>,
    ) -> Result<(Self, LoadReport), CheckpointError> {
        load(self, path.as_ref(), true)
    }

    /// Loads what fits from the torchvision checkpoint at `path` and leaves the rest as
    /// initialised; the [`LoadReport`] lists what was skipped (`strict=False` in PyTorch).
    ///
    /// # Errors
    ///
    /// [`CheckpointError`]: the file is missing, of an unknown format or unreadable.
    fn load_torchvision_partial(
        self,
        path: impl AsRef<Path>,
    ) -> Result<(Self, LoadReport), CheckpointError> {
        load(self, path.as_ref(), false)
    }

    /// Saves the model as a `.safetensors` checkpoint under torchvision's names and layouts,
    /// which torchvision's model loads with `load_state_dict(load_file(path))`: loading a
    /// torchvision checkpoint and saving it gives back the same tensors.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Unwritable`]: the path does not end in `.safetensors`, a file is
    /// already there (it is never overwritten), or writing failed.
    fn save_torchvision(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        save(self, path.as_ref())
    }
}

/// What a load did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// The tensors loaded, under our names.
    pub loaded: Vec<String>,
    /// The classifier kept its own initialisation because the checkpoint's has another number
    /// of classes: `(checkpoint's classes, model's classes)`.
    pub head_replaced: Option<(usize, usize)>,
    /// The model's tensors the checkpoint lacks (left as initialised; partial loads only).
    pub missing: Vec<String>,
    /// The checkpoint's keys the model lacks, under the checkpoint's names (partial loads
    /// only).
    pub unexpected: Vec<String>,
    /// The tensors whose shapes differ, `"name: model [..], checkpoint [..]"` (left as
    /// initialised; partial loads only).
    pub wrong_shape: Vec<String>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loaded {} tensors", self.loaded.len())?;
        if let Some((checkpoint, model)) = self.head_replaced {
            write!(
                f,
                "; the classifier was left initialised ({checkpoint} classes in the checkpoint, \
                 {model} in the model)"
            )?;
        }
        write_list(f, "missing from the checkpoint", &self.missing)?;
        write_list(f, "not in the model", &self.unexpected)?;
        write_list(f, "of another shape", &self.wrong_shape)
    }
}

/// Why a checkpoint could not be loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointError {
    /// No file at the path.
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The file's extension names no format we read.
    UnknownFormat {
        /// The path as given.
        path: PathBuf,
    },
    /// The file could not be read as the format its extension names (truncated or corrupt).
    Unreadable {
        /// The path as given.
        path: PathBuf,
        /// The reader's message.
        reason: String,
    },
    /// A checkpoint could not be downloaded.
    Download {
        /// The address.
        url: String,
        /// Why.
        reason: String,
    },
    /// The checkpoint could not be written.
    Unwritable {
        /// The path as given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The checkpoint does not fit the model (strict loads).
    Mismatch {
        /// The architecture.
        model: &'static str,
        /// The path as given.
        path: PathBuf,
        /// What fitted and what did not.
        report: Box<LoadReport>,
    },
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { path } => write!(f, "no checkpoint at {}", path.display()),
            Self::UnknownFormat { path } => write!(
                f,
                "{}: unknown checkpoint format: expected a PyTorch state dict (.pth, .pt, \
                 .bin) or .safetensors",
                path.display()
            ),
            Self::Unreadable { path, reason } => {
                write!(f, "{}: not a readable checkpoint: {reason}", path.display())
            }
            Self::Download { url, reason } => write!(
                f,
                "cannot download {url}: {reason} (offline, download it by hand and give its \
                 path instead)"
            ),
            Self::Unwritable { path, reason } => {
                write!(f, "{}: checkpoint not saved: {reason}", path.display())
            }
            Self::Mismatch {
                model,
                path,
                report,
            } => {
                write!(f, "{}: does not fit this {model}", path.display())?;
                write_list(f, "missing from the checkpoint", &report.missing)?;
                write_list(f, "not in the model", &report.unexpected)?;
                write_list(f, "of another shape", &report.wrong_shape)?;
                write!(f, "\n(a partial load takes what fits and reports the rest)")
            }
        }
    }
}

impl std::error::Error for CheckpointError {}

/// How many names a list shows before it says how many more there are.
const SHOWN: usize = 12;

fn write_list(f: &mut fmt::Formatter<'_>, what: &str, names: &[String]) -> fmt::Result {
    if names.is_empty() {
        return Ok(());
    }
    write!(
        f,
        "\n{} {what}: {}",
        names.len(),
        names[..names.len().min(SHOWN)].join(", ")
    )?;
    if names.len() > SHOWN {
        write!(f, ", and {} more", names.len() - SHOWN)?;
    }
    Ok(())
}

fn load<M: TorchvisionWeights>(
    mut model: M,
    path: &Path,
    strict: bool,
) -> Result<(M, LoadReport), CheckpointError> {
    let tensors = read(path)?;
    let (tensors, ours_to_theirs) = rename(tensors, &model.renames());
    let result = model.apply(tensors, None, Some(Box::new(FromTorchvision)), true);
    let report = report(result, &ours_to_theirs, model.head());
    let fits =
        report.missing.is_empty() && report.unexpected.is_empty() && report.wrong_shape.is_empty();
    if strict && !fits {
        return Err(CheckpointError::Mismatch {
            model: model.name(),
            path: path.to_path_buf(),
            report: Box::new(report),
        });
    }
    Ok((model, report))
}

fn save<M: TorchvisionWeights>(model: &M, path: &Path) -> Result<(), CheckpointError> {
    let unwritable = |reason: String| CheckpointError::Unwritable {
        path: path.to_path_buf(),
        reason,
    };
    if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Err(unwritable(
            "torchvision checkpoints are saved as .safetensors only".into(),
        ));
    }
    if path.exists() {
        return Err(unwritable("a file is already there".into()));
    }
    let to_theirs = model
        .renames()
        .into_iter()
        .map(|(theirs, ours)| prefix_pattern(&ours, &theirs));
    let remapper = KeyRemapper::from_pattern_iter(to_theirs)
        .expect("the rename tables are valid regular expressions");
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(ToTorchvision)
        .skip_enum_variants(true)
        .remap(remapper);
    model
        .save_into(&mut store)
        .map_err(|err| unwritable(err.to_string()))
}

/// Every tensor of the checkpoint at `path`, under the checkpoint's names (not read yet).
fn read(path: &Path) -> Result<Vec<PackTensor>, CheckpointError> {
    if !path.is_file() {
        return Err(CheckpointError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let unreadable = |reason: String| CheckpointError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let tensors = match extension.to_ascii_lowercase().as_str() {
        "pth" | "pt" | "bin" => {
            let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
            all_tensors(&mut store).map_err(|err| unreadable(err.to_string()))?
        }
        "safetensors" => {
            let mut store = SafetensorsStore::from_file(path).map_indices_contiguous(false);
            all_tensors(&mut store).map_err(|err| unreadable(err.to_string()))?
        }
        _ => {
            return Err(CheckpointError::UnknownFormat {
                path: path.to_path_buf(),
            });
        }
    };
    Ok(tensors)
}

fn all_tensors<S: ModuleStore>(store: &mut S) -> Result<Vec<PackTensor>, S::Error> {
    Ok(store.get_all_tensors()?.values().cloned().collect())
}

/// The tensors under our names, and for each renamed one the checkpoint's name.
fn rename(
    tensors: Vec<PackTensor>,
    renames: &[(String, String)],
) -> (Vec<PackTensor>, BTreeMap<String, String>) {
    let patterns = renames
        .iter()
        .map(|(theirs, ours)| prefix_pattern(theirs, ours));
    let remapper = KeyRemapper::from_pattern_iter(patterns)
        .expect("the rename tables are valid regular expressions");
    let (tensors, renamed) = remapper.remap(tensors);
    let ours_to_theirs = renamed
        .into_iter()
        .filter(|(ours, theirs)| ours != theirs)
        .collect();
    (tensors, ours_to_theirs)
}

/// The regular expression and replacement that rename the key prefix `from` (with `{}` for
/// block indices) to `to`, keeping the rest of the key.
fn prefix_pattern(from: &str, to: &str) -> (String, String) {
    let slots = from.matches("{}").count();
    let pattern = regex_escape(from).replace(r"\{\}", r"(\d+)");
    let mut replacement = String::new();
    let mut slot = 0;
    for (i, part) in to.split("{}").enumerate() {
        if i > 0 {
            slot += 1;
            replacement.push_str(&format!("${{{slot}}}"));
        }
        replacement.push_str(part);
    }
    replacement.push_str(&format!("${{{}}}", slots + 1));
    (format!(r"^{pattern}(\..+)?$"), replacement)
}

/// `text` with the regular-expression metacharacters that key names can hold escaped.
fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '.' | '{' | '}' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// Sorts what [`ModuleSnapshot::apply`] did into a [`LoadReport`], setting aside the
/// classifier (the layer `head`) when only its class count differs.
fn report(
    result: ApplyResult,
    ours_to_theirs: &BTreeMap<String, String>,
    head: &str,
) -> LoadReport {
    let theirs = |ours: &String| ours_to_theirs.get(ours).unwrap_or(ours).clone();
    let head = [format!("{head}.weight"), format!("{head}.bias")];
    let mut head_classes = Vec::new();
    let mut wrong_shape = Vec::new();
    for error in &result.errors {
        match error {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } if head.contains(path) && classes_only_differ(expected, found) => {
                head_classes.push((last(found), last(expected)));
            }
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => wrong_shape.push(format!(
                "{}: model {:?}, checkpoint {:?}",
                theirs(path),
                expected.as_slice(),
                found.as_slice()
            )),
            other => wrong_shape.push(other.to_string()),
        }
    }
    // The head counts as replaced only when both its weight and bias were set aside.
    let head_replaced = match head_classes[..] {
        [weight, bias] if weight == bias => Some(weight),
        _ => {
            for (path, (checkpoint, model)) in head.iter().zip(head_classes) {
                wrong_shape.push(format!("{path}: {model} classes, checkpoint {checkpoint}"));
            }
            None
        }
    };
    LoadReport {
        loaded: result.applied,
        head_replaced,
        missing: result.missing.into_iter().map(|(path, _)| path).collect(),
        unexpected: result.unused.iter().map(theirs).collect(),
        wrong_shape,
    }
}

/// Whether a classifier's weight (`[features, classes]`) or bias (`[classes]`) shapes differ
/// in the class count only.
fn classes_only_differ(expected: &Shape, found: &Shape) -> bool {
    let (expected, found) = (expected.as_slice(), found.as_slice());
    expected.len() == found.len() && expected[..expected.len() - 1] == found[..found.len() - 1]
}

fn last(shape: &Shape) -> usize {
    shape.as_slice().last().copied().unwrap_or(1)
}

/// torchvision's tensors into our layout; see [`TorchvisionWeights`].
#[derive(Debug, Clone, Copy)]
struct FromTorchvision;

impl ModuleAdapter for FromTorchvision {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        let tensor = PyTorchToBurnAdapter.adapt(tensor, ctx);
        let param = tensor.name.rsplit('.').next().unwrap_or("");
        let shape = tensor.shape.as_slice().to_vec();
        let layer_scale = ctx.module_type() == Some("Struct:ConvNextBlock")
            && param == "gamma"
            && shape.len() == 3;
        if param == "num_batches_tracked" && shape.is_empty() || layer_scale {
            let flat = [shape.first().copied().unwrap_or(1)];
            return to_f32(tensor, Shape::from(flat));
        }
        if tensor.dtype.is_float() && tensor.dtype != DType::F32 {
            let shape = tensor.shape.clone();
            return to_f32(tensor, shape);
        }
        tensor
    }

    fn get_alternative_param_name(&self, param_name: &str, module_type: &str) -> Option<String> {
        // burn-store knows burn-nn's normalizers by name; ours with other names hold their
        // scale and shift as `gamma` and `beta` too.
        match (module_type, param_name) {
            ("Struct:LayerNorm2d" | "Struct:InstanceNorm", "gamma") => Some("weight".into()),
            ("Struct:LayerNorm2d" | "Struct:InstanceNorm", "beta") => Some("bias".into()),
            _ => PyTorchToBurnAdapter.get_alternative_param_name(param_name, module_type),
        }
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(*self)
    }
}

/// Our tensors into torchvision's layout: [`FromTorchvision`] undone.
#[derive(Debug, Clone, Copy)]
struct ToTorchvision;

impl ModuleAdapter for ToTorchvision {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        let module = ctx.module_type().unwrap_or("");
        let param = tensor.name.rsplit('.').next().unwrap_or("").to_string();
        let dims = tensor.shape.as_slice().to_vec();
        if param == "num_batches_tracked" {
            let name = tensor.name.clone();
            return bridge::map_data(tensor, name, DType::I64, Shape::from([0usize; 0]), |data| {
                let count = data.iter::<f32>().next().unwrap_or(0.0);
                TensorData::new(vec![count as i64], [0usize; 0])
            });
        }
        if module == "Struct:ConvNextBlock" && param == "gamma" {
            return to_f32(tensor, Shape::from([dims[0], 1, 1]));
        }
        if matches!(module, "Struct:LayerNorm2d" | "Struct:InstanceNorm") {
            let renamed = match param.as_str() {
                "gamma" => "weight",
                "beta" => "bias",
                other => other,
            };
            let mut tensor = tensor;
            tensor.name = format!(
                "{}{renamed}",
                &tensor.name[..tensor.name.len() - param.len()]
            );
            return tensor;
        }
        BurnToPyTorchAdapter.adapt(tensor, ctx)
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(*self)
    }
}

/// `tensor` as f32 values of shape `shape` (the same number of values).
fn to_f32(tensor: PackTensor, shape: Shape) -> PackTensor {
    let name = tensor.name.clone();
    let dims = shape.as_slice().to_vec();
    bridge::map_data(tensor, name, DType::F32, shape, move |data| {
        TensorData::new(data.iter::<f32>().collect::<Vec<f32>>(), dims.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_pattern_keeps_indices_and_the_rest_of_the_key() {
        let (pattern, replacement) = prefix_pattern("features.{}.block.0", "stages.{}.dwconv");
        assert_eq!(pattern, r"^features\.(\d+)\.block\.0(\..+)?$");
        assert_eq!(replacement, "stages.${1}.dwconv${2}");
        let (pattern, replacement) = prefix_pattern("classifier.2", "head");
        assert_eq!(pattern, r"^classifier\.2(\..+)?$");
        assert_eq!(replacement, "head${1}");
    }
}
