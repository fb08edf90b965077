//! The planner and the CRD types stay pure: no kube client, no HTTP, no runtime, no clock.

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn planner_crd_and_resource_builders_import_no_io_and_never_read_the_clock() {
    let forbidden = [
        "kube::Client",
        "kube::Api",
        "kube::api",
        "kube::runtime",
        "reqwest",
        "tokio",
        "zookeeper_client",
        "std::time::SystemTime",
        "std::time::Instant",
        "Timestamp::now",
        "Zoned::now",
        "std::fs",
        "std::net",
        "std::process",
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let core = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/quorate-core/src");
    let mut files = Vec::new();
    rust_files(&core, &mut files);
    rust_files(&root.join("executor").join("resources"), &mut files);
    assert!(
        files.len() >= 8,
        "found the planner and crd sources: {files:?}"
    );
    let mut hits = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for f in forbidden {
                if line.contains(f) {
                    hits.push(format!("{}:{}: {f}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "pure modules use I/O or the clock:\n{}",
        hits.join("\n")
    );
}

/// The pure core is a crate of its own, so Cargo keeps it pure: it cannot use what it does not
/// depend on. Its dependencies must stay free of clients, runtimes and I/O.
#[test]
fn the_core_crate_depends_on_no_client_runtime_or_io() {
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/quorate-core/Cargo.toml"),
    )
    .expect("read the core's Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table");
    let names: Vec<&str> = deps
        .lines()
        .filter_map(|l| l.split('=').next())
        .map(|n| n.trim().trim_end_matches(".workspace"))
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .collect();
    for banned in [
        "tokio",
        "reqwest",
        "hyper",
        "zookeeper-client",
        "object_store",
        "kube-runtime",
        "kube-client",
        "tracing",
        "futures",
    ] {
        assert!(
            !names.iter().any(|n| n.starts_with(banned)),
            "quorate-core depends on {banned}: {names:?}"
        );
    }
    let kube = deps
        .lines()
        .find(|l| l.trim_start().starts_with("kube "))
        .expect("kube, for the CRD derive");
    assert!(
        kube.contains("default-features = false") && kube.contains(r#"features = ["derive"]"#),
        "kube is used for its derive only (no client, no runtime): {kube}"
    );
    assert!(
        names.contains(&"kube") && names.contains(&"serde"),
        "read the dependency names: {names:?}"
    );
}
