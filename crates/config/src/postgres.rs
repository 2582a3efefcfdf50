//! The `[postgres]` table: the listener for PostgreSQL clients, the real
//! server behind it, and which database role each identity works as.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::TlsConfig;

/// Largest message PostgreSQL itself accepts is 1 GiB; the gateway stays
/// far below it.
const MAX_MESSAGE_LIMIT: usize = 256 << 20;

/// The `[postgres]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Address of the listener for PostgreSQL clients, such as
    /// `127.0.0.1:6432`.
    pub listen: SocketAddr,
    /// TLS for clients, offered in response to SSLRequest. Without it the
    /// response to SSLRequest is `N`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Reject clients that do not switch to TLS. Default false; needs `tls`.
    #[serde(default)]
    pub require_tls: bool,
    /// Largest message a client or the server may send, in bytes. Default
    /// 67108864 (64 MiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Seconds a statement waiting for a person's approval is held before
    /// the client gets an error. Default 300.
    #[serde(default = "default_approval_wait")]
    pub approval_wait_secs: u64,
    /// Write each statement's text, with its literals, to the audit trail.
    /// Default false: only the fingerprint (constants removed) is written.
    #[serde(default)]
    pub audit_statement_text: bool,
    /// Functions of `pg_catalog` to count as free of side effects, beside
    /// the built-in list, such as `["pg_backend_pid"]`. A call of any other
    /// function counts as a write that may touch any table. Names on the
    /// side-effect lists never count as free of them.
    #[serde(default)]
    pub pure_functions: Vec<String>,
    /// Reject Query messages that hold more than one statement. Default
    /// false; a policy can also reject them per identity.
    #[serde(default)]
    pub reject_multi_statement: bool,
    pub upstream: UpstreamConfig,
    /// Database role and databases of each identity; an identity without an
    /// entry cannot connect.
    #[serde(default)]
    pub identities: Vec<IdentityRoleConfig>,
    /// Login credentials of the roles the gateway uses on the server.
    #[serde(default)]
    pub roles: Vec<RoleConfig>,
}

/// The `[postgres.upstream]` table: the real server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Host name or address of the server.
    pub host: String,
    /// Default 5432.
    #[serde(default = "default_port")]
    pub port: u16,
    /// `disable`, `require` (TLS without checking the certificate) or
    /// `verify-full` (TLS with the certificate checked against `ca_file`
    /// and `host`). Default `verify-full`.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// PEM CA certificates for `verify-full`; the system bundle when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Server connections kept per role and database. Default 10.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Seconds to wait for a connection to the server. Default 5.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

/// TLS to the real server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    Disable,
    Require,
    #[default]
    VerifyFull,
}

/// One `[[postgres.identities]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityRoleConfig {
    /// The stepgate identity, as the client's `user`.
    pub identity: String,
    /// The database role its statements run as; a `[[postgres.roles]]`
    /// entry.
    pub role: String,
    /// Databases it may connect to; every database when empty.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Reject Query messages of this identity that hold more than one
    /// statement, whatever the value of `postgres.reject_multi_statement`.
    #[serde(default)]
    pub reject_multi_statement: bool,
}

/// One `[[postgres.roles]]` entry: a login role on the server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: String,
    /// File holding the role's password; relative to the config file.
    pub password_file: PathBuf,
}

fn default_max_message_bytes() -> usize {
    64 << 20
}

fn default_approval_wait() -> u64 {
    300
}

fn default_port() -> u16 {
    5432
}

fn default_pool_size() -> usize {
    10
}

fn default_connect_timeout() -> u64 {
    5
}

impl PostgresConfig {
    pub fn approval_wait(&self) -> Duration {
        Duration::from_secs(self.approval_wait_secs)
    }

    /// True when a Query message of `identity` must hold one statement.
    pub fn rejects_multi_statement(&self, identity: &str) -> bool {
        self.reject_multi_statement
            || self
                .role_of(identity)
                .is_some_and(|entry| entry.reject_multi_statement)
    }

    /// Returns the role entry of `identity`, if it may connect.
    pub fn role_of(&self, identity: &str) -> Option<&IdentityRoleConfig> {
        self.identities
            .iter()
            .find(|entry| entry.identity == identity)
    }

