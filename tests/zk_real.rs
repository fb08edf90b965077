//! quorate's `zk` module against real ZooKeeper (3.9.5, and 3.8.6), started by the testbed. The
//! kazoo judge (an independent Python client) writes and checks the data, and the harness's own
//! `conf` reading checks the membership, so quorate is not judged by its own client alone.
//!
//! At most one ensemble runs at a time in this binary (2-core machines), whatever
//! `--test-threads` says.

#[path = "zk_common/mod.rs"]
mod zk_common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use zk_common::{eventually, summary};

use quorate::planner::{Membership, Role, ServerId};
use quorate::zk::{
    AdminProbe, Credentials, EnsembleObservation, MemberAddr, MembershipControl, ReconfigOutcome,
    ServerEntry, Timeouts, ZkMembership, membership, observe_ensemble,
};
use quorate_testbed::kazoo::{AclEntry, Judge, PERMS_RWA};
use quorate_testbed::zookeeper::{Ensemble, ZkVersion};

/// One ensemble at a time in this binary.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const DATA: &str = "/quorate-data";
const ZNODES: usize = 100;

async fn start(version: ZkVersion, members: u32) -> Ensemble {
    let t = Instant::now();
    let ensemble = Ensemble::builder()
        .version(version)
        .members(members)
        .start()
        .await
        .expect("ensemble starts");
    eprintln!("{members} members of {version} serving: {:?}", t.elapsed());
    ensemble
}

fn addr(ensemble: &Ensemble, id: u32) -> MemberAddr {
    MemberAddr::new(ServerId(id), ensemble.member_ip(id).to_string())
}

fn addrs(ensemble: &Ensemble, ids: impl IntoIterator<Item = u32>) -> Vec<MemberAddr> {
    ids.into_iter().map(|id| addr(ensemble, id)).collect()
}

fn entry(ensemble: &Ensemble, id: u32) -> ServerEntry {
    ensemble
        .server_line(id)
        .parse()
        .expect("the harness's server line parses")
}

fn operator(ensemble: &Ensemble) -> Credentials {
    let (user, password) = ensemble.operator_auth();
    Credentials::digest(user, password)
}

fn probe() -> AdminProbe {
    AdminProbe::new(PROBE_TIMEOUT).expect("HTTP client")
}

fn membership_as(ensemble: &Ensemble, credentials: Option<Credentials>) -> ZkMembership {
    ZkMembership::new(ensemble.connect_string(), credentials)
        .expect("membership client")
        .with_timeouts(Timeouts {
            probe: PROBE_TIMEOUT,
            ..Timeouts::default()
        })
}

fn brief(outcome: &ReconfigOutcome) -> String {
    format!(
        "voters {:?}, version {:x}, changed {}, connection losses {}, version conflicts {}",
        ids(&outcome.config.voters()),
        outcome.config.version,
        outcome.changed,
        outcome.connection_losses,
        outcome.version_conflicts
    )
}

fn ids(set: &BTreeSet<ServerId>) -> Vec<u32> {
    set.iter().map(|id| id.0).collect()
}

async fn observe(
    ensemble: &Ensemble,
    members: impl IntoIterator<Item = u32>,
) -> EnsembleObservation {
    observe_ensemble(&probe(), &addrs(ensemble, members), PROBE_TIMEOUT * 2).await
}

/// Waits until `members` show one leader and every one of them serving and synced.
async fn all_synced(ensemble: &Ensemble, members: &[u32]) -> EnsembleObservation {
    eventually(
        &format!("members {members:?} serving and synced"),
        Duration::from_secs(30),
        || async {
            let obs = observe(ensemble, members.iter().copied()).await;
            let all = members.iter().all(|id| obs.is_synced(ServerId(*id)));
            if obs.leader.is_some() && all {
                Ok(obs)
            } else {
                Err(summary(&obs))
            }
        },
    )
    .await
}

/// The membership as the harness reads it (four-letter word `conf` on the leader).
async fn harness_ids(ensemble: &Ensemble) -> Vec<u32> {
    ensemble.current_config().await.expect("conf").ids()
}

/// The kazoo judge reads every znode written before, through each of `members` alone.
async fn data_readable_through(judge: &Judge, ensemble: &Ensemble, members: &[u32]) {
    for id in members {
        let host = ensemble.member_address(*id).to_string();
        let report = judge
            .verify(&host, None, DATA, ZNODES)
            .await
            .expect("kazoo verify");
        assert!(
            report.ok && report.children == ZNODES,
            "through member {id}: {report:?}"
        );
    }
}

async fn write_data(judge: &Judge, ensemble: &Ensemble) {
    let written = judge
        .write(&ensemble.connect_string(), None, DATA, ZNODES)
        .await
        .expect("kazoo write");
    assert_eq!(written.written, ZNODES, "{written:?}");
}

