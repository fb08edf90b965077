//! The pure decision core: given the spec, the observed ensemble and the time, return one
//! [`Decision`]: `Act(step)`, `Wait{reason}`, `Converged` or `Blocked{reason}`.
//!
//! Nothing here does I/O or reads the clock; time comes in as a parameter.
//!
//! Safety rules (each a named function in [`rules`]):
//! - [`rules::quorum_is_healthy`]: a majority of the voters is serving and synced.
//! - [`rules::all_voters_healthy`]: no step while any voter is unhealthy (I2), except repairs.
//! - [`rules::quorum_survives_removal`]: removing a voter leaves a healthy majority (I3, I5);
//!   [`rules::quorum_survives_removal_of`] for the two voters of a 3 -> 1 reconfig.
//! - [`rules::quorum_survives_addition`]: adding joiners keeps a healthy majority (I3).
//! - [`rules::voters_per_change`]: one voter per reconfig, except two when one voter grows to
//!   three or three shrink to one, so that no configuration of two voters is ever committed
//!   (docs/one-to-three.md).
//! - [`rules::quorum_survives_restart`]: restarting one member keeps a healthy majority (I6).
//! - [`rules::joiner_is_synced`]: a joiner becomes a voter only when serving and synced (I3).
//! - [`rules::replace_is_due`]: a voter is replaced only after `replaceAfter` down (I2).
//! - [`rules::rollout_is_at_fault`]: a member that fails with the new spec stops the roll (I6).
//! - [`rules::backup_is_fresh`]: `backupBeforeChange` holds every requested change.
//! - [`rules::id_is_fresh`]: new members get ids never used before (I4).
//! - [`rules::choose_voter_to_remove`]: scale down removes unhealthy, then newest followers;
//!   [`rules::choose_voters_to_remove`] picks the two followers of a 3 -> 1 reconfig, never the
//!   leader.
//! - [`rules::restart_order`]: followers first, the leader last (I6).
//! - [`rules::most_up_to_date_survivor`]: recovery starts from the highest zxid (I7).
//! - [`recovery::decide_recovery`]: recovery after a quorum loss only from the survivor with
//!   the highest zxid, never while a majority still holds data (I7).
//! - [`restore::judge_artifact`]: a restore's artifact never replaces newer data, another
//!   history's data, or data whose age is unknown without `allowOlder` (I7);
//!   [`restore::restore_in_the_way`]: one restore of an ensemble at a time (I10).
//! - [`restore_pass::next`]: a restore's phase machine: verified before anything is touched,
//!   the fence claimed with a compare-and-set ([`restore_pass::may_claim`]), members touched
//!   only once the ensemble's controller has handed them over ([`restore_pass::handed_over`]).
//! - [`rules::step_is_done`]: a claimed step is confirmed from the observation, never repeated.
//!
//! One step at a time (I1) follows from the shape of [`plan`]: a step is only proposed when no
//! other member is in transition (every voter healthy, at most one joiner that is not synced,
//! strays deleted first), and the claim in status makes it the only one. Growing one voter to
//! three keeps two joiners, the second started only once the first is synced; shrinking three
//! to one leaves two removed members, deleted one at a time.

#[cfg(test)]
pub mod fixtures;
pub mod model;
mod plan;
#[cfg(test)]
mod properties;
pub mod recovery;
pub mod restore;
pub mod restore_pass;
#[cfg(test)]
mod restore_sim;
pub mod rules;
pub mod sim;
#[cfg(test)]
mod simulation;
pub mod step;
#[cfg(test)]
mod tests;

pub use model::{
    Claim, Desired, Member, Membership, Observed, PodInfo, ReadyBackup, Role, ServerId, ZkState,
};
pub use plan::{Plan, Rule, matches_spec, plan};
pub use step::{BlockReason, Decision, MemberSet, Step, WaitReason};
