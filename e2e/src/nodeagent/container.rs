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

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
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
}
