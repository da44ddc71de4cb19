//! Issuing sessions: `castle.create_session` for bigint, uuid and text user ids.

use pgrx::datum::Interval;
use pgrx::prelude::*;
use rand::rngs::OsRng;
use rand::RngCore;

use crate::plans::{self, Statement, INT4, INT8, JSONB, TEXT, TIMESTAMPTZ};
use crate::raw_jsonb::RawJsonb;
use crate::{settings, store, token};

static TRIM_SESSIONS: Statement = Statement {
    sql: include_str!("queries/trim_sessions.sql"),
    args: &[TEXT, INT8, INT4],
    mutating: true,
};
static INSERT_SESSION: Statement = Statement {
    sql: include_str!("queries/insert_session.sql"),
    args: &[TEXT, TEXT, TIMESTAMPTZ, JSONB],
    mutating: true,
};

/// First key of the per-user advisory lock ("cast"), so that it cannot collide
/// with an application's own single-key advisory locks.
const LOCK_CLASS: i32 = 0x6361_7374;

#[pg_extern(name = "create_session", volatile, parallel_unsafe)]
fn create_session_bigint(
    user_id: Option<i64>,
    ttl: default!(Option<Interval>, "NULL"),
    data: default!(Option<RawJsonb>, "NULL"),
) -> String {
    create(user_key(user_id), ttl, data)
}

#[pg_extern(name = "create_session", volatile, parallel_unsafe)]
fn create_session_uuid(
    user_id: Option<pgrx::Uuid>,
    ttl: default!(Option<Interval>, "NULL"),
    data: default!(Option<RawJsonb>, "NULL"),
) -> String {
    create(user_key(user_id), ttl, data)
}

#[pg_extern(name = "create_session", volatile, parallel_unsafe)]
fn create_session_text(
    user_id: Option<&str>,
    ttl: default!(Option<Interval>, "NULL"),
    data: default!(Option<RawJsonb>, "NULL"),
) -> String {
    create(user_key(user_id), ttl, data)
}

/// The text a user id is stored as: the type's own text form (bigint's decimal,
/// uuid's lowercase hyphenated spelling), so every overload meets the same rows.
pub fn user_key<T: ToString>(user_id: Option<T>) -> String {
    match user_id.map(|id| id.to_string()) {
        Some(id) if !id.is_empty() => id,
        Some(_) => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "user_id must not be empty"
            );
        }
        None => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "user_id must not be NULL"
            );
        }
    }
}

/// Creates the session, trims the user's others, and returns the token: the
/// only time it exists outside the caller.
///
/// Runs as the caller, with no SET clause: the common sign-in runs no SQL at
/// all (counting the user's sessions, trimming and the insert go through the
/// access methods, in `store`), so there is no search_path to pin and no
/// identity to switch, and it costs about what a bare INSERT costs. The SQL it
/// runs when a DBA has given the table a trigger or a column (the trim and the
/// insert) runs as the table's owner with search_path pinned, through
/// `plans::as_owner`.
pub fn create(user_id: String, ttl: Option<Interval>, data: Option<RawJsonb>) -> String {
    refuse_on_standby("create_session");
    unsafe { pg_sys::PreventCommandIfReadOnly(c"castle.create_session()".as_ptr()) };
    let ttl = match ttl {
        Some(ttl) if !is_positive(&ttl) => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "ttl must be a positive interval",
                "Pass NULL to use castle.default_ttl."
            );
        }
        Some(ttl) => Some(ttl),
        None => default_ttl(),
    };
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let expires_at = ttl.map(|ttl| expiry(now, ttl));

    let secret = new_secret(settings::secret_size());
    let hash = token::hash_secret(secret.as_bytes());

    lock_user(&user_id);
    // Most sign-ins find the user under the limit from the index alone: then
    // no row is read or deleted, and dead sessions wait for castle.prune.
    let max_sessions = settings::max_sessions();
    let idle_timeout = settings::idle_timeout_seconds();
    if max_sessions > 0 && store::entries_of(&user_id, max_sessions) >= max_sessions {
        store::refuse_if_snapshot_is_stale(&user_id);
        if !store::trim(&user_id, max_sessions - 1, now, idle_timeout) {
            trim_with_sql(&user_id, max_sessions, idle_timeout);
        }
    }
    let new = store::NewSession {
        hash: &hash,
        user_id: &user_id,
        now,
        expires_at,
        data: data.and_then(|data| data.into_datum()),
    };
    let id = store::insert(&new).unwrap_or_else(|| insert_with_sql(&new));
    settings::with_token_prefix(|prefix| token::encode(prefix, id, &secret))
}

