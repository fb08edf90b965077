//! ZooKeeper versions with known vulnerabilities: quorate refuses to run them unless the spec
//! names each one it accepts (`spec.acceptVulnerabilities`). One table ([`KNOWN`]) is the
//! source of both checks: the CRD's CEL rules refuse such a spec at `kubectl apply`
//! ([`admission_rule`]), and the planner's spec check refuses it too
//! ([`unaccepted`]), for an object admitted before the rule existed.
//!
//! A version is compared as `minor * 1000 + patch` within ZooKeeper 3.x (`spec.version` must
//! look like `3.X.Y`).

use kube::core::{Message, Rule};

/// One known vulnerability of ZooKeeper servers.
#[derive(Debug, PartialEq, Eq)]
pub struct Vulnerability {
    /// The CVE id.
    pub id: &'static str,
    /// Its severity, as published.
    pub severity: &'static str,
    /// What it is, in a few words.
    pub what: &'static str,
    /// The affected versions: inclusive ranges of [`key`]s.
    pub affected: &'static [(u32, u32)],
    /// The versions that fix it.
    pub fixed_in: &'static str,
}

/// The known vulnerabilities quorate refuses to run without consent.
pub const KNOWN: &[Vulnerability] = &[
    Vulnerability {
        id: "CVE-2023-44981",
        severity: "critical",
        what: "SASL quorum peer authentication bypass: any endpoint can join the ensemble",
        affected: &[(0, 7_001), (8_000, 8_002), (9_000, 9_000)],
        fixed_in: "3.7.2, 3.8.3, 3.9.1",
    },
    Vulnerability {
        id: "CVE-2024-51504",
        severity: "high",
        what: "AdminServer authentication bypass with IP-based authentication",
        affected: &[(9_000, 9_002)],
        fixed_in: "3.9.3",
    },
    Vulnerability {
        id: "CVE-2025-58457",
        severity: "moderate",
        what: "insufficient permission check in the AdminServer snapshot and restore commands",
        affected: &[(9_000, 9_003)],
        fixed_in: "3.9.4",
    },
    Vulnerability {
        id: "CVE-2026-24281",
        severity: "high",
        what: "TLS hostname verification falls back to reverse DNS",
        affected: &[(8_000, 8_005), (9_000, 9_004)],
        fixed_in: "3.8.6, 3.9.5",
    },
];

/// `minor * 1000 + patch` of a `3.X.Y` version.
pub fn key(version: &str) -> Option<u32> {
    let mut parts = version.split('.');
    let (major, minor, patch) = (parts.next()?, parts.next()?, parts.next()?);
    if major != "3" || parts.next().is_some() {
        return None;
    }
    let (minor, patch): (u32, u32) = (minor.parse().ok()?, patch.parse().ok()?);
    (patch < 1000).then_some(minor * 1000 + patch)
}

/// The known vulnerabilities of `version`.
pub fn affecting(version: &str) -> Vec<&'static Vulnerability> {
    let Some(k) = key(version) else {
        return vec![];
    };
    KNOWN
        .iter()
        .filter(|v| v.affected.iter().any(|(lo, hi)| (*lo..=*hi).contains(&k)))
        .collect()
}

/// The known vulnerabilities of `version` that `accepted` does not name.
pub fn unaccepted(version: &str, accepted: &[String]) -> Vec<&'static Vulnerability> {
    affecting(version)
        .into_iter()
        .filter(|v| !accepted.iter().any(|a| a == v.id))
        .collect()
}

/// What is wrong with running `version` without accepting `open`, in words naming the fields.
pub fn refusal(version: &str, open: &[&Vulnerability]) -> String {
    let list: Vec<String> = open
        .iter()
        .map(|v| {
            format!(
                "{} ({}, {}; fixed in {})",
                v.id, v.severity, v.what, v.fixed_in
            )
        })
        .collect();
    let ids: Vec<&str> = open.iter().map(|v| v.id).collect();
    format!(
        "ZooKeeper {version} has known vulnerabilities: {}. Use a fixed version, or accept the risk by listing {} in spec.acceptVulnerabilities",
        list.join("; "),
        ids.join(", ")
    )
}

