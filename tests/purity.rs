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
    let mut files = Vec::new();
    rust_files(&root.join("planner"), &mut files);
    rust_files(&root.join("crd"), &mut files);
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
