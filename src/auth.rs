//! Checking tokens: `castle.authenticate` raises, `castle.verify` returns NULL.
//! Finding the session is a read-only primary-key scan (`store`); a successful
//! check notes its use when castle.touch_interval says a write is due, and the
//! use is queued for the standing workers when the transaction commits
//! (`uses`): a request takes no transaction id and no lock.

use pgrx::prelude::*;

use std::cell::RefCell;

use crate::catalog::Catalog;
use crate::plans;
use crate::raw_text::{self, RawText};
use crate::session_row::{SessionRow, SessionValues};
use crate::stats::{self, Counter};
use crate::token::{self, Refusal};
use crate::{events, families, settings, store, uses};

/// Uses to record when the transaction commits. Bounded: a transaction that
/// checks more sessions than this records the first ones; the others are
/// recorded by a later call.
const MOST_PENDING_USES: usize = 1024;

struct Pending {
    session: i64,
    /// the time of use (PostgreSQL's microseconds)
    at: i64,
    /// the (sub)transaction of the check: its rollback drops the use
    subxact: pg_sys::SubTransactionId,
}

thread_local! {
    static PENDING_USES: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
}

/// A live session a token names, as read before any write.
pub struct Found {
    /// the session: the one the token names, or within its grace, the
    /// newest of the family it was rotated away from
    pub id: i64,
    /// the session the token names
    pub presented: i64,
    pub session: SessionValues,
    pub expires_at: Option<i64>,
    /// the time of the call, which judged expiry and idleness
    pub now: i64,
    touch_due: bool,
}

/// The session a token names, or a refusal of it. Not SECURITY DEFINER: it
/// runs no SQL but the touch (and a read when the direct one is not
/// allowed), which `plans::as_owner` runs as the owner under a pinned
/// search_path.
#[pg_extern(volatile, parallel_unsafe)]
fn authenticate(token: Option<RawText>) -> SessionRow {
    session_or_refuse(raw_text::bytes(&token)).into_row()
}

/// The session a token names, or NULL wherever authenticate would raise.
#[pg_extern(volatile, parallel_unsafe)]
fn verify(token: Option<RawText>) -> Option<SessionRow> {
    session_or_none(raw_text::bytes(&token)).map(SessionValues::into_row)
}

/// Whether the token names a live session, with verify's rules: the check
/// for WHERE clauses and CASE, where `castle.verify(t) IS NOT NULL` would be
/// false for a session with any NULL column. Writes nothing (a reuse's
/// family is revoked by the worker it starts, as for every check).
#[pg_extern(volatile, parallel_unsafe)]
fn is_valid(token: Option<RawText>) -> bool {
    let valid = find(raw_text::bytes(&token)).map_err(note_refusal).is_ok();
    if valid {
        stats::add(Counter::Authentications, 1);
    }
    valid
}

/// What authenticate (and login) give: the session, or the refusal raised.
pub fn session_or_refuse(token: Option<&[u8]>) -> SessionValues {
    authenticated(token).unwrap_or_else(|why| refuse(why))
}

/// What verify gives: the session, or None with the cause logged.
pub fn session_or_none(token: Option<&[u8]>) -> Option<SessionValues> {
    authenticated(token).map_err(note_refusal).ok()
}

/// What authenticate returns: the session after recording this use.
fn authenticated(token: Option<&[u8]>) -> Result<SessionValues, Refusal> {
    let found = find(token)?;
    stats::add(Counter::Authentications, 1);
    Ok(touched(found))
}

/// Checks a token completely — format, checksum, hash, expiry, idle timeout —
/// without writing anything. Expiry and idleness are judged at the time of
/// the call (the clock, not the transaction's start), so a long transaction
/// cannot keep using a session that has since expired.
pub fn find(token: Option<&[u8]>) -> Result<Found, Refusal> {
    families::retry_pending();
    let token = token.ok_or(Refusal::Missing)?;
    let decoded = settings::with_token_prefix(|prefix| token::decode(prefix, token))?;
    let named = store::find_by_id(decoded.id).ok_or(Refusal::UnknownId)?;
    if !token::hashes_equal(&decoded.hash, &named.hash) {
        return Err(Refusal::WrongSecret);
    }
    let now = store::call_time();
    let stored = match named.rotated_at {
        None => named,
        // a rotated token of an expired family is only expired
        Some(_) if named.expires_at.is_some_and(|at| at <= now) => return Err(Refusal::Expired),
        Some(rotated_at) if families::within_grace(rotated_at, now) => {
            store::find_successor(named.family).ok_or(Refusal::UnknownId)?
        }
        Some(_) => {
            families::reuse(named.family, decoded.id);
            return Err(Refusal::Reuse);
        }
    };
    let last_use = stored.used_at.unwrap_or(stored.created_at);
    if let Some(why) = store::dead(
        stored.expires_at,
        last_use,
        now,
        settings::idle_timeout_seconds(),
    ) {
        return Err(why);
    }
    let touch_interval = settings::touch_interval_seconds();
    let touch_due = touch_interval >= 0
        && stored
            .used_at
            .is_none_or(|at| at <= now - i64::from(touch_interval) * 1_000_000);
    Ok(Found {
        id: stored.id,
        presented: decoded.id,
        session: stored.session,
        expires_at: stored.expires_at,
        now,
        touch_due,
    })
}

