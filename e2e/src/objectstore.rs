//! A real S3-compatible object store on loopback: versitygw (`github.com/versity/versitygw`,
//! Apache-2.0) with its `posix` backend, where a bucket is a directory and an object a file.
//!
//! [`ensure_binary`] builds versitygw [`VERSITYGW_VERSION`] from the Go module proxy with
//! `go install` into the cache ([`crate::cache::cache_dir`]`/objectstore/versitygw-<version>/`),
//! once, with progress on stderr. The binary is built into a temporary directory that is renamed
//! into place together with its `.complete` stamp, so an interrupted build is never taken for a
//! finished one; builds in several processes wait for each other (a lock file).
//!
//! [`ObjectStore::start`] runs the gateway as a [`Child`] on `127.0.0.1` only, on a free port,
//! over a fresh temporary root directory, with a generated root access key and secret key
//! (passed through the environment, not the command line), and waits until a signed
//! `ListBuckets` succeeds. Object metadata (ETags, content types, multipart state) lives in
//! extended attributes when the temporary directory's file system takes `user.*` attributes,
//! else in a sidecar directory next to the root (`--sidecar`). The gateway's own environment is
//! cleared, so no `VGW_*` variable of the caller changes how it runs; its WebUI, admin API and
//! event notifications stay off. Stopping (or dropping) the store kills the process and removes
//! the temporary directory.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quorate_testbed::objectstore::Error> {
//! let store = quorate_testbed::objectstore::ObjectStore::start().await?;
//! store.create_bucket("backups").await?;
//! // endpoint(), access_key(), secret_key() and region() configure any S3 client,
//! // path-style and plain HTTP (e.g. object_store's AmazonS3Builder with allow_http).
//! # Ok(()) }
//! ```

use std::fs;
use std::io::{self, Read as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::{cache_dir, is_executable, log_tail, progress, wait_for_go_install};
use crate::process::Child;

/// The Go module of the S3 server.
pub const VERSITYGW_MODULE: &str = "github.com/versity/versitygw";

/// The versitygw release the testbed builds.
pub const VERSITYGW_VERSION: &str = "v1.7.0";

/// The region every store answers for.
pub const REGION: &str = "us-east-1";

/// The oldest Go that builds [`VERSITYGW_VERSION`] (its go.mod says `go 1.25.0`).
const MIN_GO_MINOR: u32 = 25;

/// How long a started gateway may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the object store. Every variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building (or finding) versitygw failed.
    #[error("versitygw binary: {0}")]
    Build(String),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The gateway did not come up; `log_tail` holds the end of its log.
    #[error("versitygw did not start: {reason}\n--- last lines of {} ---\n{log_tail}", log.display())]
    Start {
        reason: String,
        log: PathBuf,
        log_tail: String,
    },
    /// An S3 request of the store's own (bucket creation, listing) failed.
    #[error("S3 {request}: {message}")]
    Request { request: String, message: String },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// The directory [`ensure_binary`] builds into.
pub fn binary_dir() -> PathBuf {
    cache_dir()
        .join("objectstore")
        .join(format!("versitygw-{VERSITYGW_VERSION}"))
}

/// The built binary, if the cache holds a complete build.
fn cached_binary() -> Option<PathBuf> {
    let dir = binary_dir();
    let binary = dir.join("versitygw");
    (dir.join(".complete").is_file() && is_executable(&binary)).then_some(binary)
}

/// The Go command: `$GO`, `go` on `PATH`, or `/usr/local/go/bin/go`; at least Go 1.25.
fn go_command() -> Result<PathBuf, Error> {
    let candidates = std::env::var_os("GO")
        .filter(|g| !g.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("PATH").into_iter().flat_map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("go"))
                .collect::<Vec<_>>()
        }))
        .chain([PathBuf::from("/usr/local/go/bin/go")]);
    let mut found = None;
    for go in candidates {
        if let Ok(out) = Command::new(&go).args(["env", "GOVERSION"]).output()
            && out.status.success()
        {
            found = Some((go, String::from_utf8_lossy(&out.stdout).trim().to_string()));
            break;
        }
    }
    let Some((go, version)) = found else {
        return Err(Error::Build(format!(
            "no Go toolchain found; building versitygw {VERSITYGW_VERSION} needs Go 1.{MIN_GO_MINOR} \
             or newer (https://go.dev/doc/install, e.g. into /usr/local/go) and the Go module \
             proxy; put it on PATH or set GO=/path/to/go"
        )));
    };
    let minor = version
        .strip_prefix("go1.")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(m) if m >= MIN_GO_MINOR => Ok(go),
        _ => Err(Error::Build(format!(
            "{} is {version}, but versitygw {VERSITYGW_VERSION} needs Go 1.{MIN_GO_MINOR} or newer; \
             install a newer Go (https://go.dev/doc/install) or set GO=/path/to/go",
            go.display()
        ))),
    }
}

