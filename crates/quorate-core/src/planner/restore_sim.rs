//! Simulation and property tier of the restore's phase machine: one ensemble, its controller,
//! a kubelet and up to three restores of any kind, run as interleaved passes. Every pass reads a
//! view, asks [`next`] and acts later, so other passes run between its read and its act, and a
//! pass may stop (the operator killed) after any prefix of its writes. The judge does not use
//! the machine's rules: it watches the world's history.
//!
//! Properties:
//! - no membership step of the ensemble's controller takes effect while a restore has touched
//!   members and not yet let go of the fence (the hand-over);
//! - two restores never touch members of one ensemble at once, and a restore touches members
//!   only while it holds the fence, only after it verified, never when verification refused;
//! - once every restore is finished, the fence is held by nobody or by an offline restore that
//!   failed (for a person to decide), never by one that is Ready or by a failed online one;
//! - every restore finishes (bounded passes, fair scheduling).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::model::ServerId;
use super::restore_pass::*;
use crate::crd::RestorePhase;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PodState {
    Running,
    Terminating,
    Stopped,
    Placed { by: usize, ready: bool },
}

#[derive(Clone, Debug)]
struct Restore {
    kind: RestoreKind,
    refused: bool,
    phase: Option<RestorePhase>,
    verified: bool,
    passes: usize,
    /// A pass read its view (the pass, the ensemble's version and fence it read) and has not
    /// acted yet.
    pending: Option<(RestorePass, u64, FenceHolder)>,
    /// Its scratch member (verify-only): whether it is Ready.
    scratch: Option<bool>,
}

/// One atomic write of a pass.
#[derive(Clone, Debug)]
enum Write {
    Phase(RestorePhase),
    Verified,
    /// A compare-and-set of the fence on the version read.
    ClaimFence(u64),
    LiftFence,
    Stop(ServerId),
    Place(ServerId),
    Replay,
    Scratch,
}

struct World {
    fence: Option<usize>,
    version: u64,
    ack: Option<usize>,
    pods: BTreeMap<ServerId, PodState>,
    restores: Vec<Restore>,
    /// The ensemble's controller read the fence as this and has not acted yet.
    ensemble_pending: Option<Option<usize>>,
    /// The restore that touched members and has not let go of the fence.
    exclusive: Option<usize>,
    violations: Vec<String>,
}

impl World {
    fn new(kinds: &[(RestoreKind, bool)]) -> Self {
        World {
            fence: None,
            version: 0,
            ack: None,
            pods: (1..=3).map(|i| (ServerId(i), PodState::Running)).collect(),
            restores: kinds
                .iter()
                .map(|(kind, refused)| Restore {
                    kind: *kind,
                    refused: *refused,
                    phase: None,
                    verified: false,
                    passes: 0,
                    pending: None,
                    scratch: None,
                })
                .collect(),
            ensemble_pending: None,
            exclusive: None,
            violations: vec![],
        }
    }

    fn holder(&self, me: usize) -> FenceHolder {
        match self.fence {
            None => FenceHolder::Nobody,
            Some(r) if r == me => FenceHolder::Me,
            Some(r) => FenceHolder::Other {
                name: format!("r{r}"),
                phase: Some(self.restores[r].phase),
            },
        }
    }

    fn view(&self, me: usize) -> RestoreView {
        let r = &self.restores[me];
        let scratch = r.scratch.map(|ready| Placed {
            id: ServerId(1),
            failed: None,
            ready,
        });
        let placed = self
            .pods
            .iter()
            .filter_map(|(id, p)| match p {
                PodState::Placed { by, ready } if *by == me => Some(Placed {
                    id: *id,
                    failed: None,
                    ready: *ready,
                }),
                _ => None,
            })
            .chain(scratch)
            .collect();
        RestoreView {
            kind: r.kind,
            phase: r.phase,
            verified: r.verified,
            fence: self.holder(me),
            handed_over: self.ack == Some(me),
            running: self
                .pods
                .iter()
                .filter(|(_, p)| matches!(p, PodState::Running | PodState::Placed { .. }))
                .map(|(id, _)| *id)
                .collect(),
            terminating: self
                .pods
                .values()
                .filter(|p| **p == PodState::Terminating)
                .count(),
            placed,
            late: r.passes > 400,
        }
    }