/// Adds `id` (already started as a joiner) twice: the first call reconfigures, the second is a
/// no-op. Returns the version after.
async fn add_twice(members: &ZkMembership, ensemble: &Ensemble, id: u32) -> u64 {
    let joiner = entry(ensemble, id);
    let t = Instant::now();
    let first = members.add_voter(&joiner).await.expect("add_voter");
    eprintln!("add server.{id}: {:?} ({})", t.elapsed(), brief(&first));
    assert!(first.changed, "{first:?}");
    assert_eq!(first.config.get(ServerId(id)), Some(&joiner));
    assert!(first.config.voters().contains(&ServerId(id)));
    let t = Instant::now();
    let again = members.add_voter(&joiner).await.expect("add_voter again");
    eprintln!("add server.{id} again (no-op): {:?}", t.elapsed());
    assert!(!again.changed, "the second add reconfigured: {again:?}");
    assert_eq!(again.config, first.config);
    assert_eq!(again.connection_losses + again.version_conflicts, 0);
    first.config.version
}

/// Removes `id` twice: the first call reconfigures, the second is a no-op.
async fn remove_twice(members: &ZkMembership, id: u32) {
    let t = Instant::now();
    let first = members
        .remove_voter(ServerId(id))
        .await
        .expect("remove_voter");
    eprintln!("remove server.{id}: {:?} ({})", t.elapsed(), brief(&first));
    assert!(first.changed, "{first:?}");
    assert!(first.config.get(ServerId(id)).is_none());
    let again = members
        .remove_voter(ServerId(id))
        .await
        .expect("remove_voter again");
    assert!(!again.changed, "the second remove reconfigured: {again:?}");
    assert_eq!(again.config, first.config);
}

/// What [`CutProxy`] does with the next reconfig request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Relay it.
    Never,
    /// Relay it, then close both sides before the reply: the change commits, the reply is lost.
    AfterForwarding,
    /// Close both sides without relaying it: the change never reaches ZooKeeper.
    InsteadOfForwarding,
}

/// A TCP proxy in front of one ZooKeeper client port that, once armed, cuts the connection at the
/// next reconfig request (opcode 16), then relays normally again.
struct CutProxy {
    address: String,
    cut: std::sync::Arc<std::sync::Mutex<(Cut, usize)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CutProxy {
    async fn start(upstream: std::net::SocketAddr) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let cut = std::sync::Arc::new(std::sync::Mutex::new((Cut::Never, 0)));
        let shared = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, shared.clone()));
            }
        });
        CutProxy { address, cut, task }
    }

    fn address(&self) -> String {
        self.address.clone()
    }

    fn arm(&self, cut: Cut) {
        self.cut.lock().unwrap().0 = cut;
    }

    fn cuts(&self) -> usize {
        self.cut.lock().unwrap().1
    }
}

async fn relay(
    mut client: tokio::net::TcpStream,
    upstream: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::Mutex<(Cut, usize)>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const RECONFIG: i32 = 16;
    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let replies = tokio::io::copy(&mut server_read, &mut client_write);
    let requests = async {
        let mut first = true;
        loop {
            let mut len = [0u8; 4];
            client_read.read_exact(&mut len).await?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            client_read.read_exact(&mut body).await?;
            // Every frame after the connect request starts with xid and opcode.
            if !first
                && body.len() >= 8
                && i32::from_be_bytes([body[4], body[5], body[6], body[7]]) == RECONFIG
            {
                let action = {
                    let mut state = cut.lock().unwrap();
                    let action = state.0;
                    if action != Cut::Never {
                        *state = (Cut::Never, state.1 + 1);
                    }
                    action
                };
                match action {
                    Cut::Never => {}
                    Cut::AfterForwarding => {
                        server_write.write_all(&len).await?;
                        server_write.write_all(&body).await?;
                        server_write.flush().await?;
                        return Ok::<_, std::io::Error>(());
                    }
                    Cut::InsteadOfForwarding => return Ok(()),
                }
            }
            first = false;
            server_write.write_all(&len).await?;
            server_write.write_all(&body).await?;
        }
    };
    // Whichever side ends first, both connections are dropped.
    tokio::select! {
        _ = replies => {}
        _ = requests => {}
    }
}

