//! Calls that the gateway answers itself instead of sending them to the
//! database: `SELECT stepgate.step_up('<challenge id>', '<code>')` answers a
//! step-up challenge from inside a PostgreSQL session.
//!
//! A call is recognised only as a whole statement: one `SELECT` of the one
//! function `stepgate.step_up` with two arguments, each a string constant,
//! a parameter (`$1`) or either of them cast to a type, with no `FROM`,
//! `WHERE` or any other clause. Anything else goes to the classifier and
//! the database like any other statement.

use pg_query::NodeEnum;
use pg_query::protobuf::a_const::Val;

/// Schema of the functions the gateway answers.
pub const GATEWAY_SCHEMA: &str = "stepgate";

/// Name of the step-up function in [`GATEWAY_SCHEMA`].
pub const STEP_UP_FUNCTION: &str = "step_up";

/// One argument of a gateway call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Argument {
    /// A string constant.
    Text(String),
    /// A parameter of the extended protocol, 1-based as in `$1`.
    Param(usize),
    /// `NULL`.
    Null,
}

/// `stepgate.step_up(challenge, code)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpCall {
    pub challenge: Argument,
    pub code: Argument,
    /// Column name of the result: the alias, or `step_up`.
    pub column: String,
}

/// Returns the step-up call that `sql` consists of, or `None` when `sql`
/// is anything else, including text that does not parse.
pub fn step_up_call(sql: &str) -> Option<StepUpCall> {
    if !sql.to_ascii_lowercase().contains(GATEWAY_SCHEMA) {
        return None;
    }
    let parsed = crate::locate::guarded(|| pg_query::parse(sql, 0))?.ok()?;
    let [raw] = parsed.protobuf.stmts.as_slice() else {
        return None;
    };
    let NodeEnum::SelectStmt(select) = raw.stmt.as_ref()?.node.as_ref()? else {
        return None;
    };
    let only_targets = select.distinct_clause.is_empty()
        && select.into_clause.is_none()
        && select.from_clause.is_empty()
        && select.where_clause.is_none()
        && select.group_clause.is_empty()
        && select.having_clause.is_none()
        && select.window_clause.is_empty()
        && select.values_lists.is_empty()
        && select.sort_clause.is_empty()
        && select.limit_offset.is_none()
        && select.limit_count.is_none()
        && select.locking_clause.is_empty()
        && select.with_clause.is_none()
        && select.larg.is_none()
        && select.rarg.is_none();
    if !only_targets {
        return None;
    }
    let [target] = select.target_list.as_slice() else {
        return None;
    };
    let NodeEnum::ResTarget(target) = target.node.as_ref()? else {
        return None;
    };
    let NodeEnum::FuncCall(call) = target.val.as_ref()?.node.as_ref()? else {
        return None;
    };
    let name: Vec<&str> = call
        .funcname
        .iter()
        .filter_map(|part| match part.node.as_ref()? {
            NodeEnum::String(part) => Some(part.sval.as_str()),
            _ => None,
        })
        .collect();
    if name != [GATEWAY_SCHEMA, STEP_UP_FUNCTION]
        || call.agg_star
        || call.agg_distinct
        || call.func_variadic
        || call.over.is_some()
        || call.agg_filter.is_some()
        || !call.agg_order.is_empty()
    {
        return None;
    }
    let [challenge, code] = call.args.as_slice() else {
        return None;
    };
    Some(StepUpCall {
        challenge: argument(challenge)?,
        code: argument(code)?,
        column: if target.name.is_empty() {
            STEP_UP_FUNCTION.to_owned()
        } else {
            target.name.clone()
        },
    })
}

fn argument(node: &pg_query::protobuf::Node) -> Option<Argument> {
    match node.node.as_ref()? {
        NodeEnum::AConst(constant) if constant.isnull => Some(Argument::Null),
        NodeEnum::AConst(constant) => match constant.val.as_ref()? {
            Val::Sval(text) => Some(Argument::Text(text.sval.clone())),
            Val::Ival(number) => Some(Argument::Text(number.ival.to_string())),
            _ => None,
        },
        NodeEnum::ParamRef(param) => usize::try_from(param.number)
            .ok()
            .filter(|n| *n > 0)
            .map(Argument::Param),
        NodeEnum::TypeCast(cast) => argument(cast.arg.as_ref()?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> Argument {
        Argument::Text(value.to_owned())
    }

    #[test]
    fn recognises_literal_and_parameter_calls() {
        let call = step_up_call("SELECT stepgate.step_up('ch_abc', '123456')").unwrap();
        assert_eq!(call.challenge, text("ch_abc"));
        assert_eq!(call.code, text("123456"));
        assert_eq!(call.column, "step_up");

        let call = step_up_call("select STEPGATE.STEP_UP($1, $2::text) as answer;").unwrap();
        assert_eq!(call.challenge, Argument::Param(1));
        assert_eq!(call.code, Argument::Param(2));
        assert_eq!(call.column, "answer");

        let call = step_up_call("SELECT stepgate.step_up(NULL, 123456)").unwrap();
        assert_eq!(call.challenge, Argument::Null);
        assert_eq!(call.code, text("123456"));
    }

    #[test]
    fn anything_more_is_an_ordinary_statement() {
        for sql in [
            "SELECT step_up('a', 'b')",
            "SELECT public.step_up('a', 'b')",
            "SELECT stepgate.step_up('a')",
            "SELECT stepgate.step_up('a', 'b'), 1",
            "SELECT stepgate.step_up('a', 'b') FROM orders",
            "SELECT stepgate.step_up('a', 'b') WHERE true",
            "SELECT stepgate.step_up('a', 'b'); DELETE FROM orders",
            "SELECT stepgate.step_up('a', (SELECT secret FROM keys))",
            "SELECT stepgate.step_up('a', 'b') LIMIT 1",
            "WITH x AS (DELETE FROM orders) SELECT stepgate.step_up('a', 'b')",
            "SELECT stepgate.step_up('a', 'b') UNION SELECT '1'",
            "DELETE FROM stepgate",
            "SELECT stepgate.step_up('a', ",
        ] {
            assert_eq!(step_up_call(sql), None, "{sql}");
        }
    }
}
