//! The membership sampler's checks, pure: what one sample of every member's AdminServer and
//! Pod looks like, and I1 to I6 judged from ZooKeeper's own view across samples. No I/O here
//! (`judges` takes the samples); unit-tested in tests/sampler.rs.

use std::collections::{BTreeMap, BTreeSet};

/// One member as the sampler saw it.
#[derive(Clone, Debug, Default)]
pub struct MemberView {
    /// Its Pod's uid (a new uid for the same id is a new Pod).
    pub uid: String,
    /// Its Pod is being deleted.
    pub deleting: bool,
    /// Its Pod's spec-hash annotation.
    pub spec_hash: Option<String>,
    /// Its AdminServer answers `srvr` without error (it has synced with a leader).
    pub serving: bool,
    /// It is the leader.
    pub leader: bool,
    /// The configuration this member reports (voter ids).
    pub config: Option<BTreeSet<u32>>,
    /// The last zxid it processed (`srvr`): its epoch orders two members that both say they
    /// lead (a leader cut off keeps saying so until it notices, with an older epoch).
    pub zxid: Option<u64>,
    /// Its AdminServer gave no answer in time (neither an answer nor a refused connection): a
    /// busy JVM says nothing about its state, so the sampler keeps the member's last known
    /// state while its Pod is the same, for at most [`SILENT_SAMPLES`] samples in a row (a
    /// member silent for longer, paused say, counts as not serving).
    pub unanswered: bool,
}

/// The committed configuration as `members` show it: the leader's, or any serving member's
/// otherwise; of two that say they lead, the newer (highest zxid, so the newest epoch).
fn newest_config<'a>(
    members: impl Iterator<Item = &'a MemberView> + Clone,
) -> Option<BTreeSet<u32>> {
    let newest = |leaders: bool| {
        members
            .clone()
            .filter(|m| m.config.is_some() && if leaders { m.leader } else { m.serving })
            .max_by_key(|m| m.zxid)
            .and_then(|m| m.config.clone())
    };
    newest(true).or_else(|| newest(false))
}

/// How many samples in a row a silent member keeps its last known state.
pub const SILENT_SAMPLES: usize = 3;

/// A restart of a voter by its Pod's deletion, as the sampler saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    pub id: u32,
    /// It was the leader at the last sample before its Pod was deleted.
    pub was_leader: bool,
}

