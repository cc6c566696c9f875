//! Which package versions the retention policies let go, and why: a pure decision over the views' rows.

use artifactstore_views::queries::Version;
use artifactstore_views::PolicyRow;
use chrono::{DateTime, Duration, Utc};

/// A version a policy lets go: the policy's name and its rule, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) policy: String,
    pub(crate) rule: String,
}

/// The policy that governs `name`: the one whose prefix is the longest prefix of it.
pub(crate) fn governing<'p>(policies: &'p [PolicyRow], name: &str) -> Option<&'p PolicyRow> {
    policies.iter().filter(|p| name.starts_with(p.prefix.as_str())).max_by_key(|p| p.prefix.len())
}

/// Whether `version`, one of its package's versions `newer` (how many versions of the package were created after
/// it), expires under `policies` at `now`, and by which rule.
///
/// A version is kept while any of these holds: a hold is set; its `until` is in the future; it is among its
/// package's `keep_last` newest; it was created less than `keep_days` days ago. A name no policy governs, and a
/// policy with neither rule, keep everything.
pub(crate) fn verdict(policies: &[PolicyRow], version: &Version, newer: usize, now: DateTime<Utc>) -> Option<Verdict> {
    let policy = governing(policies, &version.package.name)?;
    if policy.keep_last.is_none() && policy.keep_days.is_none() {
        return None;
    }
    let retention = &version.retention;
    if retention.hold || retention.until.is_some_and(|until| until > now) {
        return None;
    }
    let mut rule = Vec::new();
    if let Some(keep_last) = policy.keep_last {
        if i64::try_from(newer).unwrap_or(i64::MAX) < keep_last {
            return None;
        }
        rule.push(format!("not among the {keep_last} newest"));
    }
    if let Some(keep_days) = policy.keep_days {
        if version.package.created_at > now - Duration::days(keep_days) {
            return None;
        }
        rule.push(format!("older than {keep_days} days"));
    }
    Some(Verdict { policy: policy.name.clone(), rule: rule.join("; ") })
}

/// The versions `policies` let go at `now` among `ranked` (each with how many versions of its package are newer;
/// any order, no version twice), with their verdicts, oldest of each package first.
pub(crate) fn expiring_ranked(
    policies: &[PolicyRow],
    ranked: Vec<(Version, usize)>,
    now: DateTime<Utc>,
) -> Vec<(Version, Verdict)> {
    let mut out: Vec<(Version, Verdict)> = ranked
        .into_iter()
        .filter_map(|(version, newer)| self::verdict(policies, &version, newer, now).map(|v| (version, v)))
        .collect();
    out.sort_by(|(a, _), (b, _)| {
        (a.package.name.as_str(), a.package.created_sequence)
            .cmp(&(b.package.name.as_str(), b.package.created_sequence))
    });
    out
}

#[cfg(test)]
mod tests {
    use artifactstore_views::{PackageRow, RetentionRow};
    use uuid::Uuid;

    use super::*;

    /// `expiring_ranked` over every version of each package, ranked here as the database ranks them.
    fn expiring(policies: &[PolicyRow], mut versions: Vec<Version>, now: DateTime<Utc>) -> Vec<(Version, Verdict)> {
        // Newest first within each package, so a version's index among its package's is how many are newer.
        versions.sort_by(|a, b| {
            (a.package.name.as_str(), std::cmp::Reverse(a.package.created_sequence))
                .cmp(&(b.package.name.as_str(), std::cmp::Reverse(b.package.created_sequence)))
        });
        let mut ranked = Vec::with_capacity(versions.len());
        let mut newer = 0;
        for (i, version) in versions.iter().enumerate() {
            newer = if i > 0 && versions[i - 1].package.name == version.package.name { newer + 1 } else { 0 };
            ranked.push((version.clone(), newer));
        }
        expiring_ranked(policies, ranked, now)
    }

