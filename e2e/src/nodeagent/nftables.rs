//! nftables for the node agent's network faults: Debian's `nft` binary and its libraries,
//! fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
//! `$QUORATE_CACHE/nftables` (no package is installed on the machine). The binary runs with
//! `LD_LIBRARY_PATH` pointing at the unpacked libraries ([`Nftables::command`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use crate::cache::{cache_dir, is_executable, progress};

/// The Debian packages unpacked: `nft` and the libraries a minimal system lacks.
pub const NFTABLES_PACKAGES: [&str; 4] = ["nftables", "libnftables1", "libnftnl11", "libjansson4"];

/// The unpacked nftables in the cache.
#[derive(Clone, Debug)]
pub struct Nftables {
    /// `<root>/usr/sbin/nft`.
    pub nft: PathBuf,
    /// The unpacked `usr/lib/<triplet>` directories, for `LD_LIBRARY_PATH`.
    pub lib_dirs: Vec<PathBuf>,
    /// What `nft --version` says.
    pub version: String,
}

impl Nftables {
    /// `nft` with `LD_LIBRARY_PATH` set to the unpacked libraries (then the caller's own).
    pub fn command(&self) -> Command {
        let mut paths: Vec<PathBuf> = self.lib_dirs.clone();
        if let Some(existing) = std::env::var_os("LD_LIBRARY_PATH") {
            paths.extend(std::env::split_paths(&existing));
        }
        let mut cmd = Command::new(&self.nft);
        if let Ok(joined) = std::env::join_paths(paths) {
            cmd.env("LD_LIBRARY_PATH", joined);
        }
        cmd
    }
}

/// `$QUORATE_CACHE/nftables`.
pub fn nftables_dir() -> PathBuf {
    cache_dir().join("nftables")
}

fn root_dir() -> PathBuf {
    nftables_dir().join("root")
}

/// The unpacked `lib` directories under `root` that hold shared objects.
fn lib_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for base in ["usr/lib", "lib"] {
        let base = root.join(base);
        for entry in fs::read_dir(&base).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && entry.file_name().to_string_lossy().contains("-linux-") {
                dirs.push(path);
            }
        }
        if base.is_dir() {
            dirs.push(base);
        }
    }
    dirs
}

/// Runs `nft --version` from an unpacked root; its output, or why it does not run.
fn check(root: &Path) -> Result<Nftables, String> {
    let nft = root.join("usr/sbin/nft");
    if !is_executable(&nft) {
        return Err(format!("{} is not an executable file", nft.display()));
    }
    let tools = Nftables {
        nft,
        lib_dirs: lib_dirs(root),
        version: String::new(),
    };
    let out = tools
        .command()
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", tools.nft.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --version: {}: {}{}",
            tools.nft.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Nftables {
        version: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ..tools
    })
}

/// nftables from the cache if it is there and runs; never downloads.
pub fn cached_nftables() -> Option<Nftables> {
    let root = root_dir();
    root.join(".complete")
        .is_file()
        .then(|| check(&root).ok())?
}

/// Returns nftables from the cache, fetching it first when the cache lacks it:
/// `apt-get download` of [`NFTABLES_PACKAGES`] and `dpkg-deb -x` of each into
/// `$QUORATE_CACHE/nftables/root`, then a check that `nft --version` runs. Blocking; one fetch at
/// a time (a lock file covers other processes).
pub fn ensure_nftables() -> Result<Nftables, String> {
    static FETCH: Mutex<()> = Mutex::new(());
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tools) = cached_nftables() {
        return Ok(tools);
    }
    let dir = nftables_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let lock_path = dir.join(".fetch.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    if let Some(tools) = cached_nftables() {
        return Ok(tools);
    }
    let start = Instant::now();
    let apt_get = which("apt-get").ok_or_else(|| {
        format!(
            "apt-get is not on PATH: the testbed fetches nftables ({}) with `apt-get download` \
             (a Debian or Ubuntu machine), or put an unpacked tree with usr/sbin/nft and its \
             libraries at {} and an empty file {}",
            NFTABLES_PACKAGES.join(", "),
            root_dir().display(),
            root_dir().join(".complete").display()
        )
    })?;
    let dpkg_deb = which("dpkg-deb")
        .ok_or_else(|| "dpkg-deb is not on PATH (it unpacks the nftables packages)".to_string())?;
    let tmp = dir.join(format!(".fetch-tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let debs = tmp.join("debs");
    let root = tmp.join("root");
    fs::create_dir_all(&debs).map_err(|e| format!("creating {}: {e}", debs.display()))?;
    progress(
        "nftables",
        start,
        &format!(
            "downloading {} with apt-get into {}",
            NFTABLES_PACKAGES.join(" "),
            dir.display()
        ),
    );
    let result = (|| {
        run(
            "apt-get download",
            Command::new(&apt_get)
                .arg("download")
                .args(NFTABLES_PACKAGES)
                .current_dir(&debs),
            "if apt-get cannot locate the packages, run `apt-get update` first",
        )?;
        let mut files: Vec<PathBuf> = fs::read_dir(&debs)
            .map_err(|e| format!("listing {}: {e}", debs.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        files.sort();
        if files.len() < NFTABLES_PACKAGES.len() {
            return Err(format!(
                "apt-get download left {} package files in {}, expected {}",
                files.len(),
                debs.display(),
                NFTABLES_PACKAGES.len()
            ));
        }
        for deb in &files {
            let name = deb.file_name().unwrap_or_default().to_string_lossy();
            progress("nftables", start, &format!("  unpacking {name}"));
            run(
                "dpkg-deb -x",
                Command::new(&dpkg_deb).arg("-x").arg(deb).arg(&root),
                "",
            )?;
        }
        let tools = check(&root)?;
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap_or_default().to_string_lossy().into())
            .collect();
        fs::write(root.join(".complete"), names.join("\n") + "\n")
            .map_err(|e| format!("writing {}/.complete: {e}", root.display()))?;
        let dest = root_dir();
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(|e| format!("removing {}: {e}", dest.display()))?;
        }
        fs::rename(&root, &dest)
            .map_err(|e| format!("moving {} to {}: {e}", root.display(), dest.display()))?;
        Ok(tools.version)
    })();
    let _ = fs::remove_dir_all(&tmp);
    let version = result?;
    progress("nftables", start, &format!("{version} unpacked"));
    cached_nftables()
        .ok_or_else(|| format!("{} does not run after unpacking", root_dir().display()))
}

/// `nft` from the cache (fetched first if missing), with `LD_LIBRARY_PATH` set.
pub fn nft_command() -> Result<Command, String> {
    ensure_nftables().map(|t| t.command())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn run(what: &str, cmd: &mut Command, hint: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let hint = if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    };
    Err(format!(
        "{what} failed with {}{hint}:\n{}",
        out.status,
        tail.join("\n")
    ))
}
