//! The message loop of one session: client messages are decided and
//! forwarded, server messages relayed, and the gateway's own answers put in
//! their place in the response stream.
//!
//! Every forwarded message that the server answers is a [`Pending`] entry,
//! in order. A server message that ends an entry's answer (ParseComplete,
//! CommandComplete, ReadyForQuery, ...) pops it. The gateway's own answers
//! are entries too ([`Pending::Synthetic`]), sent when they reach the
//! front, so they arrive where the server's answer would have.
//!
//! A refused statement is never sent. In its place goes a message that
//! fails at once (`Parse` or `Query` of text that is not SQL): the server
//! then ends the implicit transaction or fails the open transaction block
//! and skips to the next Sync, as it would for the statement's own error,
//! and the gateway sends its error in place of the server's.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use sha2::{Digest, Sha256};
use stepgate_core::{RequestFacts, Timestamp};
use stepgate_engine::{
    Allowed, ApprovalAnswer, Operation, RequestInput, SqlStatement, StatementEnd, StepUpAnswer,
    Verdict,
};
use stepgate_pg::{
    BackendDecoder, BackendMessage, Bind, ErrorFields, FieldDescription, FrontendDecoder,
    FrontendMessage, Parse, RawBackendMessage, Severity, Target, TransactionStatus,
    sqlstate as pgstate,
};
use stepgate_sql::gateway::{Argument, StepUpCall};
use stepgate_sql::{Class, SqlError, Statement};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::cancel;
use crate::challenges::Challenged;
use crate::session::SessionError;
use crate::stream::PgStream;
use crate::upstream::ServerConn;
use crate::{Shared, sqlstate};

/// Bytes waiting for one side above which the other side is not read.
const HIGH_WATER: usize = 1 << 20;

/// Text sent in place of a refused statement. It is not SQL, so the server
/// rejects it with a syntax error before running anything.
const REFUSED_SQL: &str = "stepgate refused this statement";
const REFUSED_STATEMENT: &str = "stepgate_refused";

/// Type OID of `text`.
const TEXT_OID: u32 = 25;

/// The facts of a session's client.
pub(crate) struct SessionFacts {
    pub(crate) identity: String,
    pub(crate) token_id: String,
    pub(crate) role: String,
    pub(crate) database: String,
    pub(crate) client_addr: IpAddr,
    pub(crate) application: Option<String>,
    pub(crate) reject_multi_statement: bool,
}

/// A statement the server is running, with what it returned so far.
struct Running {
    allowed: Box<Allowed>,
    started: Instant,
    rows: u64,
    bytes: u64,
}

/// A forwarded message whose answer has not ended, or a gateway answer
/// waiting for its turn.
enum Pending {
    /// A simple Query, until ReadyForQuery. `running` contains its statements
    /// in order. With `refusal`, the gateway sent a failing Query in its place and the server's
    /// error is replaced by this one.
    Query {
        running: VecDeque<Running>,
        refusal: Option<ErrorFields>,
    },
    Parse,
    Bind,
    Describe,
    Execute(Option<Running>),
    Close,
    Sync,
    /// A Parse sent in place of a refused message; its error is replaced.
    Refused(ErrorFields),
    /// The gateway's own answer.
    Synthetic(BytesMut),
}

/// Statements a SQL `EXECUTE` can run: those prepared with SQL `PREPARE`
/// and the named statements of Parse, which share one namespace in a
/// PostgreSQL session.
#[derive(Default)]
struct SessionPrepared {
    by_name: HashMap<String, (Class, Vec<String>)>,
}

impl SessionPrepared {
    fn insert(&mut self, name: &str, statement: &Statement) {
        self.by_name
            .insert(name.to_owned(), (statement.class, statement.tables.clone()));
    }

    fn remove(&mut self, name: &str) {
        self.by_name.remove(name);
    }
}

impl stepgate_sql::PreparedStatements for SessionPrepared {
    fn class_of(&self, name: &str) -> Option<Class> {
        self.by_name.get(name).map(|(class, _)| *class)
    }

    fn tables_of(&self, name: &str) -> Vec<String> {
        self.by_name
            .get(name)
            .map(|(_, tables)| tables.clone())
            .unwrap_or_default()
    }
}

/// A statement prepared with Parse.
#[derive(Clone)]
enum Prepared {
    Sql {
        sql: Arc<str>,
        /// `None` for an empty query string.
        statement: Option<Arc<Statement>>,
    },
    StepUp(StepUpCall),
}

/// A portal made by Bind.
#[derive(Clone)]
enum Portal {
    Sql {
        sql: Arc<str>,
        statement: Option<Arc<Statement>>,
        params: Params,
    },
    StepUp {
        challenge: Option<String>,
        code: Option<String>,
    },
}

/// A digest and a preview of a Bind's parameter values: the approval
/// covers the digest and the approver reads the preview.
#[derive(Clone, Default)]
struct Params {
    sha256: Option<String>,
    preview: Option<String>,
    bytes: u64,
}

/// The outcome of deciding one statement.
enum Decision {
    Allow(Running),
    Refuse(ErrorFields),
    /// Refuse, then end the session (the token no longer authenticates).
    Fatal(ErrorFields),
}

pub(crate) struct Relay {
    shared: Arc<Shared>,
    session: SessionFacts,
    cancel: Arc<cancel::Target>,
    pending: VecDeque<Pending>,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Portal>,
    /// Classes of statements prepared with SQL `PREPARE`.
    sql_prepared: SessionPrepared,
    /// After a refusal in the extended protocol, client messages are
    /// dropped until Sync, as the server drops them after an error.
    skipping: bool,
    status: TransactionStatus,
    to_client: BytesMut,
    to_server: BytesMut,
    /// Set when the session must end once `to_client` is sent.
    closing: bool,
    server_parameters: Vec<(String, String)>,
}

