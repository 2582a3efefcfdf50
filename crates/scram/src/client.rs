//! The client side of a SCRAM-SHA-256(-PLUS) exchange, for logging in to a
//! server that stores the password's SCRAM credential.

use zeroize::Zeroizing;

use crate::channel_binding::{ChannelBinding, PLUS_GS2_HEADER};
use crate::credential::DEFAULT_ITERATIONS;
use crate::crypto::{self, Key};
use crate::message::{self, ServerFinal};
use crate::{Error, Mechanism, password};

/// Length in bytes of the random client nonce before base64, the same as
/// PostgreSQL's libpq.
const CLIENT_NONCE_LEN: usize = 18;

/// Default maximum iteration count the client accepts from a server. It
/// bounds the PBKDF2 work that a malicious server can make the client do:
/// 1,000,000 iterations of PBKDF2-HMAC-SHA-256 took 0.22 s on one AMD EPYC
/// core (measured with Python's `hashlib.pbkdf2_hmac`, which uses OpenSSL).
pub const DEFAULT_MAX_ITERATIONS: u32 = 1_000_000;

/// Channel binding choice of the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientChannelBinding {
    /// The client cannot bind (no TLS): GS2 flag `n`.
    NotSupported,
    /// The client could bind but the server did not offer
    /// SCRAM-SHA-256-PLUS: GS2 flag `y`, so that a server that does support
    /// it detects the downgrade.
    NotOffered,
    /// The client binds to the server certificate (SCRAM-SHA-256-PLUS):
    /// GS2 header `p=tls-server-end-point,,`.
    TlsServerEndPoint(ChannelBinding),
}

impl ClientChannelBinding {
    fn gs2_header(&self) -> &'static str {
        match self {
            ClientChannelBinding::NotSupported => "n,,",
            ClientChannelBinding::NotOffered => "y,,",
            ClientChannelBinding::TlsServerEndPoint(_) => PLUS_GS2_HEADER,
        }
    }

    fn attribute_value(&self) -> String {
        match self {
            ClientChannelBinding::TlsServerEndPoint(binding) => binding.attribute_value(),
            other => message::encode_base64(other.gs2_header().as_bytes()),
        }
    }
}

/// A client's side of one SCRAM exchange:
///
/// 1. [`ClientExchange::client_first`] returns the client-first-message.
/// 2. [`ClientExchange::handle_server_first`] takes the
///    server-first-message and returns the client-final-message.
/// 3. [`ClientExchange::handle_server_final`] takes the
///    server-final-message and succeeds only if the server proved that it
///    has the password's ServerKey.
///
/// Any error ends the exchange; every later call then fails with
/// [`Error::InvalidState`].
pub struct ClientExchange {
    password: Zeroizing<String>,
    username: String,
    channel_binding: ClientChannelBinding,
    min_iterations: u32,
    max_iterations: u32,
    fixed_client_nonce: Option<String>,
    state: State,
}

enum State {
    Initial,
    FirstSent {
        client_first_bare: String,
        nonce: String,
    },
    FinalSent {
        salted_password: Zeroizing<Key>,
        auth_message: String,
    },
    Done,
    Failed,
}

impl ClientExchange {
    /// Starts an exchange with the given password and channel binding
    /// choice. The SCRAM user name is sent empty (`n=,`), as PostgreSQL
    /// clients do, because PostgreSQL takes the user from the startup
    /// message. The password must be printable ASCII (see the crate
    /// documentation).
    pub fn new(password: &str, channel_binding: ClientChannelBinding) -> Result<Self, Error> {
        password::prepare(password)?;
        Ok(ClientExchange {
            password: Zeroizing::new(password.to_owned()),
            username: String::new(),
            channel_binding,
            min_iterations: DEFAULT_ITERATIONS,
            max_iterations: DEFAULT_MAX_ITERATIONS,
            fixed_client_nonce: None,
            state: State::Initial,
        })
    }

