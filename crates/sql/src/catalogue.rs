//! The catalogue of functions a statement may call without being classed
//! `function`.

use std::collections::BTreeSet;

/// Built-in PostgreSQL functions (schema `pg_catalog`) that have no side
/// effects. Each is marked immutable or stable in PostgreSQL's `pg_proc`
/// for every overload, which the crate's tests check against a PostgreSQL
/// server when one is installed. Volatile functions without side effects,
/// such as `random`, are left out because the rule is the volatility mark.
///
/// `coalesce`, `nullif`, `greatest` and `least` are absent because the
/// parser turns them into expressions, not function calls.
pub const DEFAULT_PURE_FUNCTIONS: &[&str] = &[
    // Aggregates.
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "corr",
    "covar_pop",
    "covar_samp",
    // Window functions.
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // Date and time.
    "now",
    "statement_timestamp",
    "transaction_timestamp",
    "date_trunc",
    "date_part",
    "date_bin",
    "extract",
    "age",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_number",
    "make_date",
    "make_time",
    "make_interval",
    "make_timestamp",
    "make_timestamptz",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "isfinite",
    "timezone",
    // Strings.
    "lower",
    "upper",
    "initcap",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "substring",
    "substr",
    "position",
    "strpos",
    "overlay",
    "btrim",
    "ltrim",
    "rtrim",
    "lpad",
    "rpad",
    "replace",
    "split_part",
    "concat",
    "concat_ws",
    "format",
    "left",
    "right",
    "repeat",
    "reverse",
    "translate",
    "starts_with",
    "ascii",
    "chr",
    "to_hex",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_like",
    "regexp_count",
    "regexp_instr",
    "regexp_substr",
    "string_to_array",
    "string_to_table",
    "array_to_string",
    "normalize",
    "is_normalized",
    "md5",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "encode",
    "decode",
    // Numbers.
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "trunc",
    "mod",
    "div",
    "power",
    "sqrt",
    "cbrt",
    "exp",
    "ln",
    "log",
    "log10",
    "sign",
    "gcd",
    "lcm",
    "width_bucket",
    "pi",
    "degrees",
    "radians",
    // JSON accessors and constructors.
    "to_json",
    "to_jsonb",
    "row_to_json",
    "array_to_json",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "json_object",
    "jsonb_object",
    "json_extract_path",
    "jsonb_extract_path",
    "json_extract_path_text",
    "jsonb_extract_path_text",
    "json_array_length",
    "jsonb_array_length",
    "json_typeof",
    "jsonb_typeof",
    "json_object_keys",
    "jsonb_object_keys",
    "json_array_elements",
    "jsonb_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements_text",
    "json_each",
    "jsonb_each",
    "json_each_text",
    "jsonb_each_text",
    "jsonb_pretty",
    "jsonb_strip_nulls",
    "jsonb_set",
    "jsonb_insert",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    // Arrays and set-returning helpers.
    "array_length",
    "array_lower",
    "array_upper",
    "array_ndims",
    "array_dims",
    "cardinality",
    "array_position",
    "array_positions",
    "array_append",
    "array_prepend",
    "array_cat",
    "array_remove",
    "array_replace",
    "unnest",
    "generate_series",
    "generate_subscripts",
    // Session and catalogue information.
    "current_database",
    "current_schema",
    "current_setting",
    "version",
    "pg_typeof",
    "format_type",
];

/// Function names, matched in any schema, that have side effects or reach
/// outside the database. They are always classed `function` and reported in
/// `Statement::side_effect_functions`, even when the pure list contains them.
pub const SIDE_EFFECT_FUNCTIONS: &[&str] = &[
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_log_backend_memory_contexts",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_import_system_collations",
    "pg_logical_emit_message",
    "pg_notify",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "set_config",
    "nextval",
    "setval",
    "txid_current",
    "pg_current_xact_id",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
];

/// Name prefixes with the same meaning as [`SIDE_EFFECT_FUNCTIONS`]: large
/// object file access and changes (`lo_import`, `lo_export`, `lo_unlink`,
/// ...), `dblink` connections and remote statements, advisory locks, server
/// directory listings, replication slots and origins, statistics resets.
pub const SIDE_EFFECT_PREFIXES: &[&str] = &[
    "lo_",
    "dblink",
    "pg_advisory_",
    "pg_try_advisory_",
    "pg_ls_",
    "pg_create_",
    "pg_drop_replication_slot",
    "pg_replication_",
    "pg_stat_reset",
    "pg_stat_statements_reset",
];

/// The catalogue's verdict on a called function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// Listed as side-effect free: the call does not raise the class.
    Pure,
    /// Known to have side effects: class `function`, and flagged.
    SideEffect,
    /// Neither: class `function`, because an unknown function may do anything.
    Unknown,
}

/// The catalogue of functions that may be called without making a statement
/// `function` class.
///
/// Rule: a call is pure only when its name is in the pure list and, if
/// schema-qualified, the schema is `pg_catalog`. Unqualified names match
/// because PostgreSQL searches `pg_catalog` before the schemas of
/// `search_path` unless `search_path` names `pg_catalog` explicitly later.
/// Every other call is `function`: unknown means possibly harmful. Names on
/// the side-effect lists are never pure, even when added to the pure list.
#[derive(Debug, Clone)]
pub struct FunctionCatalogue {
    pure: BTreeSet<String>,
}

impl Default for FunctionCatalogue {
    fn default() -> Self {
        Self::new(DEFAULT_PURE_FUNCTIONS.iter().copied())
    }
}

impl FunctionCatalogue {
    /// Creates a catalogue whose pure list is exactly `pure`: lower-case
    /// `pg_catalog` function names without schema.
    pub fn new<'a>(pure: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            pure: pure.into_iter().map(str::to_ascii_lowercase).collect(),
        }
    }

    /// Creates a catalogue with no pure functions: every call is `function`.
    pub fn empty() -> Self {
        Self {
            pure: BTreeSet::new(),
        }
    }

    /// Adds `name` (a `pg_catalog` function name) to the pure list.
    pub fn insert(&mut self, name: &str) {
        self.pure.insert(name.to_ascii_lowercase());
    }

    /// Returns the pure list in name order.
    pub fn pure_functions(&self) -> impl Iterator<Item = &str> {
        self.pure.iter().map(String::as_str)
    }

    /// Looks up a call by its name parts as written (`["now"]`,
    /// `["pg_catalog", "now"]`, `["dblink", "dblink_exec"]`).
    pub fn kind(&self, name: &[&str]) -> FunctionKind {
        let Some(base) = name.last() else {
            return FunctionKind::Unknown;
        };
        if is_side_effect(base) {
            return FunctionKind::SideEffect;
        }
        let in_pg_catalog = match name {
            [_] => true,
            [schema, _] => *schema == "pg_catalog",
            _ => false,
        };
        if in_pg_catalog && self.pure.contains(*base) {
            FunctionKind::Pure
        } else {
            FunctionKind::Unknown
        }
    }
}

/// Returns whether a function of this name (in any schema) is on the
/// side-effect lists.
pub fn is_side_effect(name: &str) -> bool {
    SIDE_EFFECT_FUNCTIONS.contains(&name)
        || SIDE_EFFECT_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
}
