//! Analysis of the request inputs a policy set reads, found by walking each
//! policy's JSON form once at load. Inputs no policy reads are left out of the
//! decision cache's key, so requests that differ only in them share one
//! cached decision.

use serde_json::Value;

/// The inputs some policy of the set can observe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Relevance {
    /// The principal entity: the identity's name and learning flag.
    pub(crate) principal: bool,
    /// The resource entity: route template, operation and zone.
    pub(crate) resource: bool,
    pub(crate) risk: bool,
    pub(crate) signals: bool,
    pub(crate) proved: bool,
    pub(crate) source_ip: bool,
    pub(crate) hour: bool,
    pub(crate) weekday: bool,
}

impl Relevance {
    /// Every input: the safe result when a policy cannot be analysed.
    pub(crate) const ALL: Relevance = Relevance {
        principal: true,
        resource: true,
        risk: true,
        signals: true,
        proved: true,
        source_ip: true,
        hour: true,
        weekday: true,
    };

    const NONE: Relevance = Relevance {
        principal: false,
        resource: false,
        risk: false,
        signals: false,
        proved: false,
        source_ip: false,
        hour: false,
        weekday: false,
    };

    /// Analyses the JSON form of every policy; `None` in the list (a policy
    /// that could not be turned into JSON) makes every input relevant.
    pub(crate) fn of<'a>(policies: impl IntoIterator<Item = Option<&'a Value>>) -> Relevance {
        let mut relevance = Relevance::NONE;
        for policy in policies {
            match policy {
                Some(json) => relevance.add_policy(json),
                None => return Relevance::ALL,
            }
        }
        relevance
    }

    fn add_policy(&mut self, policy: &Value) {
        if policy
            .get("principal")
            .is_some_and(|scope| !is_unconstrained(scope))
        {
            self.principal = true;
        }
        if policy
            .get("resource")
            .is_some_and(|scope| !is_unconstrained(scope))
        {
            self.resource = true;
        }
        if let Some(conditions) = policy.get("conditions") {
            self.walk(conditions);
        }
    }

    fn walk(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                for op in [".", "has"] {
                    if let Some(access) = map.get(op)
                        && access.get("left") == Some(&var("context"))
                    {
                        match access.get("attr").and_then(Value::as_str) {
                            Some(attr) => self.context_attr(attr),
                            None => *self = Relevance::ALL,
                        }
                        return;
                    }
                }
                if let Some(Value::String(name)) = map.get("Var") {
                    match name.as_str() {
                        "principal" => self.principal = true,
                        "resource" => self.resource = true,
                        "action" => {}
                        // The whole context, compared or passed along.
                        _ => *self = Relevance::ALL,
                    }
                    return;
                }
                for child in map.values() {
                    self.walk(child);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item);
                }
            }
            _ => {}
        }
    }

    fn context_attr(&mut self, attr: &str) {
        match attr {
            "risk" => self.risk = true,
            "signals" => self.signals = true,
            "proved" | "assurance" => self.proved = true,
            "source_ip" => self.source_ip = true,
            "hour" => self.hour = true,
            "weekday" => self.weekday = true,
            _ => *self = Relevance::ALL,
        }
    }
}

fn var(name: &str) -> Value {
    serde_json::json!({ "Var": name })
}

fn is_unconstrained(scope: &Value) -> bool {
    scope.get("op").and_then(Value::as_str) == Some("All")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relevance(text: &str) -> Relevance {
        let set: cedar_policy::PolicySet = text.parse().unwrap();
        let jsons: Vec<Value> = set
            .policies()
            .map(|policy| policy.to_json().unwrap())
            .collect();
        Relevance::of(jsons.iter().map(Some))
    }

    #[test]
    fn default_policy_reads_risk_and_proofs_only() {
        let relevance = relevance(include_str!("../policies/default.cedar"));
        assert_eq!(
            relevance,
            Relevance {
                risk: true,
                proved: true,
                ..Relevance::NONE
            }
        );
    }

    #[test]
    fn every_kind_of_input_is_found() {
        let cases = [
            (
                r#"permit (principal == Stepgate::Identity::"ci", action, resource);"#,
                "principal",
            ),
            (
                r#"permit (principal, action, resource) when { principal.learning };"#,
                "principal",
            ),
            (
                r#"permit (principal, action, resource in Stepgate::Zone::"z");"#,
                "resource",
            ),
            (
                r#"permit (principal, action, resource) when { resource.operation like "GET *" };"#,
                "resource",
            ),
            (
                r#"permit (principal, action, resource) when { context.signals.contains("x") };"#,
                "signals",
            ),
            (
                r#"permit (principal, action, resource) when { context.source_ip.isLoopback() };"#,
                "source_ip",
            ),
            (
                r#"permit (principal, action, resource) when { context.hour < 6 };"#,
                "hour",
            ),
            (
                r#"permit (principal, action, resource) when { context has weekday };"#,
                "weekday",
            ),
        ];
        for (text, input) in cases {
            let found = relevance(text);
            let flag = match input {
                "principal" => found.principal,
                "resource" => found.resource,
                "signals" => found.signals,
                "source_ip" => found.source_ip,
                "hour" => found.hour,
                "weekday" => found.weekday,
                _ => unreachable!(),
            };
            assert!(flag, "{input} not found in {text}: {found:?}");
            assert!(!found.risk, "{text}: {found:?}");
        }
    }

    #[test]
    fn whole_context_makes_everything_relevant() {
        let found =
            relevance(r#"permit (principal, action, resource) when { context == { "risk": 1 } };"#);
        assert_eq!(found, Relevance::ALL);
        assert_eq!(Relevance::of([None]), Relevance::ALL);
    }
}
