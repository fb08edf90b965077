//! A container's environment as the kubelet builds it: `envFrom`, then `env` in order, with
//! `value` (`$(VAR)` references to earlier variables expanded), `valueFrom.fieldRef`,
//! `secretKeyRef` and `configMapKeyRef`; and the `$(VAR)` expansion of `command` and `args`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

/// What a container's environment may refer to.
pub(super) struct EnvContext<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub node: &'a str,
    pub config_map: &'a dyn Fn(&str) -> Option<Arc<ConfigMap>>,
    pub secret: &'a dyn Fn(&str) -> Option<Arc<Secret>>,
}

/// Ordered variables; a later definition replaces an earlier one in place.
#[derive(Default, Debug)]
pub(super) struct Vars {
    order: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Vars {
    pub(super) fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.order[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.order.len());
                self.order.push((name, value));
            }
        }
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.order[i].1.as_str())
    }

    pub(super) fn into_vec(self) -> Vec<(String, String)> {
        self.order
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined reference stays
/// as written, and `$$` is a literal `$`.
pub(super) fn expand(input: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field_value(path: &str, ctx: &EnvContext) -> Result<String, String> {
    let meta = &ctx.pod.metadata;
    let spec = ctx.pod.spec.as_ref();
    let quoted_key = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_string)
    };
    if let Some(key) = quoted_key("metadata.labels") {
        return Ok(meta
            .labels
            .as_ref()
            .and_then(|l| l.get(&key).cloned())
            .unwrap_or_default());
    }
    if let Some(key) = quoted_key("metadata.annotations") {
        return Ok(meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(&key).cloned())
            .unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| ctx.node.to_string()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.to_string(),
        other => return Err(format!("unsupported fieldRef fieldPath {other:?}")),
    })
}

fn config_map_value(cm: &ConfigMap, key: &str) -> Option<String> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(key).cloned())
        .or_else(|| {
            cm.binary_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        })
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

/// The container's variables on top of `base` (the image's and the agent's), or a message for
/// a `CreateContainerConfigError`.
pub(super) fn resolve(container: &Container, ctx: &EnvContext, base: Vars) -> Result<Vars, String> {
    let ns = ctx.pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut vars = base;
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(r) = &source.config_map_ref {
            match (ctx.config_map)(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        vars.set(format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &source.secret_ref {
            match (ctx.secret)(&r.name) {
                Some(secret) => {
                    for (k, v) in secret.data.iter().flatten() {
                        vars.set(
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    field_value(&f.field_path, ctx)?
                } else if let Some(r) = &from.secret_key_ref {
                    match (ctx.secret)(&r.name) {
                        Some(s) => match secret_value(&s, &r.key) {
                            Some(v) => v,
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in Secret {ns}/{}",
                                    r.key, r.name
                                ));
                            }
                        },
                        None if r.optional == Some(true) => continue,
                        None => return Err(format!("secret \"{}\" not found", r.name)),
                    }
                } else if let Some(r) = &from.config_map_key_ref {
                    match (ctx.config_map)(&r.name) {
                        Some(cm) => match config_map_value(&cm, &r.key) {
                            Some(v) => v,
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in ConfigMap {ns}/{}",
                                    r.key, r.name
                                ));
                            }
                        },
                        None if r.optional == Some(true) => continue,
                        None => return Err(format!("configmap \"{}\" not found", r.name)),
                    }
                } else {
                    return Err(format!(
                        "env {}: only fieldRef, secretKeyRef and configMapKeyRef are supported by \
                         the node agent",
                        var.name
                    ));
                }
            }
            (Some(v), None) => expand(v, &vars),
            (None, None) => String::new(),
        };
        vars.set(var.name.clone(), value);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        let mut v = Vars::default();
        for (k, val) in pairs {
            v.set(k.to_string(), val.to_string());
        }
        v
    }

    #[test]
    fn expands_defined_references_and_keeps_the_rest() {
        let v = vars(&[("A", "1"), ("B", "two")]);
        assert_eq!(expand("x$(A)y$(B)", &v), "x1ytwo");
        assert_eq!(expand("$(C) $$(A) $$ $x $(", &v), "$(C) $(A) $ $x $(");
    }

    #[test]
    fn resolves_values_field_refs_and_key_refs() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "zk-1", "namespace": "ns", "labels": {"app": "zk"}},
            "spec": {"containers": []}
        }))
        .unwrap();
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "env": [
                {"name": "ID", "value": "1"},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
                {"name": "BOTH", "value": "$(NAME)@$(IP)"}
            ]
        }))
        .unwrap();
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"}, "data": {"pw": "c2VjcmV0"}
        }))
        .unwrap();
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"}, "data": {"k": "v"}
        }))
        .unwrap();
        let secret = Arc::new(secret);
        let cm = Arc::new(cm);
        let ctx = EnvContext {
            pod: &pod,
            pod_ip: Ipv4Addr::new(127, 0, 5, 2),
            host_ip: Ipv4Addr::new(127, 0, 5, 1),
            node: "n",
            config_map: &|name| (name == "c").then(|| cm.clone()),
            secret: &|name| (name == "s").then(|| secret.clone()),
        };
        let v = resolve(&container, &ctx, Vars::default()).unwrap();
        assert_eq!(v.get("ID"), Some("1"));
        assert_eq!(v.get("IP"), Some("127.0.5.2"));
        assert_eq!(v.get("APP"), Some("zk"));
        assert_eq!(v.get("PW"), Some("secret"));
        assert_eq!(v.get("CFG"), Some("v"));
        assert_eq!(v.get("BOTH"), Some("zk-1@127.0.5.2"));

        let missing: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]
        }))
        .unwrap();
        assert_eq!(
            resolve(&missing, &ctx, Vars::default()).unwrap_err(),
            "secret \"nope\" not found"
        );
    }
}