impl Relay {
    pub(crate) fn new(
        shared: Arc<Shared>,
        session: SessionFacts,
        cancel: Arc<cancel::Target>,
    ) -> Self {
        Self {
            shared,
            session,
            cancel,
            pending: VecDeque::new(),
            statements: HashMap::new(),
            portals: HashMap::new(),
            sql_prepared: SessionPrepared::default(),
            skipping: false,
            status: TransactionStatus::Idle,
            to_client: BytesMut::with_capacity(16 * 1024),
            to_server: BytesMut::with_capacity(16 * 1024),
            closing: false,
            server_parameters: Vec::new(),
        }
    }

    /// Runs the session until the client leaves, the server goes away or
    /// the gateway stops. Returns the server connection and its
    /// transaction status when it can go back to the pool.
    pub(crate) async fn run(
        mut self,
        client: PgStream,
        mut client_buf: BytesMut,
        server: ServerConn,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<Option<(ServerConn, TransactionStatus)>, SessionError> {
        let ServerConn {
            stream: server_stream,
            read_buf: mut server_buf,
            parameters,
            process_id,
            secret_key,
            role,
            database,
            idle_since,
        } = server;
        self.server_parameters = parameters;
        let max = self.shared.config.max_message_bytes;
        let client_decoder = FrontendDecoder::new(max);
        let server_decoder = BackendDecoder::new(max);
        let (mut client_r, mut client_w) = tokio::io::split(client);
        let (mut server_r, mut server_w) = tokio::io::split(server_stream);
        let mut client_done = false;
        let mut server_lost = false;
        loop {
            while !client_done && !self.closing && self.to_server.len() < HIGH_WATER {
                match client_decoder.decode(&mut client_buf) {
                    Ok(Some(FrontendMessage::Terminate)) => client_done = true,
                    Ok(Some(message)) => self.on_client(message).await,
                    Ok(None) => break,
                    Err(err) => {
                        tracing::info!(identity = %self.session.identity, error = %err, "invalid message from a PostgreSQL client, closing");
                        self.send_fatal(
                            pgstate::PROTOCOL_VIOLATION,
                            &format!("invalid message: {err}"),
                        );
                    }
                }
            }
            loop {
                match server_decoder.next_raw(&mut server_buf) {
                    Ok(Some(raw)) => self.on_server(raw),
                    Ok(None) => break,
                    Err(err) => {
                        tracing::warn!(identity = %self.session.identity, error = %err, "invalid message from the database server, closing");
                        self.send_fatal(
                            pgstate::PROTOCOL_VIOLATION,
                            "the database server sent an invalid message",
                        );
                        server_lost = true;
                        break;
                    }
                }
            }
            if (self.closing || client_done) && self.to_client.is_empty() {
                break;
            }
            if client_done && self.pending.is_empty() && self.to_server.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                written = client_w.write(&self.to_client), if !self.to_client.is_empty() && !client_done => {
                    let n = written?;
                    self.to_client.advance(n);
                    if self.to_client.is_empty() {
                        client_w.flush().await?;
                    }
                }
                written = server_w.write(&self.to_server), if !self.to_server.is_empty() && !server_lost => {
                    let n = written?;
                    self.to_server.advance(n);
                    if self.to_server.is_empty() {
                        server_w.flush().await?;
                    }
                }
                read = client_r.read_buf(&mut client_buf), if !client_done && !self.closing && self.to_server.len() < HIGH_WATER => {
                    if read? == 0 {
                        client_done = true;
                    }
                }
                read = server_r.read_buf(&mut server_buf), if !server_lost && self.to_client.len() < HIGH_WATER => {
                    if read? == 0 {
                        tracing::info!(identity = %self.session.identity, "database server closed the connection");
                        server_lost = true;
                        self.abandon_pending();
                        if !client_done {
                            self.send_fatal(pgstate::CONNECTION_FAILURE, "the database server closed the connection");
                        }
                    }
                }
                _ = stopped.changed() => {
                    self.abandon_pending();
                    self.send_fatal(pgstate::ADMIN_SHUTDOWN, "terminating connection because stepgate is shutting down");
                    server_lost = true;
                }
                else => break,
            }
            if client_done && self.to_client.is_empty() && !self.pending.is_empty() {
                // The client left with statements in progress; the server
                // connection's state is unknown, so it is not reused.
                server_lost = true;
            }
            if server_lost && self.to_client.is_empty() {
                break;
            }
        }
        self.abandon_pending();
        if server_lost || !self.pending.is_empty() || !self.to_server.is_empty() {
            return Ok(None);
        }
        let stream = server_r.unsplit(server_w);
        let conn = ServerConn {
            stream,
            read_buf: server_buf,
            parameters: std::mem::take(&mut self.server_parameters),
            process_id,
            secret_key,
            role,
            database,
            idle_since,
        };
        Ok(Some((conn, self.status)))
    }

    fn send(&mut self, message: BackendMessage) {
        if let Err(err) = message.encode(&mut self.to_client) {
            tracing::error!(error = %err, "cannot encode a message for the client");
        }
    }

    fn send_fatal(&mut self, code: &str, message: &str) {
        self.send(BackendMessage::ErrorResponse(ErrorFields::new(
            Severity::Fatal,
            code,
            message,
        )));
        self.closing = true;
    }

    fn forward(&mut self, message: &FrontendMessage) {
        if let Err(err) = message.encode(&mut self.to_server) {
            tracing::error!(error = %err, "cannot encode a message for the server");
        }
    }

    /// Queues a gateway answer, sent when everything before it was.
    fn synthetic(&mut self, messages: Vec<BackendMessage>) {
        let mut bytes = BytesMut::new();
        for message in messages {
            if let Err(err) = message.encode(&mut bytes) {
                tracing::error!(error = %err, "cannot encode a gateway response");
            }
        }
        self.pending.push_back(Pending::Synthetic(bytes));
        self.drain_synthetic();
    }

