//! Lays out an app root the way the host loads it: `host.json`, the handler binary at
//! `defaultExecutablePath`, one folder per function, and `bridge.toml`.

use std::path::{Path, PathBuf};

/// Copies the repository's app files and `binary` into `dest` (created or refreshed).
pub fn stage(repo: &Path, binary: &Path, dest: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dest)?;
    std::fs::copy(repo.join("host.json"), dest.join("host.json"))?;
    let host: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("host.json"))?)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let exe = host["customHandler"]["description"]["defaultExecutablePath"]
        .as_str()
        .unwrap_or("qualtrics-bridge");
    let target = dest.join(exe);
    let _ = std::fs::remove_file(&target);
    std::fs::copy(binary, &target)?;
    for entry in std::fs::read_dir(repo.join("functions"))? {
        let dir = entry?.path();
        if let Some(name) = dir.file_name() {
            let out = dest.join(name);
            std::fs::create_dir_all(&out)?;
            std::fs::copy(dir.join("function.json"), out.join("function.json"))?;
        }
    }
    if repo.join("bridge.toml").exists() {
        std::fs::copy(repo.join("bridge.toml"), dest.join("bridge.toml"))?;
    }
    Ok(dest.to_path_buf())
}
