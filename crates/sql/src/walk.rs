//! The walk over one statement's parse tree, in the JSON form of pg_query's
//! protobuf messages. A `Node` is `{"node": {"TypeName": {fields}}}`. Fields
//! typed as one message (a DML target, `CALL`'s function) are bare objects,
//! so relations and function calls are recognised by their fields.

use std::collections::{BTreeSet, HashMap};

use pg_query::protobuf::{AlterTableType, DiscardMode, ObjectType, VariableSetKind};
use serde_json::{Map, Value};

use crate::PreparedStatements;
use crate::catalogue::{FunctionCatalogue, FunctionKind};
use crate::class::Class;

/// Maximum JSON nesting the walk descends into. pg_query's protobuf decoding
/// stops at 100 nested messages (about 300 JSON levels), so parser output
/// does not reach this bound. It keeps the recursion bounded should that
/// decoding limit be lifted.
const MAX_DEPTH: usize = 1_000;

/// Object types whose names in `DROP` and `COMMENT ON` are relations.
const RELATION_OBJECT_TYPES: [ObjectType; 6] = [
    ObjectType::ObjectTable,
    ObjectType::ObjectView,
    ObjectType::ObjectMatview,
    ObjectType::ObjectIndex,
    ObjectType::ObjectSequence,
    ObjectType::ObjectForeignTable,
];

/// The classification facts found in one top-level statement.
pub(crate) struct Findings {
    pub(crate) class: Class,
    pub(crate) tables: Vec<String>,
    pub(crate) functions: Vec<String>,
    pub(crate) side_effect_functions: Vec<String>,
    pub(crate) too_deep: bool,
}

