//! The kazoo judge: an independent ZooKeeper client (Python, kazoo 2.11) that writes and checks
//! data, so tests do not judge quorate with quorate's own client.
//!
//! [`ensure_venv`] installs kazoo into a cached virtualenv (`$QUORATE_CACHE/kazoo-venv-<hash>`,
//! one per set of requirements); [`Judge`] runs `e2e/python/zkjudge.py` (embedded in this crate
//! and written into the venv under a name of its own hash) and parses its JSON.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::cache::{cache_dir, progress};
use crate::process::Child;
use crate::zookeeper::{lock_exclusive, sha1_hex, write_if_changed};

const REQUIREMENTS: &str = include_str!("../python/requirements.txt");
const SCRIPT: &str = include_str!("../python/zkjudge.py");

/// Bytes per znode that `zkjudge.py write` uses unless told otherwise.
const DEFAULT_SIZE: usize = 64;

/// Errors of the kazoo judge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Python (3.8+ with `venv`) is missing.
    #[error("python3 was not found: {0}")]
    MissingPython(String),
    /// Creating the venv or installing kazoo failed.
    #[error("installing kazoo failed: {message}\n{output}")]
    Install { message: String, output: String },
    /// A file or process error.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// zkjudge failed (exit status 2, a timeout, or output that is not the expected JSON).
    #[error("zkjudge {command} failed: {message}; stderr:\n{stderr}")]
    Judge {
        command: String,
        message: String,
        stderr: String,
    },
    /// The testbed's own helpers failed.
    #[error(transparent)]
    Testbed(#[from] crate::zookeeper::Error),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// The directory of the cached virtualenv: one per set of requirements, so that checkouts with
/// different requirements sharing one cache (a fresh clone's CI beside a working tree) never
/// reinstall it under each other's running judges.
pub fn venv_dir() -> PathBuf {
    let sha = sha1_hex(REQUIREMENTS.as_bytes());
    cache_dir().join(format!("kazoo-venv-{}", &sha[..12]))
}

/// The judge script's file in the venv: one per content, for the same reason.
fn script_path() -> PathBuf {
    let sha = sha1_hex(SCRIPT.as_bytes());
    venv_dir().join(format!("zkjudge-{}.py", &sha[..12]))
}

fn find_python() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("QUORATE_PYTHON").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingPython("install Python 3.8+ with venv (e.g. `apt-get install python3-venv`) or set QUORATE_PYTHON".into()))
}

fn run_install_step(what: &str, cmd: &mut Command) -> Result<(), Error> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {what}")))?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        let tail: Vec<&str> = output.lines().rev().take(30).collect();
        let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(Error::Install {
            message: format!("{what}: {}", out.status),
            output: tail,
        });
    }
    Ok(())
}

/// Installs kazoo (from `e2e/python/requirements.txt`) into `$QUORATE_CACHE/kazoo-venv`, or reuses
/// it (a stamp file is written last), writes `zkjudge.py` next to it, and returns the venv's
/// `python`. Blocking; the first run takes a few seconds.
pub fn ensure_venv() -> Result<PathBuf, Error> {
    let dir = venv_dir();
    let python = dir.join("bin").join("python");
    let stamp = dir.join("quorate.stamp");
    let want = format!(
        "quorate-testbed kazoo venv\nrequirements-sha1 {}\n",
        sha1_hex(REQUIREMENTS.as_bytes())
    );
    let installed = || {
        python.is_file()
            && fs::read_to_string(&stamp)
                .map(|s| s == want)
                .unwrap_or(false)
    };
    if !installed() {
        let _lock = lock_exclusive(&dir.with_extension("lock"))?;
        if !installed() {
            let start = Instant::now();
            progress(
                "kazoo",
                start,
                &format!("installing kazoo into {}", dir.display()),
            );
            let system_python = find_python()?;
            if dir.exists() {
                fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
            }
            run_install_step(
                "python3 -m venv",
                Command::new(&system_python).arg("-m").arg("venv").arg(&dir),
            )?;
            let requirements = dir.join("requirements.txt");
            fs::write(&requirements, REQUIREMENTS).map_err(io_err("writing requirements.txt"))?;
            run_install_step(
                "pip install",
                Command::new(&python)
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--disable-pip-version-check",
                        "--no-input",
                        "-q",
                        "-r",
                    ])
                    .arg(&requirements),
            )?;
            run_install_step(
                "import kazoo",
                Command::new(&python).args(["-c", "import kazoo.client"]),
            )?;
            fs::write(&stamp, &want).map_err(io_err("writing the venv stamp"))?;
            progress("kazoo", start, "kazoo installed");
        }
    }
    write_if_changed(&script_path(), SCRIPT.as_bytes())?;
    Ok(python)
}

