//! quorate's testbed: the real parts that tests and the sandbox run on loopback.
//!
//! - [`cache`]: where built or fetched parts live (`$QUORATE_CACHE`, default `~/.cache/quorate`),
//!   and progress output for long builds.
//! - [`process`]: child processes that never outlive the process that started them.
//! - [`controlplane`]: kube-apiserver, etcd and kube-controller-manager built from Go modules and
//!   launched on loopback with generated certificates and RBAC on.
//! - [`gotool`]: Go commands built with `go install` from the Go module proxy into the cache.
//! - [`helm`]: helm built that way, for the chart's tests.
//! - [`promtool`]: Prometheus' promtool built that way, to check and test the chart's alerts.
//! - [`zookeeper`]: Apache ZooKeeper resolved from Maven Central, and real ensembles on
//!   127.0.x.y addresses.
//! - [`kazoo`]: an independent Python client (kazoo) used as a judge of the data.
//! - [`lincheck`]: a linearizability checker (Go, porcupine) of histories kazoo records.
//! - [`objectstore`]: a real S3-compatible object store (versitygw, built from Go modules) on
//!   loopback, for backups and restores.
//! - [`nodeagent`]: the kubelet's part, running member Pods as local processes.
//! - [`proxy`]: a TCP proxy in front of the apiserver that blocks and cuts connections, for
//!   network faults.

pub mod cache;
pub mod controlplane;
pub mod gotool;
pub mod helm;
pub mod kazoo;
pub mod lincheck;
pub mod nodeagent;
pub mod objectstore;
pub mod process;
pub mod promtool;
pub mod proxy;
pub mod standin;
pub mod zookeeper;