/// The session as read, with this use noted to be recorded at commit when a
/// write is due. On a table with a DBA's trigger, rule or forced row
/// security, whose code must run in the request as it always did, the use is
/// written now (READ COMMITTED only), holding that one row until the
/// transaction ends. A hot standby records nothing: the session's next check
/// on the primary does.
fn touched(found: Found) -> SessionValues {
    if !found.touch_due {
        return found.session;
    }
    if Catalog::get().has_dba_code {
        if can_write_here() {
            let done = uses::write(&[(found.id, found.now)]);
            stats::add(Counter::TouchesWritten, done);
            stats::add(Counter::TouchesSkipped, 1 - done);
        } else {
            stats::add(Counter::TouchesSkipped, 1);
        }
        return found.session;
    }
    if unsafe { pg_sys::RecoveryInProgress() } {
        stats::add(Counter::TouchesSkipped, 1);
        return found.session;
    }
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    PENDING_USES.with(|pending| {
        let mut pending = pending.borrow_mut();
        if let Some(noted) = pending.iter_mut().find(|p| p.session == found.id) {
            // the outermost check's subtransaction: the use stands if it does
            noted.at = noted.at.max(found.now);
            noted.subxact = noted.subxact.min(subxact);
        } else if pending.len() < MOST_PENDING_USES {
            pending.push(Pending {
                session: found.id,
                at: found.now,
                subxact,
            });
        } else {
            stats::add(Counter::TouchesSkipped, 1);
        }
    });
    found.session
}

fn take_pending() -> Vec<(i64, i64)> {
    PENDING_USES.with(|pending| {
        pending
            .borrow_mut()
            .drain(..)
            .map(|p| (p.session, p.at))
            .collect()
    })
}

/// At commit (XACT_EVENT_PRE_COMMIT): nothing while the standing workers
/// record uses (`queue_uses` hands them over once the commit is done).
/// Without them — not preloaded, or the launcher being restarted — writes
/// the uses in a subtransaction of its own, as 0.5.0 did, so that a
/// failure to record a use never fails the commit.
pub fn record_uses() {
    if PENDING_USES.with(|pending| pending.borrow().is_empty()) || uses::standing() {
        return;
    }
    let pending = take_pending();
    if !can_write_here() {
        stats::add(Counter::TouchesSkipped, pending.len() as u64);
        return;
    }
    // Never wait at commit, and never run a DBA's code there: a trigger,
    // rule or forced policy added since the check leaves the use unrecorded.
    let table = Catalog::get().table;
    let locked =
        unsafe { pg_sys::ConditionalLockRelationOid(table, pg_sys::RowExclusiveLock as _) };
    let catalog = Catalog::get();
    if !locked || catalog.has_dba_code || catalog.table != table {
        stats::add(Counter::TouchesSkipped, pending.len() as u64);
        return;
    }
    let written = plans::in_subtransaction(|| unsafe {
        // SQL needs an outer snapshot, which a commit no longer has
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let written = uses::write(&pending);
        pg_sys::PopActiveSnapshot();
        written
    });
    // a use skipped is one whose row another transaction held
    let done = written.unwrap_or(0);
    stats::add(Counter::TouchesWritten, done);
    stats::add(Counter::TouchesSkipped, pending.len() as u64 - done);
}

/// Once the transaction committed (XACT_EVENT_COMMIT): its uses go to the
/// standing workers' queue. Memory only: nothing here may fail.
pub fn queue_uses() {
    let pending = take_pending();
    if !pending.is_empty() {
        uses::queue(&pending);
    }
}

/// Forgets the uses of a transaction that aborts or is prepared.
pub fn forget_uses() {
    PENDING_USES.with(|pending| pending.borrow_mut().clear());
}

