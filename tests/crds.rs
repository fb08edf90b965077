//! The committed CRDs under crds/ are exactly what the types generate, and the Helm chart ships
//! the same files (unit tier).

use kube::CustomResourceExt;
use quorate::crd::{MasterEnsemble, ZkBackup, ZkRestore, all_crds, crd_file_name};

const REGENERATE: &str = "regenerate them with: cargo run -q -- crd --out-dir crds";

#[test]
fn committed_crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for crd in all_crds() {
        let name = crd_file_name(&crd);
        let path = dir.join(&name);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("crds/{name} is missing ({e}); {REGENERATE}"));
        let generated = serde_norway::to_string(&crd).expect("render CRD");
        assert!(
            committed == generated,
            "crds/{name} differs from the types; {REGENERATE}"
        );
    }
    // `quorate crd` prints the same documents, in the same order.
    let mut joined = String::new();
    for crd in all_crds() {
        joined.push_str("---\n");
        joined.push_str(&std::fs::read_to_string(dir.join(crd_file_name(&crd))).expect("read"));
    }
    assert!(
        joined == quorate::crd::all_crds_yaml().expect("render"),
        "quorate crd differs from crds/; {REGENERATE}"
    );
}

#[test]
fn every_field_has_a_description_for_kubectl_explain() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, sub) in props {
                let here = format!("{path}.{name}");
                let is_k8s_type = here.contains(".affinity.")
                    || here.contains(".tolerations")
                    || here.contains(".resources.")
                    || here.contains(".conditions");
                if sub.get("description").is_none() && !is_k8s_type {
                    missing.push(here.clone());
                }
                if !is_k8s_type {
                    walk(&here, sub, missing);
                    if let Some(items) = sub.get("items") {
                        walk(&format!("{here}[]"), items, missing);
                    }
                }
            }
        }
    }
    for crd in [MasterEnsemble::crd(), ZkBackup::crd(), ZkRestore::crd()] {
        let json = serde_json::to_value(&crd).expect("json");
        let schema = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        let mut missing = Vec::new();
        walk("spec", &schema["spec"], &mut missing);
        walk("status", &schema["status"], &mut missing);
        assert!(
            missing.is_empty(),
            "{} fields without a description: {missing:?}",
            crd.metadata.name.unwrap_or_default()
        );
    }
}

#[test]
fn the_resources_have_their_short_names_status_and_printer_columns() {
    for (crd, short) in [
        (MasterEnsemble::crd(), "mens"),
        (ZkBackup::crd(), "zkb"),
        (ZkRestore::crd(), "zkr"),
    ] {
        assert_eq!(crd.spec.group, "quorate.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names.clone().unwrap_or_default(),
            vec![short.to_string()]
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{short} has a status subresource"
        );
    }
    let mens = MasterEnsemble::crd();
    let cols: Vec<String> = mens.spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        cols,
        [
            "Members",
            "Ready",
            "Quorum",
            "Tolerance",
            "Leader",
            "Phase",
            "Age"
        ]
    );
}

#[test]
fn the_chart_ships_exactly_the_repository_crds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|entry| entry.expect("a directory entry").file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    const COPY: &str = "copy them: cp crds/*.yaml charts/quorate/crds/";
    let repository = files("crds");
    assert_eq!(
        repository,
        files("charts/quorate/crds"),
        "charts/quorate/crds holds other files than crds/; {COPY}"
    );
    for name in &repository {
        let read = |dir: &str| std::fs::read(root.join(dir).join(name)).expect("read a CRD");
        assert!(
            read("crds") == read("charts/quorate/crds"),
            "charts/quorate/crds/{name} differs from crds/{name}; {COPY}"
        );
    }
}