#[tokio::test]
async fn three_members_elect_one_leader_and_report_two_synced_followers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ensemble = start(ZkVersion::V3_9_5, 3).await;
    let obs = all_synced(&ensemble, &[1, 2, 3]).await;
    let states = obs.zk_states();
    eprintln!("{}", summary(&obs));

    let leaders: Vec<ServerId> = states
        .iter()
        .filter(|(_, s)| s.role == Role::Leader)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(leaders.len(), 1, "{states:?}");
    assert_eq!(obs.leader, Some(leaders[0]));
    assert_eq!(
        obs.leader,
        Some(ServerId(ensemble.leader_id().await.unwrap()))
    );
    let followers: Vec<_> = states
        .values()
        .filter(|s| s.role == Role::Follower && s.synced && s.serving)
        .collect();
    assert_eq!(followers.len(), 2, "{states:?}");
    assert!(states.values().all(|s| s.zxid.is_some()));

    // The leader's counts agree with the per-member judgement.
    let leader_obs = &obs.members[&leaders[0]];
    let counts = leader_obs
        .learner_counts
        .expect("the leader reports its learners");
    assert_eq!(
        (counts.synced_followers, counts.synced_non_voting_followers),
        (2, 0)
    );

    // getConfig through quorate, checked against the harness's reading of `conf`.
    let members = membership_as(&ensemble, Some(operator(&ensemble)));
    let config = members.read_config().await.expect("read_config");
    assert_eq!(ids(&config.voters()), harness_ids(&ensemble).await);
    assert_eq!(ids(&config.voters()), vec![1, 2, 3]);
    for id in 1..=3 {
        assert_eq!(config.get(ServerId(id)), Some(&entry(&ensemble, id)));
        assert_eq!(
            obs.members[&ServerId(id)].config_version,
            Some(config.version),
            "member {id} knows another config version"
        );
        assert_eq!(
            obs.members[&ServerId(id)].zookeeper_version.as_deref(),
            Some("3.9.5")
        );
    }
    let harness_version = ensemble.current_config().await.unwrap().version.unwrap();
    assert_eq!(format!("{:x}", config.version), harness_version);
    assert_eq!(
        Membership::from(&config),
        Membership {
            version: config.version,
            voters: [ServerId(1), ServerId(2), ServerId(3)].into()
        }
    );
}

#[tokio::test]
async fn adds_a_fourth_and_fifth_synced_joiner_one_at_a_time_then_removes_them() {
    let _one = ONE_AT_A_TIME.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let ensemble = start(ZkVersion::V3_9_5, 3).await;
    write_data(&judge, &ensemble).await;
    let members = membership_as(&ensemble, Some(operator(&ensemble)));
    let before = members.read_config().await.unwrap().version;

    for id in [4, 5] {
        let t = Instant::now();
        ensemble.start_joiner(id).await.expect("joiner starts");
        eprintln!("joiner {id} serving: {:?}", t.elapsed());
        let voters: Vec<u32> = (1..id).collect();
        // A synced non-voting follower: serving, following, synced, and not in the config.
        let mut everyone = voters.clone();
        everyone.push(id);
        let obs = all_synced(&ensemble, &everyone).await;
        let joiner = obs.zk_state(ServerId(id)).unwrap();
        assert_eq!(joiner.role, Role::Follower);
        let leader = obs.leader.unwrap();
        let counts = obs.members[&leader].learner_counts.unwrap();
        assert_eq!(counts.synced_non_voting_followers, 1, "{counts:?}");
        assert_eq!(harness_ids(&ensemble).await, voters);

        let version = add_twice(&members, &ensemble, id).await;
        assert!(version > before);
        assert_eq!(harness_ids(&ensemble).await, everyone);
        let obs = all_synced(&ensemble, &everyone).await;
        let leader = obs.leader.unwrap();
        let counts = obs.members[&leader].learner_counts.unwrap();
        assert_eq!(counts.quorum_size, Some(everyone.len() as u64));
        data_readable_through(&judge, &ensemble, &everyone).await;
    }

    for id in [5, 4] {
        remove_twice(&members, id).await;
        let voters: Vec<u32> = (1..id).collect();
        assert_eq!(harness_ids(&ensemble).await, voters);
        // The operator stops a removed member (it would keep serving as a non-voting follower).
        ensemble.stop(id).await.unwrap();
        let obs = all_synced(&ensemble, &voters).await;
        let counts = obs.members[&obs.leader.unwrap()].learner_counts.unwrap();
        assert_eq!(counts.quorum_size, Some(voters.len() as u64));
        data_readable_through(&judge, &ensemble, &voters).await;
    }
}

#[tokio::test]
async fn removing_the_leader_survives_the_connection_loss_and_a_new_leader_takes_over() {
    let _one = ONE_AT_A_TIME.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let ensemble = start(ZkVersion::V3_9_5, 3).await;
    write_data(&judge, &ensemble).await;
    let old = all_synced(&ensemble, &[1, 2, 3])
        .await
        .leader
        .expect("a leader");
    let rest: Vec<u32> = (1..=3).filter(|id| *id != old.0).collect();

    // The session goes to a follower through a proxy that drops the connection right after
    // forwarding the reconfig, before any reply: what happens, by a race, when the removed
    // leader drops every connection. The change commits; only the reply is lost.
    let proxy = CutProxy::start(ensemble.member_address(rest[0])).await;
    proxy.arm(Cut::AfterForwarding);
    let members =
        ZkMembership::new(proxy.address(), Some(operator(&ensemble))).expect("membership client");
    let t = Instant::now();
    let removed = members.remove_voter(old).await.expect("remove the leader");
    eprintln!(
        "remove leader server.{old}: {:?} ({})",
        t.elapsed(),
        brief(&removed)
    );
    assert_eq!(proxy.cuts(), 1, "the proxy did not see the reconfig");
    assert!(removed.changed);
    assert_eq!(removed.connection_losses, 1, "{removed:?}");
    assert_eq!(ids(&removed.config.voters()), rest);
    assert_eq!(harness_ids(&ensemble).await, rest);

    let obs = all_synced(&ensemble, &rest).await;
    let new = obs.leader.unwrap();
    assert_ne!(new, old);
    eprintln!("new leader server.{new} after {:?}", t.elapsed());

    // The removed leader keeps running, and for a moment still says it leads (measured): the
    // members that follow the new leader outvote its claim. Then it follows as a non-voter.
    eventually(
        "the removed leader to follow the new one",
        Duration::from_secs(30),
        || async {
            let everyone = observe(&ensemble, [1, 2, 3]).await;
            let state = everyone.zk_state(old).unwrap();
            if everyone.leader == Some(new) && state.role == Role::Follower {
                Ok(())
            } else {
                Err(summary(&everyone))
            }
        },
    )
    .await;

    // Again, directly and through the full connect string: a no-op.
    let direct = membership_as(&ensemble, Some(operator(&ensemble)));
    let again = direct.remove_voter(old).await.expect("remove again");
    assert!(!again.changed, "{again:?}");
    assert_eq!(ids(&again.config.voters()), rest);
    data_readable_through(&judge, &ensemble, &rest).await;
}

