//! Offline replay: the engine's risk scoring and policy run over recorded
//! events in time order, learning as they go, so that operators can tune a
//! policy before they enforce it and measure how well it detects attacks.
//!
//! Memory is bounded by the number of identities: events stream through a
//! fixed-size reordering buffer, and each identity keeps one baseline.

pub mod cloudtrail;
pub mod event;
pub mod input;
pub mod jsonl;
mod report;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Write};
use std::sync::Arc;

use serde::Serialize;
use stepgate_core::{FactorKind, Locator, Outcome, RequestFacts, Signal};
use stepgate_engine::{Settings, evaluate_policy};
use stepgate_policy::Policy;
use stepgate_risk::{Accepted, Assessment, Baseline, FailureKind, Failures};

pub use event::{Event, EventError};
pub use input::{Discovered, Format, Skip, discover, read_file};
pub use report::{Label, Labels, MAX_KEPT_SKIPS, Report};

/// Events held back to put them in time order. An event later than this
/// many newer ones is replayed when it arrives, out of order.
pub const REORDER_CAPACITY: usize = 65_536;

/// Outcome assumed for step-ups, because no client responds to a challenge
/// in a replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StepUps {
    /// Every step-up fails: a challenged event teaches nothing, as when the
    /// caller has the stolen token but not the second factor.
    #[default]
    Fail,
    /// Every step-up succeeds and the event teaches the baseline.
    Pass,
    /// Events labelled normal pass their step-ups, attack events fail
    /// theirs: the owner has the second factor, the thief does not.
    Labels,
}

/// One identity's state during a replay.
#[derive(Default)]
struct IdentityState {
    baseline: Baseline,
    failures: Failures,
}

/// An event waiting in the reordering buffer, ordered by time, then arrival.
struct Pending {
    key: (i64, u64),
    /// Boxed, so that reordering the heap moves a pointer, not the event.
    event: Box<Event>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// The decision for one replayed event, as written to the output.
#[derive(Serialize)]
struct OutputLine<'a> {
    event_id: &'a str,
    time: String,
    identity: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    operation: &'a str,
    decision: &'static str,
    risk: u8,
    signals: Vec<OutputSignal<'a>>,
}

#[derive(Serialize)]
struct OutputSignal<'a> {
    name: &'static str,
    weight: u8,
    reason: &'a str,
}

/// Replays events through the engine's scorer and policy.
pub struct Replayer<W: Write> {
    settings: Settings,
    policy: Policy,
    locator: Option<Arc<dyn Locator>>,
    states: HashMap<String, IdentityState>,
    pending: BinaryHeap<Reverse<Pending>>,
    arrivals: u64,
    last_time: i64,
    offered: Vec<FactorKind>,
    no_acceptances: Accepted,
    step_ups: StepUps,
    out: W,
    report: Report,
}

impl<W: Write> Replayer<W> {
    /// Creates a replayer writing one JSON line per event to `out`. Every identity
    /// is treated as having every factor enrolled, so a decision reads
    /// `step_up` whenever some factor would permit the event.
    pub fn new(settings: Settings, policy: Policy, out: W) -> Self {
        Self {
            settings,
            policy,
            locator: None,
            states: HashMap::new(),
            pending: BinaryHeap::new(),
            arrivals: 0,
            last_time: i64::MIN,
            offered: vec![FactorKind::Totp],
            no_acceptances: Accepted::default(),
            step_ups: StepUps::Fail,
            out,
            report: Report::default(),
        }
    }

    /// Looks client addresses up with `locator` (GeoIP databases).
    pub fn with_locator(mut self, locator: Arc<dyn Locator>) -> Self {
        self.locator = Some(locator);
        self
    }

    /// Sets what happens after a step-up.
    pub fn with_step_ups(mut self, step_ups: StepUps) -> Self {
        self.step_ups = step_ups;
        self
    }

