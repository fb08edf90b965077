//! The restore's safety decisions (I7, I10), pure: whether a verified artifact may replace the
//! live data, whether another restore of the same ensemble is in the way, and which members an
//! offline restore places the data on. The controller gathers the facts (the live data's
//! newest zxid from a serving member or from the volumes, the artifact's manifest, the other
//! ZkRestores) and acts on the answers.
//!
//! Rules of [`judge_artifact`], in order:
//! - a verify-only restore touches no member: nothing to consent to;
//! - when the live data's newest zxid cannot be known (no member serves and a volume cannot be
//!   read), the artifact cannot be shown not to be older: only `allowOlder` lets it through;
//! - zxids order one history only: an artifact of another ensemble (another uid) over live
//!   user data needs `allowOlder`, whatever the zxids say;
//! - an artifact whose newest data is older than the live user data needs `allowOlder`.

use std::collections::{BTreeMap, BTreeSet};

use super::model::ServerId;
use crate::crd::{RestorePhase, ZkRestore};

/// What is known of the live data an artifact would replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveData {
    /// Not read (a verify-only restore reads nothing live).
    Unread,
    /// The newest zxid of user data, and how many user znodes there are (volumes cannot tell,
    /// so the count is taken to be 1 there: data is assumed).
    Known {
        /// The newest zxid.
        zxid: i64,
        /// User znodes (outside `/zookeeper`).
        user_znodes: i64,
    },
    /// It could not be read, with why.
    Unknown(String),
}

/// What `allowOlder` was needed for, when a restore goes ahead with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    /// Nothing: the artifact is not older than the live data, of the same history, or there is
    /// no live user data.
    NotNeeded,
    /// The live data's age could not be known.
    UnknownLiveData,
    /// The artifact is of another ensemble's history.
    OtherHistory,
    /// The artifact is older than the live data.
    OlderData,
}

/// Why a verified artifact may not replace the live data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArtifactRefusal {
    /// The live data's newest zxid could not be known.
    LiveDataUnknown {
        /// Why.
        why: String,
    },
    /// The artifact was taken from another ensemble, and the target holds user data.
    UnrelatedHistory {
        /// The source ensemble's uid.
        source_uid: String,
        /// User znodes the target holds.
        user_znodes: i64,
    },
    /// The artifact's newest data is older than the live data.
    OlderThanLive {
        /// The artifact's newest data zxid.
        backup_zxid: i64,
        /// The live data's newest zxid.
        live_zxid: i64,
    },
}

impl ArtifactRefusal {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ArtifactRefusal::LiveDataUnknown { .. } => "LiveDataUnknown",
            ArtifactRefusal::UnrelatedHistory { .. } => "UnrelatedHistory",
            ArtifactRefusal::OlderThanLive { .. } => "OlderThanLive",
        }
    }
}

/// The source ensemble's uid when an artifact taken from it (`source`, from its manifest) is of
/// another history than the target ensemble's (`target`): both known and different. An
/// artifact from before quorate recorded the uid counts as the same history.
pub fn unrelated_history<'a>(source: Option<&'a str>, target: Option<&str>) -> Option<&'a str> {
    match (source, target) {
        (Some(s), Some(t)) if s != t => Some(s),
        _ => None,
    }
}

/// Whether an artifact whose newest data is `backup_zxid`, taken from the ensemble with uid
/// `source_uid`, may replace `live` in the ensemble with uid `target_uid` (see the module doc).
pub fn judge_artifact(
    live: &LiveData,
    backup_zxid: i64,
    source_uid: Option<&str>,
    target_uid: Option<&str>,
    allow_older: bool,
    verify_only: bool,
) -> Result<Consent, ArtifactRefusal> {
    if verify_only {
        return Ok(Consent::NotNeeded);
    }
    let consent_or = |consent: Consent, refusal: ArtifactRefusal| {
        if allow_older {
            Ok(consent)
        } else {
            Err(refusal)
        }
    };
    match live {
        LiveData::Unread => Ok(Consent::NotNeeded),
        LiveData::Unknown(why) => consent_or(
            Consent::UnknownLiveData,
            ArtifactRefusal::LiveDataUnknown { why: why.clone() },
        ),
        LiveData::Known { user_znodes, .. } if *user_znodes <= 0 => Ok(Consent::NotNeeded),
        LiveData::Known { zxid, user_znodes } => {
            if let Some(other) = unrelated_history(source_uid, target_uid) {
                return consent_or(
                    Consent::OtherHistory,
                    ArtifactRefusal::UnrelatedHistory {
                        source_uid: other.to_string(),
                        user_znodes: *user_znodes,
                    },
                );
            }
            if *zxid > backup_zxid {
                return consent_or(
                    Consent::OlderData,
                    ArtifactRefusal::OlderThanLive {
                        backup_zxid,
                        live_zxid: *zxid,
                    },
                );
            }
            Ok(Consent::NotNeeded)
        }
    }
}

