//! Policy: Cedar policies that turn identity, action, resource, risk and
//! assurance into a decision, and the search for the weakest step-up.
//!
//! The crate evaluates; it does not read files or know about HTTP. Callers
//! pass the policy text and a [`PolicyInput`] built from request facts.

mod relevance;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use parking_lot::Mutex;
use stepgate_core::{Action, FactorKind, Outcome, Zone};

use relevance::Relevance;

/// The schema every policy is validated against.
pub const SCHEMA: &str = include_str!("../policies/schema.cedarschema");
/// The policy used when the config names no policy file.
pub const DEFAULT_POLICY: &str = include_str!("../policies/default.cedar");

/// Errors from loading or evaluating a policy. Each message names the file
/// or policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {source_name} does not parse: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("policy {source_name} does not match the schema:\n{message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("built-in policy schema does not parse: {0}")]
    Schema(String),
    #[error("cannot build the policy request: {0}")]
    Request(String),
}

/// Policy inputs of one request.
#[derive(Clone, Debug)]
pub struct PolicyInput<'a> {
    pub identity: &'a str,
    pub identity_learning: bool,
    pub action: Action,
    /// Route template, such as `/orders/{n}`.
    pub resource: &'a str,
    pub operation: &'a str,
    pub zone: Option<&'a Zone>,
    pub risk: u8,
    pub signals: &'a [&'static str],
    /// Factors proved and their age in seconds.
    pub proved: &'a [(FactorKind, i64)],
    pub source_ip: IpAddr,
    /// Hour of the day in UTC, 0 to 23.
    pub hour: u8,
    /// Day of the week in UTC, 0 (Monday) to 6 (Sunday).
    pub weekday: u8,
}

/// Result of [`Policy::decide`]: the outcome and, for a step-up, the
/// weakest factor that would permit the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDecision {
    pub outcome: Outcome,
    pub step_up: Option<FactorKind>,
    /// Every offered factor that would permit the request, weakest first;
    /// the challenge offers them all.
    pub satisfying: Vec<FactorKind>,
    /// Ids of the policies that decided, such as `low-risk`.
    pub reasons: Vec<String>,
    /// True when `step_up` permits the request only together with a
    /// person's approval, which is asked for once the factor is proved.
    pub then_approval: bool,
}

/// The approver group and quorum a policy asks for with
/// `@approval_group("NAME")` and `@approval_quorum("N")`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApprovalAsk {
    pub group: Option<String>,
    pub quorum: Option<u32>,
}

/// A validated policy set, ready to evaluate.
#[derive(Clone)]
pub struct Policy {
    policies: Arc<PolicySet>,
    schema: Arc<Schema>,
    authorizer: Arc<Authorizer>,
    names: Names,
    cache: Arc<Cache>,
    /// The `@id` annotation of each policy, read once at load: reading an
    /// annotation through the Cedar API parses its key every time.
    labels: Arc<HashMap<PolicyId, String>>,
    /// Labels of the policies annotated `@teach_baseline`: a request they
    /// permit after a step-up still teaches the identity's baseline.
    teaching: Arc<HashSet<String>>,
    /// The inputs some policy reads; the others stay out of cache keys.
    relevance: Relevance,
    use_decision_cache: bool,
}

/// Most entries each cache keeps before it is emptied and refilled.
const CACHE_LIMIT: usize = 65_536;
const DECISION_SHARDS: usize = 16;

/// Every Cedar input of one request. Evaluation is deterministic, so
/// two requests with equal keys get the same decision. Time enters only as
/// hour and weekday, and proof ages in seconds, so entries stop matching as
/// time moves on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct DecisionKey {
    identity: String,
    learning: bool,
    action: Action,
    resource: String,
    operation: String,
    zone: Option<Zone>,
    risk: u8,
    signals: Vec<&'static str>,
    proved: Vec<(FactorKind, i64)>,
    offered: Vec<FactorKind>,
    source_ip: IpAddr,
    hour: u8,
    weekday: u8,
}

