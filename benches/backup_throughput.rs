//! Benchmark (not a test): backup and restore times against floors measured in the same run,
//! as ratios (issue 15, targets 5 and 6), and the peak memory of the backup.
//!
//! ```sh
//! cargo bench --bench backup_throughput                 # 100 MB of znode data
//! QUORATE_BENCH_MB=1024 cargo bench --bench backup_throughput   # target 5's 1 GiB
//! ```
//!
//! Real parts: ZooKeeper 3.9.5 from the testbed (one member, loopback, the JVM's normal JIT)
//! and the testbed's S3 server. Floors, each measured here:
//! - backup: its slowest stage alone, the AdminServer snapshot read and thrown away, or the
//!   upload of the same bytes from memory (target: at least 0.8 of it);
//! - online restore: ZooKeeper's own ingest of the same tree through pipelined multis (at most
//!   3 times);
//! - offline restore of a member: the artifact downloaded straight into place, then ZooKeeper
//!   started on it until it serves (at most 2 times);
//! - verify-only restore: ZooKeeper's load alone, from start until it serves (at most 1.2
//!   times).
//!
//! Memory is the process's peak resident set while the backup runs (the kernel's high-water
//! mark, reset just before; target under 64 MiB whatever the size).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use quorate::backup::artifact::{self, Format};
use quorate::backup::engine::{self, BackupJob};
use quorate::backup::place;
use quorate::backup::store::{ArtifactPaths, S3Credentials, Store};
use quorate::crd::{Destination, S3Destination};
use quorate::planner::ServerId;
use quorate::zk::MemberAddr;
use quorate_testbed::objectstore::ObjectStore;
use quorate_testbed::zookeeper::{Ensemble, ZkVersion};
use zookeeper_client as zkc;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn rate(bytes: u64, d: Duration) -> f64 {
    mib(bytes) / d.as_secs_f64().max(1e-9)
}

/// Peak resident set (VmHWM) in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Resets the high-water mark to the current resident set.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Znodes per multi and multis in flight when populating: ZooKeeper's own fastest ingest of a
/// tree through the client protocol, the floor an online restore is measured against.
const FLOOR_MULTI: u64 = 500;
const FLOOR_IN_FLIGHT: usize = 8;

/// Creates `total` bytes of 1 KiB znodes under 100 parents through multis of [`FLOOR_MULTI`]
/// creates, [`FLOOR_IN_FLIGHT`] in flight. Returns the znodes created.
async fn populate(hosts: &str, auth: (&str, &str), total: u64) -> u64 {
    let client = zkc::Client::connector()
        .with_session_timeout(Duration::from_secs(30))
        .with_auth("digest", format!("{}:{}", auth.0, auth.1).as_bytes())
        .connect(hosts)
        .await
        .expect("connect");
    let open = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
    let size = 1024usize;
    let count = total / size as u64;
    let parents = 100u64;
    for p in 0..parents {
        let _ = client.create(&format!("/bench{p:03}"), b"", &open).await;
    }
    let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let (client, payload, open) = (&client, &payload, &open);
    let mut commits = futures::stream::iter((0..count).step_by(FLOOR_MULTI as usize))
        .map(|i| async move {
            let end = (i + FLOOR_MULTI).min(count);
            let mut w = client.new_multi_writer();
            for j in i..end {
                w.add_create(&format!("/bench{:03}/n{j:08}", j % parents), payload, open)
                    .expect("multi");
            }
            w.commit().await.expect("commit");
            end - i
        })
        .buffered(FLOOR_IN_FLIGHT);
    let mut done = 0u64;
    while let Some(n) = commits.next().await {
        done += n;
        if done % 20_000 < n {
            eprintln!("  populated {done} of {count} znodes");
        }
    }
    done
}

/// The AdminServer snapshot of `member`, read to the end and thrown away: the first stage of a
/// backup alone. Returns the bytes read.
async fn snapshot_to_nowhere(member: &MemberAddr, auth: (&str, &str)) -> u64 {
    let response = reqwest::Client::new()
        .get(format!("{}?streaming=true", member.admin_url("snapshot")))
        .header(
            reqwest::header::AUTHORIZATION,
            format!("digest {}:{}", auth.0, auth.1),
        )
        .send()
        .await
        .expect("snapshot request");
    assert!(
        response.status().is_success(),
        "snapshot: {}",
        response.status()
    );
    let mut body = response.bytes_stream();
    let mut read = 0u64;
    while let Some(chunk) = body.next().await {
        read += chunk.expect("snapshot chunk").len() as u64;
    }
    read
}