#[tokio::test]
async fn a_reconfig_lost_before_it_reached_zookeeper_is_sent_again() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ensemble = start(ZkVersion::V3_9_5, 3).await;
    ensemble.start_joiner(4).await.expect("joiner starts");
    all_synced(&ensemble, &[1, 2, 3, 4]).await;
    let proxy = CutProxy::start(ensemble.member_address(1)).await;
    proxy.arm(Cut::InsteadOfForwarding);
    let members =
        ZkMembership::new(proxy.address(), Some(operator(&ensemble))).expect("membership client");
    let added = members
        .add_voter(&entry(&ensemble, 4))
        .await
        .expect("add_voter");
    assert_eq!(proxy.cuts(), 1);
    assert!(added.changed);
    assert_eq!(added.connection_losses, 1, "{added:?}");
    assert_eq!(harness_ids(&ensemble).await, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn grows_one_to_three_and_shrinks_back_with_the_data_readable_through_every_member() {
    let _one = ONE_AT_A_TIME.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let ensemble = start(ZkVersion::V3_9_5, 1).await;
    let obs = all_synced(&ensemble, &[1]).await;
    assert_eq!(obs.leader, Some(ServerId(1)));
    write_data(&judge, &ensemble).await;
    let members = membership_as(&ensemble, Some(operator(&ensemble)));

    for id in [2, 3] {
        ensemble.start_joiner(id).await.expect("joiner starts");
        add_twice(&members, &ensemble, id).await;
        let voters: Vec<u32> = (1..=id).collect();
        assert_eq!(harness_ids(&ensemble).await, voters);
        all_synced(&ensemble, &voters).await;
        data_readable_through(&judge, &ensemble, &voters).await;
    }
    for id in [3, 2] {
        remove_twice(&members, id).await;
        ensemble.stop(id).await.unwrap();
        let voters: Vec<u32> = (1..id).collect();
        assert_eq!(harness_ids(&ensemble).await, voters);
        all_synced(&ensemble, &voters).await;
        data_readable_through(&judge, &ensemble, &voters).await;
    }
    // The last voter cannot be removed.
    let err = members.remove_voter(ServerId(1)).await.unwrap_err();
    assert!(
        matches!(err, membership::Error::LastVoter { id: ServerId(1) }),
        "{err}"
    );
    assert_eq!(harness_ids(&ensemble).await, vec![1]);
}

#[tokio::test]
async fn reconfig_without_the_operator_credentials_fails_with_a_clear_error() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ensemble = start(ZkVersion::V3_9_5, 3).await;
    ensemble.start_joiner(4).await.expect("joiner starts");
    all_synced(&ensemble, &[1, 2, 3, 4]).await;
    let joiner = entry(&ensemble, 4);
    let (user, _) = ensemble.operator_auth();

    let anonymous = membership_as(&ensemble, None);
    let wrong = membership_as(
        &ensemble,
        Some(Credentials::digest(user, "not-the-password")),
    );
    for (who, client) in [("anonymous", &anonymous), ("wrong password", &wrong)] {
        let err = client.add_voter(&joiner).await.unwrap_err();
        let text = err.to_string();
        eprintln!("{who}: {text}");
        assert!(
            matches!(err, membership::Error::NoAuth { .. }),
            "{who}: {err:?}"
        );
        assert!(
            text.starts_with("reconfig needs the operator credentials: add server.4"),
            "{text}"
        );
        let err = client.remove_voter(ServerId(3)).await.unwrap_err();
        assert!(
            matches!(err, membership::Error::NoAuth { .. }),
            "{who}: {err:?}"
        );
        // Reading needs no credentials.
        assert_eq!(
            ids(&client.read_config().await.unwrap().voters()),
            [1, 2, 3]
        );
    }
    assert_eq!(harness_ids(&ensemble).await, vec![1, 2, 3]);

    // The super user may reconfigure too.
    let (su, sp) = ensemble.super_auth();
    let superuser = membership_as(&ensemble, Some(Credentials::digest(su, sp)));
    let added = superuser.add_voter(&joiner).await.expect("super adds");
    assert!(added.changed);
    assert_eq!(harness_ids(&ensemble).await, vec![1, 2, 3, 4]);
}

