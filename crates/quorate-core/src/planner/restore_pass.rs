//! A restore's phase machine, pure: given what one pass observed of a ZkRestore and of the
//! ensemble it restores, the one thing that pass does ([`next`]). The controller observes,
//! asks, acts and records, as the ensemble's controller does with [`super::plan`].
//!
//! ```text
//! (none) -> Pending -> Verifying -> [claim the fence] -> Stopping -> Restoring -> Starting -> Ready
//!                                                 online:           Restoring -> Starting -> Ready
//!                                                 verify-only:      Restoring -> Starting -> Ready
//! any phase -> Failed
//! ```
//!
//! Rules, each a named function:
//! - [`verified_first`]: no member is touched before Verifying recorded what it verified (the
//!   artifact, or the survivor a recovery starts from).
//! - [`may_claim`]: a restore that touches members leaves Verifying only by claiming the
//!   ensemble's fence (annotation `quorate.dev/restoring`) with a compare-and-set on the
//!   ensemble; a fence held by another restore that is still running is never taken, one left
//!   by a finished or deleted restore is. The claim, not a list of restores, is what keeps two
//!   restores of one ensemble apart: two that verify at once both pass a list check, only one
//!   wins a compare-and-set.
//! - [`fence_is_mine`]: members are stopped, placed or replayed into only while the fence names
//!   this restore.
//! - [`handed_over`]: and only once the ensemble's controller has said, in its status, that it
//!   saw this restore's fence (`status.restore`). Its passes are serialized, so after that word
//!   none of its passes that read the ensemble unfenced is still running: no membership step
//!   runs beside a restore.
//! - [`placement_failed`], [`start_timed_out`]: a member that could not take the data, or
//!   members that do not serve in time, fail the restore; an offline restore keeps the fence
//!   (an operator decides), an online one lifts it (the members never stopped serving).

use std::collections::BTreeSet;

use super::model::ServerId;
use crate::crd::{RestoreMode, RestorePhase, ZkRestoreSpec};

/// What a restore does to the ensemble's members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreKind {
    /// Every member stopped, the data placed on every volume, members started again.
    Offline,
    /// The data replayed through a serving member; members keep serving.
    Online,
    /// A scratch member loads the artifact; no member of the ensemble is touched.
    VerifyOnly,
    /// Recovery after a quorum loss from the most up-to-date survivor (offline).
    Survivors,
}

impl RestoreKind {
    /// The kind a spec asks for.
    pub fn of(spec: &ZkRestoreSpec) -> Self {
        if spec.verify_only {
            RestoreKind::VerifyOnly
        } else if spec.source.survivors.is_some() {
            RestoreKind::Survivors
        } else if spec.mode == RestoreMode::Online {
            RestoreKind::Online
        } else {
            RestoreKind::Offline
        }
    }

    /// Whether it touches the ensemble's members (and so needs the fence).
    pub fn touches_members(self) -> bool {
        self != RestoreKind::VerifyOnly
    }

    /// Whether its members stop (a failure then keeps the fence for a person to decide).
    pub fn stops_members(self) -> bool {
        matches!(self, RestoreKind::Offline | RestoreKind::Survivors)
    }

    /// The phase after Verifying.
    pub fn after_verifying(self) -> RestorePhase {
        if self.stops_members() {
            RestorePhase::Stopping
        } else {
            RestorePhase::Restoring
        }
    }
}

/// Who holds an ensemble's fence, as a pass sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceHolder {
    /// Nobody: the ensemble's controller acts.
    Nobody,
    /// This restore.
    Me,
    /// Another restore, with its phase (`None`: it does not exist any more).
    Other {
        /// Its name.
        name: String,
        /// Its phase, if it still exists.
        phase: Option<Option<RestorePhase>>,
    },
}

/// Whether a restore may claim the fence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimVerdict {
    /// Claim it (compare-and-set on the ensemble).
    Take,
    /// It is this restore's already.
    Held,
    /// Another restore that is still running holds it.
    Refuse {
        /// That restore.
        holder: String,
    },
}