impl DecisionKey {
    /// Builds the key of a request, with the inputs no policy reads left at
    /// a fixed value.
    fn new(input: &PolicyInput<'_>, offered: &[FactorKind], relevance: Relevance) -> Self {
        let principal = relevance.principal;
        let resource = relevance.resource;
        Self {
            identity: if principal {
                input.identity.to_owned()
            } else {
                String::new()
            },
            learning: principal && input.identity_learning,
            action: input.action,
            resource: if resource {
                input.resource.to_owned()
            } else {
                String::new()
            },
            operation: if resource {
                input.operation.to_owned()
            } else {
                String::new()
            },
            zone: input.zone.filter(|_| resource).cloned(),
            risk: if relevance.risk { input.risk } else { 0 },
            signals: if relevance.signals {
                input.signals.to_vec()
            } else {
                Vec::new()
            },
            proved: if relevance.proved {
                input.proved.to_vec()
            } else {
                Vec::new()
            },
            offered: offered.to_vec(),
            source_ip: if relevance.source_ip {
                input.source_ip
            } else {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            },
            hour: if relevance.hour { input.hour } else { 0 },
            weekday: if relevance.weekday { input.weekday } else { 0 },
        }
    }

    fn shard(&self) -> usize {
        use std::hash::{BuildHasher, RandomState};
        static HASHER: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        let hash = HASHER.get_or_init(RandomState::new).hash_one(self);
        (hash % DECISION_SHARDS as u64) as usize
    }
}

/// Cedar values that are expensive to build and the same for many
/// requests: building an `ip(...)` expression parses the extension
/// function's name, and building an entity evaluates its attributes.
/// Route template, operation and zone name of a cached resource entity.
type ResourceKey = (String, String, Option<String>);

#[derive(Default)]
struct Cache {
    decisions: [Mutex<HashMap<DecisionKey, PolicyDecision>>; DECISION_SHARDS],
    ips: Mutex<HashMap<IpAddr, RestrictedExpression>>,
    identities: Mutex<HashMap<(String, bool), Entity>>,
    resources: Mutex<HashMap<ResourceKey, Entity>>,
}

fn cached<K: std::hash::Hash + Eq, V: Clone, E>(
    map: &Mutex<HashMap<K, V>>,
    key: K,
    build: impl FnOnce() -> Result<V, E>,
) -> Result<V, E> {
    if let Some(value) = map.lock().get(&key) {
        return Ok(value.clone());
    }
    let value = build()?;
    let mut map = map.lock();
    if map.len() >= CACHE_LIMIT {
        map.clear();
    }
    map.insert(key, value.clone());
    Ok(value)
}

#[derive(Clone)]
struct Names {
    identity: EntityTypeName,
    zone: EntityTypeName,
    resource: EntityTypeName,
    actions: [EntityUid; 4],
}