/// The judge writes 20 znodes under `prefix` through `connect` and reads each back.
async fn written_and_read_back(judge: &Judge, connect: &str, prefix: &str, version: ZkVersion) {
    let written = judge
        .write(connect, None, prefix, 20)
        .await
        .unwrap_or_else(|e| panic!("{version}: the judge writes under {prefix}: {e}"));
    assert_eq!(written.written, 20, "{version}: {written:?}");
    let verified = judge
        .verify(connect, None, prefix, 20)
        .await
        .unwrap_or_else(|e| panic!("{version}: the judge verifies {prefix}: {e}"));
    assert!(verified.ok, "{version}: {verified:?}");
}

/// Servers that enforce SASL client authentication (`enforce.auth.schemes=sasl`, DIGEST-MD5
/// users in a JAAS file) refuse a client that does not log in (the kazoo judge, with no
/// credentials, cannot write; quorate's own client cannot read the configuration), refuse a
/// wrong password, and serve quorate once it logs in with SASL: it reads the configuration and,
/// with the super user's digest added after the login, reconfigures; the judge logged in
/// writes and reads back. Both ZooKeeper versions.
#[tokio::test]
async fn servers_that_enforce_sasl_refuse_clients_without_it_and_serve_quorate_logged_in() {
    let _one = ONE_AT_A_TIME.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    for version in [ZkVersion::V3_9_5, ZkVersion::V3_8_6] {
        let jaas = std::env::temp_dir().join(format!(
            "quorate-zk-real-jaas-{}-{version}.conf",
            std::process::id()
        ));
        std::fs::write(
            &jaas,
            "Server {\n  org.apache.zookeeper.server.auth.DigestLoginModule required\n  \
             user_quorate=\"sasl-secret\";\n};\n",
        )
        .expect("write the JAAS file");
        let ensemble = Ensemble::builder()
            .version(version)
            .members(3)
            .grant_operator(false)
            .jvm_arg(format!(
                "-Djava.security.auth.login.config={}",
                jaas.display()
            ))
            .config(
                "authProvider.sasl",
                "org.apache.zookeeper.server.auth.SASLAuthenticationProvider",
            )
            .config("enforce.auth.enabled", "true")
            .config("enforce.auth.schemes", "sasl")
            .start()
            .await
            .expect("ensemble starts");
        let (su, sp) = ensemble.super_auth();
        let superuser = || membership_as(&ensemble, Some(Credentials::digest(su, sp)));

        // Without a login: the judge (an independent client) writes nothing.
        let refused = judge
            .write(&ensemble.connect_string(), None, "/anonymous", 1)
            .await;
        eprintln!("{version}: the judge without a login: {refused:?}");
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("SessionClosedRequireSasl")),
            "{version}: a client without a SASL login was not refused for it: {refused:?}"
        );
        // Nor does quorate's own client read anything, with its digest alone.
        let anonymous = superuser().read_config().await;
        eprintln!("{version}: quorate without a login: {anonymous:?}");
        assert!(
            format!("{anonymous:?}").contains("AuthFailed"),
            "{version}: read without a login: {anonymous:?}"
        );
        // A wrong password is refused.
        let wrong = superuser()
            .with_sasl(Some(Credentials::digest("quorate", "not-the-secret")))
            .read_config()
            .await;
        assert!(
            format!("{wrong:?}").contains("AuthFailed"),
            "{version}: read with a wrong login: {wrong:?}"
        );

        // Logged in: it reads, and reconfigures with the super user's digest.
        let logged_in = superuser().with_sasl(Some(Credentials::digest("quorate", "sasl-secret")));
        let config = logged_in.read_config().await.expect("read logged in");
        assert_eq!(ids(&config.voters()), [1, 2, 3], "{version}");
        remove_twice(&logged_in, 3).await;
        assert_eq!(harness_ids(&ensemble).await, vec![1, 2], "{version}");
        // The judge logged in writes, and reads every write back.
        let judge = judge.clone().with_sasl("quorate", "sasl-secret");
        written_and_read_back(&judge, &ensemble.connect_string(), "/logged-in", version).await;
        drop(ensemble);
        let _ = std::fs::remove_file(&jaas);
    }
}

/// A CA (certificate PEM, issuer) for the TLS tests.
fn tls_ca(name: &str) -> (String, rcgen::CertifiedIssuer<'static, rcgen::KeyPair>) {
    use rcgen::{BasicConstraints, DnType, IsCa, KeyUsagePurpose};
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = rcgen::KeyPair::generate().expect("CA key");
    let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
    (issuer.pem(), issuer)
}

