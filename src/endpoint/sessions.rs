//! Open connections by client id: a second connection with the same client id takes the
//! session over (MQTT: the server closes the first one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// One connection's place in [`Sessions`]: cancelled when another connection takes over.
#[derive(Debug)]
pub struct Registration {
    pub id: u64,
    pub taken_over: CancellationToken,
}

#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, (u64, CancellationToken)>>,
    next: AtomicU64,
}

impl Sessions {
    /// Registers a connection for `client_id`, taking over (cancelling) an earlier one.
    pub fn register(&self, client_id: &str) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let earlier = self
            .open
            .lock()
            .insert(client_id.to_owned(), (id, token.clone()));
        if let Some((_, earlier)) = earlier {
            earlier.cancel();
        }
        Registration {
            id,
            taken_over: token,
        }
    }

    /// Forgets the connection `id` of `client_id`, unless another one took its place.
    pub fn unregister(&self, client_id: &str, id: u64) {
        let mut open = self.open.lock();
        if open
            .get(client_id)
            .is_some_and(|(current, _)| *current == id)
        {
            open.remove(client_id);
        }
    }

    /// A number never handed out before (for client ids the server assigns).
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_connection_with_the_same_client_id_takes_the_first_over() {
        let sessions = Sessions::default();
        let first = sessions.register("gw-1");
        let other = sessions.register("gw-2");
        assert!(!first.taken_over.is_cancelled());
        let second = sessions.register("gw-1");
        assert!(first.taken_over.is_cancelled());
        assert!(!second.taken_over.is_cancelled());
        assert!(!other.taken_over.is_cancelled());
        // The first one ending does not remove the second.
        sessions.unregister("gw-1", first.id);
        assert_eq!(sessions.len(), 2);
        sessions.unregister("gw-1", second.id);
        sessions.unregister("gw-2", other.id);
        assert!(sessions.is_empty());
    }
}