/// A digest user and password, as the judge's `--auth user:pw`.
pub type Auth<'a> = Option<(&'a str, &'a str)>;

/// Result of `write`.
#[derive(Clone, Debug, Deserialize)]
pub struct WriteReport {
    pub written: usize,
    pub prefix: String,
    pub count: usize,
    pub size: usize,
    pub failures: Vec<String>,
    pub failure_count: usize,
    pub seconds: f64,
}

/// Result of `verify` (and of `check-acked`, with `acked` instead of `checked`).
#[derive(Clone, Debug, Deserialize)]
pub struct VerifyReport {
    pub ok: bool,
    #[serde(default)]
    pub checked: usize,
    #[serde(default)]
    pub children: usize,
    pub missing_count: usize,
    pub mismatched_count: usize,
    /// The first 20 missing paths.
    pub missing: Vec<String>,
    /// The first 20 paths with other content.
    pub mismatched: Vec<String>,
    pub seconds: f64,
}

/// Result of `check-acked`.
#[derive(Clone, Debug, Deserialize)]
pub struct CheckAckedReport {
    pub ok: bool,
    pub acked: usize,
    pub missing_count: usize,
    pub mismatched_count: usize,
    pub missing: Vec<String>,
    pub mismatched: Vec<String>,
    pub seconds: f64,
}

/// Result of `writer`.
#[derive(Clone, Debug, Deserialize)]
pub struct WriterReport {
    /// Acknowledged writes (each recorded in the out file).
    pub acked: usize,
    pub attempts: usize,
    /// Failed attempts by exception name (ConnectionLoss, SessionExpiredError, ...).
    pub errors: BTreeMap<String, usize>,
    pub run: String,
    pub out: String,
    pub seconds: f64,
}

/// Counts of operations by outcome.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Outcomes {
    /// Acknowledged: the server answered with a result.
    pub ok: usize,
    /// Refused by the server (BadVersion, NoNode): known not to have taken effect.
    pub failed: usize,
    /// Connection loss, session expiry or a timeout: a write may or may not have taken effect.
    pub unknown: usize,
}

/// Result of `history`.
#[derive(Clone, Debug, Deserialize)]
pub struct HistoryReport {
    /// Operations recorded (the keys' init lines not counted).
    pub operations: usize,
    /// Counts by kind (`get`, `set`, `cas`) and outcome.
    pub by_kind: BTreeMap<String, Outcomes>,
    /// Counts by outcome, all kinds together.
    pub by_outcome: Outcomes,
    /// Errors by exception name (also those of connecting).
    pub errors: BTreeMap<String, usize>,
    pub clients: usize,
    pub keys: usize,
    pub prefix: String,
    /// The seed of the random choices (given or drawn).
    pub seed: u64,
    pub out: String,
    pub seconds: f64,
}

/// What a `history` run does; see [`Judge::history`].
#[derive(Clone, Debug)]
pub struct HistorySpec {
    /// The parent of the keys `<prefix>/k0` .. `<prefix>/k{keys-1}`.
    pub prefix: String,
    pub keys: usize,
    /// Concurrent clients, each its own session; client `i` first tries member `i` (mod the
    /// members in the connect string).
    pub clients: usize,
    /// At most this long ...
    pub duration: Duration,
    /// ... and at most this many operations in all.
    pub ops: usize,
    /// The seed of the random choices; `None` draws one (reported).
    pub seed: Option<u64>,
    /// Each client's pause between operations.
    pub interval: Duration,
}