/// Servers with a TLS client port (`secureClientPort`, Netty, a PEM key store whose certificate
/// names every member's address) serve quorate over TLS: it reads the configuration and
/// reconfigures through the secure ports alone, trusting the ensemble's CA; it refuses servers
/// whose certificate another CA signed, and a plaintext client gets nothing from a secure port.
/// The kazoo judge, over TLS with hostname checks, writes and reads back. Both versions.
#[tokio::test]
async fn servers_with_a_tls_client_port_serve_quorate_over_tls_and_only_with_the_right_ca() {
    const SECURE_PORT: u16 = 2281;
    let _one = ONE_AT_A_TIME.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca_pem, ca) = tls_ca("quorate test CA");
    let (other_ca_pem, _) = tls_ca("someone else's CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("write the CA");
    for version in [ZkVersion::V3_9_5, ZkVersion::V3_8_6] {
        // The members' addresses are known once the subnet is leased: lease it first.
        let lease = quorate_testbed::zookeeper::SubnetLease::acquire().expect("a subnet");
        let subnet = lease.subnet();
        let ips: Vec<String> = (1..=3).map(|id| lease.ip(id).to_string()).collect();
        drop(lease);
        let key = rcgen::KeyPair::generate().expect("server key");
        let mut params = rcgen::CertificateParams::new(ips.clone()).expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "zookeeper");
        let cert = params.signed_by(&key, &ca).expect("server certificate");
        let key_store = dir.path().join(format!("server-{version}.pem"));
        std::fs::write(&key_store, format!("{}{}", key.serialize_pem(), cert.pem()))
            .expect("write the key store");
        let ensemble = Ensemble::builder()
            .version(version)
            .members(3)
            .subnet(subnet)
            .config("secureClientPort", SECURE_PORT.to_string())
            .config(
                "secureClientPortAddress",
                quorate_testbed::zookeeper::MEMBER_IP,
            )
            .config(
                "serverCnxnFactory",
                "org.apache.zookeeper.server.NettyServerCnxnFactory",
            )
            .config("ssl.keyStore.location", key_store.display().to_string())
            .config("ssl.keyStore.type", "PEM")
            .config("ssl.trustStore.location", ca_file.display().to_string())
            .config("ssl.trustStore.type", "PEM")
            .config("ssl.clientAuth", "none")
            .start()
            .await
            .expect("ensemble starts");
        let secure = ips
            .iter()
            .map(|ip| format!("{ip}:{SECURE_PORT}"))
            .collect::<Vec<_>>()
            .join(",");
        let (su, sp) = ensemble.super_auth();
        let client = || {
            ZkMembership::new(secure.clone(), Some(Credentials::digest(su, sp)))
                .expect("membership client")
                .with_timeouts(Timeouts {
                    probe: PROBE_TIMEOUT,
                    connect: Duration::from_secs(3),
                    ..Timeouts::default()
                })
        };

        // Plaintext to a secure port: nothing.
        let plain = client().read_config().await;
        eprintln!("{version}: plaintext to a secure port: {plain:?}");
        assert!(plain.is_err(), "{version}: plaintext read: {plain:?}");
        // Servers whose certificate another CA signed are refused.
        let stranger = client()
            .with_tls(&other_ca_pem)
            .expect("TLS options")
            .read_config()
            .await;
        eprintln!("{version}: trusting another CA: {stranger:?}");
        assert!(
            stranger.is_err(),
            "{version}: read trusting another CA: {stranger:?}"
        );

        // TLS with the ensemble's CA: it reads and reconfigures.
        let tls = client().with_tls(&ca_pem).expect("TLS options");
        let config = tls.read_config().await.expect("read over TLS");
        assert_eq!(ids(&config.voters()), [1, 2, 3], "{version}");
        remove_twice(&tls, 3).await;
        assert_eq!(harness_ids(&ensemble).await, vec![1, 2], "{version}");

        // The judge over TLS, checking the addresses against the certificate.
        let secure_two = ips[..2]
            .iter()
            .map(|ip| format!("{ip}:{SECURE_PORT}"))
            .collect::<Vec<_>>()
            .join(",");
        let judge = judge.clone().with_tls_ca(&ca_file);
        written_and_read_back(&judge, &secure_two, "/over-tls", version).await;
    }
}

/// The ACL of `/zookeeper/config` as the kazoo judge reads it as super (ZooKeeper shows digests
/// only to users with admin on the node).
async fn config_acl(ensemble: &Ensemble) -> Vec<AclEntry> {
    let judge = Judge::new().await.expect("kazoo judge");
    judge
        .acl(
            &ensemble.connect_string(),
            Some(ensemble.super_auth()),
            "/zookeeper/config",
        )
        .await
        .expect("kazoo reads /zookeeper/config")
}