pub(crate) struct Walker<'a> {
    catalogue: &'a FunctionCatalogue,
    session: &'a dyn PreparedStatements,
    /// Classes of statements prepared earlier in the same input; `None`
    /// marks a name deallocated in the input.
    local_prepared: &'a mut HashMap<String, Option<Class>>,
    class: Class,
    tables: BTreeSet<String>,
    functions: BTreeSet<String>,
    side_effects: BTreeSet<String>,
    /// Names of the common table expressions visible at the current node.
    ctes: Vec<String>,
    /// Whether the walk met a call that may run code of unknown effect: a
    /// function outside the pure catalogue, or an `EXECUTE` whose statement
    /// may contain one.
    calls_code: bool,
    depth: usize,
    too_deep: bool,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(
        catalogue: &'a FunctionCatalogue,
        session: &'a dyn PreparedStatements,
        local_prepared: &'a mut HashMap<String, Option<Class>>,
    ) -> Self {
        Self {
            catalogue,
            session,
            local_prepared,
            class: Class::Transaction,
            tables: BTreeSet::new(),
            functions: BTreeSet::new(),
            side_effects: BTreeSet::new(),
            ctes: Vec::new(),
            calls_code: false,
            depth: 0,
            too_deep: false,
        }
    }

    /// Walks a top-level statement node and returns what it found.
    pub(crate) fn walk(mut self, statement: &Value) -> Findings {
        self.visit(statement);
        Findings {
            class: self.class,
            tables: self.tables.into_iter().collect(),
            functions: self.functions.into_iter().collect(),
            side_effect_functions: self.side_effects.into_iter().collect(),
            too_deep: self.too_deep,
        }
    }

    fn raise(&mut self, class: Class) {
        self.class = self.class.max(class);
    }

    fn visit(&mut self, value: &Value) {
        if self.depth >= MAX_DEPTH {
            self.too_deep = true;
            return;
        }
        self.depth += 1;
        match value {
            Value::Array(items) => items.iter().for_each(|item| self.visit(item)),
            Value::Object(map) => self.visit_object(map),
            _ => {}
        }
        self.depth -= 1;
    }

    fn visit_object(&mut self, map: &Map<String, Value>) {
        if let Some((node_type, fields)) = as_node(map) {
            self.visit_node(node_type, fields);
        } else if is_range_var(map) {
            self.add_range_var(map, true);
        } else if is_func_call(map) {
            self.add_func_call(map);
            self.visit_fields(map, &["funcname"]);
        } else {
            self.visit_fields(map, &[]);
        }
    }

    /// Visits every field except `skip`, putting the names of a
    /// `with_clause` in scope for the rest of the object.
    fn visit_fields(&mut self, map: &Map<String, Value>, skip: &[&str]) {
        let scope = self.ctes.len();
        if let Some(Value::Object(with)) = map.get("with_clause") {
            self.visit_with_clause(with);
        }
        for (key, value) in map {
            if key != "with_clause" && !skip.contains(&key.as_str()) {
                self.visit(value);
            }
        }
        self.ctes.truncate(scope);
    }

    /// Visits each CTE body with the names it can see (earlier CTEs, or all
    /// of them in a `WITH RECURSIVE`), then leaves all names in scope.
    fn visit_with_clause(&mut self, with: &Map<String, Value>) {
        let recursive = with.get("recursive").and_then(Value::as_bool) == Some(true);
        let ctes: Vec<&Value> = array(with, "ctes").collect();
        let names: Vec<String> = ctes
            .iter()
            .filter_map(|cte| node_fields(cte, "CommonTableExpr"))
            .map(|fields| string(fields, "ctename").to_owned())
            .collect();
        let scope = self.ctes.len();
        for (index, cte) in ctes.iter().enumerate() {
            self.ctes.truncate(scope);
            let visible = if recursive {
                &names[..]
            } else {
                &names[..index]
            };
            self.ctes.extend(visible.iter().cloned());
            self.visit(cte);
        }
        self.ctes.truncate(scope);
        self.ctes.extend(names);
    }

    fn visit_node(&mut self, node_type: &str, fields: &Map<String, Value>) {
        match node_type {
            "ExplainStmt" => self.visit_explain(fields),
            "PrepareStmt" => self.visit_prepare(fields),
            "ExecuteStmt" => {
                let name = string(fields, "name");
                let class = match self.local_prepared.get(name) {
                    Some(local) => *local,
                    None => {
                        self.tables.extend(self.session.tables_of(name));
                        self.session.class_of(name)
                    }
                };
                // Without the prepared statement's class, fail closed.
                let class = class.unwrap_or(Class::Write);
                self.calls_code |= class >= Class::Function;
                self.raise(class);
                self.visit_fields(fields, &[]);
            }
            "DeallocateStmt" => {
                self.raise(Class::Utility);
                let name = string(fields, "name");
                if fields.get("isall").and_then(Value::as_bool) == Some(true) {
                    for class in self.local_prepared.values_mut() {
                        *class = None;
                    }
                } else {
                    self.local_prepared.insert(name.to_owned(), None);
                }
            }
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                self.raise(Class::Write);
                // A DML target is always a table, never a CTE of the same name.
                if let Some(Value::Object(relation)) = fields.get("relation") {
                    self.add_range_var(relation, false);
                }
                self.visit_fields(fields, &["relation"]);
            }
            "DropStmt" | "CommentStmt" => {
                self.raise(Class::Ddl);
                self.add_dropped_relations(node_type, fields);
                self.visit_fields(fields, &[]);
            }
            "FuncCall" => {
                self.add_func_call(fields);
                self.visit_fields(fields, &["funcname"]);
            }
            "RangeVar" => self.add_range_var(fields, true),
            _ => {
                if let Some(class) = node_class(node_type, fields) {
                    self.raise(class);
                }
                self.visit_object(fields);
            }
        }
    }

    /// `EXPLAIN ANALYZE` runs its statement, so it takes that statement's
    /// class. Plain `EXPLAIN` only plans it: it reveals estimates about the
    /// tables (class `read`), and planning can run functions marked
    /// immutable, so an inner `function` class is kept, but inner writes,
    /// DDL and privilege changes do not happen.
    fn visit_explain(&mut self, fields: &Map<String, Value>) {
        let outer = self.class;
        let outer_calls_code = self.calls_code;
        self.class = Class::Read;
        self.calls_code = false;
        self.visit_fields(fields, &[]);
        let inner = if explain_analyzes(fields) {
            self.class
        } else if self.calls_code {
            Class::Function
        } else {
            Class::Read
        };
        self.class = outer.max(inner);
        self.calls_code |= outer_calls_code;
    }

    /// `PREPARE` takes the class of its statement (at least `utility`) and
    /// records it for later `EXECUTE`s in the same input.
    fn visit_prepare(&mut self, fields: &Map<String, Value>) {
        let outer = self.class;
        self.class = Class::Utility;
        self.visit_fields(fields, &[]);
        let inner = self.class;
        let name = string(fields, "name").to_owned();
        self.local_prepared.insert(name, Some(inner));
        self.class = outer.max(inner);
    }

    fn add_range_var(&mut self, map: &Map<String, Value>, may_be_cte: bool) {
        let catalog = string(map, "catalogname");
        let schema = string(map, "schemaname");
        let relation = string(map, "relname");
        if may_be_cte && schema.is_empty() && self.ctes.iter().any(|name| name == relation) {
            return;
        }
        let name = if !catalog.is_empty() {
            format!("{catalog}.{schema}.{relation}")
        } else if !schema.is_empty() {
            format!("{schema}.{relation}")
        } else if string(map, "relpersistence") == "t" {
            format!("pg_temp.{relation}")
        } else {
            // NOTE: unqualified names are assumed to be in `public`; the
            // session's search_path may resolve them elsewhere.
            format!("public.{relation}")
        };
        self.tables.insert(name);
    }

    fn add_dropped_relations(&mut self, node_type: &str, fields: &Map<String, Value>) {
        let (type_field, objects): (&str, Vec<&Value>) = if node_type == "DropStmt" {
            ("remove_type", array(fields, "objects").collect())
        } else {
            ("objtype", fields.get("object").into_iter().collect())
        };
        let object_type = fields
            .get(type_field)
            .and_then(Value::as_i64)
            .and_then(|value| i32::try_from(value).ok())
            .and_then(|value| ObjectType::try_from(value).ok());
        if !object_type.is_some_and(|kind| RELATION_OBJECT_TYPES.contains(&kind)) {
            return;
        }
        for object in objects {
            let Some(list) = node_fields(object, "List") else {
                continue;
            };
            let parts: Vec<&str> = array(list, "items").filter_map(string_node).collect();
            match parts.as_slice() {
                [relation] => self.tables.insert(format!("public.{relation}")),
                _ => self.tables.insert(parts.join(".")),
            };
        }
    }

    fn add_func_call(&mut self, map: &Map<String, Value>) {
        let parts: Vec<&str> = array(map, "funcname").filter_map(string_node).collect();
        let kind = self.catalogue.kind(&parts);
        let written = parts.join(".");
        let reported = match (kind, parts.as_slice()) {
            (FunctionKind::Pure, [name]) => format!("pg_catalog.{name}"),
            _ => written,
        };
        match kind {
            FunctionKind::Pure => {}
            FunctionKind::SideEffect => {
                self.raise(Class::Function);
                self.calls_code = true;
                self.side_effects.insert(reported.clone());
            }
            FunctionKind::Unknown => {
                self.raise(Class::Function);
                self.calls_code = true;
            }
        }
        if parts.last() == Some(&"set_config") && sets_role(map) {
            self.raise(Class::Privilege);
        }
        self.functions.insert(reported);
    }
}

