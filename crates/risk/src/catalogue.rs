//! The catalogue of sensitive operations: those that change permissions,
//! create credentials, disable logging or read secrets.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use stepgate_core::SignalKind;

/// Category of a sensitive operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    PermissionChange,
    CredentialCreation,
    LoggingChange,
    SecretRead,
}

impl Category {
    pub fn signal(self) -> SignalKind {
        match self {
            Category::PermissionChange => SignalKind::PermissionChange,
            Category::CredentialCreation => SignalKind::CredentialCreation,
            Category::LoggingChange => SignalKind::LoggingChange,
            Category::SecretRead => SignalKind::SecretRead,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Category::PermissionChange => "changes permissions",
            Category::CredentialCreation => "creates credentials",
            Category::LoggingChange => "disables or changes logging",
            Category::SecretRead => "reads secrets",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.signal().name())
    }
}

/// One `[[risk.sensitive]]` table: operation patterns and their category.
/// A pattern is matched against the whole operation, ignoring case; `*`
/// matches any run of characters. HTTP operations read `METHOD /route`,
/// cloud operations `service:EventName`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensitiveOperations {
    pub category: Category,
    pub operations: Vec<String>,
}

/// Built-in patterns, used unless `risk.sensitive_defaults` is false.
const DEFAULTS: &[(Category, &[&str])] = &[
    (
        Category::PermissionChange,
        &[
            // HTTP APIs.
            "POST */roles*",
            "PUT */roles*",
            "PATCH */roles*",
            "DELETE */roles*",
            "POST */permissions*",
            "PUT */permissions*",
            "PATCH */permissions*",
            "DELETE */permissions*",
            "POST */policies*",
            "PUT */policies*",
            "PATCH */policies*",
            "PUT */acl*",
            "POST */members*",
            "PUT */members*",
            "POST */collaborators*",
            "PUT */collaborators*",
            // AWS.
            "iam:Attach*Policy",
            "iam:Put*Policy",
            "iam:CreatePolicyVersion",
            "iam:SetDefaultPolicyVersion",
            "iam:AddUserToGroup",
            "iam:UpdateAssumeRolePolicy",
            "iam:CreateUser",
            "iam:CreateRole",
            "iam:Delete*PermissionsBoundary",
            "iam:PassRole",
            "s3:PutBucketPolicy",
            "s3:PutBucketAcl",
            "s3:PutObjectAcl",
            "s3:PutBucketPublicAccessBlock",
            "s3:DeleteBucketPublicAccessBlock",
            "kms:PutKeyPolicy",
            "kms:CreateGrant",
            "ec2:ModifySnapshotAttribute",
            "ec2:ModifyImageAttribute",
            "ec2:AuthorizeSecurityGroupIngress",
            "lambda:AddPermission*",
            "secretsmanager:PutResourcePolicy",
            "sts:AssumeRole",
            "organizations:LeaveOrganization",
            "sso:AttachManagedPolicyToPermissionSet",
            "sso:CreateAccountAssignment",
            "iam:Delete*Policy",
            "iam:CreateSAMLProvider",
            "iam:UpdateSAMLProvider",
            "iam:DeleteSAMLProvider",
            "iam:CreateOpenIDConnectProvider",
            "rds:ModifyDBInstance",
            "rds:ModifyDBCluster",
            "rds:ModifyDBSnapshotAttribute",
            "rds:AuthorizeDBSecurityGroupIngress",
            "ecr:SetRepositoryPolicy",
            "codebuild:UpdateProjectVisibility",
            "ec2:CreateNetworkAclEntry",
        ],
    ),
    (
        Category::CredentialCreation,
        &[
            "POST */tokens*",
            "POST */api-keys*",
            "POST */apikeys*",
            "POST */access-keys*",
            "POST */keys",
            "POST */credentials*",
            "POST */service-accounts/*/keys*",
            "iam:CreateAccessKey",
            "iam:CreateLoginProfile",
            "iam:UpdateLoginProfile",
            "iam:CreateServiceSpecificCredential",
            "iam:UploadSSHPublicKey",
            "iam:UploadSigningCertificate",
            "iam:CreateVirtualMFADevice",
            "iam:DeactivateMFADevice",
            "iam:ChangePassword",
            "sts:GetSessionToken",
            "sts:GetFederationToken",
            "signin:GetSigninToken",
            "ec2:CreateKeyPair",
            "ec2:ImportKeyPair",
            "ec2-instance-connect:SendSSHPublicKey",
            "ssm:StartSession",
        ],
    ),
    (
        Category::LoggingChange,
        &[
            "DELETE */audit*",
            "PUT */audit*",
            "PATCH */audit*",
            "DELETE */logging*",
            "PUT */logging*",
            "PATCH */logging*",
            "DELETE */webhooks*",
            "cloudtrail:StopLogging",
            "cloudtrail:DeleteTrail",
            "cloudtrail:UpdateTrail",
            "cloudtrail:PutEventSelectors",
            "cloudtrail:DeleteEventDataStore",
            "guardduty:DeleteDetector",
            "guardduty:UpdateDetector",
            "guardduty:DisassociateFromMasterAccount",
            "guardduty:DeleteMembers",
            "guardduty:CreateIPSet",
            "config:StopConfigurationRecorder",
            "config:DeleteConfigurationRecorder",
            "config:DeleteDeliveryChannel",
            "logs:DeleteLogGroup",
            "logs:DeleteLogStream",
            "s3:PutBucketLogging",
            "s3:PutBucketLifecycle*",
            "securityhub:DisableSecurityHub",
            "securityhub:BatchUpdateFindings",
            "securityhub:UpdateFindings",
            "securityhub:DeleteInsight",
            "config:PutDeliveryChannel",
            "s3:PutBucketVersioning",
            "ec2:DeleteFlowLogs",
            "access-analyzer:DeleteAnalyzer",
            "wafv2:DeleteLoggingConfiguration",
            "macie2:DisableMacie",
            "detective:DeleteGraph",
        ],
    ),
    (
        Category::SecretRead,
        &[
            "GET */secrets*",
            "GET */credentials*",
            "GET */vault/*",
            "secretsmanager:GetSecretValue",
            "secretsmanager:BatchGetSecretValue",
            "ssm:GetParameter",
            "ssm:GetParameters",
            "ssm:GetParametersByPath",
            "kms:Decrypt",
            "ec2:GetPasswordData",
            "ec2:DescribeInstanceAttribute",
            "lambda:GetFunctionConfiguration",
            "iam:GetAccountAuthorizationDetails",
            "codecommit:GetRepository",
        ],
    ),
];