/// Rule: the fence may be taken when nobody holds it, or when its holder has finished (Ready,
/// Failed) or no longer exists; never from a restore that is still running.
pub fn may_claim(holder: &FenceHolder) -> ClaimVerdict {
    match holder {
        FenceHolder::Nobody => ClaimVerdict::Take,
        FenceHolder::Me => ClaimVerdict::Held,
        FenceHolder::Other { phase: None, .. }
        | FenceHolder::Other {
            phase: Some(Some(RestorePhase::Ready | RestorePhase::Failed)),
            ..
        } => ClaimVerdict::Take,
        FenceHolder::Other { name, .. } => ClaimVerdict::Refuse {
            holder: name.clone(),
        },
    }
}

/// One member placed by the restore (the Starting phase).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Server id (1 for the scratch member).
    pub id: ServerId,
    /// Why its restore step failed, if it did.
    pub failed: Option<String>,
    /// Whether it is Ready.
    pub ready: bool,
}

/// What one pass observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreView {
    /// The kind of restore.
    pub kind: RestoreKind,
    /// The recorded phase.
    pub phase: Option<RestorePhase>,
    /// Whether Verifying recorded what it verified.
    pub verified: bool,
    /// Who holds the ensemble's fence.
    pub fence: FenceHolder,
    /// Whether the ensemble's controller said it saw this restore's fence.
    pub handed_over: bool,
    /// Member Pods (not this restore's) that still run.
    pub running: BTreeSet<ServerId>,
    /// Member Pods already going away.
    pub terminating: usize,
    /// The members the restore placed (Starting; offline and verify-only).
    pub placed: Vec<Placed>,
    /// Whether the restore has run past its start timeout.
    pub late: bool,
}

/// Why a pass fails the restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The condition reason.
    pub reason: &'static str,
    /// What happened.
    pub message: String,
}

/// What one pass does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestorePass {
    /// Record Pending.
    Accept,
    /// Record Verifying.
    BeginVerifying,
    /// Verify (the judgement is [`super::restore::judge_artifact`]); on success claim the fence
    /// ([`may_claim`]) and record [`RestoreKind::after_verifying`].
    Verify,
    /// Take the fence again (it was lifted by hand while members were being touched).
    Claim,
    /// Wait for the ensemble's controller to say it saw the fence.
    AwaitHandOver,
    /// Delete these member Pods (volumes stay).
    StopMembers(BTreeSet<ServerId>),
    /// Wait for Pods that are going away.
    AwaitStopped(usize),
    /// Every member stopped: record Restoring.
    Stopped,
    /// Place the data (members with the restore step, a scratch member, or the replay).
    Place,
    /// Wait for the placed members to serve.
    AwaitMembers,
    /// Everyone serves: judge the restored data, lift the fence, record Ready.
    Judge,
    /// Record Failed.
    Fail(Failure),
    /// Ready or Failed: nothing to do.
    Idle,
}

/// Rule: nothing past Verifying without a verified record.
pub fn verified_first(view: &RestoreView) -> Option<Failure> {
    (!view.verified).then(|| Failure {
        reason: "Inconsistent",
        message: "no verified artifact recorded; no member is touched".into(),
    })
}

/// Rule: members are touched only while the fence is this restore's. `Some` is what to do
/// instead.
pub fn fence_is_mine(view: &RestoreView) -> Option<RestorePass> {
    if !view.kind.touches_members() {
        return None;
    }
    match may_claim(&view.fence) {
        ClaimVerdict::Held => None,
        ClaimVerdict::Take => Some(RestorePass::Claim),
        ClaimVerdict::Refuse { holder } => Some(RestorePass::Fail(Failure {
            reason: "AnotherRestore",
            message: format!(
                "ZkRestore {holder} took the ensemble's fence while this restore ran; this restore touches no member any more"
            ),
        })),
    }
}

/// Rule: members are touched only once the ensemble's controller has handed them over.
pub fn handed_over(view: &RestoreView) -> bool {
    !view.kind.touches_members() || view.handed_over
}

