//! Backups and restores: the schedule and retention (pure), the artifact format, the sources
//! (AdminServer snapshot, tree walk), the object store, and the engines that run them.
//!
//! - [`schedule`]: pure: when a backup is due, which artifacts retention removes.
//! - [`artifact`]: the layout and manifest of one backup, and the checks of I9.
//! - [`store`]: S3-compatible buckets and directories through `object_store`, streamed.
//! - [`snapshot`]: ZooKeeper's snapshot file format, read one znode at a time.
//! - [`tree`]: quorate's tree dump, the walk that writes it and the replay of either format.
//! - [`engine`]: a backup, a verification, a load, the live data's zxid.
//! - [`place`]: what a restore's init container does on a member's volume.

pub mod artifact;
pub mod datadir;
pub mod engine;
pub mod place;
/// When a backup is due and what retention removes: pure, in the core crate.
pub use quorate_core::schedule;
pub mod snapshot;
pub mod store;
pub mod tree;
pub mod znode;