    fn drain_synthetic(&mut self) {
        while let Some(Pending::Synthetic(_)) = self.pending.front() {
            if let Some(Pending::Synthetic(bytes)) = self.pending.pop_front() {
                self.to_client.extend_from_slice(&bytes);
            }
        }
    }

    /// Ends every pending statement as not run, when the server answers no
    /// more.
    fn abandon_pending(&mut self) {
        while let Some(item) = self.pending.pop_front() {
            match item {
                Pending::Query { running, .. } => {
                    for statement in running {
                        self.finish(statement, None, false);
                    }
                }
                Pending::Execute(Some(statement)) => self.finish(statement, None, false),
                _ => {}
            }
        }
    }

    fn finish(&self, running: Running, sqlstate: Option<String>, reached_server: bool) {
        let end = StatementEnd {
            rows: running.rows,
            bytes: running.bytes,
            sqlstate,
            reached_server,
        };
        self.shared
            .engine
            .finish_statement(running.allowed, end, running.started.elapsed());
    }

    // ----- messages from the server -----

    fn on_server(&mut self, raw: RawBackendMessage) {
        let type_byte = raw.type_byte();
        match type_byte {
            b'D' | b'd' => {
                let size = raw.bytes().len() as u64;
                if let Some(running) = self.current_running() {
                    running.rows += 1;
                    running.bytes += size;
                }
                self.to_client.extend_from_slice(raw.bytes());
            }
            b'C' => {
                let tag = match raw.decode() {
                    Ok(BackendMessage::CommandComplete(tag)) => tag,
                    _ => String::new(),
                };
                self.to_client.extend_from_slice(raw.bytes());
                match self.pending.front_mut() {
                    Some(Pending::Query { running, .. }) => {
                        if let Some(mut statement) = running.pop_front() {
                            statement.rows = statement.rows.max(tag_rows(&tag));
                            self.finish(statement, None, true);
                        }
                    }
                    Some(Pending::Execute(_)) => {
                        if let Some(Pending::Execute(Some(mut statement))) =
                            self.pending.pop_front()
                        {
                            statement.rows = statement.rows.max(tag_rows(&tag));
                            self.finish(statement, None, true);
                        }
                        self.drain_synthetic();
                    }
                    _ => self.out_of_step("CommandComplete"),
                }
            }
            b'I' | b's' => {
                self.to_client.extend_from_slice(raw.bytes());
                if let Some(Pending::Execute(_)) = self.pending.front() {
                    if let Some(Pending::Execute(Some(statement))) = self.pending.pop_front() {
                        self.finish(statement, None, true);
                    }
                    self.drain_synthetic();
                }
            }
            b'1' | b'2' | b'3' => {
                self.to_client.extend_from_slice(raw.bytes());
                let expected = matches!(
                    (type_byte, self.pending.front()),
                    (b'1', Some(Pending::Parse))
                        | (b'2', Some(Pending::Bind))
                        | (b'3', Some(Pending::Close))
                );
                if expected {
                    self.pending.pop_front();
                    self.drain_synthetic();
                } else {
                    self.out_of_step("ParseComplete, BindComplete or CloseComplete");
                }
            }
            b'T' | b'n' => {
                self.to_client.extend_from_slice(raw.bytes());
                if let Some(Pending::Describe) = self.pending.front() {
                    self.pending.pop_front();
                    self.drain_synthetic();
                }
            }
            b'Z' => {
                if let Ok(BackendMessage::ReadyForQuery(status)) = raw.decode() {
                    self.status = status;
                }
                self.to_client.extend_from_slice(raw.bytes());
                match self.pending.pop_front() {
                    Some(Pending::Query { running, .. }) => {
                        for statement in running {
                            self.finish(statement, None, false);
                        }
                    }
                    Some(Pending::Sync) => {}
                    _ => self.out_of_step("ReadyForQuery"),
                }
                self.drain_synthetic();
            }
            b'E' => self.on_server_error(raw),
            b'S' => {
                if let Ok(BackendMessage::ParameterStatus { name, value }) = raw.decode() {
                    crate::upstream::set_parameter(&mut self.server_parameters, name, value);
                }
                self.to_client.extend_from_slice(raw.bytes());
            }
            _ => self.to_client.extend_from_slice(raw.bytes()),
        }
    }

    /// Returns the statement whose rows the server is sending.
    fn current_running(&mut self) -> Option<&mut Running> {
        match self.pending.front_mut()? {
            Pending::Query { running, .. } => running.front_mut(),
            Pending::Execute(running) => running.as_mut(),
            _ => None,
        }
    }

    fn on_server_error(&mut self, raw: RawBackendMessage) {
        let fields = match raw.decode() {
            Ok(BackendMessage::ErrorResponse(fields)) => fields,
            _ => ErrorFields::default(),
        };
        let code = fields.code().map(str::to_owned);
        let fatal = fields.severity() == Some("FATAL") || fields.severity() == Some("PANIC");
        match self.pending.front_mut() {
            Some(Pending::Query { running, refusal }) => {
                let ours = refusal.take();
                let failed = running.pop_front();
                let rest: Vec<Running> = running.drain(..).collect();
                match ours {
                    Some(ours) => self.send(BackendMessage::ErrorResponse(ours)),
                    None => self.to_client.extend_from_slice(raw.bytes()),
                }
                if let Some(statement) = failed {
                    self.finish(statement, code, true);
                }
                for statement in rest {
                    self.finish(statement, None, false);
                }
            }
            Some(Pending::Sync) | None => self.to_client.extend_from_slice(raw.bytes()),
            Some(_) => {
                // An error in the extended protocol: the server skips to the
                // next Sync, and so do the entries before it.
                let mut first = true;
                while let Some(item) = self.pending.front() {
                    if matches!(item, Pending::Sync) {
                        break;
                    }
                    let Some(item) = self.pending.pop_front() else {
                        break;
                    };
                    match item {
                        Pending::Refused(ours) if first => {
                            self.send(BackendMessage::ErrorResponse(ours));
                        }
                        Pending::Execute(Some(statement)) if first => {
                            self.to_client.extend_from_slice(raw.bytes());
                            self.finish(statement, code.clone(), true);
                        }
                        Pending::Execute(Some(statement)) => self.finish(statement, None, false),
                        _ if first => self.to_client.extend_from_slice(raw.bytes()),
                        _ => {}
                    }
                    first = false;
                }
                if first {
                    self.to_client.extend_from_slice(raw.bytes());
                }
            }
        }
        if fatal {
            self.abandon_pending();
        }
    }

