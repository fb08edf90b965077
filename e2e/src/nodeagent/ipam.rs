//! Loopback addresses for Pods: `127.0.S.N` from the agent's `/24`, the same `N` again for a Pod
//! of the same namespace/name (so its DNS names keep resolving to the same address), remembered in
//! `<state>/ips.json` across agent restarts.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The first host number handed to Pods (`.1` is the node's own address).
const FIRST_HOST: u8 = 2;
/// The last host number handed to Pods.
const LAST_HOST: u8 = 254;

/// Stable address assignments by `namespace/name`.
#[derive(Debug)]
pub(super) struct Ipam {
    subnet: u8,
    path: PathBuf,
    by_key: BTreeMap<String, u8>,
}

impl Ipam {
    /// Loads the assignments from `path` (an unreadable or missing file starts empty).
    pub(super) fn load(path: PathBuf, subnet: u8) -> Ipam {
        let by_key = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<BTreeMap<String, u8>>(&bytes).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, host)| (FIRST_HOST..=LAST_HOST).contains(host))
            .collect();
        Ipam {
            subnet,
            path,
            by_key,
        }
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.subnet, host)
    }

    /// The address assigned to `key`, if any.
    pub(super) fn get(&self, key: &str) -> Option<Ipv4Addr> {
        self.by_key.get(key).map(|&h| self.ip(h))
    }

    /// The address of `key`: its earlier one, else a never-used one, else one whose owner is not
    /// `busy` (running now). Persists a new assignment.
    pub(super) fn allocate(
        &mut self,
        key: &str,
        busy: impl Fn(&str) -> bool,
    ) -> Result<Ipv4Addr, String> {
        if let Some(ip) = self.get(key) {
            return Ok(ip);
        }
        let used: std::collections::BTreeSet<u8> = self.by_key.values().copied().collect();
        let host = match (FIRST_HOST..=LAST_HOST).find(|h| !used.contains(h)) {
            Some(h) => h,
            None => {
                let (old_key, host) = self
                    .by_key
                    .iter()
                    .find(|(k, _)| !busy(k))
                    .map(|(k, &h)| (k.clone(), h))
                    .ok_or_else(|| {
                        format!(
                            "every address of 127.0.{}.0/24 is taken by a running Pod",
                            self.subnet
                        )
                    })?;
                self.by_key.remove(&old_key);
                host
            }
        };
        self.by_key.insert(key.to_string(), host);
        if let Ok(json) = serde_json::to_vec_pretty(&self.by_key) {
            let tmp = self.path.with_extension("json.tmp");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, &self.path);
            }
        }
        Ok(self.ip(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_the_same_address_to_the_same_name_even_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ips.json");
        let mut ipam = Ipam::load(path.clone(), 150);
        let a = ipam.allocate("ns/a", |_| true).unwrap();
        let b = ipam.allocate("ns/b", |_| true).unwrap();
        assert_eq!(a, Ipv4Addr::new(127, 0, 150, 2));
        assert_eq!(b, Ipv4Addr::new(127, 0, 150, 3));
        assert_eq!(ipam.allocate("ns/a", |_| true).unwrap(), a);
        let mut again = Ipam::load(path, 150);
        assert_eq!(again.allocate("ns/b", |_| true).unwrap(), b);
        assert_eq!(
            again.allocate("ns/c", |_| true).unwrap(),
            Ipv4Addr::new(127, 0, 150, 4)
        );
    }

    #[test]
    fn reuses_an_idle_address_only_when_the_subnet_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::load(dir.path().join("ips.json"), 150);
        for i in FIRST_HOST..=LAST_HOST {
            ipam.allocate(&format!("ns/p{i}"), |_| true).unwrap();
        }
        assert!(ipam.allocate("ns/new", |_| true).is_err());
        let ip = ipam.allocate("ns/new", |k| k != "ns/p7").unwrap();
        assert_eq!(ip, Ipv4Addr::new(127, 0, 150, 7));
        assert_eq!(ipam.get("ns/p7"), None);
    }
}