/// now() + ttl, with PostgreSQL's own arithmetic (months and days in the
/// session's time zone), as `now() + ttl` in SQL would give.
fn expiry(now: i64, ttl: Interval) -> i64 {
    let expires_at = unsafe {
        pgrx::direct_function_call::<pg_sys::Datum>(
            pg_sys::timestamptz_pl_interval,
            &[Some(pg_sys::Datum::from(now)), ttl.into_datum()],
        )
    };
    expires_at
        .expect("timestamptz + interval is never NULL")
        .value() as i64
}

/// Trimming as SQL, as the table's owner: for a table with a DBA's trigger
/// (or rule, or forced row security), which `store::trim` leaves alone.
fn trim_with_sql(user_id: &str, max_sessions: i64, idle_timeout: i32) {
    plans::as_owner(store::table_owner(), || {
        Spi::connect_mut(|client| {
            let trim = plans::kept(client, &TRIM_SESSIONS);
            let args = [user_id.into(), max_sessions.into(), idle_timeout.into()];
            plans::or_raise(client.update(trim, None, &args));
        })
    })
}

/// The insert as SQL, as the table's owner: for a table with a DBA's trigger
/// or added column, which `store::insert` leaves alone.
fn insert_with_sql(new: &store::NewSession) -> i64 {
    let hash = std::str::from_utf8(new.hash).expect("hex is ASCII");
    let expires_at = new.expires_at.map(pg_sys::Datum::from);
    plans::as_owner(store::table_owner(), || {
        Spi::connect_mut(|client| {
            let insert = plans::kept(client, &INSERT_SESSION);
            let args = unsafe {
                [
                    hash.into(),
                    new.user_id.into(),
                    pgrx::datum::DatumWithOid::new(expires_at, pg_sys::TIMESTAMPTZOID),
                    pgrx::datum::DatumWithOid::new(new.data, pg_sys::JSONBOID),
                ]
            };
            let inserted = plans::or_raise(client.update(insert, None, &args));
            plans::or_raise(inserted.first().get_one::<i64>())
                .unwrap_or_else(|| error!("castle_sessions: INSERT returned no id"))
        })
    })
}

/// Serializes, until the transaction ends, everything that adds or deletes
/// sessions of one user. Everything that does takes this lock before touching
/// any of the user's rows, so trimming cannot deadlock with a concurrent
/// revoke or rotate; and concurrent logins cannot both see room under the limit.
pub fn lock_user(user_id: &str) {
    unsafe {
        pg_sys::LockAcquire(
            &user_lock_tag(user_id),
            pg_sys::ExclusiveLock as _,
            false,
            false,
        )
    };
}

/// The same lock, only if no other transaction holds it: for writes that may
/// be skipped (the used_at touch) rather than wait.
pub fn try_lock_user(user_id: &str) -> bool {
    let taken = unsafe {
        pg_sys::LockAcquire(
            &user_lock_tag(user_id),
            pg_sys::ExclusiveLock as _,
            false,
            true,
        )
    };
    taken != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
}

/// What pg_advisory_xact_lock(LOCK_CLASS, key) takes, without a statement to run.
fn user_lock_tag(user_id: &str) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: LOCK_CLASS as u32,
        locktag_field3: user_lock_key(user_id) as u32,
        locktag_field4: 2, // the two-int4-key form
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

/// `size` characters from the operating system's CSPRNG, on every call: a
/// generator seeded once would be copied into every backend the postmaster forks.
fn new_secret(size: usize) -> String {
    let mut random = vec![0u8; size];
    if OsRng.try_fill_bytes(&mut random).is_err() {
        error!("castle_sessions: the operating system's random source failed");
    }
    token::secret_from_random(&random)
}

fn default_ttl() -> Option<Interval> {
    match settings::default_ttl_seconds() {
        0 => None,
        seconds => Some(
            Interval::new(0, 0, i64::from(seconds) * 1_000_000).expect("seconds fit an interval"),
        ),
    }
}

/// PostgreSQL orders intervals by their length with 30-day months; so do we.
fn is_positive(ttl: &Interval) -> bool {
    const DAY: i128 = 86_400_000_000;
    i128::from(ttl.months()) * 30 * DAY + i128::from(ttl.days()) * DAY + i128::from(ttl.micros())
        > 0
}

/// 32-bit FNV-1a of the user id: the second advisory-lock key. A collision only
/// makes two users' logins wait for each other.
fn user_lock_key(user_id: &str) -> i32 {
    let hash = user_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash as i32
}

/// Writes cannot succeed on a hot standby; say so plainly instead of failing
/// on the first statement.
pub fn refuse_on_standby(function: &str) {
    if unsafe { pg_sys::RecoveryInProgress() } {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("castle.{function} cannot run on a read-only standby"),
            "Sessions are created and revoked on the primary; authenticate works on standbys."
        );
    }
}