/// The floor of placing: the artifact's bytes downloaded straight into `version-2` as ZooKeeper
/// names a snapshot, the old data removed, the epochs written. No hash, no staging, no marker.
async fn place_by_hand(
    store: &Store,
    paths: &ArtifactPaths,
    data_dir: &std::path::Path,
    zxid: i64,
) {
    use std::io::Write;
    let dir = data_dir.join("version-2");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("version-2");
    let name = dir.join(format!("snapshot.{:x}", zxid));
    let mut file = std::fs::File::create(&name).expect("snapshot file");
    let mut data = store.get_stream(&paths.data).await.expect("get");
    while let Some(chunk) = data.next().await {
        file.write_all(&chunk.expect("chunk")).expect("write");
    }
    file.sync_all().expect("sync");
    for f in ["currentEpoch", "acceptedEpoch"] {
        std::fs::write(dir.join(f), ((zxid as u64) >> 32).to_string()).expect("epoch");
    }
}

/// What a restore's init container does on one member (`quorate restore-member`).
async fn place_like_quorate(
    store: &Store,
    paths: &ArtifactPaths,
    data_dir: &std::path::Path,
    manifest: &artifact::Manifest,
    restore_id: &str,
) {
    let placement = place::Placement {
        data_dir: data_dir.to_path_buf(),
        restore_id: restore_id.into(),
        artifact_id: manifest.id.clone(),
        format: manifest.format,
        zxid: manifest.zxid,
        bytes: manifest.bytes,
        sha256: manifest.sha256.clone(),
    };
    place::place(store, paths, &placement, &|_| {})
        .await
        .expect("place");
}

