//! Real Apache ZooKeeper for tests: the distribution resolved from Maven Central, and ensembles of
//! plain `java` processes on loopback.
//!
//! - [`ensure_distribution`] resolves ZooKeeper ([`ZkVersion`]) with every runtime dependency,
//!   including Jetty for the AdminServer and logback, into `$QUORATE_CACHE/zookeeper/<version>/lib`
//!   with Maven (`mvn dependency:copy-dependencies` on the throwaway POM in `e2e/zookeeper/`).
//! - [`Ensemble`] starts N members, member `i` on `127.0.S.i` with the standard ports (client 2181,
//!   quorum 2888, election 3888, AdminServer 8080), `reconfigEnabled=true`,
//!   `standaloneEnabled=false`, a dynamic config file in a writable directory, a super user and an
//!   operator digest user that may reconfigure (`rwa` on `/zookeeper/config`).
//!
//! Every server listens on 127.0.0.0/8 only. Subnets `S` are leased with [`SubnetLease`] (a file
//! lock per subnet, so parallel tests and test binaries never collide).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha1::{Digest as _, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cache::{cache_dir, is_executable, progress};
use crate::process::Child;

/// The throwaway POM that resolves a distribution (`@ZK_VERSION@` is replaced).
const POM_TEMPLATE: &str = include_str!("../zookeeper/pom.xml.in");
/// Logging for servers and zkCli (console; the threshold is `zookeeper.log.threshold`).
const LOGBACK_XML: &str = include_str!("../zookeeper/logback.xml");

/// Client port of every member (on the member's own IP).
pub const CLIENT_PORT: u16 = 2181;
/// Quorum (follower to leader) port.
pub const QUORUM_PORT: u16 = 2888;
/// Leader election port.
pub const ELECTION_PORT: u16 = 3888;
/// AdminServer (Jetty) port.
pub const ADMIN_PORT: u16 = 8080;

/// Errors of the ZooKeeper testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool (java, mvn) is not installed.
    #[error("{tool} was not found: {hint}")]
    MissingTool { tool: &'static str, hint: String },
    /// Maven could not resolve the distribution.
    #[error(
        "resolving ZooKeeper {version} with Maven failed ({status}); see {log}; last lines:\n{tail}"
    )]
    Maven {
        version: ZkVersion,
        status: String,
        log: PathBuf,
        tail: String,
    },
    /// The resolved distribution lacks an expected jar.
    #[error("the resolved ZooKeeper {version} in {dir} lacks {what}")]
    Incomplete {
        version: ZkVersion,
        dir: PathBuf,
        what: String,
    },
    /// A file-system or process error.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// No free `127.0.S.0/24` subnet (or the requested one is taken).
    #[error("no free loopback subnet: {0}")]
    NoSubnet(String),
    /// An address a member needs is already bound by someone else.
    #[error("member {id}: {addr} is already in use")]
    AddressInUse { id: u32, addr: SocketAddr },
    /// A member did not become ready in time, or exited while starting.
    #[error("member {id} {reason} (after {elapsed:?}); log {log}, last lines:\n{tail}")]
    NotReady {
        id: u32,
        reason: String,
        elapsed: Duration,
        log: PathBuf,
        tail: String,
    },
    /// No leader was found in time.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// The member id is not part of this ensemble (or invalid).
    #[error("unknown member {0}")]
    UnknownMember(u32),
    /// The member is in the wrong state for the operation.
    #[error("member {id} is {state}")]
    WrongState { id: u32, state: &'static str },
    /// An AdminServer or four-letter-word request failed.
    #[error("{what} on member {id}: {message}")]
    Request {
        id: u32,
        what: String,
        message: String,
    },
    /// zkCli failed.
    #[error("zkCli against {server} failed: {message}\n{output}")]
    Cli {
        server: String,
        message: String,
        output: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A ZooKeeper version the testbed can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum ZkVersion {
    /// 3.8.6, the newest 3.8 whose parent POM Maven Central serves here (3.8.7's is not served).
    V3_8_6,
    /// 3.9.5, the newest release (3.9.4+ fixes CVE-2025-58457 in the admin snapshot command).
    #[default]
    V3_9_5,
}

impl ZkVersion {
    /// Every version, oldest first.
    pub const ALL: [ZkVersion; 2] = [ZkVersion::V3_8_6, ZkVersion::V3_9_5];

    /// The version string, e.g. `3.9.5`.
    pub fn as_str(self) -> &'static str {
        match self {
            ZkVersion::V3_8_6 => "3.8.6",
            ZkVersion::V3_9_5 => "3.9.5",
        }
    }

    /// The Maven coordinates of the server jar.
    pub fn maven_coordinates(self) -> String {
        format!("org.apache.zookeeper:zookeeper:{}", self.as_str())
    }
}

impl fmt::Display for ZkVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ZkVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "3.9.5" | "3.9" => Ok(ZkVersion::V3_9_5),
            "3.8.6" | "3.8" => Ok(ZkVersion::V3_8_6),
            other => Err(format!(
                "unsupported ZooKeeper version {other:?} (supported: 3.9.5, 3.8.6)"
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Distribution
// ---------------------------------------------------------------------------------------------

/// A resolved ZooKeeper distribution: a `java` and a classpath.
#[derive(Clone, Debug)]
pub struct Distribution {
    version: ZkVersion,
    home: PathBuf,
    java: PathBuf,
    jars: Vec<PathBuf>,
    classpath: String,
    logback: PathBuf,
}

impl Distribution {
    /// The ZooKeeper version.
    pub fn version(&self) -> ZkVersion {
        self.version
    }

    /// `$QUORATE_CACHE/zookeeper/<version>`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The `java` executable.
    pub fn java(&self) -> &Path {
        &self.java
    }

    /// Every jar of the distribution, sorted.
    pub fn jars(&self) -> &[PathBuf] {
        &self.jars
    }

    /// The jars joined with `:`.
    pub fn classpath(&self) -> &str {
        &self.classpath
    }

    /// The logback configuration used by [`Distribution::server_command`] and
    /// [`Distribution::cli_command`].
    pub fn logback_config(&self) -> &Path {
        &self.logback
    }

    /// `java <jvm_args> -cp <classpath> <main_class>`, with the testbed's logback configuration
    /// and no hsperfdata files. The log threshold is `zookeeper.log.threshold` (default INFO).
    pub fn java_command(&self, main_class: &str, jvm_args: &[String]) -> Command {
        let mut cmd = Command::new(&self.java);
        cmd.arg("-XX:-UsePerfData")
            .arg(format!(
                "-Dlogback.configurationFile={}",
                self.logback.display()
            ))
            .args(jvm_args)
            .arg("-cp")
            .arg(&self.classpath)
            .arg(main_class);
        cmd
    }

    /// A server: `java ... org.apache.zookeeper.server.quorum.QuorumPeerMain <zoo_cfg>`. Heap,
    /// super digest and the like go in `jvm_args`; stdio is left to the caller.
    pub fn server_command(&self, zoo_cfg: &Path, jvm_args: &[String]) -> Command {
        let mut cmd = self.java_command(
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            jvm_args,
        );
        cmd.arg(zoo_cfg);
        cmd
    }

    /// zkCli: `java ... org.apache.zookeeper.ZooKeeperMain -server <server>`, logging at WARN.
    /// Append a command as arguments, or pipe a script (ending in `quit`) into its stdin.
    pub fn cli_command(&self, server: &str) -> Command {
        self.cli_command_with(server, &[])
    }

    /// [`Self::cli_command`] with more JVM arguments, such as a JAAS file for a SASL login
    /// (`-Djava.security.auth.login.config=<file>`).
    pub fn cli_command_with(&self, server: &str, jvm_args: &[String]) -> Command {
        let mut args = vec![
            "-Xmx128m".to_string(),
            "-XX:+UseSerialGC".to_string(),
            "-XX:TieredStopAtLevel=1".to_string(),
            "-Dzookeeper.log.threshold=WARN".to_string(),
        ];
        args.extend_from_slice(jvm_args);
        let mut cmd = self.java_command("org.apache.zookeeper.ZooKeeperMain", &args);
        cmd.arg("-server").arg(server);
        cmd
    }

    /// Runs a zkCli script (one command a line; `quit` is appended) against `server` and returns
    /// its output (stdout and stderr). Fails on a non-zero exit, a timeout, or when the output
    /// shows a ZooKeeper error (`KeeperErrorCode`, `Insufficient permission`, ...).
    pub async fn run_cli(
        &self,
        server: &str,
        script: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        let mut cmd = tokio::process::Command::from(self.cli_command(server));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(io_err("spawning zkCli"))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut input = script.trim_end().to_string();
        input.push_str("\nquit\n");
        let cli_err = |message: String, output: String| Error::Cli {
            server: server.to_string(),
            message,
            output,
        };
        let run = async {
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(io_err("writing to zkCli"))?;
            drop(stdin);
            child
                .wait_with_output()
                .await
                .map_err(io_err("waiting for zkCli"))
        };
        let out = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| cli_err(format!("timed out after {timeout:?}"), String::new()))??;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            return Err(cli_err(format!("exit status {}", out.status), text));
        }
        const FAILURES: [&str; 5] = [
            "KeeperErrorCode",
            "Insufficient permission",
            "Authentication is not valid",
            "Node does not exist",
            "Exception",
        ];
        if let Some(bad) = FAILURES.iter().find(|f| text.contains(**f)) {
            return Err(cli_err(format!("output contains {bad:?}"), text));
        }
        Ok(text)
    }
}

/// Finds an executable on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// `$JAVA_HOME/bin/java`, or `java` on `PATH`.
pub fn find_java() -> Result<PathBuf, Error> {
    if let Some(home) = std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) {
        let java = PathBuf::from(home).join("bin").join("java");
        if is_executable(&java) {
            return Ok(java);
        }
    }
    which("java").ok_or_else(|| Error::MissingTool {
        tool: "java",
        hint: "ZooKeeper needs a Java runtime (11 or newer; 17 is tested): install one \
               (e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME"
            .into(),
    })
}