/// A subtransaction ended: the uses noted in an aborted one (and its
/// children, every later id) are dropped; a committed one's go to its parent.
pub fn subtransaction_ended(
    aborted: bool,
    subxact: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
) {
    PENDING_USES.with(|pending| {
        let mut pending = pending.borrow_mut();
        if aborted {
            pending.retain(|p| p.subxact < subxact);
        } else {
            pending
                .iter_mut()
                .filter(|p| p.subxact == subxact)
                .for_each(|p| p.subxact = parent);
        }
    });
}

/// Written in the caller's transaction (without the standing workers, or on a
/// table with a DBA's code), used_at is best-effort: never in a read-only
/// transaction, and not under REPEATABLE READ or SERIALIZABLE, where a
/// concurrent touch of the same row would turn a good token into a
/// serialization failure. The next call at READ COMMITTED records the use.
fn can_write_here() -> bool {
    unsafe {
        !pg_sys::RecoveryInProgress()
            && !pg_sys::XactReadOnly
            && pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32
    }
}

/// Counts a refusal by its cause; the cause goes to the server log when it
/// keeps DEBUG1 messages, and never to the client, whatever its
/// client_min_messages: the cause, never the token.
pub fn note_refusal(why: Refusal) {
    stats::add(
        match why {
            Refusal::UnknownId => Counter::RefusedUnknownId,
            Refusal::WrongSecret => Counter::RefusedWrongSecret,
            Refusal::Expired => Counter::RefusedExpired,
            Refusal::Idle => Counter::RefusedIdle,
            Refusal::Reuse => Counter::RefusedReuse,
            _ => Counter::RefusedMalformed,
        },
        1,
    );
    if unsafe { pg_sys::log_min_messages } <= pg_sys::DEBUG1 as i32 {
        events::log_server_only(&format!("token refused: {}", why.cause()));
    }
}

static mut NEXT_LOG_HOOK: pg_sys::emit_log_hook_type = None;

/// Installs the hook that reports every refusal without context lines or
/// statement (chained before any earlier one).
pub fn register_log_hook() {
    unsafe {
        NEXT_LOG_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(report_refusal_alone);
    }
}

/// `refuse` raises with no context lines and no statement, but a caller
/// that catches the error and raises it again (pgrx's guard around a call
/// into PostgreSQL puts the caller's context back first: an initplan of the
/// row scan's argument running `castle.rotate($1)`) would report the
/// portal's context, the bound token among it. Here, where every report is
/// written, a refusal's leaves without them: the server log's and, as
/// PostgreSQL calls this hook only for what it logs, the client's error
/// whenever the server logs errors.
#[pg_guard]
unsafe extern "C-unwind" fn report_refusal_alone(report: *mut pg_sys::ErrorData) {
    unsafe {
        if is_refusal(&*report) {
            (*report).context = std::ptr::null_mut();
            (*report).hide_stmt = true;
        }
        if let Some(next) = NEXT_LOG_HOOK {
            next(report);
        }
    }
}

/// Whether a report is a refusal: raised by `refuse` (this file, which a
/// caller's RAISE of the same message is not: it keeps its statement in
/// the log), SQLSTATE 28000, castle.invalid_message.
unsafe fn is_refusal(report: &pg_sys::ErrorData) -> bool {
    let refusal_code = PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION as isize as i32;
    report.elevel >= pg_sys::PGERROR as i32
        && report.sqlerrcode == refusal_code
        && !report.filename.is_null()
        // PostgreSQL keeps a file name's last part only
        && file!().rsplit('/').next().map(str::as_bytes)
            == Some(unsafe { std::ffi::CStr::from_ptr(report.filename) }.to_bytes())
        && !report.message.is_null()
        && settings::is_invalid_message(unsafe { std::ffi::CStr::from_ptr(report.message) }.to_bytes())
}

/// Every refusal, whatever its cause, is this one error: SQLSTATE 28000 and
/// castle.invalid_message, with no detail or hint to tell causes apart.
pub fn refuse(why: Refusal) -> ! {
    note_refusal(why);
    // No context lines: the caller's portal would add its bound parameters
    // (log_parameter_max_length_on_error, which any role may set), and one of
    // them is the token; and no STATEMENT line, whose text may hold it when
    // a client interpolates. PostgreSQL restores the stack where it catches.
    // (`report_refusal_alone` strips them again from a refusal raised again.)
    unsafe {
        pg_sys::error_context_stack = std::ptr::null_mut();
        pg_sys::debug_query_string = std::ptr::null();
    }
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
        settings::invalid_message()
    );
}
