//! Benchmark (not a test): backup and restore throughput against a raw copy of the same bytes
//! through the same store, as ratios measured in one run, and the peak memory of the backup.
//!
//! ```sh
//! cargo bench --bench backup_throughput                 # 100 MB of znode data
//! QUORATE_BENCH_MB=20 cargo bench --bench backup_throughput
//! ```
//!
//! Real parts: ZooKeeper 3.9.5 from the testbed (one member, loopback) and the testbed's S3
//! server. The baseline for the backup is a plain streamed upload of the very bytes the backup
//! stored; for the restore, a plain streamed download of them, and ZooKeeper's own ingest of the
//! same tree (the benchmark populates it through pipelined multis). Memory is the process's peak
//! resident set while the backup runs (the kernel's high-water mark, reset just before).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use quorate::backup::artifact::{self, Format};
use quorate::backup::engine::{self, BackupJob};
use quorate::backup::store::{S3Credentials, Store};
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

        println!(
            "quorate backup/restore benchmark: {znodes} znodes, {:.1} MiB snapshot",
            mib(bytes)
        );
        println!(
            "  raw upload (baseline)      {:>8.1} MiB/s",
            rate(bytes, raw_upload)
        );
        println!(
            "  backup (snapshot -> S3)    {:>8.1} MiB/s   ratio to raw upload   {:.2}",
            rate(bytes, backup_time),
            raw_upload.as_secs_f64() / backup_time.as_secs_f64()
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
            "  peak RSS during the backup {:>8.1} MiB ({:.2} x the data; before it {:.1} MiB)",
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
