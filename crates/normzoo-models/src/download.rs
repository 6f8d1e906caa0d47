//! Downloading checkpoints into torch's cache, so that a file torchvision already fetched is
//! reused and one we fetch is torchvision's too.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::CheckpointError;

/// torchvision's ImageNet ResNet18 (`ResNet18_Weights.IMAGENET1K_V1`, 69.758% top-1).
pub const RESNET18_IMAGENET: &str = "https://download.pytorch.org/models/resnet18-f37072fd.pth";

/// torchvision's ImageNet ResNet34 (`ResNet34_Weights.IMAGENET1K_V1`, 73.314% top-1).
pub const RESNET34_IMAGENET: &str = "https://download.pytorch.org/models/resnet34-b627a593.pth";

/// torchvision's ImageNet ResNet50 (`ResNet50_Weights.IMAGENET1K_V1`, 76.130% top-1).
pub const RESNET50_IMAGENET: &str = "https://download.pytorch.org/models/resnet50-0676ba61.pth";

/// torchvision's ImageNet ResNet101 (`ResNet101_Weights.IMAGENET1K_V1`, 77.374% top-1).
pub const RESNET101_IMAGENET: &str = "https://download.pytorch.org/models/resnet101-63fe2227.pth";

/// torchvision's ImageNet ResNet152 (`ResNet152_Weights.IMAGENET1K_V1`, 78.312% top-1).
pub const RESNET152_IMAGENET: &str = "https://download.pytorch.org/models/resnet152-394f9c45.pth";

/// torchvision's ImageNet ConvNeXt-T (`ConvNeXt_Tiny_Weights.IMAGENET1K_V1`, 82.520% top-1).
pub const CONVNEXT_TINY_IMAGENET: &str =
    "https://download.pytorch.org/models/convnext_tiny-983f1562.pth";

/// torchvision's ImageNet ConvNeXt-S (`ConvNeXt_Small_Weights.IMAGENET1K_V1`, 83.616% top-1).
pub const CONVNEXT_SMALL_IMAGENET: &str =
    "https://download.pytorch.org/models/convnext_small-0c510722.pth";

/// torchvision's ImageNet ConvNeXt-B (`ConvNeXt_Base_Weights.IMAGENET1K_V1`, 84.062% top-1).
pub const CONVNEXT_BASE_IMAGENET: &str =
    "https://download.pytorch.org/models/convnext_base-6075fbad.pth";

/// torchvision's ImageNet ConvNeXt-L (`ConvNeXt_Large_Weights.IMAGENET1K_V1`, 84.414% top-1).
pub const CONVNEXT_LARGE_IMAGENET: &str =
    "https://download.pytorch.org/models/convnext_large-ea097f82.pth";

/// torchvision's ImageNet VGG11 (`VGG11_Weights.IMAGENET1K_V1`, 69.020% top-1).
pub const VGG11_IMAGENET: &str = "https://download.pytorch.org/models/vgg11-8a719046.pth";

/// torchvision's ImageNet VGG11-BN (`VGG11_BN_Weights.IMAGENET1K_V1`, 70.370% top-1).
pub const VGG11_BN_IMAGENET: &str = "https://download.pytorch.org/models/vgg11_bn-6002323d.pth";

/// torchvision's ImageNet VGG13 (`VGG13_Weights.IMAGENET1K_V1`, 69.928% top-1).
pub const VGG13_IMAGENET: &str = "https://download.pytorch.org/models/vgg13-19584684.pth";

/// torchvision's ImageNet VGG13-BN (`VGG13_BN_Weights.IMAGENET1K_V1`, 71.586% top-1).
pub const VGG13_BN_IMAGENET: &str = "https://download.pytorch.org/models/vgg13_bn-abd245e5.pth";

/// torchvision's ImageNet VGG19 (`VGG19_Weights.IMAGENET1K_V1`, 72.376% top-1).
pub const VGG19_IMAGENET: &str = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth";

/// torchvision's ImageNet VGG19-BN (`VGG19_BN_Weights.IMAGENET1K_V1`, 74.218% top-1).
pub const VGG19_BN_IMAGENET: &str = "https://download.pytorch.org/models/vgg19_bn-c79401a0.pth";

/// torchvision's ImageNet VGG16 (`VGG16_Weights.IMAGENET1K_V1`, 71.592% top-1).
pub const VGG16_IMAGENET: &str = "https://download.pytorch.org/models/vgg16-397923af.pth";

/// torchvision's ImageNet VGG16-BN (`VGG16_BN_Weights.IMAGENET1K_V1`, 73.360% top-1).
pub const VGG16_BN_IMAGENET: &str = "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth";

