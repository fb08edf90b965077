//! `testbed`: builds or fetches quorate's real parts into the cache, with progress.
//!
//! `testbed prepare` makes sure the control plane binaries, helm, promtool, both ZooKeeper
//! distributions,
//! the kazoo judge, the linearizability checker, the S3 server (versitygw) and nftables (Debian's
//! `nft`, for the node agent's network faults) are in `$QUORATE_CACHE` (default
//! `~/.cache/quorate`); it reuses what is there. `testbed helm` makes
//! sure of helm alone and prints its path.

use std::process::ExitCode;
use std::time::Instant;

use quorate_testbed::{
    cache, controlplane, helm, kazoo, lincheck, nodeagent, objectstore, promtool, zookeeper,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("prepare") => prepare(),
        Some("helm") => match helm::ensure_helm() {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("testbed: helm: {e}");
                ExitCode::FAILURE
            }
        },
        Some("cache-dir") => {
            println!("{}", cache::cache_dir().display());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: testbed prepare | helm | cache-dir");
            ExitCode::from(2)
        }
    }
}

fn prepare() -> ExitCode {
    let start = Instant::now();
    cache::progress(
        "prepare",
        start,
        &format!("cache: {}", cache::cache_dir().display()),
    );
    let mut failed = false;
    match controlplane::ensure_binaries() {
        Ok(b) => cache::progress(
            "prepare",
            start,
            &format!(
                "control plane: kubernetes {} and etcd {} ready",
                b.kubernetes_version, b.etcd_version
            ),
        ),
        Err(e) => {
            eprintln!("testbed: control plane: {e}");
            failed = true;
        }
    }
    match helm::ensure_helm() {
        Ok(path) => cache::progress(
            "prepare",
            start,
            &format!("helm {} ready ({})", helm::HELM_VERSION, path.display()),
        ),
        Err(e) => {
            eprintln!("testbed: helm: {e}");
            failed = true;
        }
    }
    match promtool::ensure_promtool() {
        Ok(path) => cache::progress(
            "prepare",
            start,
            &format!(
                "promtool {} ready ({})",
                promtool::PROMETHEUS_VERSION,
                path.display()
            ),
        ),
        Err(e) => {
            eprintln!("testbed: promtool: {e}");
            failed = true;
        }
    }
    for version in zookeeper::ZkVersion::ALL {
        match zookeeper::ensure_distribution(version) {
            Ok(_) => cache::progress(
                "prepare",
                start,
                &format!("zookeeper {} ready", version.as_str()),
            ),
            Err(e) => {
                eprintln!("testbed: zookeeper {}: {e}", version.as_str());
                failed = true;
            }
        }
    }
    match kazoo::ensure_venv() {
        Ok(python) => cache::progress(
            "prepare",
            start,
            &format!("kazoo judge ready ({})", python.display()),
        ),
        Err(e) => {
            eprintln!("testbed: kazoo: {e}");
            failed = true;
        }
    }
    match lincheck::ensure_checker() {
        Ok(binary) => cache::progress(
            "prepare",
            start,
            &format!(
                "linearizability checker (porcupine {}) ready ({})",
                lincheck::PORCUPINE_VERSION,
                binary.display()
            ),
        ),
        Err(e) => {
            eprintln!("testbed: linearizability checker: {e}");
            failed = true;
        }
    }
    match objectstore::ensure_binary() {
        Ok(binary) => cache::progress(
            "prepare",
            start,
            &format!(
                "S3 server: versitygw {} ready ({})",
                objectstore::VERSITYGW_VERSION,
                binary.display()
            ),
        ),
        Err(e) => {
            eprintln!("testbed: S3 server: {e}");
            failed = true;
        }
    }
    match nodeagent::ensure_nftables() {
        Ok(nft) => cache::progress(
            "prepare",
            start,
            &format!("nftables: {} ready ({})", nft.version, nft.nft.display()),
        ),
        Err(e) => {
            eprintln!("testbed: nftables: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
