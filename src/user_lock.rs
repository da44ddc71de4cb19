//! The user's lock: what serializes, until the transaction ends, everything
//! that adds sessions of one user or deletes whole families of them (sign-in,
//! rotate, revoke, revoke_all, a reuse's revocation), so that trimming counts
//! every committed session and `max_sessions` holds under any concurrency.
//!
//! Contract: `lock_user(user_id)` is called, as the table's owner with SPI
//! connected (its statements pin their search_path), before any of the user's sessions is read or touched. It takes
//! a heavyweight lock in PostgreSQL's lock table, written nowhere: no row, no
//! WAL, no transaction id (0.5.0's upsert of a row in castle.user_locks was a
//! second INSERT in every sign-in of a new user).
//!
//! - The lock's key is an HMAC of the database and the user id under
//!   pg_control's mock-authentication nonce, a random value made by initdb
//!   that no SQL can read: pg_locks shows an advisory lock whose numbers name
//!   no user. Its fourth field, LOCK_FIELD, is one pg_advisory_lock never
//!   uses, so no role can take or wait for it from SQL.
//! - Past MOST_USER_LOCKS distinct users in one transaction (a statement
//!   signing in 100,000 users), the transaction takes castle.user_locks'
//!   table lock in SHARE ROW EXCLUSIVE mode instead, which stands for every
//!   user's lock, as soon as no sign-in holds the table (it never waits for
//!   it, which would deadlock with a sign-in waiting for one of its users):
//!   then it holds new sign-ins back until it ends, and the shared lock table
//!   does not fill. Every lock_user holds the table in ROW EXCLUSIVE mode (a
//!   per-backend fast-path lock), after the user's lock.
//! - At REPEATABLE READ and SERIALIZABLE the transaction's snapshot may
//!   predate a change to the user's sessions that committed before the lock
//!   was granted; trimming or revoking by it would miss that session. Such a
//!   call fails with 40001 (retry it), as PostgreSQL's own UPDATE would.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::catalog::{self, Catalog};
use crate::token;

/// castle's tag in the advisory lock space: pg_advisory_lock takes 1 (one
/// bigint key) or 2 (two integer keys).
const LOCK_FIELD: u16 = 0xCA57;
/// Users locked one by one in a transaction before it locks them all.
const MOST_USER_LOCKS: u32 = 32;

thread_local! {
    /// distinct users locked one by one in this transaction; u32::MAX once
    /// it holds every user's lock
    static LOCKED: Cell<u32> = const { Cell::new(0) };
}

/// Takes user `user_id`'s lock until the transaction ends.
pub fn lock_user(user_id: &[u8]) {
    catalog::require_current_objects();
    let all_users = Catalog::get().user_locks;
    unsafe {
        let locked = LOCKED.get();
        // Escalate only when no one else holds the table: waiting for it
        // while holding users' locks others wait for would deadlock them.
        // A busy moment is tried again at the next user.
        let all_held = locked == u32::MAX
            || (locked >= MOST_USER_LOCKS
                && pg_sys::ConditionalLockRelationOid(
                    all_users,
                    pg_sys::ShareRowExclusiveLock as _,
                ));
        if all_held {
            LOCKED.set(u32::MAX);
        } else {
            // the user's lock first, then the table: a caller waiting for a
            // user's lock holds nothing an escalating transaction waits for
            let tag = tag_of(user_id);
            let taken = pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as _, false, false);
            if taken == pg_sys::LockAcquireResult::LOCKACQUIRE_OK {
                LOCKED.set(locked + 1);
            }
            pg_sys::LockRelationOid(all_users, pg_sys::RowExclusiveLock as _);
        }
    }
    crate::shard::refuse_unless_owned(user_id);
    refuse_a_stale_snapshot(user_id);
}

/// At the end of every transaction (its locks are gone with it).
pub fn transaction_ended() {
    LOCKED.set(0);
}

fn tag_of(user_id: &[u8]) -> pg_sys::LOCKTAG {
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let nonce = unsafe {
        std::slice::from_raw_parts(
            pg_sys::GetMockAuthenticationNonce().cast::<u8>(),
            pg_sys::MOCK_AUTH_NONCE_LEN as usize,
        )
    };
    let mut message = Vec::with_capacity(4 + user_id.len());
    message.extend_from_slice(&database.to_le_bytes());
    message.extend_from_slice(user_id);
    let mac = token::hmac_sha256(nonce, &message);
    pg_sys::LOCKTAG {
        locktag_field1: database,
        locktag_field2: u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        locktag_field3: u32::from_le_bytes([mac[4], mac[5], mac[6], mac[7]]),
        locktag_field4: LOCK_FIELD,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

const USER_SESSIONS: &std::ffi::CStr =
    c"SELECT pg_catalog.string_agg(s.id::pg_catalog.text, ',' ORDER BY s.id) \
    FROM castle.sessions AS s WHERE s.user_id = $1";

/// 40001 when the transaction's snapshot sees other sessions of the user
/// than a snapshot taken now: another transaction added or deleted one and
/// committed after this one's snapshot was taken.
fn refuse_a_stale_snapshot(user_id: &[u8]) {
    if unsafe { pg_sys::XactIsoLevel } < pg_sys::XACT_REPEATABLE_READ as i32 {
        return;
    }
    let (seen, now) = crate::plans::pinned(|| unsafe {
        (
            sessions_of(user_id, pg_sys::GetTransactionSnapshot()),
            sessions_of(user_id, pg_sys::GetLatestSnapshot()),
        )
    });
    if seen != now {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            "could not serialize access due to a concurrent change of the user's sessions",
            "Another sign-in or sign-out of the user committed after this transaction's snapshot. Retry the transaction."
        );
    }
}

/// The ids of the user's sessions under `snapshot` (this transaction's own
/// changes included), as text. SPI is connected by lock_user's caller.
unsafe fn sessions_of(user_id: &[u8], snapshot: pg_sys::Snapshot) -> Option<String> {
    unsafe {
        let mut types = [pg_sys::TEXTOID];
        let plan = pg_sys::SPI_prepare(USER_SESSIONS.as_ptr(), 1, types.as_mut_ptr());
        if plan.is_null() {
            error!("castle_sessions: could not prepare the read of a user's sessions");
        }
        let mut values = [crate::raw_text::text_datum(user_id)];
        let nulls = [b' ' as std::ffi::c_char];
        let rc = pg_sys::SPI_execute_snapshot(
            plan,
            values.as_mut_ptr(),
            nulls.as_ptr(),
            snapshot,
            std::ptr::null_mut(),
            false,
            false,
            1,
        );
        if rc != pg_sys::SPI_OK_SELECT as i32 || pg_sys::SPI_processed != 1 {
            error!("castle_sessions: the read of a user's sessions failed");
        }
        let table = pg_sys::SPI_tuptable;
        let value = pg_sys::SPI_getvalue(*(*table).vals, (*table).tupdesc, 1);
        let ids = (!value.is_null()).then(|| {
            std::ffi::CStr::from_ptr(value)
                .to_string_lossy()
                .into_owned()
        });
        pg_sys::SPI_freeplan(plan);
        ids
    }
}
