//! dnsmasq's configuration files as the engine reads them ([`ConfFiles`]), from the file system.
use std::path::{Path, PathBuf};

use dhcp_engine::{
    dnsmasq_conf::{ConfError, ConfFiles, DnsmasqConfig},
    server_identity::ServerIdentity,
};

/// The file system.
pub struct Fs;

impl ConfFiles for Fs {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn files_in(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect())
    }

    fn modified_unix_ns(&self, path: &Path) -> Option<i128> {
        modified_unix_ns(path)
    }
}

/// A file's (or directory's) modification time, Unix ns.
pub fn modified_unix_ns(path: &Path) -> Option<i128> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    i128::try_from(since.as_nanos()).ok()
}

/// The server identity seeded from the dnsmasq configuration at `path`, if one is given;
/// `local`: the router's own subnets (none offline).
pub fn server_identity(
    path: Option<&Path>,
    local: &[dhcp_engine::subnet::Subnet],
) -> Result<ServerIdentity, ConfError> {
    match path {
        Some(path) => Ok(ServerIdentity::from_config(
            &DnsmasqConfig::load(path, &Fs)?,
            local,
        )),
        None => Ok(ServerIdentity::default()),
    }
}
