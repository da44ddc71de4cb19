//! A session's life after sign-in: sign-out, sign-out everywhere, the device
//! list, rotation and pruning.

use pgrx::datum::Interval;
use pgrx::iter::SetOfIterator;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::auth;
use crate::issue::{self, refuse_on_standby, user_key};
use crate::plans::{self, Statement, INT4, INT8, TEXT};
use crate::raw_jsonb::RawJsonb;
use crate::settings;
use crate::token::Refusal;

static DELETE_SESSION: Statement = Statement {
    sql: include_str!("queries/delete_session.sql"),
    args: &[INT8],
    mutating: true,
};
static TAKE_SESSION: Statement = Statement {
    sql: include_str!("queries/take_session.sql"),
    args: &[INT8],
    mutating: true,
};
static SESSION_OWNER: Statement = Statement {
    sql: include_str!("queries/session_owner.sql"),
    args: &[INT8],
    mutating: false,
};
static DELETE_USER_SESSIONS: Statement = Statement {
    sql: include_str!("queries/delete_user_sessions.sql"),
    args: &[TEXT, INT8],
    mutating: true,
};
static LIVE_SESSIONS: Statement = Statement {
    sql: include_str!("queries/live_sessions.sql"),
    args: &[TEXT, INT4],
    mutating: false,
};
static PRUNE_SESSIONS: Statement = Statement {
    sql: include_str!("queries/prune_sessions.sql"),
    args: &[INT4, INT4],
    mutating: true,
};

/// Sign out: deletes the session only if the token fully verifies. False for
/// any bad token, with no hint of why.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke(token: Option<&str>) -> bool {
    refuse_on_standby("revoke");
    match auth::find(token.map(str::as_bytes)) {
        Ok(found) => Spi::connect_mut(|client| {
            issue::lock_user(&found.session.user_id());
            delete_session(client, found.id)
        }),
        Err(why) => {
            auth::log_refusal(why);
            false
        }
    }
}

/// "Sign out that device", by the id a device list shows.
#[pg_extern(volatile, strict, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_session(session_id: i64) -> bool {
    refuse_on_standby("revoke_session");
    Spi::connect_mut(|client| {
        let owner = plans::kept(client, &SESSION_OWNER);
        let rows = plans::or_raise(client.select(owner, Some(1), &[session_id.into()]));
        let user_id: Option<String> = if rows.is_empty() {
            None
        } else {
            plans::or_raise(rows.first().get(1))
        };
        match user_id {
            Some(user_id) => {
                issue::lock_user(&user_id);
                delete_session(client, session_id)
            }
            None => false,
        }
    })
}

#[pg_extern(name = "revoke_all", volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_all_bigint(user_id: Option<i64>, except_session: default!(Option<i64>, "NULL")) -> i64 {
    revoke_all(user_key(user_id), except_session)
}

#[pg_extern(name = "revoke_all", volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_all_uuid(
    user_id: Option<pgrx::Uuid>,
    except_session: default!(Option<i64>, "NULL"),
) -> i64 {
    revoke_all(user_key(user_id), except_session)
}

#[pg_extern(name = "revoke_all", volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_all_text(user_id: Option<&str>, except_session: default!(Option<i64>, "NULL")) -> i64 {
    revoke_all(user_key(user_id), except_session)
}

#[pg_extern(name = "sessions_of", stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sessions_of_bigint(
    user_id: Option<i64>,
) -> SetOfIterator<'static, pgrx::composite_type!('static, "castle.session")> {
    sessions_of(user_key(user_id))
}

#[pg_extern(name = "sessions_of", stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sessions_of_uuid(
    user_id: Option<pgrx::Uuid>,
) -> SetOfIterator<'static, pgrx::composite_type!('static, "castle.session")> {
    sessions_of(user_key(user_id))
}

#[pg_extern(name = "sessions_of", stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sessions_of_text(
    user_id: Option<&str>,
) -> SetOfIterator<'static, pgrx::composite_type!('static, "castle.session")> {
    sessions_of(user_key(user_id))
}

/// A new token for the same user and data; the old one is revoked in the same
/// transaction. A bad token is refused exactly as authenticate refuses it.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn rotate(token: Option<&str>, ttl: default!(Option<Interval>, "NULL")) -> String {
    refuse_on_standby("rotate");
    let found = auth::find(token.map(str::as_bytes)).unwrap_or_else(|why| auth::refuse(why));
    let user_id = found.session.user_id();
    // delete first, so that trimming counts the new session instead of the old one
    let data = Spi::connect_mut(|client| {
        issue::lock_user(&user_id);
        let take = plans::kept(client, &TAKE_SESSION);
        let taken = plans::or_raise(client.update(take, Some(1), &[found.id.into()]));
        if taken.is_empty() {
            // trimmed or revoked by another transaction since we read it
            auth::refuse(Refusal::UnknownId);
        }
        plans::or_raise(taken.first().get::<RawJsonb>(1))
    });
    issue::create(user_id, ttl, data)
}

/// Deletes one batch of dead sessions (expired, or idle past castle.idle_timeout)
/// and returns how many. Rows in use elsewhere are skipped, not waited for; for
/// a large backlog, `CALL castle.prune_all()` commits between batches.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn prune(batch_size: default!(i32, 10000)) -> i64 {
    refuse_on_standby("prune");
    if batch_size <= 0 {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "batch_size must be positive"
        );
    }
    Spi::connect_mut(|client| {
        let prune = plans::kept(client, &PRUNE_SESSIONS);
        let deleted = plans::or_raise(client.update(
            prune,
            None,
            &[batch_size.into(), settings::idle_timeout_seconds().into()],
        ));
        deleted.len() as i64
    })
}

/// Deletes one session; the caller holds its user's lock.
fn delete_session(client: &mut SpiClient<'_>, id: i64) -> bool {
    let delete = plans::kept(client, &DELETE_SESSION);
    plans::or_raise(client.update(delete, None, &[id.into()])).len() == 1
}

fn revoke_all(user_id: String, except_session: Option<i64>) -> i64 {
    refuse_on_standby("revoke_all");
    Spi::connect_mut(|client| {
        issue::lock_user(&user_id);
        let delete = plans::kept(client, &DELETE_USER_SESSIONS);
        plans::or_raise(client.update(
            delete,
            None,
            &[user_id.as_str().into(), except_session.into()],
        ))
        .len() as i64
    })
}

/// A castle.session row as SPI hands it over (the device list is not a hot path).
type Session = pgrx::composite_type!('static, "castle.session");

fn sessions_of(user_id: String) -> SetOfIterator<'static, Session> {
    let sessions: Vec<Session> = Spi::connect(|client| {
        let live = plans::kept(client, &LIVE_SESSIONS);
        let rows = plans::or_raise(client.select(
            live,
            None,
            &[
                user_id.as_str().into(),
                settings::idle_timeout_seconds().into(),
            ],
        ));
        rows.filter_map(|row| plans::or_raise(row.get::<Session>(1)))
            .collect()
    });
    SetOfIterator::new(sessions)
}
