//! The `quorate` command line: `crd`, `plan`, `version` (more subcommands arrive with the
//! controller and backups).

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use jiff::Timestamp;

use crate::crd::{MasterEnsemble, MasterEnsembleSpec};
use crate::planner::{self, Desired, Observed, Plan};

/// quorate keeps ZooKeeper master ensembles quorate.
#[derive(Debug, Parser)]
#[command(name = "quorate", version, about, propagate_version = true)]
pub struct Cli {
    /// Which cluster the commands that talk to one use.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Which cluster to talk to: `$KUBECONFIG` (or `~/.kube/config`, or the in-cluster
/// ServiceAccount) and its current context unless these say otherwise.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// The kubeconfig file to use.
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

/// The ensemble a command acts on: NAMESPACE/NAME, or NAME in the namespace `-n` gives (else
/// the kubeconfig's).
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// NAMESPACE/NAME, or NAME (in the namespace of -n, else the kubeconfig's).
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// The namespace of a bare NAME (a NAMESPACE/NAME must agree with it).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

impl Target {
    /// NAMESPACE/NAME or NAME, checked before any cluster is contacted (exit 2): each part a
    /// DNS label, and a namespace given twice given the same.
    pub fn resolve(&self, command: &str) -> Result<String, CliError> {
        check_target(command, &self.target).map_err(CliError::usage)?;
        let Some(ns) = &self.namespace else {
            return Ok(self.target.clone());
        };
        if !is_dns_label(ns) {
            return Err(CliError::usage(format!(
                "quorate ensemble {command}: -n {ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
            )));
        }
        match self.target.split_once('/') {
            Some((given, _)) if given != ns => Err(CliError::usage(format!(
                "quorate ensemble {command}: {:?} names namespace {given:?} but -n gives {ns:?}; give the namespace once",
                self.target
            ))),
            Some(_) => Ok(self.target.clone()),
            None => Ok(format!("{ns}/{}", self.target)),
        }
    }
}

/// Exit codes: 0 success, 1 the command ran and failed (a restore that ended Failed, an object
/// that does not exist, the API server refused), 2 the arguments are wrong (checked before any
/// cluster is contacted; clap's own usage errors are 2 too), 3 the cluster cannot be reached
/// (no kubeconfig, a wrong context, the API server does not answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The exit code.
    pub code: i32,
    /// What to print.
    pub message: String,
}

impl CliError {
    /// Exit code 1: the command ran and failed.
    pub const FAILED: i32 = 1;
    /// Exit code 2: wrong arguments.
    pub const USAGE: i32 = 2;
    /// Exit code 3: the cluster cannot be reached.
    pub const UNREACHABLE: i32 = 3;

