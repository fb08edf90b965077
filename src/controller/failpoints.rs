//! Named failpoints inside each step, for tests that stop the operator in the middle of a step
//! and SIGKILL it there (DESIGN.md section 5, "the operator killed at named failpoints").
//!
//! They exist only with the `failpoints` cargo feature (tikv's `fail` crate); without it every
//! [`reached`] is an empty `async fn` and [`configure_from_env`] reads nothing. With it, the
//! operator reads [`ENV`] once at start: a comma-separated list of names from [`ALL`]. A pass
//! that reaches a configured failpoint logs `failpoint <name> reached` and then never goes on
//! (only that pass: the Lease is renewed and other objects are reconciled), so a test can wait
//! for the line and kill the process exactly there. A name with a delay (`<name>@<seconds>`)
//! goes on after that long instead, so a test can pause the process there (SIGSTOP) and see
//! what it does when it wakes.
//!
//! Every step has `<step>.after-claim` (the claim is written to status, nothing of the step is
//! done) and `<step>.after-effect` (the step's effect is done: Pod created, reconfig committed,
//! Pod and volume deleted; the next pass's record not yet written). Steps with two effects have a
//! failpoint between them too.

/// The environment variable that names the failpoints a `failpoints` build stops at.
pub const ENV: &str = "QUORATE_FAILPOINTS";

/// create-member: claimed, no volume or Pod created yet.
pub const CREATE_MEMBER_AFTER_CLAIM: &str = "create-member.after-claim";
/// create-member: the PVC exists, the Pod not yet.
pub const CREATE_MEMBER_AFTER_VOLUME: &str = "create-member.after-volume";
/// create-member: the Pod exists.
pub const CREATE_MEMBER_AFTER_EFFECT: &str = "create-member.after-effect";
/// add-voter: claimed, the reconfig not issued.
pub const ADD_VOTER_AFTER_CLAIM: &str = "add-voter.after-claim";
/// add-voter: ZooKeeper committed the configuration with the joiner.
pub const ADD_VOTER_AFTER_EFFECT: &str = "add-voter.after-effect";
/// remove-voter: claimed, the reconfig not issued.
pub const REMOVE_VOTER_AFTER_CLAIM: &str = "remove-voter.after-claim";
/// remove-voter: ZooKeeper committed the configuration without the member.
pub const REMOVE_VOTER_AFTER_EFFECT: &str = "remove-voter.after-effect";
/// delete-member: claimed, nothing deleted.
pub const DELETE_MEMBER_AFTER_CLAIM: &str = "delete-member.after-claim";
/// delete-member: the Pod is deleted, the PVC not yet.
pub const DELETE_MEMBER_AFTER_POD: &str = "delete-member.after-pod";
/// delete-member: the Pod and the PVC are deleted.
pub const DELETE_MEMBER_AFTER_EFFECT: &str = "delete-member.after-effect";
/// fence-member: claimed, nothing deleted.
pub const FENCE_MEMBER_AFTER_CLAIM: &str = "fence-member.after-claim";
/// fence-member: the PVC is marked fenced, the Pod not deleted yet.
pub const FENCE_MEMBER_AFTER_MARK: &str = "fence-member.after-mark";
/// fence-member: the PVC is marked fenced and the Pod deleted (the PVC is kept).
pub const FENCE_MEMBER_AFTER_EFFECT: &str = "fence-member.after-effect";
/// restart-member: claimed, the Pod not touched.
pub const RESTART_MEMBER_AFTER_CLAIM: &str = "restart-member.after-claim";
/// restart-member: the old Pod is deleted (its volume kept).
pub const RESTART_MEMBER_AFTER_POD: &str = "restart-member.after-pod";
/// restart-member: the Pod of the current spec is created.
pub const RESTART_MEMBER_AFTER_EFFECT: &str = "restart-member.after-effect";

/// A restore: every member serves the restored data, which is not yet judged (nor the
/// ensemble's fence lifted).
pub const RESTORE_BEFORE_JUDGEMENT: &str = "restore.before-judgement";

/// Every failpoint, in step order.
pub const ALL: &[&str] = &[
    CREATE_MEMBER_AFTER_CLAIM,
    CREATE_MEMBER_AFTER_VOLUME,
    CREATE_MEMBER_AFTER_EFFECT,
    ADD_VOTER_AFTER_CLAIM,
    ADD_VOTER_AFTER_EFFECT,
    REMOVE_VOTER_AFTER_CLAIM,
    REMOVE_VOTER_AFTER_EFFECT,
    DELETE_MEMBER_AFTER_CLAIM,
    DELETE_MEMBER_AFTER_POD,
    DELETE_MEMBER_AFTER_EFFECT,
    FENCE_MEMBER_AFTER_CLAIM,
    FENCE_MEMBER_AFTER_MARK,
    FENCE_MEMBER_AFTER_EFFECT,
    RESTART_MEMBER_AFTER_CLAIM,
    RESTART_MEMBER_AFTER_POD,
    RESTART_MEMBER_AFTER_EFFECT,
    RESTORE_BEFORE_JUDGEMENT,
];

