//! quorate's pure core: the custom resources' types ([`crd`]) and every safety decision made
//! on them ([`planner`]: the ensemble's next step, [`planner::recovery`] after a quorum loss,
//! [`planner::restore_pass`] a restore's phases; [`schedule`]: when a backup is due and what
//! retention removes; [`versions`]: ZooKeeper versions refused for known vulnerabilities). Nothing here does I/O or reads the clock; the operator observes, asks these
//! functions, acts and records. This crate's dependencies (its Cargo.toml) are what keeps it
//! so: no kube client or runtime, no async runtime, no HTTP, no ZooKeeper client.

#![forbid(unsafe_code)]

pub mod crd;
pub mod planner;
pub mod schedule;
pub mod versions;