#[tokio::test]
async fn the_super_user_grants_the_operator_user_once_and_it_then_reconfigures_alone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t = Instant::now();
    let ensemble = Ensemble::builder()
        .version(ZkVersion::V3_9_5)
        .members(3)
        .grant_operator(false)
        .start()
        .await
        .expect("ensemble starts");
    eprintln!("3 members serving: {:?}", t.elapsed());
    ensemble.start_joiner(4).await.expect("joiner starts");
    all_synced(&ensemble, &[1, 2, 3, 4]).await;
    let joiner = entry(&ensemble, 4);
    let (user, password) = ensemble.operator_auth();
    // The digest as the harness computes it, not quorate.
    let operator_id = quorate_testbed::zookeeper::digest(user, password);
    let as_operator = membership_as(&ensemble, Some(operator(&ensemble)));

    // ZooKeeper's own ACL: world may read, nobody else may write.
    assert_eq!(
        config_acl(&ensemble).await,
        vec![AclEntry::new("world", "anyone", 1)]
    );
    assert!(!as_operator.may_reconfigure().await.expect("getACL"));
    let err = as_operator.add_voter(&joiner).await.unwrap_err();
    assert!(matches!(err, membership::Error::NoAuth { .. }), "{err:?}");

    // A user without the right cannot grant it to itself.
    let err = as_operator
        .grant_reconfigure(&operator(&ensemble))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            membership::Error::Acl {
                op: membership::AclOp::Set,
                ..
            }
        ),
        "{err:?}"
    );

    let (su, sp) = ensemble.super_auth();
    let superuser = membership_as(&ensemble, Some(Credentials::digest(su, sp)));
    assert!(
        superuser
            .grant_reconfigure(&operator(&ensemble))
            .await
            .expect("super grants")
    );
    assert!(
        !superuser
            .grant_reconfigure(&operator(&ensemble))
            .await
            .expect("idempotent")
    );
    assert_eq!(
        config_acl(&ensemble).await,
        vec![
            AclEntry::new("world", "anyone", 1),
            AclEntry::new("digest", &operator_id, PERMS_RWA)
        ],
        "read for everyone, read, write and admin for the operator user only"
    );
    assert!(as_operator.may_reconfigure().await.expect("getACL"));

    // The operator adds and removes a voter alone.
    assert!(
        as_operator
            .add_voter(&joiner)
            .await
            .expect("operator adds")
            .changed
    );
    assert_eq!(harness_ids(&ensemble).await, vec![1, 2, 3, 4]);
    as_operator
        .remove_voter(ServerId(4))
        .await
        .expect("operator removes");
    assert_eq!(harness_ids(&ensemble).await, vec![1, 2, 3]);

    // The grant is data: it survives a restart of every member.
    for id in [1, 2, 3] {
        ensemble.restart(id).await.expect("restart");
    }
    all_synced(&ensemble, &[1, 2, 3]).await;
    let restarted = membership_as(&ensemble, Some(operator(&ensemble)));
    assert!(
        restarted
            .may_reconfigure()
            .await
            .expect("getACL after restart")
    );

    // A new password replaces the old entry rather than adding to it.
    let renewed = Credentials::digest(user, "a-new-password");
    assert!(
        !membership_as(&ensemble, Some(renewed.clone()))
            .may_reconfigure()
            .await
            .unwrap()
    );
    assert!(
        superuser
            .grant_reconfigure(&renewed)
            .await
            .expect("super grants again")
    );
    let acl = config_acl(&ensemble).await;
    assert_eq!(
        acl,
        vec![
            AclEntry::new("world", "anyone", 1),
            AclEntry::new(
                "digest",
                &quorate_testbed::zookeeper::digest(user, "a-new-password"),
                PERMS_RWA
            )
        ]
    );
}

