//! CIFAR-10 from the internet: burn-dataset downloads and caches it, after we check that it can.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::DataError;

/// Where burn-dataset downloads CIFAR-10 from.
pub const CIFAR10_URL: &str = "https://s3.amazonaws.com/fast-ai-sample/cifar10.tgz";

const CIFAR10_HOST: &str = "s3.amazonaws.com:443";

/// Where burn-dataset keeps its CIFAR-10 copy: `<user cache>/burn-dataset/cifar10`, with
/// `train/<class>/*.png` and `test/<class>/*.png`. `None` when the platform has no cache
/// directory.
pub fn cifar10_cache_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|cache| cache.join("burn-dataset").join("cifar10"))
}

/// The directory of a CIFAR-10 copy in class folders: burn-dataset's cached copy, downloaded
/// first (with a progress bar, 135 MB) when it is not there yet.
///
/// burn-dataset's own `CifarDataset::new` panics when offline; this checks first that the
/// server can be reached, and turns a failure during the download into an error too.
///
/// # Errors
///
/// [`DataError::Offline`] when the server cannot be reached, [`DataError::Download`] when the
/// download fails.
pub fn download_cifar10() -> Result<PathBuf, DataError> {
    let dir = cifar10_cache_dir().ok_or_else(|| DataError::Offline {
        url: CIFAR10_URL.into(),
        reason: "this platform has no cache directory to download into".into(),
    })?;
    if dir.is_dir() {
        return Ok(dir);
    }
    check_reachable()?;
    // burn-dataset reports every network or archive problem by panicking: keep its message,
    // not the panic.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| {
        burn_dataset::vision::CifarDataset::new(burn_dataset::vision::CifarType::Cifar10)
    });
    std::panic::set_hook(hook);
    match outcome {
        Ok(_) => Ok(dir),
        Err(panic) => Err(DataError::Download {
            url: CIFAR10_URL.into(),
            reason: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".into()),
        }),
    }
}

/// Resolves the download server and opens a connection to it, within a few seconds.
fn check_reachable() -> Result<(), DataError> {
    let offline = |reason: String| DataError::Offline {
        url: CIFAR10_URL.into(),
        reason,
    };
    let addresses = CIFAR10_HOST
        .to_socket_addrs()
        .map_err(|err| offline(format!("cannot resolve the host: {err}")))?;
    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(err) => last_error = Some(err),
        }
    }
    Err(offline(match last_error {
        Some(err) => format!("cannot connect: {err}"),
        None => "the host has no address".into(),
    }))
}