    fn out_of_step(&mut self, message: &str) {
        tracing::error!(identity = %self.session.identity, message, "server response does not match the forwarded messages, closing the session");
        self.abandon_pending();
        self.send_fatal(
            pgstate::PROTOCOL_VIOLATION,
            "stepgate lost track of the server's answers; reconnect",
        );
    }

    // ----- messages from the client -----

    async fn on_client(&mut self, message: FrontendMessage) {
        match message {
            FrontendMessage::Query(sql) => self.on_query(sql).await,
            FrontendMessage::Parse(parse) if !self.skipping => self.on_parse(parse),
            FrontendMessage::Bind(bind) if !self.skipping => self.on_bind(bind),
            FrontendMessage::Describe { target, name } if !self.skipping => {
                self.on_describe(target, name)
            }
            FrontendMessage::Execute(execute) if !self.skipping => self.on_execute(execute).await,
            FrontendMessage::Close { target, name } if !self.skipping => {
                self.on_close(target, name)
            }
            FrontendMessage::Sync => {
                self.skipping = false;
                self.forward(&FrontendMessage::Sync);
                self.pending.push_back(Pending::Sync);
            }
            FrontendMessage::Flush => self.forward(&FrontendMessage::Flush),
            message @ (FrontendMessage::CopyData(_)
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail(_)) => self.forward(&message),
            FrontendMessage::FunctionCall(call) => {
                tracing::info!(identity = %self.session.identity, function.oid = call.function_oid, "fast-path function call rejected");
                let error = refusal(
                    pgstate::FEATURE_NOT_SUPPORTED,
                    "the fast-path function call interface is not supported through stepgate",
                    None,
                    Some("call the function in a SELECT statement"),
                );
                self.refuse_query(error);
            }
            FrontendMessage::PasswordMessage(_) => self.send_fatal(
                pgstate::PROTOCOL_VIOLATION,
                "unexpected password message after authentication",
            ),
            FrontendMessage::Terminate => {}
            // Extended-protocol messages after a refusal, until Sync.
            _ => {}
        }
    }

    /// Sends a Query that fails in place of a refused one; its error is
    /// replaced by `error`.
    fn refuse_query(&mut self, error: ErrorFields) {
        self.forward(&FrontendMessage::Query(REFUSED_SQL.to_owned()));
        self.pending.push_back(Pending::Query {
            running: VecDeque::new(),
            refusal: Some(error),
        });
    }

    /// Sends a Parse that fails in place of a refused extended-protocol
    /// message, and drops the client's messages up to Sync.
    fn refuse_extended(&mut self, error: ErrorFields) {
        self.forward(&FrontendMessage::Parse(Parse {
            name: REFUSED_STATEMENT.to_owned(),
            query: REFUSED_SQL.to_owned(),
            param_types: Vec::new(),
        }));
        self.pending.push_back(Pending::Refused(error));
        self.skipping = true;
    }

    async fn on_query(&mut self, sql: String) {
        if let Some(call) = stepgate_sql::gateway::step_up_call(&sql) {
            let answer = self
                .step_up(
                    argument_text(&call.challenge, &[]),
                    argument_text(&call.code, &[]),
                )
                .await;
            match answer {
                Ok(text) => {
                    let status = self.status;
                    self.synthetic(vec![
                        step_up_row_description(&call.column),
                        BackendMessage::DataRow(vec![Some(text.into_bytes().into())]),
                        BackendMessage::CommandComplete("SELECT 1".to_owned()),
                        BackendMessage::ReadyForQuery(status),
                    ]);
                }
                Err(error) => self.refuse_query(error),
            }
            return;
        }
        let statements =
            match self
                .shared
                .statements
                .classify(&self.shared.classifier, &sql, &self.sql_prepared)
            {
                Ok(statements) => statements,
                Err(SqlError::Empty) => {
                    self.forward(&FrontendMessage::Query(sql));
                    self.pending.push_back(Pending::Query {
                        running: VecDeque::new(),
                        refusal: None,
                    });
                    return;
                }
                Err(err) => {
                    let error = classify_error(&err);
                    self.refuse_query(error);
                    return;
                }
            };
        if statements.len() > 1 && self.session.reject_multi_statement {
            tracing::info!(identity = %self.session.identity, statements = statements.len(), "multi-statement query rejected");
            self.refuse_query(refusal(
                sqlstate::MULTI_STATEMENT,
                &format!(
                    "this identity may send one statement per query; the query holds {}",
                    statements.len()
                ),
                None,
                Some("send the statements one at a time"),
            ));
            return;
        }
        let mut running = VecDeque::with_capacity(statements.len());
        // An approval covers the whole message, as its statements run
        // together.
        let text: Arc<str> = Arc::from(sql.as_str());
        for statement in &statements {
            match self.decide(statement, &text, &Params::default()).await {
                Decision::Allow(allowed) => running.push_back(allowed),
                Decision::Refuse(error) => {
                    for statement in running {
                        self.finish(statement, None, false);
                    }
                    self.refuse_query(error);
                    return;
                }
                Decision::Fatal(error) => {
                    for statement in running {
                        self.finish(statement, None, false);
                    }
                    self.send(BackendMessage::ErrorResponse(error));
                    self.closing = true;
                    return;
                }
            }
        }
        for statement in &statements {
            if let Some(name) = &statement.prepared_name {
                self.sql_prepared.insert(name, statement);
            }
        }
        self.forward(&FrontendMessage::Query(sql));
        self.pending.push_back(Pending::Query {
            running,
            refusal: None,
        });
    }

