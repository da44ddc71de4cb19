//! Issuing sessions: `castle.create_session` for bigint, uuid and text user ids.

use pgrx::datum::Interval;
use pgrx::prelude::*;
use rand::rngs::OsRng;
use rand::RngCore;

use crate::plans::{self, Statement, INT4, INT8, INT8_ARRAY, JSONB, TEXT, TIMESTAMPTZ};
use crate::raw_jsonb::RawJsonb;
use crate::raw_text::RawText;
use crate::{events, settings, store, token};

static TRIM_SESSIONS: Statement = Statement {
    sql: include_str!("queries/trim_sessions.sql"),
    args: &[TEXT, INT8, INT4, TIMESTAMPTZ],
    mutating: true,
};
static DELETE_SESSIONS: Statement = Statement {
    sql: include_str!("queries/delete_sessions.sql"),
    args: &[INT8_ARRAY],
    mutating: true,
};
static INSERT_SESSION: Statement = Statement {
    sql: include_str!("queries/insert_session.sql"),
    args: &[TEXT, TEXT, TIMESTAMPTZ, TIMESTAMPTZ, JSONB, INT8],
    mutating: true,
};
static INSERT_SESSION_IN_BUCKET: Statement = Statement {
    sql: include_str!("queries/insert_session_in_bucket.sql"),
    args: &[TEXT, TEXT, TIMESTAMPTZ, TIMESTAMPTZ, JSONB, INT8, INT8],
    mutating: true,
};
static INSERT_SESSION_WITHOUT_DATA: Statement = Statement {
    sql: include_str!("queries/insert_session_without_data.sql"),
    args: &[TEXT, TEXT, TIMESTAMPTZ, TIMESTAMPTZ, INT8],
    mutating: true,
};

#[pg_extern(name = "create_session", volatile, parallel_unsafe)]
fn create_session_bigint(
    user_id: Option<i64>,
    ttl: default!(Option<Interval>, "NULL"),
    data: default!(Option<RawJsonb>, "NULL"),
) -> String {
    create_with_ttl(key_of(user_id), ttl, data)
}

#[pg_extern(name = "create_session", volatile, parallel_unsafe)]
fn create_session_uuid(
    user_id: Option<pgrx::Uuid>,
    ttl: default!(Option<Interval>, "NULL"),
    data: default!(Option<RawJsonb>, "NULL"),
) -> String {
    create_with_ttl(key_of(user_id), ttl, data)
}

#[pg_extern(name = "create_session", volatile, parallel_unsafe)]
fn create_session_text(
    user_id: Option<RawText>,
    ttl: default!(Option<Interval>, "NULL"),
    data: default!(Option<RawJsonb>, "NULL"),
) -> String {
    create_with_ttl(user_key(user_id.map(|id| id.bytes().to_vec())), ttl, data)
}

/// A bigint or uuid id's key: its type's own text form.
pub fn key_of<T: ToString>(user_id: Option<T>) -> Vec<u8> {
    user_key(user_id.map(|id| id.to_string().into_bytes()))
}

/// The bytes a user id is stored as: the type's own text form (bigint's
/// decimal, uuid's lowercase hyphenated spelling), or a text id's bytes as
/// given, so every overload meets the same rows.
pub fn user_key(user_id: Option<Vec<u8>>) -> Vec<u8> {
    match user_id {
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

fn create_with_ttl(user_id: Vec<u8>, ttl: Option<Interval>, data: Option<RawJsonb>) -> String {
    let now = store::call_time();
    let expires_at = checked_ttl(ttl)
        .or_else(default_ttl)
        .map(|ttl| expiry(now, ttl));
    let (id, token) = create(&user_id, now, expires_at, data, None);
    events::created(id, &user_id);
    token
}

/// A ttl the caller gave, refused unless positive.
pub fn checked_ttl(ttl: Option<Interval>) -> Option<Interval> {
    if ttl.as_ref().is_some_and(|ttl| !is_positive(ttl)) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "ttl must be a positive interval",
            "Pass NULL to use castle.default_ttl (or, for rotate, the old session's expiry)."
        );
    }
    ttl
}

/// Creates the session, trims the user's others, and returns its id and
/// token: the only time the token exists outside the caller. `now` is
/// created_at; `family` is a rotation's (None: a new sign-in's own).
///
/// Runs as the caller; its statements run as the table's owner with a pinned
/// search_path (`plans::as_owner`), so the caller needs EXECUTE on the
/// function and nothing on the table.
pub fn create(
    user_id: &[u8],
    now: i64,
    expires_at: Option<i64>,
    data: Option<RawJsonb>,
    family: Option<i64>,
) -> (i64, String) {
    let secret = new_secret(settings::secret_size());
    create_with_secret(user_id, now, expires_at, data, family, secret)
}