impl HistorySpec {
    /// `clients` clients on `keys` keys under `prefix`, for at most `duration` and `ops`
    /// operations, no pause, a drawn seed.
    pub fn new(
        prefix: impl Into<String>,
        keys: usize,
        clients: usize,
        duration: Duration,
        ops: usize,
    ) -> HistorySpec {
        HistorySpec {
            prefix: prefix.into(),
            keys,
            clients,
            duration,
            ops,
            seed: None,
            interval: Duration::ZERO,
        }
    }
}

/// A running `history` recorder; see [`Judge::history`].
#[derive(Debug)]
pub struct HistoryRecorder {
    run: Running,
    out: PathBuf,
}

impl HistoryRecorder {
    /// The history file (JSON lines, one per completed operation, after one init line per key).
    pub fn out_file(&self) -> &Path {
        &self.out
    }

    /// The recorder's process id.
    pub fn pid(&self) -> u32 {
        self.run.child.pid()
    }

    /// Asks the recorder to stop now (SIGTERM: each client finishes the operation in flight)
    /// and waits for its summary.
    pub async fn stop(self) -> Result<HistoryReport, Error> {
        // An error means it has already exited; the wait below reads its summary either way.
        let _ = self.run.child.signal(libc::SIGTERM);
        self.wait().await
    }

    /// Waits for the recorder to finish (it stops by itself at its time or operation bound).
    pub async fn wait(self) -> Result<HistoryReport, Error> {
        let command = self.run.command.clone();
        let (code, stdout, stderr) = self.run.wait(Duration::from_secs(3600)).await?;
        parse(&command, code, &stdout, &stderr)
    }
}

/// What `zkjudge acl` prints.
#[derive(Deserialize)]
struct AclReport {
    acl: Vec<AclEntry>,
}

/// One ACL entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclEntry {
    pub perms: u32,
    pub scheme: String,
    pub id: String,
}

/// ZooKeeper's read (1), write (2) and admin (16) permissions together.
pub const PERMS_RWA: u32 = 1 | 2 | 16;

impl AclEntry {
    /// An entry of `scheme` and `id` with `perms`.
    pub fn new(scheme: &str, id: &str, perms: u32) -> AclEntry {
        AclEntry {
            perms,
            scheme: scheme.into(),
            id: id.into(),
        }
    }
}

/// A znode from `dump`, with its subtree.
#[derive(Clone, Debug, Deserialize)]
pub struct Znode {
    pub path: String,
    /// The data, base64.
    pub data: String,
    pub acl: Vec<AclEntry>,
    pub ephemeral: bool,
    pub ephemeral_owner: i64,
    pub version: i64,
    /// zxids of the create, the last data change and the last change to the children.
    #[serde(default)]
    pub czxid: i64,
    #[serde(default)]
    pub mzxid: i64,
    #[serde(default)]
    pub pzxid: i64,
    pub children: Vec<Znode>,
}

impl Znode {
    /// The data bytes.
    pub fn data_bytes(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .unwrap_or_default()
    }

    /// This node and every descendant, depth first.
    pub fn iter(&self) -> Vec<&Znode> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.iter());
        }
        out
    }

    /// The node at `path` in this subtree.
    pub fn find(&self, path: &str) -> Option<&Znode> {
        self.iter().into_iter().find(|n| n.path == path)
    }
}

/// Runs zkjudge.py with the cached venv.
#[derive(Clone, Debug)]
pub struct Judge {
    python: PathBuf,
    script: PathBuf,
    timeout: Duration,
    /// A SASL DIGEST-MD5 login (user, password) every session makes first.
    sasl: Option<(String, String)>,
    /// TLS to every host, trusting the CA certificates of this PEM file.
    tls_ca: Option<PathBuf>,
}

/// A running bounded `writer`; see [`Judge::writer`].
#[derive(Debug)]
pub struct Writer {
    run: Running,
    out: PathBuf,
}

