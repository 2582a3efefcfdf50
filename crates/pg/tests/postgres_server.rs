//! Talks to a real PostgreSQL server with this crate's encoder and decoder:
//! startup, simple and extended queries, COPY in both directions, notices,
//! notifications, FunctionCall, protocol negotiation, CancelRequest,
//! encryption requests and the start of a SCRAM exchange.
//!
//! The server comes from `stepgate_testpg`, which skips the test with a
//! printed reason when PostgreSQL is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use stepgate_pg::{
    Authentication, BackendDecoder, BackendMessage, Bind, CancelRequest, EncryptionResponse,
    Execute, FrontendMessage, FunctionCall, Parse, ProtocolVersion, SaslInitialResponse,
    StartupMessage, StartupPacket, Target, TransactionStatus,
};
use stepgate_testpg::{Options, Postgres};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READ_TIMEOUT: Duration = Duration::from_secs(10);
const SUPERUSER: &str = "gateway";
const SCRAM_USER: &str = "scram_bot";

/// Starts PostgreSQL with the role [`SUPERUSER`], a superuser trusted on
/// TCP, so the codec logs in without a password. [`SCRAM_USER`] matches the
/// default `pg_hba.conf` line, which requires a SCRAM password.
fn start_server() -> Option<Postgres> {
    let postgres = Postgres::start(Options {
        hba: vec![format!("host all {SUPERUSER} 127.0.0.1/32 trust")],
        ..Options::default()
    })?;
    postgres.sql(&format!("CREATE ROLE {SUPERUSER} SUPERUSER LOGIN"));
    Some(postgres)
}

/// A client connection driven by this crate's codec.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: BackendDecoder,
}

impl Client {
    async fn connect(port: u16) -> Client {
        Client {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            buf: BytesMut::new(),
            decoder: BackendDecoder::default(),
        }
    }