    fn on_parse(&mut self, parse: Parse) {
        if let Some(call) = stepgate_sql::gateway::step_up_call(&parse.query) {
            self.statements
                .insert(parse.name.clone(), Prepared::StepUp(call));
            self.synthetic(vec![BackendMessage::ParseComplete]);
            return;
        }
        let statement = match self.shared.statements.classify(
            &self.shared.classifier,
            &parse.query,
            &self.sql_prepared,
        ) {
            Ok(mut statements) if statements.len() == 1 => statements.pop().map(Arc::new),
            // The server refuses several statements in one Parse itself.
            Ok(statements) => statements.into_iter().next().map(Arc::new),
            Err(SqlError::Empty) => None,
            Err(err) => {
                self.statements.remove(&parse.name);
                self.refuse_extended(classify_error(&err));
                return;
            }
        };
        // A named statement can also run through a SQL `EXECUTE`, which then
        // takes its class and tables.
        if let Some(statement) = &statement {
            if !parse.name.is_empty() {
                self.sql_prepared.insert(&parse.name, statement);
            }
            if let Some(name) = &statement.prepared_name {
                self.sql_prepared.insert(name, statement);
            }
        }
        self.statements.insert(
            parse.name.clone(),
            Prepared::Sql {
                sql: Arc::from(parse.query.as_str()),
                statement,
            },
        );
        self.forward(&FrontendMessage::Parse(parse));
        self.pending.push_back(Pending::Parse);
    }

    fn on_bind(&mut self, bind: Bind) {
        match self.statements.get(&bind.statement).cloned() {
            Some(Prepared::StepUp(call)) => {
                let params: Vec<Option<String>> = bind
                    .params
                    .iter()
                    .map(|value| {
                        value
                            .as_ref()
                            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                    })
                    .collect();
                self.portals.insert(
                    bind.portal.clone(),
                    Portal::StepUp {
                        challenge: argument_text(&call.challenge, &params),
                        code: argument_text(&call.code, &params),
                    },
                );
                self.synthetic(vec![BackendMessage::BindComplete]);
            }
            Some(Prepared::Sql { sql, statement }) => {
                self.portals.insert(
                    bind.portal.clone(),
                    Portal::Sql {
                        sql,
                        statement,
                        params: params_of(&bind),
                    },
                );
                self.forward(&FrontendMessage::Bind(bind));
                self.pending.push_back(Pending::Bind);
            }
            None => {
                // The server answers with its own error for an unknown
                // statement.
                self.portals.remove(&bind.portal);
                self.forward(&FrontendMessage::Bind(bind));
                self.pending.push_back(Pending::Bind);
            }
        }
    }

    fn on_describe(&mut self, target: Target, name: String) {
        let gateway_call = match target {
            Target::Statement => match self.statements.get(&name) {
                Some(Prepared::StepUp(call)) => Some((Some(call.clone()), call.column.clone())),
                _ => None,
            },
            Target::Portal => match self.portals.get(&name) {
                Some(Portal::StepUp { .. }) => Some((None, "step_up".to_owned())),
                _ => None,
            },
        };
        match gateway_call {
            Some((Some(call), column)) => {
                let params = [&call.challenge, &call.code]
                    .iter()
                    .filter(|argument| matches!(argument, Argument::Param(_)))
                    .count();
                self.synthetic(vec![
                    BackendMessage::ParameterDescription(vec![TEXT_OID; params]),
                    step_up_row_description(&column),
                ]);
            }
            Some((None, column)) => self.synthetic(vec![step_up_row_description(&column)]),
            None => {
                self.forward(&FrontendMessage::Describe { target, name });
                self.pending.push_back(Pending::Describe);
            }
        }
    }

    fn on_close(&mut self, target: Target, name: String) {
        let gateway = match target {
            Target::Statement => {
                self.sql_prepared.remove(&name);
                matches!(self.statements.remove(&name), Some(Prepared::StepUp(_)))
            }
            Target::Portal => matches!(self.portals.remove(&name), Some(Portal::StepUp { .. })),
        };
        if gateway {
            self.synthetic(vec![BackendMessage::CloseComplete]);
        } else {
            self.forward(&FrontendMessage::Close { target, name });
            self.pending.push_back(Pending::Close);
        }
    }

    async fn on_execute(&mut self, execute: stepgate_pg::Execute) {
        match self.portals.get(&execute.portal).cloned() {
            Some(Portal::StepUp { challenge, code }) => match self.step_up(challenge, code).await {
                Ok(text) => self.synthetic(vec![
                    BackendMessage::DataRow(vec![Some(text.into_bytes().into())]),
                    BackendMessage::CommandComplete("SELECT 1".to_owned()),
                ]),
                Err(error) => self.refuse_extended(error),
            },
            Some(Portal::Sql {
                sql,
                statement: Some(statement),
                params,
            }) => match self.decide(&statement, &sql, &params).await {
                Decision::Allow(running) => {
                    self.forward(&FrontendMessage::Execute(execute));
                    self.pending.push_back(Pending::Execute(Some(running)));
                }
                Decision::Refuse(error) => self.refuse_extended(error),
                Decision::Fatal(error) => {
                    self.send(BackendMessage::ErrorResponse(error));
                    self.closing = true;
                }
            },
            // An empty query, or a portal the server does not have either:
            // the server answers.
            _ => {
                self.forward(&FrontendMessage::Execute(execute));
                self.pending.push_back(Pending::Execute(None));
            }
        }
    }

    // ----- decisions -----