#[derive(Debug)]
struct Running {
    command: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn wait(mut self, timeout: Duration) -> Result<(i32, String, String), Error> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self
                .child
                .try_wait()
                .map_err(io_err(format!("waiting for zkjudge {}", self.command)))?
            {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    self.child.kill();
                    let stderr = fs::read_to_string(&self.stderr).unwrap_or_default();
                    return Err(Error::Judge {
                        command: self.command.clone(),
                        message: format!("timed out after {timeout:?} (killed)"),
                        stderr: tail(&stderr),
                    });
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let stdout = fs::read_to_string(&self.stdout).unwrap_or_default();
        let stderr = fs::read_to_string(&self.stderr).unwrap_or_default();
        Ok((status.code().unwrap_or(-1), stdout, stderr))
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Writer {
    /// The file of acknowledged writes (JSON lines `{"path":..,"data":..,"t":..}`, `t` the
    /// seconds from the writer's start to the acknowledgement).
    pub fn out_file(&self) -> &Path {
        &self.out
    }

    /// Asks the writer to stop now (SIGTERM: the write in flight finishes) and waits for its
    /// summary.
    pub async fn stop(self) -> Result<WriterReport, Error> {
        // An error means it has already exited; the wait below reads its summary either way.
        let _ = self.run.child.signal(libc::SIGTERM);
        self.wait().await
    }

    /// The writer's process id.
    pub fn pid(&self) -> u32 {
        self.run.child.pid()
    }

    /// Waits for the writer to finish (it stops by itself after its `seconds`).
    pub async fn wait(self) -> Result<WriterReport, Error> {
        let command = self.run.command.clone();
        let (code, stdout, stderr) = self.run.wait(Duration::from_secs(3600)).await?;
        parse(&command, code, &stdout, &stderr)
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    command: &str,
    code: i32,
    stdout: &str,
    stderr: &str,
) -> Result<T, Error> {
    let judge_err = |message: String| Error::Judge {
        command: command.to_string(),
        message,
        stderr: tail(stderr),
    };
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    let Some(line) = line else {
        return Err(judge_err(format!(
            "exit code {code} and no JSON on stdout: {stdout:?}"
        )));
    };
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| judge_err(format!("bad JSON ({e}): {line}")))?;
    if let Some(err) = value.get("error") {
        return Err(judge_err(format!("exit code {code}: {err}")));
    }
    if code != 0 && code != 1 {
        return Err(judge_err(format!("exit code {code}: {line}")));
    }
    serde_json::from_value(value).map_err(|e| judge_err(format!("unexpected JSON ({e}): {line}")))
}

impl Judge {
    /// Installs or reuses the venv (on a worker thread) and returns a judge.
    pub async fn new() -> Result<Judge, Error> {
        let python = tokio::task::spawn_blocking(ensure_venv)
            .await
            .map_err(|e| Error::Io {
                context: "installing kazoo".into(),
                source: io::Error::other(e),
            })??;
        let script = script_path();
        Ok(Judge {
            python,
            script,
            timeout: Duration::from_secs(600),
            sasl: None,
            tls_ca: None,
        })
    }

    /// A judge that speaks TLS to every host (their secure client ports), trusting the CA
    /// certificates in the PEM file `ca` and checking each host's name or address against its
    /// certificate.
    pub fn with_tls_ca(mut self, ca: impl Into<PathBuf>) -> Judge {
        self.tls_ca = Some(ca.into());
        self
    }

    /// A judge whose every session logs in with SASL DIGEST-MD5 as `user` first (the client
    /// authentication of servers that enforce it); `--auth` digests are added after it.
    pub fn with_sasl(mut self, user: impl Into<String>, password: impl Into<String>) -> Judge {
        self.sasl = Some((user.into(), password.into()));
        self
    }

    /// The limit for one short command (default 600 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Judge {
        self.timeout = timeout;
        self
    }

    /// The venv's python.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// The zkjudge.py that runs.
    pub fn script(&self) -> &Path {
        &self.script
    }

    fn spawn(
        &self,
        command: &str,
        hosts: &str,
        auth: Auth<'_>,
        args: &[OsString],
    ) -> Result<Running, Error> {
        let dir = tempfile::Builder::new()
            .prefix("zkjudge-")
            .tempdir()
            .map_err(io_err("creating a temp dir"))?;
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script).arg(command).arg("--hosts").arg(hosts);
        if let Some((user, password)) = auth {
            cmd.arg("--auth").arg(format!("{user}:{password}"));
        }
        if let Some((user, password)) = &self.sasl {
            cmd.arg("--sasl").arg(format!("{user}:{password}"));
        }
        if let Some(ca) = &self.tls_ca {
            cmd.arg("--tls-ca").arg(ca);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).map_err(io_err("creating the stdout file"))?)
            .stderr(File::create(&stderr).map_err(io_err("creating the stderr file"))?)
            .env("PYTHONUNBUFFERED", "1");
        let child = Child::spawn(format!("zkjudge-{command}"), cmd)
            .map_err(io_err(format!("starting zkjudge {command}")))?;
        Ok(Running {
            command: command.to_string(),
            child,
            stdout,
            stderr,
            _dir: dir,
        })
    }

    /// Runs a subcommand to the end and parses its JSON (exit status 0 or 1).
    pub async fn run<T: serde::de::DeserializeOwned>(
        &self,
        command: &str,
        hosts: &str,
        auth: Auth<'_>,
        args: &[OsString],
    ) -> Result<T, Error> {
        let (code, stdout, stderr) = self
            .spawn(command, hosts, auth, args)?
            .wait(self.timeout)
            .await?;
        parse(command, code, &stdout, &stderr)
    }

    /// Creates `count` znodes `<prefix>/nNNNNNNNN` (64 bytes of known content each, open ACL;
    /// `prefix` is created if needed).
    pub async fn write(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        prefix: &str,
        count: usize,
    ) -> Result<WriteReport, Error> {
        self.write_with(hosts, auth, prefix, count, DEFAULT_SIZE, "open")
            .await
    }

    /// Like [`Judge::write`], with `size` bytes per znode and ACL `open` (world:anyone) or
    /// `creator` (auth).
    pub async fn write_with(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        prefix: &str,
        count: usize,
        size: usize,
        acl: &str,
    ) -> Result<WriteReport, Error> {
        let a = args(&[
            "--prefix",
            prefix,
            "--count",
            &count.to_string(),
            "--size",
            &size.to_string(),
            "--acl",
            acl,
        ]);
        self.run("write", hosts, auth, &a).await
    }

    /// Reads back what [`Judge::write`] created (after a `sync`), checking every byte.
    pub async fn verify(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        prefix: &str,
        count: usize,
    ) -> Result<VerifyReport, Error> {
        self.verify_with(hosts, auth, prefix, count, DEFAULT_SIZE)
            .await
    }

    /// [`Judge::verify`] for znodes of `size` bytes.
    pub async fn verify_with(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        prefix: &str,
        count: usize,
        size: usize,
    ) -> Result<VerifyReport, Error> {
        let a = args(&[
            "--prefix",
            prefix,
            "--count",
            &count.to_string(),
            "--size",
            &size.to_string(),
        ]);
        self.run("verify", hosts, auth, &a).await
    }

    /// The tree under `path`: data, ACLs, ephemeral flag, children. `exclude` leaves subtrees out
    /// (e.g. `/zookeeper`).
    pub async fn dump(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        path: &str,
        exclude: &[&str],
    ) -> Result<Znode, Error> {
        let mut a = args(&["--path", path]);
        for e in exclude {
            a.extend(args(&["--exclude", e]));
        }
        self.run("dump", hosts, auth, &a).await
    }

    /// The ACL of the znode at `path` (ZooKeeper shows an ACL's digests only to a user with admin
    /// on the node, such as super).
    pub async fn acl(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        path: &str,
    ) -> Result<Vec<AclEntry>, Error> {
        let read: AclReport = self
            .run("acl", hosts, auth, &args(&["--path", path]))
            .await?;
        Ok(read.acl)
    }

    /// Sets the ACL of the znode at `path` to `acl` (any version) and returns it as read back.
    pub async fn set_acl(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        path: &str,
        acl: &[AclEntry],
    ) -> Result<Vec<AclEntry>, Error> {
        let wanted = serde_json::to_string(acl).map_err(|e| Error::Judge {
            command: "acl".into(),
            message: format!("the ACL does not serialize: {e}"),
            stderr: String::new(),
        })?;
        let read: AclReport = self
            .run(
                "acl",
                hosts,
                auth,
                &args(&["--path", path, "--set", &wanted]),
            )
            .await?;
        Ok(read.acl)
    }

    /// Starts a bounded continuous writer: sequential znodes `<prefix>/w-NNNNNNNNNN` for at most
    /// `duration` (then it stops by itself), every acknowledged write recorded in `out`;
    /// connection loss and session expiry are counted and retried.
    pub fn writer(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        prefix: &str,
        duration: Duration,
        interval: Duration,
        out: &Path,
    ) -> Result<Writer, Error> {
        let mut a = args(&[
            "--prefix",
            prefix,
            "--seconds",
            &format!("{:.3}", duration.as_secs_f64()),
        ]);
        a.extend(args(&[
            "--interval-ms",
            &format!("{:.3}", interval.as_secs_f64() * 1000.0),
        ]));
        a.push("--out".into());
        a.push(out.as_os_str().to_owned());
        let run = self.spawn("writer", hosts, auth, &a)?;
        Ok(Writer {
            run,
            out: out.to_path_buf(),
        })
    }

    /// Starts a bounded history recorder for the linearizability checker
    /// ([`crate::lincheck`]): `spec.clients` concurrent sessions do random reads (a `sync`, then
    /// a `get`), writes (`set`) and versioned compare-and-set (`set` at the version the client
    /// last saw) on `spec.keys` keys under `spec.prefix` (created first), each completed
    /// operation one JSON line in `out`, until `spec.duration` or `spec.ops` is used up.
    pub fn history(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        spec: &HistorySpec,
        out: &Path,
    ) -> Result<HistoryRecorder, Error> {
        let mut a = args(&[
            "--prefix",
            &spec.prefix,
            "--keys",
            &spec.keys.to_string(),
            "--clients",
            &spec.clients.to_string(),
            "--seconds",
            &format!("{:.3}", spec.duration.as_secs_f64()),
            "--ops",
            &spec.ops.to_string(),
            "--interval-ms",
            &format!("{:.3}", spec.interval.as_secs_f64() * 1000.0),
        ]);
        if let Some(seed) = spec.seed {
            a.extend(args(&["--seed", &seed.to_string()]));
        }
        a.push("--out".into());
        a.push(out.as_os_str().to_owned());
        let run = self.spawn("history", hosts, auth, &a)?;
        Ok(HistoryRecorder {
            run,
            out: out.to_path_buf(),
        })
    }

    /// Checks that every write recorded in `file` by a writer is readable with its data.
    pub async fn check_acked(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        file: &Path,
    ) -> Result<CheckAckedReport, Error> {
        let a = vec![OsString::from("--file"), file.as_os_str().to_owned()];
        self.run("check-acked", hosts, auth, &a).await
    }
}