/// Most operations whose category is remembered; past this the memo is
/// cleared, so operations with ever new names cannot grow memory.
const MEMO_LIMIT: usize = 8192;

/// The compiled catalogue. Lookups are remembered per operation, because an
/// identity repeats a small set of operations.
#[derive(Debug)]
pub struct Catalogue {
    exact: HashMap<String, Category>,
    patterns: Vec<(Vec<String>, Category)>,
    memo: RwLock<HashMap<String, Option<Category>>>,
}

impl Catalogue {
    /// Builds the catalogue from the built-in patterns (when `defaults` is
    /// true) and the configured tables; configured tables come first.
    pub fn new(defaults: bool, configured: &[SensitiveOperations]) -> Self {
        let mut exact = HashMap::new();
        let mut patterns = Vec::new();
        let builtin = DEFAULTS
            .iter()
            .filter(|_| defaults)
            .flat_map(|(category, ops)| ops.iter().map(move |op| (*category, (*op).to_owned())));
        let configured = configured.iter().flat_map(|table| {
            table
                .operations
                .iter()
                .map(move |op| (table.category, op.clone()))
        });
        for (category, pattern) in configured.chain(builtin) {
            let lower = pattern.to_ascii_lowercase();
            if lower.contains('*') {
                patterns.push((lower.split('*').map(str::to_owned).collect(), category));
            } else {
                exact.entry(lower).or_insert(category);
            }
        }
        Self {
            exact,
            patterns,
            memo: RwLock::new(HashMap::new()),
        }
    }

