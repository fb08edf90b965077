//! quorate keeps ZooKeeper "master ensembles" quorate on Kubernetes.
//!
//! Every pass of the controller has the same shape:
//!
//! ```text
//! watch event -> observe (read-only I/O) -> plan (pure) -> claim (status CAS)
//!             -> execute ONE step (idempotent I/O) -> record (status, Events, metrics) -> requeue
//! ```
//!
//! - [`crd`]: the wire types of `MasterEnsemble`, `ZkBackup` and `ZkRestore`.
//! - [`planner`]: the pure decision core: `(desired, observed, now) -> Decision`.
//! - [`cli`]: the `quorate` command line.
#![forbid(unsafe_code)]

pub mod backup;
pub mod backup_commands;
pub mod cli;
pub mod constants;
pub use quorate_core::{crd, planner, versions};
pub mod controller;
pub mod day2;
pub mod executor;
pub mod inspect;
pub mod metrics;
pub mod report;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod serve;
pub mod zk;