fn main() {
    let mb: u64 = std::env::var("QUORATE_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let heap = format!("{}m", (mb * 6).max(512));
        eprintln!("starting ZooKeeper 3.9.5 (heap {heap}) and the S3 server");
        let ensemble = Ensemble::builder()
            .version(ZkVersion::V3_9_5)
            .members(1)
            .heap(heap)
            // The JVM's normal JIT: C1 alone (the testbed's quick start) slows the snapshot.
            .quick_start(false)
            .start()
            .await
            .expect("ZooKeeper");
        let s3 = ObjectStore::start().await.expect("S3 server");
        s3.create_bucket("bench").await.expect("bucket");
        let (user, password) = ensemble.super_auth();
        let hosts = ensemble.connect_string();
        eprintln!("populating {mb} MB of znode data");
        let t = Instant::now();
        let znodes = populate(&hosts, (user, password), mb * 1024 * 1024).await;
        let ingest = t.elapsed();
        eprintln!("  {znodes} znodes in {:.1}s", ingest.as_secs_f64());

        let dest = Destination {
            s3: Some(S3Destination {
                endpoint: s3.endpoint(),
                bucket: "bench".into(),
                prefix: Some("bench".into()),
                region: Some(s3.region().into()),
                credentials_secret: "unused".into(),
            }),
            filesystem: None,
        };
        let creds = S3Credentials {
            access_key_id: s3.access_key().into(),
            secret_access_key: s3.secret_key().into(),
        };
        let store = Store::from_destination(&dest, Some(&creds)).expect("store");
        let member = MemberAddr::new(ServerId(1), ensemble.member_ip(1).to_string());

        // The first stage alone: the AdminServer snapshot read and thrown away.
        let t = Instant::now();
        let snapshot_bytes = snapshot_to_nowhere(&member, (user, password)).await;
        let snapshot_read = t.elapsed();

        // The backup: the AdminServer snapshot streamed into the store.
        let job = BackupJob {
            id: artifact::new_id("bench"),
            namespace: "bench".into(),
            ensemble: "bench".into(),
            ensemble_uid: None,
            ensemble_spec: None,
            backup: "bench".into(),
            member: member.clone(),
            format: Format::Snapshot,
            user: user.into(),
            password: password.into(),
            sasl: None,
            zookeeper_version: Some("3.9.5".into()),
            zxid_before: None,
            started_at: jiff::Timestamp::now(),
        };
        let rss_before = peak_rss();
        reset_peak_rss();
        let t = Instant::now();
        let manifest = engine::run_backup(&store, &job, jiff::Timestamp::now, &|_| {})
            .await
            .expect("backup");
        let backup_time = t.elapsed();
        let backup_peak = peak_rss();
        let bytes = manifest.bytes;
        let paths = store.artifact("bench", "bench", &job.id);

        // The baseline: the same bytes, downloaded, then uploaded raw through the same store.
        let mut raw = Vec::with_capacity(bytes as usize);
        let t = Instant::now();
        let mut stream = store.get_stream(&paths.data).await.expect("get");
        while let Some(chunk) = stream.next().await {
            raw.extend_from_slice(&chunk.expect("chunk"));
        }
        let raw_download = t.elapsed();
        let copy = store.artifact("bench", "bench", "raw-copy");
        let chunks: Vec<Result<Bytes, String>> = raw
            .chunks(1024 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        drop(raw);
        let t = Instant::now();
        store
            .put_stream(&copy.data, futures::stream::iter(chunks), &|_| {})
            .await
            .expect("raw upload");
        let raw_upload = t.elapsed();

        // The restore: verification (every byte hashed and parsed) plus a replay into a fresh
        // member through the client protocol.
        let target = Ensemble::builder()
            .version(ZkVersion::V3_9_5)
            .members(1)
            .heap(format!("{}m", (mb * 6).max(512)))
            .quick_start(false)
            .start()
            .await
            .expect("target ZooKeeper");
        let (tu, tp) = target.super_auth();
        let t = Instant::now();
        let verified = engine::verify_artifact(&store, &job.id, &paths)
            .await
            .expect("verify");
        let verify_time = t.elapsed();
        let t = Instant::now();
        let report = engine::load_artifact(
            &store,
            &verified,
            &paths,
            &target.connect_string(),
            (tu, tp),
            false,
            &|_| {},
        )
        .await
        .expect("load");
        let load_time = t.elapsed();

        // Offline restores, on the target member (stopped, its volume replaced, started). The
        // floor: the artifact's bytes downloaded into place by hand, then ZooKeeper started on
        // them until it serves (the load).
        let data_dir = target.data_dir(1);
        let manifest = &verified.manifest;
        target.stop(1).await.expect("stop");
        let t = Instant::now();
        place_by_hand(&store, &paths, &data_dir, manifest.zxid).await;
        let floor_place = t.elapsed();
        let t = Instant::now();
        target.start_member(1).await.expect("start on the placed snapshot");
        let floor_load = t.elapsed();
        let floor_offline = floor_place + floor_load;
        // quorate's offline restore of one member: placed (downloaded, hashed, moved into
        // place), started, and judged by the walk an offline restore uses (clients may write as
        // soon as it serves).
        target.stop(1).await.expect("stop");
        let target_member = MemberAddr::new(ServerId(1), target.member_ip(1).to_string());
        let probe = quorate::zk::AdminProbe::new(Duration::from_secs(10)).expect("probe");
        let t = Instant::now();
        place_like_quorate(&store, &paths, &data_dir, manifest, "offline").await;
        target.start_member(1).await.expect("start after placing");
        // Judged as the restore judges it: by the member's own counters while nothing moved
        // since it loaded (no client writes here), else by a walk at the restore's zxid.
        let counted = engine::served_counts(&probe, std::slice::from_ref(&target_member))
            .await
            .and_then(|c| {
                quorate::backup::tree::loaded_untouched(
                    &c,
                    manifest.zxid,
                    manifest.data_zxid,
                    manifest.znodes,
                )
            });
        let judged = match counted {
            Ok(note) => format!("by the member's counters{note}"),
            Err(why) => {
                let at = engine::restored_data(
                    &target.connect_string(),
                    (tu, tp),
                    manifest.data_zxid,
                )
                .await
                .expect("read the restored data");
                at.judge(manifest.user_znodes)
                    .expect("the offline restore's judgement");
                format!("by a walk ({why})")
            }
        };
        let offline_time = t.elapsed();
        println!("  offline restore judged {judged}");
        // quorate's verify-only restore: the Verifying phase (every byte hashed and parsed), the
        // scratch member placed and started, and judged by its own counts.
        target.stop(1).await.expect("stop");
        let t = Instant::now();
        engine::verify_artifact(&store, &job.id, &paths)
            .await
            .expect("verify");
        place_like_quorate(&store, &paths, &data_dir, manifest, "verify").await;
        target.start_member(1).await.expect("start the scratch member");
        let counts = engine::loaded_counts(&probe, &target_member, (tu, tp))
            .await
            .expect("the scratch member's counts");
        let verify_only_time = t.elapsed();
        counts
            .judge(manifest.user_znodes, manifest.data_zxid)
            .expect("the verify-only judgement");

        println!(
            "quorate backup/restore benchmark: {znodes} znodes, {:.1} MiB snapshot",
            mib(bytes)
        );
        println!(
            "  raw upload (baseline)      {:>8.1} MiB/s",
            rate(bytes, raw_upload)
        );
        println!(
            "  snapshot read to nowhere   {:>8.1} MiB/s   ({} bytes from the AdminServer, thrown away)",
            rate(snapshot_bytes, snapshot_read),
            snapshot_bytes
        );
        println!(
            "  backup (snapshot -> S3)    {:>8.1} MiB/s   ratio to raw upload   {:.2}",
            rate(bytes, backup_time),
            raw_upload.as_secs_f64() / backup_time.as_secs_f64()
        );
        let (slowest, slowest_name) = if snapshot_read > raw_upload {
            (snapshot_read, "the snapshot read")
        } else {
            (raw_upload, "the upload")
        };
        println!(
            "  backup against its slowest stage alone ({slowest_name}, {:.1} MiB/s): {:.2} (target at least 0.80)",
            rate(bytes, slowest),
            slowest.as_secs_f64() / backup_time.as_secs_f64()
        );
        // The stages one after another: what the backup costs where they cannot overlap (on
        // 2 cores the JVM's serialisation, the S3 server and the hash and parse share the CPU).
        let serial = snapshot_read + raw_upload + verify_time;
        println!(
            "  the stages one after another (snapshot read, upload, hash + parse): {:.2} s; the backup took {:.2} s, {:.2} of it",
            serial.as_secs_f64(),
            backup_time.as_secs_f64(),
            backup_time.as_secs_f64() / serial.as_secs_f64()
        );
        println!(
            "  raw download (baseline)    {:>8.1} MiB/s",
            rate(bytes, raw_download)
        );
        println!(
            "  verify (hash + parse)      {:>8.1} MiB/s   ratio to raw download {:.2}",
            rate(bytes, verify_time),
            raw_download.as_secs_f64() / verify_time.as_secs_f64()
        );
        println!(
            "  restore (replay, {} created) {:>6.1} MiB/s   ratio to raw download {:.2}",
            report.created,
            rate(bytes, load_time),
            raw_download.as_secs_f64() / load_time.as_secs_f64()
        );
        println!(
            "  ZooKeeper's own ingest     {:>8.1} s   (the same tree created through multis of {FLOOR_MULTI}, {FLOOR_IN_FLIGHT} in flight)",
            ingest.as_secs_f64()
        );
        println!(
            "  online restore's replay    {:>8.1} s   ratio to ZooKeeper's own ingest {:.2} (target at most 3)",
            load_time.as_secs_f64(),
            load_time.as_secs_f64() / ingest.as_secs_f64()
        );
        println!(
            "  offline restore floor      {:>8.1} s   (download into place {:.1} s, ZooKeeper's load until it serves {:.1} s)",
            floor_offline.as_secs_f64(),
            floor_place.as_secs_f64(),
            floor_load.as_secs_f64()
        );
        println!(
            "  offline restore (1 member) {:>8.1} s   ratio to the floor {:.2} (target at most 2)",
            offline_time.as_secs_f64(),
            offline_time.as_secs_f64() / floor_offline.as_secs_f64()
        );
        println!(
            "  verify-only restore        {:>8.1} s   ratio to ZooKeeper's load {:.2} (target at most 1.2; {} user znodes counted by the member)",
            verify_only_time.as_secs_f64(),
            verify_only_time.as_secs_f64() / floor_load.as_secs_f64(),
            counts.user_znodes().unwrap_or_default()
        );
        println!(
            "  peak RSS during the backup {:>8.1} MiB ({:.2} x the data; before it {:.1} MiB; target under 64 MiB)",
            mib(backup_peak),
            backup_peak as f64 / bytes.max(1) as f64,
            mib(rss_before)
        );
        println!(
            "  (ratios: 1.00 = as fast as a raw copy of the same bytes through the same store)"
        );
        drop(target);
        drop(ensemble);
        drop(s3);
    });
}
