//! torchvision's checkpoint addresses, and checkpoints in torch's cache: a file torchvision
//! already fetched is reused, and one we fetch (with the `download` feature, `fetch.rs`) is
//! torchvision's too.

use std::path::{Path, PathBuf};

use crate::CheckpointError;

#[cfg(feature = "download")]
mod fetch;

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
/// Downloading needs the `download` cargo feature (on in the `normzoo` crate by default, off
/// in `normzoo-models`, so that a program wanting only layers and models builds no HTTP client,
/// async runtime or TLS library); a file already in the cache needs nothing.
///
/// As torch's `load_state_dict_from_url`, a file name with a hash part (`name-<hex>.pth`) is
/// checked: the SHA-256 of the download must begin with it. The download goes to a `.partial`
/// file first and is renamed only once complete and checked, so the cache never holds a
/// truncated or wrong file.
///
/// # Errors
///
/// [`CheckpointError::Download`]: no cache directory, the file not in the cache in a build
/// without the `download` feature (the message names it), the server unreachable or answering
/// with an error, a hash that does not match, or the file not writable.
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
    #[cfg(feature = "download")]
    let fetched = fetch::into_cache(url, &dir, name);
    #[cfg(not(feature = "download"))]
    let fetched = Err(not_built_in(&path));
    fetched.map(|()| path).map_err(failed)
}

/// Why a checkpoint that is not in the cache cannot be had without the `download` feature, and
/// what to do instead.
#[cfg(any(test, not(feature = "download")))]
fn not_built_in(path: &Path) -> String {
    format!(
        "it is not in the cache ({}), and downloading needs normzoo's `download` feature (on in \
         the `normzoo` crate by default; `features = [\"download\"]` on `normzoo-models`): \
         enable it, or fetch the file yourself and give its path",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_feature_the_error_names_it_and_the_file() {
        let message = not_built_in(Path::new("cache/resnet18-f37072fd.pth"));
        assert!(message.contains("cache/resnet18-f37072fd.pth"), "{message}");
        assert!(message.contains("`download` feature"), "{message}");
    }

    /// A file in the cache is used as it is, whether or not this build can download.
    #[test]
    fn a_cached_checkpoint_needs_no_download() {
        let dir = std::env::temp_dir().join(format!("normzoo-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cached = dir.join("resnet18-f37072fd.pth");
        std::fs::write(&cached, b"weights").unwrap();
        let url = "http://127.0.0.1:9/resnet18-f37072fd.pth";
        assert_eq!(download_checkpoint(url, Some(&dir)).unwrap(), cached);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