/// The CEL rule (on the MasterEnsemble spec) that refuses the `index`th of [`KNOWN`] unless
/// `spec.acceptVulnerabilities` names it. An index past the table gives a rule that always
/// holds.
pub fn admission_rule(index: usize) -> Rule {
    let Some(v) = KNOWN.get(index) else {
        return Rule::new("true");
    };
    let k = "(int(self.version.split('.')[1]) * 1000 + int(self.version.split('.')[2]))";
    let ranges: Vec<String> = v
        .affected
        .iter()
        .map(|(lo, hi)| format!("({k} >= {lo} && {k} <= {hi})"))
        .collect();
    Rule::new(format!(
        "!has(self.version) || !self.version.matches('^3\\\\.[0-9]+\\\\.[0-9]+$') || !({}) || (has(self.acceptVulnerabilities) && '{}' in self.acceptVulnerabilities)",
        ranges.join(" || "),
        v.id
    ))
    .message(Message::Message(format!(
        "spec.version is affected by {} ({}, {}; fixed in {}): use a fixed version, or list {} in spec.acceptVulnerabilities to accept the risk",
        v.id, v.severity, v.what, v.fixed_in, v.id
    )))
}

#[cfg(test)]
mod tests {
    //! Unit tier.
    use super::*;

    #[test]
    fn the_tested_versions_are_clean_and_older_ones_are_named() {
        assert!(affecting("3.9.5").is_empty());
        assert!(affecting("3.8.6").is_empty());
        assert!(affecting("3.10.0").is_empty());
        let ids = |v: &str| affecting(v).iter().map(|v| v.id).collect::<Vec<_>>();
        assert_eq!(ids("3.9.4"), ["CVE-2026-24281"]);
        assert_eq!(
            ids("3.9.0"),
            [
                "CVE-2023-44981",
                "CVE-2024-51504",
                "CVE-2025-58457",
                "CVE-2026-24281"
            ]
        );
        assert_eq!(ids("3.8.2"), ["CVE-2023-44981", "CVE-2026-24281"]);
        assert_eq!(ids("3.7.1"), ["CVE-2023-44981"]);
        assert!(affecting("3.7.2").is_empty());
        assert!(affecting("not a version").is_empty());
        assert_eq!(
            unaccepted("3.8.2", &["CVE-2026-24281".into()])
                .iter()
                .map(|v| v.id)
                .collect::<Vec<_>>(),
            ["CVE-2023-44981"]
        );
        let why = refusal("3.9.4", &affecting("3.9.4"));
        assert!(
            why.contains("CVE-2026-24281") && why.contains("spec.acceptVulnerabilities"),
            "{why}"
        );
    }

    #[test]
    fn every_known_vulnerability_has_an_admission_rule() {
        for (i, v) in KNOWN.iter().enumerate() {
            let rule = admission_rule(i);
            assert!(rule.rule.contains(v.id), "{}", rule.rule);
        }
        assert_eq!(admission_rule(KNOWN.len()).rule, "true");
    }

    /// The CRD names one `admission_rule(i)` per entry by hand: a vulnerability added to the
    /// table without its attribute on the spec would be checked by the planner only.
    #[test]
    fn the_crd_carries_the_rule_of_every_known_vulnerability() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&crate::crd::MasterEnsemble::crd()).expect("crd");
        for (i, v) in KNOWN.iter().enumerate() {
            let rule = serde_json::to_string(&admission_rule(i).rule).expect("rule");
            assert!(
                crd.contains(rule.trim_matches('"')),
                "the MasterEnsemble CRD lacks the rule for {}",
                v.id
            );
        }
    }
}

#[cfg(test)]
mod spec_tests {
    //! Unit tier: the planner's spec check refuses what admission would.
    use crate::crd::MasterEnsembleSpec;
    use crate::planner::Desired;

    #[test]
    fn the_planner_refuses_an_unaccepted_vulnerable_version_naming_the_field() {
        let spec = |version: &str, accept: &[&str]| -> MasterEnsembleSpec {
            serde_json::from_value(serde_json::json!({
                "replicas": 3, "version": version, "acceptVulnerabilities": accept,
            }))
            .expect("spec")
        };
        let err = Desired::try_from(&spec("3.9.4", &[])).expect_err("3.9.4 refused");
        let text = err.to_string();
        assert!(
            text.contains("spec.version") && text.contains("CVE-2026-24281"),
            "{text}"
        );
        assert!(Desired::try_from(&spec("3.9.4", &["CVE-2026-24281"])).is_ok());
        assert!(Desired::try_from(&spec("3.9.5", &[])).is_ok());
    }
}
