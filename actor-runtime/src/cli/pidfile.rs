//! `--pid-file`: written at start (mode 0644), refused while the pid in it is alive, removed
//! at exit.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A pid file this process wrote; removed on drop if it still names this process.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes this process's pid to `path`, unless the file names another live process or
    /// holds something that is not a pid.
    pub(crate) fn create(path: &Path) -> Result<PidFile, String> {
        let pid = std::process::id();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let other: i32 = text.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                    format!(
                        "pid file {} holds `{}`, not a pid; remove it if no worker is running",
                        path.display(),
                        text.trim().chars().take(40).collect::<String>()
                    )
                })?;
                if other as u32 != pid && is_alive(other) {
                    return Err(format!(
                        "pid file {} names process {other}, which is running: is another worker \
                         using this pid file?",
                        path.display()
                    ));
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(format!("cannot read pid file {}: {err}", path.display())),
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
        options
            .open(path)
            .and_then(|mut file| writeln!(file, "{pid}"))
            .map_err(|err| format!("cannot write pid file {}: {err}", path.display()))?;
        Ok(PidFile {
            path: path.to_owned(),
            pid,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim().parse::<u32>().ok() == Some(self.pid));
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether process `pid` exists (signal 0: permission denied still means it exists).
pub(crate) fn is_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
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
    fn refuses_a_live_pid_and_garbage() {
        let path = temp_path("live");
        // pid 1 is always alive.
        std::fs::write(&path, "1\n").unwrap();
        let err = PidFile::create(&path).unwrap_err();
        assert!(err.contains("names process 1, which is running"), "{err}");
        std::fs::write(&path, "not a pid").unwrap();
        let err = PidFile::create(&path).unwrap_err();
        assert!(err.contains("holds `not a pid`"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn replaces_a_stale_pid() {
        let path = temp_path("stale");
        // Above the kernel's pid_max, so never a live process.
        std::fs::write(&path, "2147483000").unwrap();
        let file = PidFile::create(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(file);
    }
}