/// An exclusive `flock` on `path`, released when the file is dropped.
fn lock_file(path: &Path) -> Result<fs::File, Error> {
    use std::os::fd::AsRawFd as _;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    // SAFETY: flock(2) on a file descriptor this function owns; no memory is touched.
    let try_lock = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if try_lock != 0 {
        eprintln!(
            "[testbed objectstore] another process is building versitygw ({}); waiting for it",
            path.display()
        );
        // SAFETY: as above, blocking this time.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(format!("locking {}", path.display()))(
                io::Error::last_os_error(),
            ));
        }
    }
    Ok(file)
}

/// Returns versitygw's binary from the cache, building it first when the cache lacks it
/// (minutes on a cold machine, once; progress on stderr). Blocking.
pub fn ensure_binary() -> Result<PathBuf, Error> {
    // One build at a time within this process; the lock file covers other processes.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(binary) = cached_binary() {
        return Ok(binary);
    }
    let root = cache_dir().join("objectstore");
    fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
    let _lock = lock_file(&root.join(".build.lock"))?;
    if let Some(binary) = cached_binary() {
        return Ok(binary);
    }
    // Holding the lock, no build runs: temporary directories left are from interrupted ones.
    for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(".build-tmp-")
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let go = go_command()?;
    let start = Instant::now();
    let package = format!("{VERSITYGW_MODULE}/cmd/versitygw@{VERSITYGW_VERSION}");
    let log = root.join("build.log");
    progress(
        "objectstore",
        start,
        &format!(
            "building versitygw {VERSITYGW_VERSION} with `go install {package}` (once; minutes on \
             a cold machine; log: {})",
            log.display()
        ),
    );
    let tmp = root.join(format!(".build-tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    let result = build_into(&go, &package, &tmp, &log, start);
    let installed = result.and_then(|()| {
        let stamp = format!("built {package} in {:.0}s\n", start.elapsed().as_secs_f64());
        fs::write(tmp.join(".complete"), stamp)
            .map_err(io_err(format!("writing {}/.complete", tmp.display())))?;
        let dir = binary_dir();
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
        }
        fs::rename(&tmp, &dir).map_err(io_err(format!(
            "moving {} to {}",
            tmp.display(),
            dir.display()
        )))
    });
    if let Err(e) = installed {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let binary = cached_binary().ok_or_else(|| {
        Error::Build(format!(
            "the build finished but {} holds no executable versitygw",
            binary_dir().display()
        ))
    })?;
    progress(
        "objectstore",
        start,
        &format!("versitygw built: {}", binary.display()),
    );
    Ok(binary)
}

/// `go install` of `package` with `GOBIN=tmp`, output to `log`, progress every 20 s.
fn build_into(
    go: &Path,
    package: &str,
    tmp: &Path,
    log: &Path,
    start: Instant,
) -> Result<(), Error> {
    let log_file = fs::File::create(log).map_err(io_err(format!("creating {}", log.display())))?;
    let log_err = log_file
        .try_clone()
        .map_err(io_err(format!("opening {}", log.display())))?;
    let mut cmd = Command::new(go);
    // Static, no VCS stamping, never another toolchain behind our back; `-mod=mod` since the
    // module is resolved from the proxy, not from a go.mod of ours.
    cmd.args(["install", "-v", "-trimpath", "-ldflags"])
        .arg(format!("-s -w -X main.Version={VERSITYGW_VERSION}"))
        .arg(package)
        .env("GOBIN", tmp)
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-buildvcs=false -mod=mod")
        .current_dir(tmp)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    let mut child = Child::spawn("build-versitygw", cmd)
        .map_err(io_err(format!("running {}", go.display())))?;
    let status = wait_for_go_install(&mut child, log, "objectstore", start)
        .map_err(io_err("waiting for go install"))?;
    if !status.success() {
        return Err(Error::Build(format!(
            "`go install {package}` failed ({status}) after {:.0}s; it needs Go 1.{MIN_GO_MINOR}+ \
             and the Go module proxy. The last lines of {}:\n{}",
            start.elapsed().as_secs_f64(),
            log.display(),
            log_tail(log, 30)
        )));
    }
    if !is_executable(&tmp.join("versitygw")) {
        return Err(Error::Build(format!(
            "`go install {package}` succeeded but left no {}/versitygw",
            tmp.display()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The running store
// ---------------------------------------------------------------------------------------------

/// A running versitygw on `127.0.0.1`. Dropping it kills the process and removes its files.
pub struct ObjectStore {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    log: PathBuf,
    port: u16,
    access_key: String,
    secret_key: String,
    metadata: Metadata,
    http: reqwest::Client,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("endpoint", &self.endpoint())
            .field("root", &self.root)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

/// Where the posix backend keeps object metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metadata {
    /// `user.*` extended attributes on the files themselves.
    Xattr,
    /// A sidecar directory beside the root (the file system takes no `user.*` attributes).
    Sidecar,
}

/// Whether `dir`'s file system takes `user.*` extended attributes.
fn supports_user_xattrs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let probe = dir.join(".xattr-probe");
    if fs::write(&probe, b"").is_err() {
        return false;
    }
    let Ok(path) = std::ffi::CString::new(probe.as_os_str().as_bytes()) else {
        return false;
    };
    let value = b"1";
    // SAFETY: setxattr(2) with a NUL-terminated path and name and a valid buffer.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"user.quorate-probe".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    let _ = fs::remove_file(&probe);
    rc == 0
}

/// `n` random characters from `alphabet` (from `/dev/urandom`).
fn random_string(n: usize, alphabet: &[u8]) -> Result<String, Error> {
    let mut bytes = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err("reading /dev/urandom"))?;
    Ok(bytes
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect())
}

/// A free loopback port (released before returning; the caller retries if it is taken).
fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("binding a free 127.0.0.1 port"))?;
    Ok(l.local_addr()
        .map_err(io_err("reading a bound port"))?
        .port())
}

/// How to run a store; [`Options::default`] is what [`ObjectStore::start`] uses.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Where object metadata lives. `None` (the default): extended attributes when the
    /// temporary directory's file system takes `user.*` attributes, else a sidecar directory.
    pub metadata: Option<Metadata>,
}

impl ObjectStore {
    /// Builds versitygw if needed (on a blocking thread), starts it on a free `127.0.0.1` port
    /// over a fresh temporary directory with generated credentials, and waits until it answers
    /// a signed request.
    pub async fn start() -> Result<ObjectStore, Error> {
        ObjectStore::start_with(Options::default()).await
    }

    /// [`ObjectStore::start`] with options.
    pub async fn start_with(opts: Options) -> Result<ObjectStore, Error> {
        let binary = tokio::task::spawn_blocking(ensure_binary)
            .await
            .map_err(|e| Error::Build(format!("the build task failed: {e}")))??;
        let t0 = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("quorate-objectstore-")
            .tempdir()
            .map_err(io_err(
                "creating a temporary directory for the object store",
            ))?;
        let root = dir.path().join("root");
        fs::create_dir(&root).map_err(io_err(format!("creating {}", root.display())))?;
        let metadata = opts.metadata.unwrap_or_else(|| {
            if supports_user_xattrs(&root) {
                Metadata::Xattr
            } else {
                Metadata::Sidecar
            }
        });
        if metadata == Metadata::Sidecar {
            let sidecar = dir.path().join("meta");
            fs::create_dir(&sidecar).map_err(io_err(format!("creating {}", sidecar.display())))?;
        }
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        const MIXED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let access_key = format!("QRT{}", random_string(17, UPPER)?);
        let secret_key = random_string(40, MIXED)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Request {
                request: "client".into(),
                message: format!("building the HTTP client: {e}"),
            })?;
        let log = dir.path().join("versitygw.log");
        let mut store = ObjectStore {
            child: None,
            dir: Some(dir),
            root,
            log,
            port: 0,
            access_key,
            secret_key,
            metadata,
            http,
        };
        // The port is free when picked but could be taken before the gateway binds it: retry.
        let mut attempt = 0;
        loop {
            attempt += 1;
            store.port = free_port()?;
            match store.launch(&binary).await {
                Ok(()) => break,
                Err(e)
                    if attempt < 3
                        && log_tail(&store.log, 20).contains("address already in use") =>
                {
                    tracing::debug!(error = %e, "versitygw lost its port; retrying");
                }
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(
            endpoint = %store.endpoint(),
            elapsed = ?t0.elapsed(),
            "object store ready"
        );
        Ok(store)
    }

    /// Spawns the gateway on `self.port` and waits until it answers.
    async fn launch(&mut self, binary: &Path) -> Result<(), Error> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io_err(format!("creating {}", self.log.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_err(format!("opening {}", self.log.display())))?;
        let base = self
            .dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        let mut cmd = Command::new(binary);
        // Only the loopback address: versitygw's default (`:7070`) listens on every interface.
        cmd.arg("--port")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--region", REGION, "posix"]);
        if self.metadata == Metadata::Sidecar {
            cmd.arg("--sidecar").arg(base.join("meta"));
        }
        cmd.arg(&self.root)
            .env_clear()
            .env("ROOT_ACCESS_KEY_ID", &self.access_key)
            .env("ROOT_SECRET_ACCESS_KEY", &self.secret_key)
            .env("HOME", &base)
            .env("TMPDIR", &base)
            .current_dir(&base)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = Child::spawn("versitygw", cmd)
            .map_err(io_err(format!("starting {}", binary.display())))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error = String::from("no answer yet");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.start_error(format!("it exited ({status})")));
            }
            if tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], self.port)))
                .await
                .is_ok()
            {
                match self.signed("GET", "/", "ListBuckets").await {
                    Ok(_) => return Ok(()),
                    Err(e) => last_error = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                if let Some(mut child) = self.child.take() {
                    child.kill();
                }
                return Err(self.start_error(format!(
                    "no successful ListBuckets within {START_TIMEOUT:?} (last: {last_error})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn start_error(&self, reason: String) -> Error {
        Error::Start {
            reason,
            log: self.log.clone(),
            log_tail: log_tail(&self.log, 40),
        }
    }

    /// `http://127.0.0.1:<port>`: path-style S3, plain HTTP.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the gateway listens on (on `127.0.0.1` only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The root account's access key id.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The root account's secret access key.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The region requests are signed for: [`REGION`].
    pub fn region(&self) -> &str {
        REGION
    }

    /// The posix backend's root: one directory per bucket, one file per object.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// Where object metadata lives.
    pub fn metadata(&self) -> Metadata {
        self.metadata
    }

    /// The gateway's log (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The gateway's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::pid)
    }

    /// Creates a bucket through the S3 API (a signed `CreateBucket`).
    pub async fn create_bucket(&self, name: &str) -> Result<(), Error> {
        if name.is_empty() || name.contains('/') {
            return Err(Error::Request {
                request: format!("CreateBucket {name:?}"),
                message: "not a bucket name".into(),
            });
        }
        self.signed("PUT", &format!("/{name}"), &format!("CreateBucket {name}"))
            .await
            .map(drop)
    }

    /// The names of the buckets, from a signed `ListBuckets`.
    pub async fn list_buckets(&self) -> Result<Vec<String>, Error> {
        let body = self.signed("GET", "/", "ListBuckets").await?;
        Ok(body
            .split("<Bucket>")
            .skip(1)
            .filter_map(|b| {
                let start = b.find("<Name>")? + "<Name>".len();
                let end = b[start..].find("</Name>")? + start;
                Some(b[start..end].to_string())
            })
            .collect())
    }

    /// Sends a request without a body or query, signed with AWS Signature V4; returns the body
    /// of a 2xx answer.
    async fn signed(&self, method: &str, path: &str, request: &str) -> Result<String, Error> {
        let err = |message: String| Error::Request {
            request: request.to_string(),
            message,
        };
        let now = k8s_openapi::jiff::Timestamp::now();
        let headers = sigv4::sign(&sigv4::Request {
            method,
            host: &format!("127.0.0.1:{}", self.port),
            path,
            query: "",
            access_key: &self.access_key,
            secret_key: &self.secret_key,
            region: REGION,
            amz_date: &now.strftime("%Y%m%dT%H%M%SZ").to_string(),
        });
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| err(format!("method: {e}")))?;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.endpoint()));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let response = req.send().await.map_err(|e| err(e.to_string()))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| err(e.to_string()))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(err(format!("{status}: {body}")))
        }
    }

    /// Kills the gateway and removes its temporary directory (root, metadata, log).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop(Duration::from_secs(5));
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                eprintln!(
                    "[testbed objectstore] cannot remove {}: {e}",
                    path.display()
                );
            }
        }
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        self.stop();
    }
}