    fn policy(name: &str, prefix: &str, keep_last: Option<i64>, keep_days: Option<i64>) -> PolicyRow {
        PolicyRow { name: name.into(), prefix: prefix.into(), keep_last, keep_days, sequence: 1 }
    }

    /// Version `v` of `name`, created `age_days` days before `now()` at sequence `seq`.
    fn version(name: &str, v: &str, seq: i64, age_days: i64) -> Version {
        let package_id = Uuid::now_v7();
        Version {
            package: PackageRow {
                package_id,
                name: name.into(),
                version: v.into(),
                metadata: Vec::new(),
                created_by: "t".into(),
                created_at: now() - Duration::days(age_days),
                created_sequence: seq,
                sequence: seq,
            },
            retention: RetentionRow::initial(package_id, seq),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn expired(policies: &[PolicyRow], versions: Vec<Version>) -> Vec<(String, String, String)> {
        expiring(policies, versions, now())
            .into_iter()
            .map(|(v, verdict)| (format!("{}@{}", v.package.name, v.package.version), verdict.policy, verdict.rule))
            .collect()
    }

    fn releases(name: &str, count: i64) -> Vec<Version> {
        (1..=count).map(|i| version(name, &format!("1.{i}"), i, 100 - i)).collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_by_creation_order() {
        let policies = [policy("five", "app/", Some(2), None)];
        let got = expired(&policies, releases("app/web", 4));
        let rule = "not among the 2 newest".to_owned();
        assert_eq!(
            got,
            [("app/web@1.1".into(), "five".into(), rule.clone()), ("app/web@1.2".into(), "five".into(), rule.clone())]
        );
    }

    #[test]
    fn keep_days_keeps_the_recent_and_both_rules_must_let_go() {
        let versions = vec![version("a/x", "old", 1, 40), version("a/x", "new", 2, 10), version("a/x", "older", 0, 50)];
        let by_age = [policy("month", "a/", None, Some(30))];
        let got: Vec<String> = expired(&by_age, versions.clone()).into_iter().map(|(v, _, _)| v).collect();
        assert_eq!(got, ["a/x@older", "a/x@old"]);

        // Both rules: a version goes only when neither keeps it.
        let both = [policy("both", "a/", Some(2), Some(30))];
        let got = expired(&both, versions);
        assert_eq!(got, [("a/x@older".into(), "both".into(), "not among the 2 newest; older than 30 days".into())]);
    }

    #[test]
    fn holds_and_a_future_until_always_win() {
        let mut versions = releases("p/q", 3);
        versions[0].retention.hold = true;
        versions[1].retention.until = Some(now() + Duration::days(1));
        let policies = [policy("none", "p/", Some(0), None)];
        let got: Vec<String> = expired(&policies, versions.clone()).into_iter().map(|(v, _, _)| v).collect();
        assert_eq!(got, ["p/q@1.3"]);
        // A past `until` keeps nothing.
        versions[1].retention.until = Some(now() - Duration::days(1));
        let got: Vec<String> = expired(&policies, versions).into_iter().map(|(v, _, _)| v).collect();
        assert_eq!(got, ["p/q@1.2", "p/q@1.3"]);
    }

    #[test]
    fn the_longest_prefix_governs_and_unmatched_names_are_kept() {
        let policies = [
            policy("all", "", Some(1), None),
            policy("team", "team/", Some(3), None),
            policy("keep", "team/keep/", None, None),
        ];
        let mut versions = releases("team/app", 4);
        versions.extend(releases("team/keep/x", 4));
        versions.extend(releases("other", 2));
        let got = expired(&policies, versions);
        assert_eq!(
            got,
            [
                ("other@1.1".into(), "all".into(), "not among the 1 newest".into()),
                ("team/app@1.1".into(), "team".into(), "not among the 3 newest".into()),
            ]
        );
        assert_eq!(expired(&policies[1..], releases("elsewhere", 5)), []);
    }
}
