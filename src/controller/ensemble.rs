//! The reconcile of one MasterEnsemble.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use rand::distr::{Alphanumeric, SampleString};
use tracing::{info, instrument, warn};

use super::observe::{Observation, observe};
use super::status::build_status;
use super::support;
use super::{Context, Error};
use crate::constants::*;
use crate::crd::{ClientAuthentication, EnsemblePhase, MasterEnsemble, MasterEnsembleStatus};
use crate::executor::resources::member::{
    EnsembleContext, build_client_service, build_config_map, build_connection_config_map,
    build_members_service, build_pdb,
};
use crate::executor::resources::names::{credentials_secret, ensemble_labels};
use crate::planner::model::to_micros;
use crate::planner::{Claim, Decision, Desired, Plan, Step, plan};
use crate::zk::{Credentials, Login};

/// One pass over one ensemble. After a pass that lost its compare-and-set race, the next one
/// reads the ensemble from the API server: the store that handed out the older object may lag
/// for as long as its watch takes to reconnect, and every claim from it would lose again.
pub async fn reconcile(ens: Arc<MasterEnsemble>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = ens.namespace().unwrap_or_default();
    let name = ens.name_any();
    let ens = if ctx.stale.take(&ns, &name) {
        let api: Api<MasterEnsemble> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("read {ns}/{name}")))
        {
            Ok(Some(fresh)) => Arc::new(fresh),
            Ok(None) => return Ok(Action::await_change()),
            Err(e) => {
                ctx.stale.mark(&ns, &name);
                return Err(e);
            }
        }
    } else {
        ens
    };
    let result = pass(ens, ctx.clone()).await;
    if matches!(result, Err(Error::Conflict { .. })) {
        ctx.stale.mark(&ns, &name);
    }
    result
}

