//! Cost of classifying one statement, for the statements pgbench sends and
//! a larger reporting query. The PostgreSQL gateway classifies every
//! statement of a simple Query and every Parse, so this is its main cost
//! per statement besides the decision.
//!
//! It also measures the shape key of each statement, the cost of a cache
//! hit in the gateway.
//!
//! Run with `cargo bench -p stepgate-sql --bench classify`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use stepgate_sql::Classifier;

const STATEMENTS: [(&str, &str); 4] = [
    (
        "pgbench_select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
    ),
    (
        "pgbench_update",
        "UPDATE pgbench_accounts SET abalance = abalance + -2877 WHERE aid = 48213;",
    ),
    (
        "pgbench_insert",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
         VALUES (7, 1, 48213, -2877, CURRENT_TIMESTAMP);",
    ),
    (
        "report_join",
        "WITH recent AS (SELECT o.customer_id, sum(o.amount) AS total FROM orders o \
         WHERE o.created_at > now() - interval '7 days' GROUP BY o.customer_id) \
         SELECT c.name, r.total FROM customers c JOIN recent r ON r.customer_id = c.id \
         WHERE r.total > 1000 ORDER BY r.total DESC LIMIT 20",
    ),
];

fn classify(c: &mut Criterion) {
    let classifier = Classifier::default();
    let mut group = c.benchmark_group("classify");
    for (name, sql) in STATEMENTS {
        classifier.classify(sql).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| classifier.classify(black_box(sql)).unwrap())
        });
    }
    group.finish();

    // The key that lets the PostgreSQL gateway reuse a classification for
    // statements that differ only in numbers. A cache hit costs about this
    // plus a hash lookup and a clone.
    let mut group = c.benchmark_group("cache_key");
    for (name, sql) in STATEMENTS {
        group.bench_function(name, |b| {
            b.iter(|| stepgate_sql::shape::cache_key(black_box(sql)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
