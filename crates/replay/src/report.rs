//! The replay report: counts, skips, busiest identities, top signals and,
//! with labels, detection figures.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufRead;

use serde::Serialize;
use stepgate_core::{Outcome, Signal};

use crate::event::Event;
use crate::input::Skip;

/// Ground truth of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Attack,
    Normal,
}

/// Labels by event id.
#[derive(Clone, Debug, Default)]
pub struct Labels(HashMap<String, Label>);

impl Labels {
    /// Reads lines of `event_id,label` with label `attack` or `normal`. A
    /// header line `event_id,label`, a byte order mark and blank lines are
    /// allowed. Errors name the line; an id given twice is an error too.
    pub fn read(reader: impl BufRead) -> Result<Labels, String> {
        let mut labels = HashMap::new();
        for (index, line) in reader.lines().enumerate() {
            let number = index + 1;
            let line = line.map_err(|err| format!("line {number}: cannot read: {err}"))?;
            let line = line.trim_start_matches('\u{feff}').trim();
            if line.is_empty() || (number == 1 && line == "event_id,label") {
                continue;
            }
            let Some((id, label)) = line.rsplit_once(',') else {
                return Err(format!(
                    "line {number}: {line:?} is not event_id,label; write for example 3f2a...,attack"
                ));
            };
            let label = match label.trim() {
                "attack" => Label::Attack,
                "normal" => Label::Normal,
                other => {
                    return Err(format!(
                        "line {number}: label {other:?} is not valid; use attack or normal"
                    ));
                }
            };
            let id = id.trim();
            if labels.insert(id.to_owned(), label).is_some() {
                return Err(format!(
                    "line {number}: event id {id:?} is labelled twice; keep one label per event"
                ));
            }
        }
        Ok(Labels(labels))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, id: &str) -> Option<Label> {
        self.0.get(id).copied()
    }
}

/// Most skips kept with their reasons; the rest are only counted, so a
/// wrong `--format` over a large input cannot fill memory.
pub const MAX_KEPT_SKIPS: usize = 1000;

/// Decisions of one identity, or of all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub events: u64,
    pub allow: u64,
    pub step_up: u64,
    pub deny: u64,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        self.events += 1;
        match outcome {
            Outcome::Allow => self.allow += 1,
            Outcome::StepUp => self.step_up += 1,
            Outcome::Deny => self.deny += 1,
        }
    }
}

/// Detection figures of one identity, or of all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Detection {
    pub attack_events: u64,
    /// Attack events stepped up or denied.
    pub attack_caught: u64,
    pub normal_events: u64,
    /// Normal events stepped up or denied.
    pub normal_challenged: u64,
    pub unlabelled: u64,
    /// Events of the identity from its first attack event to the first
    /// step-up or denial at or after it. It is 0 when the first attack event
    /// was caught, and absent when none was.
    pub events_to_first_challenge: Option<u64>,
    #[serde(skip)]
    since_first_attack: Option<u64>,
}

impl Detection {
    fn add(&mut self, label: Option<Label>, outcome: Outcome) {
        let caught = outcome != Outcome::Allow;
        match label {
            Some(Label::Attack) => {
                self.attack_events += 1;
                self.attack_caught += u64::from(caught);
                if self.since_first_attack.is_none() {
                    self.since_first_attack = Some(0);
                }
            }
            Some(Label::Normal) => {
                self.normal_events += 1;
                self.normal_challenged += u64::from(caught);
            }
            None => self.unlabelled += 1,
        }
        if let Some(since) = self.since_first_attack
            && self.events_to_first_challenge.is_none()
        {
            if caught {
                self.events_to_first_challenge = Some(since);
            } else {
                self.since_first_attack = Some(since + 1);
            }
        }
    }

    /// Share of attack events stepped up or denied, in per cent.
    pub fn attack_rate(&self) -> Option<f64> {
        percent(self.attack_caught, self.attack_events)
    }

