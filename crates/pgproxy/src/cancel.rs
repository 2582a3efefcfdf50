//! CancelRequest keys. The gateway gives each client its own process id
//! and secret key in BackendKeyData, never the server's, and keeps which
//! server process each key cancels.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

/// The target of one client's cancel key.
#[derive(Default)]
pub(crate) struct Target {
    /// The server process and its key, while the client uses a server
    /// connection.
    pub(crate) server: Mutex<Option<(i32, i32)>>,
    /// Woken to end a wait inside the gateway, such as for an approval.
    pub(crate) interrupt: Notify,
}

struct Issued {
    secret_key: i32,
    target: Arc<Target>,
}

/// The keys of the sessions in progress.
#[derive(Default)]
pub(crate) struct Registry {
    keys: Mutex<HashMap<i32, Issued>>,
}

impl Registry {
    /// Issues a new key for a session; the key is forgotten when the
    /// returned guard drops.
    pub(crate) fn issue(&self) -> KeyGuard<'_> {
        let target = Arc::new(Target::default());
        let mut keys = self.keys.lock();
        loop {
            let process_id = rand::random::<i32>() & i32::MAX;
            if process_id == 0 || keys.contains_key(&process_id) {
                continue;
            }
            let secret_key = rand::random::<i32>();
            keys.insert(
                process_id,
                Issued {
                    secret_key,
                    target: target.clone(),
                },
            );
            return KeyGuard {
                registry: self,
                process_id,
                secret_key,
                target,
            };
        }
    }

    /// Returns what the key cancels, when it is a key in use. The secret
    /// is compared in constant time.
    pub(crate) fn find(&self, process_id: i32, secret_key: i32) -> Option<Arc<Target>> {
        let keys = self.keys.lock();
        let issued = keys.get(&process_id)?;
        let matches: bool = issued
            .secret_key
            .to_be_bytes()
            .ct_eq(&secret_key.to_be_bytes())
            .into();
        matches.then(|| issued.target.clone())
    }
}

/// A session's key, removed from the registry on drop.
pub(crate) struct KeyGuard<'a> {
    registry: &'a Registry,
    pub(crate) process_id: i32,
    pub(crate) secret_key: i32,
    pub(crate) target: Arc<Target>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.registry.keys.lock().remove(&self.process_id);
    }
}
