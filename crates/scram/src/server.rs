//! The server side of a SCRAM-SHA-256(-PLUS) exchange.

use zeroize::Zeroizing;

use crate::channel_binding::{ChannelBinding, TLS_SERVER_END_POINT};
use crate::crypto::{self, KEY_LEN};
use crate::message::{self, Gs2Flag};
use crate::{Error, Mechanism, StoredCredential};

/// Length in bytes of the random part of the server nonce before base64,
/// the same as PostgreSQL's.
const SERVER_NONCE_LEN: usize = 18;

/// Returns the SASL mechanisms to advertise, in order of preference:
/// SCRAM-SHA-256-PLUS only when the connection has channel binding data
/// (TLS and a server certificate hash), then SCRAM-SHA-256.
pub fn advertised_mechanisms(channel_binding: Option<&ChannelBinding>) -> &'static [Mechanism] {
    if channel_binding.is_some() {
        &[Mechanism::ScramSha256Plus, Mechanism::ScramSha256]
    } else {
        &[Mechanism::ScramSha256]
    }
}

/// A server's side of one SCRAM exchange, driven by the client's two
/// messages:
///
/// 1. [`ServerExchange::handle_client_first`] takes the
///    client-first-message and returns the server-first-message.
/// 2. [`ServerExchange::handle_client_final`] takes the
///    client-final-message and, when the proof is valid, returns the
///    server-final-message (`v=<signature>`).
///
/// Any error ends the exchange; every later call then fails with
/// [`Error::InvalidState`]. A server that speaks plain SASL sends
/// [`Error::server_final_message`] to the client, and a PostgreSQL server
/// sends an ErrorResponse instead.
pub struct ServerExchange {
    mechanism: Mechanism,
    credential: StoredCredential,
    /// More credentials of the same user with the same salt and iteration
    /// count, such as one per API token; a proof by any of them passes.
    alternatives: Vec<StoredCredential>,
    /// Index of the credential the proof matched: 0 for `credential`, then
    /// `alternatives` in order.
    matched: Option<usize>,
    channel_binding: Option<ChannelBinding>,
    /// Set for an exchange with an unknown user, which must fail at the
    /// proof like a wrong password.
    reject_proof: bool,
    fixed_server_nonce: Option<String>,
    state: State,
}

enum State {
    Initial,
    /// The server-first-message was sent.
    FirstSent {
        /// client-first-message-bare "," server-first-message ",", the
        /// first part of the AuthMessage.
        auth_message_prefix: String,
        nonce: String,
        /// Expected `c=` value of the client-final-message.
        channel_binding: String,
    },
    Done,
    Failed,
}

impl ServerExchange {
    /// Starts an exchange for the mechanism the client selected, against
    /// the credential of the user named in the startup message.
    ///
    /// `channel_binding` is the connection's `tls-server-end-point` data,
    /// `None` without TLS. It must be the same value that was passed to
    /// [`advertised_mechanisms`], because it decides whether a `y` flag is
    /// a downgrade. SCRAM-SHA-256-PLUS without it fails with
    /// [`Error::MechanismUnavailable`].
    pub fn new(
        mechanism: Mechanism,
        credential: StoredCredential,
        channel_binding: Option<ChannelBinding>,
    ) -> Result<Self, Error> {
        if mechanism == Mechanism::ScramSha256Plus && channel_binding.is_none() {
            return Err(Error::MechanismUnavailable(
                "SCRAM-SHA-256-PLUS",
                "the connection has no TLS channel binding data",
            ));
        }
        Ok(ServerExchange {
            mechanism,
            credential,
            alternatives: Vec::new(),
            matched: None,
            channel_binding,
            reject_proof: false,
            fixed_server_nonce: None,
            state: State::Initial,
        })
    }