impl Policy {
    /// Parses `text` and validates it against [`SCHEMA`]. `source_name`
    /// names the text in errors, such as the file path.
    pub fn new(text: &str, source_name: &str) -> Result<Self, PolicyError> {
        let schema = schema()?;
        let policies = PolicySet::from_str(text).map_err(|err| PolicyError::Parse {
            source_name: source_name.to_owned(),
            message: with_position(text, &err),
        })?;
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let message = result
                .validation_errors()
                .map(|err| format!("  {}", with_position(text, err)))
                .collect::<Vec<_>>()
                .join("\n");
            return Err(PolicyError::Invalid {
                source_name: source_name.to_owned(),
                message,
            });
        }
        if !policies
            .policies()
            .any(|policy| policy.effect() == cedar_policy::Effect::Permit)
        {
            return Err(PolicyError::Invalid {
                source_name: source_name.to_owned(),
                message: "  no permit policy: every request would be denied".to_owned(),
            });
        }
        let mut seen = HashSet::new();
        for policy in policies.policies() {
            if let Some(label) = policy.annotation("id")
                && !seen.insert(label.to_owned())
            {
                return Err(PolicyError::Invalid {
                    source_name: source_name.to_owned(),
                    message: format!("  two policies have @id({label:?}): give each its own id"),
                });
            }
        }
        for policy in policies.policies() {
            if let Some(text) = policy.annotation("approval_quorum")
                && !text
                    .parse::<u32>()
                    .is_ok_and(|quorum| (1..=10).contains(&quorum))
            {
                return Err(PolicyError::Invalid {
                    source_name: source_name.to_owned(),
                    message: format!(
                        "  @approval_quorum({text:?}) on policy {}: give a whole number from 1 to 10",
                        policy.annotation("id").unwrap_or(policy.id().as_ref())
                    ),
                });
            }
        }
        let labels: HashMap<PolicyId, String> = policies
            .policies()
            .map(|policy| {
                let label = policy
                    .annotation("id")
                    .map_or_else(|| policy.id().to_string(), str::to_owned);
                (policy.id().clone(), label)
            })
            .collect();
        let jsons: Vec<Option<serde_json::Value>> = policies
            .policies()
            .map(|policy| policy.to_json().ok())
            .collect();
        let relevance = Relevance::of(jsons.iter().map(Option::as_ref));
        let teaching = policies
            .policies()
            .filter(|policy| policy.annotation("teach_baseline").is_some())
            .filter_map(|policy| labels.get(policy.id()).cloned())
            .collect();
        Ok(Self {
            policies: Arc::new(policies),
            schema: Arc::new(schema),
            authorizer: Arc::new(Authorizer::new()),
            names: Names::new()?,
            cache: Arc::new(Cache::default()),
            labels: Arc::new(labels),
            teaching: Arc::new(teaching),
            relevance,
            use_decision_cache: true,
        })
    }

    /// Returns the same policies evaluated by Cedar for every request, for
    /// benchmarks and for checking the decision cache.
    pub fn without_decision_cache(&self) -> Self {
        Self {
            use_decision_cache: false,
            ..self.clone()
        }
    }

    /// Loads the built-in default policy.
    pub fn default_policy() -> Result<Self, PolicyError> {
        Self::new(DEFAULT_POLICY, "built-in default policy")
    }

    pub fn policy_count(&self) -> usize {
        self.policies.policies().count()
    }

    /// Decides a request. It is allowed when the policy permits it as it is.
    /// Otherwise it steps up with the weakest factor (in [`FactorKind::ALL`]
    /// order) that, proved now, would permit it, and is denied when none
    /// would.
    ///
    /// An evaluation error denies: the gateway fails closed.
    /// True when one of the deciding policies is annotated
    /// `@teach_baseline`, so a request it permitted after a step-up teaches
    /// the identity's baseline.
    pub fn teaches_baseline(&self, reasons: &[String]) -> bool {
        !self.teaching.is_empty() && reasons.iter().any(|id| self.teaching.contains(id))
    }

    /// Returns the approver group and quorum named by the deciding
    /// policies' `@approval_group` and `@approval_quorum` annotations; the
    /// largest quorum wins when several name one.
    pub fn approval_ask(&self, reasons: &[String]) -> ApprovalAsk {
        let mut ask = ApprovalAsk::default();
        for policy in self.policies.policies() {
            let label = self.labels.get(policy.id());
            if !label.is_some_and(|label| reasons.contains(label)) {
                continue;
            }
            if let Some(group) = policy.annotation("approval_group")
                && ask.group.is_none()
            {
                ask.group = Some(group.to_owned());
            }
            if let Some(quorum) = policy
                .annotation("approval_quorum")
                .and_then(|text| text.parse::<u32>().ok())
            {
                ask.quorum = Some(ask.quorum.map_or(quorum, |known| known.max(quorum)));
            }
        }
        ask
    }

    /// Returns every group named by an `@approval_group` annotation.
    pub fn approval_groups(&self) -> Vec<String> {
        self.policies
            .policies()
            .filter_map(|policy| policy.annotation("approval_group"))
            .map(str::to_owned)
            .collect()
    }

    pub fn decide(
        &self,
        input: &PolicyInput<'_>,
        offered: &[FactorKind],
    ) -> Result<PolicyDecision, PolicyError> {
        if !self.use_decision_cache {
            return self.evaluate_all(input, offered);
        }
        let key = DecisionKey::new(input, offered, self.relevance);
        let shard = &self.cache.decisions[key.shard()];
        if let Some(decision) = shard.lock().get(&key) {
            return Ok(decision.clone());
        }
        let decision = self.evaluate_all(input, offered)?;
        let mut map = shard.lock();
        if map.len() >= CACHE_LIMIT / DECISION_SHARDS {
            map.clear();
        }
        map.insert(key, decision.clone());
        Ok(decision)
    }

    fn evaluate_all(
        &self,
        input: &PolicyInput<'_>,
        offered: &[FactorKind],
    ) -> Result<PolicyDecision, PolicyError> {
        let entities = self.entities(input)?;
        let first = self.evaluate(input, input.proved, &entities)?;
        if first.0 {
            return Ok(PolicyDecision {
                outcome: Outcome::Allow,
                step_up: None,
                satisfying: Vec::new(),
                reasons: first.1,
                then_approval: false,
            });
        }
        let mut satisfying = Vec::new();
        let mut step_up_reasons = None;
        for &factor in FactorKind::ALL
            .iter()
            .filter(|factor| offered.contains(factor))
        {
            let mut proved: Vec<(FactorKind, i64)> = input.proved.to_vec();
            proved.retain(|(kind, _)| *kind != factor);
            proved.push((factor, 0));
            let (permitted, reasons) = self.evaluate(input, &proved, &entities)?;
            if permitted {
                satisfying.push(factor);
                step_up_reasons.get_or_insert(reasons);
            }
        }
        if let Some(reasons) = step_up_reasons {
            return Ok(PolicyDecision {
                outcome: Outcome::StepUp,
                step_up: satisfying.first().copied(),
                satisfying,
                reasons,
                then_approval: false,
            });
        }
        // A policy may want a factor and an approval together: the factor
        // is asked for first, then the approval.
        let approval_offered = offered.contains(&FactorKind::Approval)
            && !input
                .proved
                .iter()
                .any(|(kind, _)| *kind == FactorKind::Approval);
        if approval_offered {
            for &factor in FactorKind::ALL
                .iter()
                .filter(|factor| **factor != FactorKind::Approval && offered.contains(factor))
            {
                let mut proved: Vec<(FactorKind, i64)> = input.proved.to_vec();
                proved.retain(|(kind, _)| *kind != factor);
                proved.push((factor, 0));
                proved.push((FactorKind::Approval, 0));
                let (permitted, reasons) = self.evaluate(input, &proved, &entities)?;
                if permitted {
                    return Ok(PolicyDecision {
                        outcome: Outcome::StepUp,
                        step_up: Some(factor),
                        satisfying: vec![factor],
                        reasons,
                        then_approval: true,
                    });
                }
            }
        }
        Ok(PolicyDecision {
            outcome: Outcome::Deny,
            step_up: None,
            satisfying,
            reasons: first.1,
            then_approval: false,
        })
    }

    fn evaluate(
        &self,
        input: &PolicyInput<'_>,
        proved: &[(FactorKind, i64)],
        entities: &Entities,
    ) -> Result<(bool, Vec<String>), PolicyError> {
        let source_ip = cached(&self.cache.ips, input.source_ip, || {
            Ok::<_, PolicyError>(RestrictedExpression::new_ip(input.source_ip.to_string()))
        })?;
        let context = context(input, proved, source_ip)?;
        let request = Request::new(
            self.names.uid(&self.names.identity, input.identity),
            self.names.action(input.action).clone(),
            self.names.uid(&self.names.resource, input.resource),
            context,
            None,
        )
        .map_err(|err| PolicyError::Request(err.to_string()))?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, entities);
        let mut reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| {
                self.labels
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| id.to_string())
            })
            .collect();
        reasons.sort_unstable();
        if response.diagnostics().errors().next().is_some() {
            let errors: Vec<String> = response
                .diagnostics()
                .errors()
                .map(ToString::to_string)
                .collect();
            tracing::warn!(identity = input.identity, errors = ?errors, "policy evaluation error, denying");
            return Ok((false, reasons));
        }
        Ok((response.decision() == CedarDecision::Allow, reasons))
    }

    // TODO: keep one entity store for all identities, zones and resources and
    // rebuild it on change, so that a decision-cache miss skips building
    // entities and their transitive closure (about a quarter of a miss).
    fn entities(&self, input: &PolicyInput<'_>) -> Result<Entities, PolicyError> {
        let names = &self.names;
        let identity = cached(
            &self.cache.identities,
            (input.identity.to_owned(), input.identity_learning),
            || {
                Entity::new(
                    names.uid(&names.identity, input.identity),
                    HashMap::from([
                        (
                            "name".to_owned(),
                            RestrictedExpression::new_string(input.identity.to_owned()),
                        ),
                        (
                            "learning".to_owned(),
                            RestrictedExpression::new_bool(input.identity_learning),
                        ),
                    ]),
                    HashSet::new(),
                )
                .map_err(|err| PolicyError::Request(err.to_string()))
            },
        )?;
        let mut all = vec![identity];
        if let Some(zone) = input.zone {
            let zone_entity = Entity::new(
                names.uid(&names.zone, &zone.name),
                HashMap::from([
                    (
                        "read_only".to_owned(),
                        RestrictedExpression::new_bool(zone.read_only),
                    ),
                    (
                        "sensitive".to_owned(),
                        RestrictedExpression::new_bool(zone.sensitive),
                    ),
                ]),
                HashSet::new(),
            )
            .map_err(|err| PolicyError::Request(err.to_string()))?;
            all.push(zone_entity);
        }
        let zone_name = input.zone.map(|zone| zone.name.clone());
        let resource = cached(
            &self.cache.resources,
            (
                input.resource.to_owned(),
                input.operation.to_owned(),
                zone_name,
            ),
            || {
                let parents = match input.zone {
                    Some(zone) => HashSet::from([names.uid(&names.zone, &zone.name)]),
                    None => HashSet::new(),
                };
                Entity::new(
                    names.uid(&names.resource, input.resource),
                    HashMap::from([(
                        "operation".to_owned(),
                        RestrictedExpression::new_string(input.operation.to_owned()),
                    )]),
                    parents,
                )
                .map_err(|err| PolicyError::Request(err.to_string()))
            },
        )?;
        all.push(resource);
        Entities::from_entities(all, None).map_err(|err| PolicyError::Request(err.to_string()))
    }

    #[doc(hidden)]
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("policies", &self.policy_count())
            .finish()
    }
}

