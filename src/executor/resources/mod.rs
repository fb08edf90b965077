//! Pure builders of the objects quorate owns for an ensemble: names, labels and ZooKeeper's
//! configuration files. No I/O.

pub mod member;
pub mod names;
pub mod probe;
pub mod restore;
pub mod zoo_cfg;
