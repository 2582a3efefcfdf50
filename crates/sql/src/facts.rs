//! How a classified statement reads to the risk engine and the policy: the
//! action it counts as, the operation and resource its baseline learns, and
//! the paths zones match for the tables it touches.
//!
//! Tables are addressed as `/postgres/DATABASE/SCHEMA/TABLE`, so a zone
//! with prefix `/postgres/app/billing` covers the `billing` schema of
//! database `app`, and `/postgres/app/public/secrets` one table.

use stepgate_core::Action;

use crate::{Class, Statement};

/// Path prefix of every table path.
pub const TABLE_PATH_PREFIX: &str = "/postgres";

/// Returns the action a statement counts as: reads, transaction control and
/// utility statements read; writes and unknown functions write (`DELETE`
/// and `TRUNCATE` delete); schema and privilege changes and `DO` blocks
/// are `admin`.
pub fn action(statement: &Statement) -> Action {
    match statement.class {
        Class::Transaction | Class::Utility | Class::Read => Action::Read,
        // A DO block runs any code, including DDL and GRANTs, so it always
        // counts as administrative.
        _ if statement.command == "DO" => Action::Admin,
        Class::Function | Class::Write => match statement.command.as_str() {
            "DELETE" | "TRUNCATE" | "TRUNCATE TABLE" => Action::Delete,
            _ => Action::Write,
        },
        Class::Ddl | Class::Privilege => Action::Admin,
    }
}

/// Returns the path of `database` itself, the parent of its tables'
/// paths, such as `/postgres/app`.
pub fn database_path(database: &str) -> String {
    format!("{TABLE_PATH_PREFIX}/{}", encode_segment(database))
}

/// Returns the path zones match for `table` (schema-qualified) in
/// `database`. Characters other than ASCII letters, digits, `_`, `-` and
/// `.` are percent-encoded, so a quoted name cannot form another path.
/// A name qualified with the database itself (`app.public.orders` in
/// database `app`) is the same table as `public.orders`.
pub fn table_path(database: &str, table: &str) -> String {
    let table = table
        .strip_prefix(database)
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|rest| rest.contains('.'))
        .unwrap_or(table);
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    format!(
        "{TABLE_PATH_PREFIX}/{}/{}/{}",
        encode_segment(database),
        encode_segment(schema),
        encode_segment(name)
    )
}

/// Returns the operation a statement's baseline learns and its signals
/// name: the class and the command, such as `write UPDATE`, so a class or
/// command the identity never used raises the new-operation signal.
pub fn operation(statement: &Statement) -> String {
    format!("{} {}", statement.class.as_str(), statement.command)
}

/// Returns the resource of a statement: its tables, such as
/// `public.customers,public.orders`, or `-` without tables. Tables the
/// identity never touched with a known operation raise the new-resource
/// signal, and a grant after a step-up covers these tables.
pub fn resource(statement: &Statement) -> String {
    if statement.tables.is_empty() {
        "-".to_owned()
    } else {
        statement.tables.join(",")
    }
}

fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        // Dot segments would be removed when paths are normalised.
        return out.replace('.', "%2E");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify;

    fn first(sql: &str) -> Statement {
        classify(sql).unwrap().remove(0)
    }

    #[test]
    fn actions_follow_class() {
        assert_eq!(action(&first("SELECT * FROM orders")), Action::Read);
        assert_eq!(action(&first("BEGIN")), Action::Read);
        assert_eq!(
            action(&first("INSERT INTO orders VALUES (1)")),
            Action::Write
        );
        assert_eq!(action(&first("DELETE FROM orders")), Action::Delete);
        assert_eq!(action(&first("TRUNCATE orders")), Action::Delete);
        assert_eq!(action(&first("DROP TABLE orders")), Action::Admin);
        assert_eq!(action(&first("GRANT ALL ON orders TO bob")), Action::Admin);
        assert_eq!(
            action(&first("SELECT pg_terminate_backend(1)")),
            Action::Write
        );
    }

    #[test]
    fn table_paths_are_zone_paths() {
        assert_eq!(
            table_path("app", "billing.invoices"),
            "/postgres/app/billing/invoices"
        );
        assert_eq!(table_path("app", "orders"), "/postgres/app/public/orders");
        assert_eq!(
            table_path("app", "public.we/ird"),
            "/postgres/app/public/we%2Fird"
        );
        assert_eq!(table_path("app", "public.."), "/postgres/app/public/%2E");
        assert_eq!(
            table_path("app", "app.public.payouts"),
            "/postgres/app/public/payouts"
        );
        assert_eq!(table_path("app", "app.orders"), "/postgres/app/app/orders");
    }

    #[test]
    fn do_blocks_are_admin() {
        assert_eq!(
            action(&first("DO $$ BEGIN INSERT INTO payouts VALUES (1); END $$")),
            Action::Admin
        );
        assert_eq!(action(&first("SELECT my_function()")), Action::Write);
    }

    #[test]
    fn operation_names_class_and_command() {
        let update = first("UPDATE orders SET n = 1 FROM customers");
        assert_eq!(operation(&update), "write UPDATE");
        assert_eq!(resource(&update), "public.customers,public.orders");
        let set = first("SET work_mem = '4MB'");
        assert_eq!(operation(&set), "utility SET");
        assert_eq!(resource(&set), "-");
    }
}