    async fn send_startup(&mut self, packet: &StartupPacket) {
        let mut out = BytesMut::new();
        packet.encode(&mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    async fn send(&mut self, messages: &[FrontendMessage]) {
        let mut out = BytesMut::new();
        for message in messages {
            message.encode(&mut out).unwrap();
        }
        self.stream.write_all(&out).await.unwrap();
    }

    async fn fill(&mut self) {
        let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
            .await
            .expect("timed out waiting for the server")
            .unwrap();
        assert!(read > 0, "server closed the connection");
    }

    async fn encryption_response(&mut self) -> EncryptionResponse {
        loop {
            if let Some(response) = self
                .decoder
                .decode_encryption_response(&mut self.buf)
                .unwrap()
            {
                return response;
            }
            self.fill().await;
        }
    }

    async fn recv(&mut self) -> BackendMessage {
        loop {
            if let Some(message) = self.decoder.decode(&mut self.buf).unwrap() {
                return message;
            }
            self.fill().await;
        }
    }

    /// Receives messages up to and including ReadyForQuery.
    async fn until_ready(&mut self) -> Vec<BackendMessage> {
        let mut messages = Vec::new();
        loop {
            let message = self.recv().await;
            let done = matches!(message, BackendMessage::ReadyForQuery(_));
            messages.push(message);
            if done {
                return messages;
            }
        }
    }

    async fn query(&mut self, sql: &str) -> Vec<BackendMessage> {
        self.send(&[FrontendMessage::Query(sql.into())]).await;
        self.until_ready().await
    }

    /// Asserts that the server closed the connection with nothing more to
    /// decode.
    async fn expect_closed(&mut self) {
        let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
            .await
            .expect("server did not close the connection")
            .unwrap_or(0);
        assert_eq!(read, 0, "unexpected bytes: {:02x?}", &self.buf[..]);
    }
}

fn startup(user: &str, extra: &[(&str, &str)]) -> StartupPacket {
    let mut parameters = vec![
        ("user".to_owned(), user.to_owned()),
        ("database".to_owned(), "postgres".to_owned()),
        ("application_name".to_owned(), "stepgate-pg-test".to_owned()),
        ("client_encoding".to_owned(), "UTF8".to_owned()),
    ];
    parameters.extend(
        extra
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    );
    StartupPacket::Startup(StartupMessage {
        protocol: ProtocolVersion::V3_0,
        parameters,
    })
}

fn text(value: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(value.as_bytes()))
}

/// Logs in as the trusted superuser and returns the connection and its
/// cancel key.
async fn login(port: u16) -> (Client, CancelRequest) {
    let mut client = Client::connect(port).await;
    client.send_startup(&startup(SUPERUSER, &[])).await;
    let messages = client.until_ready().await;
    assert_eq!(
        messages.first(),
        Some(&BackendMessage::Authentication(Authentication::Ok))
    );

    assert!(messages.iter().any(|message| matches!(
        message,
        BackendMessage::ParameterStatus { name, value }
            if name == "server_version" && value.starts_with("15")
    )));
    assert!(messages.iter().any(|message| matches!(
        message,
        BackendMessage::ParameterStatus { name, value }
            if name == "application_name" && value == "stepgate-pg-test"
    )));
    let key = messages
        .iter()
        .find_map(|message| match message {
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => Some(CancelRequest {
                process_id: *process_id,
                secret_key: *secret_key,
            }),
            _ => None,
        })
        .expect("BackendKeyData");
    assert_eq!(
        messages.last(),
        Some(&BackendMessage::ReadyForQuery(TransactionStatus::Idle))
    );
    (client, key)
}

async fn simple_queries(client: &mut Client) {
    let messages = client
        .query("SELECT 1 AS one, NULL::text AS nothing, 'grüße'::text AS word")
        .await;
    let [
        BackendMessage::RowDescription(fields),
        BackendMessage::DataRow(row),
        BackendMessage::CommandComplete(tag),
        BackendMessage::ReadyForQuery(TransactionStatus::Idle),
    ] = &messages[..]
    else {
        panic!("simple query returned {messages:?}");
    };

    let names: Vec<&str> = fields.iter().map(|field| field.name.as_str()).collect();
    assert_eq!(names, ["one", "nothing", "word"]);
    // 23 is int4, 25 is text.
    assert_eq!(fields[0].type_oid, 23);
    assert_eq!(fields[1].type_oid, 25);
    assert_eq!(row, &[text("1"), None, text("grüße")]);
    assert_eq!(tag, "SELECT 1");

    let messages = client.query("SELECT * FROM no_such_table").await;
    let BackendMessage::ErrorResponse(error) = &messages[0] else {
        panic!("query of a missing table returned {messages:?}");
    };

    assert_eq!(error.code(), Some("42P01"));
    assert_eq!(error.severity(), Some("ERROR"));
    assert_eq!(
        error.get(b'P'),
        Some("15"),
        "position of the table name in the query"
    );

    let messages = client.query("").await;
    assert_eq!(messages[0], BackendMessage::EmptyQueryResponse);

    let messages = client
        .query("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await;
    let BackendMessage::NoticeResponse(notice) = &messages[0] else {
        panic!("DO block returned {messages:?}");
    };

    assert_eq!(notice.severity(), Some("NOTICE"));
    assert_eq!(notice.message(), Some("hello from plpgsql"));

    let messages = client.query("LISTEN jobs; NOTIFY jobs, 'job 7 done'").await;
    assert!(messages.iter().any(|message| matches!(
        message,
        BackendMessage::NotificationResponse { channel, payload, .. }
            if channel == "jobs" && payload == "job 7 done"
    )));

    let messages = client.query("BEGIN").await;
    assert_eq!(
        messages.last(),
        Some(&BackendMessage::ReadyForQuery(
            TransactionStatus::InTransaction
        ))
    );

    let messages = client.query("SELECT 1/0").await;
    assert_eq!(
        messages.last(),
        Some(&BackendMessage::ReadyForQuery(TransactionStatus::Failed))
    );

    client.query("ROLLBACK").await;
}

async fn extended_queries(client: &mut Client) {
    client
        .send(&[
            FrontendMessage::Parse(Parse {
                name: "next".into(),
                query: "SELECT $1::int4 + 1 AS next, $2::text AS label".into(),
                param_types: vec![23, 0],
            }),
            FrontendMessage::Describe {
                target: Target::Statement,
                name: "next".into(),
            },
            FrontendMessage::Bind(Bind {
                portal: String::new(),
                statement: "next".into(),
                param_formats: vec![],
                params: vec![text("41"), text("answer")],
                // The first column in binary, the second as text.
                result_formats: vec![1, 0],
            }),
            FrontendMessage::Describe {
                target: Target::Portal,
                name: String::new(),
            },
            FrontendMessage::Execute(Execute {
                portal: String::new(),
                max_rows: 0,
            }),
            FrontendMessage::Close {
                target: Target::Statement,
                name: "next".into(),
            },
            FrontendMessage::Sync,
        ])
        .await;
    let messages = client.until_ready().await;
    let [
        BackendMessage::ParseComplete,
        BackendMessage::ParameterDescription(param_types),
        BackendMessage::RowDescription(statement_fields),
        BackendMessage::BindComplete,
        BackendMessage::RowDescription(portal_fields),
        BackendMessage::DataRow(row),
        BackendMessage::CommandComplete(tag),
        BackendMessage::CloseComplete,
        BackendMessage::ReadyForQuery(TransactionStatus::Idle),
    ] = &messages[..]
    else {
        panic!("extended query returned {messages:?}");
    };

    assert_eq!(param_types, &[23, 25]);
    assert_eq!(statement_fields[0].format, 0);
    assert_eq!(portal_fields[0].format, 1);
    assert_eq!(portal_fields[1].format, 0);
    assert_eq!(
        row,
        &[Some(Bytes::from_static(&[0, 0, 0, 42])), text("answer")]
    );

    assert_eq!(tag, "SELECT 1");

    // A row limit suspends the portal; Flush makes the server send what it
    // has before Sync.
    client
        .send(&[
            FrontendMessage::Parse(Parse {
                name: String::new(),
                query: "SELECT generate_series(1, 3)".into(),
                param_types: vec![],
            }),
            FrontendMessage::Bind(Bind {
                portal: "rows".into(),
                statement: String::new(),
                param_formats: vec![],
                params: vec![],
                result_formats: vec![],
            }),
            FrontendMessage::Execute(Execute {
                portal: "rows".into(),
                max_rows: 2,
            }),
            FrontendMessage::Flush,
        ])
        .await;
    let mut messages = Vec::new();
    while !matches!(messages.last(), Some(BackendMessage::PortalSuspended)) {
        messages.push(client.recv().await);
    }

    assert_eq!(
        messages,
        [
            BackendMessage::ParseComplete,
            BackendMessage::BindComplete,
            BackendMessage::DataRow(vec![text("1")]),
            BackendMessage::DataRow(vec![text("2")]),
            BackendMessage::PortalSuspended,
        ]
    );

    client.send(&[FrontendMessage::Sync]).await;
    assert_eq!(
        client.until_ready().await,
        [BackendMessage::ReadyForQuery(TransactionStatus::Idle)]
    );

    // A NULL parameter, sent with one format code for all parameters.
    client
        .send(&[
            FrontendMessage::Parse(Parse {
                name: String::new(),
                query: "SELECT $1::text IS NULL".into(),
                param_types: vec![],
            }),
            FrontendMessage::Bind(Bind {
                portal: String::new(),
                statement: String::new(),
                param_formats: vec![0],
                params: vec![None],
                result_formats: vec![],
            }),
            FrontendMessage::Execute(Execute {
                portal: String::new(),
                max_rows: 0,
            }),
            FrontendMessage::Sync,
        ])
        .await;
    let messages = client.until_ready().await;
    assert!(messages.contains(&BackendMessage::DataRow(vec![text("t")])));
}

/// Sends 40000 parameters, more than a signed 16-bit count can express,
/// which PostgreSQL accepts because it reads the count as unsigned.
async fn many_parameters(client: &mut Client) {
    const COUNT: usize = 40_000;
    client
        .send(&[
            FrontendMessage::Parse(Parse {
                name: String::new(),
                query: format!("SELECT ${COUNT}::int4"),
                param_types: vec![23; COUNT],
            }),
            FrontendMessage::Describe {
                target: Target::Statement,
                name: String::new(),
            },
            FrontendMessage::Bind(Bind {
                portal: String::new(),
                statement: String::new(),
                param_formats: vec![],
                params: (0..COUNT).map(|index| text(&index.to_string())).collect(),
                result_formats: vec![],
            }),
            FrontendMessage::Execute(Execute {
                portal: String::new(),
                max_rows: 0,
            }),
            FrontendMessage::Sync,
        ])
        .await;
    let messages = client.until_ready().await;
    let Some(BackendMessage::ParameterDescription(param_types)) = messages.get(1) else {
        panic!("Describe returned {:?}", messages.get(1));
    };

    assert_eq!(param_types.len(), COUNT);
    let last = (COUNT - 1).to_string();
    assert!(
        messages.contains(&BackendMessage::DataRow(vec![text(&last)])),
        "{:?}",
        &messages[2..]
    );
}

async fn copy_both_ways(client: &mut Client) {
    let messages = client
        .query("COPY (VALUES (1, 'a'), (2, NULL)) TO STDOUT")
        .await;
    assert!(matches!(
        &messages[0],
        BackendMessage::CopyOutResponse(response)
            if response.format == 0 && response.column_formats == [0, 0]
    ));

    assert_eq!(
        messages[1..],
        [
            BackendMessage::CopyData(Bytes::from_static(b"1\ta\n")),
            BackendMessage::CopyData(Bytes::from_static(b"2\t\\N\n")),
            BackendMessage::CopyDone,
            BackendMessage::CommandComplete("COPY 2".into()),
            BackendMessage::ReadyForQuery(TransactionStatus::Idle),
        ]
    );

    client
        .query("CREATE TEMP TABLE items (id int, name text)")
        .await;
    client
        .send(&[FrontendMessage::Query("COPY items FROM STDIN".into())])
        .await;
    let response = client.recv().await;
    assert!(
        matches!(response, BackendMessage::CopyInResponse(_)),
        "{response:?}"
    );

    client
        .send(&[
            FrontendMessage::CopyData(Bytes::from_static(b"1\tone\n2\t")),
            FrontendMessage::CopyData(Bytes::from_static(b"two\n")),
            FrontendMessage::CopyDone,
        ])
        .await;
    assert_eq!(
        client.until_ready().await,
        [
            BackendMessage::CommandComplete("COPY 2".into()),
            BackendMessage::ReadyForQuery(TransactionStatus::Idle),
        ]
    );

    client
        .send(&[FrontendMessage::Query("COPY items FROM STDIN".into())])
        .await;
    client.recv().await;
    client
        .send(&[FrontendMessage::CopyFail("gateway stopped the copy".into())])
        .await;
    let messages = client.until_ready().await;
    let BackendMessage::ErrorResponse(error) = &messages[0] else {
        panic!("CopyFail returned {messages:?}");
    };

    // 57014 is query_canceled.
    assert_eq!(error.code(), Some("57014"));
    assert!(
        error
            .message()
            .unwrap()
            .contains("gateway stopped the copy")
    );
}

async fn function_call(client: &mut Client) {
    let messages = client.query("SELECT 'int4pl'::regproc::oid").await;
    let BackendMessage::DataRow(row) = &messages[1] else {
        panic!("OID query returned {messages:?}");
    };

    let oid: u32 = std::str::from_utf8(row[0].as_deref().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    client
        .send(&[FrontendMessage::FunctionCall(FunctionCall {
            function_oid: oid,
            arg_formats: vec![1],
            args: vec![
                Some(Bytes::copy_from_slice(&40i32.to_be_bytes())),
                Some(Bytes::copy_from_slice(&2i32.to_be_bytes())),
            ],
            result_format: 1,
        })])
        .await;
    assert_eq!(
        client.until_ready().await,
        [
            BackendMessage::FunctionCallResponse(Some(Bytes::copy_from_slice(
                &42i32.to_be_bytes()
            ))),
            BackendMessage::ReadyForQuery(TransactionStatus::Idle),
        ]
    );
}

async fn cancel_running_query(port: u16, client: &mut Client, key: CancelRequest) {
    client
        .send(&[FrontendMessage::Query("SELECT pg_sleep(30)".into())])
        .await;
    // Give the server time to start the sleep before cancelling it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut canceller = Client::connect(port).await;
    canceller
        .send_startup(&StartupPacket::CancelRequest(key))
        .await;
    canceller.expect_closed().await;
    // The server sends the RowDescription before it starts the sleep.
    let messages = client.until_ready().await;
    let Some(error) = messages.iter().find_map(|message| match message {
        BackendMessage::ErrorResponse(error) => Some(error),
        _ => None,
    }) else {
        panic!("cancelled query returned {messages:?}");
    };

    assert_eq!(error.code(), Some("57014"));
}

async fn negotiation_and_encryption(port: u16) {
    // Protocol 3.0 with an unknown protocol option: the server names it in
    // NegotiateProtocolVersion and continues.
    let mut client = Client::connect(port).await;
    client
        .send_startup(&startup(SUPERUSER, &[("_pq_.stepgate_test", "1")]))
        .await;
    assert_eq!(
        client.recv().await,
        BackendMessage::NegotiateProtocolVersion {
            newest_version: ProtocolVersion::V3_0,
            unrecognized_options: vec!["_pq_.stepgate_test".into()],
        }
    );

    assert_eq!(
        client.recv().await,
        BackendMessage::Authentication(Authentication::Ok)
    );

    // A server built with GSSAPI responds 'G' on TCP even without a keytab,
    // so either response is valid here. The handshake is not attempted.
    let mut client = Client::connect(port).await;
    client.send_startup(&StartupPacket::GssEncRequest).await;
    let response = client.encryption_response().await;
    assert!(
        matches!(
            response,
            EncryptionResponse::AcceptGss | EncryptionResponse::Refuse
        ),
        "{response:?}"
    );

    // The server has no TLS, so it responds 'N' to the SSLRequest and a
    // StartupMessage follows on the same connection.
    let mut client = Client::connect(port).await;
    client.send_startup(&StartupPacket::SslRequest).await;
    assert_eq!(
        client.encryption_response().await,
        EncryptionResponse::Refuse
    );

    client.send_startup(&startup(SUPERUSER, &[])).await;
    let messages = client.until_ready().await;
    assert_eq!(
        messages[0],
        BackendMessage::Authentication(Authentication::Ok)
    );

    client.send(&[FrontendMessage::Terminate]).await;
    client.expect_closed().await;

    // Protocol 2.0 is rejected. PostgreSQL 15 writes that error in the
    // version 2 format: 'E' and a bare string without a length word. A
    // protocol 3.0 decoder cannot frame it, so the raw bytes are checked.
    let mut client = Client::connect(port).await;
    client
        .send_startup(&StartupPacket::UnsupportedVersion {
            protocol: ProtocolVersion::new(2, 0),
            body: Bytes::from_static(&[0; 288]),
        })
        .await;
    tokio::time::timeout(READ_TIMEOUT, async {
        while client.stream.read_buf(&mut client.buf).await.unwrap() > 0 {}
    })
    .await
    .expect("server did not close the connection");
    let reply = String::from_utf8_lossy(&client.buf);
    assert!(reply.starts_with("EFATAL"), "{reply}");
    assert!(
        reply.contains("unsupported frontend protocol 2.0"),
        "{reply}"
    );
}

async fn scram_start(port: u16, admin: &mut Client) {
    admin
        .query(&format!(
            "CREATE ROLE {SCRAM_USER} LOGIN PASSWORD 'correct horse'"
        ))
        .await;
    let mut client = Client::connect(port).await;
    client.send_startup(&startup(SCRAM_USER, &[])).await;
    // Without TLS the server offers SCRAM-SHA-256 only, not the -PLUS
    // variant with channel binding.
    assert_eq!(
        client.recv().await,
        BackendMessage::Authentication(Authentication::Sasl(vec!["SCRAM-SHA-256".into()]))
    );

    let initial = SaslInitialResponse {
        mechanism: "SCRAM-SHA-256".into(),
        data: Some(Bytes::from_static(b"n,,n=,r=stepgatenonce")),
    };

    client.send(&[initial.to_message().unwrap()]).await;
    let BackendMessage::Authentication(Authentication::SaslContinue(server_first)) =
        client.recv().await
    else {
        panic!("SASLInitialResponse was not accepted");
    };

    // The server's nonce extends the client's.
    assert!(server_first.starts_with(b"r=stepgatenonce"));
    client
        .send(&[FrontendMessage::PasswordMessage(Bytes::from_static(
            b"c=biws,r=wrong,p=AAAA",
        ))])
        .await;
    let BackendMessage::ErrorResponse(error) = client.recv().await else {
        panic!("a wrong SCRAM proof was not rejected");
    };

    assert_eq!(error.severity(), Some("FATAL"));
    client.expect_closed().await;
}

#[tokio::test(flavor = "current_thread")]
async fn codec_against_postgres_15() {
    let Some(server) = start_server() else {
        return;
    };

    let port = server.port();
    let (mut client, key) = login(port).await;
    simple_queries(&mut client).await;
    extended_queries(&mut client).await;
    many_parameters(&mut client).await;
    copy_both_ways(&mut client).await;
    function_call(&mut client).await;
    cancel_running_query(port, &mut client, key).await;
    negotiation_and_encryption(port).await;
    scram_start(port, &mut client).await;
    client.send(&[FrontendMessage::Terminate]).await;
    client.expect_closed().await;
}
