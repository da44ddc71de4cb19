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
use crate::raw_text::{self, RawText, TextValue};
use crate::session_row::{SessionRow, SessionValues};

struct Binding {
    session_id: i64,
    /// in the database's encoding
    user_id: Vec<u8>,
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
fn login(token: Option<RawText>) -> SessionRow {
    bound_session(raw_text::bytes(&token)).into_row()
}

/// What login does: the session authenticate gives, bound to the transaction.
pub fn bound_session(token: Option<&[u8]>) -> SessionValues {
    let session = auth::session_or_refuse(token);
    if !unsafe { pg_sys::IsTransactionBlock() } {
        // without the context lines, whose bound parameters hold the token
        crate::events::without_context(|| {
            warning!("castle.login outside a transaction block binds nothing beyond this statement")
        });
    }
    push(Some(Binding {
        session_id: session.id(),
        user_id: session.user_id(),
    }));
    session
}

/// Ends the binding in this transaction (a rollback to an earlier savepoint
/// restores it, as for any other change).
#[pg_extern(volatile, parallel_restricted)]
fn logout() {
    push(None);
}

/// The user of the session bound by castle.login in this transaction, or NULL.
#[pg_extern(stable, parallel_restricted)]
fn user_id() -> Option<TextValue> {
    with_current(|b| TextValue(b.user_id.clone()))
}

/// The id of the session bound by castle.login in this transaction, or NULL.
#[pg_extern(stable, parallel_restricted)]
fn session_id() -> Option<i64> {
    logged_in_session()
}

/// `f` of the binding in force, if any, without copying it.
fn with_current<R>(f: impl FnOnce(&Binding) -> R) -> Option<R> {
    BINDINGS.with(|b| b.borrow().last().and_then(|e| e.binding.as_ref().map(f)))
}

/// The logged-in user, for the request-side functions; refused (28000) when
/// castle.login has bound nothing in this transaction.
pub fn logged_in_user() -> Vec<u8> {
    match with_current(|b| b.user_id.clone()) {
        Some(user_id) => user_id,
        None => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                "no session is logged in",
                "Call castle.login(token) in this transaction first."
            );
        }
    }
}

/// The logged-in session's id, if castle.login bound one.
pub fn logged_in_session() -> Option<i64> {
    with_current(|b| b.session_id)
}

/// Records a login or logout. One entry per subtransaction level at most: a
/// change in the same subtransaction replaces its entry, and a logout with
/// nothing bound changes nothing, so no number of calls grows the list.
fn push(binding: Option<Binding>) {
    if binding.is_none() && with_current(|_| ()).is_none() {
        return;
    }
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    BINDINGS.with(|b| {
        let mut entries = b.borrow_mut();
        match entries.last_mut() {
            Some(last) if last.subxact == subxact => last.binding = binding,
            _ => entries.push(Entry { subxact, binding }),
        }
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT => auth::record_uses(),
        XACT_EVENT_COMMIT => auth::queue_uses(),
        XACT_EVENT_ABORT | XACT_EVENT_PRE_PREPARE | XACT_EVENT_PARALLEL_ABORT => {
            auth::forget_uses()
        }
        _ => {}
    }
    if matches!(
        event,
        XACT_EVENT_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PREPARE
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_PARALLEL_ABORT
    ) {
        BINDINGS.with(|b| b.borrow_mut().clear());
        crate::user_lock::transaction_ended();
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
    match event {
        SUBXACT_EVENT_ABORT_SUB => auth::subtransaction_ended(true, my_subid, parent_subid),
        SUBXACT_EVENT_COMMIT_SUB => auth::subtransaction_ended(false, my_subid, parent_subid),
        _ => {}
    }
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