    /// Share of normal events challenged, in per cent.
    pub fn false_rate(&self) -> Option<f64> {
        percent(self.normal_challenged, self.normal_events)
    }
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// Everything a replay counted.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Events read (replayed or not yet).
    pub read: u64,
    pub decisions: Tally,
    /// Files, records and lines that could not be replayed.
    pub skipped_count: u64,
    /// The first [`MAX_KEPT_SKIPS`] of them, with their reasons.
    pub skipped: Vec<Skip>,
    /// Records that are not requests (administrative audit records).
    pub ignored: u64,
    /// Events replayed after a later one, beyond the reordering buffer.
    pub out_of_order: u64,
    pub policy_errors: u64,
    pub identities: HashMap<String, Tally>,
    pub signals: HashMap<&'static str, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection: Option<DetectionReport>,
    #[serde(skip)]
    labels: Option<Labels>,
}

/// Detection figures overall and per identity.
#[derive(Debug, Default, Serialize)]
pub struct DetectionReport {
    pub labels: usize,
    pub overall: Detection,
    pub identities: HashMap<String, Detection>,
}

impl Report {
    pub(crate) fn set_labels(&mut self, labels: Labels) {
        self.detection = Some(DetectionReport {
            labels: labels.len(),
            ..DetectionReport::default()
        });
        self.labels = Some(labels);
    }

    /// Returns the label of an event, when labels were given.
    pub(crate) fn label_of(&self, event_id: &str) -> Option<Label> {
        self.labels.as_ref().and_then(|labels| labels.get(event_id))
    }

    pub(crate) fn count(&mut self, event: &Event, outcome: Outcome, signals: &[Signal]) {
        self.decisions.add(outcome);
        match self.identities.get_mut(&event.identity) {
            Some(tally) => tally.add(outcome),
            None => {
                let mut tally = Tally::default();
                tally.add(outcome);
                self.identities.insert(event.identity.clone(), tally);
            }
        }
        for signal in signals {
            *self.signals.entry(signal.kind.name()).or_default() += 1;
        }
        if let (Some(labels), Some(detection)) = (&self.labels, &mut self.detection) {
            let label = labels.get(&event.event_id);
            detection.overall.add(label, outcome);
            detection
                .identities
                .entry(event.identity.clone())
                .or_default()
                .add(label, outcome);
        }
    }

    /// True when some file, record or line could not be replayed.
    pub fn has_skips(&self) -> bool {
        self.skipped_count > 0
    }

    pub(crate) fn add_skip(&mut self, skip: Skip) {
        self.skipped_count += 1;
        if self.skipped.len() < MAX_KEPT_SKIPS {
            self.skipped.push(skip);
        }
    }

    /// Renders the summary for people, as printed to standard error.
    pub fn render(&self, seconds: f64) -> String {
        let mut out = String::new();
        let rate = if seconds > 0.0 {
            self.decisions.events as f64 / seconds
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "replay: {} events read, {} replayed in {seconds:.2} s ({rate:.0} events/s)",
            self.read, self.decisions.events
        );
        let _ = writeln!(
            out,
            "decisions: allow {}, step_up {}, deny {}",
            self.decisions.allow, self.decisions.step_up, self.decisions.deny
        );
        if self.out_of_order > 0 {
            let _ = writeln!(
                out,
                "out of order: {} events arrived after later ones beyond the reordering buffer",
                self.out_of_order
            );
        }
        if self.policy_errors > 0 {
            let _ = writeln!(
                out,
                "policy errors: {} (counted as deny)",
                self.policy_errors
            );
        }
        if self.ignored > 0 {
            let _ = writeln!(
                out,
                "ignored: {} records that are not requests (administrative changes)",
                self.ignored
            );
        }
        if self.skipped_count > 0 {
            let _ = writeln!(out, "skipped: {}", self.skipped_count);
            for skip in self.skipped.iter().take(20) {
                let _ = writeln!(
                    out,
                    "  {}: {}",
                    printable(&skip.place),
                    printable(&skip.reason)
                );
            }
            if self.skipped_count > 20 {
                let _ = writeln!(out, "  ... and {} more", self.skipped_count - 20);
            }
        }
        let mut busiest: Vec<(&String, &Tally)> = self.identities.iter().collect();
        busiest.sort_by(|a, b| b.1.events.cmp(&a.1.events).then(a.0.cmp(b.0)));
        let _ = writeln!(
            out,
            "busiest identities ({} in all):",
            self.identities.len()
        );
        for (identity, tally) in busiest.iter().take(10) {
            let _ = writeln!(
                out,
                "  {}: {} events, step_up {}, deny {}",
                printable(identity),
                tally.events,
                tally.step_up,
                tally.deny
            );
        }
        let mut signals: Vec<(&&str, &u64)> = self.signals.iter().collect();
        signals.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if !signals.is_empty() {
            let _ = writeln!(out, "top signals:");
            for (name, count) in signals.iter().take(10) {
                let _ = writeln!(out, "  {name}: {count}");
            }
        }
        if let Some(detection) = &self.detection {
            let overall = &detection.overall;
            let matched = overall.attack_events + overall.normal_events;
            let _ = writeln!(
                out,
                "detection ({} labels, {matched} matched an event, {} events unlabelled):",
                detection.labels, overall.unlabelled
            );
            if matched == 0 {
                let _ = writeln!(
                    out,
                    "  no label matched an event id: check that the labels belong to these events"
                );
            }
            let _ = writeln!(out, "  overall: {}", describe(&detection.overall));
            let mut identities: Vec<(&String, &Detection)> = detection
                .identities
                .iter()
                .filter(|(_, figures)| figures.attack_events > 0 || figures.normal_challenged > 0)
                .collect();
            identities.sort_by(|a, b| a.0.cmp(b.0));
            for (identity, figures) in identities {
                let _ = writeln!(out, "  {}: {}", printable(identity), describe(figures));
            }
        }
        out
    }
}