    /// The writes the controller makes for `pass`, in its order.
    fn writes(
        &self,
        me: usize,
        pass: &RestorePass,
        version: u64,
        holder: &FenceHolder,
    ) -> Vec<Write> {
        let r = &self.restores[me];
        match pass {
            RestorePass::Accept => vec![Write::Phase(RestorePhase::Pending)],
            RestorePass::BeginVerifying => vec![Write::Phase(RestorePhase::Verifying)],
            RestorePass::Verify if r.refused => vec![Write::Phase(RestorePhase::Failed)],
            RestorePass::Verify => {
                let mut w = vec![];
                if r.kind.touches_members() {
                    match may_claim(holder) {
                        ClaimVerdict::Refuse { .. } => {
                            return vec![Write::Phase(RestorePhase::Failed)];
                        }
                        ClaimVerdict::Take => w.push(Write::ClaimFence(version)),
                        ClaimVerdict::Held => {}
                    }
                }
                w.push(Write::Verified);
                w.push(Write::Phase(r.kind.after_verifying()));
                w
            }
            RestorePass::Claim => vec![Write::ClaimFence(version)],
            RestorePass::StopMembers(ids) => ids.iter().map(|id| Write::Stop(*id)).collect(),
            RestorePass::Stopped => vec![Write::Phase(RestorePhase::Restoring)],
            RestorePass::Place => {
                let mut w = match r.kind {
                    RestoreKind::Online => vec![Write::Replay],
                    RestoreKind::VerifyOnly => vec![Write::Scratch],
                    _ => self.pods.keys().map(|id| Write::Place(*id)).collect(),
                };
                w.push(Write::Phase(RestorePhase::Starting));
                w
            }
            RestorePass::Judge => {
                let mut w = vec![];
                if r.kind.touches_members() {
                    w.push(Write::LiftFence);
                }
                w.push(Write::Phase(RestorePhase::Ready));
                w
            }
            RestorePass::Fail(_) => {
                let mut w = vec![Write::Phase(RestorePhase::Failed)];
                if r.kind == RestoreKind::Online {
                    w.push(Write::LiftFence);
                }
                w
            }
            RestorePass::AwaitHandOver
            | RestorePass::AwaitStopped(_)
            | RestorePass::AwaitMembers
            | RestorePass::Idle => vec![],
        }
    }

    /// A write that touches members: the judge's checks.
    fn touch(&mut self, me: usize, what: &str) {
        let r = &self.restores[me];
        if !r.verified || r.refused {
            self.violations
                .push(format!("r{me} {what} without a passed verification"));
        }
        if self.fence != Some(me) {
            self.violations
                .push(format!("r{me} {what} while the fence is {:?}", self.fence));
        }
        if let Some(other) = self.exclusive
            && other != me
        {
            self.violations
                .push(format!("r{me} {what} while r{other} still touches members"));
        }
        self.exclusive = Some(me);
    }

    /// Applies one write; `false` when a compare-and-set lost (the pass ends with a conflict).
    fn apply(&mut self, me: usize, write: &Write) -> bool {
        match write {
            Write::Phase(p) => self.restores[me].phase = Some(*p),
            Write::Verified => self.restores[me].verified = true,
            Write::ClaimFence(v) => {
                if *v != self.version {
                    return false;
                }
                if self.exclusive.is_some_and(|e| e != me) {
                    self.exclusive = None;
                }
                self.fence = Some(me);
                self.version += 1;
            }
            Write::LiftFence => {
                if self.fence == Some(me) {
                    self.fence = None;
                    self.version += 1;
                    if self.exclusive == Some(me) {
                        self.exclusive = None;
                    }
                }
            }
            Write::Stop(id) => {
                self.touch(me, "stopped a member");
                self.pods.insert(*id, PodState::Terminating);
            }
            Write::Place(id) => {
                self.touch(me, "placed data");
                self.pods.insert(
                    *id,
                    PodState::Placed {
                        by: me,
                        ready: false,
                    },
                );
            }
            Write::Replay => self.touch(me, "replayed data"),
            Write::Scratch => self.restores[me].scratch = Some(false),
        }
        true
    }

    /// The ensemble's controller: a pass reads the fence, acts later.
    fn ensemble_pass(&mut self, act: bool) {
        match (self.ensemble_pending.take(), act) {
            (None, _) => self.ensemble_pending = Some(self.fence),
            (Some(Some(r)), true) => self.ack = Some(r),
            (Some(None), true) => {
                self.ack = None;
                // A membership step: it restarts a member whatever state it was in.
                if let Some(e) = self.exclusive {
                    self.violations.push(format!(
                        "a membership step took effect while r{e} touches the members"
                    ));
                }
                if let Some(p) = self.pods.values_mut().next() {
                    *p = PodState::Running;
                }
            }
            (Some(_), false) => {}
        }
    }

    fn kubelet(&mut self) {
        for r in &mut self.restores {
            if r.scratch.is_some() {
                r.scratch = Some(true);
            }
        }
        for p in self.pods.values_mut() {
            match p {
                PodState::Terminating => *p = PodState::Stopped,
                PodState::Placed { ready, .. } => *ready = true,
                _ => {}
            }
        }
    }

    /// One pass of restore `me`: reads, or acts on what it read (`crash`: stops after `keep`
    /// writes).
    fn restore_pass(&mut self, me: usize, crash: Option<usize>) {
        let r = &mut self.restores[me];
        match r.pending.take() {
            None => {
                r.passes += 1;
                let pass = next(&self.view(me));
                let read = (pass, self.version, self.holder(me));
                self.restores[me].pending = Some(read);
            }
            Some((pass, version, holder)) => {
                let writes = self.writes(me, &pass, version, &holder);
                let keep = crash.unwrap_or(writes.len()).min(writes.len());
                for w in &writes[..keep] {
                    if !self.apply(me, w) {
                        break;
                    }
                }
            }
        }
    }