    /// Looks up the category of `operation`, if the catalogue lists it.
    pub fn category(&self, operation: &str) -> Option<Category> {
        if let Ok(memo) = self.memo.read()
            && let Some(category) = memo.get(operation)
        {
            return *category;
        }
        let category = self.lookup(operation);
        if let Ok(mut memo) = self.memo.write() {
            if memo.len() >= MEMO_LIMIT {
                memo.clear();
            }
            memo.insert(operation.to_owned(), category);
        }
        category
    }

    fn lookup(&self, operation: &str) -> Option<Category> {
        let lower = operation.to_ascii_lowercase();
        if let Some(category) = self.exact.get(&lower) {
            return Some(*category);
        }
        self.patterns
            .iter()
            .find(|(parts, _)| glob_matches(parts, &lower))
            .map(|(_, category)| *category)
    }
}

/// Matches `text` against a pattern already split at its `*`s.
fn glob_matches(parts: &[String], text: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return text.is_empty();
    };
    let Some(mut remaining) = text.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part.as_str()) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pattern: &str) -> Vec<String> {
        pattern.split('*').map(str::to_owned).collect()
    }

    #[test]
    fn glob_matches_prefixes_suffixes_and_middles() {
        assert!(glob_matches(
            &split("iam:attach*policy"),
            "iam:attachuserpolicy"
        ));
        assert!(glob_matches(
            &split("iam:attach*policy"),
            "iam:attachpolicy"
        ));
        assert!(!glob_matches(
            &split("iam:attach*policy"),
            "iam:attachuserpolicyx"
        ));
        assert!(glob_matches(&split("post */tokens*"), "post /v1/tokens"));
        assert!(glob_matches(&split("post */tokens*"), "post /tokens/{n}"));
        assert!(!glob_matches(&split("post */tokens*"), "get /v1/tokens"));
        assert!(glob_matches(&split("*"), ""));
        assert!(glob_matches(&split("a*b*c"), "abc"));
        assert!(!glob_matches(&split("a*bc*c"), "abc"));
        assert!(!glob_matches(&split("ab*ba"), "aba"));
    }

    #[test]
    fn defaults_cover_http_and_cloud_operations() {
        let catalogue = Catalogue::new(true, &[]);
        let cases = [
            ("iam:CreateAccessKey", Some(Category::CredentialCreation)),
            ("iam:AttachUserPolicy", Some(Category::PermissionChange)),
            ("cloudtrail:StopLogging", Some(Category::LoggingChange)),
            ("secretsmanager:GetSecretValue", Some(Category::SecretRead)),
            ("POST /v1/tokens", Some(Category::CredentialCreation)),
            ("PUT /admin/roles/{n}", Some(Category::PermissionChange)),
            ("GET /secrets/{n}", Some(Category::SecretRead)),
            ("DELETE /audit/log", Some(Category::LoggingChange)),
            ("GET /orders/{n}", None),
            ("s3:GetObject", None),
            ("GET /roles", None),
        ];
        for (operation, expected) in cases {
            assert_eq!(catalogue.category(operation), expected, "{operation}");
            // The second lookup comes from the memo and must agree.
            assert_eq!(catalogue.category(operation), expected, "{operation}");
        }
    }

    #[test]
    fn configured_tables_first_defaults_off() {
        let configured = [SensitiveOperations {
            category: Category::SecretRead,
            operations: vec![
                "GET /internal/*".to_owned(),
                "iam:CreateAccessKey".to_owned(),
            ],
        }];
        let catalogue = Catalogue::new(true, &configured);
        assert_eq!(
            catalogue.category("GET /internal/x"),
            Some(Category::SecretRead)
        );
        assert_eq!(
            catalogue.category("iam:CreateAccessKey"),
            Some(Category::SecretRead)
        );
        let only_configured = Catalogue::new(false, &configured);
        assert_eq!(only_configured.category("iam:AttachUserPolicy"), None);
        assert_eq!(
            only_configured.category("get /INTERNAL/x"),
            Some(Category::SecretRead)
        );
    }
}