    /// Starts an exchange for a user that does not exist. It runs like any
    /// other and fails with [`Error::InvalidProof`] at the client-final
    /// message, so a client cannot tell an unknown user from a wrong
    /// password.
    ///
    /// The salt is HMAC-SHA-256(`mock_secret`, `username`), truncated to
    /// [`crate::DEFAULT_SALT_LEN`] bytes, so repeated attempts for the same
    /// name see the same salt, as they would for a real user. `mock_secret`
    /// should be a random server-wide secret that stays the same across
    /// restarts.
    pub fn for_unknown_user(
        mechanism: Mechanism,
        username: &str,
        mock_secret: &[u8],
        iterations: u32,
        channel_binding: Option<ChannelBinding>,
    ) -> Result<Self, Error> {
        let digest = crypto::hmac_sha256(mock_secret, username.as_bytes());
        let salt = digest
            .get(..crate::DEFAULT_SALT_LEN)
            .ok_or(Error::InvalidCredential("mock salt is too short"))?;
        let mut stored_key = [0; KEY_LEN];
        let mut server_key = [0; KEY_LEN];
        crypto::fill_random(&mut stored_key)?;
        crypto::fill_random(&mut server_key)?;
        let credential = StoredCredential::from_parts(iterations, salt, stored_key, server_key)?;
        let mut exchange = Self::new(mechanism, credential, channel_binding)?;
        exchange.reject_proof = true;
        Ok(exchange)
    }

    /// Accepts a proof by any of `alternatives` too, such as the other API
    /// tokens of one identity. SCRAM sends one salt and iteration count
    /// before the client proves anything, so every alternative must share
    /// them with the first credential; one that does not is an error.
    pub fn with_alternatives(mut self, alternatives: Vec<StoredCredential>) -> Result<Self, Error> {
        let same = |other: &StoredCredential| {
            other.salt() == self.credential.salt()
                && other.iterations() == self.credential.iterations()
        };
        if !alternatives.iter().all(same) {
            return Err(Error::InvalidCredential(
                "alternative credentials must share the salt and iteration count",
            ));
        }
        self.alternatives = alternatives;
        Ok(self)
    }

    /// Returns which credential the accepted proof matched: 0 for the one
    /// given to [`ServerExchange::new`], then the alternatives in order.
    pub fn matched_credential(&self) -> Option<usize> {
        self.matched
    }

    /// Builds an exchange whose server nonce suffix is fixed, to reproduce
    /// published example exchanges.
    #[cfg(test)]
    pub(crate) fn with_server_nonce(mut self, nonce: &str) -> Self {
        self.fixed_server_nonce = Some(nonce.to_owned());
        self
    }

