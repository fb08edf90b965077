//! Recovery after a quorum loss (I7): whether an ensemble may be rebuilt from its survivors, and
//! from which one. Pure: the controller gathers what each member's volume holds (read by probe
//! Pods, no quorum needed) and which members serve, and acts on the [`RecoveryDecision`].
//!
//! Rules, in order:
//! - a member that serves means the ensemble has a quorum: nothing to recover;
//! - without a recorded configuration the majority cannot be judged;
//! - every volume must have answered, and none may be unreadable (it might hold the newest
//!   write, so no survivor is chosen without it);
//! - while a majority of the voters still holds data the ensemble can come back by itself (its
//!   Pods restart on those volumes and elect): recovery is refused, since it would throw away
//!   what only that majority may hold;
//! - the survivor with the highest zxid is chosen (the lowest id among equals); every other
//!   volume with data is set aside, never used and never deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::model::ServerId;

/// What one member's volume holds, as its probe answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeAnswer {
    /// Not answered yet.
    Pending,
    /// Data up to this zxid.
    Data(u64),
    /// No data at all (a lost or wiped disk).
    Empty,
    /// The volume could not be read, with why.
    Unreadable(String),
}

/// Why a recovery from the survivors is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryRefusal {
    /// Members serve: the ensemble has a quorum.
    Serving {
        /// The members that serve.
        members: BTreeSet<ServerId>,
    },
    /// No configuration was ever recorded, so the majority cannot be judged.
    NoConfiguration,
    /// A volume could not be read: it might hold the newest write.
    Unreadable {
        /// The member.
        member: ServerId,
        /// Why.
        why: String,
    },
    /// A majority of the voters still holds data: the ensemble can regain its quorum by itself.
    MajorityAlive {
        /// The voters whose volumes hold data.
        with_data: BTreeSet<ServerId>,
        /// How many voters the configuration has.
        voters: usize,
    },
    /// No volume holds any data: only a backup can bring the data back.
    NoSurvivor,
}

impl RecoveryRefusal {
    /// A short machine-readable reason (a condition's `reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            RecoveryRefusal::Serving { .. } => "EnsembleServes",
            RecoveryRefusal::NoConfiguration => "NoConfiguration",
            RecoveryRefusal::Unreadable { .. } => "LiveDataUnknown",
            RecoveryRefusal::MajorityAlive { .. } => "MajorityAlive",
            RecoveryRefusal::NoSurvivor => "NoSurvivor",
        }
    }
}

fn ids(set: &BTreeSet<ServerId>) -> String {
    set.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for RecoveryRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryRefusal::Serving { members } => write!(
                f,
                "members {} serve, so the ensemble has its quorum: there is nothing to recover",
                ids(members)
            ),
            RecoveryRefusal::NoConfiguration => write!(
                f,
                "the ensemble has no recorded configuration, so whether a majority is lost cannot be judged"
            ),
            RecoveryRefusal::Unreadable { member, why } => write!(
                f,
                "the volume of member {member} cannot be read ({why}); it may hold the newest writes, so no survivor is chosen without it"
            ),
            RecoveryRefusal::MajorityAlive { with_data, voters } => write!(
                f,
                "{} of {voters} voters (members {}) still hold their data, a majority: the ensemble regains its quorum once their Pods run again, with nothing lost; recovery from the survivors is for a majority lost for good",
                with_data.len(),
                ids(with_data)
            ),
            RecoveryRefusal::NoSurvivor => write!(
                f,
                "no member's volume holds any data; restore from a backup instead"
            ),
        }
    }
}

/// What to do about a recovery from the survivors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryDecision {
    /// Some volumes have not answered yet.
    Reading {
        /// How many answered.
        answered: usize,
        /// Of how many.
        of: usize,
    },
    /// Refused, with why.
    Refused(RecoveryRefusal),
    /// Rebuild the ensemble from `member` alone; set the volumes of `set_aside` aside.
    RebuildFrom {
        /// The survivor with the highest zxid.
        member: ServerId,
        /// Its zxid.
        zxid: u64,
        /// Every other member whose volume holds data.
        set_aside: BTreeSet<ServerId>,
    },
}