/// The acknowledgement times (seconds from the writer's start) in a writer's file, in order.
pub fn ack_times(file: &Path) -> Result<Vec<f64>, Error> {
    let text =
        std::fs::read_to_string(file).map_err(io_err(format!("reading {}", file.display())))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["t"].as_f64())
        .collect())
}

/// The `n` longest times between two consecutive acknowledgements, longest first, each with
/// when it began (seconds from the writer's start).
pub fn longest_gaps(times: &[f64], n: usize) -> Vec<(f64, f64)> {
    let mut gaps: Vec<(f64, f64)> = times.windows(2).map(|w| (w[1] - w[0], w[0])).collect();
    gaps.sort_by(|a, b| b.0.total_cmp(&a.0));
    gaps.truncate(n);
    gaps
}

/// What `populate` made.
#[derive(Clone, Debug, Deserialize)]
pub struct PopulateReport {
    /// Znodes created (about the count asked for).
    pub created: u64,
    /// The subtree's root.
    pub prefix: String,
}

/// What `create-seq` made.
#[derive(Clone, Debug, Deserialize)]
pub struct CreatedPath {
    /// The path the server gave the node.
    pub path: String,
}

impl Judge {
    /// A varied tree of about `count` znodes under `prefix`: nested paths, binary data up to
    /// `size` bytes, a subtree readable only by digest user `app`, persistent-sequential
    /// children (some deleted), an empty node.
    pub async fn populate(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        prefix: &str,
        count: usize,
        size: usize,
    ) -> Result<PopulateReport, Error> {
        let a = args(&[
            "--prefix",
            prefix,
            "--count",
            &count.to_string(),
            "--size",
            &size.to_string(),
        ]);
        self.run("populate", hosts, auth, &a).await
    }

