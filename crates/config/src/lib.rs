//! The configuration file: one TOML document, parsed into typed sections
//! and validated before anything starts.
//!
//! Errors name the key and the bad value. Unknown keys are errors, so a
//! misspelt key never silently falls back to a default.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use stepgate_core::Zone;
use stepgate_risk::RiskConfig;

mod approval;
mod postgres;
mod tls;

pub use approval::{
    ApprovalConfig, ApproverGroupConfig, DEFAULT_GROUP, is_group_name, redact_query,
};

pub use postgres::{IdentityRoleConfig, PostgresConfig, RoleConfig, UpstreamConfig, UpstreamTls};
pub use tls::{ClientAuth, TlsConfig, TlsFileError, TlsFiles};

/// The embedded default configuration, used when no file is given.
pub const EMBEDDED: &str = include_str!("../stepgate.toml");

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {source_name} is not valid: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("config {source_name}: {key} = {value:?} is not valid: {reason}")]
    Invalid {
        source_name: String,
        key: String,
        value: String,
        reason: String,
    },
    #[error("config {source_name}: {error}")]
    TlsFile {
        source_name: String,
        #[source]
        error: TlsFileError,
    },
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub echo: Option<EchoConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub zones: Vec<Zone>,
    #[serde(default)]
    pub risk: RiskConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub step_up: StepUpConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub geoip: GeoipConfig,
    #[serde(default)]
    pub approval: ApprovalConfig,
    /// The PostgreSQL wire-protocol listener; off when absent.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// Where the configuration came from, for messages.
    #[serde(skip)]
    pub source_name: String,
    /// Trusted proxy ranges parsed from `gateway.trusted_proxies`.
    #[serde(skip)]
    pub trusted_proxy_nets: Vec<IpNet>,
}

/// The `[geoip]` table: databases that place client addresses, and
/// networks known to host servers or anonymise their users.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeoipConfig {
    /// MaxMind GeoLite2/GeoIP2 ASN or DB-IP ASN database (`.mmdb`).
    pub asn_db: Option<PathBuf>,
    /// City or country database (`.mmdb`); a city database also gives
    /// coordinates for impossible-travel checks.
    pub city_db: Option<PathBuf>,
    /// MaxMind Anonymous IP database (`.mmdb`): VPNs, Tor exit nodes,
    /// hosting providers and public proxies.
    pub anonymous_db: Option<PathBuf>,
    /// Hosting or anonymising networks (IP addresses or CIDR ranges).
    pub hosting_networks: Vec<String>,
    /// `hosting_networks` parsed.
    #[serde(skip)]
    pub hosting_nets: Vec<IpNet>,
}

impl GeoipConfig {
    /// True when any database or network is configured.
    pub fn is_configured(&self) -> bool {
        self.asn_db.is_some()
            || self.city_db.is_some()
            || self.anonymous_db.is_some()
            || !self.hosting_networks.is_empty()
    }
}

/// The `[gateway]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address of the HTTP listener, such as `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Directory of the store; relative paths are relative to the working
    /// directory of the process.
    pub data_dir: PathBuf,
    /// IP addresses or CIDR ranges of proxies allowed to name the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Header that tells the upstream which identity authenticated.
    #[serde(default = "default_identity_header")]
    pub identity_header: String,
    /// Seconds to wait for a TCP connection to an upstream. Default 5.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds to wait for an upstream's response headers. Default 30.
    #[serde(default = "default_response_timeout")]
    pub response_timeout_secs: u64,
    /// Largest request head (request line and headers) in bytes; larger
    /// heads get 431. Default 16384.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most header fields in one request. Default 100.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Seconds a clean shutdown waits for requests in flight. Default 10.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Scheme, host and optional path prefix clients use to reach the
    /// gateway, such as `https://api.example.com/gw`; DPoP proofs must name
    /// URIs under it. Default `http://` and the listen address, or
    /// `https://` when `[gateway.tls]` is set.
    #[serde(default)]
    pub public_origin: Option<String>,
    /// HTTPS on the gateway listener; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl GatewayConfig {
    /// Returns the public origin without a trailing slash.
    pub fn origin(&self) -> String {
        match &self.public_origin {
            Some(origin) => origin.trim_end_matches('/').to_owned(),
            None if self.tls.is_some() => format!("https://{}", self.listen),
            None => format!("http://{}", self.listen),
        }
    }
}

