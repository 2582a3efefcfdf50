//! Sign-in sessions of the approvals page, and the CSRF tokens of its
//! forms.
//!
//! A session id is 32 random bytes, sent to the browser in a cookie and
//! kept here only as its SHA-256, so a memory dump does not reveal ids
//! that are in use. Each session has its own CSRF token. The sign-in form,
//! shown before any session exists, gets a token that is an HMAC of a
//! random pre-session cookie, so no state is kept for people who have not
//! signed in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use stepgate_core::{Clock, IdentityName, Timestamp};
use subtle::ConstantTimeEq as _;

/// Most sessions kept at once; signing in past it ends the session that
/// expires first.
const MAX_SESSIONS: usize = 10_000;
/// Bytes of randomness in session ids, CSRF tokens and pre-session ids.
const TOKEN_BYTES: usize = 32;

/// A signed-in approver's session.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) approver: IdentityName,
    pub(crate) expires_at: Timestamp,
    csrf: String,
}

impl Session {
    /// The token every form of this session must send back.
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Compares a form's CSRF token with this session's in constant time.
    pub(crate) fn csrf_matches(&self, presented: &str) -> bool {
        constant_time_eq(presented, &self.csrf)
    }
}

/// The sessions of one console, keyed by the SHA-256 of their ids.
pub(crate) struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    random: SystemRandom,
    /// Key of the sign-in form's CSRF tokens, new in every process. None
    /// when the random generator failed, which fails every sign-in.
    sign_in_key: Option<hmac::Key>,
}

/// Error of the system random generator, which no session or token can
/// be made without.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub(crate) struct RandomFailed;

impl Sessions {
    pub(crate) fn new(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        let random = SystemRandom::new();
        let sign_in_key = hmac::Key::generate(hmac::HMAC_SHA256, &random).ok();
        if sign_in_key.is_none() {
            tracing::error!("cannot generate the sign-in form key, so every sign-in will fail");
        }
        Self {
            by_hash: Mutex::default(),
            ttl,
            clock,
            random,
            sign_in_key,
        }
    }

    fn random_token(&self) -> Result<String, RandomFailed> {
        let mut bytes = [0_u8; TOKEN_BYTES];
        self.random.fill(&mut bytes).map_err(|_| RandomFailed)?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Starts a session for `approver`; returns the id for the cookie.
    pub(crate) fn create(&self, approver: IdentityName) -> Result<(String, Session), RandomFailed> {
        let id = self.random_token()?;
        let session = Session {
            approver,
            expires_at: self.clock.now().saturating_add(self.ttl),
            csrf: self.random_token()?,
        };
        let now = self.clock.now();
        let mut sessions = self.by_hash.lock();
        sessions.retain(|_, session| session.expires_at > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(first) = sessions
                .iter()
                .min_by_key(|(_, session)| session.expires_at)
                .map(|(hash, _)| *hash)
        {
            sessions.remove(&first);
        }
        sessions.insert(hash_id(&id), session.clone());
        Ok((id, session))
    }

    /// Returns the live session with cookie value `id`, and removes it when
    /// it has expired.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let hash = hash_id(id);
        let now = self.clock.now();
        let mut sessions = self.by_hash.lock();
        match sessions.get(&hash) {
            Some(session) if session.expires_at > now => Some(session.clone()),
            Some(_) => {
                sessions.remove(&hash);
                None
            }
            None => None,
        }
    }

    /// Ends the session with cookie value `id`.
    pub(crate) fn remove(&self, id: &str) -> Option<Session> {
        self.by_hash.lock().remove(&hash_id(id))
    }

    /// Makes a new pre-session id for the sign-in form's cookie.
    pub(crate) fn new_pre_session(&self) -> Result<String, RandomFailed> {
        self.random_token()
    }

    /// Computes the sign-in form's CSRF token for pre-session cookie value
    /// `pre`, or an empty string when there is no key.
    pub(crate) fn sign_in_token(&self, pre: &str) -> String {
        match &self.sign_in_key {
            Some(key) => {
                let tag = hmac::sign(key, format!("sign-in\n{pre}").as_bytes());
                URL_SAFE_NO_PAD.encode(tag.as_ref())
            }
            None => String::new(),
        }
    }

    /// Checks a sign-in form's token against its pre-session cookie, in
    /// constant time.
    pub(crate) fn sign_in_token_matches(&self, pre: &str, presented: &str) -> bool {
        let expected = self.sign_in_token(pre);
        !pre.is_empty() && !expected.is_empty() && constant_time_eq(presented, &expected)
    }
}

fn hash_id(id: &str) -> [u8; 32] {
    let digest = digest::digest(&digest::SHA256, id.as_bytes());
    let mut hash = [0_u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// Compares two tokens without an early exit on the first differing byte.
/// The length is not secret: every token of one kind has the same length.
fn constant_time_eq(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use stepgate_core::ManualClock;

    fn sessions(clock: &ManualClock) -> Sessions {
        Sessions::new(Duration::from_secs(60), Arc::new(clock.clone()))
    }

    #[test]
    fn session_ids_are_long_and_stored_hashed() {
        let clock = ManualClock::new(Timestamp::from_secs(1_000));
        let sessions = sessions(&clock);
        let (id, session) = sessions
            .create(IdentityName::new("alice").unwrap())
            .unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&id).unwrap().len(), 32);
        assert_eq!(URL_SAFE_NO_PAD.decode(session.csrf()).unwrap().len(), 32);
        let stored = sessions.by_hash.lock();
        assert!(stored.contains_key(&hash_id(&id)));
        assert!(!stored.keys().any(|key| key.as_slice() == id.as_bytes()));
    }

    #[test]
    fn session_expires_after_ttl() {
        let clock = ManualClock::new(Timestamp::from_secs(1_000));
        let sessions = sessions(&clock);
        let (id, _) = sessions
            .create(IdentityName::new("alice").unwrap())
            .unwrap();
        clock.advance(Duration::from_secs(59));
        assert!(sessions.get(&id).is_some());
        clock.advance(Duration::from_secs(1));
        assert!(sessions.get(&id).is_none());
        assert!(sessions.by_hash.lock().is_empty());
    }

    #[test]
    fn sign_in_token_bound_to_pre_session() {
        let clock = ManualClock::new(Timestamp::from_secs(1_000));
        let sessions = sessions(&clock);
        let pre = sessions.new_pre_session().unwrap();
        let other = sessions.new_pre_session().unwrap();
        let token = sessions.sign_in_token(&pre);
        assert!(sessions.sign_in_token_matches(&pre, &token));
        assert!(!sessions.sign_in_token_matches(&other, &token));
        assert!(!sessions.sign_in_token_matches("", &sessions.sign_in_token("")));
        assert!(!sessions.sign_in_token_matches(&pre, ""));
    }
}