/// `create`, with the secret given: a rotation's successor, derived.
pub fn create_with_secret(
    user_id: &[u8],
    now: i64,
    expires_at: Option<i64>,
    data: Option<RawJsonb>,
    family: Option<i64>,
    secret: String,
) -> (i64, String) {
    refuse_on_standby("create_session");
    unsafe { pg_sys::PreventCommandIfReadOnly(c"castle.create_session()".as_ptr()) };
    let hash = token::hash_secret(secret.as_bytes());
    let max_sessions = settings::max_sessions();
    let idle_timeout = settings::idle_timeout_seconds();
    // the owner's search_path is pinned only around statements: most
    // sign-ins run none (a direct count and a direct INSERT)
    let id = plans::as_owner_unpinned(store::table_owner(), || {
        Spi::connect_mut(|client| {
            if max_sessions > 0 {
                crate::user_lock::lock_user(user_id);
                // Most sign-ins find the user under the limit from the index
                // alone: then no row is read or deleted.
                let under_limit = store::entries_of(user_id, max_sessions)
                    .is_some_and(|entries| entries < max_sessions);
                if !under_limit {
                    let trimmed = trim(client, user_id, max_sessions, idle_timeout, now);
                    events::trimmed(&trimmed, user_id);
                }
            }
            let data = data.and_then(|data| data.into_datum());
            // a shard's id carries the user's bucket (shard.rs): SQL only
            let bucket = crate::shard::bucket_of_new_session(user_id);
            let row = store::NewSession {
                hash: &hash,
                user_id,
                now,
                expires_at,
                data,
                family,
            };
            let direct = match bucket {
                None => store::insert_directly(&row),
                Some(_) => None,
            };
            direct.unwrap_or_else(|| plans::pinned(|| insert_with_sql(client, &row, bucket)))
        })
    });
    (
        id,
        settings::with_token_prefix(|prefix| token::encode(prefix, id, &secret)),
    )
}

/// Makes room for one more sign-in of a user at the limit, and returns the
/// ids of the sessions deleted. The common case (`oldest_to_trim`) is read
/// and, where the table allows, deleted directly; the rest is SQL's, under
/// the owner's pinned search_path.
fn trim(
    client: &mut pgrx::spi::SpiClient<'_>,
    user_id: &[u8],
    max_sessions: i64,
    idle_timeout: i32,
    now: i64,
) -> Vec<i64> {
    match oldest_to_trim(user_id, max_sessions, idle_timeout, now) {
        Some(oldest) if oldest.is_empty() => Vec::new(),
        Some(oldest) => store::delete_directly(&oldest).unwrap_or_else(|| {
            let ids: Vec<i64> = oldest.iter().map(|&(id, _)| id).collect();
            plans::pinned(|| {
                plans::generic_plans();
                let delete = plans::kept(client, &DELETE_SESSIONS);
                plans::returned_ids(plans::or_raise(client.update(delete, None, &[ids.into()])))
            })
        }),
        None => plans::pinned(|| {
            let trim = plans::kept(client, &TRIM_SESSIONS);
            let args = [
                plans::text(user_id),
                max_sessions.into(),
                idle_timeout.into(),
                plans::timestamptz(now),
            ];
            plans::returned_ids(plans::or_raise(client.update(trim, None, &args)))
        }),
    }
}

/// The row inserted by insert_session*.sql; `bucket`: a shard's (shard.rs).
fn insert_with_sql(
    client: &mut pgrx::spi::SpiClient<'_>,
    row: &store::NewSession,
    bucket: Option<i64>,
) -> i64 {
    let mut args = vec![
        plans::text(row.hash),
        plans::text(row.user_id),
        plans::timestamptz(row.now),
        unsafe {
            pgrx::datum::DatumWithOid::new(
                row.expires_at.map(pg_sys::Datum::from),
                pg_sys::TIMESTAMPTZOID,
            )
        },
    ];
    let data = || unsafe { pgrx::datum::DatumWithOid::new(row.data, pg_sys::JSONBOID) };
    let insert = match (bucket, row.data) {
        (Some(bucket), _) => {
            args.push(data());
            args.push(row.family.into());
            args.push(bucket.into());
            plans::kept(client, &INSERT_SESSION_IN_BUCKET)
        }
        (None, Some(_)) => {
            args.push(data());
            args.push(row.family.into());
            plans::kept(client, &INSERT_SESSION)
        }
        (None, None) => {
            args.push(row.family.into());
            plans::kept(client, &INSERT_SESSION_WITHOUT_DATA)
        }
    };
    let inserted = plans::or_raise(client.update(insert, None, &args));
    plans::or_raise(inserted.first().get_one::<i64>())
        .unwrap_or_else(|| error!("castle_sessions: INSERT returned no id"))
}

/// Trimming's common case, decided from a direct read of the user's
/// sessions under their lock: every session live and a family of its own
/// (none rotated), so the oldest beyond `max_sessions - 1` go (each id
/// with where the read found it). None for everything else — a dead session, a
/// family, more sessions than a read should take, a table the direct read
/// cannot verify — which trim_sessions.sql decides in SQL.
fn oldest_to_trim(
    user_id: &[u8],
    max_sessions: i64,
    idle_timeout: i32,
    now: i64,
) -> Option<Vec<(i64, pg_sys::ItemPointerData)>> {
    let limit = usize::try_from(max_sessions).ok()?.saturating_mul(2).max(8);
    let mut sessions = store::sessions_of_user(user_id, limit)?;
    let plain = sessions.iter().all(|s| {
        !s.in_a_family
            && store::dead(
                s.expires_at,
                s.used_at.unwrap_or(s.created_at),
                now,
                idle_timeout,
            )
            .is_none()
    });
    if !plain {
        return None;
    }
    sessions.sort_unstable_by_key(|s| (s.created_at, s.id));
    let excess = (sessions.len() as i64 - (max_sessions - 1)).max(0) as usize;
    Some(sessions[..excess].iter().map(|s| (s.id, s.tid)).collect())
}

/// now + ttl, with PostgreSQL's own arithmetic (months and days in the
/// session's time zone), as `now + ttl` in SQL would give.
pub fn expiry(now: i64, ttl: Interval) -> i64 {
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