impl Names {
    fn new() -> Result<Self, PolicyError> {
        let parse = |name: &str| {
            EntityTypeName::from_str(name).map_err(|err| PolicyError::Schema(err.to_string()))
        };
        let action_type = parse("Stepgate::Action")?;
        let action =
            |name: &str| EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(name));
        Ok(Self {
            identity: parse("Stepgate::Identity")?,
            zone: parse("Stepgate::Zone")?,
            resource: parse("Stepgate::Resource")?,
            actions: Action::ALL.map(|a| action(a.as_str())),
        })
    }

    fn uid(&self, type_name: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
    }

    fn action(&self, action: Action) -> &EntityUid {
        let [read, write, delete, admin] = &self.actions;
        match action {
            Action::Read => read,
            Action::Write => write,
            Action::Delete => delete,
            Action::Admin => admin,
        }
    }
}

fn context(
    input: &PolicyInput<'_>,
    proved: &[(FactorKind, i64)],
    source_ip: RestrictedExpression,
) -> Result<Context, PolicyError> {
    let proved_record = RestrictedExpression::new_record(
        proved
            .iter()
            .map(|(kind, age)| (kind.name().to_owned(), RestrictedExpression::new_long(*age))),
    )
    .map_err(|err| PolicyError::Request(err.to_string()))?;
    let assurance = proved
        .iter()
        .map(|(kind, _)| kind.strength())
        .max()
        .unwrap_or(0);
    let signals = RestrictedExpression::new_set(
        input
            .signals
            .iter()
            .map(|name| RestrictedExpression::new_string((*name).to_owned())),
    );
    Context::from_pairs([
        (
            "risk".to_owned(),
            RestrictedExpression::new_long(i64::from(input.risk)),
        ),
        ("signals".to_owned(), signals),
        ("proved".to_owned(), proved_record),
        (
            "assurance".to_owned(),
            RestrictedExpression::new_long(i64::from(assurance)),
        ),
        ("source_ip".to_owned(), source_ip),
        (
            "hour".to_owned(),
            RestrictedExpression::new_long(i64::from(input.hour)),
        ),
        (
            "weekday".to_owned(),
            RestrictedExpression::new_long(i64::from(input.weekday)),
        ),
    ])
    .map_err(|err| PolicyError::Request(err.to_string()))
}

fn schema() -> Result<Schema, PolicyError> {
    let (schema, _warnings) =
        Schema::from_cedarschema_str(SCHEMA).map_err(|err| PolicyError::Schema(err.to_string()))?;
    Ok(schema)
}

/// Renders a parse error with the line and column of each place it points
/// at, such as `line 40, column 12: unexpected token`.
fn with_position(text: &str, err: &(dyn miette::Diagnostic + Send + Sync)) -> String {
    let mut message = render_report(err);
    let mut parts = Vec::new();
    collect_labels(err, &mut parts, text);
    if !parts.is_empty() {
        message = format!("{} ({message})", parts.join("; "));
    }
    message
}

fn collect_labels(err: &dyn miette::Diagnostic, parts: &mut Vec<String>, text: &str) {
    if let Some(labels) = err.labels() {
        for label in labels {
            let offset = label.offset().min(text.len());
            let before = text.get(..offset).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit('\n')
                .next()
                .map_or(0, |tail| tail.chars().count())
                + 1;
            let what = label.label().unwrap_or("here");
            parts.push(format!("line {line}, column {column}: {what}"));
        }
    }
    if let Some(related) = err.related() {
        for inner in related {
            collect_labels(inner, parts, text);
        }
    }
}

fn render_report(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests;