fn find_maven() -> Result<PathBuf, Error> {
    for var in ["MAVEN_HOME", "M2_HOME"] {
        if let Some(home) = std::env::var_os(var).filter(|h| !h.is_empty()) {
            let mvn = PathBuf::from(home).join("bin").join("mvn");
            if is_executable(&mvn) {
                return Ok(mvn);
            }
        }
    }
    which("mvn").ok_or_else(|| Error::MissingTool {
        tool: "mvn",
        hint: "Maven resolves ZooKeeper from Maven Central on first use: install it \
               (e.g. `apt-get install maven`)"
            .into(),
    })
}

/// Takes an exclusive `flock` on `path` (created if needed), blocking; released when the file is
/// closed (also when the process dies).
pub(crate) fn lock_exclusive(path: &Path) -> Result<File, Error> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    loop {
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(file);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(Error::Io {
                context: format!("locking {}", path.display()),
                source: err,
            });
        }
    }
}

/// Writes `contents` to `path` unless it already holds exactly that (atomically, via rename).
pub(crate) fn write_if_changed(path: &Path, contents: &[u8]) -> Result<(), Error> {
    if fs::read(path).map(|c| c == contents).unwrap_or(false) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, contents).map_err(io_err(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io_err(format!("renaming {}", tmp.display())))
}

