//! Pure: when the next backup is due and which artifacts retention removes. Time comes in as a
//! parameter; nothing here reads the clock.

use std::str::FromStr;

use croner::Cron;
use jiff::{SignedDuration, Timestamp, tz::TimeZone};

/// A parsed five-field cron schedule, evaluated in UTC.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    text: String,
}

/// A schedule that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "spec.schedule {text:?} is not a five-field cron expression (minute hour day-of-month month day-of-week): {message}"
)]
pub struct ScheduleError {
    /// The schedule as given.
    pub text: String,
    /// What is wrong.
    pub message: String,
}

impl Schedule {
    /// Parses `text` (five fields, UTC).
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let err = |message: String| ScheduleError {
            text: text.into(),
            message,
        };
        let fields = text.split_whitespace().count();
        if fields != 5 {
            return Err(err(format!("it has {fields} fields")));
        }
        let cron = Cron::from_str(text).map_err(|e| err(e.to_string()))?;
        Ok(Schedule {
            cron,
            text: text.into(),
        })
    }

    /// The schedule as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(TimeZone::UTC);
        self.cron
            .find_next_occurrence(&zoned, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The last tick at or before `t`.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(TimeZone::UTC);
        self.cron
            .find_previous_occurrence(&zoned, true)
            .ok()
            .map(|z| z.timestamp())
    }
}

/// What the schedule asks for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// A tick that has passed without a backup: take one backup for it (only the latest missed
    /// tick, never one per missed tick).
    pub run: Option<Timestamp>,
    /// The next tick after now.
    pub next: Option<Timestamp>,
}

/// The backup due at `now` for a schedule whose last backup was started for the tick
/// `last_scheduled` (or, before any, for a resource created at `created`). Missed ticks (the
/// operator was down, the schedule was suspended) give one backup, for the latest of them.
pub fn due(
    schedule: &Schedule,
    last_scheduled: Option<Timestamp>,
    created: Timestamp,
    now: Timestamp,
) -> Due {
    let since = last_scheduled.unwrap_or(created);
    let latest = schedule.last_at_or_before(now).filter(|t| *t > since);
    Due {
        run: latest,
        next: schedule.next_after(now),
    }
}

/// One artifact as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// Artifact id.
    pub id: String,
    /// Ready (complete), failed, or still running.
    pub state: KeptState,
    /// When it started.
    pub started_at: Timestamp,
}

/// The state of an artifact, for retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeptState {
    /// Complete and verified.
    Ready,
    /// Failed.
    Error,
    /// In progress: never removed by retention.
    Running,
}

/// How many failed artifacts stay listed so failures remain visible.
pub const KEEP_FAILED: usize = 3;

/// The ids retention removes: Ready artifacts beyond the newest `keep_last`, and those older
/// than `max_age`, but never the newest Ready one; failed artifacts beyond the newest
/// [`KEEP_FAILED`] or older than `max_age`; never one still running.
pub fn expired(
    artifacts: &[Kept],
    keep_last: Option<u32>,
    max_age: Option<SignedDuration>,
    now: Timestamp,
) -> Vec<String> {
    let too_old = |a: &Kept| max_age.is_some_and(|age| now.duration_since(a.started_at) > age);
    let newest_first = |state: KeptState| {
        let mut v: Vec<&Kept> = artifacts.iter().filter(|a| a.state == state).collect();
        v.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
        v
    };
    let mut out = Vec::new();
    for (i, a) in newest_first(KeptState::Ready).into_iter().enumerate() {
        let beyond = keep_last.is_some_and(|k| i >= k as usize);
        if i > 0 && (beyond || too_old(a)) {
            out.push(a.id.clone());
        }
    }
    for (i, a) in newest_first(KeptState::Error).into_iter().enumerate() {
        if i >= KEEP_FAILED || too_old(a) {
            out.push(a.id.clone());
        }
    }
    out
}