    fn finished(&self) -> bool {
        self.restores
            .iter()
            .all(|r| matches!(r.phase, Some(RestorePhase::Ready | RestorePhase::Failed)))
    }
}

fn kind() -> impl Strategy<Value = (RestoreKind, bool)> {
    (
        prop_oneof![
            Just(RestoreKind::Offline),
            Just(RestoreKind::Online),
            Just(RestoreKind::VerifyOnly),
            Just(RestoreKind::Survivors),
        ],
        proptest::bool::weighted(0.2),
    )
}

/// Runs `schedule` (actor, crash) and then a fair tail until every restore is finished.
fn run(kinds: &[(RestoreKind, bool)], schedule: &[(u8, u8)]) -> World {
    let mut w = World::new(kinds);
    let n = kinds.len();
    for (actor, crash) in schedule {
        match *actor as usize % (n + 2) {
            0 => w.ensemble_pass(*crash % 5 != 0),
            1 => w.kubelet(),
            i => w.restore_pass(i - 2, (*crash % 7 == 0).then_some(*crash as usize % 3)),
        }
    }
    // Fair and fault-free from here: every actor in turn.
    for _ in 0..200 {
        if w.finished() {
            break;
        }
        w.ensemble_pass(true);
        w.kubelet();
        for i in 0..n {
            w.restore_pass(i, None);
        }
    }
    w
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000)
    ))]

    #[test]
    fn restores_never_run_beside_a_step_or_each_other_and_always_finish(
        kinds in proptest::collection::vec(kind(), 1..=3),
        schedule in proptest::collection::vec((any::<u8>(), any::<u8>()), 0..300),
    ) {
        let w = run(&kinds, &schedule);
        prop_assert!(w.violations.is_empty(), "{:?}", w.violations);
        prop_assert!(w.finished(), "unfinished: {:?}", w.restores.iter().map(|r| r.phase).collect::<Vec<_>>());
        if let Some(r) = w.fence {
            let holder = &w.restores[r];
            prop_assert!(
                holder.phase == Some(RestorePhase::Failed) && holder.kind.stops_members(),
                "the fence is left with r{} ({:?}, {:?})", r, holder.kind, holder.phase
            );
        }
        for (i, r) in w.restores.iter().enumerate() {
            if r.refused {
                prop_assert_eq!(r.phase, Some(RestorePhase::Failed), "r{} was refused", i);
            }
        }
    }
}

/// The judge catches what the hand-over prevents: without it, an ensemble pass that read the
/// ensemble unfenced takes its step after the restore stopped members.
#[test]
fn without_the_hand_over_a_step_lands_beside_the_restore() {
    let mut w = World::new(&[(RestoreKind::Offline, false)]);
    // The ensemble's controller reads the ensemble unfenced.
    w.ensemble_pass(true);
    for _ in 0..4 {
        // Accept, BeginVerifying, Verify (claims the fence).
        w.restore_pass(0, None);
        w.restore_pass(0, None);
    }
    assert_eq!(w.fence, Some(0));
    let mut view = w.view(0);
    assert_eq!(next(&view), RestorePass::AwaitHandOver, "the rule holds it");
    // What a machine without the rule would do:
    view.handed_over = true;
    let pass = next(&view);
    let writes = w.writes(0, &pass, w.version, &FenceHolder::Me);
    for write in &writes {
        assert!(w.apply(0, write));
    }
    w.ensemble_pass(true);
    assert!(
        w.violations.iter().any(|v| v.contains("membership step")),
        "{:?}",
        w.violations
    );
}

/// The judge catches two restores that both pass a list check: only the compare-and-set keeps
/// them apart.
#[test]
fn a_stale_claim_loses_the_compare_and_set() {
    let mut w = World::new(&[(RestoreKind::Offline, false), (RestoreKind::Online, false)]);
    for _ in 0..2 {
        for i in 0..2 {
            w.restore_pass(i, None);
            w.restore_pass(i, None);
        }
    }
    // Both read Verify with the fence free.
    w.restore_pass(0, None);
    w.restore_pass(1, None);
    w.restore_pass(0, None);
    w.restore_pass(1, None);
    assert_eq!(w.fence, Some(0));
    assert_eq!(
        w.restores[1].phase,
        Some(RestorePhase::Verifying),
        "its claim lost"
    );
    // Its next pass sees the fence held by a running restore and fails without touching.
    w.restore_pass(1, None);
    w.restore_pass(1, None);
    assert_eq!(w.restores[1].phase, Some(RestorePhase::Failed));
    assert!(w.violations.is_empty(), "{:?}", w.violations);
}
