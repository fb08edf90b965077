//! Tests of the object store: a real S3 server (versitygw, built from the Go module proxy) on
//! loopback, driven through the `object_store` crate's S3 client, the kind of client quorate's
//! backups and restores use. Each test starts its own server (they are light: one Go process
//! over a temporary directory).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload, RetryConfig};
use quorate_testbed::objectstore::{Metadata, ObjectStore, Options};

const BUCKET: &str = "backups";

async fn start() -> ObjectStore {
    let started = Instant::now();
    let store = ObjectStore::start().await.expect("the object store starts");
    eprintln!(
        "object store at {} answered {:?} after start (metadata: {:?})",
        store.endpoint(),
        started.elapsed(),
        store.metadata()
    );
    store
}

/// An S3 client of `bucket` on the store, with these credentials.
fn client(store: &ObjectStore, bucket: &str, access_key: &str, secret_key: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(store.endpoint())
        .with_allow_http(true)
        .with_region(store.region())
        .with_bucket_name(bucket)
        .with_access_key_id(access_key)
        .with_secret_access_key(secret_key)
        .with_retry(RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        })
        .build()
        .expect("an S3 client")
}

async fn with_bucket() -> (ObjectStore, AmazonS3) {
    let store = start().await;
    store.create_bucket(BUCKET).await.expect("create bucket");
    let s3 = client(&store, BUCKET, store.access_key(), store.secret_key());
    (store, s3)
}

/// Deterministic bytes that do not repeat with any short period.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The local addresses (hex `ADDR:PORT` from `/proc/net/tcp{,6}`) on which process `pid` listens.
fn listening_addresses(pid: u32) -> Vec<String> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's file descriptors")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                found.push(fields[1].to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn the_server_listens_on_loopback_only_and_lists_a_bucket_created_through_the_api() {
    let store = start().await;
    let endpoint = store.endpoint();
    assert_eq!(endpoint, format!("http://127.0.0.1:{}", store.port()));
    assert_eq!(store.region(), "us-east-1");
    assert!(store.access_key().len() >= 16 && store.secret_key().len() >= 32);

    // Every listening socket of the process is 127.0.0.1:<port> (0100007F is 127.0.0.1 in the
    // kernel's byte order), none on 0.0.0.0 or [::].
    let pid = store.pid().expect("running");
    let listening = listening_addresses(pid);
    assert_eq!(
        listening,
        vec![format!("0100007F:{:04X}", store.port())],
        "versitygw listens only on the store's loopback port"
    );

    assert_eq!(
        store.list_buckets().await.expect("list buckets"),
        Vec::<String>::new()
    );
    store.create_bucket(BUCKET).await.expect("create bucket");
    store
        .create_bucket("other-bucket")
        .await
        .expect("create a second bucket");
    assert_eq!(
        store.list_buckets().await.expect("list buckets"),
        vec![BUCKET.to_string(), "other-bucket".to_string()]
    );
    assert!(store.root_dir().join(BUCKET).is_dir());
    // A bucket that exists cannot be created again, and an invalid name is refused.
    assert!(store.create_bucket(BUCKET).await.is_err());
    assert!(store.create_bucket("Not_A_Bucket").await.is_err());
}