/// The `after-claim` failpoint of `step`.
pub fn after_claim(step: &crate::planner::Step) -> &'static str {
    use crate::planner::Step;
    match step {
        Step::CreateMember { .. } => CREATE_MEMBER_AFTER_CLAIM,
        Step::AddVoter { .. } => ADD_VOTER_AFTER_CLAIM,
        Step::RemoveVoter { .. } => REMOVE_VOTER_AFTER_CLAIM,
        Step::DeleteMember { .. } => DELETE_MEMBER_AFTER_CLAIM,
        Step::FenceMember { .. } => FENCE_MEMBER_AFTER_CLAIM,
        Step::RestartMember { .. } => RESTART_MEMBER_AFTER_CLAIM,
    }
}

/// Failpoints named in [`ENV`] that are not in [`ALL`], or with a delay that is not a whole
/// number of seconds (an empty list: none set).
#[derive(Debug, thiserror::Error)]
#[error("{ENV} names unknown failpoints {unknown:?}; known: {} (each optionally @<seconds>)", ALL.join(", "))]
pub struct UnknownFailpoints {
    /// The unknown names.
    pub unknown: Vec<String>,
}

/// An armed failpoint: its name, and how long a pass waits there before going on (`None`:
/// forever).
pub type Armed = (&'static str, Option<std::time::Duration>);

/// The failpoints of a [`ENV`] value: comma-separated, blanks ignored, each one of [`ALL`],
/// optionally followed by `@<seconds>`.
pub fn parse(value: &str) -> Result<Vec<Armed>, UnknownFailpoints> {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for item in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let (name, delay) = match item.split_once('@') {
            Some((name, secs)) => match secs.parse::<u64>() {
                Ok(secs) => (name, Some(std::time::Duration::from_secs(secs))),
                Err(_) => {
                    unknown.push(item.to_string());
                    continue;
                }
            },
            None => (item, None),
        };
        match ALL.iter().find(|k| **k == name) {
            Some(k) => known.push((*k, delay)),
            None => unknown.push(item.to_string()),
        }
    }
    if unknown.is_empty() {
        Ok(known)
    } else {
        Err(UnknownFailpoints { unknown })
    }
}

/// The delays of the armed failpoints that go on after one.
#[cfg(feature = "failpoints")]
static DELAYS: std::sync::OnceLock<Vec<Armed>> = std::sync::OnceLock::new();

/// Arms the failpoints named in [`ENV`] (a `failpoints` build only; otherwise nothing is read).
/// Returns the armed names.
pub fn configure_from_env() -> Result<Vec<&'static str>, UnknownFailpoints> {
    #[cfg(feature = "failpoints")]
    {
        let armed = parse(&std::env::var(ENV).unwrap_or_default())?;
        for (name, delay) in &armed {
            // "return" makes `fail_point!` return early: `triggered` below says so.
            fail::cfg(*name, "return").map_err(|e| UnknownFailpoints {
                unknown: vec![format!("{name}: {e}")],
            })?;
            tracing::warn!(failpoint = *name, delay = ?delay, "failpoint armed");
        }
        let _ = DELAYS.set(armed.clone());
        Ok(armed.into_iter().map(|(name, _)| name).collect())
    }
    #[cfg(not(feature = "failpoints"))]
    Ok(Vec::new())
}

/// Whether failpoint `name` is armed (the `fail` crate's own check).
#[cfg(feature = "failpoints")]
fn triggered(name: &str) -> bool {
    fail::fail_point!(name, |_| true);
    false
}

/// Failpoint `name`: when armed, logs `failpoint <name> reached` and never returns, so the
/// pass stops there until the process is killed; armed with a delay, returns after it.
pub async fn reached(name: &'static str) {
    #[cfg(feature = "failpoints")]
    if triggered(name) {
        tracing::warn!(failpoint = name, "failpoint {name} reached");
        let delay = DELAYS
            .get()
            .and_then(|d| d.iter().find(|(n, _)| *n == name))
            .and_then(|(_, d)| *d);
        match delay {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                tracing::warn!(failpoint = name, "failpoint {name} passed");
            }
            None => std::future::pending::<()>().await,
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_has_an_after_claim_and_an_after_effect_failpoint() {
        for kind in [
            "create-member",
            "add-voter",
            "remove-voter",
            "delete-member",
            "fence-member",
            "restart-member",
        ] {
            for at in ["after-claim", "after-effect"] {
                let name = format!("{kind}.{at}");
                assert!(ALL.contains(&name.as_str()), "{name} is missing");
            }
        }
        let unique: std::collections::BTreeSet<_> = ALL.iter().collect();
        assert_eq!(unique.len(), ALL.len(), "a failpoint is listed twice");
    }

    #[test]
    fn the_environment_names_known_failpoints_only() {
        assert_eq!(
            parse(" add-voter.after-effect, ,remove-voter.after-claim@12").ok(),
            Some(vec![
                (ADD_VOTER_AFTER_EFFECT, None),
                (
                    REMOVE_VOTER_AFTER_CLAIM,
                    Some(std::time::Duration::from_secs(12))
                )
            ])
        );
        assert_eq!(parse("").ok(), Some(vec![]));
        let err = parse("add-voter.after-effect,add-voter.afterclaim,add-voter.after-claim@1.5")
            .unwrap_err();
        assert_eq!(
            err.unknown,
            vec![
                "add-voter.afterclaim".to_string(),
                "add-voter.after-claim@1.5".to_string()
            ]
        );
    }
}