#[instrument(skip_all, fields(namespace = %ens.namespace().unwrap_or_default(), ensemble = %ens.name_any()))]
async fn pass(ens: Arc<MasterEnsemble>, ctx: Arc<Context>) -> Result<Action, Error> {
    let now = Timestamp::now();
    let ns = ens.namespace().unwrap_or_default();
    let name = ens.name_any();
    let api: Api<MasterEnsemble> = Api::namespaced(ctx.client.clone(), &ns);
    let desired = match Desired::try_from(&ens.spec) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "invalid spec");
            let status = serde_json::json!({"status": {"phase": EnsemblePhase::Invalid, "message": e.to_string(), "observedGeneration": ens.metadata.generation}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map_err(Error::kube(format!("record invalid spec of {ns}/{name}")))?;
            return Ok(Action::await_change());
        }
    };
    let Some(owner) = ens.controller_owner_ref(&()) else {
        return Err(Error::Inconsistent(format!("{ns}/{name} has no uid yet")));
    };
    let ectx = EnsembleContext {
        name: &name,
        namespace: &ns,
        spec: &ens.spec,
        owner,
    };
    ensure_support_objects(&ctx, &ectx).await?;
    let credentials = ensure_credentials(&ctx, &ectx).await?;
    if let Some(restore) = ens.annotations().get(ANNOTATION_RESTORING) {
        // A ZkRestore owns the members: no step until it is done. Saying so in status is the
        // hand-over the restore waits for: this pass saw the fence, and passes of one ensemble
        // never overlap, so no pass that read the ensemble unfenced is still running.
        let handed = ens.status.as_ref().is_some_and(|s| {
            s.phase == Some(EnsemblePhase::Restoring) && s.restore.as_deref() == Some(restore)
        });
        if !handed {
            info!(%restore, "a restore owns the members; no step");
            let status = serde_json::json!({"status": {"phase": EnsemblePhase::Restoring, "restore": restore, "message": format!("ZkRestore {restore} owns the members"), "rootLocked": null}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map_err(Error::kube(format!("record the restore of {ns}/{name}")))?;
        }
        return Ok(Action::requeue(std::time::Duration::from_secs(5)));
    }

    let mut previous = ens.status.clone().unwrap_or_default();
    let new_spec = previous.observed_generation != ens.metadata.generation;
    if new_spec {
        // A new spec: this is when the change was requested (backupBeforeChange compares with
        // it). The planner of this very pass must see it too, or a backup older than the change
        // but newer than the previous one would let the change through.
        previous.change_requested_at = Some(MicroTime(to_micros(now)));
    }
    // A steady ensemble is confirmed from the reflector stores; anything else, and any plan
    // that is not Converged, is observed from fresh lists (a store may lag the last step).
    let steady =
        !new_spec && previous.phase == Some(EnsemblePhase::Running) && previous.in_flight.is_none();
    let objects = match steady
        .then(|| support::Objects::from_stores(&ctx, &ns, &name))
        .flatten()
    {
        Some(stored) => stored,
        None => support::Objects::list(&ctx, &ns, &name).await?,
    };
    // What the stores held, to tell whether fresh lists would show anything else.
    let stored = objects.from_stores.then(|| objects.versions());
    let operator_login = credentials.login(&credentials.operator);
    let observe_with = |objects| {
        observe_and_plan(
            &ctx,
            &ens,
            &ectx,
            &desired,
            &operator_login,
            &previous,
            now,
            objects,
        )
    };
    let (mut obs, mut plan) = observe_with(objects).await?;
    if let Some(stored) = stored
        && !matches!(plan.decision, Decision::Converged)
    {
        let listed = support::Objects::list(&ctx, &ns, &name).await?;
        if listed.versions() != stored {
            (obs, plan) = observe_with(listed).await?;
        }
    }
    for id in crate::planner::rules::stale_fence_marks(&obs.observed) {
        super::execute::mark_fenced(&ctx, &ectx, id, false).await?;
    }
    info!(decision = %plan.decision, rule = %plan.rule.name(), "planned");
    let labels = crate::metrics::ObjectKey::new(&ns, &name);
    let observed = &obs.observed;
    let record_members = |in_flight_since| {
        let voters = observed.voters();
        ctx.metrics.ensemble(
            &labels,
            crate::metrics::EnsembleGauges {
                members: observed
                    .members
                    .values()
                    .filter(|m| m.pod.is_some())
                    .count(),
                voters: voters.len(),
                ready: observed.members.values().filter(|m| m.is_healthy()).count(),
                healthy_voters: crate::planner::rules::healthy_voters(observed, &voters).len(),
                in_flight_since,
            },
        )
    };
    if let (Decision::Wait { reason, .. }, Some(gate), Some(at)) = (
        &plan.decision,
        &ens.spec.backup_before_change,
        previous.change_requested_at.as_ref(),
    ) && *reason == crate::planner::WaitReason::AwaitingBackup
    {
        request_backup(&ctx, &ns, &gate.backup_name, at.0).await;
    }

    match &plan.decision {
        Decision::Act { step } => {
            let claim = Claim {
                step: step.clone(),
                started_at: now,
            };
            let resumed = obs
                .observed
                .in_flight
                .as_ref()
                .is_some_and(|c| c.step == *step);
            // The claim: a status write conditioned on the resourceVersion this pass read.
            let claimed = Claim {
                started_at: if resumed {
                    obs.observed
                        .in_flight
                        .as_ref()
                        .map(|c| c.started_at)
                        .unwrap_or(now)
                } else {
                    now
                },
                ..claim
            };
            let status = build_status(&ens, &previous, &obs, &plan, Some(&claimed), now);
            let written = write_status(&api, &ens, status, &step.to_string()).await?;
            super::failpoints::reached(super::failpoints::after_claim(step)).await;
            record_members(Some(claimed.started_at));
            announce_completed(&ctx, &ens, &obs, &desired).await;
            if !resumed {
                ctx.metrics.step(step.kind(), "started");
                super::publish_event(
                    &ctx,
                    ens.as_ref(),
                    EventType::Normal,
                    &format!("Started/{step}"),
                    &format!("{step}: {}", plan.rule.name()),
                )
                .await;
            }
            let result =
                super::execute::execute(&ctx, &ens, &ectx, &desired, step, &obs, &credentials)
                    .await;
            if let Err(e) = &result {
                ctx.metrics.step(step.kind(), "failed");
                super::publish_event(
                    &ctx,
                    ens.as_ref(),
                    EventType::Warning,
                    &format!("Failed/{step}"),
                    &e.to_string(),
                )
                .await;
                if !resumed && e.reconfig_not_sent() {
                    withdraw_removal(&api, &written, step, &obs, e).await;
                }
                return Err(result.unwrap_err());
            }
            Ok(Action::requeue(next_look(step, ctx.settle)))
        }
        other => {
            announce_completed(&ctx, &ens, &obs, &desired).await;
            if let Decision::Blocked { reason } = other
                && previous.phase != Some(EnsemblePhase::Blocked)
            {
                ctx.metrics.blocked(reason.code());
                super::publish_event(
                    &ctx,
                    ens.as_ref(),
                    EventType::Warning,
                    &format!("Blocked/{}", reason.code()),
                    &reason.to_string(),
                )
                .await;
            }
            // The root is locked once the ensemble has converged, and again after a restore
            // (whose hand-over cleared the mark): one session, then never again.
            let root_locked = previous.root_locked
                || (matches!(other, Decision::Converged) && lock_root(&obs, &credentials).await);
            record(&api, &previous, &ens, &obs, &plan, now, root_locked).await?;
            record_members(None);
            Ok(match other {
                Decision::Converged => Action::requeue(std::time::Duration::from_secs(30)),
                Decision::Blocked { .. } => Action::requeue(std::time::Duration::from_secs(10)),
                Decision::Wait { reason } => Action::requeue(waiting_look(reason, ctx.settle)),
                Decision::Act { .. } => Action::requeue(ctx.settle),
            })
        }
    }
}

/// Observes the ensemble from `objects` and plans its next step (reading member volumes when
/// the plan needs the most up-to-date survivor).
#[allow(clippy::too_many_arguments)]
async fn observe_and_plan(
    ctx: &Context,
    ens: &MasterEnsemble,
    ectx: &EnsembleContext<'_>,
    desired: &Desired,
    login: &Login,
    previous: &MasterEnsembleStatus,
    now: Timestamp,
    objects: support::Objects,
) -> Result<(Observation, Plan), Error> {
    let mut obs = observe(ctx, ens, desired, login, now, objects).await?;
    obs.observed.change_requested_at = previous.change_requested_at.as_ref().map(|t| t.0);
    let mut plan = plan(desired, &obs.observed, now);
    if super::survivor::read_volumes(ctx, ectx, &mut obs, &plan).await? {
        plan = crate::planner::plan(desired, &obs.observed, now);
    }
    Ok((obs, plan))
}

/// Asks the `backupBeforeChange` ZkBackup for a backup taken after `at` (an annotation its
/// controller acts on), unless it was asked already.
async fn request_backup(ctx: &Context, ns: &str, backup: &str, at: Timestamp) {
    let api: Api<crate::crd::ZkBackup> = Api::namespaced(ctx.client.clone(), ns);
    let asked = match api.get_opt(backup).await {
        Ok(Some(b)) => b
            .annotations()
            .get(ANNOTATION_BACKUP_REQUESTED)
            .and_then(|v| v.parse::<Timestamp>().ok()),
        Ok(None) => {
            warn!(%backup, "spec.backupBeforeChange names a ZkBackup that does not exist");
            return;
        }
        Err(e) => {
            warn!(%backup, error = %e, "cannot read the backupBeforeChange ZkBackup");
            return;
        }
    };
    if asked.is_some_and(|a| a >= at) {
        return;
    }
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_BACKUP_REQUESTED: at.to_string()}}});
    match api
        .patch(backup, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => info!(%backup, "asked for a backup before the change"),
        Err(e) => warn!(%backup, error = %e, "cannot ask for a backup"),
    }
}

