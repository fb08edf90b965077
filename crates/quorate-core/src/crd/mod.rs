//! Wire types of quorate's three resources (group `quorate.dev`, version `v1alpha1`).
//!
//! These are what the API server stores and validates: camelCase, optional fields with defaults,
//! and CEL rules (`x-kubernetes-validations`) so that a bad spec is refused at `kubectl apply`.
//! They carry no logic; the planner converts them into validated domain types.

mod backup;
mod ensemble;
mod restore;

pub use backup::*;
pub use ensemble::*;
pub use restore::*;

use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every quorate resource.
pub const GROUP: &str = "quorate.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Condition types and reasons, kept next to the types that carry them.
pub mod condition {
    /// The ensemble serves clients with a quorum of healthy voters.
    pub const AVAILABLE: &str = "Available";
    /// A step is being carried out or waited on.
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs attention: a member is down, a step is blocked.
    pub const DEGRADED: &str = "Degraded";
    /// One more failure would lose the quorum.
    pub const QUORUM_AT_RISK: &str = "QuorumAtRisk";
    /// A backup or restore finished successfully.
    pub const READY: &str = "Ready";
}

/// A reference to a MasterEnsemble in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnsembleRef {
    /// Name of the MasterEnsemble, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// Every CRD quorate defines, in a stable order.
pub fn all_crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![MasterEnsemble::crd(), ZkBackup::crd(), ZkRestore::crd()]
}

/// All CRDs as one multi-document YAML stream, exactly as committed under `crds/`.
pub fn all_crds_yaml() -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}

/// The file name under `crds/` for one CRD.
pub fn crd_file_name(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> String {
    format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default())
}
