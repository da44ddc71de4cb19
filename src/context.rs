//! The auth context: `castle.login(token)` binds the session to the current
//! transaction; `castle.user_id()` and `castle.session_id()` read it back, for
//! row-level security policies and anything else that asks "who is this?".
//!
//! The binding lives in this backend's memory and nowhere else: no GUC, SET,
//! set_config or SET ROLE can create or change it. It ends with the transaction
//! (commit or abort) and with a rollback to a savepoint taken before the login,
//! so a pooler in transaction mode can hand the connection to anyone next.

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::auth;
use crate::session_row::SessionRow;

struct Binding {
    session_id: i64,
    user_id: String,
}

/// One login or logout, and the subtransaction that made it: rolling that
/// subtransaction back undoes it; committing it hands it to the parent.
struct Entry {
    subxact: pg_sys::SubTransactionId,
    binding: Option<Binding>,
}

thread_local! {
    static BINDINGS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

pub fn register_callbacks() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact_end), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact_end), std::ptr::null_mut());
    }
}

/// Authenticates exactly like castle.authenticate (same row, same refusals)
/// and binds the session to the current transaction.
#[pg_extern(volatile, parallel_unsafe)]
fn login(token: Option<&str>) -> SessionRow {
    let session = auth::session_or_refuse(token.map(str::as_bytes));
    if !unsafe { pg_sys::IsTransactionBlock() } {
        warning!("castle.login outside a transaction block binds nothing beyond this statement");
    }
    push(Some(Binding {
        session_id: session.id(),
        user_id: session.user_id(),
    }));
    session.into_row()
}

/// Ends the binding in this transaction (a rollback to an earlier savepoint
/// restores it, as for any other change).
#[pg_extern(volatile, parallel_restricted)]
fn logout() {
    push(None);
}

/// The user of the session bound by castle.login in this transaction, or NULL.
#[pg_extern(stable, parallel_restricted)]
fn user_id() -> Option<String> {
    BINDINGS.with(|b| {
        b.borrow()
            .last()
            .and_then(|e| e.binding.as_ref().map(|b| b.user_id.clone()))
    })
}

/// The id of the session bound by castle.login in this transaction, or NULL.
#[pg_extern(stable, parallel_restricted)]
fn session_id() -> Option<i64> {
    BINDINGS.with(|b| {
        b.borrow()
            .last()
            .and_then(|e| e.binding.as_ref().map(|b| b.session_id))
    })
}

fn push(binding: Option<Binding>) {
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    BINDINGS.with(|b| b.borrow_mut().push(Entry { subxact, binding }));
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PREPARE
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_PARALLEL_ABORT
    ) {
        BINDINGS.with(|b| b.borrow_mut().clear());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact_end(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    BINDINGS.with(|b| {
        let mut entries = b.borrow_mut();
        match event {
            // the aborted subtransaction and its children: every later id is one of them
            SUBXACT_EVENT_ABORT_SUB => entries.retain(|e| e.subxact < my_subid),
            SUBXACT_EVENT_COMMIT_SUB => entries
                .iter_mut()
                .filter(|e| e.subxact == my_subid)
                .for_each(|e| e.subxact = parent_subid),
            _ => {}
        }
    });
}