/// Returns whether a `set_config` call can change the current role or
/// search path: its first argument is `role`, `session_authorization` or
/// `search_path`, or is not a string constant and so could be any.
fn sets_role(call: &Map<String, Value>) -> bool {
    let Some(first) = array(call, "args").next() else {
        return false;
    };
    let constant = node_fields(first, "AConst")
        .and_then(|constant| constant.get("val"))
        .and_then(|val| val.get("Sval"))
        .and_then(|sval| sval.get("sval"))
        .and_then(Value::as_str);
    match constant {
        Some(setting) => {
            let setting = setting.to_ascii_lowercase();
            setting == "role" || setting == "session_authorization" || setting == "search_path"
        }
        None => true,
    }
}

/// Returns whether an `EXPLAIN`'s options turn `ANALYZE` on. An option
/// whose value is not clearly off counts as on.
fn explain_analyzes(fields: &Map<String, Value>) -> bool {
    array(fields, "options")
        .filter_map(|option| node_fields(option, "DefElem"))
        .filter(|option| string(option, "defname") == "analyze")
        .any(|option| match option.get("arg") {
            Some(Value::Object(arg)) => !is_off(arg),
            _ => true,
        })
}

fn is_off(arg: &Map<String, Value>) -> bool {
    let Some((kind, value)) = as_node(arg) else {
        return false;
    };
    match kind {
        "Boolean" => value.get("boolval").and_then(Value::as_bool) != Some(true),
        "Integer" => value.get("ival").and_then(Value::as_i64).unwrap_or(0) == 0,
        "String" => matches!(
            string(value, "sval").to_ascii_lowercase().as_str(),
            "false" | "off" | "no" | "0"
        ),
        _ => false,
    }
}