async fn record(
    api: &Api<MasterEnsemble>,
    previous: &MasterEnsembleStatus,
    ens: &MasterEnsemble,
    obs: &Observation,
    plan: &Plan,
    now: Timestamp,
    root_locked: bool,
) -> Result<(), Error> {
    let status = MasterEnsembleStatus {
        root_locked,
        ..build_status(ens, previous, obs, plan, None, now)
    };
    if super::status::unchanged_but_zxids(previous, &status) {
        return Ok(());
    }
    // A compare-and-set like the claim: a status written from a stale read never erases a
    // step another operator claimed meanwhile.
    write_status(api, ens, status, "record status").await?;
    Ok(())
}

/// Takes the admin permission on `/` from `world:anyone` as the super user (see
/// [`crate::zk::membership::root_locked`]), so that the AdminServer's `snapshot` and `restore`
/// answer only the super user. Whether the root is locked now; a failure is logged and the
/// next converged pass tries again.
async fn lock_root(obs: &Observation, credentials: &EnsembleCredentials) -> bool {
    let Some(membership) = obs.membership(credentials.login(&credentials.admin)) else {
        return false;
    };
    match membership.lock_root().await {
        Ok(_) => true,
        Err(e) => {
            warn!(error = %e, "could not take the admin permission on / from world:anyone");
            false
        }
    }
}