/// What the membership sampler saw; `violations` fail the scenario.
#[derive(Default, Debug)]
pub struct Sampler {
    pub violations: Vec<String>,
    pub samples: usize,
    /// Voters removed from the configuration.
    pub removed: BTreeSet<u32>,
    /// Voters added to the configuration.
    pub added: BTreeSet<u32>,
    /// Every configuration seen, in order (consecutive duplicates folded).
    pub configs: Vec<BTreeSet<u32>>,
    pub max_non_voters: usize,
    pub max_voters: usize,
    /// Most member Pods running but not serving at once, not counting members the test itself
    /// faulted (members in transition, I1).
    pub max_in_transition: usize,
    /// Voter restarts by Pod deletion, in order.
    pub restarts: Vec<Restart>,
    /// The sample at which each member's Pod was first seen deleted or gone.
    pub pod_gone_at: BTreeMap<u32, usize>,
    /// The sample at which each member left the configuration.
    pub left_config_at: BTreeMap<u32, usize>,
    /// Members the test faulted: their own outages are not the operator's transitions.
    pub excused: BTreeSet<u32>,
    /// Every member may be faulted (a fault campaign): outages and Pod deletions are not held
    /// against the operator; configuration checks (one voter at a time, synced before it votes,
    /// removed ids never back, split brain) still apply.
    pub excuse_all: bool,
    last: BTreeMap<u32, MemberView>,
    /// Whether a member served outside the configuration (a synced joiner) at the latest sample.
    pub joiner_serving: bool,
    /// Whether every voter served at the latest sample.
    pub voters_served: bool,
    /// Members whose Pod was deleted while they served as voters, by id: they must stay voters
    /// (a restart) or must not have been voters any more (a removal done first).
    pub deleted_while_voting: BTreeSet<u32>,
    /// Members whose volume the test itself deleted (a PVC deletion fault): their volume's
    /// going is not the operator's.
    pub volumes_excused: BTreeSet<u32>,
    /// The configuration the latest sample read from members that answered (none when no
    /// member that answered serves).
    sample_config: Option<BTreeSet<u32>>,
    /// The members whose PVC existed (and was not being deleted) at the latest volume sample.
    last_volumes: Option<BTreeSet<u32>>,
    /// Samples in a row each member's AdminServer has been silent.
    silent: BTreeMap<u32, usize>,
    /// What the joiner watcher last saw of each member Pod (id, uid) outside the configuration:
    /// serving as a synced non-voter (`true`) or not serving (`false`). It polls only members
    /// outside the configuration, far more often than a sample (which waits for the slowest
    /// member), so a joiner that syncs and is added between two samples is still seen synced
    /// before it votes.
    joiner_watch: BTreeMap<(u32, String), bool>,
    /// The leader epochs of the watcher's latest observations of each member Pod outside the
    /// configuration: (when last seen synced, when last seen not serving), when a leader said.
    joiner_epochs: BTreeMap<(u32, String), (Option<u32>, Option<u32>)>,
    /// What the watcher's polls of each member Pod outside the configuration said, counted:
    /// (synced, not serving, no answer). Named in an I3 violation, as its evidence.
    joiner_polls: BTreeMap<(u32, String), (usize, usize, usize)>,
    /// Changes of more than one voter between two samples: each is a violation unless the
    /// members' transaction logs show the single-voter reconfigs between them
    /// ([`Sampler::judge_jumps`]).
    pub jumps: Vec<Jump>,
    /// The latest sample that gave a configuration, and the caller's label for its time.
    config_last_seen: Option<(usize, String)>,
    /// The caller's label for the time of the sample being observed (see [`Sampler::at`]).
    now_label: String,
}

/// A change of more than one voter between two consecutive samples that saw a configuration.
#[derive(Clone, Debug)]
pub struct Jump {
    pub from: BTreeSet<u32>,
    pub to: BTreeSet<u32>,
    /// The samples and their times, for the violation's message.
    pub detail: String,
}

/// The reconfigs in the output of ZooKeeper's own `TxnLogToolkit` (one transaction log dumped):
/// each reconfig transaction's zxid and the voters (participants) of the configuration it
/// committed. A reconfig's record spans several lines: `... zxid 0x<zxid> reconfig
/// /zookeeper/config,server.1=...:participant;...`, one line per further server, and
/// `version=<hex>,-1`.
pub fn reconfigs_in_dump(dump: &str) -> BTreeMap<u64, BTreeSet<u32>> {
    let mut out = BTreeMap::new();
    let mut current: Option<(u64, BTreeSet<u32>)> = None;
    let server = |text: &str| -> Option<u32> {
        let (key, value) = text.split_once('=')?;
        let id = key.trim().strip_prefix("server.")?.parse().ok()?;
        let role = value.split(';').next()?.rsplit(':').next()?;
        (role == "participant").then_some(id)
    };
    for line in dump.lines() {
        if let Some((zxid, voters)) = current.as_mut() {
            if line.starts_with("version=") {
                out.insert(*zxid, std::mem::take(voters));
                current = None;
            } else if let Some(id) = server(line) {
                voters.insert(id);
            }
            continue;
        }
        let Some((head, first)) = line.split_once(" reconfig /zookeeper/config,") else {
            continue;
        };
        let Some(zxid) = head
            .split_whitespace()
            .skip_while(|w| *w != "zxid")
            .nth(1)
            .and_then(|z| u64::from_str_radix(z.trim_start_matches("0x"), 16).ok())
        else {
            continue;
        };
        let mut voters = BTreeSet::new();
        voters.extend(server(first));
        current = Some((zxid, voters));
    }
    out
}