    fn facts(&self, statement: &Statement) -> (RequestFacts, String) {
        let engine = &self.shared.engine;
        let database = &self.session.database;
        let paths: Vec<String> = statement
            .tables
            .iter()
            .map(|table| stepgate_sql::facts::table_path(database, table))
            .collect();
        let zones = &engine.settings().zones;
        let action = stepgate_sql::facts::action(statement);
        // Code of unknown effect can touch any table of the database, so it
        // falls under the strictest zone there.
        let zone = if statement.class == Class::Function || statement.command == "DO" {
            strictest_zone(zones, database, action)
        } else {
            paths.iter().find_map(|path| zones.find(path)).cloned()
        };
        let path = paths
            .first()
            .cloned()
            .unwrap_or_else(|| stepgate_sql::facts::database_path(database));
        let operation = stepgate_sql::facts::operation(statement);
        let resource = stepgate_sql::facts::resource(statement);
        let facts = RequestFacts {
            client_addr: self.session.client_addr,
            peer_addr: self.session.client_addr,
            method: statement.command.clone(),
            path: path.clone(),
            operation: operation.clone(),
            resource,
            action,
            zone_read_only: zone.as_ref().is_some_and(|zone| zone.read_only),
            zone_sensitive: zone.as_ref().is_some_and(|zone| zone.sensitive),
            zone: zone.map(|zone| zone.name),
            time: Timestamp::default(),
            user_agent: self.session.application.clone(),
            credential: None,
            location: None,
        };
        (facts, path)
    }

    async fn decide(&mut self, statement: &Statement, sql: &Arc<str>, params: &Params) -> Decision {
        let (facts, audit_target) = self.facts(statement);
        let text = self
            .shared
            .config
            .audit_statement_text
            .then_some(sql.as_ref());
        let class = statement.class.as_str();
        let sql_facts = SqlStatement {
            database: &self.session.database,
            role: &self.session.role,
            class,
            fingerprint: &statement.fingerprint,
            text,
        };
        let input = RequestInput {
            authorization: None,
            sql: Some(sql_facts),
            session_token: Some(&self.session.token_id),
            answer: None,
            dpop: None,
            facts: facts.clone(),
            audit_target: audit_target.clone(),
            grant_token: None,
            client_certificate: None,
            client_certificates_checked: false,
            approval: None,
            dpop_checked: false,
        };
        let engine = self.shared.engine.clone();
        let retry = input.clone();
        // Without an answer or an approval to check, a decision does not
        // wait for the store, so it runs on the task's thread.
        let verdict = engine.decide(input);
        let verdict = match verdict {
            Verdict::ApprovalRequired(pending) => {
                match self.hold_for_approval(pending, sql, params).await {
                    Ok((id, digest)) => {
                        let mut input = retry;
                        input.approval = Some(ApprovalAnswer {
                            id: &id,
                            operation: &digest,
                        });
                        tokio::task::block_in_place(|| engine.decide(input))
                    }
                    Err(decision) => return decision,
                }
            }
            other => other,
        };
        match verdict {
            Verdict::Allow(mut allowed) => {
                if let Some(receipt) = allowed.receipt.take()
                    && receipt.wait().await.is_err()
                {
                    self.shared.engine.finish_statement(
                        allowed,
                        StatementEnd::default(),
                        Duration::ZERO,
                    );
                    return Decision::Refuse(unavailable());
                }
                Decision::Allow(Running {
                    allowed,
                    started: Instant::now(),
                    rows: 0,
                    bytes: 0,
                })
            }
            Verdict::Challenge(issued, receipt) => {
                if receipt.wait().await.is_err() {
                    return Decision::Refuse(unavailable());
                }
                tracing::info!(identity = %self.session.identity, challenge.id = %issued.id, risk = issued.risk.value(), "statement needs step-up");
                let factors: Vec<&str> =
                    issued.factors.iter().map(|factor| factor.name()).collect();
                let error = refusal(
                    sqlstate::STEP_UP_REQUIRED,
                    &format!(
                        "statement needs step-up authentication (risk {})",
                        issued.risk.value()
                    ),
                    Some(&format!(
                        "challenge_id={} factors={} expires_at={}",
                        issued.id,
                        factors.join(","),
                        issued.expires_at.to_rfc3339()
                    )),
                    Some(&format!(
                        "run SELECT stepgate.step_up('{}', '<code>'), then run the statement again",
                        issued.id
                    )),
                );
                self.shared.challenges.insert(
                    issued.id.clone(),
                    Challenged {
                        facts,
                        class: class.to_owned(),
                        fingerprint: statement.fingerprint.clone(),
                        audit_target,
                    },
                );
                Decision::Refuse(error)
            }
            Verdict::Deny { risk, receipt, .. } => {
                if receipt.wait().await.is_err() {
                    return Decision::Refuse(unavailable());
                }
                tracing::info!(identity = %self.session.identity, risk = risk.value(), "statement denied");
                Decision::Refuse(refusal(
                    sqlstate::DENIED,
                    &format!("statement denied by policy (risk {})", risk.value()),
                    None,
                    None,
                ))
            }
            Verdict::Unauthenticated(failure, receipt) => {
                let _ = receipt.wait().await;
                tracing::info!(identity = %self.session.identity, reason = failure.as_str(), "session token no longer valid, ending the session");
                Decision::Fatal(ErrorFields::new(
                    Severity::Fatal,
                    pgstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    "the API token of this session is no longer valid; reconnect with a valid token",
                ))
            }
            Verdict::StepUpFailed(failure, receipt) => {
                let _ = receipt.wait().await;
                Decision::Refuse(refusal(
                    sqlstate::STEP_UP_FAILED,
                    &failure.to_string(),
                    None,
                    None,
                ))
            }
            Verdict::ApprovalRejected {
                rejection, receipt, ..
            } => {
                let _ = receipt.wait().await;
                Decision::Refuse(refusal(
                    sqlstate::APPROVAL_REJECTED,
                    &rejection.to_string(),
                    None,
                    None,
                ))
            }
            Verdict::ApprovalRequired(pending) => {
                let receipt = self
                    .shared
                    .engine
                    .abandon_approval(pending, "a second approval was asked for");
                let _ = receipt.wait().await;
                Decision::Refuse(unavailable())
            }
            Verdict::Unavailable => Decision::Refuse(unavailable()),
        }
    }

