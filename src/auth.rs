//! Checking tokens: `castle.authenticate` raises, `castle.verify` returns NULL.
//! Both are read-only, so they run on a hot standby and take no transaction id.

use pgrx::prelude::*;

use crate::plans::{self, Statement, INT8};
use crate::token::{self, Refusal};
use crate::settings;

static FIND_SESSION: Statement = Statement {
    sql: include_str!("queries/find_session.sql"),
    args: &[INT8],
    mutating: false,
};

type Session = pgrx::composite_type!('static, "castle.session");

/// The session a token names, or a refusal of it.
#[pg_extern(stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn authenticate(token: Option<&str>) -> pgrx::composite_type!('static, "castle.session") {
    check(token).unwrap_or_else(|why| refuse(why))
}

/// The session a token names, or NULL wherever authenticate would raise.
#[pg_extern(stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn verify(token: Option<&str>) -> Option<pgrx::composite_type!('static, "castle.session")> {
    check(token).map_err(log_refusal).ok()
}

pub fn check(token: Option<&str>) -> Result<Session, Refusal> {
    let token = token.ok_or(Refusal::Missing)?;
    let decoded = token::decode(&settings::token_prefix(), token)?;
    Spi::connect(|client| {
        let find = plans::kept(client, &FIND_SESSION);
        let rows = plans::or_raise(client.select(find, Some(1), &[decoded.id.into()]));
        if rows.is_empty() {
            return Err(Refusal::UnknownId);
        }
        let row = rows.first();
        let stored: String = plans::or_raise(row.get(1)).unwrap_or_default();
        if !token::hashes_equal(&decoded.hash, stored.as_bytes()) {
            return Err(Refusal::WrongSecret);
        }
        if plans::or_raise(row.get::<bool>(2)).unwrap_or(true) {
            return Err(Refusal::Expired);
        }
        plans::or_raise(row.get::<Session>(3)).ok_or(Refusal::UnknownId)
    })
}

fn log_refusal(why: Refusal) {
    // the cause, never the token: DBAs can see why, clients cannot
    debug1!("castle_sessions: token refused: {}", why.cause());
}

/// Every refusal, whatever its cause, is this one error: SQLSTATE 28000 and
/// castle.invalid_message, with no detail or hint to tell causes apart.
pub fn refuse(why: Refusal) -> ! {
    log_refusal(why);
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
        settings::invalid_message()
    );
}