/// I3 judged from the transaction logs: consecutive reconfigs (in zxid order) change one voter,
/// except the documented single reconfig between one and three voters.
pub fn reconfig_chain_violations(chain: &BTreeMap<u64, BTreeSet<u32>>) -> Vec<String> {
    let configs: Vec<(&u64, &BTreeSet<u32>)> = chain.iter().collect();
    configs
        .windows(2)
        .filter(|w| !allowed_change(w[0].1, w[1].1))
        .map(|w| {
            format!(
                "I3: reconfig 0x{:x} changed more than one voter: {:?} -> {:?} (transaction logs)",
                w[1].0, w[0].1, w[1].1
            )
        })
        .collect()
}

/// Could configurations `a` and `b` each form a quorum of members the other's quorum does
/// not contain (a split brain)?
pub fn disjoint_quorums_possible(a: &BTreeSet<u32>, b: &BTreeSet<u32>) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let common = a.intersection(b).count();
    // Each quorum first takes members the other configuration lacks, then common ones.
    let need = |own: usize| (own / 2 + 1).saturating_sub(own - common);
    need(a.len()) + need(b.len()) <= common
}

/// One voter change per step, except the documented single reconfig between one and three
/// voters (docs/one-to-three.md).
fn allowed_change(prev: &BTreeSet<u32>, next: &BTreeSet<u32>) -> bool {
    let changed = prev.symmetric_difference(next).count();
    changed <= 1
        || (prev.len() == 1 && next.len() == 3 && prev.is_subset(next))
        || (prev.len() == 3 && next.len() == 1 && next.is_subset(prev))
}

impl Sampler {
    fn is_excused(&self, id: u32) -> bool {
        self.excuse_all || self.excused.contains(&id)
    }

    /// What the latest sample saw of each member, one line each: for a scenario's failure.
    pub fn describe_last(&self) -> String {
        self.last
            .iter()
            .map(|(id, m)| {
                format!(
                    "server {id}: Pod {}{}, {}{}{}, configuration {:?}\n",
                    m.uid,
                    if m.deleting { " (deleting)" } else { "" },
                    if m.serving { "serving" } else { "not serving" },
                    if m.leader { ", leader" } else { "" },
                    if m.unanswered { ", no answer" } else { "" },
                    m.config
                )
            })
            .collect()
    }

    /// Judges the samples' jumps against the reconfigs of the members' transaction logs: a jump
    /// is explained when the logs hold its first configuration and later its second (the
    /// reconfigs between them are judged by [`reconfig_chain_violations`]); otherwise it is a
    /// violation. The logs must also hold every configuration the samples saw committed during
    /// the scenario (the first may be older than the oldest log kept): else the logs were not
    /// read and their verdict says nothing. Returns the violations, the chain's own included.
    pub fn judge_jumps(&self, chain: &BTreeMap<u64, BTreeSet<u32>>) -> Vec<String> {
        let mut out = reconfig_chain_violations(chain);
        for config in self.configs.iter().skip(1) {
            if !chain.values().any(|c| c == config) {
                out.push(format!(
                    "the transaction logs on the node hold no reconfig to {config:?}, which the samples saw (reconfigs found: {})",
                    chain.len()
                ));
            }
        }
        for jump in &self.jumps {
            let from = chain
                .iter()
                .find(|(_, c)| **c == jump.from)
                .map(|(z, _)| *z);
            let explained =
                from.is_some_and(|from| chain.range(from + 1..).any(|(_, c)| *c == jump.to));
            if !explained {
                out.push(format!(
                    "I3: the configuration changed by more than one voter between two samples, and the transaction logs show no single steps between: {}",
                    jump.detail
                ));
            }
        }
        out
    }

    /// The configuration of the latest sample that had one.
    pub fn current_config(&self) -> Option<&BTreeSet<u32>> {
        self.configs.last()
    }