    /// Requests approval of the statement and waits for it. Returns the
    /// approved approval's id and operation digest.
    async fn hold_for_approval(
        &self,
        pending: Box<stepgate_engine::PendingApproval>,
        sql: &Arc<str>,
        params: &Params,
    ) -> Result<(String, String), Decision> {
        let engine = self.shared.engine.clone();
        let Some(desk) = engine.approvals().cloned() else {
            let _ = engine
                .abandon_approval(pending, "approvals are not configured")
                .wait()
                .await;
            return Err(Decision::Refuse(unavailable()));
        };
        let digest = stepgate_engine::operation_digest(
            "SQL",
            &self.session.database,
            sql,
            params.sha256.as_deref(),
        );
        let operation = Operation {
            digest: digest.clone(),
            host: self.session.database.clone(),
            target: sql.to_string(),
            body_sha256: params.sha256.clone(),
            body_bytes: params.bytes,
            body_preview: params.preview.clone(),
        };
        let record = match tokio::task::block_in_place(|| desk.request(*pending, &operation)) {
            Ok(Ok(record)) => record,
            Ok(Err(rejection)) => {
                return Err(Decision::Refuse(refusal(
                    sqlstate::APPROVAL_REJECTED,
                    &rejection.to_string(),
                    None,
                    None,
                )));
            }
            Err(err) => {
                tracing::error!(identity = %self.session.identity, error = %err, "cannot record an approval request, failing closed");
                return Err(Decision::Refuse(unavailable()));
            }
        };
        let wait = self.shared.config.approval_wait();
        tracing::info!(identity = %self.session.identity, approval.id = %record.id, wait_s = wait.as_secs(), "statement held for approval");
        let interrupt = self.cancel.clone();
        let settled = tokio::select! {
            settled = desk.wait(&record.id, wait) => settled,
            _ = interrupt.interrupt.notified() => {
                tracing::info!(identity = %self.session.identity, approval.id = %record.id, "wait for approval cancelled by the client");
                return Err(Decision::Refuse(refusal(
                    pgstate::QUERY_CANCELED,
                    "canceling statement due to user request",
                    Some(&format!("approval_id={} is still pending", record.id)),
                    None,
                )));
            }
        };
        let settled = match settled {
            Ok(settled) => settled,
            Err(err) => {
                tracing::error!(approval.id = %record.id, error = %err, "cannot read an approval, failing closed");
                return Err(Decision::Refuse(unavailable()));
            }
        };
        use stepgate_store::ApprovalState;
        match settled.state {
            ApprovalState::Approved => Ok((settled.id, digest)),
            ApprovalState::Pending => Err(Decision::Refuse(refusal(
                sqlstate::APPROVAL_REQUIRED,
                "statement needs a person's approval, which is still pending",
                Some(&format!(
                    "approval_id={} group={} quorum={} expires_at={}",
                    settled.id,
                    settled.group,
                    settled.quorum,
                    settled.expires_at.to_rfc3339()
                )),
                Some(&format!(
                    "waited {}s; run the same statement again to wait for the decision",
                    wait.as_secs()
                )),
            ))),
            ApprovalState::Denied => {
                let denial = settled
                    .votes
                    .iter()
                    .find(|vote| !vote.approve)
                    .map(|vote| {
                        if vote.comment.is_empty() {
                            format!("denied by {}", vote.approver)
                        } else {
                            format!("denied by {}: {}", vote.approver, vote.comment)
                        }
                    })
                    .unwrap_or_else(|| "denied".to_owned());
                Err(Decision::Refuse(refusal(
                    sqlstate::APPROVAL_DENIED,
                    &format!("a person denied this statement: {denial}"),
                    Some(&format!("approval_id={}", settled.id)),
                    None,
                )))
            }
            state => Err(Decision::Refuse(refusal(
                sqlstate::APPROVAL_REJECTED,
                &format!("the approval request is {}", state.as_str()),
                Some(&format!("approval_id={}", settled.id)),
                Some("run the statement again to ask for a new approval"),
            ))),
        }
    }