    /// Mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Returns true once a client-final-message with a valid proof was
    /// handled.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Checks the client-first-message and returns the
    /// server-first-message.
    ///
    /// The SCRAM user name (`n=`) is checked for valid encoding but not
    /// used: like PostgreSQL, the server authenticates the user of the
    /// connection's startup message, and PostgreSQL clients send `n=` empty.
    pub fn handle_client_first(&mut self, message: &[u8]) -> Result<String, Error> {
        if !matches!(self.state, State::Initial) {
            return Err(self.fail(Error::InvalidState(
                "the client-first-message was already handled",
            )));
        }
        match self.client_first(message) {
            Ok((server_first, next)) => {
                self.state = next;
                Ok(server_first)
            }
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Checks the client-final-message and, if the channel binding, nonce
    /// and proof are all valid, returns the server-final-message
    /// `v=<ServerSignature>`. The proof is compared in constant time.
    pub fn handle_client_final(&mut self, message: &[u8]) -> Result<String, Error> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::FirstSent {
            auth_message_prefix,
            nonce,
            channel_binding,
        } = state
        else {
            return Err(Error::InvalidState(
                "the client-final-message must follow one client-first-message",
            ));
        };
        let server_final =
            self.client_final(message, &auth_message_prefix, &nonce, &channel_binding)?;
        self.state = State::Done;
        Ok(server_final)
    }

    fn fail(&mut self, error: Error) -> Error {
        self.state = State::Failed;
        error
    }

    /// Parses the client-first-message, builds the server-first-message and
    /// the state that waits for the client-final-message.
    fn client_first(&self, message: &[u8]) -> Result<(String, State), Error> {
        let text = message::decode(message)?;
        let (flag, gs2_header, bare) = message::split_gs2_header(text)?;
        self.check_gs2_flag(&flag)?;
        let client_first = message::parse_client_first_bare(bare)?;

        let server_nonce = match &self.fixed_server_nonce {
            Some(nonce) => nonce.clone(),
            None => {
                let mut random = [0; SERVER_NONCE_LEN];
                crypto::fill_random(&mut random)?;
                message::encode_base64(&random)
            }
        };
        let nonce = format!("{}{server_nonce}", client_first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            message::encode_base64(self.credential.salt()),
            self.credential.iterations()
        );

        let channel_binding = match (&flag, &self.channel_binding) {
            (Gs2Flag::Binding(_), Some(binding)) => binding.attribute_value(),
            _ => message::encode_base64(gs2_header.as_bytes()),
        };
        let state = State::FirstSent {
            auth_message_prefix: format!("{bare},{server_first},"),
            nonce,
            channel_binding,
        };
        Ok((server_first, state))
    }

    /// Applies the channel binding rules of RFC 5802 section 6 to the GS2
    /// flag, given the selected mechanism and the server's binding data.
    fn check_gs2_flag(&self, flag: &Gs2Flag) -> Result<(), Error> {
        match (flag, self.mechanism) {
            (Gs2Flag::Binding(_), _) if self.channel_binding.is_none() => {
                Err(Error::ChannelBindingNotSupported)
            }
            (Gs2Flag::Binding(name), _) if name != TLS_SERVER_END_POINT => {
                Err(Error::UnsupportedChannelBindingType(name.clone()))
            }
            (Gs2Flag::Binding(_), Mechanism::ScramSha256Plus) => Ok(()),
            (Gs2Flag::Binding(_), Mechanism::ScramSha256) => Err(Error::ChannelBindingUnexpected),
            (_, Mechanism::ScramSha256Plus) => Err(Error::ChannelBindingRequired),
            (Gs2Flag::SupportedNotUsed, Mechanism::ScramSha256)
                if self.channel_binding.is_some() =>
            {
                Err(Error::ServerSupportsChannelBinding)
            }
            (_, Mechanism::ScramSha256) => Ok(()),
        }
    }

    /// Verifies the client-final-message and returns the server-final
    /// message.
    fn client_final(
        &mut self,
        message: &[u8],
        auth_message_prefix: &str,
        expected_nonce: &str,
        expected_channel_binding: &str,
    ) -> Result<String, Error> {
        let text = message::decode(message)?;
        let client_final = message::parse_client_final(text)?;
        if !crypto::constant_time_eq(
            client_final.channel_binding.as_bytes(),
            expected_channel_binding.as_bytes(),
        ) {
            return Err(Error::ChannelBindingMismatch);
        }
        if client_final.nonce != expected_nonce {
            return Err(Error::NonceMismatch);
        }
        let proof: Zeroizing<[u8; KEY_LEN]> = Zeroizing::new(
            client_final
                .proof
                .as_slice()
                .try_into()
                .map_err(|_| Error::Malformed("proof is not 32 bytes long"))?,
        );

        let auth_message = format!("{auth_message_prefix}{}", client_final.without_proof);
        // Every credential is checked, so the time taken does not tell
        // which one matched.
        let mut matched = None;
        for (index, credential) in std::iter::once(&self.credential)
            .chain(&self.alternatives)
            .enumerate()
        {
            let client_signature =
                crypto::hmac_sha256(credential.stored_key(), auth_message.as_bytes());
            let client_key = crypto::xor(&proof, &client_signature);
            let valid = crypto::constant_time_eq(
                &crypto::sha256(client_key.as_ref()),
                credential.stored_key(),
            );
            if valid && matched.is_none() {
                matched = Some(index);
            }
        }
        let credential = match matched {
            Some(_) if self.reject_proof => return Err(Error::InvalidProof),
            Some(0) => &self.credential,
            Some(index) => self
                .alternatives
                .get(index - 1)
                .ok_or(Error::InvalidProof)?,
            None => return Err(Error::InvalidProof),
        };
        self.matched = matched;

        let server_signature =
            crypto::hmac_sha256(credential.server_key(), auth_message.as_bytes());
        Ok(format!(
            "v={}",
            message::encode_base64(server_signature.as_ref())
        ))
    }
}

impl std::fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Initial => "initial",
            State::FirstSent { .. } => "server-first sent",
            State::Done => "authenticated",
            State::Failed => "failed",
        };
        f.debug_struct("ServerExchange")
            .field("mechanism", &self.mechanism)
            .field("channel_binding", &self.channel_binding.is_some())
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
