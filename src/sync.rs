//! The one way the crate takes a lock: the maps and counters behind our mutexes hold plain data that
//! stays consistent if a holder panicked, so a poisoned lock is used as it is instead of spreading
//! the panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, tolerating poisoning.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