/// Takes back this pass's claim of a removal that failed before any reconfig request was sent
/// (see [`super::status::withdrawn_removal`]), conditioned on the claim (`written`, as the API
/// server returned it) being the last write: if another pass or operator wrote since, its
/// status stands.
async fn withdraw_removal(
    api: &Api<MasterEnsemble>,
    written: &MasterEnsemble,
    step: &crate::planner::Step,
    obs: &Observation,
    error: &Error,
) {
    let claimed = written.status.clone().unwrap_or_default();
    let Some(status) = super::status::withdrawn_removal(
        &claimed,
        step,
        &obs.observed.voters(),
        &error.to_string(),
    ) else {
        return;
    };
    match write_status(api, written, status, "withdraw the claim").await {
        Ok(_) => info!(%step, "claim withdrawn: no reconfig request was sent"),
        Err(e) => warn!(%step, error = %e, "claim not withdrawn"),
    }
}

/// Replaces the status, conditioned on the resourceVersion this pass read (a compare-and-set);
/// losing the race is [`Error::Conflict`]. Returns the object as written.
async fn write_status(
    api: &Api<MasterEnsemble>,
    ens: &MasterEnsemble,
    status: MasterEnsembleStatus,
    what: &str,
) -> Result<MasterEnsemble, Error> {
    let mut obj = ens.clone();
    obj.status = Some(status);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let name = ens.name_any();
    api.replace_status(&name, &params, &obj)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => Error::Conflict { step: what.into() },
            e => Error::kube(format!("{what} on {name}"))(e),
        })
}

/// An Event for the step claimed earlier once it has taken effect.
async fn announce_completed(
    ctx: &Context,
    ens: &MasterEnsemble,
    obs: &Observation,
    desired: &Desired,
) {
    if let Some(done) = &obs.observed.in_flight
        && crate::planner::rules::step_is_done(&done.step, &obs.observed, desired)
    {
        ctx.metrics.step(done.step.kind(), "completed");
        let action = format!("Completed/{}", done.step);
        super::publish_event(ctx, ens, EventType::Normal, &action, &done.step.to_string()).await;
    }
}

/// Both ConfigMaps (read by name), both Services and the PodDisruptionBudget (from the stores),
/// each applied only when it differs (support.rs).
async fn ensure_support_objects(ctx: &Context, ectx: &EnsembleContext<'_>) -> Result<(), Error> {
    let ns = ectx.namespace;
    let stores = ctx.stores.as_ref();
    for config_map in [build_config_map(ectx), build_connection_config_map(ectx)] {
        let held = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
            .get_opt(&config_map.name_any())
            .await
            .map_err(Error::kube(format!(
                "read ConfigMap {}",
                config_map.name_any()
            )))?;
        support::apply_if_differs(ctx, ns, &config_map, held.as_ref()).await?;
    }
    for service in [build_members_service(ectx), build_client_service(ectx)] {
        let held = support::held(stores.map(|s| &s.services), ns, &service.name_any());
        support::apply_if_differs(ctx, ns, &service, held.as_deref()).await?;
    }
    let pdb = build_pdb(ectx);
    let held = support::held(stores.map(|s| &s.pdbs), ns, &pdb.name_any());
    support::apply_if_differs(ctx, ns, &pdb, held.as_deref()).await
}

/// How soon the pass after `step` looks again. A reconfig has committed (or failed) when it
/// returns, so the next step is decided at once; whatever else a step waits for either comes
/// through a watch (a Pod created, deleted or ready) or must be polled (a member syncing, which
/// no Kubernetes object reports), every `settle`.
fn next_look(step: &Step, settle: std::time::Duration) -> std::time::Duration {
    match step {
        Step::AddVoter { .. } | Step::RemoveVoter { .. } => {
            settle.min(std::time::Duration::from_millis(100))
        }
        _ => settle,
    }
}