/// The `[admin]` table: the listener for `/metrics`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// HTTPS on the admin listener; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// The `[echo]` table: the built-in demonstration upstream.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {
    pub listen: SocketAddr,
}

/// One `[[routes]]` entry: requests whose path starts with `prefix` (and
/// whose Host is `host`, when set) go to `upstream`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: String,
    pub upstream: String,
    #[serde(default)]
    pub host: Option<String>,
}

/// The `[policy]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Cedar policy file; the built-in default policy when absent.
    pub file: Option<PathBuf>,
}

/// The `[step_up]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StepUpConfig {
    /// Seconds a grant lasts after a successful step-up; sent as `max_age`.
    /// Default 300.
    pub max_age_secs: u64,
    /// Seconds a challenge can be answered. Default 300.
    pub challenge_ttl_secs: u64,
    /// Put the signal reasons into the challenge body. Default false: they
    /// go to the audit trail only.
    pub include_reasons: bool,
    /// Wrong or replayed TOTP codes in a row that lock the factor. Default 5.
    pub totp_max_failures: u32,
    /// Seconds a locked TOTP factor stays locked. Default 300.
    pub totp_lockout_secs: u64,
    /// Require a server-provided nonce (`DPoP-Nonce`) in DPoP proofs.
    /// Default false.
    pub dpop_nonce: bool,
    /// Hand each successful step-up back as a signed grant token
    /// (`Stepgate-Grant`) that any replica trusting the key accepts.
    /// Default false.
    pub grant_tokens: bool,
    /// Ed25519 private key (PKCS#8 PEM) that signs grant tokens, shared by
    /// replicas. Without it the gateway creates `grant-key.pem` in its data
    /// directory.
    pub grant_key_file: Option<PathBuf>,
    /// Public keys (PEM or JWK) of other replicas whose grant tokens count.
    pub grant_trusted_keys: Vec<PathBuf>,
}

impl Default for StepUpConfig {
    fn default() -> Self {
        Self {
            max_age_secs: 300,
            challenge_ttl_secs: 300,
            include_reasons: false,
            totp_max_failures: 5,
            totp_lockout_secs: 300,
            dpop_nonce: false,
            grant_tokens: false,
            grant_key_file: None,
            grant_trusted_keys: Vec::new(),
        }
    }
}

impl StepUpConfig {
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs)
    }

    pub fn challenge_ttl(&self) -> Duration {
        Duration::from_secs(self.challenge_ttl_secs)
    }

    pub fn totp_lockout(&self) -> Duration {
        Duration::from_secs(self.totp_lockout_secs)
    }
}

