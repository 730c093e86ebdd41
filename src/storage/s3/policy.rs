//! Least-privilege IAM policies for the three roles that touch a
//! repository (docs/IMMUTABILITY.md): the agent adds history and can not
//! take any away, the maintainer applies retention, the operator reads
//! and recovers. Each policy is limited to the repository's prefix.

use serde_json::{Value, json};

/// Who a set of storage credentials is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The server's backups: read, write, extend locks; delete only its own
    /// lock and probe objects.
    Agent,
    /// Retention from a separate host or role: the agent's rights plus
    /// deletes (delete markers, and versions whose lock has expired).
    Maintainer,
    /// Listing, restoring and recovery (`--as-of`, `undelete`): every
    /// version, and the lifecycle rule.
    Operator,
}

/// Writes to the bucket's own settings that no coffer role needs: with
/// them a credential could switch versioning or the lock off.
const BUCKET_ADMIN: &[&str] = &[
    "s3:PutBucketVersioning",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
    "s3:DeleteBucket",
];

/// The keys the agent creates and removes as it works: the writer lock
/// and the capability probe's objects. Nothing history depends on.
const AGENT_DELETES: &[&str] = &["lock", "locks/*", "probe/*"];

/// The IAM policy document for `role` on `bucket`, limited to `prefix`
/// ("" for the whole bucket, else "a/b/").
pub fn iam_policy(role: Role, bucket: &str, prefix: &str) -> Value {
    let objects = format!("arn:aws:s3:::{bucket}/{prefix}*");
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let mut list = vec!["s3:ListBucket"];
    let mut read = vec![
        "s3:GetObject",
        "s3:GetObjectRetention",
        "s3:PutObject",
        "s3:PutObjectRetention",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
    ];
    let mut bucket_read = vec![
        "s3:GetBucketLocation",
        "s3:GetBucketVersioning",
        "s3:GetBucketObjectLockConfiguration",
    ];
    let mut deny = vec!["s3:BypassGovernanceRetention"];
    deny.extend_from_slice(BUCKET_ADMIN);
    let mut statements = Vec::new();
    match role {
        Role::Agent => {
            statements.push(json!({
                "Sid": "CofferAgentOwnLockAndProbe",
                "Effect": "Allow",
                "Action": ["s3:DeleteObject"],
                "Resource": AGENT_DELETES.iter()
                    .map(|k| format!("arn:aws:s3:::{bucket}/{prefix}{k}"))
                    .collect::<Vec<_>>(),
            }));
            deny.extend(["s3:DeleteObjectVersion", "s3:PutLifecycleConfiguration"]);
        }
        Role::Maintainer => {
            list.push("s3:ListBucketVersions");
            read.extend([
                "s3:GetObjectVersion",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
            ]);
            deny.push("s3:PutLifecycleConfiguration");
        }
        Role::Operator => {
            list.push("s3:ListBucketVersions");
            read.extend([
                "s3:GetObjectVersion",
                "s3:GetObjectVersionRetention",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
            ]);
            bucket_read.extend([
                "s3:GetLifecycleConfiguration",
                "s3:PutLifecycleConfiguration",
            ]);
        }
    }
    let listing = if prefix.is_empty() {
        json!({
            "Sid": "CofferList",
            "Effect": "Allow",
            "Action": list,
            "Resource": bucket_arn,
        })
    } else {
        json!({
            "Sid": "CofferListPrefix",
            "Effect": "Allow",
            "Action": list,
            "Resource": bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": [format!("{prefix}*")]}},
        })
    };
    let mut all = vec![
        listing,
        json!({
            "Sid": "CofferBucketSettingsRead",
            "Effect": "Allow",
            "Action": bucket_read,
            "Resource": bucket_arn,
        }),
        json!({
            "Sid": "CofferObjects",
            "Effect": "Allow",
            "Action": read,
            "Resource": objects,
        }),
    ];
    all.append(&mut statements);
    all.push(json!({
        "Sid": "CofferNeverShortenOrUnlock",
        "Effect": "Deny",
        "Action": deny,
        "Resource": [bucket_arn, format!("arn:aws:s3:::{bucket}/*")],
    }));
    if role == Role::Agent {
        // An explicit deny wins over any other policy the user attaches:
        // the agent deletes nothing but its lock and probe objects.
        all.push(json!({
            "Sid": "CofferAgentDeletesNoHistory",
            "Effect": "Deny",
            "Action": ["s3:DeleteObject"],
            "NotResource": AGENT_DELETES.iter()
                .map(|k| format!("arn:aws:s3:::{bucket}/{prefix}{k}"))
                .collect::<Vec<_>>(),
        }));
    }
    json!({"Version": "2012-10-17", "Statement": all})
}

/// The id of the lifecycle rule for a repository at `prefix`.
pub fn lifecycle_id(prefix: &str) -> String {
    let p = prefix.trim_end_matches('/');
    let id = if p.is_empty() {
        "coffer".to_string()
    } else {
        format!("coffer-{p}")
    };
    id.chars().take(255).collect()
}

/// Days a version stays after it stopped being current. Storage removes
/// no version before its lock ends, so this only decides how soon what
/// the locks let go is cleared: the next day.
pub const NONCURRENT_DAYS: i32 = 1;
/// Days before an upload that never completed is aborted.
pub const ABORT_UPLOAD_DAYS: i32 = 7;