pub(crate) fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Resolves ZooKeeper `version` with all runtime dependencies (Jetty for the AdminServer, logback)
/// into `$QUORATE_CACHE/zookeeper/<version>/lib`, or reuses it when already there (a stamp file
/// is written last). Blocking: the first run takes Maven 10-60 s.
pub fn ensure_distribution(version: ZkVersion) -> Result<Distribution, Error> {
    let java = find_java()?;
    let home = cache_dir().join("zookeeper").join(version.as_str());
    let lib = home.join("lib");
    let stamp = home.join("installed.stamp");
    let pom = POM_TEMPLATE.replace("@ZK_VERSION@", version.as_str());
    let want_stamp = format!(
        "quorate-testbed zookeeper {version}\npom-sha1 {}\n",
        sha1_hex(pom.as_bytes())
    );

    let installed = || {
        fs::read_to_string(&stamp)
            .map(|s| s == want_stamp)
            .unwrap_or(false)
            && lib.is_dir()
    };
    if !installed() {
        let _lock = lock_exclusive(
            &cache_dir()
                .join("zookeeper")
                .join(format!("{version}.lock")),
        )?;
        if !installed() {
            resolve_with_maven(version, &home, &pom)?;
            write_if_changed(&stamp, want_stamp.as_bytes())?;
        }
    }
    let logback = home.join("logback.xml");
    write_if_changed(&logback, LOGBACK_XML.as_bytes())?;

    let mut jars: Vec<PathBuf> = fs::read_dir(&lib)
        .map_err(io_err(format!("reading {}", lib.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jar"))
        .collect();
    jars.sort();
    check_jars(version, &lib, &jars)?;
    let classpath = jars
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    Ok(Distribution {
        version,
        home,
        java,
        jars,
        classpath,
        logback,
    })
}

fn check_jars(version: ZkVersion, lib: &Path, jars: &[PathBuf]) -> Result<(), Error> {
    let names: Vec<String> = jars
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let server = format!("zookeeper-{version}.jar");
    for (what, prefix) in [
        ("the server jar", server.as_str()),
        ("zookeeper-jute", "zookeeper-jute-"),
        ("Jetty (AdminServer)", "jetty-server-"),
        ("jetty-servlet (AdminServer)", "jetty-servlet-"),
        ("the servlet API (AdminServer)", "javax.servlet-api-"),
        ("Jackson (AdminServer JSON)", "jackson-databind-"),
        ("an SLF4J binding (logback-classic)", "logback-classic-"),
        ("commons-cli (zkCli)", "commons-cli-"),
        (
            "the Prometheus metrics provider",
            "zookeeper-prometheus-metrics-",
        ),
        ("the Prometheus client (metrics provider)", "simpleclient-"),
    ] {
        if !names.iter().any(|n| n.starts_with(prefix)) {
            return Err(Error::Incomplete {
                version,
                dir: lib.to_path_buf(),
                what: what.to_string(),
            });
        }
    }
    Ok(())
}

fn resolve_with_maven(version: ZkVersion, home: &Path, pom: &str) -> Result<(), Error> {
    let start = Instant::now();
    let mvn = find_maven()?;
    let part = "zookeeper";
    progress(
        part,
        start,
        &format!("resolving ZooKeeper {version} and its runtime dependencies with Maven"),
    );
    fs::create_dir_all(home).map_err(io_err(format!("creating {}", home.display())))?;
    let pom_path = home.join("pom.xml");
    fs::write(&pom_path, pom).map_err(io_err(format!("writing {}", pom_path.display())))?;
    let lib = home.join("lib");
    let staging = home.join("lib.partial");
    for dir in [&lib, &staging] {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(io_err(format!("removing {}", dir.display())))?;
        }
    }
    let log_path = home.join("maven.log");
    let log =
        File::create(&log_path).map_err(io_err(format!("creating {}", log_path.display())))?;
    let mut cmd = Command::new(&mvn);
    cmd.current_dir(home)
        .args(["-B", "--no-transfer-progress", "-f"])
        .arg(&pom_path)
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", staging.display()))
        .arg("-DincludeScope=runtime")
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(io_err("cloning the Maven log handle"))?,
        )
        .stderr(log);
    let mut child =
        Child::spawn("mvn", cmd).map_err(io_err(format!("running {}", mvn.display())))?;
    let mut last_note = Instant::now();
    let status = loop {
        match child.try_wait().map_err(io_err("waiting for mvn"))? {
            Some(status) => break status,
            None => {
                if last_note.elapsed() > Duration::from_secs(15) {
                    progress(
                        part,
                        start,
                        &format!(
                            "still resolving ZooKeeper {version} (log: {})",
                            log_path.display()
                        ),
                    );
                    last_note = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    if !status.success() {
        return Err(Error::Maven {
            version,
            status: status.to_string(),
            log: log_path.clone(),
            tail: tail_of_file(&log_path, 0, 30),
        });
    }
    fs::rename(&staging, &lib).map_err(io_err(format!("renaming {}", staging.display())))?;
    progress(
        part,
        start,
        &format!("ZooKeeper {version} is in {}", lib.display()),
    );
    Ok(())
}

/// The last `lines` lines of a file, reading from `from` (a byte offset).
fn tail_of_file(path: &Path, from: u64, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(cannot open {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    // Read at most the last 64 KiB.
    let start = from.max(len.saturating_sub(64 * 1024));
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return format!("(cannot read {})", path.display());
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Subnets
// ---------------------------------------------------------------------------------------------

/// First and last subnet `S` handed out automatically (`127.0.S.0/24`).
pub const AUTO_SUBNETS: std::ops::RangeInclusive<u8> = 100..=199;

/// An exclusive lease on the loopback subnet `127.0.S.0/24`, held until dropped (a `flock` on
/// `$TMPDIR/quorate-subnets/S.lock`, so it is released even when the process dies).
#[derive(Debug)]
pub struct SubnetLease {
    subnet: u8,
    _lock: File,
}

impl SubnetLease {
    /// Leases the first free subnet in [`AUTO_SUBNETS`] (free: not leased, and nothing listens on
    /// the ZooKeeper ports of `127.0.S.1` to `127.0.S.9`).
    pub fn acquire() -> Result<SubnetLease, Error> {
        // Start at a per-process offset so parallel binaries rarely contend for the same lock.
        let span = (*AUTO_SUBNETS.end() - *AUTO_SUBNETS.start()) as u32 + 1;
        let offset = std::process::id() % span;
        for k in 0..span {
            let subnet = *AUTO_SUBNETS.start() + ((offset + k) % span) as u8;
            if let Some(lease) = Self::try_lease(subnet)?
                && lease.probe_free(1..=9)
            {
                return Ok(lease);
            }
        }
        Err(Error::NoSubnet(format!(
            "all of 127.0.{}-{}.0/24 are leased or in use",
            AUTO_SUBNETS.start(),
            AUTO_SUBNETS.end()
        )))
    }

    /// Leases exactly `127.0.S.0/24`; fails if it is leased by someone else. `S` must be 1..=254.
    pub fn acquire_specific(subnet: u8) -> Result<SubnetLease, Error> {
        if subnet == 0 || subnet == 255 {
            return Err(Error::NoSubnet(format!(
                "subnet {subnet} is not usable (1..=254)"
            )));
        }
        Self::try_lease(subnet)?.ok_or_else(|| {
            Error::NoSubnet(format!("127.0.{subnet}.0/24 is leased by another test"))
        })
    }

    fn try_lease(subnet: u8) -> Result<Option<SubnetLease>, Error> {
        let dir = std::env::temp_dir().join("quorate-subnets");
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let path = dir.join(format!("{subnet}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(Error::Io {
                context: format!("locking {}", path.display()),
                source: err,
            });
        }
        Ok(Some(SubnetLease {
            subnet,
            _lock: file,
        }))
    }

    fn probe_free(&self, hosts: std::ops::RangeInclusive<u8>) -> bool {
        hosts.into_iter().all(|h| {
            let ip = Ipv4Addr::new(127, 0, self.subnet, h);
            [CLIENT_PORT, QUORUM_PORT, ELECTION_PORT, ADMIN_PORT]
                .iter()
                .all(|&p| port_free(SocketAddr::new(IpAddr::V4(ip), p)))
        })
    }

    /// The subnet number `S`.
    pub fn subnet(&self) -> u8 {
        self.subnet
    }

    /// `127.0.S.host`.
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.subnet, host)
    }
}

fn port_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Ensemble
// ---------------------------------------------------------------------------------------------

/// A digest for `user:password`, as ZooKeeper computes it: `user:base64(sha1("user:password"))`.
pub fn digest(user: &str, password: &str) -> String {
    let hash = Sha1::digest(format!("{user}:{password}").as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

fn random_password() -> String {
    let mut bytes = [0u8; 12];
    let filled = File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !filled {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes.copy_from_slice(&nanos.to_le_bytes()[..12]);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Stands for the member's own address in a [`EnsembleBuilder::config`] value.
pub const MEMBER_IP: &str = "{member_ip}";

/// How to start an [`Ensemble`]; see [`Ensemble::builder`].
#[derive(Clone, Debug)]
pub struct EnsembleBuilder {
    version: ZkVersion,
    members: u32,
    subnet: Option<u8>,
    heap: String,
    jvm_args: Vec<String>,
    tick_time_ms: u32,
    init_limit: u32,
    sync_limit: u32,
    config: Vec<(String, String)>,
    start_timeout: Duration,
    super_password: Option<String>,
    operator_user: String,
    operator_password: Option<String>,
    grant_operator: bool,
    quick_start: bool,
}

impl Default for EnsembleBuilder {
    fn default() -> Self {
        EnsembleBuilder {
            version: ZkVersion::default(),
            members: 3,
            subnet: None,
            heap: "256m".into(),
            jvm_args: Vec::new(),
            tick_time_ms: 2000,
            init_limit: 10,
            sync_limit: 5,
            config: Vec::new(),
            start_timeout: Duration::from_secs(60),
            super_password: None,
            operator_user: "quorate".into(),
            operator_password: None,
            grant_operator: true,
            quick_start: true,
        }
    }
}

impl EnsembleBuilder {
    /// ZooKeeper version (default 3.9.5).
    pub fn version(mut self, version: ZkVersion) -> Self {
        self.version = version;
        self
    }
    /// Number of initial voting members, ids `1..=n` (default 3).
    pub fn members(mut self, n: u32) -> Self {
        self.members = n;
        self
    }
    /// Use `127.0.S.0/24` (default: lease a free subnet from [`AUTO_SUBNETS`]).
    pub fn subnet(mut self, subnet: u8) -> Self {
        self.subnet = Some(subnet);
        self
    }
    /// Maximum heap, `-Xmx` (default `256m`).
    pub fn heap(mut self, heap: impl Into<String>) -> Self {
        self.heap = heap.into();
        self
    }
    /// An extra JVM argument for every member.
    pub fn jvm_arg(mut self, arg: impl Into<String>) -> Self {
        self.jvm_args.push(arg.into());
        self
    }
    /// `tickTime` in ms (default 2000); `initLimit`/`syncLimit` stay in ticks (10/5).
    pub fn tick_time_ms(mut self, ms: u32) -> Self {
        self.tick_time_ms = ms;
        self
    }
    /// `initLimit` and `syncLimit`, in ticks (default 10 and 5).
    pub fn limits(mut self, init_limit: u32, sync_limit: u32) -> Self {
        self.init_limit = init_limit;
        self.sync_limit = sync_limit;
        self
    }
    /// An extra `key=value` line in every member's `zoo.cfg`; [`MEMBER_IP`] in the value becomes
    /// the member's own address (for example `secureClientPortAddress`).
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }
    /// How long start-up may take (default 60 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }
    /// The super user's password (default: random).
    pub fn super_password(mut self, password: impl Into<String>) -> Self {
        self.super_password = Some(password.into());
        self
    }
    /// The operator digest user (default `quorate` with a random password).
    pub fn operator(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.operator_user = user.into();
        self.operator_password = Some(password.into());
        self
    }
    /// Whether to grant the operator `rwa` on `/zookeeper/config` after start (default true; it
    /// costs one zkCli run, about 1 s).
    pub fn grant_operator(mut self, grant: bool) -> Self {
        self.grant_operator = grant;
        self
    }

    /// Whether members run with `-XX:TieredStopAtLevel=1` (C1 only; default true). On a busy
    /// 2-core machine this halves a 3-member cold start (measured 3.3 s against 6-7 s); turn it off
    /// for throughput measurements.
    pub fn quick_start(mut self, quick: bool) -> Self {
        self.quick_start = quick;
        self
    }

    /// Resolves the distribution (blocking work on a worker thread), starts the members and
    /// waits until every one serves and one of them leads.
    pub async fn start(self) -> Result<Ensemble, Error> {
        Ensemble::start_with(self).await
    }
}

#[derive(Debug)]
enum State {
    Stopped,
    Running(Child),
    Paused(Child),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Running(_) => "running",
            State::Paused(_) => "paused",
        }
    }
    fn child(&self) -> Option<&Child> {
        match self {
            State::Running(c) | State::Paused(c) => Some(c),
            State::Stopped => None,
        }
    }
}

#[derive(Debug)]
struct Member {
    dir: PathBuf,
    state: State,
    /// Where this start's output begins in the log file.
    log_offset: u64,
}

impl Member {
    fn log(&self) -> PathBuf {
        self.dir.join("zookeeper.log")
    }
}

/// The membership from a member's `conf` output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// `server.N=...` lines, as ZooKeeper prints them.
    pub servers: Vec<String>,
    /// The config version (hex, without `0x`), if printed.
    pub version: Option<String>,
}

impl MembershipConfig {
    /// The ids of `server.N` lines.
    pub fn ids(&self) -> Vec<u32> {
        self.servers
            .iter()
            .filter_map(|l| l.strip_prefix("server.")?.split('=').next()?.parse().ok())
            .collect()
    }
}

/// A running ZooKeeper ensemble on loopback. Dropping it kills every process it started and
/// removes its directories.
pub struct Ensemble {
    dist: Distribution,
    lease: SubnetLease,
    settings: EnsembleBuilder,
    super_password: String,
    operator_password: String,
    http: reqwest::Client,
    members: Mutex<BTreeMap<u32, Member>>,
    dir: Option<tempfile::TempDir>,
}

impl fmt::Debug for Ensemble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ensemble")
            .field("version", &self.dist.version)
            .field("subnet", &self.lease.subnet)
            .field("dir", &self.dir())
            .finish_non_exhaustive()
    }
}

impl Ensemble {
    /// Options for a new ensemble.
    pub fn builder() -> EnsembleBuilder {
        EnsembleBuilder::default()
    }

    /// `n` members of ZooKeeper 3.9.5 with default settings.
    pub async fn start(n: u32) -> Result<Ensemble, Error> {
        Ensemble::builder().members(n).start().await
    }

    async fn start_with(settings: EnsembleBuilder) -> Result<Ensemble, Error> {
        if settings.members == 0 || settings.members > 254 {
            return Err(Error::UnknownMember(settings.members));
        }
        let version = settings.version;
        let dist = tokio::task::spawn_blocking(move || ensure_distribution(version))
            .await
            .map_err(|e| Error::Io {
                context: "resolving the distribution".into(),
                source: io::Error::other(e),
            })??;
        let lease = match settings.subnet {
            Some(s) => SubnetLease::acquire_specific(s)?,
            None => SubnetLease::acquire()?,
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("quorate-zk-{}-", lease.subnet))
            .tempdir()
            .map_err(io_err("creating the ensemble directory"))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            // No idle connections: members restart and pause; every probe gets a fresh socket.
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| Error::Io {
                context: "building the HTTP client".into(),
                source: io::Error::other(e),
            })?;
        let ensemble = Ensemble {
            super_password: settings
                .super_password
                .clone()
                .unwrap_or_else(random_password),
            operator_password: settings
                .operator_password
                .clone()
                .unwrap_or_else(random_password),
            dist,
            lease,
            settings,
            http,
            members: Mutex::new(BTreeMap::new()),
            dir: Some(dir),
        };
        let ids: Vec<u32> = (1..=ensemble.settings.members).collect();
        let servers: Vec<String> = ids.iter().map(|&id| ensemble.server_line(id)).collect();
        for &id in &ids {
            ensemble.create_member(id, &servers)?;
        }
        let started = Instant::now();
        for &id in &ids {
            ensemble.spawn_member(id)?;
        }
        let deadline = started + ensemble.settings.start_timeout;
        for &id in &ids {
            ensemble.wait_serving_until(id, deadline, started).await?;
        }
        ensemble
            .wait_leader(deadline.saturating_duration_since(Instant::now()))
            .await?;
        if ensemble.settings.grant_operator {
            ensemble.grant_operator().await?;
        }
        Ok(ensemble)
    }

    /// Grants the operator user `rwa` on `/zookeeper/config` (as super).
    async fn grant_operator(&self) -> Result<(), Error> {
        let (user, password) = self.operator_auth();
        let op_digest = digest(user, password);
        let (su, sp) = self.super_auth();
        let script = format!(
            "addauth digest {su}:{sp}\nsetAcl /zookeeper/config digest:{op_digest}:rwa,world:anyone:r\ngetAcl /zookeeper/config"
        );
        let out = self
            .dist
            .run_cli(&self.connect_string(), &script, Duration::from_secs(60))
            .await?;
        if !out.contains(&format!("'digest,'{op_digest}")) {
            return Err(Error::Cli {
                server: self.connect_string(),
                message: "the operator ACL on /zookeeper/config did not take".into(),
                output: out,
            });
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// The ensemble's directory (members live in `member-<id>/`).
    pub fn base_dir(&self) -> &Path {
        self.dir()
    }

    /// The distribution the members run.
    pub fn distribution(&self) -> &Distribution {
        &self.dist
    }

    /// The ZooKeeper version.
    pub fn version(&self) -> ZkVersion {
        self.dist.version
    }

    /// The subnet `S` of `127.0.S.0/24`.
    pub fn subnet(&self) -> u8 {
        self.lease.subnet
    }

    /// Every member the harness knows (started at least once), in id order.
    pub fn ids(&self) -> Vec<u32> {
        self.lock().keys().copied().collect()
    }

    /// Members whose process runs (including paused ones).
    pub fn running_ids(&self) -> Vec<u32> {
        self.lock()
            .iter()
            .filter(|(_, m)| m.state.child().is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The process id of a member, if it runs.
    pub fn pid(&self, id: u32) -> Option<u32> {
        self.lock()
            .get(&id)
            .and_then(|m| m.state.child().map(|c| c.pid()))
    }

    /// The process ids of every running member.
    pub fn pids(&self) -> Vec<u32> {
        self.lock()
            .values()
            .filter_map(|m| m.state.child().map(|c| c.pid()))
            .collect()
    }

    /// `127.0.S.id`.
    pub fn member_ip(&self, id: u32) -> Ipv4Addr {
        self.lease.ip(id as u8)
    }

    /// The client address `127.0.S.id:2181`.
    pub fn member_address(&self, id: u32) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.member_ip(id)), CLIENT_PORT)
    }

    /// `http://127.0.S.id:8080/commands` (append `/<command>`).
    pub fn admin_url(&self, id: u32) -> String {
        format!("http://{}:{ADMIN_PORT}/commands", self.member_ip(id))
    }

    /// The member's `dataDir` (holds `myid`, `version-2/`).
    pub fn data_dir(&self, id: u32) -> PathBuf {
        self.member_dir(id).join("data")
    }

    /// The member's config directory (`zoo.cfg`, `zoo.cfg.dynamic*`; ZooKeeper rewrites them).
    pub fn conf_dir(&self, id: u32) -> PathBuf {
        self.member_dir(id).join("conf")
    }

    /// The member's log file (stdout and stderr of every start, appended).
    pub fn log_file(&self, id: u32) -> PathBuf {
        self.member_dir(id).join("zookeeper.log")
    }

    fn member_dir(&self, id: u32) -> PathBuf {
        self.dir().join(format!("member-{id}"))
    }

    /// The last `lines` lines of a member's log.
    pub fn log_tail(&self, id: u32, lines: usize) -> String {
        tail_of_file(&self.log_file(id), 0, lines)
    }

    /// `server.id=127.0.S.id:2888:3888:participant;127.0.S.id:2181`.
    pub fn server_line(&self, id: u32) -> String {
        let ip = self.member_ip(id);
        format!("server.{id}={ip}:{QUORUM_PORT}:{ELECTION_PORT}:participant;{ip}:{CLIENT_PORT}")
    }

    /// The client addresses of every known member, comma-separated.
    pub fn connect_string(&self) -> String {
        self.ids()
            .iter()
            .map(|&id| self.member_address(id).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The super user, `("super", password)`; its digest is given to every server.
    pub fn super_auth(&self) -> (&str, &str) {
        ("super", &self.super_password)
    }

    /// The operator digest user (`quorate`), granted `rwa` on `/zookeeper/config`.
    pub fn operator_auth(&self) -> (&str, &str) {
        (&self.settings.operator_user, &self.operator_password)
    }

    fn create_member(&self, id: u32, servers: &[String]) -> Result<(), Error> {
        if id == 0 || id > 254 {
            return Err(Error::UnknownMember(id));
        }
        if self.lock().contains_key(&id) {
            return Err(Error::WrongState {
                id,
                state: "already created",
            });
        }
        let dir = self.member_dir(id);
        let data = dir.join("data");
        let conf = dir.join("conf");
        for d in [&data, &conf] {
            fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        fs::write(data.join("myid"), format!("{id}\n")).map_err(io_err("writing myid"))?;
        let s = &self.settings;
        let mut cfg = format!(
            "tickTime={}\ninitLimit={}\nsyncLimit={}\ndataDir={}\nreconfigEnabled=true\nstandaloneEnabled=false\n\
             dynamicConfigFile={}\n4lw.commands.whitelist=*\nadmin.enableServer=true\nadmin.serverAddress={}\n\
             admin.serverPort={ADMIN_PORT}\n",
            s.tick_time_ms,
            s.init_limit,
            s.sync_limit,
            data.display(),
            conf.join("zoo.cfg.dynamic").display(),
            self.member_ip(id),
        );
        let ip = self.member_ip(id).to_string();
        for (k, v) in &s.config {
            cfg.push_str(&format!("{k}={}\n", v.replace(MEMBER_IP, &ip)));
        }
        fs::write(conf.join("zoo.cfg"), cfg).map_err(io_err("writing zoo.cfg"))?;
        let mut dynamic = servers.join("\n");
        dynamic.push('\n');
        fs::write(conf.join("zoo.cfg.dynamic"), dynamic)
            .map_err(io_err("writing zoo.cfg.dynamic"))?;
        self.lock().insert(
            id,
            Member {
                dir,
                state: State::Stopped,
                log_offset: 0,
            },
        );
        Ok(())
    }

    fn jvm_args(&self) -> Vec<String> {
        let (su, sp) = self.super_auth();
        let mut args = vec![
            "-Xms32m".to_string(),
            format!("-Xmx{}", self.settings.heap),
            "-XX:+UseSerialGC".to_string(),
            "-Dzookeeper.log.threshold=INFO".to_string(),
            format!(
                "-Dzookeeper.DigestAuthenticationProvider.superDigest={}",
                digest(su, sp)
            ),
        ];
        if self.settings.quick_start {
            args.push("-XX:TieredStopAtLevel=1".to_string());
        }
        args.extend(self.settings.jvm_args.iter().cloned());
        args
    }

    fn spawn_member(&self, id: u32) -> Result<(), Error> {
        let mut members = self.lock();
        let member = members.get_mut(&id).ok_or(Error::UnknownMember(id))?;
        if !matches!(member.state, State::Stopped) {
            return Err(Error::WrongState {
                id,
                state: member.state.name(),
            });
        }
        let ip = self.member_ip(id);
        for port in [CLIENT_PORT, QUORUM_PORT, ELECTION_PORT, ADMIN_PORT] {
            let addr = SocketAddr::new(IpAddr::V4(ip), port);
            if !port_free(addr) {
                return Err(Error::AddressInUse { id, addr });
            }
        }
        let log_path = member.log();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        member.log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = writeln!(
            log,
            "==== quorate-testbed: starting member {id} ({ip}) ===="
        );
        let mut cmd = self
            .dist
            .server_command(&member.dir.join("conf").join("zoo.cfg"), &self.jvm_args());
        cmd.current_dir(&member.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err("cloning the log handle"))?)
            .stderr(log);
        let child = Child::spawn(format!("zookeeper-{id}"), cmd)
            .map_err(io_err(format!("starting member {id}")))?;
        member.state = State::Running(child);
        Ok(())
    }

    fn not_ready(&self, id: u32, reason: impl Into<String>, started: Instant) -> Error {
        let (log, offset) = {
            let members = self.lock();
            match members.get(&id) {
                Some(m) => (m.log(), m.log_offset),
                None => (self.log_file(id), 0),
            }
        };
        Error::NotReady {
            id,
            reason: reason.into(),
            elapsed: started.elapsed(),
            tail: tail_of_file(&log, offset, 40),
            log,
        }
    }

    /// Whether the process has exited (reaping it); returns its status.
    fn exited(&self, id: u32) -> Option<String> {
        let mut members = self.lock();
        let member = members.get_mut(&id)?;
        let status = match &mut member.state {
            State::Running(c) | State::Paused(c) => c.try_wait().ok().flatten()?,
            State::Stopped => return Some("stopped".into()),
        };
        member.state = State::Stopped;
        Some(status.to_string())
    }

    async fn wait_serving_until(
        &self,
        id: u32,
        deadline: Instant,
        started: Instant,
    ) -> Result<(), Error> {
        loop {
            if let Some(status) = self.exited(id) {
                return Err(self.not_ready(
                    id,
                    format!("exited while starting ({status})"),
                    started,
                ));
            }
            let last = match self.server_state(id).await {
                Ok(state) if is_serving_state(&state) => return Ok(()),
                Ok(state) => format!("server_state {state}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.not_ready(
                    id,
                    format!("is not serving; last probe: {last}"),
                    started,
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a member serves clients (AdminServer `srvr` without `error`).
    pub async fn wait_serving(&self, id: u32, timeout: Duration) -> Result<(), Error> {
        let started = Instant::now();
        self.wait_serving_until(id, started + timeout, started)
            .await
    }

    /// The AdminServer's `srvr` `server_state` (`leader`, `follower`, `observer`, ...); an error
    /// when the member does not answer or answers with `error` (not serving).
    pub async fn server_state(&self, id: u32) -> Result<String, Error> {
        let srvr = self.admin(id, "srvr").await?;
        srvr.pointer("/server_stats/server_state")
            .and_then(|s| s.as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Request {
                id,
                what: "srvr".into(),
                message: format!("no server_state in {srvr}"),
            })
    }

    /// Whether a member serves clients now (answers `srvr` within 1-3 s without `error`).
    pub async fn is_serving(&self, id: u32) -> bool {
        matches!(self.server_state(id).await, Ok(state) if is_serving_state(&state))
    }

    /// GET `/commands/<command>` on a member's AdminServer; JSON with a non-null `error` is an
    /// [`Error::Request`]. Use [`Ensemble::admin_raw`] to see such replies.
    pub async fn admin(&self, id: u32, command: &str) -> Result<serde_json::Value, Error> {
        let value = self.admin_raw(id, command).await?;
        match value.get("error") {
            Some(serde_json::Value::Null) | None => Ok(value),
            Some(err) => Err(Error::Request {
                id,
                what: command.into(),
                message: err.to_string(),
            }),
        }
    }

    /// GET `/commands/<command>` and parse the JSON, whatever its `error` field says.
    pub async fn admin_raw(&self, id: u32, command: &str) -> Result<serde_json::Value, Error> {
        let url = format!("{}/{command}", self.admin_url(id));
        let req_err = |message: String| Error::Request {
            id,
            what: command.to_string(),
            message,
        };
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| req_err(format!("{url}: {e}")))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| req_err(format!("{url}: {e}")))?;
        serde_json::from_str(&body).map_err(|_| {
            let snippet: String = body.chars().take(200).collect();
            req_err(format!("{url}: HTTP {status}, not JSON: {snippet}"))
        })
    }

    /// The AdminServer's `monitor` (`mntr`) JSON of a member.
    pub async fn monitor(&self, id: u32) -> Result<serde_json::Value, Error> {
        self.admin(id, "monitor").await
    }

    /// Sends a four-letter word to a member's client port and returns the reply.
    pub async fn four_letter(&self, id: u32, word: &str) -> Result<String, Error> {
        let addr = self.member_address(id);
        let req_err = |message: String| Error::Request {
            id,
            what: word.to_string(),
            message,
        };
        let talk = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(word.as_bytes()).await?;
            let mut out = Vec::new();
            stream.read_to_end(&mut out).await?;
            Ok::<_, io::Error>(String::from_utf8_lossy(&out).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(3), talk)
            .await
            .map_err(|_| req_err("timed out".into()))?
            .map_err(|e| req_err(e.to_string()))
    }

    /// The id of the member that leads now (the one whose AdminServer `leader` says
    /// `is_leader: true`).
    pub async fn leader_id(&self) -> Result<u32, Error> {
        let mut problems = Vec::new();
        for id in self.running_ids() {
            match self.admin(id, "leader").await {
                Ok(v) if v.get("is_leader").and_then(|b| b.as_bool()) == Some(true) => {
                    return Ok(id);
                }
                Ok(_) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        Err(Error::NoLeader(if problems.is_empty() {
            "no member says it leads".into()
        } else {
            problems.join("; ")
        }))
    }

    /// Waits until one member leads and every other serving member follows it.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u32, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.leader_id().await {
                Ok(leader) => {
                    let mut agree = true;
                    for id in self.running_ids() {
                        if let Ok(v) = self.admin(id, "leader").await
                            && v.get("leader_id").and_then(|l| l.as_u64()) != Some(leader as u64)
                        {
                            agree = false;
                        }
                    }
                    if agree {
                        return Ok(leader);
                    }
                    format!("members disagree on the leader {leader}")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::NoLeader(format!("after {timeout:?}: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The membership a member reports (four-letter word `conf`).
    pub async fn member_config(&self, id: u32) -> Result<MembershipConfig, Error> {
        let conf = self.four_letter(id, "conf").await?;
        let mut servers = Vec::new();
        let mut version = None;
        let mut in_membership = false;
        for line in conf.lines().map(str::trim) {
            if line.starts_with("membership:") {
                in_membership = true;
            } else if in_membership && line.starts_with("server.") {
                servers.push(line.to_string());
            } else if in_membership && let Some(v) = line.strip_prefix("version=") {
                version = Some(v.to_string());
            }
        }
        if servers.is_empty() {
            return Err(Error::Request {
                id,
                what: "conf".into(),
                message: format!("no membership in: {conf}"),
            });
        }
        Ok(MembershipConfig { servers, version })
    }

    /// The current membership, read from the leader (or any serving member).
    pub async fn current_config(&self) -> Result<MembershipConfig, Error> {
        let mut order = self.running_ids();
        if let Ok(leader) = self.leader_id().await {
            order.retain(|&id| id != leader);
            order.insert(0, leader);
        }
        let mut last = None;
        for id in order {
            match self.member_config(id).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(Error::NoLeader("no running member".into())))
    }

    /// Starts a new member `id` whose dynamic config is the current config plus its own line, and
    /// waits until it serves: it joins as a non-voting follower, to be added with `reconfig`.
    pub async fn start_joiner(&self, id: u32) -> Result<(), Error> {
        let mut servers = self.current_config().await?.servers;
        let own = self.server_line(id);
        let prefix = format!("server.{id}=");
        if !servers.iter().any(|l| l.starts_with(&prefix)) {
            servers.push(own);
        }
        self.create_member(id, &servers)?;
        let started = Instant::now();
        self.spawn_member(id)?;
        self.wait_serving_until(id, started + self.settings.start_timeout, started)
            .await
    }

    /// Starts a stopped member with its existing (possibly rewritten) config and data, and waits
    /// until it serves.
    pub async fn start_member(&self, id: u32) -> Result<(), Error> {
        let started = Instant::now();
        self.spawn_member(id)?;
        self.wait_serving_until(id, started + self.settings.start_timeout, started)
            .await
    }

    fn take_child(&self, id: u32) -> Result<Option<Child>, Error> {
        let mut members = self.lock();
        let member = members.get_mut(&id).ok_or(Error::UnknownMember(id))?;
        Ok(match std::mem::replace(&mut member.state, State::Stopped) {
            State::Running(c) | State::Paused(c) => Some(c),
            State::Stopped => None,
        })
    }

    /// SIGTERM (SIGKILL after 10 s); waits until the process is gone. A no-op when stopped.
    pub async fn stop(&self, id: u32) -> Result<(), Error> {
        if let Some(mut child) = self.take_child(id)? {
            tokio::task::spawn_blocking(move || child.stop(Duration::from_secs(10)))
                .await
                .map_err(|e| Error::Io {
                    context: format!("stopping member {id}"),
                    source: io::Error::other(e),
                })?;
        }
        Ok(())
    }

    /// SIGKILL; waits until the process is gone. A no-op when stopped.
    pub fn kill(&self, id: u32) -> Result<(), Error> {
        if let Some(mut child) = self.take_child(id)? {
            child.kill();
        }
        Ok(())
    }

    /// SIGSTOP: the member keeps its sockets but answers nothing.
    pub fn pause(&self, id: u32) -> Result<(), Error> {
        let mut members = self.lock();
        let member = members.get_mut(&id).ok_or(Error::UnknownMember(id))?;
        match std::mem::replace(&mut member.state, State::Stopped) {
            State::Running(c) => {
                let result = c.signal(libc::SIGSTOP);
                member.state = State::Paused(c);
                result.map_err(io_err(format!("pausing member {id}")))
            }
            other => {
                let state = other.name();
                member.state = other;
                Err(Error::WrongState { id, state })
            }
        }
    }

    /// SIGCONT after [`Ensemble::pause`].
    pub fn resume(&self, id: u32) -> Result<(), Error> {
        let mut members = self.lock();
        let member = members.get_mut(&id).ok_or(Error::UnknownMember(id))?;
        match std::mem::replace(&mut member.state, State::Stopped) {
            State::Paused(c) | State::Running(c) => {
                let result = c.signal(libc::SIGCONT);
                member.state = State::Running(c);
                result.map_err(io_err(format!("resuming member {id}")))
            }
            State::Stopped => Err(Error::WrongState {
                id,
                state: "stopped",
            }),
        }
    }

    /// [`Ensemble::stop`], then [`Ensemble::start_member`].
    pub async fn restart(&self, id: u32) -> Result<(), Error> {
        self.stop(id).await?;
        self.start_member(id).await
    }

    /// Runs a zkCli script against the ensemble (or `server`), authenticated as `auth` if given.
    pub async fn zkcli(
        &self,
        server: Option<&str>,
        auth: Option<(&str, &str)>,
        script: &str,
    ) -> Result<String, Error> {
        let mut full = String::new();
        if let Some((user, password)) = auth {
            full.push_str(&format!("addauth digest {user}:{password}\n"));
        }
        full.push_str(script);
        let server = server
            .map(str::to_string)
            .unwrap_or_else(|| self.connect_string());
        self.dist
            .run_cli(&server, &full, Duration::from_secs(60))
            .await
    }

    /// Kills every member now (also done on drop).
    pub fn kill_all(&self) {
        let mut members = self.lock();
        // Signal all first so they die in parallel, then reap.
        for m in members.values() {
            if let Some(c) = m.state.child() {
                let _ = c.signal(libc::SIGKILL);
            }
        }
        for m in members.values_mut() {
            if let State::Running(mut c) | State::Paused(mut c) =
                std::mem::replace(&mut m.state, State::Stopped)
            {
                c.kill();
            }
        }
    }

    /// Keeps the ensemble's directory (logs, data) after drop, e.g. to debug a failure; returns
    /// its path.
    pub fn keep_dir(&mut self) -> PathBuf {
        match self.dir.take() {
            Some(d) => d.keep(),
            None => PathBuf::new(),
        }
    }
}

fn is_serving_state(state: &str) -> bool {
    matches!(state, "leader" | "follower" | "observer" | "standalone")
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        self.kill_all();
        if std::env::var_os("QUORATE_KEEP_ZK").is_some_and(|v| !v.is_empty() && v != "0") {
            let dir = self.keep_dir();
            eprintln!("[testbed zookeeper] kept {}", dir.display());
        }
    }
}