    /// Answers `stepgate.step_up(challenge, code)`.
    async fn step_up(
        &mut self,
        challenge: Option<String>,
        code: Option<String>,
    ) -> Result<String, ErrorFields> {
        let (Some(challenge), Some(code)) = (challenge, code) else {
            return Err(refusal(
                sqlstate::STEP_UP_FAILED,
                "stepgate.step_up needs a challenge id and a code, both not NULL",
                None,
                None,
            ));
        };
        let Some(challenged) = self.shared.challenges.get(&challenge) else {
            return Err(refusal(
                sqlstate::STEP_UP_FAILED,
                &format!("unknown or expired challenge {challenge:?}"),
                None,
                Some("run the statement again to get a new challenge"),
            ));
        };
        // The answer's own connection is where it came from, so the engine
        // can hold it to the challenge's network.
        let mut facts = challenged.facts.clone();
        facts.client_addr = self.session.client_addr;
        facts.peer_addr = self.session.client_addr;
        let input = RequestInput {
            authorization: None,
            sql: Some(SqlStatement {
                database: &self.session.database,
                role: &self.session.role,
                class: &challenged.class,
                fingerprint: &challenged.fingerprint,
                text: None,
            }),
            session_token: Some(&self.session.token_id),
            answer: Some(StepUpAnswer {
                challenge_id: &challenge,
                totp_code: Some(&code),
                dpop: None,
                signature: None,
            }),
            dpop: None,
            facts,
            audit_target: challenged.audit_target.clone(),
            grant_token: None,
            client_certificate: None,
            client_certificates_checked: false,
            approval: None,
            dpop_checked: false,
        };
        let engine = self.shared.engine.clone();
        match tokio::task::block_in_place(|| engine.answer_apart(input)).map_err(|verdict| *verdict)
        {
            Ok((factor, receipt)) => {
                if receipt.wait().await.is_err() {
                    return Err(unavailable());
                }
                tracing::info!(identity = %self.session.identity, challenge.id = %challenge, "step-up accepted in the session");
                self.shared.challenges.remove(&challenge);
                Ok(format!(
                    "{} accepted; run the statement again",
                    factor.name()
                ))
            }
            Err(Verdict::StepUpFailed(failure, receipt)) => {
                let _ = receipt.wait().await;
                let hint = failure
                    .challenge_still_open()
                    .then_some("try again with a fresh code");
                Err(refusal(
                    sqlstate::STEP_UP_FAILED,
                    &failure.to_string(),
                    None,
                    hint,
                ))
            }
            Err(Verdict::Unauthenticated(_, receipt)) => {
                let _ = receipt.wait().await;
                Err(ErrorFields::new(
                    Severity::Fatal,
                    pgstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    "the API token of this session is no longer valid; reconnect with a valid token",
                ))
            }
            Err(_) => Err(unavailable()),
        }
    }
}

/// Returns the zone inside `database` that is strictest for `action`: one
/// that needs approval for it, else a sensitive one, else a read-only one.
fn strictest_zone(
    zones: &stepgate_core::Zones,
    database: &str,
    action: stepgate_core::Action,
) -> Option<stepgate_core::Zone> {
    let root = stepgate_sql::facts::database_path(database);
    let inside: Vec<&stepgate_core::Zone> = zones
        .iter()
        .filter(|zone| stepgate_core::zone::prefix_covers(&root, &zone.prefix.to_ascii_lowercase()))
        .collect();
    inside
        .iter()
        .find(|zone| zone.needs_approval(action))
        .or_else(|| inside.iter().find(|zone| zone.sensitive))
        .or_else(|| inside.iter().find(|zone| zone.read_only))
        .map(|zone| (*zone).clone())
}

fn refusal(code: &str, message: &str, detail: Option<&str>, hint: Option<&str>) -> ErrorFields {
    let mut fields = ErrorFields::new(Severity::Error, code, message);
    if let Some(detail) = detail {
        fields = fields.with_detail(detail);
    }
    if let Some(hint) = hint {
        fields = fields.with_hint(hint);
    }
    fields
}

fn unavailable() -> ErrorFields {
    refusal(
        sqlstate::UNAVAILABLE,
        "stepgate cannot decide on the statement now, so it refuses it",
        None,
        Some("try again later; the gateway's log says why"),
    )
}

fn classify_error(err: &SqlError) -> ErrorFields {
    let code = match err {
        SqlError::TooLarge { .. } | SqlError::TooDeep { .. } => pgstate::PROGRAM_LIMIT_EXCEEDED,
        SqlError::Internal(_) => sqlstate::UNAVAILABLE,
        _ => pgstate::SYNTAX_ERROR,
    };
    refusal(
        code,
        &format!("stepgate cannot classify the statement: {err}"),
        None,
        Some("statements that PostgreSQL's parser cannot read are not sent to the database"),
    )
}

fn step_up_row_description(column: &str) -> BackendMessage {
    BackendMessage::RowDescription(vec![FieldDescription {
        name: column.to_owned(),
        table_oid: 0,
        column_id: 0,
        type_oid: TEXT_OID,
        type_size: -1,
        type_modifier: -1,
        format: 0,
    }])
}

fn argument_text(argument: &Argument, params: &[Option<String>]) -> Option<String> {
    match argument {
        Argument::Text(text) => Some(text.clone()),
        Argument::Param(n) => params.get(n - 1).cloned().flatten(),
        Argument::Null => None,
    }
}

/// Rows counted in a command tag such as `INSERT 0 5` or `SELECT 3`.
fn tag_rows(tag: &str) -> u64 {
    tag.rsplit(' ')
        .next()
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

fn params_of(bind: &Bind) -> Params {
    if bind.params.is_empty() {
        return Params::default();
    }
    let mut hasher = Sha256::new();
    let mut preview = Vec::with_capacity(bind.params.len());
    let mut bytes = 0u64;
    for (index, value) in bind.params.iter().enumerate() {
        let binary = match bind.param_formats.as_slice() {
            [] => false,
            [one] => *one == 1,
            many => many.get(index).is_some_and(|format| *format == 1),
        };
        match value {
            None => {
                hasher.update(b"N");
                preview.push(format!("${}=NULL", index + 1));
            }
            Some(value) => {
                hasher.update(if binary { b"B" } else { b"T" });
                hasher.update((value.len() as u64).to_be_bytes());
                hasher.update(value);
                bytes += value.len() as u64;
                let shown = if binary {
                    format!("<{} bytes binary>", value.len())
                } else {
                    let text = String::from_utf8_lossy(value);
                    let mut shown: String = text.chars().take(200).collect();
                    if shown.len() < text.len() {
                        shown.push('…');
                    }
                    format!("'{shown}'")
                };
                preview.push(format!("${}={shown}", index + 1));
            }
        }
    }
    Params {
        sha256: Some(hex::encode(hasher.finalize())),
        preview: Some(preview.join(", ")),
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_from_the_tag() {
        assert_eq!(tag_rows("INSERT 0 5"), 5);
        assert_eq!(tag_rows("SELECT 3"), 3);
        assert_eq!(tag_rows("UPDATE 12"), 12);
        assert_eq!(tag_rows("CREATE TABLE"), 0);
        assert_eq!(tag_rows(""), 0);
    }
}