#[tokio::test]
async fn an_object_reads_back_byte_for_byte_is_listed_and_is_deleted() {
    let (store, s3) = with_bucket().await;
    let body = data(300_000, 7);
    let path = ObjectPath::from("ensembles/default/masters/backup-0001.snap");
    let put = s3
        .put(&path, PutPayload::from(body.clone()))
        .await
        .expect("put");
    assert!(put.e_tag.is_some(), "the server returns an ETag");

    let got = s3.get(&path).await.expect("get");
    assert_eq!(got.meta.size, body.len() as u64);
    let bytes = got.bytes().await.expect("read the body");
    assert!(bytes[..] == body[..], "the object reads back byte for byte");
    let range = s3.get_range(&path, 1000..1010).await.expect("get a range");
    assert_eq!(&range[..], &body[1000..1010]);
    // The posix backend stores it as a plain file under the bucket's directory.
    let file = store.root_dir().join(BUCKET).join(path.as_ref());
    assert_eq!(std::fs::read(&file).expect("the object's file"), body);

    let other = ObjectPath::from("ensembles/default/other/backup-0001.snap");
    s3.put(&other, PutPayload::from_static(b"small"))
        .await
        .expect("put a second object");
    let listed: Vec<_> = s3
        .list(Some(&ObjectPath::from("ensembles/default/masters")))
        .try_collect()
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].location, path);
    assert_eq!(listed[0].size, body.len() as u64);
    let all: Vec<_> = s3.list(None).try_collect().await.expect("list all");
    assert_eq!(all.len(), 2, "{all:?}");

    s3.delete(&path).await.expect("delete");
    assert!(matches!(
        s3.get(&path).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert!(!file.exists());
    let left: Vec<_> = s3
        .list(None)
        .try_collect()
        .await
        .expect("list after delete");
    assert_eq!(
        left.iter().map(|m| m.location.clone()).collect::<Vec<_>>(),
        vec![other]
    );
}

#[tokio::test]
async fn a_multipart_upload_of_several_mib_reads_back_whole() {
    let (_store, s3) = with_bucket().await;
    const MIB: usize = 1024 * 1024;
    // S3 parts are at least 5 MiB except the last one.
    let parts = [
        data(5 * MIB, 1),
        data(5 * MIB, 2),
        data(2 * MIB + 12_345, 3),
    ];
    let whole: Vec<u8> = parts.concat();
    let path = ObjectPath::from("ensembles/default/masters/backup-0002.snap");
    let started = Instant::now();
    let mut upload = s3
        .put_multipart(&path)
        .await
        .expect("create multipart upload");
    for part in &parts {
        upload
            .put_part(PutPayload::from(part.clone()))
            .await
            .expect("upload a part");
    }
    let done = upload.complete().await.expect("complete the upload");
    eprintln!(
        "multipart upload of {} bytes in {:?}",
        whole.len(),
        started.elapsed()
    );
    // A multipart object's ETag names its part count.
    let etag = done.e_tag.expect("an ETag");
    assert!(etag.trim_matches('"').ends_with("-3"), "{etag}");

    let head = s3.head(&path).await.expect("head");
    assert_eq!(head.size, whole.len() as u64);
    let bytes = s3
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("read the body");
    assert_eq!(bytes.len(), whole.len());
    assert!(
        bytes[..] == whole[..],
        "the object reads back byte for byte"
    );

    // An aborted upload leaves no object behind.
    let aborted = ObjectPath::from("ensembles/default/masters/aborted.snap");
    let mut upload = s3.put_multipart(&aborted).await.expect("create an upload");
    upload
        .put_part(PutPayload::from(parts[0].clone()))
        .await
        .expect("upload a part");
    upload.abort().await.expect("abort");
    assert!(matches!(
        s3.head(&aborted).await,
        Err(object_store::Error::NotFound { .. })
    ));
}

/// Asserts that a request with bad credentials was refused for them. A wrong secret is a 403
/// (`SignatureDoesNotMatch`, [`object_store::Error::PermissionDenied`]); versitygw answers an
/// unknown access key with 404 `XAdminUserNotFound` ("No user exists with the provided access
/// key ID"), where S3 says 403 `InvalidAccessKeyId`, so that one surfaces as `NotFound`.
fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    request: &str,
    result: &Result<T, object_store::Error>,
) {
    let refused = match result {
        Err(
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. },
        ) => true,
        Err(e) => {
            let text = format!("{e:?}");
            [
                "InvalidAccessKeyId",
                "XAdminUserNotFound",
                "SignatureDoesNotMatch",
            ]
            .iter()
            .any(|code| text.contains(code))
        }
        Ok(_) => false,
    };
    assert!(
        refused,
        "a {request} with {what} is refused for its credentials: {result:?}"
    );
}

