//! Files that steer what the agent releases (its configuration, its state file) are believed
//! only when nobody but root or the agent's own user can change them.
use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// Why a configuration file is refused.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedFile {
    #[error("{} is writable by group or others (mode {mode:o}): refusing it; chmod go-w it", path.display())]
    Writable { path: PathBuf, mode: u32 },
    #[error("{} is owned by uid {uid}, not root or this user: refusing it; chown root it", path.display())]
    Owner { path: PathBuf, uid: u32 },
    #[error(
        "{} is in {}, which is writable by group or others (mode {mode:o}) so anyone there could replace it: refusing it",
        path.display(), dir.display()
    )]
    WritableDirectory {
        path: PathBuf,
        dir: PathBuf,
        mode: u32,
    },
    #[error(
        "{} is in {}, owned by uid {uid}, not root or this user: refusing it",
        path.display(), dir.display()
    )]
    DirectoryOwner {
        path: PathBuf,
        dir: PathBuf,
        uid: u32,
    },
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks that only root or this process's user can change `path`: the file itself and every
/// directory above it, both as given and after resolving symbolic links.
pub fn check_trusted(path: &Path) -> Result<(), UntrustedFile> {
    let io = |source| UntrustedFile::Io {
        path: path.to_owned(),
        source,
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let trusted_owner = |uid: u32| uid == 0 || uid == me;
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(UntrustedFile::Writable {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    if !trusted_owner(meta.uid()) {
        return Err(UntrustedFile::Owner {
            path: path.to_owned(),
            uid: meta.uid(),
        });
    }
    let given = std::path::absolute(path).map_err(io)?;
    let resolved = std::fs::canonicalize(path).map_err(io)?;
    for dir in given
        .ancestors()
        .skip(1)
        .chain(resolved.ancestors().skip(1))
    {
        let meta = std::fs::metadata(dir).map_err(io)?;
        let mode = meta.permissions().mode();
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky {
            return Err(UntrustedFile::WritableDirectory {
                path: path.to_owned(),
                dir: dir.to_owned(),
                mode: mode & 0o7777,
            });
        }
        if !trusted_owner(meta.uid()) {
            return Err(UntrustedFile::DirectoryOwner {
                path: path.to_owned(),
                dir: dir.to_owned(),
                uid: meta.uid(),
            });
        }
    }
    Ok(())
}