    /// Chooses the mechanism from the server's list and starts an exchange.
    ///
    /// With the server certificate's binding, SCRAM-SHA-256-PLUS is chosen
    /// when offered, and otherwise SCRAM-SHA-256 with the `y` flag. Without
    /// it, SCRAM-SHA-256 is chosen with the `n` flag. Unknown mechanism
    /// names are skipped.
    pub fn negotiate<'a>(
        offered: impl IntoIterator<Item = &'a str>,
        password: &str,
        channel_binding: Option<ChannelBinding>,
    ) -> Result<Self, Error> {
        let offered: Vec<Mechanism> = offered
            .into_iter()
            .filter_map(Mechanism::from_name)
            .collect();
        let plus = offered.contains(&Mechanism::ScramSha256Plus);
        let plain = offered.contains(&Mechanism::ScramSha256);
        let choice = match channel_binding {
            Some(binding) if plus => ClientChannelBinding::TlsServerEndPoint(binding),
            Some(_) if plain => ClientChannelBinding::NotOffered,
            None if plain => ClientChannelBinding::NotSupported,
            _ => return Err(Error::NoCommonMechanism),
        };
        Self::new(password, choice)
    }

    /// Sets the SCRAM user name (`n=`) that the client-first-message carries
    /// in place of the empty name.
    pub fn with_username(mut self, username: &str) -> Self {
        self.username = message::encode_saslname(username);
        self
    }

    /// Sets the range of iteration counts the client accepts from the
    /// server, by default [`DEFAULT_ITERATIONS`] to
    /// [`DEFAULT_MAX_ITERATIONS`]. A lower minimum is meant for tests only:
    /// a low count makes a stolen credential cheap to brute-force.
    pub fn with_iteration_limits(mut self, min: u32, max: u32) -> Self {
        self.min_iterations = min;
        self.max_iterations = max;
        self
    }

    /// Builds an exchange whose client nonce is fixed, to reproduce
    /// published example exchanges.
    #[cfg(test)]
    pub(crate) fn with_client_nonce(mut self, nonce: &str) -> Self {
        self.fixed_client_nonce = Some(nonce.to_owned());
        self
    }

    /// Mechanism to name in the SASLInitialResponse.
    pub fn mechanism(&self) -> Mechanism {
        match self.channel_binding {
            ClientChannelBinding::TlsServerEndPoint(_) => Mechanism::ScramSha256Plus,
            _ => Mechanism::ScramSha256,
        }
    }

    /// Returns the client-first-message with a fresh random nonce.
    pub fn client_first(&mut self) -> Result<String, Error> {
        if !matches!(self.state, State::Initial) {
            return Err(self.fail(Error::InvalidState(
                "the client-first-message was already built",
            )));
        }
        let nonce = match &self.fixed_client_nonce {
            Some(nonce) => nonce.clone(),
            None => {
                let mut random = [0; CLIENT_NONCE_LEN];
                if let Err(error) = crypto::fill_random(&mut random) {
                    return Err(self.fail(error));
                }
                message::encode_base64(&random)
            }
        };
        let client_first_bare = format!("n={},r={nonce}", self.username);
        let client_first = format!("{}{client_first_bare}", self.channel_binding.gs2_header());
        self.state = State::FirstSent {
            client_first_bare,
            nonce,
        };
        Ok(client_first)
    }

    /// Checks the server-first-message (the nonce extends the client's, the
    /// salt is base64, the iteration count is within the limits) and returns
    /// the client-final-message with the client proof.
    pub fn handle_server_first(&mut self, message: &[u8]) -> Result<String, Error> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::FirstSent {
            client_first_bare,
            nonce,
        } = state
        else {
            return Err(Error::InvalidState(
                "the server-first-message must follow the client-first-message",
            ));
        };
        let (client_final, next) = self.server_first(message, &client_first_bare, &nonce)?;
        self.state = next;
        Ok(client_final)
    }

    /// Checks the server-final-message. Success means the server proved it
    /// has the password's ServerKey. An `e=` from the server fails with
    /// [`Error::ServerRejected`], and a wrong signature with
    /// [`Error::InvalidServerSignature`].
    pub fn handle_server_final(&mut self, message: &[u8]) -> Result<(), Error> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::FinalSent {
            salted_password,
            auth_message,
        } = state
        else {
            return Err(Error::InvalidState(
                "the server-final-message must follow the server-first-message",
            ));
        };
        let text = message::decode(message)?;
        let signature = match message::parse_server_final(text)? {
            ServerFinal::Error(value) => return Err(Error::ServerRejected(value)),
            ServerFinal::Verifier(signature) => signature,
        };
        let server_key = crypto::server_key(&salted_password);
        let expected = crypto::hmac_sha256(server_key.as_ref(), auth_message.as_bytes());
        if !crypto::constant_time_eq(&signature, expected.as_ref()) {
            return Err(Error::InvalidServerSignature);
        }
        self.state = State::Done;
        Ok(())
    }

    fn fail(&mut self, error: Error) -> Error {
        self.state = State::Failed;
        error
    }

    fn server_first(
        &self,
        message: &[u8],
        client_first_bare: &str,
        client_nonce: &str,
    ) -> Result<(String, State), Error> {
        let text = message::decode(message)?;
        let server_first = message::parse_server_first(text)?;
        let extends_nonce = server_first
            .nonce
            .strip_prefix(client_nonce)
            .is_some_and(|suffix| !suffix.is_empty());
        if !extends_nonce {
            return Err(Error::NonceMismatch);
        }
        if !(self.min_iterations..=self.max_iterations).contains(&server_first.iterations) {
            return Err(Error::IterationCount {
                iterations: server_first.iterations,
                min: self.min_iterations,
                max: self.max_iterations,
            });
        }
        let iterations = std::num::NonZeroU32::new(server_first.iterations)
            .ok_or(Error::Malformed("iteration count is zero"))?;

        let salted_password =
            crypto::salted_password(self.password.as_bytes(), &server_first.salt, iterations);
        let client_key = crypto::client_key(&salted_password);
        let stored_key = crypto::sha256(client_key.as_ref());

        let without_proof = format!(
            "c={},r={}",
            self.channel_binding.attribute_value(),
            server_first.nonce
        );
        let auth_message = format!("{client_first_bare},{text},{without_proof}");
        let client_signature = crypto::hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof = crypto::xor(&client_key, &client_signature);
        let client_final = format!(
            "{without_proof},p={}",
            message::encode_base64(proof.as_ref())
        );
        let state = State::FinalSent {
            salted_password,
            auth_message,
        };
        Ok((client_final, state))
    }
}

impl std::fmt::Debug for ClientExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Initial => "initial",
            State::FirstSent { .. } => "client-first sent",
            State::FinalSent { .. } => "client-final sent",
            State::Done => "authenticated",
            State::Failed => "failed",
        };
        f.debug_struct("ClientExchange")
            .field("mechanism", &self.mechanism())
            .field("min_iterations", &self.min_iterations)
            .field("max_iterations", &self.max_iterations)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