    /// The joiner watcher saw member `id` (Pod `uid`) outside the configuration: serving (its
    /// own configuration without itself) or not serving, while the leader's epoch was `epoch`
    /// (when a leader answered).
    pub fn joiner_seen(&mut self, id: u32, uid: &str, serving: bool, epoch: Option<u32>) {
        self.joiner_watch.insert((id, uid.to_string()), serving);
        let epochs = self.joiner_epochs.entry((id, uid.to_string())).or_default();
        if serving {
            epochs.0 = epoch.or(epochs.0);
        } else {
            epochs.1 = epoch;
        }
        let polls = self.joiner_polls.entry((id, uid.to_string())).or_default();
        if serving {
            polls.0 += 1;
        } else {
            polls.1 += 1;
        }
    }

    /// The joiner watcher asked member `id` (Pod `uid`) and got no answer in time.
    pub fn joiner_silent(&mut self, id: u32, uid: &str) {
        self.joiner_polls
            .entry((id, uid.to_string()))
            .or_default()
            .2 += 1;
    }

    /// Labels the next sample with the time it was taken (a wall-clock time, say), named in
    /// violations that compare it with an earlier sample.
    pub fn at(&mut self, label: impl Into<String>) {
        self.now_label = label.into();
    }

    /// Takes the members whose PVC exists and is not being deleted, listed just before the
    /// member views of [`Sampler::observe`] (call it after them): a volume the operator
    /// deletes while the configuration of that sample still lists its member is a violation
    /// (I4: the volume goes only with the retired id, after the removal). The member's data
    /// is what would let a quorum lost before the removal commits come back.
    /// A sample in which no member serves has no configuration to judge by: the volumes are
    /// compared at the next sample that has one, with those of the last sample that had one.
    pub fn observe_volumes(&mut self, volumes: BTreeSet<u32>) {
        let Some(config) = &self.sample_config else {
            return;
        };
        if let Some(before) = &self.last_volumes {
            for id in before.difference(&volumes) {
                if config.contains(id) && !self.volumes_excused.contains(id) {
                    self.violations.push(format!(
                        "I4: the volume of member {id} was deleted while the configuration {config:?} still listed it (sample {}, {})",
                        self.samples, self.now_label
                    ));
                }
            }
        }
        self.last_volumes = Some(volumes);
    }

