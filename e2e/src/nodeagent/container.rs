//! Starting a container: a private mount namespace (`unshare -m --propagation private`) in which
//! the image's directories and the Pod's volumes are bind-mounted at their paths, then `exec` of
//! the container's command. The host's root file system is the rest of the "image" (its `/bin/sh`,
//! its `java`); the network namespace is the host's, so every Pod listens on its own loopback
//! address. Mount points that do not exist are created as empty directories (or empty files) on
//! the host, which is the agent's one footprint outside its state directory (with the Pods'
//! net_cls cgroups, see `netfault.rs`): the container's shell joins its Pod's cgroup first
//! thing, before it mounts anything or `exec`s the command, so nothing the container opens
//! escapes the Pod's network faults.
//!
//! Why not join in the forked child before `exec` (`pre_exec`): moving a process into a net_cls
//! cgroup re-tags every socket its file table holds, and a child between `fork` and `exec` still
//! holds all of the agent's sockets (close-on-exec has not happened yet), so the agent's own
//! connections (to the API server) would take the Pod's class id and be cut with it.
//!
//! Termination messages: when a container's `terminationMessagePath` lies inside one of its
//! volume mounts (an emptyDir at `/quorate-result`, the path `/quorate-result/message`), the file
//! the container wrote there is in that volume's host directory ([`host_path`]), and its last
//! [`MAX_TERMINATION_MESSAGE`] bytes become `state.terminated.message` when the container exits
//! ([`read_termination_message`]). A path under no volume mount (the API's default
//! `/dev/termination-log`) gives no message: the agent creates no file for it, in the host's
//! `/dev` or anywhere else. Unlike the kubelet, which bind-mounts a fresh empty file per container
//! run over the path, the agent reads the volume's own file: it is visible to the Pod's other
//! containers, and it survives a restart, so a run that writes nothing reports the previous
//! run's message.
//!
//! `terminationMessagePolicy: FallbackToLogsOnError` is not implemented beyond the file: a failed
//! container whose file is empty or missing gets no message (the kubelet would report the tail of
//! its log).

use std::fs::OpenOptions;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process::Child;

/// A bind mount inside a container's mount namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

impl Mount {
    pub(super) fn new(source: PathBuf, target: String, read_only: bool) -> Mount {
        Mount {
            source,
            target,
            read_only,
        }
    }
}

/// Everything needed to start one container process.
#[derive(Debug)]
pub(super) struct Launch {
    /// `namespace/pod/container`, for the process name and the log header.
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Mounted in this order: the image's, then the Pod's volumes, shallowest path first.
    pub mounts: Vec<Mount>,
    pub workdir: String,
    pub log: PathBuf,
    /// The `cgroup.procs` of the Pod's net_cls cgroup, joined first thing.
    pub cgroup_procs: Option<PathBuf>,
    /// The host file behind the container's `terminationMessagePath`, when that path lies inside
    /// one of its volume mounts ([`host_path`]).
    pub termination_message: Option<PathBuf>,
}

/// How much of a termination message file is reported (its end), as the kubelet does.
pub(super) const MAX_TERMINATION_MESSAGE: u64 = 4096;

/// Where `path`, an absolute path inside the container, lies on the host through `mounts`: under
/// the deepest mount whose mount path is `path` itself or one of its ancestors (whole components:
/// `/r` is not an ancestor of `/rr/x`); of equally deep ones, the last, which is mounted over the
/// others. A mount's source already includes its subPath ([`super::volumes::PodVolumes::mounts`]).
/// `None` for a relative path, a path with `..`, or a path under no mount.
pub(super) fn host_path(path: &str, mounts: &[Mount]) -> Option<PathBuf> {
    let path = Path::new(path);
    let plain = |p: &Path| p.is_absolute() && !p.components().any(|c| c == Component::ParentDir);
    if !plain(path) {
        return None;
    }
    let mut best: Option<(usize, &Mount, &Path)> = None;
    for m in mounts {
        let target = Path::new(&m.target);
        if !plain(target) {
            continue;
        }
        let Ok(rest) = path.strip_prefix(target) else {
            continue;
        };
        let depth = target.components().count();
        if best.is_none_or(|(deepest, _, _)| depth >= deepest) {
            best = Some((depth, m, rest));
        }
    }
    best.map(|(_, m, rest)| {
        if rest.as_os_str().is_empty() {
            m.source.clone()
        } else {
            m.source.join(rest)
        }
    })
}