/// The `[audit]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Most allow records written in one transaction. Default 512.
    pub batch_size: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { batch_size: 512 }
    }
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::parse(EMBEDDED, "embedded defaults")
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new(""));
        for group in &mut config.approval.groups {
            if let Some(file) = &mut group.webhook_secret_file {
                *file = base.join(&*file);
            }
        }
        if let Some(file) = &mut config.approval.webhook_ca_file {
            *file = base.join(&*file);
        }
        if let Some(postgres) = &mut config.postgres {
            for role in &mut postgres.roles {
                role.password_file = base.join(&role.password_file);
            }
            if let Some(file) = &mut postgres.upstream.ca_file {
                *file = base.join(&*file);
            }
            if let Some(tls) = &mut postgres.tls {
                tls.cert_file = base.join(&tls.cert_file);
                tls.key_file = base.join(&tls.key_file);
                if let Some(ca) = &mut tls.client_ca_file {
                    *ca = base.join(&*ca);
                }
            }
        }
        for tls in config.tls_tables_mut() {
            tls.cert_file = base.join(&tls.cert_file);
            tls.key_file = base.join(&tls.key_file);
            if let Some(ca) = &mut tls.client_ca_file {
                *ca = base.join(&*ca);
            }
        }
        Ok(config)
    }

    /// Returns the `tls` tables that are set, with their keys for messages.
    pub fn tls_tables(&self) -> Vec<(&'static str, &TlsConfig)> {
        let mut tables = Vec::new();
        if let Some(tls) = &self.gateway.tls {
            tables.push(("gateway.tls", tls));
        }
        if let Some(tls) = self.admin.as_ref().and_then(|admin| admin.tls.as_ref()) {
            tables.push(("admin.tls", tls));
        }
        if let Some(tls) = self
            .postgres
            .as_ref()
            .and_then(|postgres| postgres.tls.as_ref())
        {
            tables.push(("postgres.tls", tls));
        }
        tables
    }

    fn tls_tables_mut(&mut self) -> impl Iterator<Item = &mut TlsConfig> {
        let admin = self.admin.as_mut().and_then(|admin| admin.tls.as_mut());
        self.gateway.tls.as_mut().into_iter().chain(admin)
    }

    /// Reads and checks the certificate, key and CA files of every `tls`
    /// table, as the listeners would at start.
    pub fn check_tls_files(&self) -> Result<(), ConfigError> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        for (table, tls) in self.tls_tables() {
            tls.load_files(table, &provider)
                .map_err(|error| ConfigError::TlsFile {
                    source_name: self.source_name.clone(),
                    error,
                })?;
        }
        Ok(())
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|err| ConfigError::Parse {
            source_name: source_name.to_owned(),
            message: err.to_string().trim_end().to_owned(),
        })?;
        config.source_name = source_name.to_owned();
        config.validate()?;
        Ok(config)
    }

    fn invalid(
        &self,
        key: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            source_name: self.source_name.clone(),
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let mut nets = Vec::new();
        for (i, text) in self.gateway.trusted_proxies.iter().enumerate() {
            let net = parse_net(text).ok_or_else(|| {
                self.invalid(
                    format!("gateway.trusted_proxies[{i}]"),
                    text,
                    "expected an IP address or CIDR range such as 10.0.0.0/8",
                )
            })?;
            nets.push(net);
        }
        self.trusted_proxy_nets = nets;
        self.validate_approval()?;
        if let Some(postgres) = &self.postgres
            && let Err((key, value, reason)) = postgres.validate()
        {
            return Err(self.invalid(key, value, reason));
        }

        if let Some(origin) = &self.gateway.public_origin {
            let valid = ["http://", "https://"].iter().any(|scheme| {
                origin
                    .strip_prefix(scheme)
                    .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
            }) && !origin.contains(['?', '#', '@', ' ']);
            if !valid {
                return Err(self.invalid(
                    "gateway.public_origin",
                    origin,
                    "expected http:// or https://, a host, an optional port and path prefix, such as https://api.example.com",
                ));
            }
        }
        if http_header_name(&self.gateway.identity_header).is_none() {
            return Err(self.invalid(
                "gateway.identity_header",
                &self.gateway.identity_header,
                "expected an HTTP header name",
            ));
        }
        for (key, value) in [
            (
                "gateway.connect_timeout_secs",
                self.gateway.connect_timeout_secs,
            ),
            (
                "gateway.response_timeout_secs",
                self.gateway.response_timeout_secs,
            ),
        ] {
            if value == 0 {
                return Err(self.invalid(key, "0", "timeouts must be at least 1 second"));
            }
        }
        if self.gateway.max_header_bytes < 1024 {
            return Err(self.invalid(
                "gateway.max_header_bytes",
                self.gateway.max_header_bytes.to_string(),
                "must be at least 1024",
            ));
        }
        if self.routes.is_empty() {
            return Err(self.invalid(
                "routes",
                "[]",
                "add at least one [[routes]] entry with prefix and upstream",
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !route.prefix.starts_with('/') {
                return Err(self.invalid(
                    format!("routes[{i}].prefix"),
                    &route.prefix,
                    "must start with '/'",
                ));
            }
            if let Err(reason) = check_upstream(&route.upstream) {
                return Err(self.invalid(format!("routes[{i}].upstream"), &route.upstream, reason));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, zone) in self.zones.iter().enumerate() {
            if !zone.prefix.starts_with('/') {
                return Err(self.invalid(
                    format!("zones[{i}].prefix"),
                    &zone.prefix,
                    "must start with '/'",
                ));
            }
            if zone.name.is_empty()
                || !zone
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(self.invalid(
                    format!("zones[{i}].name"),
                    &zone.name,
                    "use ASCII letters, digits, '-' and '_'",
                ));
            }
            if !names.insert(zone.name.clone()) {
                return Err(self.invalid(
                    format!("zones[{i}].name"),
                    &zone.name,
                    "another zone has this name",
                ));
            }
        }
        if let Err(message) = self.risk.validate() {
            return Err(ConfigError::Parse {
                source_name: self.source_name.clone(),
                message,
            });
        }
        for (key, path) in [
            ("geoip.asn_db", &self.geoip.asn_db),
            ("geoip.city_db", &self.geoip.city_db),
            ("geoip.anonymous_db", &self.geoip.anonymous_db),
        ] {
            if path
                .as_ref()
                .is_some_and(|path| path.as_os_str().is_empty())
            {
                return Err(self.invalid(
                    key,
                    "",
                    "is empty; give the path of a .mmdb file or remove the key",
                ));
            }
        }
        let mut hosting = Vec::new();
        for (i, text) in self.geoip.hosting_networks.iter().enumerate() {
            let net = parse_net(text).ok_or_else(|| {
                self.invalid(
                    format!("geoip.hosting_networks[{i}]"),
                    text,
                    "expected an IP address or CIDR range such as 203.0.113.0/24",
                )
            })?;
            hosting.push(net);
        }
        self.geoip.hosting_nets = hosting;
        for (key, value) in [
            ("step_up.max_age_secs", self.step_up.max_age_secs),
            (
                "step_up.challenge_ttl_secs",
                self.step_up.challenge_ttl_secs,
            ),
        ] {
            if value == 0 {
                return Err(self.invalid(key, "0", "must be at least 1 second"));
            }
        }
        if self.step_up.totp_max_failures == 0 {
            return Err(self.invalid("step_up.totp_max_failures", "0", "must be at least 1"));
        }
        self.validate_more()?;
        if self.audit.batch_size == 0 {
            return Err(self.invalid("audit.batch_size", "0", "must be at least 1"));
        }
        Ok(())
    }

    /// Checks values that parse but would fail at start or quietly weaken
    /// the gateway.
    fn validate_more(&self) -> Result<(), ConfigError> {
        let mut listeners = vec![("gateway.listen", self.gateway.listen)];
        if let Some(admin) = &self.admin {
            listeners.push(("admin.listen", admin.listen));
        }
        if let Some(echo) = &self.echo {
            listeners.push(("echo.listen", echo.listen));
        }
        for (i, (key, addr)) in listeners.iter().enumerate() {
            if let Some((other, _)) = listeners[..i].iter().find(|(_, earlier)| earlier == addr) {
                return Err(self.invalid(
                    *key,
                    addr.to_string(),
                    format!("{other} already uses this address"),
                ));
            }
        }
        let reserved = [
            "host",
            "authorization",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "connection",
            "content-length",
            "transfer-encoding",
            "stepgate-challenge",
            "stepgate-totp",
        ];
        let header = self.gateway.identity_header.to_ascii_lowercase();
        if reserved.contains(&header.as_str()) {
            return Err(self.invalid(
                "gateway.identity_header",
                &self.gateway.identity_header,
                "this header has another meaning; choose a name of its own such as Stepgate-Identity",
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if let Some(host) = &route.host
                && (host.is_empty() || host.contains(':') || host.contains('/'))
            {
                return Err(self.invalid(
                    format!("routes[{i}].host"),
                    host,
                    "give the host name alone, without port or path",
                ));
            }
        }
        for (i, zone) in self.zones.iter().enumerate() {
            let canonical = zone
                .prefix
                .split('/')
                .all(|segment| segment != "." && segment != "..")
                && !zone.prefix.contains(['%', ';', '\\'])
                && !zone.prefix.contains("//");
            if !canonical {
                return Err(self.invalid(
                    format!("zones[{i}].prefix"),
                    &zone.prefix,
                    "request paths are normalised before zones match; write the prefix without dot segments, '%', ';', '\\' or '//'",
                ));
            }
        }
        self.validate_tls()?;
        if self.step_up.totp_lockout_secs == 0 {
            return Err(self.invalid(
                "step_up.totp_lockout_secs",
                "0",
                "must be at least 1, or lockout is off",
            ));
        }
        if self.risk.failure_burst_threshold == 0 {
            return Err(self.invalid("risk.failure_burst_threshold", "0", "must be at least 1"));
        }
        const DAY: u64 = 86_400;
        for (key, value) in [
            ("step_up.max_age_secs", self.step_up.max_age_secs),
            (
                "step_up.challenge_ttl_secs",
                self.step_up.challenge_ttl_secs,
            ),
            ("step_up.totp_lockout_secs", self.step_up.totp_lockout_secs),
        ] {
            if value > DAY {
                return Err(self.invalid(
                    key,
                    value.to_string(),
                    "must be at most 86400 (one day)",
                ));
            }
        }
        Ok(())
    }

    fn validate_approval(&mut self) -> Result<(), ConfigError> {
        if let Err((key, value, reason)) = self.approval.validate() {
            return Err(self.invalid(key, value, reason));
        }
        for (i, zone) in self.zones.iter().enumerate() {
            if zone
                .approval_quorum
                .is_some_and(|quorum| quorum == 0 || quorum > 10)
            {
                return Err(self.invalid(
                    format!("zones[{i}].approval_quorum"),
                    zone.approval_quorum.unwrap_or_default().to_string(),
                    "must be between 1 and 10",
                ));
            }
            if let Some(group) = &zone.approval_group
                && !self
                    .approval
                    .groups
                    .iter()
                    .any(|known| &known.name == group)
                && group != &self.approval.default_group
            {
                return Err(self.invalid(
                    format!("zones[{i}].approval_group"),
                    group,
                    "no [[approval.groups]] entry has this name; add one or use the default group",
                ));
            }
        }
        Ok(())
    }

    /// Checks the `tls` tables without reading the files they name.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        for (table, tls) in self.tls_tables() {
            for (name, path) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if path.as_os_str().is_empty() {
                    return Err(self.invalid(
                        format!("{table}.{name}"),
                        "",
                        "is empty; give the path of a PEM file",
                    ));
                }
            }
            match (&tls.client_ca_file, tls.client_auth) {
                (Some(path), _) if path.as_os_str().is_empty() => {
                    return Err(self.invalid(
                        format!("{table}.client_ca_file"),
                        "",
                        "is empty; give the path of a PEM file of client CA certificates or remove the key",
                    ));
                }
                (None, ClientAuth::Optional | ClientAuth::Required) => {
                    return Err(self.invalid(
                        format!("{table}.client_auth"),
                        tls.client_auth.as_str(),
                        format!(
                            "client certificates need CAs to verify them; set {table}.client_ca_file to a PEM file of the CA certificates that issue them"
                        ),
                    ));
                }
                (Some(path), ClientAuth::None) => {
                    return Err(self.invalid(
                        format!("{table}.client_ca_file"),
                        path.display().to_string(),
                        format!(
                            "is set but {table}.client_auth is \"none\", so no client certificate is requested; set client_auth = \"optional\" or \"required\", or remove client_ca_file"
                        ),
                    ));
                }
                _ => {}
            }
            if tls.handshake_timeout_secs == 0 || tls.handshake_timeout_secs > 300 {
                return Err(self.invalid(
                    format!("{table}.handshake_timeout_secs"),
                    tls.handshake_timeout_secs.to_string(),
                    "must be between 1 and 300 seconds",
                ));
            }
        }
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.gateway.connect_timeout_secs)
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_secs(self.gateway.response_timeout_secs)
    }
}

fn default_identity_header() -> String {
    "Stepgate-Identity".to_owned()
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_response_timeout() -> u64 {
    30
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_max_headers() -> usize {
    100
}
fn default_shutdown_grace() -> u64 {
    10
}

/// Parses an address or CIDR range. An IPv4-mapped IPv6 range
/// (`::ffff:203.0.113.0/120`) becomes the IPv4 range it maps, because client
/// addresses are compared in their IPv4 form.
fn parse_net(text: &str) -> Option<IpNet> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net.trunc(),
        Err(_) => IpNet::from(text.parse::<IpAddr>().ok()?.to_canonical()),
    };
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
    {
        return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
            .ok()
            .map(IpNet::V4);
    }
    Some(net)
}

fn http_header_name(name: &str) -> Option<()> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    (!name.is_empty() && name.chars().all(token)).then_some(())
}

/// Checks an upstream URL: `http://host[:port][/path]`, no user info,
/// query or fragment.
fn check_upstream(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("expected an http:// URL such as http://127.0.0.1:9000")?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err("the URL has no host");
    }
    if authority.contains('@') {
        return Err("user information in upstream URLs is not supported");
    }
    if rest.contains('?') || rest.contains('#') {
        return Err("the URL must not have a query or fragment");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
