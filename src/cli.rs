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
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats of commands that print tables or decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// JSON.
    Json,
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
        #[arg(long)]
        desired: PathBuf,
        /// An observed ensemble in YAML or JSON (members, config, inFlight, nextServerId, ...).
        #[arg(long)]
        observed: PathBuf,
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
    Run {
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
    },
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
        Command::Run { .. } => Err(Error::Render(
            "`run` needs a cluster; call run_online".into(),
        )),
        Command::Plan {
            desired,
            observed,
            now,
            output,
        } => {
            let desired_spec = read_desired(desired)?;
            let observed = read_observed(observed)?;
            let plan = planner::plan(&desired_spec, &observed, now.unwrap_or(clock_now));
            render_plan(&plan, &desired_spec, *output)
        }
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
        Output::Json => {
            let mut value = serde_json::to_value(plan).map_err(|e| Error::Render(e.to_string()))?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("specHash".into(), desired.spec_hash.clone().into());
            }
            serde_json::to_string_pretty(&value)
                .map(|s| s + "\n")
                .map_err(|e| Error::Render(e.to_string()))
        }
        Output::Text => Ok(format!(
            "decision:  {}\nrule:      {}\nspec hash: {}\n",
            plan.decision,
            plan.rule.name(),
            desired.spec_hash
        )),
    }
}

/// Runs the subcommands that talk to a cluster.
pub async fn run_online(command: &Command) -> Result<(), String> {
    match command {
        Command::Run { log_json } => {
            init_logging(*log_json);
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("cannot reach the cluster: {e}"))?;
            crate::controller::run(client)
                .await
                .map_err(|e| e.to_string())
        }
        _ => Err("not an online command".into()),
    }
}

/// Whether `command` needs a cluster.
pub fn is_online(command: &Command) -> bool {
    matches!(command, Command::Run { .. })
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