/// The members an offline restore places the data on: every member with a volume and every
/// voter of the configuration, and of those the voters whose volume is gone (they get a new
/// one). A stopped ensemble's voters are the last configuration its status recorded.
pub fn members_to_restore<T>(
    volumes: &BTreeSet<ServerId>,
    voters: &BTreeMap<ServerId, T>,
) -> (BTreeSet<ServerId>, BTreeSet<ServerId>) {
    let lost: BTreeSet<ServerId> = voters
        .keys()
        .filter(|id| !volumes.contains(id))
        .copied()
        .collect();
    (volumes.union(&lost).copied().collect(), lost)
}

/// The restore of the same ensemble that keeps `me` from starting, if any: one that has left
/// Verifying (it may have fenced and stopped members), or one still before that which was
/// created first (creation time, then name). Verify-only restores touch no member and neither
/// wait nor hold anyone up; finished ones (Ready, Failed) never hold anyone up.
pub fn restore_in_the_way(me: &ZkRestore, all: &[ZkRestore]) -> Option<String> {
    if me.spec.verify_only {
        return None;
    }
    let name = |r: &ZkRestore| r.metadata.name.clone().unwrap_or_default();
    let key = |r: &ZkRestore| (r.metadata.creation_timestamp.clone().map(|t| t.0), name(r));
    all.iter()
        .filter(|r| name(r) != name(me))
        .filter(|r| r.spec.ensemble_ref.name == me.spec.ensemble_ref.name && !r.spec.verify_only)
        .find(|r| match r.status.as_ref().and_then(|s| s.phase) {
            Some(RestorePhase::Ready | RestorePhase::Failed) => false,
            Some(RestorePhase::Stopping | RestorePhase::Restoring | RestorePhase::Starting) => true,
            None | Some(RestorePhase::Pending | RestorePhase::Verifying) => key(r) < key(me),
        })
        .map(name)
}

#[cfg(test)]
mod tests {
    //! Unit and property tier: pure inputs, no I/O.
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn older_data_another_history_and_unknown_live_data_need_consent() {
        let live = LiveData::Known {
            zxid: 0x2_0000_0010,
            user_znodes: 5,
        };
        assert_eq!(
            judge_artifact(&live, 0x2_0000_0001, None, None, false, false),
            Err(ArtifactRefusal::OlderThanLive {
                backup_zxid: 0x2_0000_0001,
                live_zxid: 0x2_0000_0010
            })
        );
        assert_eq!(
            judge_artifact(&live, 0x2_0000_0001, None, None, true, false),
            Ok(Consent::OlderData)
        );
        assert_eq!(
            judge_artifact(&live, 0x9_0000_0000, Some("a"), Some("b"), false, false),
            Err(ArtifactRefusal::UnrelatedHistory {
                source_uid: "a".into(),
                user_znodes: 5
            }),
            "a newer zxid of another history is no proof"
        );
        assert_eq!(
            judge_artifact(&LiveData::Unknown("x".into()), 1, None, None, false, false),
            Err(ArtifactRefusal::LiveDataUnknown { why: "x".into() })
        );
        // An ensemble without user data (a new one) takes anything; verify-only judges nothing.
        let empty = LiveData::Known {
            zxid: 0x5_0000_0000,
            user_znodes: 0,
        };
        assert_eq!(
            judge_artifact(&empty, 1, Some("a"), Some("b"), false, false),
            Ok(Consent::NotNeeded)
        );
        assert_eq!(
            judge_artifact(&live, 1, Some("a"), Some("b"), false, true),
            Ok(Consent::NotNeeded)
        );
        // The same history, not older: no consent needed.
        assert_eq!(
            judge_artifact(&live, 0x2_0000_0010, Some("a"), Some("a"), false, false),
            Ok(Consent::NotNeeded)
        );
    }

    fn live() -> impl Strategy<Value = LiveData> {
        prop_oneof![
            Just(LiveData::Unread),
            (0i64..50, 0i64..3)
                .prop_map(|(zxid, user_znodes)| LiveData::Known { zxid, user_znodes }),
            Just(LiveData::Unknown("volume unreadable".into())),
        ]
    }

    fn uid() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("a".to_string())),
            Just(Some("b".to_string()))
        ]
    }

    proptest! {
        /// Judged from the inputs alone: older data never wins without consent (I7). A restore
        /// that touches members and goes ahead without allowOlder never replaces newer user
        /// data, never replaces another history's user data, and never proceeds blind.
        #[test]
        fn older_data_never_wins_without_consent(
            live in live(),
            backup in 0i64..50,
            source in uid(),
            target in uid(),
            allow_older: bool,
        ) {
            let verdict = judge_artifact(&live, backup, source.as_deref(), target.as_deref(), allow_older, false);
            if verdict.is_ok() && !allow_older {
                match &live {
                    LiveData::Unknown(_) => prop_assert!(false, "went ahead blind"),
                    LiveData::Known { zxid, user_znodes } if *user_znodes > 0 => {
                        prop_assert!(*zxid <= backup, "older data won");
                        prop_assert!(
                            source.is_none() || target.is_none() || source == target,
                            "another history replaced user data"
                        );
                    }
                    _ => {}
                }
            }
            // Consent is never asked for where nothing needs it.
            if let Ok(c) = verdict
                && allow_older
                && c != Consent::NotNeeded
            {
                prop_assert!(judge_artifact(&live, backup, source.as_deref(), target.as_deref(), false, false).is_err());
            }
        }
    }
}