impl fmt::Display for RecoveryDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryDecision::Reading { answered, of } => write!(
                f,
                "reading every member's volume ({answered} of {of} answered)"
            ),
            RecoveryDecision::Refused(r) => write!(f, "refused: {r}"),
            RecoveryDecision::RebuildFrom {
                member,
                zxid,
                set_aside,
            } => {
                write!(
                    f,
                    "rebuilding from member {member}, the survivor with the highest zxid (0x{zxid:x})"
                )?;
                if !set_aside.is_empty() {
                    write!(f, "; set aside, never used: members {}", ids(set_aside))?;
                }
                Ok(())
            }
        }
    }
}

/// Decides a recovery from the survivors. `voters` is the last recorded configuration,
/// `serving` the members that serve now, `volumes` every member volume's answer (voters and
/// joiners alike: a synced joiner may hold newer data than a lagging voter).
pub fn decide_recovery(
    voters: &BTreeSet<ServerId>,
    serving: &BTreeSet<ServerId>,
    volumes: &BTreeMap<ServerId, VolumeAnswer>,
) -> RecoveryDecision {
    use RecoveryDecision::*;
    if !serving.is_empty() {
        return Refused(RecoveryRefusal::Serving {
            members: serving.clone(),
        });
    }
    if voters.is_empty() {
        return Refused(RecoveryRefusal::NoConfiguration);
    }
    let answered = volumes
        .values()
        .filter(|a| **a != VolumeAnswer::Pending)
        .count();
    if answered < volumes.len() {
        return Reading {
            answered,
            of: volumes.len(),
        };
    }
    if let Some((member, why)) = volumes.iter().find_map(|(id, a)| match a {
        VolumeAnswer::Unreadable(why) => Some((*id, why.clone())),
        _ => None,
    }) {
        return Refused(RecoveryRefusal::Unreadable { member, why });
    }
    let data: BTreeMap<ServerId, u64> = volumes
        .iter()
        .filter_map(|(id, a)| match a {
            VolumeAnswer::Data(z) => Some((*id, *z)),
            _ => None,
        })
        .collect();
    let with_data: BTreeSet<ServerId> = voters
        .iter()
        .filter(|id| data.contains_key(id))
        .copied()
        .collect();
    if with_data.len() > voters.len() / 2 {
        return Refused(RecoveryRefusal::MajorityAlive {
            with_data,
            voters: voters.len(),
        });
    }
    let Some((member, zxid)) = data
        .iter()
        .map(|(id, z)| (*id, *z))
        .max_by_key(|(id, z)| (*z, std::cmp::Reverse(*id)))
    else {
        return Refused(RecoveryRefusal::NoSurvivor);
    };
    RebuildFrom {
        member,
        zxid,
        set_aside: data.keys().filter(|id| **id != member).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    //! Unit and property tier: pure inputs, no I/O.
    use proptest::prelude::*;

    use super::*;

    fn set(ids: &[u32]) -> BTreeSet<ServerId> {
        ids.iter().map(|i| ServerId(*i)).collect()
    }

    fn answers(a: &[(u32, VolumeAnswer)]) -> BTreeMap<ServerId, VolumeAnswer> {
        a.iter().map(|(i, v)| (ServerId(*i), v.clone())).collect()
    }

    #[test]
    fn rebuilds_from_the_highest_survivor_and_sets_the_others_aside() {
        let d = decide_recovery(
            &set(&[1, 2, 3, 4, 5]),
            &set(&[]),
            &answers(&[
                (1, VolumeAnswer::Empty),
                (2, VolumeAnswer::Data(0x2_0000_0010)),
                (3, VolumeAnswer::Empty),
                (4, VolumeAnswer::Data(0x2_0000_0030)),
                (5, VolumeAnswer::Empty),
            ]),
        );
        assert_eq!(
            d,
            RecoveryDecision::RebuildFrom {
                member: ServerId(4),
                zxid: 0x2_0000_0030,
                set_aside: set(&[2]),
            }
        );
        assert!(d.to_string().contains("member 4"), "{d}");
    }

    #[test]
    fn a_majority_with_data_refuses() {
        let d = decide_recovery(
            &set(&[1, 2, 3]),
            &set(&[]),
            &answers(&[
                (1, VolumeAnswer::Data(5)),
                (2, VolumeAnswer::Data(9)),
                (3, VolumeAnswer::Empty),
            ]),
        );
        assert!(
            matches!(&d, RecoveryDecision::Refused(RecoveryRefusal::MajorityAlive { with_data, voters: 3 }) if *with_data == set(&[1, 2])),
            "{d:?}"
        );
        assert!(d.to_string().contains("2 of 3 voters"), "{d}");
    }

    #[test]
    fn a_serving_member_an_unread_or_unreadable_volume_and_no_data_refuse_or_wait() {
        let voters = set(&[1, 2, 3]);
        let lost = [(1, VolumeAnswer::Empty), (2, VolumeAnswer::Empty)];
        let with = |third: VolumeAnswer| {
            let mut a = answers(&lost);
            a.insert(ServerId(3), third);
            a
        };
        assert!(matches!(
            decide_recovery(&voters, &set(&[3]), &with(VolumeAnswer::Data(4))),
            RecoveryDecision::Refused(RecoveryRefusal::Serving { .. })
        ));
        assert_eq!(
            decide_recovery(&voters, &set(&[]), &with(VolumeAnswer::Pending)),
            RecoveryDecision::Reading { answered: 2, of: 3 }
        );
        assert!(matches!(
            decide_recovery(
                &voters,
                &set(&[]),
                &with(VolumeAnswer::Unreadable("bad log".into()))
            ),
            RecoveryDecision::Refused(RecoveryRefusal::Unreadable {
                member: ServerId(3),
                ..
            })
        ));
        assert_eq!(
            decide_recovery(&voters, &set(&[]), &with(VolumeAnswer::Empty)),
            RecoveryDecision::Refused(RecoveryRefusal::NoSurvivor)
        );
        assert_eq!(
            decide_recovery(&set(&[]), &set(&[]), &with(VolumeAnswer::Data(4))),
            RecoveryDecision::Refused(RecoveryRefusal::NoConfiguration)
        );
    }

    #[test]
    fn a_joiner_with_newer_data_than_the_surviving_voter_is_chosen() {
        // Voters 1, 2, 3; joiner 4 had synced from the leader before the loss.
        let d = decide_recovery(
            &set(&[1, 2, 3]),
            &set(&[]),
            &answers(&[
                (1, VolumeAnswer::Empty),
                (2, VolumeAnswer::Empty),
                (3, VolumeAnswer::Data(10)),
                (4, VolumeAnswer::Data(12)),
            ]),
        );
        assert!(
            matches!(
                d,
                RecoveryDecision::RebuildFrom {
                    member: ServerId(4),
                    zxid: 12,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    fn answer() -> impl Strategy<Value = VolumeAnswer> {
        prop_oneof![
            1 => Just(VolumeAnswer::Pending),
            4 => (0u64..20).prop_map(VolumeAnswer::Data),
            3 => Just(VolumeAnswer::Empty),
            1 => Just(VolumeAnswer::Unreadable("x".into())),
        ]
    }

    proptest! {
        /// Judged from the inputs alone: a rebuild happens only with no member serving, every
        /// volume read, fewer than a majority of voters holding data, and from a volume that
        /// holds the highest zxid of all; every other volume with data is set aside.
        #[test]
        fn a_rebuild_never_lets_older_data_win_nor_overrides_a_living_majority(
            voters in proptest::collection::btree_set(1u32..8, 0..6),
            serving in proptest::collection::btree_set(1u32..8, 0..2),
            volumes in proptest::collection::btree_map(1u32..8, answer(), 0..8),
        ) {
            let voters: BTreeSet<ServerId> = voters.into_iter().map(ServerId).collect();
            let serving: BTreeSet<ServerId> = serving.into_iter().map(ServerId).collect();
            let volumes: BTreeMap<ServerId, VolumeAnswer> =
                volumes.into_iter().map(|(i, a)| (ServerId(i), a)).collect();
            if let RecoveryDecision::RebuildFrom { member, zxid, set_aside } =
                decide_recovery(&voters, &serving, &volumes)
            {
                prop_assert!(serving.is_empty());
                prop_assert!(!voters.is_empty());
                prop_assert!(volumes.values().all(|a| matches!(a, VolumeAnswer::Data(_) | VolumeAnswer::Empty)));
                let holding = voters.iter().filter(|id| matches!(volumes.get(id), Some(VolumeAnswer::Data(_)))).count();
                prop_assert!(holding * 2 <= voters.len());
                prop_assert_eq!(volumes.get(&member), Some(&VolumeAnswer::Data(zxid)));
                for (id, a) in &volumes {
                    if let VolumeAnswer::Data(z) = a {
                        prop_assert!(*z <= zxid);
                        prop_assert_eq!(set_aside.contains(id), *id != member);
                    } else {
                        prop_assert!(!set_aside.contains(id));
                    }
                }
            }
        }
    }
}