    /// Creates one persistent-sequential node `path` (a prefix such as `/q/item-`).
    pub async fn create_sequential(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        path: &str,
    ) -> Result<CreatedPath, Error> {
        self.run("create-seq", hosts, auth, &args(&["--path", path]))
            .await
    }

    /// Starts one session that creates the ephemeral znodes `paths` (their parents persistent)
    /// and holds them for at most `duration` or until [`Holder::release`]; wait for
    /// [`Holder::ready`] before relying on them.
    pub fn hold(
        &self,
        hosts: &str,
        auth: Auth<'_>,
        paths: &[&str],
        duration: Duration,
    ) -> Result<Holder, Error> {
        let dir = tempfile::Builder::new()
            .prefix("zkjudge-hold-")
            .tempdir()
            .map_err(io_err("creating a temp dir"))?;
        let ready = dir.path().join("ready");
        let stop = dir.path().join("stop");
        let mut a = args(&["--seconds", &format!("{:.3}", duration.as_secs_f64())]);
        for p in paths {
            a.extend(args(&["--path", p]));
        }
        a.extend([
            "--ready".into(),
            ready.clone().into_os_string(),
            "--stop".into(),
            stop.clone().into_os_string(),
        ]);
        let run = self.spawn("hold", hosts, auth, &a)?;
        Ok(Holder {
            run,
            ready,
            stop,
            _dir: dir,
        })
    }
}