/// Rule: a member whose restore step failed fails the restore.
pub fn placement_failed(view: &RestoreView) -> Option<Failure> {
    view.placed
        .iter()
        .find_map(|p| p.failed.as_ref().map(|why| (p.id, why)))
        .map(|(id, why)| Failure {
            reason: "PlacementFailed",
            message: if view.kind == RestoreKind::VerifyOnly {
                format!(
                    "the scratch member could not load the artifact ({why}); nothing else was touched"
                )
            } else {
                format!("member {id} could not place the artifact ({why})")
            },
        })
}

/// Rule: members that do not serve within the start timeout fail the restore.
pub fn start_timed_out(view: &RestoreView) -> bool {
    view.late
}

/// The one thing a pass does (see the module doc for the rules).
pub fn next(view: &RestoreView) -> RestorePass {
    let phase = match view.phase {
        None => return RestorePass::Accept,
        Some(RestorePhase::Pending) => return RestorePass::BeginVerifying,
        Some(RestorePhase::Verifying) => return RestorePass::Verify,
        Some(RestorePhase::Ready | RestorePhase::Failed) => return RestorePass::Idle,
        Some(p) => p,
    };
    if let Some(f) = verified_first(view) {
        return RestorePass::Fail(f);
    }
    match phase {
        RestorePhase::Stopping | RestorePhase::Restoring => {
            if let Some(instead) = fence_is_mine(view) {
                return instead;
            }
            if !handed_over(view) {
                return RestorePass::AwaitHandOver;
            }
            if phase == RestorePhase::Restoring {
                return RestorePass::Place;
            }
            if !view.running.is_empty() {
                RestorePass::StopMembers(view.running.clone())
            } else if view.terminating > 0 {
                RestorePass::AwaitStopped(view.terminating)
            } else {
                RestorePass::Stopped
            }
        }
        // Starting: the members serve or are starting; the fence may already be lifted by this
        // restore (a pass that stopped between the lift and the record), so it is not asked for.
        _ => {
            // An online replay was judged by what it wrote; a recovery judges its lone
            // survivor itself (it must lead alone).
            if matches!(view.kind, RestoreKind::Online | RestoreKind::Survivors) {
                return RestorePass::Judge;
            }
            if let Some(f) = placement_failed(view) {
                return RestorePass::Fail(f);
            }
            let all_ready = !view.placed.is_empty() && view.placed.iter().all(|p| p.ready);
            if all_ready {
                RestorePass::Judge
            } else if start_timed_out(view) {
                RestorePass::Fail(Failure {
                    reason: "StartTimeout",
                    message: "members did not serve within the start timeout".into(),
                })
            } else {
                RestorePass::AwaitMembers
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Unit tier: fixtures, pure inputs.
    use super::*;

    fn view(kind: RestoreKind, phase: RestorePhase) -> RestoreView {
        RestoreView {
            kind,
            phase: Some(phase),
            verified: true,
            fence: FenceHolder::Me,
            handed_over: true,
            running: BTreeSet::new(),
            terminating: 0,
            placed: vec![],
            late: false,
        }
    }

    fn other(phase: Option<Option<RestorePhase>>) -> FenceHolder {
        FenceHolder::Other {
            name: "r1".into(),
            phase,
        }
    }

    #[test]
    fn a_running_restore_s_fence_is_never_taken_a_finished_or_deleted_one_s_is() {
        assert_eq!(may_claim(&FenceHolder::Nobody), ClaimVerdict::Take);
        assert_eq!(may_claim(&FenceHolder::Me), ClaimVerdict::Held);
        assert_eq!(may_claim(&other(None)), ClaimVerdict::Take);
        assert_eq!(
            may_claim(&other(Some(Some(RestorePhase::Failed)))),
            ClaimVerdict::Take
        );
        for running in [
            None,
            Some(RestorePhase::Pending),
            Some(RestorePhase::Verifying),
            Some(RestorePhase::Stopping),
            Some(RestorePhase::Restoring),
            Some(RestorePhase::Starting),
        ] {
            assert_eq!(
                may_claim(&other(Some(running))),
                ClaimVerdict::Refuse {
                    holder: "r1".into()
                }
            );
        }
    }

    #[test]
    fn no_member_is_stopped_before_the_ensemble_hands_them_over() {
        let mut v = view(RestoreKind::Offline, RestorePhase::Stopping);
        v.running = [ServerId(1), ServerId(2)].into();
        v.handed_over = false;
        assert_eq!(next(&v), RestorePass::AwaitHandOver);
        v.handed_over = true;
        assert_eq!(next(&v), RestorePass::StopMembers(v.running.clone()));
        v.running.clear();
        v.terminating = 1;
        assert_eq!(next(&v), RestorePass::AwaitStopped(1));
        v.terminating = 0;
        assert_eq!(next(&v), RestorePass::Stopped);
    }

    #[test]
    fn an_online_replay_waits_for_the_hand_over_too() {
        let mut v = view(RestoreKind::Online, RestorePhase::Restoring);
        v.handed_over = false;
        assert_eq!(next(&v), RestorePass::AwaitHandOver);
        v.handed_over = true;
        assert_eq!(next(&v), RestorePass::Place);
    }

    #[test]
    fn a_fence_lifted_by_hand_is_taken_again_one_taken_by_another_restore_fails_this_one() {
        let mut v = view(RestoreKind::Offline, RestorePhase::Restoring);
        v.fence = FenceHolder::Nobody;
        assert_eq!(next(&v), RestorePass::Claim);
        v.fence = other(Some(Some(RestorePhase::Stopping)));
        assert!(matches!(
            next(&v),
            RestorePass::Fail(Failure {
                reason: "AnotherRestore",
                ..
            })
        ));
        // A verify-only restore fences nothing.
        let mut v = view(RestoreKind::VerifyOnly, RestorePhase::Restoring);
        v.fence = FenceHolder::Nobody;
        v.handed_over = false;
        assert_eq!(next(&v), RestorePass::Place);
    }

    #[test]
    fn nothing_past_verifying_without_a_verified_record() {
        for phase in [
            RestorePhase::Stopping,
            RestorePhase::Restoring,
            RestorePhase::Starting,
        ] {
            let mut v = view(RestoreKind::Offline, phase);
            v.verified = false;
            assert!(matches!(
                next(&v),
                RestorePass::Fail(Failure {
                    reason: "Inconsistent",
                    ..
                })
            ));
        }
    }

    #[test]
    fn starting_fails_on_a_failed_placement_or_late_members_and_judges_once_all_serve() {
        let mut v = view(RestoreKind::Offline, RestorePhase::Starting);
        v.placed = vec![
            Placed {
                id: ServerId(1),
                failed: None,
                ready: true,
            },
            Placed {
                id: ServerId(2),
                failed: None,
                ready: false,
            },
        ];
        assert_eq!(next(&v), RestorePass::AwaitMembers);
        v.late = true;
        assert!(matches!(
            next(&v),
            RestorePass::Fail(Failure {
                reason: "StartTimeout",
                ..
            })
        ));
        v.late = false;
        v.placed[1].failed = Some("exit code 3".into());
        assert!(matches!(
            next(&v),
            RestorePass::Fail(Failure {
                reason: "PlacementFailed",
                ..
            })
        ));
        v.placed[1].failed = None;
        v.placed[1].ready = true;
        assert_eq!(next(&v), RestorePass::Judge);
        // The fence may already be lifted by this restore: Starting does not ask for it.
        v.fence = FenceHolder::Nobody;
        v.handed_over = false;
        assert_eq!(next(&v), RestorePass::Judge);
        // Nothing placed yet (a Pod not yet seen) is not "all serve".
        v.placed.clear();
        assert_eq!(next(&v), RestorePass::AwaitMembers);
    }

    #[test]
    fn terminal_phases_do_nothing_and_the_first_phases_are_recorded_in_order() {
        let mut v = view(RestoreKind::Offline, RestorePhase::Ready);
        assert_eq!(next(&v), RestorePass::Idle);
        v.phase = Some(RestorePhase::Failed);
        assert_eq!(next(&v), RestorePass::Idle);
        v.phase = None;
        assert_eq!(next(&v), RestorePass::Accept);
        v.phase = Some(RestorePhase::Pending);
        assert_eq!(next(&v), RestorePass::BeginVerifying);
        v.phase = Some(RestorePhase::Verifying);
        v.verified = false;
        assert_eq!(next(&v), RestorePass::Verify);
    }
}