    /// Checks every key; returns the key, value and reason of the first bad
    /// one.
    pub(crate) fn validate(&self) -> Result<(), (String, String, String)> {
        let bad = |key: &str, value: String, reason: &str| {
            Err((format!("postgres.{key}"), value, reason.to_owned()))
        };
        if self.require_tls && self.tls.is_none() {
            return bad(
                "require_tls",
                "true".into(),
                "needs [postgres.tls] with cert_file and key_file",
            );
        }
        if self.max_message_bytes < 8192 || self.max_message_bytes > MAX_MESSAGE_LIMIT {
            return bad(
                "max_message_bytes",
                self.max_message_bytes.to_string(),
                "must be between 8192 and 268435456 bytes",
            );
        }
        if self.approval_wait_secs == 0 || self.approval_wait_secs > 86_400 {
            return bad(
                "approval_wait_secs",
                self.approval_wait_secs.to_string(),
                "must be between 1 and 86400 seconds",
            );
        }
        if let Some(name) = self.pure_functions.iter().find(|name| {
            name.is_empty()
                || name.len() > 63
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }) {
            return bad(
                "pure_functions",
                name.clone(),
                "expected a pg_catalog function name without schema, such as pg_backend_pid",
            );
        }
        let upstream = &self.upstream;
        if upstream.host.is_empty() || upstream.host.contains(['/', ' ', '@']) {
            return bad(
                "upstream.host",
                upstream.host.clone(),
                "expected a host name or IP address, such as 127.0.0.1",
            );
        }
        if upstream.pool_size == 0 || upstream.pool_size > 1000 {
            return bad(
                "upstream.pool_size",
                upstream.pool_size.to_string(),
                "must be between 1 and 1000",
            );
        }
        if upstream.connect_timeout_secs == 0 || upstream.connect_timeout_secs > 300 {
            return bad(
                "upstream.connect_timeout_secs",
                upstream.connect_timeout_secs.to_string(),
                "must be between 1 and 300 seconds",
            );
        }
        if upstream.ca_file.is_some() && upstream.tls != UpstreamTls::VerifyFull {
            return bad(
                "upstream.ca_file",
                String::new(),
                "is used only with tls = \"verify-full\"",
            );
        }
        let mut roles = std::collections::HashSet::new();
        for (i, role) in self.roles.iter().enumerate() {
            if !is_role_name(&role.name) {
                return bad(
                    &format!("roles[{i}].name"),
                    role.name.clone(),
                    "use 1 to 63 ASCII letters, digits, '_' or '-'",
                );
            }
            if !roles.insert(role.name.as_str()) {
                return bad(
                    &format!("roles[{i}].name"),
                    role.name.clone(),
                    "another [[postgres.roles]] entry has this name",
                );
            }
        }
        let mut identities = std::collections::HashSet::new();
        for (i, entry) in self.identities.iter().enumerate() {
            if !identities.insert(entry.identity.as_str()) {
                return bad(
                    &format!("identities[{i}].identity"),
                    entry.identity.clone(),
                    "another [[postgres.identities]] entry names this identity",
                );
            }
            if !roles.contains(entry.role.as_str()) {
                return bad(
                    &format!("identities[{i}].role"),
                    entry.role.clone(),
                    "no [[postgres.roles]] entry has this name; add one with its password_file",
                );
            }
            if let Some(database) = entry.databases.iter().find(|db| !is_role_name(db)) {
                return bad(
                    &format!("identities[{i}].databases"),
                    database.clone(),
                    "use 1 to 63 ASCII letters, digits, '_' or '-'",
                );
            }
        }
        Ok(())
    }
}

/// True for names PostgreSQL takes without quoting trouble: 1 to 63 bytes
/// (its identifier limit) of ASCII letters, digits, `_` and `-`.
fn is_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn config(postgres: &str) -> Result<Config, crate::ConfigError> {
        let text = format!(
            r#"
[gateway]
listen = "127.0.0.1:8080"
data_dir = "data"

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:9000"

{postgres}
"#
        );
        Config::parse(&text, "test")
    }

    const VALID: &str = r#"
[postgres]
listen = "127.0.0.1:6432"

[postgres.upstream]
host = "127.0.0.1"
tls = "disable"

[[postgres.roles]]
name = "app_rw"
password_file = "app_rw.password"

[[postgres.identities]]
identity = "ci-bot"
role = "app_rw"
databases = ["app"]
"#;

    #[test]
    fn valid_postgres_table_parses() {
        let parsed = config(VALID).unwrap();
        let postgres = parsed.postgres.unwrap();
        assert_eq!(postgres.upstream.port, 5432);
        assert_eq!(postgres.max_message_bytes, 64 << 20);
        assert_eq!(postgres.role_of("ci-bot").unwrap().role, "app_rw");
        assert!(postgres.role_of("other").is_none());
        assert!(!postgres.rejects_multi_statement("ci-bot"));
        let strict = config(&VALID.replace(
            "databases = [\"app\"]",
            "databases = [\"app\"]\nreject_multi_statement = true",
        ))
        .unwrap();
        assert!(strict.postgres.unwrap().rejects_multi_statement("ci-bot"));
    }

    #[test]
    fn bad_postgres_keys_are_named() {
        let cases = [
            (
                VALID.replace("role = \"app_rw\"", "role = \"missing\""),
                "postgres.identities[0].role",
            ),
            (
                VALID.replace("tls = \"disable\"", "tls = \"disable\"\npool_size = 0"),
                "postgres.upstream.pool_size",
            ),
            (
                VALID.replace(
                    "listen = \"127.0.0.1:6432\"",
                    "listen = \"127.0.0.1:6432\"\nrequire_tls = true",
                ),
                "postgres.require_tls",
            ),
            (
                VALID.replace(
                    "listen = \"127.0.0.1:6432\"",
                    "listen = \"127.0.0.1:6432\"\nmax_message_bytes = 2147483648",
                ),
                "postgres.max_message_bytes",
            ),
            (
                VALID.replace("host = \"127.0.0.1\"", "host = \"user@db\""),
                "postgres.upstream.host",
            ),
            (
                VALID.replace("databases = [\"app\"]", "databases = [\"app; drop\"]"),
                "postgres.identities[0].databases",
            ),
        ];
        for (text, key) in cases {
            let err = config(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let err = config(&VALID.replace("tls = \"disable\"", "tls = \"prefer\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls"), "{err}");
    }
}
