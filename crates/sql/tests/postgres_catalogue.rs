//! Checks the function catalogue against a real PostgreSQL server: every
//! pure function must be marked immutable or stable in `pg_proc` for all its
//! overloads, and every listed side-effect function that the server has must
//! be volatile.
//!
//! The server comes from `stepgate_testpg`, which skips the test with a
//! printed reason when PostgreSQL is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use stepgate_sql::{DEFAULT_PURE_FUNCTIONS, SIDE_EFFECT_FUNCTIONS};
use stepgate_testpg::{Options, Postgres};

/// Returns (name, volatility marks of all overloads) for each `pg_catalog`
/// function in `names`.
fn volatility(postgres: &Postgres, names: &[&str]) -> Vec<(String, String)> {
    let list = names
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(",");
    let query = format!(
        "SELECT proname, string_agg(DISTINCT provolatile::text, '' ORDER BY provolatile::text) \
         FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace \
         AND proname IN ({list}) GROUP BY proname ORDER BY proname"
    );
    postgres
        .sql(&query)
        .lines()
        .filter_map(|line| line.split_once('|'))
        .map(|(name, marks)| (name.to_owned(), marks.to_owned()))
        .collect()
}

#[test]
fn catalogue_matches_postgres_volatility() {
    let Some(postgres) = Postgres::start(Options::default()) else {
        return;
    };

    let pure = volatility(&postgres, DEFAULT_PURE_FUNCTIONS);
    let missing: Vec<&&str> = DEFAULT_PURE_FUNCTIONS
        .iter()
        .filter(|name| !pure.iter().any(|(found, _)| found == *name))
        .collect();
    assert!(
        missing.is_empty(),
        "pure functions unknown to PostgreSQL: {missing:?}"
    );
    let volatile: Vec<&(String, String)> = pure
        .iter()
        .filter(|(_, marks)| marks.contains('v'))
        .collect();
    assert!(
        volatile.is_empty(),
        "pure functions with a volatile overload: {volatile:?}"
    );

    let side_effects = volatility(&postgres, SIDE_EFFECT_FUNCTIONS);
    assert!(!side_effects.is_empty());
    // These two are marked stable but assign a transaction ID to a
    // transaction that has none, which is why the side-effect list
    // overrides volatility marks.
    let not_volatile: Vec<&str> = side_effects
        .iter()
        .filter(|(_, marks)| marks != "v")
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(not_volatile, ["pg_current_xact_id", "txid_current"]);
}