/// A session holding ephemeral znodes; see [`Judge::hold`].
#[derive(Debug)]
pub struct Holder {
    run: Running,
    ready: PathBuf,
    stop: PathBuf,
    _dir: tempfile::TempDir,
}

/// Result of `hold`: whether the session stayed alive and which of its ephemerals it still
/// owns.
#[derive(Clone, Debug, Deserialize)]
pub struct HoldReport {
    pub session: i64,
    /// The session never expired or was lost.
    pub alive: bool,
    /// The connection states it went through.
    pub states: Vec<String>,
    pub present: Vec<String>,
    pub missing: Vec<String>,
}

impl Holder {
    /// Waits until every ephemeral exists (or fails with the holder's output if it exited).
    pub async fn ready(&mut self, timeout: Duration) -> Result<(), Error> {
        let start = Instant::now();
        while !self.ready.exists() {
            if start.elapsed() > timeout || !self.run.child.is_running() {
                return Err(Error::Judge {
                    command: "hold".into(),
                    message: format!("the ephemerals were not created within {timeout:?}"),
                    stderr: tail(&fs::read_to_string(&self.run.stderr).unwrap_or_default()),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Tells the session to stop and returns its report.
    pub async fn release(self) -> Result<HoldReport, Error> {
        File::create(&self.stop).map_err(io_err("creating the stop file"))?;
        let command = self.run.command.clone();
        let (code, stdout, stderr) = self.run.wait(Duration::from_secs(120)).await?;
        parse(&command, code, &stdout, &stderr)
    }
}

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}
