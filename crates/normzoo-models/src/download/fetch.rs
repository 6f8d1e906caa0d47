//! Fetching a checkpoint over HTTP(S) into the cache (the `download` feature): streamed to a
//! `.partial` file, its SHA-256 checked against the hash part of its name, then renamed.

use std::fs;
use std::io::Write;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// Downloads `url` into `dir` as `name`. The download goes to a `.partial` file first and is
/// renamed only once complete and checked, so the cache never holds a truncated or wrong file.
pub(super) fn into_cache(url: &str, dir: &Path, name: &str) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let partial = dir.join(format!("{name}.partial"));
    let result = fetch(url, name, &partial).and_then(|digest| match expected_hash(name) {
        Some(expected) if !hex(&digest).starts_with(expected) => Err(format!(
            "its SHA-256 is {}, the file name says it begins with {expected}",
            hex(&digest)
        )),
        _ => Ok(()),
    });
    let result =
        result.and_then(|()| fs::rename(&partial, dir.join(name)).map_err(|err| err.to_string()));
    if result.is_err() {
        // Best effort: a partial file is never used, only overwritten next time.
        let _ = fs::remove_file(&partial);
    }
    result
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