/// Escapes control characters, so that recorded text cannot move the
/// terminal's cursor or change its colours.
fn printable(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.escape_default().to_string()
    } else {
        text.to_owned()
    }
}

fn describe(figures: &Detection) -> String {
    let rate = |value: Option<f64>| value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} %"));
    let first = match (figures.attack_events, figures.events_to_first_challenge) {
        (0, _) => String::new(),
        (_, Some(events)) => {
            format!("; first challenge {events} events after the first attack event")
        }
        (_, None) => "; no attack event challenged".to_owned(),
    };
    format!(
        "attack events stepped up or denied {}/{} ({}), normal events challenged {}/{} ({}){first}",
        figures.attack_caught,
        figures.attack_events,
        rate(figures.attack_rate()),
        figures.normal_challenged,
        figures.normal_events,
        rate(figures.false_rate()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_with_clear_errors() {
        let labels =
            Labels::read("\u{feff}event_id,label\r\na,attack\r\n\nb,normal\n".as_bytes()).unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels.get("a"), Some(Label::Attack));
        let err = Labels::read("a,evil\n".as_bytes()).unwrap_err();
        assert_eq!(
            err,
            "line 1: label \"evil\" is not valid; use attack or normal"
        );
        let err = Labels::read("a\n".as_bytes()).unwrap_err();
        assert!(
            err.starts_with("line 1: \"a\" is not event_id,label"),
            "{err}"
        );
        let err = Labels::read("a,attack\na,normal\n".as_bytes()).unwrap_err();
        assert_eq!(
            err,
            "line 2: event id \"a\" is labelled twice; keep one label per event"
        );
    }

    #[test]
    fn detection_counts_the_delay_to_the_first_challenge() {
        let mut detection = Detection::default();
        detection.add(Some(Label::Normal), Outcome::Allow);
        detection.add(Some(Label::Attack), Outcome::Allow);
        detection.add(Some(Label::Normal), Outcome::Allow);
        detection.add(Some(Label::Attack), Outcome::Allow);
        detection.add(Some(Label::Attack), Outcome::StepUp);
        detection.add(Some(Label::Attack), Outcome::Deny);
        detection.add(Some(Label::Normal), Outcome::StepUp);
        assert_eq!(detection.events_to_first_challenge, Some(3));
        assert_eq!(detection.attack_caught, 2);
        assert_eq!(detection.attack_events, 4);
        assert_eq!(detection.normal_challenged, 1);
        assert_eq!(detection.attack_rate(), Some(50.0));
    }
}