/// Returns the class a node contributes by itself, or `None` for nodes that
/// are not statements. Statement types not listed here are `privilege`, so
/// that a statement added by a newer parser fails closed.
fn node_class(node_type: &str, fields: &Map<String, Value>) -> Option<Class> {
    let class = match node_type {
        "SelectStmt" => {
            let into = fields.get("into_clause").is_some_and(|into| !into.is_null());
            if into {
                // SELECT INTO creates a table, as CREATE TABLE AS does.
                Class::Ddl
            } else if array(fields, "locking_clause").next().is_some() {
                // FOR UPDATE/SHARE needs UPDATE privilege and writes row locks.
                Class::Write
            } else {
                Class::Read
            }
        }
        "DeclareCursorStmt" => Class::Read,
        "FetchStmt" => {
            if fields.get("ismove").and_then(Value::as_bool) == Some(true) {
                Class::Utility
            } else {
                Class::Read
            }
        }
        "CopyStmt" => copy_class(fields),
        "TruncateStmt" | "RefreshMatViewStmt" => Class::Write,
        "DoStmt" | "CallStmt" => Class::Function,
        "TransactionStmt" => Class::Transaction,
        "VariableSetStmt" => variable_set_class(fields),
        "DiscardStmt" => {
            // DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT.
            if int(fields, "target") == DiscardMode::DiscardAll as i64 {
                Class::Privilege
            } else {
                Class::Utility
            }
        }
        "VariableShowStmt" | "ListenStmt" | "UnlistenStmt" | "NotifyStmt" | "CheckPointStmt"
        | "VacuumStmt" | "ClusterStmt" | "ReindexStmt" | "LockStmt" | "ClosePortalStmt"
        | "ConstraintsSetStmt" => Class::Utility,
        "RenameStmt" => {
            if int(fields, "rename_type") == ObjectType::ObjectRole as i64 {
                Class::Privilege
            } else {
                Class::Ddl
            }
        }
        "AlterTableCmd" => {
            let subtype = int(fields, "subtype");
            let privilege = [
                AlterTableType::AtChangeOwner,
                AlterTableType::AtEnableRowSecurity,
                AlterTableType::AtDisableRowSecurity,
                AlterTableType::AtForceRowSecurity,
                AlterTableType::AtNoForceRowSecurity,
            ]
            .iter()
            .any(|kind| *kind as i64 == subtype);
            if privilege {
                Class::Privilege
            } else {
                Class::Ddl
            }
        }
        "GrantStmt"
        | "GrantRoleStmt"
        | "AlterDefaultPrivilegesStmt"
        | "CreateRoleStmt"
        | "AlterRoleStmt"
        | "AlterRoleSetStmt"
        | "DropRoleStmt"
        | "AlterOwnerStmt"
        | "ReassignOwnedStmt"
        | "DropOwnedStmt"
        | "SecLabelStmt"
        | "CreateUserMappingStmt"
        | "AlterUserMappingStmt"
        | "DropUserMappingStmt"
        | "CreatePolicyStmt"
        | "AlterPolicyStmt"
        // ALTER SYSTEM can set archive_command and similar shell commands.
        | "AlterSystemStmt"
        // LOAD runs a shared library's initialisation code in the server.
        | "LoadStmt" => Class::Privilege,
        "CreateStmt"
        | "AlterTableStmt"
        | "DropStmt"
        | "IndexStmt"
        | "ViewStmt"
        | "CreateTableAsStmt"
        | "CreateSchemaStmt"
        | "CreateSeqStmt"
        | "AlterSeqStmt"
        | "CreateFunctionStmt"
        | "AlterFunctionStmt"
        | "RuleStmt"
        | "CreateTrigStmt"
        | "CreateEventTrigStmt"
        | "AlterEventTrigStmt"
        | "DefineStmt"
        | "CreateDomainStmt"
        | "AlterDomainStmt"
        | "CommentStmt"
        | "AlterObjectSchemaStmt"
        | "AlterObjectDependsStmt"
        | "CreateExtensionStmt"
        | "AlterExtensionStmt"
        | "AlterExtensionContentsStmt"
        | "CreateFdwStmt"
        | "AlterFdwStmt"
        | "CreateForeignServerStmt"
        | "AlterForeignServerStmt"
        | "CreateForeignTableStmt"
        | "ImportForeignSchemaStmt"
        | "CreateAmStmt"
        | "CreatePlangStmt"
        | "CreateOpClassStmt"
        | "CreateOpFamilyStmt"
        | "AlterOpFamilyStmt"
        | "CreateStatsStmt"
        | "AlterStatsStmt"
        | "CompositeTypeStmt"
        | "CreateEnumStmt"
        | "CreateRangeStmt"
        | "AlterEnumStmt"
        | "AlterTypeStmt"
        | "AlterOperatorStmt"
        | "AlterCollationStmt"
        | "CreatedbStmt"
        | "AlterDatabaseStmt"
        | "AlterDatabaseSetStmt"
        | "AlterDatabaseRefreshCollStmt"
        | "DropdbStmt"
        | "CreateTableSpaceStmt"
        | "DropTableSpaceStmt"
        | "AlterTableSpaceOptionsStmt"
        | "AlterTableMoveAllStmt"
        | "CreateConversionStmt"
        | "CreateCastStmt"
        | "CreateTransformStmt"
        | "AlterTsdictionaryStmt"
        | "AlterTsconfigurationStmt"
        | "CreatePublicationStmt"
        | "AlterPublicationStmt"
        | "CreateSubscriptionStmt"
        | "AlterSubscriptionStmt"
        | "DropSubscriptionStmt"
        | "ReplicaIdentityStmt" => Class::Ddl,
        // Set-operation trees and PL/pgSQL fragments carry no class of their own.
        "SetOperationStmt" | "ReturnStmt" | "PlassignStmt" | "RawStmt" => return None,
        other if other.ends_with("Stmt") => Class::Privilege,
        _ => return None,
    };
    Some(class)
}