    /// Takes one sample's views (by server id) and checks them against the previous sample.
    pub fn observe(&mut self, mut now: BTreeMap<u32, MemberView>) {
        self.samples += 1;
        // The configuration the volumes are judged by: only members that answered in this
        // sample (a silent member's remembered configuration may predate a removal that the
        // operator then followed by deleting the volume: seed 2028, round 44).
        self.sample_config = newest_config(now.values().filter(|m| !m.unanswered));
        self.silent
            .retain(|id, _| now.get(id).is_some_and(|m| m.unanswered));
        for (id, m) in now.iter_mut().filter(|(_, m)| m.unanswered) {
            let silent = self.silent.entry(*id).or_default();
            *silent += 1;
            if *silent <= SILENT_SAMPLES
                && let Some(before) = self.last.get(id).filter(|b| b.uid == m.uid)
            {
                m.serving = before.serving;
                m.leader = before.leader;
                m.config = before.config.clone();
                m.zxid = before.zxid;
            }
        }
        // Members in transition are counted while a leader serves: during an election (after
        // a leader's restart, say) no member serves, which is ZooKeeper's doing, not a step's.
        if now.values().any(|m| m.leader) {
            let transition = now
                .iter()
                .filter(|(id, m)| !m.serving && !self.is_excused(**id))
                .count();
            self.max_in_transition = self.max_in_transition.max(transition);
        }

        // The leader's configuration is the committed one; any serving member's otherwise. Of
        // two that say they lead, the newer (highest zxid, so the newest epoch): a leader cut off
        // from its followers still says so with the configuration it had. Only members that
        // answered in this sample count: a silent member's remembered configuration may predate
        // a reconfig committed since, and while no answering member serves (an election) it
        // would bring a removed voter "back" (campaign seed 2030, round 5). A sample without
        // a configuration judges no change; the next one that has one does.
        let config = self.sample_config.clone();

        // Never two configurations that each form a quorum: two leaders, each followed by a
        // majority of its own configuration, with no member in common.
        let mut groups: BTreeMap<&BTreeSet<u32>, (BTreeSet<u32>, bool)> = BTreeMap::new();
        for (id, m) in now.iter().filter(|(_, m)| m.serving) {
            if let Some(c) = &m.config {
                let g = groups.entry(c).or_default();
                g.0.insert(*id);
                g.1 |= m.leader;
            }
        }
        let formed: Vec<(&BTreeSet<u32>, &BTreeSet<u32>)> = groups
            .iter()
            .filter(|(c, (members, leader))| {
                *leader && members.intersection(c).count() > c.len() / 2
            })
            .map(|(c, (members, _))| (*c, members))
            .collect();
        for (i, (ca, ma)) in formed.iter().enumerate() {
            for (cb, mb) in &formed[i + 1..] {
                if ma.is_disjoint(mb) && disjoint_quorums_possible(ca, cb) {
                    self.violations.push(format!(
                        "I5: split brain: {ma:?} serve configuration {ca:?} and {mb:?} serve {cb:?}, each with its own leader and quorum"
                    ));
                }
            }
        }

        // Pods deleted since the last sample (or now being deleted) while serving as voters.
        let prev_config = self.configs.last().cloned();
        for (id, before) in &self.last {
            let gone = now
                .get(id)
                .is_none_or(|m| m.deleting || m.uid != before.uid);
            if gone {
                self.pod_gone_at.entry(*id).or_insert(self.samples);
            }
            // A voter in the configuration read after the Pod list of this sample (so a removal
            // done before the deletion is never counted against it).
            let was_voter = config
                .as_ref()
                .or(prev_config.as_ref())
                .is_some_and(|c| c.contains(id));
            if gone && !before.deleting && before.serving && was_voter && !self.is_excused(*id) {
                self.deleted_while_voting.insert(*id);
                self.restarts.push(Restart {
                    id: *id,
                    was_leader: before.leader,
                });
                // I6: the leader goes last, once every other voter runs the new spec.
                if before.leader
                    && let Some(config) = &prev_config
                {
                    let stale: Vec<u32> = config
                        .iter()
                        .filter(|v| *v != id)
                        .filter(|v| {
                            self.last.get(v).is_some_and(|m| {
                                m.spec_hash.is_some() && m.spec_hash == before.spec_hash
                            })
                        })
                        .copied()
                        .collect();
                    let respec = now.get(id).is_some_and(|m| m.spec_hash != before.spec_hash);
                    if respec && !stale.is_empty() {
                        self.violations.push(format!(
                            "I6: leader {id} restarted while voters {stale:?} still ran its old spec"
                        ));
                    }
                }
            }
        }

        if let Some(config) = config {
            let non_voters: Vec<u32> = now
                .iter()
                .filter(|(id, m)| m.serving && !config.contains(id))
                .map(|(id, _)| *id)
                .collect();
            self.max_non_voters = self.max_non_voters.max(non_voters.len());
            self.joiner_serving = !non_voters.is_empty();
            // A member that voted in an earlier configuration and serves outside this one is
            // leaving (removed, its Pod not yet gone), never a joiner: its id is retired (I4).
            let joiners: Vec<u32> = non_voters
                .iter()
                .filter(|id| !self.configs.iter().any(|c| c.contains(id)))
                .copied()
                .collect();
            // Two synced joiners wait together only for the single 1->3 reconfig.
            let allowed = if config.len() == 1 { 2 } else { 1 };
            if joiners.len() > allowed {
                self.violations.push(format!(
                    "I5: {} members that never voted serve outside the configuration {config:?}: {joiners:?}",
                    joiners.len()
                ));
            }
            if let Some(prev) = &prev_config
                && prev != &config
            {
                let added: Vec<u32> = config.difference(prev).copied().collect();
                let left: Vec<u32> = prev.difference(&config).copied().collect();
                if !allowed_change(prev, &config) {
                    // Two reconfigs may both land between two samples: the transaction logs
                    // decide (see `Jump`).
                    let (seen, at) = self.config_last_seen.clone().unwrap_or_default();
                    self.jumps.push(Jump {
                        from: prev.clone(),
                        to: config.clone(),
                        detail: format!(
                            "{prev:?} (last seen at sample {seen}, {at}) -> {config:?} (sample {}, {})",
                            self.samples, self.now_label
                        ),
                    });
                }
                if !added.is_empty() && !self.voters_served && !self.excuse_all {
                    self.violations.push(format!(
                        "I2: voters {added:?} were added while a voter of {prev:?} was not serving"
                    ));
                }
                for id in &added {
                    if self.removed.contains(id) {
                        self.violations
                            .push(format!("I4: removed server {id} came back"));
                    }
                    // Synced before it votes: seen serving outside the configuration first.
                    let watched = now
                        .get(id)
                        .and_then(|m| self.joiner_watch.get(&(*id, m.uid.clone())))
                        .copied();
                    // One tolerance, for the watcher's resolution (a poll every ~100 ms): a
                    // joiner seen synced, then not serving under a newer leader (an election
                    // came between), may re-sync with the new leader and be added before the
                    // next poll. It passes only if it serves in this sample, as a voter.
                    let resynced_after_election = now.get(id).is_some_and(|m| {
                        m.serving
                            && matches!(
                                self.joiner_epochs.get(&(*id, m.uid.clone())),
                                Some((Some(synced), Some(lost))) if lost > synced
                            )
                    });
                    if let Some(before) = self.last.get(id)
                        && !before.serving
                        && watched != Some(true)
                        && !resynced_after_election
                    {
                        let polls = now
                            .get(id)
                            .and_then(|m| self.joiner_polls.get(&(*id, m.uid.clone())))
                            .copied()
                            .unwrap_or_default();
                        self.violations.push(format!(
                            "I3: server {id} became a voter without serving (synced) before (the joiner watcher's polls of its Pod: {} synced, {} not serving, {} unanswered)",
                            polls.0, polls.1, polls.2
                        ));
                    }
                    if !self.last.contains_key(id) {
                        self.violations.push(format!(
                            "I3: server {id} became a voter without being seen as a running member first"
                        ));
                    }
                }
                for id in &left {
                    // A leaving member is removed before its Pod is deleted.
                    if self.deleted_while_voting.contains(id) {
                        self.violations.push(format!(
                            "I3: server {id}'s Pod was deleted while it still served as a voter, and it was then removed"
                        ));
                    }
                }
                for id in &left {
                    self.left_config_at.entry(*id).or_insert(self.samples);
                }
                self.removed.extend(left);
                self.added.extend(added);
            }
            self.config_last_seen = Some((self.samples, self.now_label.clone()));
            self.max_voters = self.max_voters.max(config.len());
            self.voters_served = config
                .iter()
                .all(|id| now.get(id).is_some_and(|m| m.serving));
            if prev_config.as_ref() != Some(&config) {
                self.configs.push(config);
            }
        }
        // Ids whose Pods came back are no longer pending a removal check once they serve again
        // as voters (a restart).
        let current = self.configs.last().cloned().unwrap_or_default();
        self.deleted_while_voting.retain(|id| {
            !(current.contains(id) && now.get(id).is_some_and(|m| m.serving && !m.deleting))
        });
        // A Pod for a removed id must never come back.
        for id in now.keys() {
            if self.removed.contains(id) && !self.last.contains_key(id) {
                self.violations
                    .push(format!("I4: a Pod for removed server {id} was created"));
            }
        }
        self.last = now;
    }
}