    /// Wrong arguments (exit code 2).
    pub fn usage(message: String) -> Self {
        CliError {
            code: Self::USAGE,
            message,
        }
    }
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError {
            code: Self::FAILED,
            message,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Output formats of commands that print tables or decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

impl Output {
    /// Whether this is a machine-readable format (JSON or YAML) rather than text.
    pub fn is_structured(self) -> bool {
        self != Output::Text
    }

    /// `value` in this format: YAML for `yaml`, indented JSON otherwise (the structured form of
    /// a command that prints text has no other shape).
    pub fn encode<T: serde::Serialize>(self, value: &T) -> Result<String, String> {
        match self {
            Output::Yaml => serde_norway::to_string(value).map_err(|e| e.to_string()),
            Output::Json | Output::Text => serde_json::to_string_pretty(value)
                .map(|s| s + "\n")
                .map_err(|e| e.to_string()),
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions as YAML (the files under crds/).
    Crd {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Print the decision the planner takes for a spec and an observed ensemble, and the rule
    /// behind it.
    Plan {
        /// A MasterEnsemble manifest (or its bare spec) in YAML or JSON.
        #[arg(long, requires = "observed", conflicts_with = "ensemble")]
        desired: Option<PathBuf>,
        /// An observed ensemble in YAML or JSON (members, config, inFlight, nextServerId, ...).
        #[arg(long, requires = "desired", conflicts_with = "ensemble")]
        observed: Option<PathBuf>,
        /// A live ensemble, NAMESPACE/NAME: observe it and print the step the controller would
        /// take next, without taking it.
        #[arg(long, required_unless_present = "desired")]
        ensemble: Option<String>,
        /// The time to plan at (RFC 3339); the current time when absent.
        #[arg(long)]
        now: Option<Timestamp>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the version.
    Version,
    /// Run the operator against the cluster of the usual kubeconfig (or in-cluster config).
    Run(RunArgs),
    /// Live ensembles.
    Ensemble {
        /// What to do.
        #[command(subcommand)]
        command: EnsembleCommand,
    },
    /// Backups, as in the DC/OS backup CLI: create, list, show, delete, restore.
    Backup {
        /// What to do.
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Used by restores inside member Pods: place a verified artifact on this member's volume
    /// (the ensemble's Pods run it as an init container from the operator's image).
    RestoreMember {
        /// The ZkBackup's `spec.destination`, as JSON.
        #[arg(long)]
        destination: String,
        /// NAMESPACE/ZKBACKUP/ARTIFACT-ID.
        #[arg(long)]
        artifact: String,
        /// `zookeeper-snapshot` or `quorate-tree-v1`.
        #[arg(long)]
        format: String,
        /// The snapshot's zxid (hex).
        #[arg(long)]
        zxid: String,
        /// Expected size of the data in bytes.
        #[arg(long)]
        bytes: u64,
        /// Expected SHA-256 of the data (hex).
        #[arg(long)]
        sha256: String,
        /// ZooKeeper's dataDir on the member's volume.
        #[arg(long)]
        data_dir: PathBuf,
        /// The restore's id (names the marker and the kept old data).
        #[arg(long)]
        restore_id: String,
    },
    /// Read a member's volume directly, without ZooKeeper running (no quorum needed).
    Volume {
        /// What to do.
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Print a shell completion script: `source <(quorate completion bash)`, or for zsh
    /// `quorate completion zsh > "${fpath[1]}/_quorate"`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The local sandbox: real control plane, node agent, ZooKeeper and the operator.
    Sandbox {
        /// What to do.
        #[command(subcommand)]
        command: SandboxCommand,
    },
}

/// `quorate ensemble ...`
#[derive(Debug, Subcommand)]
pub enum EnsembleCommand {
    /// The ensembles of a namespace (or of every namespace): members, ready, leader, phase.
    List {
        /// Namespace (the kubeconfig's when absent).
        #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Members, roles, quorum, the step in flight and the conditions of NAMESPACE/NAME.
    Status {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Stop every step on NAMESPACE/NAME (`spec.paused: true`): the operator keeps observing
    /// and reporting it, and acts again after `resume`.
    Pause {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Let the operator act on NAMESPACE/NAME again (`spec.paused: false`).
    Resume {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Restart every member of NAMESPACE/NAME one at a time, followers first and the leader
    /// last, each only once the one before serves again (a roll, started by setting
    /// `quorate.dev/restartedAt` on `spec.podTemplate.annotations`).
    Restart {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Replace member ID of NAMESPACE/NAME while it is healthy (a node to retire, a disk to
    /// move): a fresh member joins, syncs and votes first, then ID leaves the configuration and
    /// its Pod and volume are deleted (adds ID to `spec.replaceMembers`).
    ReplaceMember {
        #[command(flatten)]
        target: Target,
        /// The server id of the voter to replace.
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        id: u32,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Collect what a bug report about NAMESPACE/NAME needs into a directory: the ensemble, its
    /// status, member Pods and volumes, the Events about them, its ZkBackups and ZkRestores,
    /// every member's and the operator's logs (no Secrets).
    Report {
        #[command(flatten)]
        target: Target,
        /// The directory to write (default: quorate-report-NAMESPACE-NAME-TIME here).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Output format (of the summary; the report itself is YAML and text files).
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Open ZooKeeper's own shell (zkCli.sh) on a member of NAMESPACE/NAME through `kubectl
    /// exec`: a serving follower unless --member names one. Inside, `addauth digest
    /// super:<superPassword of the Secret NAME-credentials>` grants the super user.
    Zkcli {
        #[command(flatten)]
        target: Target,
        /// The member's server id.
        #[arg(long, value_name = "ID")]
        member: Option<u32>,
        /// Print the kubectl command instead of running it.
        #[arg(long)]
        print: bool,
    },
    /// After a quorum loss that a majority of the members will not come back from (their
    /// volumes are lost): rebuild NAMESPACE/NAME from the surviving member with the highest
    /// zxid, set the other survivors' volumes aside, and grow back to spec.replicas (a ZkRestore
    /// with `source.survivors`). Refused while any member serves or a majority still holds
    /// data.
    Recover {
        #[command(flatten)]
        target: Target,
        /// Go ahead: every member is stopped and the ensemble restarts from one survivor.
        #[arg(long)]
        yes: bool,
        /// Wait until the recovery is Ready (or Failed), showing progress.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, such as 90s, 15m or 1h (default 1h).
        #[arg(long, requires = "wait", value_parser = parse_timeout)]
        timeout: Option<std::time::Duration>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// `quorate volume ...`
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Print the highest zxid that a ZooKeeper dataDir durably holds, read from its snapshots
    /// and transaction logs, and where it was read. `-o json` prints one line (it fits a Pod's
    /// termination message).
    Zxid {
        /// The member's dataDir (holding `version-2`), or its `version-2` directory.
        dir: PathBuf,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Also write a short answer to this file, `{"zxid":"0x..."}` (`null` for an empty
        /// volume) or `{"error":"..."}`: a Pod's termination message, as quorate's volume probe
        /// reads it.
        #[arg(long, value_name = "PATH")]
        termination_log: Option<PathBuf>,
        /// Where the member's volume is mounted: when nothing at all is on it (a lost or wiped
        /// disk), the answer is "no data" instead of an error.
        #[arg(long, value_name = "PATH")]
        volume_root: Option<PathBuf>,
    },
}

/// `quorate backup ...`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a backup now, labelled LABEL: through the ZkBackup of that label, or a new one
    /// with the destination of another ZkBackup of the ensemble (`--from`) or a directory.
    Create {
        /// 3 to 25 characters of [A-Za-z0-9_.-], not starting with `...`.
        #[arg(long)]
        label: String,
        /// NAMESPACE/NAME of the ensemble (the only one in the namespace when absent).
        #[arg(long)]
        ensemble: Option<String>,
        /// A ZkBackup whose destination a new ZkBackup uses.
        #[arg(long, conflicts_with = "filesystem")]
        from: Option<String>,
        /// A directory on the operator's filesystem as the destination (development).
        #[arg(long)]
        filesystem: Option<String>,
        /// How to read the data.
        #[arg(long, value_enum, default_value_t = MethodArg::Auto)]
        method: MethodArg,
        /// Wait until the backup is Ready (or Error), showing progress.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, such as 90s, 15m or 1h (default 1h).
        #[arg(long, requires = "wait", value_parser = parse_timeout)]
        timeout: Option<std::time::Duration>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List backups, optionally only those whose id starts with PREFIX (a label).
    List {
        /// Id prefix, such as a label.
        prefix: Option<String>,
        /// Read a bucket directly instead of the ZkBackups (disaster recovery).
        #[command(flatten)]
        bucket: BucketArgs,
        /// Namespace (the kubeconfig's when absent).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show one backup and the restores made from it.
    Show {
        /// The backup id (`<label>-<uuid>`).
        id: String,
        /// Namespace (the kubeconfig's when absent).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Delete one backup from the store and from its ZkBackup. The operator deletes it from
    /// inside the cluster (the `quorate.dev/delete-backups` annotation), so the bucket need not
    /// be reachable from here; this waits until the backup is gone.
    Delete {
        /// The backup id.
        id: String,
        /// Namespace (the kubeconfig's when absent).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// How long to wait for the operator (`90s`, `5m`); the request stays after it.
        #[arg(long, value_parser = parse_timeout, default_value = "2m")]
        timeout: std::time::Duration,
    },
    /// Restore one backup (a ZkRestore): offline by default.
    Restore {
        /// The backup id.
        id: String,
        /// Find the backup in a bucket instead of the ZkBackups (disaster recovery: no
        /// ZkBackup is needed, only the credentials Secret).
        #[command(flatten)]
        bucket: BucketArgs,
        /// Namespace (the kubeconfig's when absent).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Restore into this ensemble (NAME in the backup's namespace) instead of the backup's.
        #[arg(long)]
        ensemble: Option<String>,
        /// `offline` (stop every member, place the snapshot on each) or `online` (replay
        /// through the leader).
        #[arg(long, value_enum, default_value_t = ModeArg::Offline)]
        mode: ModeArg,
        /// Restore even if the backup is older than the live data.
        #[arg(long)]
        allow_older: bool,
        /// Only verify the backup in a scratch member; change nothing.
        #[arg(long)]
        verify_only: bool,
        /// Wait until the restore is Ready (or Failed), showing progress.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, such as 90s, 15m or 1h (default 1h).
        #[arg(long, requires = "wait", value_parser = parse_timeout)]
        timeout: Option<std::time::Duration>,
        /// Go ahead: a restore replaces the data of the ensemble it restores into. Needed
        /// unless --dry-run or --verify-only.
        #[arg(long, conflicts_with = "dry_run")]
        yes: bool,
        /// Print what the restore would do (the ZkRestore, checked by the API server without
        /// being stored, and the steps it would take) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// A bucket read directly, with no ZkBackup (`backup list --from`, `backup restore --from`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BucketArgs {
    /// `s3://BUCKET[/PREFIX]` (with --endpoint and --secret), or `file:///DIR` (a directory the
    /// operator can read), as a ZkBackup's destination names it.
    #[arg(long = "from", value_name = "URL")]
    pub from: Option<String>,
    /// The S3 endpoint, such as https://s3.eu-west-1.amazonaws.com.
    #[arg(long, requires = "from")]
    pub endpoint: Option<String>,
    /// The S3 region.
    #[arg(long, requires = "from")]
    pub region: Option<String>,
    /// The Secret (keys accessKeyId and secretAccessKey) in the namespace that reads the
    /// bucket; a restore's members use it too.
    #[arg(long, requires = "from")]
    pub secret: Option<String>,
}

/// The destination `--from` names, or why it is not one. Pure: checked before any cluster is
/// contacted.
pub fn bucket_destination(b: &BucketArgs) -> Result<Option<crate::crd::Destination>, String> {
    use crate::crd::{Destination, FilesystemDestination, S3Destination};
    let Some(url) = &b.from else {
        return Ok(None);
    };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = match rest.split_once('/') {
            Some((bucket, prefix)) => (bucket, prefix.trim_matches('/')),
            None => (rest, ""),
        };
        if !(3..=63).contains(&bucket.len()) {
            return Err(format!(
                "--from {url}: the bucket name must be 3 to 63 characters"
            ));
        }
        let endpoint = b
            .endpoint
            .clone()
            .ok_or_else(|| format!("--from {url}: an s3:// bucket needs --endpoint"))?;
        let secret = b.secret.clone().ok_or_else(|| {
            format!("--from {url}: an s3:// bucket needs --secret (a Secret with accessKeyId and secretAccessKey)")
        })?;
        return Ok(Some(Destination {
            s3: Some(S3Destination {
                endpoint,
                bucket: bucket.into(),
                prefix: (!prefix.is_empty()).then(|| prefix.into()),
                region: b.region.clone(),
                credentials_secret: secret,
            }),
            filesystem: None,
        }));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!("--from {url}: a file:// path must be absolute"));
        }
        if b.endpoint.is_some() || b.secret.is_some() {
            return Err(format!(
                "--from {url}: --endpoint and --secret are for s3:// buckets"
            ));
        }
        return Ok(Some(Destination {
            s3: None,
            filesystem: Some(FilesystemDestination { path: path.into() }),
        }));
    }
    Err(format!(
        "--from {url}: expected s3://BUCKET[/PREFIX] or file:///DIR"
    ))
}

/// `--method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Snapshot where supported, otherwise tree.
    Auto,
    /// The AdminServer snapshot (3.9.4+).
    Snapshot,
    /// A tree walk.
    Tree,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Stop every member and place the data on each.
    Offline,
    /// Replay through the leader.
    Online,
}

/// `quorate sandbox ...`
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Build or reuse what is needed, start everything, apply a sample ensemble, and run in the
    /// foreground until Ctrl-C. Prints `export KUBECONFIG=<path>` once ready.
    Up {
        /// A MasterEnsemble manifest to apply instead of samples/masters.yaml.
        #[arg(long)]
        sample: Option<PathBuf>,
    },
    /// Stop a sandbox running elsewhere.
    Down,
}

/// Errors of the command line, each with the file or argument it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not valid YAML/JSON of the expected shape.
    #[error("{path} is not a valid {what}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The spec breaks validation rules.
    #[error("{path}: {source}")]
    Spec {
        /// The file.
        path: PathBuf,
        /// Every rule broken.
        source: planner::model::SpecErrors,
    },
    /// Output could not be rendered.
    #[error("cannot render output: {0}")]
    Render(String),
    /// A data directory could not be read (the error names the path).
    #[error(transparent)]
    DataDir(#[from] crate::backup::datadir::Error),
}

/// `quorate run`: the operator.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// The namespaces to manage, comma-separated; empty manages every namespace.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub watch_namespaces: Vec<String>,
    /// Elect a leader among operator processes on a Lease (false: this process reconciles at
    /// once; only for a single replica).
    #[arg(long, env = "QUORATE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// The leader Lease's name.
    #[arg(long, env = "QUORATE_LEASE_NAME", default_value = "quorate-leader")]
    pub lease_name: String,
    /// The leader Lease's namespace (default: the Pod's namespace, else the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This process's identity in the Lease (default: the Pod's name, else host and a random
    /// suffix).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long the Lease is valid after each renewal, in seconds: a standby takes over at
    /// most this long after the leader died.
    #[arg(long, env = "QUORATE_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// How long before expiry the leader renews, in seconds (also the clock skew tolerated).
    #[arg(long, env = "QUORATE_LEASE_GRACE_SECONDS", default_value_t = 5)]
    pub lease_grace_seconds: u64,
    /// Serve /metrics, /healthz and /readyz here (host:port); unset serves nothing.
    #[arg(long, env = "QUORATE_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Also serve /metrics, /healthz and /readyz here (the chart's probe port).
    #[arg(long, env = "QUORATE_HEALTH_ADDR")]
    pub health_addr: Option<std::net::SocketAddr>,
    /// At most this many passes of each kind (ensembles, backups, restores) run at once, per
    /// watched namespace: a restart queues every object's first pass instead of running all
    /// of them together.
    #[arg(
        long,
        env = "QUORATE_MAX_CONCURRENT_RECONCILES",
        default_value_t = 8,
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    pub max_concurrent_reconciles: u16,
}

impl RunArgs {
    /// The controller's options, with the Lease's defaults taken from `client`.
    pub fn options(&self, client: &kube::Client) -> Result<crate::controller::RunOptions, String> {
        let namespaces: Vec<String> = self
            .watch_namespaces
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        for ns in &namespaces {
            if !is_dns_label(ns) {
                return Err(format!(
                    "WATCH_NAMESPACES (--watch-namespaces): {ns:?} is not a namespace name (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63)"
                ));
            }
        }
        let lease = if self.leader_election {
            let identity = match &self.identity {
                Some(id) => id.clone(),
                None => format!(
                    "{}-{}",
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "quorate".into()),
                    rand::distr::SampleString::sample_string(
                        &rand::distr::Alphanumeric,
                        &mut rand::rng(),
                        8
                    )
                    .to_lowercase()
                ),
            };
            let lease = crate::controller::leader::LeaseOptions {
                name: self.lease_name.clone(),
                namespace: self
                    .lease_namespace
                    .clone()
                    .unwrap_or_else(|| client.default_namespace().to_string()),
                identity,
                duration_seconds: self.lease_duration_seconds,
                grace_seconds: self.lease_grace_seconds,
            };
            lease.validate()?;
            Some(lease)
        } else {
            None
        };
        Ok(crate::controller::RunOptions {
            namespaces,
            lease,
            serve: self
                .metrics_addr
                .into_iter()
                .chain(self.health_addr)
                .collect(),
            concurrency: self.max_concurrent_reconciles,
        })
    }
}

/// A DNS-1123 label, as namespace names are.
fn is_dns_label(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| ok(c) || c == '-')
        && s.starts_with(ok)
        && s.ends_with(ok)
}

/// Runs the pure subcommands (those that need no cluster) and returns what to print.
pub fn run_offline(command: &Command, clock_now: Timestamp) -> Result<String, Error> {
    match command {
        Command::Crd { out_dir: None } => {
            crate::crd::all_crds_yaml().map_err(|e| Error::Render(e.to_string()))
        }
        Command::Crd { out_dir: Some(dir) } => {
            let mut written = String::new();
            for crd in crate::crd::all_crds() {
                let path = dir.join(crate::crd::crd_file_name(&crd));
                let yaml =
                    serde_norway::to_string(&crd).map_err(|e| Error::Render(e.to_string()))?;
                std::fs::write(&path, yaml).map_err(|source| Error::Write {
                    path: path.clone(),
                    source,
                })?;
                written.push_str(&format!("wrote {}\n", path.display()));
            }
            Ok(written)
        }
        Command::Version => Ok(format!("quorate {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Completion { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(
                *shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "quorate",
                &mut out,
            );
            String::from_utf8(out).map_err(|e| Error::Render(e.to_string()))
        }
        Command::Plan {
            desired: Some(desired),
            observed: Some(observed),
            now,
            output,
            ..
        } => {
            let desired_spec = read_desired(desired)?;
            let observed = read_observed(observed)?;
            let plan = planner::plan(&desired_spec, &observed, now.unwrap_or(clock_now));
            render_plan(&plan, &desired_spec, *output)
        }
        Command::Volume {
            command:
                VolumeCommand::Zxid {
                    dir,
                    output,
                    termination_log,
                    volume_root,
                },
        } => {
            let result = match volume_root {
                Some(root) => crate::backup::datadir::volume_zxid(root, dir),
                None => crate::backup::datadir::highest_zxid(dir),
            };
            if let Some(path) = termination_log {
                let short = match &result {
                    Ok(found) => serde_json::json!({
                        "zxid": found.zxid.map(crate::backup::artifact::zxid_hex),
                    }),
                    Err(e) => serde_json::json!({"error": e.to_string()}),
                };
                std::fs::write(path, short.to_string()).map_err(|source| Error::Write {
                    path: path.clone(),
                    source,
                })?;
            }
            let found = result?;
            match output {
                // One line: a termination message holds at most 4 KiB.
                Output::Json => serde_json::to_string(&found)
                    .map(|s| s + "\n")
                    .map_err(|e| Error::Render(e.to_string())),
                Output::Yaml => output.encode(&found).map_err(Error::Render),
                Output::Text => Ok(found.to_string()),
            }
        }
        _ => Err(Error::Render("this command needs a cluster".into())),
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a MasterEnsemble manifest or bare spec and validates it into [`Desired`].
pub fn read_desired(path: &Path) -> Result<Desired, Error> {
    let text = read(path)?;
    let value: serde_json::Value = serde_norway::from_str(&text).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        what: "YAML or JSON document",
        message: e.to_string(),
    })?;
    let spec: MasterEnsembleSpec = if value.get("kind").is_some() {
        let ens: MasterEnsemble = serde_json::from_value(value).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            what: "MasterEnsemble",
            message: e.to_string(),
        })?;
        ens.spec
    } else {
        serde_json::from_value(value).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            what: "MasterEnsemble spec",
            message: e.to_string(),
        })?
    };
    Desired::try_from(&spec).map_err(|source| Error::Spec {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an observed ensemble.
pub fn read_observed(path: &Path) -> Result<Observed, Error> {
    let text = read(path)?;
    serde_norway::from_str(&text).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        what: "observed ensemble",
        message: e.to_string(),
    })
}

/// Renders a plan as text or JSON, with the desired spec hash that Pods are compared with.
pub fn render_plan(plan: &Plan, desired: &Desired, output: Output) -> Result<String, Error> {
    match output {
        Output::Json | Output::Yaml => {
            let mut value = serde_json::to_value(plan).map_err(|e| Error::Render(e.to_string()))?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("specHash".into(), desired.spec_hash.clone().into());
            }
            output.encode(&value).map_err(Error::Render)
        }
        Output::Text => Ok(format!(
            "decision:  {}\nrule:      {}\nspec hash: {}\n",
            plan.decision,
            plan.rule.name(),
            desired.spec_hash
        )),
    }
}

/// Runs the subcommands that talk to a cluster (or start one) and returns what to print.
pub async fn run_online(command: &Command, cluster: &ClusterArgs) -> Result<String, CliError> {
    let client = || client(cluster);
    match command {
        Command::Run(args) => {
            init_logging(args.log_json);
            let client = client().await?;
            let options = args.options(&client)?;
            crate::controller::run(client, options)
                .await
                .map_err(|e| e.to_string())?;
            Ok(String::new())
        }
        Command::Ensemble {
            command: EnsembleCommand::Status { target, output },
        } => {
            let target = target.resolve("status")?;
            Ok(crate::inspect::ensemble_status(&client().await?, &target, *output).await?)
        }
        Command::Ensemble {
            command:
                EnsembleCommand::List {
                    namespace,
                    all_namespaces,
                    output,
                },
        } => Ok(crate::inspect::ensemble_list(
            &client().await?,
            namespace.as_deref(),
            *all_namespaces,
            *output,
        )
        .await?),
        Command::Ensemble {
            command:
                EnsembleCommand::Recover {
                    target,
                    yes,
                    wait,
                    timeout,
                    output,
                },
        } => {
            let target = &target.resolve("recover")?;
            check_recover(target, *yes).map_err(CliError::usage)?;
            Ok(crate::backup_commands::recover(
                &client().await?,
                target,
                *wait,
                timeout.unwrap_or(crate::backup_commands::DEFAULT_WAIT),
                *output,
            )
            .await?)
        }
        Command::Ensemble {
            command:
                EnsembleCommand::Report {
                    target,
                    out_dir,
                    output,
                },
        } => {
            let target = &target.resolve("report")?;
            Ok(crate::report::ensemble_report(
                &client().await?,
                target,
                out_dir.as_deref(),
                *output,
            )
            .await?)
        }
        Command::Ensemble {
            command:
                EnsembleCommand::Zkcli {
                    target,
                    member,
                    print,
                },
        } => {
            let target = &target.resolve("zkcli")?;
            let mut command = crate::day2::zkcli_command(&client().await?, target, *member).await?;
            // kubectl talks to the same cluster as this command.
            let mut global = Vec::new();
            if let Some(path) = &cluster.kubeconfig {
                global.extend(["--kubeconfig".to_string(), path.display().to_string()]);
            }
            if let Some(context) = &cluster.context {
                global.extend(["--context".to_string(), context.clone()]);
            }
            command.splice(1..1, global);
            if *print {
                let quoted: Vec<String> = command.iter().map(|a| shell_quoted(a)).collect();
                return Ok(format!("{}\n", quoted.join(" ")));
            }
            let status = std::process::Command::new(&command[0])
                .args(&command[1..])
                .status()
                .map_err(|e| format!("run {}: {e} (is kubectl on PATH?)", command[0]))?;
            if status.success() {
                Ok(String::new())
            } else {
                Err(format!("{} ended with {status}", command.join(" ")).into())
            }
        }
        Command::Ensemble {
            command: EnsembleCommand::Pause { target, output },
        } => day2(cluster, target, crate::day2::Change::Pause, *output).await,
        Command::Ensemble {
            command: EnsembleCommand::Resume { target, output },
        } => day2(cluster, target, crate::day2::Change::Resume, *output).await,
        Command::Ensemble {
            command: EnsembleCommand::Restart { target, output },
        } => day2(cluster, target, crate::day2::Change::Restart, *output).await,
        Command::Ensemble {
            command: EnsembleCommand::ReplaceMember { target, id, output },
        } => {
            let target = &target.resolve("replace-member")?;
            Ok(crate::day2::replace_member(&client().await?, target, *id, *output).await?)
        }
        Command::Plan {
            ensemble: Some(target),
            now,
            output,
            ..
        } => Ok(crate::inspect::plan_live(&client().await?, target, *now, *output).await?),
        Command::Backup { command } => {
            check_backup_command(command).map_err(CliError::usage)?;
            Ok(run_backup_command(command, client().await?).await?)
        }
        Command::RestoreMember {
            destination,
            artifact,
            format,
            zxid,
            bytes,
            sha256,
            data_dir,
            restore_id,
        } => Ok(crate::backup_commands::restore_member(
            &crate::backup_commands::RestoreMemberArgs {
                destination: destination.clone(),
                artifact: artifact.clone(),
                format: format.clone(),
                zxid: zxid.clone(),
                bytes: *bytes,
                sha256: sha256.clone(),
                data_dir: data_dir.clone(),
                restore_id: restore_id.clone(),
            },
        )
        .await?),
        #[cfg(feature = "sandbox")]
        Command::Sandbox {
            command: SandboxCommand::Up { sample },
        } => {
            init_logging_to_file(&crate::sandbox::sandbox_dir().join("operator.log"))?;
            Ok(crate::sandbox::up(sample.clone())
                .await
                .map(|_| String::new())?)
        }
        #[cfg(feature = "sandbox")]
        Command::Sandbox {
            command: SandboxCommand::Down,
        } => Ok(crate::sandbox::down().map(|_| String::new())?),
        #[cfg(not(feature = "sandbox"))]
        Command::Sandbox { .. } => Err(CliError::from(
            "this build of quorate has no sandbox (feature `sandbox`)".to_string(),
        )),
        _ => Err(CliError::from("not an online command".to_string())),
    }
}

/// `--timeout`: a positive duration such as `90s`, `15m`, `1h` or `1h30m`.
pub fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration such as 90s, 15m or 1h: {e}"))?;
    if d.is_zero() || d.is_negative() {
        return Err(format!("{s:?}: the timeout must be longer than zero"));
    }
    std::time::Duration::try_from(d).map_err(|e| format!("{s:?}: {e}"))
}

/// Checks a backup command's arguments before any cluster is contacted.
/// `quorate ensemble recover` stops every member: it needs `--yes`, checked before any cluster
/// is contacted.
/// `target` is NAMESPACE/NAME or NAME, each a DNS label (checked before a cluster is contacted).
pub fn check_target(command: &str, target: &str) -> Result<(), String> {
    let parts: Vec<&str> = target.split('/').collect();
    if parts.len() > 2 || !parts.iter().all(|p| is_dns_label(p)) {
        return Err(format!(
            "quorate ensemble {command}: {target:?} is not NAMESPACE/NAME or NAME (lowercase letters, digits and '-', at most 63 each)"
        ));
    }
    Ok(())
}

/// Runs a day-2 change after checking its target.
async fn day2(
    cluster: &ClusterArgs,
    target: &Target,
    change: crate::day2::Change,
    output: Output,
) -> Result<String, CliError> {
    let verb = format!("{change:?}").to_lowercase();
    let target = target.resolve(&verb)?;
    Ok(crate::day2::change(&client(cluster).await?, &target, change, output).await?)
}

pub fn check_recover(target: &str, yes: bool) -> Result<(), String> {
    check_target("recover", target)?;
    if !yes {
        return Err(format!(
            "quorate ensemble recover {target} stops every member and rebuilds the ensemble from the surviving member with the highest zxid; writes that only the lost members held are gone for good. Pass --yes to go ahead (it is refused while any member serves or a majority still holds data)"
        ));
    }
    Ok(())
}

pub fn check_backup_command(command: &BackupCommand) -> Result<(), String> {
    if let BackupCommand::Create { label, .. } = command {
        let errors = crate::crd::label_errors(label);
        if !errors.is_empty() {
            return Err(format!("--label {label:?}: {}", errors.join("; ")));
        }
    }
    if let BackupCommand::List { bucket, .. } | BackupCommand::Restore { bucket, .. } = command {
        bucket_destination(bucket)?;
    }
    if let BackupCommand::Restore {
        id,
        verify_only: false,
        yes: false,
        dry_run: false,
        ..
    } = command
    {
        return Err(format!(
            "quorate backup restore {id} replaces the data of the ensemble it restores into (offline: every member is stopped; online: znodes are overwritten and deleted while clients run). Pass --yes to go ahead, or --dry-run to see what it would do; --verify-only changes nothing"
        ));
    }
    Ok(())
}

async fn run_backup_command(
    command: &BackupCommand,
    client: kube::Client,
) -> Result<String, String> {
    use crate::backup_commands as b;
    match command {
        BackupCommand::Create {
            label,
            ensemble,
            from,
            filesystem,
            method,
            wait,
            timeout,
            output,
        } => {
            b::create(
                &client,
                &b::CreateArgs {
                    label: label.clone(),
                    ensemble: ensemble.clone(),
                    from: from.clone(),
                    filesystem: filesystem.clone(),
                    method: match method {
                        MethodArg::Auto => crate::crd::BackupMethod::Auto,
                        MethodArg::Snapshot => crate::crd::BackupMethod::Snapshot,
                        MethodArg::Tree => crate::crd::BackupMethod::Tree,
                    },
                    wait: *wait,
                    timeout: timeout.unwrap_or(b::DEFAULT_WAIT),
                    output: *output,
                },
            )
            .await
        }
        BackupCommand::List {
            prefix,
            bucket,
            namespace,
            all_namespaces: _,
            output,
        } if bucket.from.is_some() => {
            let dest = bucket_destination(bucket)?.unwrap_or_default();
            b::list_bucket(&client, &dest, prefix.as_deref(), namespace, *output).await
        }
        BackupCommand::List {
            prefix,
            namespace,
            all_namespaces,
            output,
            ..
        } => {
            b::list(
                &client,
                prefix.as_deref(),
                namespace,
                *all_namespaces,
                *output,
            )
            .await
        }
        BackupCommand::Show {
            id,
            namespace,
            output,
        } => b::show(&client, id, namespace, *output).await,
        BackupCommand::Delete {
            id,
            namespace,
            timeout,
        } => b::delete(&client, id, namespace, *timeout).await,
        BackupCommand::Restore {
            id,
            bucket,
            namespace,
            ensemble,
            mode,
            allow_older,
            verify_only,
            wait,
            timeout,
            yes: _,
            dry_run,
            output,
        } => {
            b::restore(
                &client,
                &b::RestoreArgs {
                    id: id.clone(),
                    namespace: namespace.clone(),
                    ensemble: ensemble.clone(),
                    mode: match mode {
                        ModeArg::Offline => crate::crd::RestoreMode::Offline,
                        ModeArg::Online => crate::crd::RestoreMode::Online,
                    },
                    allow_older: *allow_older,
                    verify_only: *verify_only,
                    wait: *wait,
                    timeout: timeout.unwrap_or(b::DEFAULT_WAIT),
                    dry_run: *dry_run,
                    output: *output,
                    bucket: bucket_destination(bucket)?,
                },
            )
            .await
        }
    }
}

/// A client for the cluster `cluster` names; failing is [`CliError::UNREACHABLE`].
async fn client(cluster: &ClusterArgs) -> Result<kube::Client, CliError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let unreachable = |message: String| CliError {
        code: CliError::UNREACHABLE,
        message,
    };
    let options = KubeConfigOptions {
        context: cluster.context.clone(),
        ..Default::default()
    };
    let config = match (&cluster.kubeconfig, &cluster.context) {
        (None, None) => kube::Config::infer().await.map_err(|e| {
            unreachable(format!(
                "cannot reach the cluster (no KUBECONFIG, ~/.kube/config or in-cluster config): {e}"
            ))
        })?,
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| unreachable(format!("--kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| unreachable(format!("--kubeconfig {}: {e}", path.display())))?
        }
        (None, Some(context)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| unreachable(format!("--context {context}: {e}")))?,
    };
    kube::Client::try_from(config)
        .map_err(|e| unreachable(format!("cannot build a client for the cluster: {e}")))
}

/// Whether `command` needs a cluster.
pub fn is_online(command: &Command) -> bool {
    matches!(
        command,
        Command::Run(_)
            | Command::Ensemble { .. }
            | Command::Backup { .. }
            | Command::RestoreMember { .. }
            | Command::Sandbox { .. }
            | Command::Plan {
                ensemble: Some(_),
                ..
            }
    )
}

#[cfg(feature = "sandbox")]
fn init_logging_to_file(path: &Path) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let file =
        std::fs::File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(())
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The ZooKeeper client logs every session it opens and closes at info, from tasks outside
    // the reconcile's span; quorate logs what matters of them itself.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("zookeeper_client"))
        && let Ok(quiet) = "zookeeper_client=warn".parse()
    {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `arg` as a POSIX shell word: as it is when it holds nothing the shell would split or expand,
/// in single quotes otherwise.
fn shell_quoted(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    //! Unit tier: quoting of printed commands, checked by a real `sh`.
    use super::*;

    #[test]
    fn a_printed_command_reads_back_word_for_word_in_a_shell() {
        let words = [
            "kubectl",
            "--",
            "if [ -f /a ]; then export X=-Dy=/a; fi; exec \"$0\" \"$@\"",
            "it's",
            "",
            "/apache-zookeeper-3.9.5-bin/bin/zkCli.sh",
            "host.ns.svc:2181",
        ];
        let line: Vec<String> = words.iter().map(|w| shell_quoted(w)).collect();
        assert_eq!(line[0], "kubectl");
        assert_eq!(line[6], "host.ns.svc:2181");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\n' {}", line.join(" ")))
            .output()
            .expect("sh");
        let back = String::from_utf8(out.stdout).expect("utf-8");
        assert_eq!(back.lines().collect::<Vec<_>>(), words);
    }
}