/// The termination message in `file`: its last [`MAX_TERMINATION_MESSAGE`] bytes (invalid UTF-8
/// replaced). `None` when the file is missing or empty, or is not a regular file (a symlink is
/// not followed: it would resolve against the host's root, not the container's view; a FIFO is
/// not waited on).
pub(super) fn read_termination_message(file: &Path) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let read = || -> io::Result<Vec<u8>> {
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(file)?;
        let meta = f.metadata()?;
        if !meta.is_file() {
            return Ok(Vec::new());
        }
        f.seek(SeekFrom::Start(
            meta.len().saturating_sub(MAX_TERMINATION_MESSAGE),
        ))?;
        let mut bytes = Vec::new();
        f.take(MAX_TERMINATION_MESSAGE).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    match read() {
        Ok(bytes) if !bytes.is_empty() => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "reading a termination message");
            None
        }
    }
}

/// Quotes `s` for a POSIX shell.
pub(super) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script run by `/bin/sh` inside the new mount namespace before `exec "$@"`: it joins the
/// Pod's cgroup (when given), mounts, and changes to the working directory.
pub(super) fn mount_script(cgroup_procs: Option<&Path>, mounts: &[Mount], workdir: &str) -> String {
    let mut script = String::from("set -e\n");
    if let Some(procs) = cgroup_procs {
        script.push_str(&format!(
            "echo $$ > {}\n",
            shell_quote(&procs.display().to_string())
        ));
    }
    for m in mounts {
        let src = shell_quote(&m.source.display().to_string());
        let dst = shell_quote(&m.target);
        if m.source.is_dir() {
            script.push_str(&format!("mkdir -p {dst}\n"));
        } else {
            script.push_str(&format!(
                "mkdir -p \"$(dirname {dst})\"; [ -e {dst} ] || : > {dst}\n"
            ));
        }
        script.push_str(&format!("mount --bind {src} {dst}\n"));
        if m.read_only {
            script.push_str(&format!("mount -o remount,bind,ro {dst}\n"));
        }
    }
    script.push_str(&format!(
        "mkdir -p {wd} 2>/dev/null || true\ncd {wd}\nexec \"$@\"\n",
        wd = shell_quote(workdir)
    ));
    script
}