fn copy_class(fields: &Map<String, Value>) -> Class {
    let flag = |name: &str| fields.get(name).and_then(Value::as_bool) == Some(true);
    if flag("is_program") {
        // COPY ... PROGRAM runs a shell command as the database server's user.
        Class::Privilege
    } else if flag("is_from") {
        Class::Write
    } else if !string(fields, "filename").is_empty() {
        // COPY ... TO 'file' writes a file on the database server.
        Class::Write
    } else {
        Class::Read
    }
}

fn variable_set_class(fields: &Map<String, Value>) -> Class {
    let name = string(fields, "name").to_ascii_lowercase();
    let kind = int(fields, "kind");
    if kind == VariableSetKind::VarResetAll as i64 {
        // RESET ALL leaves role and session_authorization alone.
        return Class::Utility;
    }
    match name.as_str() {
        // search_path decides which table an unqualified name means, so a
        // change of it could move a statement out of a zone's sight.
        "role" | "session_authorization" | "search_path" => Class::Privilege,
        "transaction" | "transaction_isolation" => Class::Transaction,
        _ => Class::Utility,
    }
}

/// Splits `{"TypeName": {fields}}`, the content of a `Node`.
fn as_node(map: &Map<String, Value>) -> Option<(&str, &Map<String, Value>)> {
    let inner = match map.get("node") {
        Some(Value::Object(inner)) if map.len() == 1 => inner,
        _ => map,
    };
    if inner.len() != 1 {
        return None;
    }
    let (name, value) = inner.iter().next()?;
    let starts_upper = name.chars().next().is_some_and(|c| c.is_ascii_uppercase());
    match value {
        Value::Object(fields) if starts_upper => Some((name.as_str(), fields)),
        _ => None,
    }
}

/// Returns the fields of `value` when it is a `Node` of type `node_type`.
fn node_fields<'v>(value: &'v Value, node_type: &str) -> Option<&'v Map<String, Value>> {
    let Value::Object(map) = value else {
        return None;
    };
    as_node(map)
        .filter(|(name, _)| *name == node_type)
        .map(|(_, fields)| fields)
}

fn string_node(value: &Value) -> Option<&str> {
    node_fields(value, "String")
        .and_then(|fields| fields.get("sval"))
        .and_then(Value::as_str)
}

fn is_range_var(map: &Map<String, Value>) -> bool {
    map.contains_key("relname")
        && map.contains_key("schemaname")
        && map.contains_key("relpersistence")
}

fn is_func_call(map: &Map<String, Value>) -> bool {
    map.contains_key("funcname") && map.contains_key("agg_star")
}

fn string<'v>(map: &'v Map<String, Value>, key: &str) -> &'v str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

fn int(map: &Map<String, Value>, key: &str) -> i64 {
    map.get(key).and_then(Value::as_i64).unwrap_or(0)
}

fn array<'v>(map: &'v Map<String, Value>, key: &str) -> impl Iterator<Item = &'v Value> {
    map.get(key).and_then(Value::as_array).into_iter().flatten()
}
