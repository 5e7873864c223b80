//! `--pid-file`: created without following symlinks, locked (`flock`) for the process's
//! lifetime, refused while another process holds the lock, removed at exit.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// A pid file this process holds locked; removed on drop.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
    /// Held until drop: the lock, not the pid in the file, says a worker runs.
    _file: Flock<File>,
}

impl PidFile {
    /// Locks `path` (creating it) and writes this process's pid in it. Refused when `path`
    /// is a symlink, when another process holds the lock, or when the file holds something
    /// that is not a pid (a mistyped path naming another file).
    pub(crate) fn create(path: &Path) -> Result<PidFile, String> {
        let shown = path.display();
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o644).custom_flags(nix::libc::O_NOFOLLOW);
        }
        let file = options.open(path).map_err(|err| {
            if err.raw_os_error() == Some(nix::libc::ELOOP) {
                format!("pid file {shown} is a symlink; refusing to follow it")
            } else {
                format!("cannot open pid file {shown}: {err}")
            }
        })?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, _)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = text.trim().chars().take(20).collect::<String>();
                return Err(format!(
                    "pid file {shown} is locked by process {holder}, which is running: is \
                     another worker using this pid file?"
                ));
            }
        };
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|err| format!("cannot read pid file {shown}: {err}"))?;
        if !text.trim().is_empty() && text.trim().parse::<u32>().is_err() {
            return Err(format!(
                "pid file {shown} holds `{}`, not a pid; remove it if no worker is running",
                text.trim().chars().take(40).collect::<String>()
            ));
        }
        // Whoever wrote a pid here is gone: it no longer holds the lock.
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(|err| format!("cannot write pid file {shown}: {err}"))?;
        Ok(PidFile {
            path: path.to_owned(),
            _file: file,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Still locked: nobody else wrote it. The lock goes with the file handle.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("{name}-{}.pid", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn writes_and_removes_its_own_pid() {
        let path = temp_path("own");
        let file = PidFile::create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn refuses_a_locked_file_garbage_and_symlinks() {
        let path = temp_path("locked");
        let held = PidFile::create(&path).unwrap();
        let err = PidFile::create(&path).unwrap_err();
        assert!(
            err.contains(&format!("locked by process {}", std::process::id())),
            "{err}"
        );
        drop(held);

        std::fs::write(&path, "not a pid").unwrap();
        let err = PidFile::create(&path).unwrap_err();
        assert!(err.contains("holds `not a pid`"), "{err}");

        let link = temp_path("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = PidFile::create(&link).unwrap_err();
        assert!(err.contains("is a symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a pid");
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn replaces_a_stale_pid() {
        let path = temp_path("stale");
        // A pid nobody holds the lock for, even a live process's (pid 1): it was reused.
        std::fs::write(&path, "1").unwrap();
        let file = PidFile::create(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(file);
    }
}
