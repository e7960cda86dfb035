//! What a service manager sees of ringd, off the data path: the pid file (`--pid-file`),
//! always naming the process that accepts new connections, and systemd's readiness
//! notifications (`sd_notify(3)`: `READY=1` at start, `MAINPID=` when a live upgrade hands
//! over to a new process, `STOPPING=1` on a drain) when `NOTIFY_SOCKET` is set.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Writes `pid` to `path` atomically: a temporary file beside it, then a rename, so a reader
/// sees the old content or the new, never a partial one.
pub fn write_pid_file(path: &Path, pid: u32) -> Result<(), Error> {
    let fail = |err| Error::PidFile {
        path: path.to_path_buf(),
        err,
    };
    let tmp = temp_path(path);
    let write = || -> io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{pid}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// The pid a pid file names, if it can be read.
pub fn read_pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Removes the pid file if it still names `pid` (after a handover it names the successor,
/// which keeps it).
pub fn remove_pid_file_if(path: &Path, pid: u32) {
    if read_pid_file(path) == Some(pid) {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("cannot remove the pid file {}: {e}", path.display());
        }
    }
}

/// Sends `state` to the service manager if it asked for notifications (`NOTIFY_SOCKET`, a
/// path or an abstract `@name`); a failure is logged, never fatal.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket, state) {
        tracing::debug!("sd_notify {state:?} failed: {e}");
    }
}

fn send(socket: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = socket.as_bytes();
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), Path::new(socket))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_is_replaced_and_removed_only_by_its_owner() {
        let dir = std::env::temp_dir().join(format!("ringd-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringd.pid");
        write_pid_file(&path, 41).unwrap();
        assert_eq!(read_pid_file(&path), Some(41));
        write_pid_file(&path, 42).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "42\n");
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        remove_pid_file_if(&path, 41);
        assert!(path.exists());
        remove_pid_file_if(&path, 42);
        assert!(!path.exists());
        let err = write_pid_file(&dir.join("no/such/dir/ringd.pid"), 1).unwrap_err();
        assert!(
            err.to_string().contains("cannot write the pid file"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notify_reaches_a_datagram_socket() {
        let path = std::env::temp_dir().join(format!("ringd-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_file(&path);
    }
}