/// The bucket lifecycle rule that clears, under `prefix`, the versions
/// retention let go once their lock has ended, the delete markers left
/// alone, and uploads that never completed; as the document for
/// `aws s3api put-bucket-lifecycle-configuration`.
pub fn lifecycle_rule(prefix: &str) -> Value {
    json!({
        "Rules": [{
            "ID": lifecycle_id(prefix),
            "Status": "Enabled",
            "Filter": {"Prefix": prefix},
            "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
            "Expiration": {"ExpiredObjectDeleteMarker": true},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_UPLOAD_DAYS},
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(policy: &Value, effect: &str) -> Vec<String> {
        let mut out = Vec::new();
        for s in policy["Statement"].as_array().unwrap() {
            if s["Effect"] == effect {
                for a in s["Action"].as_array().unwrap() {
                    out.push(a.as_str().unwrap().to_string());
                }
            }
        }
        out
    }

    fn resources(policy: &Value, effect: &str) -> Vec<String> {
        let mut out = Vec::new();
        for s in policy["Statement"].as_array().unwrap() {
            if s["Effect"] == effect {
                match &s["Resource"] {
                    Value::String(r) => out.push(r.clone()),
                    Value::Array(rs) => {
                        out.extend(rs.iter().map(|r| r.as_str().unwrap().to_string()))
                    }
                    _ => {}
                }
            }
        }
        out
    }

    #[test]
    fn the_agent_can_neither_delete_history_nor_shorten_a_lock() {
        let p = iam_policy(Role::Agent, "backups", "web-1/");
        let allowed = actions(&p, "Allow");
        let denied = actions(&p, "Deny");
        for a in ["s3:PutObject", "s3:GetObject", "s3:PutObjectRetention"] {
            assert!(allowed.contains(&a.to_string()), "{a} missing");
        }
        for a in [
            "s3:DeleteObjectVersion",
            "s3:BypassGovernanceRetention",
            "s3:PutBucketVersioning",
            "s3:PutBucketObjectLockConfiguration",
            "s3:PutLifecycleConfiguration",
            "s3:DeleteObject",
        ] {
            assert!(denied.contains(&a.to_string()), "{a} not denied");
            if a != "s3:DeleteObject" {
                assert!(!allowed.contains(&a.to_string()), "{a} allowed");
            }
        }
        // Its only deletes are its lock and probe objects under the prefix.
        let delete_grant = p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Effect"] == "Allow" && s["Action"][0] == "s3:DeleteObject")
            .unwrap();
        let keys: Vec<&str> = delete_grant["Resource"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "arn:aws:s3:::backups/web-1/lock",
                "arn:aws:s3:::backups/web-1/locks/*",
                "arn:aws:s3:::backups/web-1/probe/*"
            ]
        );
    }

    #[test]
    fn every_grant_is_limited_to_the_prefix() {
        for role in [Role::Agent, Role::Maintainer, Role::Operator] {
            let p = iam_policy(role, "backups", "fleet/web-1/");
            for r in resources(&p, "Allow") {
                assert!(
                    r == "arn:aws:s3:::backups"
                        || r.starts_with("arn:aws:s3:::backups/fleet/web-1/"),
                    "{role:?}: {r}"
                );
            }
            let list = &p["Statement"][0];
            assert_eq!(
                list["Condition"]["StringLike"]["s3:prefix"][0],
                "fleet/web-1/*"
            );
        }
    }

    #[test]
    fn no_role_may_bypass_governance_or_change_the_bucket_lock() {
        for role in [Role::Agent, Role::Maintainer, Role::Operator] {
            let p = iam_policy(role, "b-1", "");
            let allowed = actions(&p, "Allow");
            let denied = actions(&p, "Deny");
            for a in [
                "s3:BypassGovernanceRetention",
                "s3:PutBucketObjectLockConfiguration",
                "s3:PutBucketVersioning",
            ] {
                assert!(denied.contains(&a.to_string()), "{role:?}: {a}");
                assert!(!allowed.contains(&a.to_string()), "{role:?}: {a}");
            }
        }
    }

    #[test]
    fn the_lifecycle_rule_is_limited_to_the_prefix_and_named_after_it() {
        let r = lifecycle_rule("fleet/web-1/");
        let rule = &r["Rules"][0];
        assert_eq!(rule["ID"], "coffer-fleet/web-1");
        assert_eq!(rule["Filter"]["Prefix"], "fleet/web-1/");
        assert_eq!(rule["NoncurrentVersionExpiration"]["NoncurrentDays"], 1);
        assert_eq!(lifecycle_id(""), "coffer");
    }

    #[test]
    fn the_maintainer_deletes_versions_and_the_operator_reads_them() {
        let m = actions(&iam_policy(Role::Maintainer, "b-1", ""), "Allow");
        assert!(m.contains(&"s3:DeleteObjectVersion".to_string()));
        assert!(m.contains(&"s3:ListBucketVersions".to_string()));
        let o = actions(&iam_policy(Role::Operator, "b-1", ""), "Allow");
        assert!(o.contains(&"s3:GetObjectVersion".to_string()));
        assert!(o.contains(&"s3:PutLifecycleConfiguration".to_string()));
    }
}