/// How soon a pass that waits for `reason` looks again. A member starting (its process up but
/// not serving yet) and a joiner catching up with the leader change nothing any watched object
/// reports, and a step waits on them every time a member joins, so they are polled four times as
/// often as other waits (never more often than every 100 ms); other waits end with a watched
/// change (a Pod, a backup, the spec) or are long (a member down), and look every `settle`.
fn waiting_look(
    reason: &crate::planner::WaitReason,
    settle: std::time::Duration,
) -> std::time::Duration {
    match reason {
        crate::planner::WaitReason::MemberStarting { .. }
        | crate::planner::WaitReason::JoinerCatchingUp { .. } => (settle / 4)
            .max(std::time::Duration::from_millis(100))
            .min(settle),
        _ => settle,
    }
}

/// The ensemble's two ZooKeeper identities.
#[derive(Clone, Debug)]
pub struct EnsembleCredentials {
    /// The super user: used only to grant `operator` its permission (once, and again when a
    /// restore brought back data without the grant).
    pub admin: Credentials,
    /// The operator user: every reconfig, with `rwa` on `/zookeeper/config` only.
    pub operator: Credentials,
    /// The SASL login of every session (the operator user), when the members enforce client
    /// authentication.
    pub sasl: Option<Credentials>,
}

impl EnsembleCredentials {
    /// A session as `who`, logged in with SASL first when the members enforce it.
    pub fn login(&self, who: &Credentials) -> Login {
        Login::digest(who.clone()).with_sasl(self.sasl.clone())
    }
}

/// Whether an ensemble's members enforce SASL client authentication: as `spec` says, and when
/// it says nothing, on for an ensemble whose credentials Secret is created now (a new ensemble)
/// or already holds the clients' password, off for one whose Secret predates the setting.
pub fn client_sasl(
    spec: Option<ClientAuthentication>,
    secret_existed: bool,
    secret_has_client_password: bool,
) -> bool {
    match spec {
        Some(ClientAuthentication::Sasl) => true,
        Some(ClientAuthentication::None) => false,
        None => !secret_existed || secret_has_client_password,
    }
}

/// The members' JAAS configuration: the SASL users the servers accept (the operator and the
/// clients), and the login of a shell opened on a member (as the clients' user). Passwords
/// must not hold `"` or `\` (the file quotes them).
pub fn jaas_config(operator_password: &str, client_password: &str) -> String {
    format!(
        "Server {{\n  org.apache.zookeeper.server.auth.DigestLoginModule required\n  \
         user_{OPERATOR_USER}=\"{operator_password}\"\n  user_{CLIENT_USER}=\"{client_password}\";\n}};\n\
         Client {{\n  org.apache.zookeeper.server.auth.DigestLoginModule required\n  \
         username=\"{CLIENT_USER}\"\n  password=\"{client_password}\";\n}};\n"
    )
}

/// Refuses a password the JAAS file cannot hold, naming the Secret key.
fn jaas_safe(key: &str, password: &str) -> Result<(), Error> {
    match password
        .chars()
        .find(|c| matches!(c, '"' | '\\' | '\n' | '\r'))
    {
        Some(c) => Err(Error::Inconsistent(format!(
            "{key} holds {c:?}: with client authentication on, the passwords go into the members' \
             JAAS file, which cannot hold quotes, backslashes or line breaks"
        ))),
        None => Ok(()),
    }
}

