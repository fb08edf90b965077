//! Backups and restores: the schedule and retention (pure), the artifact format, the sources
//! (AdminServer snapshot, tree walk), the object store, and the engines that run them.

pub mod znode;