/// Parses a retention age such as `168h`, `90m` or `1h30m` (the CRD's rule: units ms, s, m, h).
pub fn parse_age(text: &str) -> Option<SignedDuration> {
    let mut total = SignedDuration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (SignedDuration::from_millis(n), 2)
        } else if rest.starts_with('s') {
            (SignedDuration::from_secs(n), 1)
        } else if rest.starts_with('m') {
            (SignedDuration::from_mins(n), 1)
        } else if rest.starts_with('h') {
            (SignedDuration::from_hours(n), 1)
        } else {
            return None;
        };
        total = total.checked_add(unit)?;
        rest = &rest[len..];
    }
    (total > SignedDuration::ZERO).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn every_minute() -> Schedule {
        Schedule::parse("* * * * *").unwrap()
    }

    #[test]
    fn refuses_schedules_that_are_not_five_fields() {
        assert!(Schedule::parse("0 */6 * * *").is_ok());
        let e = Schedule::parse("0 0 */6 * * *").unwrap_err();
        assert!(e.to_string().contains("spec.schedule"), "{e}");
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("every hour").is_err());
    }

    #[test]
    fn nothing_is_due_before_the_first_tick_after_creation() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let d = due(
            &s,
            None,
            t("2026-12-01T10:05:00Z"),
            t("2026-12-01T10:59:00Z"),
        );
        assert_eq!(d.run, None);
        assert_eq!(d.next, Some(t("2026-12-01T11:00:00Z")));
    }

    #[test]
    fn a_passed_tick_is_due_once() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let created = t("2026-12-01T10:05:00Z");
        let d = due(&s, None, created, t("2026-12-01T11:00:30Z"));
        assert_eq!(d.run, Some(t("2026-12-01T11:00:00Z")));
        let after = due(&s, d.run, created, t("2026-12-01T11:01:00Z"));
        assert_eq!(after.run, None, "the same tick is not taken twice");
    }

    #[test]
    fn missed_ticks_give_one_backup_for_the_latest_not_a_burst() {
        let s = every_minute();
        let last = t("2026-12-01T10:00:00Z");
        let d = due(&s, Some(last), last, t("2026-12-01T12:30:10Z"));
        assert_eq!(d.run, Some(t("2026-12-01T12:30:00Z")));
        assert_eq!(d.next, Some(t("2026-12-01T12:31:00Z")));
        let again = due(&s, d.run, last, t("2026-12-01T12:30:50Z"));
        assert_eq!(again.run, None);
    }

    fn kept(id: &str, state: KeptState, at: &str) -> Kept {
        Kept {
            id: id.into(),
            state,
            started_at: t(at),
        }
    }

    #[test]
    fn keep_last_removes_the_oldest_ready_artifacts() {
        let a = vec![
            kept("a", KeptState::Ready, "2026-12-01T10:00:00Z"),
            kept("b", KeptState::Ready, "2026-12-01T10:01:00Z"),
            kept("c", KeptState::Ready, "2026-12-01T10:02:00Z"),
            kept("d", KeptState::Running, "2026-12-01T09:00:00Z"),
        ];
        let gone = expired(&a, Some(2), None, t("2026-12-01T10:03:00Z"));
        assert_eq!(gone, vec!["a".to_string()]);
    }

    #[test]
    fn max_age_never_removes_the_newest_ready_artifact() {
        let a = vec![
            kept("a", KeptState::Ready, "2026-11-01T10:00:00Z"),
            kept("b", KeptState::Ready, "2026-11-02T10:00:00Z"),
        ];
        let gone = expired(
            &a,
            None,
            Some(SignedDuration::from_hours(24)),
            t("2026-12-01T10:03:00Z"),
        );
        assert_eq!(gone, vec!["a".to_string()]);
    }

    #[test]
    fn failed_artifacts_stay_visible_but_bounded() {
        let mut a: Vec<Kept> = (0..5)
            .map(|i| {
                kept(
                    &format!("e{i}"),
                    KeptState::Error,
                    &format!("2026-12-01T10:0{i}:00Z"),
                )
            })
            .collect();
        a.push(kept("r", KeptState::Running, "2026-12-01T08:00:00Z"));
        let mut gone = expired(&a, Some(1), None, t("2026-12-01T11:00:00Z"));
        gone.sort();
        assert_eq!(gone, vec!["e0".to_string(), "e1".to_string()]);
    }

    #[test]
    fn ages_parse_like_the_crd_rule() {
        assert_eq!(parse_age("168h"), Some(SignedDuration::from_hours(168)));
        assert_eq!(parse_age("1h30m"), Some(SignedDuration::from_mins(90)));
        assert_eq!(parse_age("500ms"), Some(SignedDuration::from_millis(500)));
        assert_eq!(parse_age("0s"), None);
        assert_eq!(parse_age("1d"), None);
        assert_eq!(parse_age(""), None);
    }
}
