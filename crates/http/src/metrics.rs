//! Prometheus metrics of the HTTP front-end, served on the admin listener.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use stepgate_core::SignalKind;

type Labels = Vec<(&'static str, &'static str)>;

/// The front-end's metrics, all under the `stepgate_http` prefix.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    challenges: Family<Labels, Counter>,
    step_ups: Family<Labels, Counter>,
    signals: Family<Labels, Counter>,
    webhooks: Family<Labels, Counter>,
    decision_duration: Histogram,
    upstream_duration: Histogram,
    audit_queue: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("stepgate_http");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests by decision: allow, step_up, deny, unauthenticated, step_up_failed, approval_required, approval_wait_timeout, approval_rejected, bad_request, no_route, unavailable.",
            requests.clone(),
        );
        let challenges = Family::<Labels, Counter>::default();
        registry.register(
            "challenges",
            "Step-up challenges sent, by factor.",
            challenges.clone(),
        );
        let step_ups = Family::<Labels, Counter>::default();
        registry.register(
            "step_ups",
            "Step-up answers by outcome: success or the failure reason.",
            step_ups.clone(),
        );
        let signals = Family::<Labels, Counter>::default();
        registry.register(
            "signals",
            "Risk signals raised by authenticated requests, by signal.",
            signals.clone(),
        );
        let webhooks = Family::<Labels, Counter>::default();
        registry.register(
            "approval_webhooks",
            "Approval webhook attempts by result: delivered, retry, rejected, failed, not_sent.",
            webhooks.clone(),
        );
        let decision_duration = Histogram::new(exponential_buckets(0.000_002, 2.0, 20));
        registry.register_with_unit(
            "decision_duration",
            "Time the engine took to decide a request, without waiting for the audit trail.",
            Unit::Seconds,
            decision_duration.clone(),
        );
        let upstream_duration = Histogram::new(exponential_buckets(0.000_1, 2.0, 20));
        registry.register_with_unit(
            "upstream_duration",
            "Time from sending a request upstream to its response headers.",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let audit_queue = Gauge::default();
        registry.register(
            "audit_queue",
            "Audit records waiting to be written.",
            audit_queue.clone(),
        );
        Self {
            registry,
            requests,
            challenges,
            step_ups,
            signals,
            webhooks,
            decision_duration,
            upstream_duration,
            audit_queue,
        }
    }

    pub(crate) fn request(&self, decision: &'static str) {
        self.requests
            .get_or_create(&vec![("decision", decision)])
            .inc();
    }

    pub(crate) fn challenge(&self, factor: &'static str) {
        self.challenges
            .get_or_create(&vec![("factor", factor)])
            .inc();
    }

    pub(crate) fn step_up(&self, outcome: &'static str) {
        self.step_ups
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    pub(crate) fn signals(&self, kinds: impl Iterator<Item = SignalKind>) {
        for kind in kinds {
            self.signals
                .get_or_create(&vec![("signal", kind.name())])
                .inc();
        }
    }

    pub(crate) fn webhook(&self, result: &'static str) {
        self.webhooks.get_or_create(&vec![("result", result)]).inc();
    }

    pub(crate) fn decision_time(&self, seconds: f64) {
        self.decision_duration.observe(seconds);
    }

    pub(crate) fn upstream_time(&self, seconds: f64) {
        self.upstream_duration.observe(seconds);
    }

    /// Renders every metric in the Prometheus text format.
    pub(crate) fn render(&self, audit_queue: u64) -> String {
        self.audit_queue
            .set(i64::try_from(audit_queue).unwrap_or(i64::MAX));
        let mut text = String::new();
        if let Err(err) = encode(&mut text, &self.registry) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        text
    }
}
