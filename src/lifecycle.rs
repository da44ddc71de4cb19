//! A session's life after sign-in: sign-out, sign-out everywhere, the device
//! list, rotation and pruning.

use pgrx::datum::Interval;
use pgrx::iter::SetOfIterator;
use pgrx::prelude::*;

use crate::auth::{self, Session};
use crate::issue::{self, refuse_on_standby, user_key};
use crate::plans::{self, Statement, INT4, INT8, TEXT};
use crate::raw_jsonb::RawJsonb;
use crate::settings;

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
    match auth::find(token) {
        Ok(found) => delete_session(found.id),
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
    delete_session(session_id)
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
    let found = auth::find(token).unwrap_or_else(|why| auth::refuse(why));
    // delete first, so that trimming counts the new session instead of the old one
    let (user_id, data) = Spi::connect_mut(|client| {
        let take = plans::kept(client, &TAKE_SESSION);
        let taken = plans::or_raise(client.update(take, Some(1), &[found.id.into()]));
        let row = taken.first();
        let user_id: Option<String> = plans::or_raise(row.get(1));
        let data: Option<RawJsonb> = plans::or_raise(row.get(2));
        (
            user_id
                .unwrap_or_else(|| error!("castle_sessions: the session vanished during rotate")),
            data,
        )
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

fn delete_session(id: i64) -> bool {
    Spi::connect_mut(|client| {
        let delete = plans::kept(client, &DELETE_SESSION);
        plans::or_raise(client.update(delete, None, &[id.into()])).len() == 1
    })
}

fn revoke_all(user_id: String, except_session: Option<i64>) -> i64 {
    refuse_on_standby("revoke_all");
    Spi::connect_mut(|client| {
        let delete = plans::kept(client, &DELETE_USER_SESSIONS);
        plans::or_raise(client.update(
            delete,
            None,
            &[user_id.as_str().into(), except_session.into()],
        ))
        .len() as i64
    })
}

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
