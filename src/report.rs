//! `quorate ensemble report NAMESPACE/NAME`: everything a bug report about one ensemble needs,
//! written into a directory a person can read, attach or tar: the MasterEnsemble, its member
//! Pods and volumes, the Events about them, the ZkBackups and ZkRestores of the ensemble, each
//! member container's log, and the operator's Pods and logs. Secrets are never read. What
//! cannot be collected (a log the API server cannot reach, a list the user may not read) is
//! named in `README.txt` instead of failing the whole report.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::api::{ListParams, LogParams};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use crate::cli::Output;
use crate::constants::LABEL_ENSEMBLE;
use crate::crd::{ZkBackup, ZkRestore};
use crate::inspect::get;

/// Lines of each container log kept (the newest).
pub const LOG_LINES: i64 = 5000;

/// The label of the operator's own Pods (the chart's selector).
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=quorate";

/// What went into a report, and what could not.
#[derive(Debug, Default, Serialize)]
pub struct Written {
    /// The report's directory.
    pub dir: PathBuf,
    /// Files written, relative to `dir`.
    pub files: Vec<String>,
    /// What could not be collected, and why.
    pub missing: Vec<String>,
}

impl Written {
    fn put(&mut self, name: &str, text: &str) -> Result<(), String> {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        self.files.push(name.to_string());
        Ok(())
    }

    fn put_yaml<T: Serialize>(&mut self, name: &str, value: &T) -> Result<(), String> {
        let text = serde_norway::to_string(value).map_err(|e| format!("{name}: {e}"))?;
        self.put(name, &text)
    }

    /// A list, or a note of why it is missing.
    fn put_list<K: Serialize + Clone + ResourceExt>(
        &mut self,
        name: &str,
        listed: Result<Vec<K>, kube::Error>,
    ) -> Result<Vec<K>, String> {
        match listed {
            Ok(mut items) => {
                for item in &mut items {
                    item.managed_fields_mut().clear();
                }
                self.put_yaml(name, &items)?;
                Ok(items)
            }
            Err(e) => {
                self.missing.push(format!("{name}: {e}"));
                Ok(Vec::new())
            }
        }
    }

    /// The newest [`LOG_LINES`] lines of every container of `pods`, under `logs/`.
    async fn put_logs(&mut self, client: &Client, pods: &[Pod], under: &str) -> Result<(), String> {
        for pod in pods {
            let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let spec = pod.spec.clone().unwrap_or_default();
            let containers = spec
                .init_containers
                .unwrap_or_default()
                .into_iter()
                .chain(spec.containers)
                .map(|c| c.name);
            for container in containers {
                let params = LogParams {
                    container: Some(container.clone()),
                    tail_lines: Some(LOG_LINES),
                    timestamps: true,
                    ..Default::default()
                };
                let file = format!("{under}/{ns}_{name}_{container}.log");
                match api.logs(&name, &params).await {
                    Ok(text) => self.put(&file, &text)?,
                    Err(e) => self.missing.push(format!("{file}: {e}")),
                }
            }
        }
        Ok(())
    }
}

/// Writes the report of `target` into `out_dir` (default: a new directory
/// `quorate-report-<namespace>-<name>-<time>` here) and says where.
pub async fn ensemble_report(
    client: &Client,
    target: &str,
    out_dir: Option<&Path>,
    output: Output,
) -> Result<String, String> {
    let (ns, name, mut ens) = get(client, target).await?;
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let dir = match out_dir {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from(format!("quorate-report-{ns}-{name}-{stamp}")),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut w = Written {
        dir,
        ..Default::default()
    };
    ens.managed_fields_mut().clear();
    w.put_yaml("ensemble.yaml", &ens)?;
    w.put(
        "status.txt",
        &crate::inspect::render_status(&ns, &name, &ens, Output::Text)?,
    )?;

    let members = ListParams::default().labels(&format!("{LABEL_ENSEMBLE}={name}"));
    let pods = w.put_list(
        "pods.yaml",
        Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&members)
            .await
            .map(|l| l.items),
    )?;
    let volumes = w.put_list(
        "volumes.yaml",
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .list(&members)
            .await
            .map(|l| l.items),
    )?;
    let backups = w.put_list(
        "backups.yaml",
        Api::<ZkBackup>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter(|b| b.spec.ensemble_ref.name == name)
                    .collect()
            }),
    )?;
    let restores = w.put_list(
        "restores.yaml",
        Api::<ZkRestore>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter(|r| r.spec.ensemble_ref.name == name)
                    .collect()
            }),
    )?;
    // Events about the ensemble and the objects the report holds.
    let mut about: Vec<(&str, String)> = vec![("MasterEnsemble", name.clone())];
    about.extend(pods.iter().map(|o| ("Pod", o.name_any())));
    about.extend(
        volumes
            .iter()
            .map(|o| ("PersistentVolumeClaim", o.name_any())),
    );
    about.extend(backups.iter().map(|o| ("ZkBackup", o.name_any())));
    about.extend(restores.iter().map(|o| ("ZkRestore", o.name_any())));
    w.put_list(
        "events.yaml",
        Api::<Event>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map(|l| {
                let mut items: Vec<Event> = l
                    .items
                    .into_iter()
                    .filter(|e| {
                        let o = &e.involved_object;
                        about.iter().any(|(kind, name)| {
                            o.kind.as_deref() == Some(kind) && o.name.as_deref() == Some(name)
                        })
                    })
                    .collect();
                items.sort_by_key(|e| {
                    e.last_timestamp
                        .as_ref()
                        .map(|t| t.0)
                        .or(e.event_time.as_ref().map(|t| t.0))
                });
                items
            }),
    )?;
    w.put_logs(client, &pods, "logs").await?;

    let operators = w.put_list(
        "operator/pods.yaml",
        Api::<Pod>::all(client.clone())
            .list(&ListParams::default().labels(OPERATOR_SELECTOR))
            .await
            .map(|l| l.items),
    )?;
    w.put_logs(client, &operators, "operator/logs").await?;

    let mut readme = format!(
        "quorate report of MasterEnsemble {ns}/{name}, {stamp}, quorate {}.\nSecrets are not included.\n\nFiles:\n",
        env!("CARGO_PKG_VERSION")
    );
    for f in &w.files {
        readme += &format!("  {f}\n");
    }
    if w.missing.is_empty() {
        readme += "\nEverything was collected.\n";
    } else {
        readme += "\nNot collected:\n";
        for m in &w.missing {
            readme += &format!("  {m}\n");
        }
    }
    w.put("README.txt", &readme)?;
    if output.is_structured() {
        return output.encode(&w);
    }
    Ok(format!(
        "report of {ns}/{name} written to {} ({} files{})\n",
        w.dir.display(),
        w.files.len(),
        if w.missing.is_empty() {
            String::new()
        } else {
            format!("; {} items not collected, see README.txt", w.missing.len())
        }
    ))
}