/// The ensemble's credentials: generated once into `<ensemble>-credentials`, or taken from
/// the Secret named by `spec.auth` (its `operatorPassword` is optional and generated when
/// missing) and copied there, with the super user's digest the servers read.
async fn ensure_credentials(
    ctx: &Context,
    ectx: &EnsembleContext<'_>,
) -> Result<EnsembleCredentials, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ectx.namespace);
    let own = credentials_secret(ectx.name);
    let existing = api
        .get_opt(&own)
        .await
        .map_err(Error::kube(format!("read Secret {own}")))?;
    let given = match &ectx.spec.auth {
        Some(auth) => Some(
            api.get(&auth.secret_name)
                .await
                .map_err(Error::kube(format!(
                    "read Secret {} named by spec.auth",
                    auth.secret_name
                )))?,
        ),
        None => None,
    };
    let kept = |key| {
        existing
            .as_ref()
            .and_then(|s| super::backup::secret_value(s, key))
    };
    let generated = || Alphanumeric.sample_string(&mut rand::rng(), 32);
    let password = match &given {
        Some(user) => super::backup::secret_key(user, ectx.namespace, SECRET_SUPER_PASSWORD)?,
        None => kept(SECRET_SUPER_PASSWORD).unwrap_or_else(generated),
    };
    let operator = given
        .as_ref()
        .and_then(|s| super::backup::secret_value(s, SECRET_OPERATOR_PASSWORD))
        .or_else(|| kept(SECRET_OPERATOR_PASSWORD))
        .unwrap_or_else(generated);
    let given_client = given
        .as_ref()
        .and_then(|s| super::backup::secret_value(s, SECRET_CLIENT_PASSWORD));
    let sasl = client_sasl(
        ectx.spec.client_authentication,
        existing.is_some(),
        kept(SECRET_CLIENT_PASSWORD).is_some(),
    );
    let client = sasl.then(|| {
        given_client
            .or_else(|| kept(SECRET_CLIENT_PASSWORD))
            .unwrap_or_else(generated)
    });
    let mut data = BTreeMap::from([
        (
            SECRET_SUPER_PASSWORD.to_string(),
            ByteString(password.clone().into_bytes()),
        ),
        (
            SECRET_SUPER_DIGEST.to_string(),
            ByteString(crate::zk::digest(SUPER_USER, &password).into_bytes()),
        ),
        (
            SECRET_OPERATOR_PASSWORD.to_string(),
            ByteString(operator.clone().into_bytes()),
        ),
    ]);
    if let Some(client) = &client {
        jaas_safe(SECRET_OPERATOR_PASSWORD, &operator)?;
        jaas_safe(SECRET_CLIENT_PASSWORD, client)?;
        data.insert(
            SECRET_CLIENT_PASSWORD.to_string(),
            ByteString(client.clone().into_bytes()),
        );
        data.insert(
            SECRET_JAAS.to_string(),
            ByteString(jaas_config(&operator, client).into_bytes()),
        );
    }
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(own.clone()),
            namespace: Some(ectx.namespace.into()),
            labels: Some(ensemble_labels(ectx.name, "credentials")),
            owner_references: Some(vec![ectx.owner.clone()]),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    support::apply_if_differs(ctx, ectx.namespace, &secret, existing.as_ref()).await?;
    Ok(EnsembleCredentials {
        admin: Credentials::digest(SUPER_USER, password),
        sasl: client.map(|_| Credentials::digest(OPERATOR_USER, operator.clone())),
        operator: Credentials::digest(OPERATOR_USER, operator),
    })
}

#[cfg(test)]
mod tests {
    //! Unit tier: the client-authentication decision and the JAAS file, pure.
    use super::*;

    #[test]
    fn client_authentication_is_on_for_new_ensembles_and_kept_off_for_older_ones() {
        use ClientAuthentication::{None as Off, Sasl};
        // (spec, Secret existed, Secret had the client password) -> on
        for (spec, existed, had, on) in [
            (Option::None, false, false, true),
            (Option::None, true, true, true),
            (Option::None, true, false, false),
            (Some(Sasl), true, false, true),
            (Some(Sasl), false, false, true),
            (Some(Off), false, false, false),
            (Some(Off), true, true, false),
        ] {
            assert_eq!(
                client_sasl(spec, existed, had),
                on,
                "{spec:?} {existed} {had}"
            );
        }
    }

    #[test]
    fn the_jaas_file_names_the_operator_and_client_users_and_refuses_quotes() {
        let jaas = jaas_config("op-pw", "client-pw");
        assert!(
            jaas.contains(
                "Server {\n  org.apache.zookeeper.server.auth.DigestLoginModule required\n"
            )
        );
        assert!(jaas.contains("user_quorate=\"op-pw\""));
        assert!(jaas.contains("user_client=\"client-pw\";\n};"));
        assert!(
            jaas.contains("Client {")
                && jaas.contains("username=\"client\"\n  password=\"client-pw\";")
        );
        assert!(jaas_safe("clientPassword", "Abc123").is_ok());
        for bad in ["a\"b", "a\\b", "a\nb"] {
            let e = jaas_safe("clientPassword", bad).unwrap_err().to_string();
            assert!(e.contains("clientPassword") && e.contains("JAAS"), "{e}");
        }
    }
}