/// Spawns the container: output appended to its log file, environment exactly `launch.env`.
pub(super) fn spawn(launch: &Launch, attempt: i32) -> io::Result<Child> {
    if let Some(dir) = launch.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)?;
    writeln!(
        log,
        "--- quorate node agent: starting {} (restart {attempt}) at {}: {:?}",
        launch.name,
        k8s_openapi::jiff::Timestamp::now(),
        launch.argv
    )?;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(mount_script(
            launch.cgroup_procs.as_deref(),
            &launch.mounts,
            &launch.workdir,
        ))
        .arg("sh")
        .args(&launch.argv)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Child::spawn(launch.name.clone(), cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn mounts_in_order_and_remounts_read_only_ones() {
        let dir = tempfile::tempdir().unwrap();
        let script = mount_script(
            None,
            &[
                Mount::new(dir.path().to_path_buf(), "/data".into(), false),
                Mount::new(dir.path().join("file"), "/etc/x.cfg".into(), true),
            ],
            "/work dir",
        );
        let data = script.find("mount --bind").unwrap();
        let file = script.find("/etc/x.cfg").unwrap();
        assert!(data < file);
        assert!(script.contains("mount -o remount,bind,ro '/etc/x.cfg'"));
        assert!(script.contains(": > '/etc/x.cfg'"));
        assert!(script.ends_with("cd '/work dir'\nexec \"$@\"\n"));
        assert!(!script.contains("cgroup"));
    }

    #[test]
    fn joins_the_cgroup_before_anything_else() {
        let script = mount_script(
            Some(Path::new("/sys/fs/cgroup/net_cls/q/127.0.9.2/cgroup.procs")),
            &[Mount::new("/tmp".into(), "/data".into(), false)],
            "/",
        );
        assert!(
            script.starts_with(
                "set -e\necho $$ > '/sys/fs/cgroup/net_cls/q/127.0.9.2/cgroup.procs'\nmkdir"
            ),
            "{script}"
        );
    }

    fn m(source: &str, target: &str) -> Mount {
        Mount::new(source.into(), target.into(), false)
    }

    #[test]
    fn a_termination_path_resolves_through_the_deepest_mount_above_it() {
        let mounts = [
            m("/pods/u/volumes/data", "/var/lib/zookeeper"),
            m("/pods/u/volumes/result", "/quorate-result"),
            m("/pods/u/volumes/conf", "/var/lib/zookeeper/conf"),
        ];
        let at = |p| host_path(p, &mounts);
        assert_eq!(
            at("/quorate-result/message"),
            Some("/pods/u/volumes/result/message".into())
        );
        assert_eq!(
            at("/var/lib/zookeeper/data/message"),
            Some("/pods/u/volumes/data/data/message".into())
        );
        // The nested mount hides the outer one's `conf` directory.
        assert_eq!(
            at("/var/lib/zookeeper/conf/sub/message"),
            Some("/pods/u/volumes/conf/sub/message".into())
        );
        // Redundant separators and `.` do not matter; `..` is refused.
        assert_eq!(
            at("//quorate-result/./message/"),
            Some("/pods/u/volumes/result/message".into())
        );
        assert_eq!(at("/quorate-result/../etc/passwd"), None);
    }

    #[test]
    fn a_termination_path_at_a_mount_root_is_the_mount_source() {
        let mounts = [
            m("/pods/u/volumes/result", "/r"),
            m("/pods/u/volumes/cfg/..data/zoo.cfg", "/etc/zoo.cfg"),
        ];
        assert_eq!(
            host_path("/r", &mounts),
            Some("/pods/u/volumes/result".into())
        );
        assert_eq!(
            host_path("/r/", &mounts),
            Some("/pods/u/volumes/result".into())
        );
        assert_eq!(
            host_path("/etc/zoo.cfg", &mounts),
            Some("/pods/u/volumes/cfg/..data/zoo.cfg".into())
        );
    }

    #[test]
    fn a_termination_path_under_a_subpath_mount_lies_in_the_subdirectory() {
        // `mounts()` joins the subPath to the volume's directory.
        let mounts = [m("/pods/u/volumes/shared/init", "/out")];
        assert_eq!(
            host_path("/out/message", &mounts),
            Some("/pods/u/volumes/shared/init/message".into())
        );
    }

    #[test]
    fn a_termination_path_under_no_mount_has_no_host_file() {
        let mounts = [m("/pods/u/volumes/result", "/r"), m("/x", "/dev/shm")];
        assert_eq!(host_path("/dev/termination-log", &mounts), None);
        assert_eq!(
            host_path("/rr/message", &mounts),
            None,
            "whole components only"
        );
        assert_eq!(host_path("/", &mounts), None);
        assert_eq!(host_path("r/message", &mounts), None, "relative");
        assert_eq!(host_path("/r/message", &[]), None);
        // Of two mounts at the same path, the later one (mounted over the other) wins.
        let twice = [m("/a", "/r"), m("/b", "/r")];
        assert_eq!(host_path("/r/message", &twice), Some("/b/message".into()));
    }

    #[test]
    fn a_termination_message_is_the_last_4096_bytes_of_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("message");
        assert_eq!(read_termination_message(&file), None, "missing");
        std::fs::write(&file, "").unwrap();
        assert_eq!(read_termination_message(&file), None, "empty");
        std::fs::write(&file, "hello\n").unwrap();
        assert_eq!(read_termination_message(&file).as_deref(), Some("hello\n"));
        let long = format!("{}{}", "a".repeat(100), "b".repeat(4096));
        std::fs::write(&file, &long).unwrap();
        assert_eq!(read_termination_message(&file), Some("b".repeat(4096)));
        assert_eq!(read_termination_message(dir.path()), None, "a directory");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_termination_message(&link), None, "a symlink");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read_termination_message(&fifo),
            None,
            "a FIFO, without blocking"
        );
    }
}