/// AWS Signature Version 4 for the store's own requests (empty body).
mod sigv4 {
    use ring::{digest, hmac};

    pub(super) struct Request<'a> {
        pub method: &'a str,
        pub host: &'a str,
        /// Already URI-encoded (bucket names need no encoding).
        pub path: &'a str,
        /// The canonical query string (encoded, sorted by name), or empty.
        pub query: &'a str,
        pub access_key: &'a str,
        pub secret_key: &'a str,
        pub region: &'a str,
        /// `YYYYMMDDTHHMMSSZ`, UTC.
        pub amz_date: &'a str,
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mac(key: &[u8], data: &str) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
            .as_ref()
            .to_vec()
    }

    /// The headers to send: `x-amz-date`, `x-amz-content-sha256` and `authorization` (`host`
    /// is signed and sent by the HTTP client as given).
    pub(super) fn sign(r: &Request<'_>) -> Vec<(&'static str, String)> {
        let payload_hash = hex(digest::digest(&digest::SHA256, b"").as_ref());
        let date = &r.amz_date[..8];
        let signed_headers = "host;x-amz-content-sha256;x-amz-date";
        let canonical = format!(
            "{}\n{}\n{}\nhost:{}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{}\n\n\
             {signed_headers}\n{payload_hash}",
            r.method, r.path, r.query, r.host, r.amz_date
        );
        let scope = format!("{date}/{}/s3/aws4_request", r.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            r.amz_date,
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let key = [date, r.region, "s3", "aws4_request"]
            .iter()
            .fold(format!("AWS4{}", r.secret_key).into_bytes(), |k, part| {
                mac(&k, part)
            });
        let signature = hex(&mac(&key, &to_sign));
        vec![
            ("x-amz-date", r.amz_date.to_string()),
            ("x-amz-content-sha256", payload_hash),
            (
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, \
                     Signature={signature}",
                    r.access_key
                ),
            ),
        ]
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The "GET Bucket (List Objects)" example of AWS's Signature Version 4 documentation
        /// for S3 (header-based authentication, empty payload).
        #[test]
        fn signs_the_documented_list_objects_example() {
            let headers = sign(&Request {
                method: "GET",
                host: "examplebucket.s3.amazonaws.com",
                path: "/",
                query: "max-keys=2&prefix=J",
                access_key: "AKIAIOSFODNN7EXAMPLE",
                secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                region: "us-east-1",
                amz_date: "20130524T000000Z",
            });
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(
                header("x-amz-content-sha256"),
                Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            );
            assert_eq!(
                header("authorization"),
                Some(
                    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/\
                     aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
                     Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
                )
            );
        }
    }
}