    /// Compares decisions with `labels` in the report.
    pub fn with_labels(mut self, labels: Labels) -> Self {
        self.report.set_labels(labels);
        self
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Counts something that could not be replayed.
    pub fn skip(&mut self, skip: Skip) {
        tracing::debug!(place = %skip.place, reason = %skip.reason, "skipped");
        self.report.add_skip(skip);
    }

    /// Counts a record that is not a request, such as an administrative
    /// audit record.
    pub fn ignore(&mut self) {
        self.report.ignored += 1;
    }

    /// Takes one event; it is replayed once it is the oldest of the
    /// reordering buffer, or at [`Replayer::finish`].
    pub fn push(&mut self, event: Event) -> io::Result<()> {
        self.report.read += 1;
        self.arrivals += 1;
        self.pending.push(Reverse(Pending {
            key: (event.time.as_millis(), self.arrivals),
            event: Box::new(event),
        }));
        if self.pending.len() > REORDER_CAPACITY
            && let Some(Reverse(oldest)) = self.pending.pop()
        {
            self.replay(*oldest.event)?;
        }
        Ok(())
    }

    /// Replays the events still held and returns the output and the report.
    pub fn finish(mut self) -> io::Result<(W, Report)> {
        while let Some(Reverse(oldest)) = self.pending.pop() {
            self.replay(*oldest.event)?;
        }
        self.out.flush()?;
        Ok((self.out, self.report))
    }

    /// Builds the request facts of an event. The operation, resource, user
    /// agent and credential move into the facts, and the rest of the replay
    /// reads them there.
    fn facts(&self, event: &mut Event) -> RequestFacts {
        let zone = if event.resource.starts_with('/') {
            self.settings.zones.find(&event.resource).cloned()
        } else {
            None
        };
        let method = event
            .operation
            .split_once(' ')
            .map_or_else(String::new, |(method, _)| method.to_owned());
        let location = match &self.locator {
            Some(locator) if !event.client_addr.is_unspecified() => {
                locator.locate(event.client_addr)
            }
            _ => None,
        };
        RequestFacts {
            client_addr: event.client_addr,
            peer_addr: event.client_addr,
            method,
            path: event.resource.clone(),
            operation: std::mem::take(&mut event.operation),
            resource: std::mem::take(&mut event.resource),
            action: event.action,
            zone_read_only: zone.as_ref().is_some_and(|zone| zone.read_only),
            zone_sensitive: zone.as_ref().is_some_and(|zone| zone.sensitive),
            zone: zone.map(|zone| zone.name),
            time: event.time,
            user_agent: event.user_agent.take(),
            credential: event.credential.take(),
            location,
        }
    }

    fn replay(&mut self, mut event: Event) -> io::Result<()> {
        let millis = event.time.as_millis();
        if millis < self.last_time {
            self.report.out_of_order += 1;
        }
        self.last_time = self.last_time.max(millis);
        let facts = self.facts(&mut event);
        let scorer = self.settings.risk.clone();
        if event.error == Some(EventError::Authentication) {
            // The gateway never scores a request whose credential failed:
            // it records the failure against the identity and refuses it.
            self.states
                .entry(event.identity.clone())
                .or_default()
                .failures
                .record(FailureKind::Authentication, event.time, facts.network());
            let refused = Assessment::default();
            self.write(&event, &facts.operation, Outcome::Deny, &refused)?;
            self.report.count(&event, Outcome::Deny, &[]);
            return Ok(());
        }
        if !self.states.contains_key(&event.identity) {
            self.states
                .insert(event.identity.clone(), IdentityState::default());
        }
        let Some(state) = self.states.get_mut(&event.identity) else {
            return Ok(());
        };

        let assessment = scorer.assess(
            &state.baseline,
            &state.failures,
            &self.no_acceptances,
            &facts,
        );
        let learning = scorer.in_learning(&state.baseline);
        scorer.observe(&mut state.baseline, &facts);
        let outcome = match evaluate_policy(
            &self.settings,
            &self.policy,
            &event.identity,
            learning,
            &facts,
            &assessment,
            &[],
            &self.offered,
        ) {
            Ok(decision) => decision.outcome,
            Err(err) => {
                // The gateway fails closed when the policy cannot decide.
                tracing::warn!(event_id = %event.event_id, error = %err, "policy evaluation failed, counted as deny");
                self.report.policy_errors += 1;
                Outcome::Deny
            }
        };
        let passed = outcome == Outcome::StepUp
            && match self.step_ups {
                StepUps::Fail => false,
                StepUps::Pass => true,
                StepUps::Labels => self.report.label_of(&event.event_id) == Some(Label::Normal),
            };
        match event.error {
            Some(EventError::Authorization) => {
                state
                    .failures
                    .record(FailureKind::Authorization, event.time, facts.network());
            }
            Some(EventError::Other) | None if outcome == Outcome::Allow || passed => {
                scorer.learn(&mut state.baseline, &facts);
            }
            Some(EventError::Authentication | EventError::Other) | None => {}
        }
        if event.bytes > 0 || event.rows > 0 {
            scorer.record_volume(&mut state.baseline, event.time, event.bytes, event.rows);
        }
        self.write(&event, &facts.operation, outcome, &assessment)?;
        self.report.count(&event, outcome, &assessment.signals);
        Ok(())
    }

    fn write(
        &mut self,
        event: &Event,
        operation: &str,
        outcome: Outcome,
        assessment: &Assessment,
    ) -> io::Result<()> {
        let line = OutputLine {
            event_id: &event.event_id,
            time: event.time.to_rfc3339(),
            identity: &event.identity,
            session: event.session.as_deref(),
            operation,
            decision: outcome.as_str(),
            risk: assessment.score.value(),
            signals: assessment.signals.iter().map(output_signal).collect(),
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")
    }
}

fn output_signal(signal: &Signal) -> OutputSignal<'_> {
    OutputSignal {
        name: signal.kind.name(),
        weight: signal.weight,
        reason: &signal.reason,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use stepgate_config::StepUpConfig;
    use stepgate_core::{Action, Timestamp, Zones};
    use stepgate_risk::{RiskConfig, Scorer};

    use super::*;

    fn settings() -> Settings {
        Settings {
            risk: Arc::new(Scorer::new(RiskConfig::default())),
            step_up: StepUpConfig::default(),
            zones: Zones::new(Vec::new()),
        }
    }

    fn event(id: &str, secs: i64, addr: &str, operation: &str) -> Event {
        Event {
            event_id: id.to_owned(),
            time: Timestamp::from_secs(secs),
            identity: "bot".to_owned(),
            session: None,
            client_addr: addr.parse::<IpAddr>().unwrap(),
            operation: operation.to_owned(),
            resource: operation.to_owned(),
            action: Action::Read,
            user_agent: Some("bot/1".to_owned()),
            credential: Some("key-1".to_owned()),
            error: None,
            bytes: 0,
            rows: 0,
        }
    }

    fn lines(out: Vec<u8>) -> Vec<serde_json::Value> {
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn events_replay_in_time_order() {
        let policy = Policy::default_policy().unwrap();
        let mut replayer = Replayer::new(settings(), policy, Vec::new());
        for (id, secs) in [("c", 30), ("a", 10), ("b", 20), ("d", 40)] {
            replayer
                .push(event(id, secs, "192.0.2.1", "GET /a"))
                .unwrap();
        }
        let (out, report) = replayer.finish().unwrap();
        let ids: Vec<String> = lines(out)
            .iter()
            .map(|line| line["event_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(report.read, 4);
        assert_eq!(report.out_of_order, 0);
    }

    #[test]
    fn learning_then_new_network_steps_up() {
        let policy = Policy::default_policy().unwrap();
        let mut replayer = Replayer::new(settings(), policy, Vec::new());
        for i in 0..10 {
            replayer
                .push(event(&format!("e{i}"), 1000 + i, "192.0.2.1", "GET /a"))
                .unwrap();
        }
        replayer
            .push(event("moved", 2000, "198.51.100.7", "GET /a"))
            .unwrap();
        let (out, report) = replayer.finish().unwrap();
        let lines = lines(out);
        let last = lines.last().unwrap();
        assert_eq!(last["decision"], "step_up", "{last}");
        assert_eq!(last["signals"][0]["name"], "new_network");
        assert_eq!(report.decisions.allow, 10);
        assert_eq!(report.decisions.step_up, 1);
    }

    #[test]
    fn failures_and_volume_from_events_raise_signals() {
        let settings = Settings {
            risk: Arc::new(Scorer::new(RiskConfig {
                volume_min_windows: 0,
                volume_floor_bytes: 1000,
                ..RiskConfig::default()
            })),
            ..settings()
        };
        let policy = Policy::default_policy().unwrap();
        let mut replayer = Replayer::new(settings, policy, Vec::new());
        for i in 0..6 {
            replayer
                .push(event(&format!("e{i}"), 1000 + i, "192.0.2.1", "GET /a"))
                .unwrap();
        }
        let mut bulk = event("bulk", 1010, "192.0.2.1", "GET /a");
        bulk.bytes = 50_000;
        replayer.push(bulk).unwrap();
        for i in 0..5 {
            let mut denied = event(&format!("d{i}"), 1020 + i, "192.0.2.1", "GET /a");
            denied.error = Some(EventError::Authorization);
            replayer.push(denied).unwrap();
        }
        replayer
            .push(event("after", 1030, "192.0.2.1", "GET /a"))
            .unwrap();
        let (out, _) = replayer.finish().unwrap();
        let lines = lines(out);
        let names: Vec<&str> = lines.last().unwrap()["signals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|signal| signal["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["failure_burst", "data_volume"]);
    }
}