#[tokio::test]
async fn with_sidecar_metadata_objects_and_multipart_uploads_work_the_same() {
    // The layout used where the file system takes no `user.*` extended attributes.
    let store = ObjectStore::start_with(Options {
        metadata: Some(Metadata::Sidecar),
    })
    .await
    .expect("the object store starts with a sidecar");
    assert_eq!(store.metadata(), Metadata::Sidecar);
    store.create_bucket(BUCKET).await.expect("create bucket");
    let s3 = client(&store, BUCKET, store.access_key(), store.secret_key());
    let small = ObjectPath::from("a/small.bin");
    let body = data(70_000, 11);
    s3.put(&small, PutPayload::from(body.clone()))
        .await
        .expect("put");
    let got = s3
        .get(&small)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert!(got[..] == body[..]);

    let big = ObjectPath::from("a/big.bin");
    let parts = [data(5 * 1024 * 1024, 12), data(300_000, 13)];
    let mut upload = s3
        .put_multipart(&big)
        .await
        .expect("create multipart upload");
    for part in &parts {
        upload
            .put_part(PutPayload::from(part.clone()))
            .await
            .expect("upload a part");
    }
    upload.complete().await.expect("complete");
    let got = s3
        .get(&big)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert!(got[..] == parts.concat()[..]);
    let listed: Vec<_> = s3.list(None).try_collect().await.expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    // The metadata went to the sidecar directory beside the root.
    let sidecar = store.root_dir().parent().expect("temp dir").join("meta");
    assert!(
        std::fs::read_dir(&sidecar)
            .expect("the sidecar")
            .next()
            .is_some(),
        "{} holds the objects' metadata",
        sidecar.display()
    );
}

#[tokio::test]
async fn wrong_credentials_are_refused() {
    let (store, s3) = with_bucket().await;
    let path = ObjectPath::from("secret.txt");
    s3.put(&path, PutPayload::from_static(b"kept"))
        .await
        .expect("put with the right credentials");

    let wrong_secret = client(
        &store,
        BUCKET,
        store.access_key(),
        "not-the-secret-key-at-all",
    );
    let unknown_key = client(&store, BUCKET, "QRTUNKNOWNACCESSKEY0", store.secret_key());
    for (what, bad) in [
        ("a wrong secret", &wrong_secret),
        ("an unknown key", &unknown_key),
    ] {
        let read = bad.get(&path).await.map(|r| r.meta);
        assert_refused(what, "read", &read);
        let write = bad
            .put(
                &ObjectPath::from("intruder.txt"),
                PutPayload::from_static(b"x"),
            )
            .await;
        assert_refused(what, "write", &write);
        let upload = bad.put_multipart(&ObjectPath::from("intruder.snap")).await;
        assert_refused(what, "multipart upload", &upload.map(drop));
    }
    // Nothing was written by the refused requests, and the object is intact.
    let all: Vec<_> = s3.list(None).try_collect().await.expect("list");
    assert_eq!(
        all.iter().map(|m| m.location.clone()).collect::<Vec<_>>(),
        vec![path.clone()]
    );
    let bytes = s3
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(&bytes[..], b"kept");
}

#[tokio::test]
async fn after_stop_or_drop_the_process_and_its_directory_are_gone() {
    for drop_it in [false, true] {
        let mut store = start().await;
        store.create_bucket(BUCKET).await.expect("create bucket");
        let pid = store.pid().expect("running");
        let dir = store
            .root_dir()
            .parent()
            .expect("the store's temporary directory")
            .to_path_buf();
        assert!(dir.is_dir());
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        if drop_it {
            drop(store);
        } else {
            store.stop();
            assert_eq!(store.pid(), None);
        }
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is gone (drop: {drop_it})"
        );
        assert!(
            !dir.exists(),
            "{} is removed (drop: {drop_it})",
            dir.display()
        );
    }
}
