//! In-database tests, run by `cargo pgrx test` (each in its own transaction).

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::token;

    fn create(sql: &str) -> String {
        Spi::get_one::<String>(sql).unwrap().expect("a token")
    }

    fn user_of(token: &str) -> Option<String> {
        Spi::get_one_with_args::<String>("SELECT (castle.verify($1)).user_id", &[token.into()])
            .unwrap()
    }

    fn count_of(user: &str) -> i64 {
        Spi::get_one_with_args::<i64>(
            "SELECT count(*) FROM castle.sessions WHERE user_id = $1",
            &[user.into()],
        )
        .unwrap()
        .unwrap()
    }

    /// The standing worker's one-row update names the columns it changes,
    /// so PostgreSQL hints "unchanged" only to the indexes on neither: a
    /// DBA's index on used_at is told its key moved (without the names every
    /// index was told it had not).
    #[pg_test]
    fn a_recorded_use_tells_the_indexes_which_columns_it_changes() {
        let attributes = crate::store::attributes_a_use_updates();
        let names = Spi::get_one_with_args::<Vec<String>>(
            "SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
              WHERE attrelid = 'castle.sessions'::regclass AND attnum = ANY ($1)",
            &[attributes
                .iter()
                .map(|&a| a as i16)
                .collect::<Vec<i16>>()
                .into()],
        )
        .unwrap()
        .unwrap_or_default();
        assert_eq!(attributes.len(), 2, "{attributes:?}");
        assert_eq!(names, ["updated_at", "used_at"]);
    }

    #[pg_test]
    fn round_trip_for_every_user_id_type() {
        let by_bigint = create("SELECT castle.create_session(42, '1 hour')");
        let by_uuid = create(
            "SELECT castle.create_session('6f1c2a4e-0d7b-4c55-9e0a-3b8f6a1d2c3e'::uuid, '1 hour')",
        );
        let by_text = create("SELECT castle.create_session('user_abc', '1 hour')");
        assert_eq!(user_of(&by_bigint).as_deref(), Some("42"));
        assert_eq!(
            user_of(&by_uuid).as_deref(),
            Some("6f1c2a4e-0d7b-4c55-9e0a-3b8f6a1d2c3e")
        );
        assert_eq!(user_of(&by_text).as_deref(), Some("user_abc"));
    }

    #[pg_test]
    fn the_stored_hash_is_sha256_of_the_secret_and_never_the_token() {
        let token = create("SELECT castle.create_session(7)");
        let (id_part, secret_part) = token.trim_start_matches("oat_").split_once('.').unwrap();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let id: i64 = String::from_utf8(b64.decode(id_part).unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let secret = b64.decode(secret_part).unwrap();
        assert_eq!(
            secret.len(),
            64 + crc32fast::hash(&secret[..64]).to_string().len()
        );
        let stored = Spi::get_one_with_args::<String>(
            "SELECT hash FROM castle.sessions WHERE id = $1",
            &[id.into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(stored.as_bytes(), token::hash_secret(&secret).as_slice());
    }

    #[pg_test(error = "Not a valid session")]
    fn a_wrong_secret_is_refused() {
        let token = create("SELECT castle.create_session(1)");
        let mut forged = token.into_bytes();
        let last = forged.len() - 20;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        Spi::get_one_with_args::<String>(
            "SELECT (castle.authenticate($1)).user_id",
            &[forged.as_str().into()],
        )
        .unwrap();
    }

    #[pg_test(error = "Not a valid session")]
    fn null_is_refused() {
        Spi::get_one::<String>("SELECT (castle.authenticate(NULL)).user_id").unwrap();
    }

    #[pg_test]
    fn trimming_keeps_the_newest_max_sessions() {
        let tokens: Vec<String> = (0..5)
            .map(|_| create("SELECT castle.create_session('trim-me')"))
            .collect();
        assert_eq!(count_of("trim-me"), 3);
        assert!(user_of(&tokens[0]).is_none() && user_of(&tokens[1]).is_none());
        assert!(tokens[2..].iter().all(|t| user_of(t).is_some()));
    }

    #[pg_test]
    fn settings_apply_at_call_time() {
        Spi::run("SET castle.token_prefix = 'app_'; SET castle.secret_size = 22; SET castle.max_sessions = 1").unwrap();
        let token = create("SELECT castle.create_session('settings')");
        assert!(token.starts_with("app_"), "{token}");
        create("SELECT castle.create_session('settings')");
        assert_eq!(count_of("settings"), 1);
        assert!(user_of(&token).is_none(), "trimmed by max_sessions = 1");
        Spi::run("SET castle.token_prefix = 'oat_'").unwrap();
        let fresh = create("SELECT castle.create_session('settings')").replacen("oat_", "app_", 1);
        assert!(
            user_of(&fresh).is_none(),
            "a token with another prefix is refused"
        );
    }

    #[pg_test(
        error = "21 is outside the valid range for parameter \"castle.secret_size\" (22 .. 1024)"
    )]
    fn a_secret_size_under_128_bits_is_refused() {
        Spi::run("SET castle.secret_size = 21").unwrap();
    }

    #[pg_test]
    fn the_seed_vector_authenticates() {
        let secret = token::secret_from_random(&[0u8; 64]);
        let hash = token::hash_secret(secret.as_bytes());
        Spi::run_with_args(
            "INSERT INTO castle.sessions (id, hash, user_id) VALUES (1, $1, 'seed')",
            &[std::str::from_utf8(&hash).unwrap().into()],
        )
        .unwrap();
        assert_eq!(
            user_of(&token::encode("oat_", 1, &secret)).as_deref(),
            Some("seed")
        );
    }

    #[pg_test]
    fn data_comes_back_exactly() {
        let token = create(
            r#"SELECT castle.create_session(9, NULL, '{"n": 123456789012345678901234567890, "ua": "Firefox"}')"#,
        );
        let data = Spi::get_one_with_args::<String>(
            "SELECT (castle.verify($1)).data::text",
            &[token.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            data,
            r#"{"n": 123456789012345678901234567890, "ua": "Firefox"}"#
        );
    }
}