#[tokio::test]
async fn refuses_to_add_a_joiner_that_is_not_running() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ensemble = start(ZkVersion::V3_9_5, 3).await;
    let members = membership_as(&ensemble, Some(operator(&ensemble)));
    let before = members.read_config().await.unwrap();
    let t = Instant::now();
    let err = members.add_voter(&entry(&ensemble, 4)).await.unwrap_err();
    eprintln!("refused in {:?}: {err}", t.elapsed());
    let text = err.to_string();
    assert!(
        matches!(
            err,
            membership::Error::JoinerNotReady {
                id: ServerId(4),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        text.starts_with("refusing to add server.4 as a voter: it is not running or not serving"),
        "{text}"
    );
    // Nothing changed: ZooKeeper would have committed it.
    assert_eq!(members.read_config().await.unwrap(), before);
    assert_eq!(harness_ids(&ensemble).await, vec![1, 2, 3]);
}

/// One probe for the process keeps its AdminServer connections between requests (a converged
/// ensemble is observed over the same connection, pass after pass), and a connection the member
/// closes (a restart) is replaced without a failed request. Counted by a TCP proxy in front of
/// a real member's AdminServer.
#[tokio::test]
async fn the_probe_keeps_its_adminserver_connection_and_replaces_a_closed_one() {
    use quorate_testbed::proxy::ApiProxy;
    let _one = ONE_AT_A_TIME.lock().await;
    let ensemble = start(ZkVersion::V3_9_5, 1).await;
    let admin = std::net::SocketAddr::from((ensemble.member_ip(1), 8080));
    let proxy = ApiProxy::start(admin).await.expect("proxy");
    let mut member = addr(&ensemble, 1);
    member.host = proxy.addr().ip().to_string();
    member.admin_port = proxy.addr().port();
    let probe = probe();
    for command in ["srvr", "leader", "monitor", "srvr", "srvr"] {
        let answer = probe.command(&member, command).await;
        assert!(answer.is_ok(), "{command}: {answer:?}");
    }
    assert_eq!(proxy.stats().accepted, 1, "{:?}", proxy.stats());

    // A pass asks a member several things at once, each on a connection of its own; once they
    // are answered one connection stays, the others close at once (an operator of a thousand
    // ensembles held five per member until they idled out). Waited for well under the pool's
    // idle timeout (5 s), which would close them all.
    let burst = futures::future::join_all(
        ["srvr", "leader", "monitor", "srvr"].map(|c| probe.command(&member, c)),
    )
    .await;
    assert!(burst.iter().all(Result::is_ok), "{burst:?}");
    assert!(proxy.stats().accepted > 1, "{:?}", proxy.stats());
    eventually(
        "one connection to stay after the burst",
        Duration::from_secs(2),
        || async {
            let stats = proxy.stats();
            if stats.active == 1 {
                Ok(())
            } else {
                Err(format!("{stats:?}"))
            }
        },
    )
    .await;
    let accepted = proxy.stats().accepted;

    // The member closes the connection (as a restarted member's kernel does).
    proxy.reset();
    eventually(
        "the proxy to cut the connection",
        Duration::from_secs(10),
        || async {
            let stats = proxy.stats();
            if stats.cut == 1 && stats.active == 0 {
                Ok(())
            } else {
                Err(format!("{stats:?}"))
            }
        },
    )
    .await;
    let answer = probe.command(&member, "srvr").await;
    assert!(answer.is_ok(), "after the close: {answer:?}");
    assert_eq!(proxy.stats().accepted, accepted + 1, "{:?}", proxy.stats());
}

#[tokio::test]
async fn a_paused_member_is_reported_not_serving_and_refused_as_a_joiner() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ensemble = start(ZkVersion::V3_9_5, 3).await;
    let leader = ensemble.leader_id().await.unwrap();
    let follower = (1..=3).find(|id| *id != leader).unwrap();

    ensemble.pause(follower).unwrap();
    let t = Instant::now();
    let obs = observe(&ensemble, [1, 2, 3]).await;
    eprintln!("observed with a paused member in {:?}", t.elapsed());
    assert!(t.elapsed() < PROBE_TIMEOUT * 3, "the probe was not bounded");
    let paused = obs.zk_state(ServerId(follower)).unwrap();
    assert!(!paused.serving && !paused.synced, "{}", summary(&obs));
    assert_eq!(paused.role, Role::Unknown);
    assert_eq!(obs.leader, Some(ServerId(leader)), "{}", summary(&obs));
    for id in (1..=3).filter(|id| *id != follower) {
        assert!(obs.zk_state(ServerId(id)).unwrap().serving);
    }
    ensemble.resume(follower).unwrap();
    all_synced(&ensemble, &[1, 2, 3]).await;

    // A joiner that runs but is paused is refused too.
    ensemble.start_joiner(4).await.expect("joiner starts");
    all_synced(&ensemble, &[1, 2, 3, 4]).await;
    ensemble.pause(4).unwrap();
    let members = membership_as(&ensemble, Some(operator(&ensemble)));
    let err = members.add_voter(&entry(&ensemble, 4)).await.unwrap_err();
    assert!(
        matches!(
            err,
            membership::Error::JoinerNotReady {
                id: ServerId(4),
                ..
            }
        ),
        "{err:?}"
    );
    ensemble.resume(4).unwrap();
    all_synced(&ensemble, &[1, 2, 3, 4]).await;
    let added = members.add_voter(&entry(&ensemble, 4)).await.expect("add");
    assert!(added.changed);
}

#[tokio::test]
async fn zookeeper_3_8_is_observed_and_gains_and_loses_a_voter() {
    let _one = ONE_AT_A_TIME.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let ensemble = start(ZkVersion::V3_8_6, 3).await;
    write_data(&judge, &ensemble).await;
    let obs = all_synced(&ensemble, &[1, 2, 3]).await;
    let states = obs.zk_states();
    assert_eq!(
        states.values().filter(|s| s.role == Role::Leader).count(),
        1
    );
    assert_eq!(
        states
            .values()
            .filter(|s| s.role == Role::Follower && s.synced)
            .count(),
        2
    );
    assert!(
        obs.members
            .values()
            .all(|m| m.zookeeper_version.as_deref() == Some("3.8.6"))
    );
    let members = membership_as(&ensemble, Some(operator(&ensemble)));
    ensemble.start_joiner(4).await.expect("joiner starts");
    all_synced(&ensemble, &[1, 2, 3, 4]).await;
    add_twice(&members, &ensemble, 4).await;
    assert_eq!(harness_ids(&ensemble).await, vec![1, 2, 3, 4]);
    data_readable_through(&judge, &ensemble, &[1, 2, 3, 4]).await;
    remove_twice(&members, 4).await;
    ensemble.stop(4).await.unwrap();
    assert_eq!(harness_ids(&ensemble).await, vec![1, 2, 3]);
    all_synced(&ensemble, &[1, 2, 3]).await;
    data_readable_through(&judge, &ensemble, &[1, 2, 3]).await;
}