/// The checkpoint `source` names: a path as it is, or an `http://` or `https://` address
/// downloaded into torch's cache ([`download_checkpoint`]) and that file's path.
///
/// # Errors
///
/// [`CheckpointError::Download`] when an address cannot be fetched.
pub fn checkpoint_path(source: &str) -> Result<PathBuf, CheckpointError> {
    if source.starts_with("http://") || source.starts_with("https://") {
        download_checkpoint(source, None)
    } else {
        Ok(PathBuf::from(source))
    }
}

/// torch's checkpoint cache, as `torch.hub.get_dir()` finds it: `$TORCH_HOME/hub/checkpoints`,
/// else `$XDG_CACHE_HOME/torch/hub/checkpoints`, else `~/.cache/torch/hub/checkpoints`.
pub fn torch_cache_dir() -> Option<PathBuf> {
    let env = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    let torch_home = env("TORCH_HOME").map(PathBuf::from).or_else(|| {
        env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|home| Path::new(&home).join(".cache")))
            .map(|cache| cache.join("torch"))
    })?;
    Some(torch_home.join("hub").join("checkpoints"))
}

/// The checkpoint at `url`, from `cache_dir` when it is there, else downloaded into it (with a
/// progress bar on stderr) and returned. `cache_dir` `None` is [`torch_cache_dir`].
///
/// As torch's `load_state_dict_from_url`, a file name with a hash part (`name-<hex>.pth`) is
/// checked: the SHA-256 of the download must begin with it. The download goes to a `.partial`
/// file first and is renamed only once complete and checked, so the cache never holds a
/// truncated or wrong file.
///
/// # Errors
///
/// [`CheckpointError::Download`]: no cache directory, the server unreachable or answering with
/// an error, a hash that does not match, or the file not writable.
pub fn download_checkpoint(
    url: &str,
    cache_dir: Option<&Path>,
) -> Result<PathBuf, CheckpointError> {
    let failed = |reason: String| CheckpointError::Download {
        url: url.into(),
        reason,
    };
    let dir = match cache_dir {
        Some(dir) => dir.to_path_buf(),
        None => torch_cache_dir()
            .ok_or_else(|| failed("no cache directory: set TORCH_HOME or HOME".into()))?,
    };
    let name = url
        .rsplit('/')
        .next()
        .filter(|name| !name.is_empty())
        .ok_or_else(|| failed("the address names no file".into()))?;
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(&dir).map_err(|err| failed(format!("{}: {err}", dir.display())))?;
    let partial = dir.join(format!("{name}.partial"));
    let result = fetch(url, name, &partial).and_then(|digest| match expected_hash(name) {
        Some(expected) if !hex(&digest).starts_with(expected) => Err(format!(
            "its SHA-256 is {}, the file name says it begins with {expected}",
            hex(&digest)
        )),
        _ => Ok(()),
    });
    match result.and_then(|()| fs::rename(&partial, &path).map_err(|err| err.to_string())) {
        Ok(()) => Ok(path),
        Err(reason) => {
            // Best effort: a partial file is never used, only overwritten next time.
            let _ = fs::remove_file(&partial);
            Err(failed(reason))
        }
    }
}

/// Streams `url` into `file`, returning the SHA-256 of what came.
fn fetch(url: &str, name: &str, file: &Path) -> Result<Vec<u8>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the download: {err}"))?;
    runtime.block_on(async {
        let mut response = reqwest::Client::new()
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| err.to_string())?;
        let mut out = fs::File::create(file).map_err(|err| format!("{}: {err}", file.display()))?;
        let progress = ProgressBar::new(response.content_length().unwrap_or(0));
        progress.set_style(
            ProgressStyle::with_template("{msg} {wide_bar} {bytes}/{total_bytes} ({eta})")
                .expect("a valid progress template"),
        );
        progress.set_message(format!("downloading {name}"));
        let mut hasher = Sha256::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| err.to_string())? {
            out.write_all(&chunk)
                .map_err(|err| format!("{}: {err}", file.display()))?;
            hasher.update(&chunk);
            progress.inc(chunk.len() as u64);
        }
        out.sync_all()
            .map_err(|err| format!("{}: {err}", file.display()))?;
        progress.finish_and_clear();
        Ok(hasher.finalize().to_vec())
    })
}

/// The hash part of a torch checkpoint's file name: the hex digits after its last `-`, before
/// the extension (`f37072fd` in `resnet18-f37072fd.pth`).
fn expected_hash(name: &str) -> Option<&str> {
    let stem = name.split('.').next()?;
    let (_, hash) = stem.rsplit_once('-')?;
    let is_hex = !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit());
    is_hex.then_some(hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_part_of_a_file_name_is_torchs() {
        assert_eq!(expected_hash("resnet18-f37072fd.pth"), Some("f37072fd"));
        assert_eq!(
            expected_hash("convnext_tiny-983f1562.pth"),
            Some("983f1562")
        );
        assert_eq!(expected_hash("my-model.pth"), None);
        assert_eq!(expected_hash("weights.safetensors"), None);
    }
}
