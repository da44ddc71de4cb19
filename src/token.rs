//! The token codec: pure functions, no PostgreSQL in here, so every rule can be
//! unit-tested and fuzzed on its own.
//!
//! The format is the castle SessionManager's (itself AdonisJS's opaque access
//! token), so tokens it issued keep working:
//!
//! ```text
//! token  = prefix || base64url(decimal id) || "." || base64url(secret)
//! secret = random || decimal(crc32(random))      -- random: [A-Za-z0-9_-]{n}
//! hash   = lowercase hex(sha256(secret))          -- the only thing stored
//! ```
//!
//! base64url is unpadded and must be canonical; decoding rejects anything a
//! correct encoder could not have produced, so one secret has one spelling.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The smallest random part we accept or issue: 22 characters of 6 bits = 132 bits.
pub const MIN_SECRET_SIZE: usize = 22;
/// The largest random part `castle.secret_size` allows.
pub const MAX_SECRET_SIZE: usize = 1024;
/// No genuine token is longer: a 64-byte prefix, a 19-digit id, the largest secret
/// and its checksum, base64-encoded. Anything longer is refused before any work.
pub const MAX_TOKEN_LEN: usize = 64 + 28 + 1 + (MAX_SECRET_SIZE + 10).div_ceil(3) * 4;

/// The 64 characters a secret is drawn from: exactly 6 bits each, so a random
/// byte masked with 63 picks one uniformly.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Whether `b` is one of [`ALPHABET`]'s characters: range tests joined without
/// short-circuits, so that checking a whole secret compiles to a few vector
/// instructions (a branchy test per byte was a measurable part of authenticate).
fn in_alphabet(b: u8) -> bool {
    (b.wrapping_sub(b'0') < 10)
        | (b.wrapping_sub(b'A') < 26)
        | (b.wrapping_sub(b'a') < 26)
        | (b == b'-')
        | (b == b'_')
}

fn all_in_alphabet(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |all, &b| all & in_alphabet(b))
}

/// Why a token was refused. Only ever logged at DEBUG1; callers see one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    TooLong,
    WrongPrefix,
    Malformed,
    BadId,
    BadSecret,
    BadChecksum,
    UnknownId,
    WrongSecret,
    Expired,
    Idle,
    /// a token castle.rotate replaced, after castle.rotate_grace
    Reuse,
}

impl Refusal {
    pub fn cause(self) -> &'static str {
        match self {
            Refusal::Missing => "no token",
            Refusal::TooLong => "token too long",
            Refusal::WrongPrefix => "wrong prefix",
            Refusal::Malformed => "not prefix, id, dot, secret",
            Refusal::BadId => "id is not canonical base64url of a positive bigint",
            Refusal::BadSecret => "secret is not canonical base64url of the secret alphabet",
            Refusal::BadChecksum => "checksum does not match",
            Refusal::UnknownId => "no session with that id",
            Refusal::WrongSecret => "secret does not match",
            Refusal::Expired => "session expired",
            Refusal::Idle => "session idle past castle.idle_timeout",
            Refusal::Reuse => "reuse of a rotated token",
        }
    }
}

/// A token taken apart and checked as far as it can be without the database.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    pub id: i64,
    /// lowercase hex SHA-256 of the secret: what the row must hold.
    pub hash: [u8; 64],
}

/// A fresh secret: `size` characters from [`ALPHABET`] taken from `random_bytes`
/// (which must be `size` bytes from a CSPRNG), followed by their checksum.
pub fn secret_from_random(random_bytes: &[u8]) -> String {
    let mut secret: String = random_bytes
        .iter()
        .map(|b| ALPHABET[(b & 63) as usize] as char)
        .collect();
    let checksum = crc32fast::hash(secret.as_bytes());
    secret.push_str(&checksum.to_string());
    secret
}

pub fn encode(prefix: &str, id: i64, secret: &str) -> String {
    let mut token = String::with_capacity(prefix.len() + 28 + secret.len() * 4 / 3 + 4);
    token.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(id.to_string(), &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(secret, &mut token);
    token
}

/// lowercase hex SHA-256, as the seed stores it.
pub fn hash_secret(secret: &[u8]) -> [u8; 64] {
    let digest = Sha256::digest(secret);
    let mut hex = [0u8; 64];
    for (pair, &byte) in hex.chunks_exact_mut(2).zip(digest.iter()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
    hex
}

/// The rule castle.sessions' CHECK puts on hash (sql/bootstrap.sql), as
/// written there; catalog.rs verifies the table's CHECK is exactly this.
pub const STORED_HASH_PATTERN: &str = "^[0-9a-f]{64}$";

/// What STORED_HASH_PATTERN accepts: 64 characters, each 0-9 or a-f (so 64
/// bytes in any server encoding).
pub fn is_stored_hash(hash: &[u8]) -> bool {
    hash.len() == 64 && hash.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Each byte's two lowercase hex digits: one look-up a byte.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 15]];
        byte += 1;
    }
    pairs
};

/// Compares a computed hash with a stored one in constant time (`subtle`),
/// so timing never tells how many leading characters matched. As eight
/// words, not 64 bytes: subtle puts an optimization barrier on each element
/// it compares, and 64 of them were about a sixteenth of the extension's time
/// in authenticate.
pub fn hashes_equal(computed: &[u8; 64], stored: &[u8]) -> bool {
    let Ok(stored) = <&[u8; 64]>::try_from(stored) else {
        return false;
    };
    bool::from(hash_words(computed).ct_eq(&hash_words(stored)))
}

fn hash_words(hash: &[u8; 64]) -> [u64; 8] {
    std::array::from_fn(|word| u64::from_ne_bytes(std::array::from_fn(|i| hash[word * 8 + i])))
}

/// Takes a token apart: prefix, id, secret, checksum. Touches no table, so a
/// forged token costs nothing but this.
/// The token is bytes, as the database holds text: anything outside the
/// format's ASCII is refused like any other malformation, in any encoding.
pub fn decode(prefix: &str, token: &[u8]) -> Result<Decoded, Refusal> {
    let mut buffer = [0u8; MAX_TOKEN_LEN / 4 * 3 + 3];
    let (id, secret) = split(prefix, token, &mut buffer)?;
    Ok(Decoded {
        id,
        hash: hash_secret(secret),
    })
}

/// The id and the secret of a token that decodes: what a rotation derives
/// its successor from. None for any token [`decode`] refuses.
pub fn id_and_secret(prefix: &str, token: &[u8]) -> Option<(i64, Vec<u8>)> {
    let mut buffer = [0u8; MAX_TOKEN_LEN / 4 * 3 + 3];
    split(prefix, token, &mut buffer)
        .ok()
        .map(|(id, secret)| (id, secret.to_vec()))
}

/// The secret of the session a rotation makes from the one it replaces:
/// HMAC-SHA256 of the replaced session's id and secret, keyed with the
/// database's rotation key, stretched in counter mode to `size` characters
/// and checksummed like any secret. So rotating a token again yields the
/// same successor, with nothing secret stored; without the key (only the
/// table's owner can read it) a copy of the old token predicts nothing.
pub fn successor_secret(key: &[u8], rotated_id: i64, rotated_secret: &[u8], size: usize) -> String {
    let mut bytes = Vec::with_capacity(size + 32);
    let mut block: u32 = 0;
    while bytes.len() < size {
        let mut message = Vec::with_capacity(40 + rotated_secret.len());
        message.extend_from_slice(b"castle_sessions successor\0");
        message.extend_from_slice(&block.to_be_bytes());
        message.extend_from_slice(&rotated_id.to_be_bytes());
        message.extend_from_slice(rotated_secret);
        bytes.extend_from_slice(&hmac_sha256(key, &message));
        block += 1;
    }
    bytes.truncate(size);
    secret_from_random(&bytes)
}

/// HMAC (RFC 2104) over SHA-256.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The id and the secret, checked, the secret decoded into `buffer`.
fn split<'b>(prefix: &str, token: &[u8], buffer: &'b mut [u8]) -> Result<(i64, &'b [u8]), Refusal> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Refusal::TooLong);
    }
    let rest = token
        .strip_prefix(prefix.as_bytes())
        .ok_or(Refusal::WrongPrefix)?;
    let dot = rest
        .iter()
        .position(|&b| b == b'.')
        .ok_or(Refusal::Malformed)?;
    let (id_part, secret_part) = (&rest[..dot], &rest[dot + 1..]);
    let id = decode_id(id_part)?;
    // on the stack: a token is at most MAX_TOKEN_LEN, so its secret fits
    let secret = decode_into(secret_part, buffer).ok_or(Refusal::BadSecret)?;
    if !all_in_alphabet(secret) {
        return Err(Refusal::BadSecret);
    }
    if !checksum_matches(secret) {
        return Err(Refusal::BadChecksum);
    }
    Ok((id, secret))
}

/// The id is base64url of its plain decimal: no sign, no leading zero, > 0, fits bigint.
fn decode_id(part: &[u8]) -> Result<i64, Refusal> {
    if part.is_empty() || part.len() > 26 {
        return Err(Refusal::BadId);
    }
    let mut buffer = [0u8; 21];
    let digits = decode_into(part, &mut buffer).ok_or(Refusal::BadId)?;
    let canonical = !digits.is_empty()
        && digits[0] != b'0'
        && digits.len() <= 19
        && digits.iter().all(u8::is_ascii_digit);
    if !canonical {
        return Err(Refusal::BadId);
    }
    // all digits, so the only way to fail is overflow past i64::MAX
    digits
        .iter()
        .try_fold(0i64, |n, &d| {
            n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
        })
        .ok_or(Refusal::BadId)
}

/// Strict base64url into `buffer`: the base64 crate's URL_SAFE_NO_PAD engine
/// refuses padding and non-zero trailing bits, so one value has one spelling.
/// None for anything else, or more than `buffer` holds.
fn decode_into<'b>(encoded: &[u8], buffer: &'b mut [u8]) -> Option<&'b [u8]> {
    let written = URL_SAFE_NO_PAD.decode_slice(encoded, buffer).ok()?;
    Some(&buffer[..written])
}

/// The secret ends in the unpadded decimal CRC-32 of what precedes it. The
/// random part may itself end in digits, so every split that leaves a canonical
/// decimal of 1–10 digits and at least [`MIN_SECRET_SIZE`] characters before it
/// is tried — valid whatever `secret_size` was at issue time. One running CRC
/// serves every split: the secret is read once.
fn checksum_matches(secret: &[u8]) -> bool {
    let longest = secret.len().saturating_sub(MIN_SECRET_SIZE).min(10);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&secret[..secret.len() - longest]);
    for digits in (1..=longest).rev() {
        // here `crc` covers everything before the last `digits` bytes
        let sum = &secret[secret.len() - digits..];
        let canonical = sum.iter().all(u8::is_ascii_digit) && (digits == 1 || sum[0] != b'0');
        if canonical {
            let written: u64 = sum.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
            if written == u64::from(crc.clone().finalize()) {
                return true;
            }
        }
        crc.update(&sum[..1]);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_hash_is_what_the_tables_check_accepts() {
        // every hash a sign-in stores passes; what the CHECK's regex refuses fails
        for secret in [&b""[..], b"a", &[0xff; 200]] {
            assert!(is_stored_hash(&hash_secret(secret)));
        }
        let good = hash_secret(b"x");
        assert!(!is_stored_hash(&good[..63]));
        assert!(!is_stored_hash(&[&good[..], b"0"].concat()));
        assert!(!is_stored_hash(&good.to_ascii_uppercase()));
        assert!(!is_stored_hash(&[b'g'; 64]));
        assert!(!is_stored_hash(b""));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // test cases 2 (a short key) and 6 (a key longer than a block)
        let hex = |bytes: [u8; 32]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_successor_is_one_secret_that_only_the_key_gives() {
        let key = [7u8; 32];
        let old = secret_from_random(&[1u8; 64]);
        let successor = successor_secret(&key, 42, old.as_bytes(), 64);
        assert_eq!(successor, successor_secret(&key, 42, old.as_bytes(), 64));
        assert_ne!(
            successor,
            successor_secret(&[8u8; 32], 42, old.as_bytes(), 64)
        );
        assert_ne!(successor, successor_secret(&key, 43, old.as_bytes(), 64));
        assert_ne!(successor, old);
        // a secret like any other: it decodes, at any size
        for size in [MIN_SECRET_SIZE, 64, 100, MAX_SECRET_SIZE] {
            let secret = successor_secret(&key, 42, old.as_bytes(), size);
            let token = encode("oat_", 43, &secret);
            assert_eq!(
                decode("oat_", token.as_bytes()).unwrap().hash,
                hash_secret(secret.as_bytes())
            );
            assert_eq!(
                id_and_secret("oat_", token.as_bytes()),
                Some((43, secret.into_bytes()))
            );
        }
        assert_eq!(id_and_secret("oat_", b"oat_x.y"), None);
    }

    fn seed_vector() -> (String, String) {
        let secret = secret_from_random(&[0u8; 64]);
        (secret.clone(), encode("oat_", 1, &secret))
    }

    #[test]
    fn known_vector_from_the_seed() {
        let (secret, token) = seed_vector();
        assert_eq!(secret, format!("{}1095524924", "A".repeat(64)));
        assert!(token.starts_with("oat_MQ.QUFB"), "{token}");
        assert!(token.ends_with("TEwOTU1MjQ5MjQ"), "{token}");
        let hash = hash_secret(secret.as_bytes());
        assert!(hash.starts_with(b"5c03173b2060"));
        let decoded = decode("oat_", token.as_bytes()).unwrap();
        assert_eq!(decoded, Decoded { id: 1, hash });
    }

    #[test]
    fn random_secrets_round_trip_and_use_the_whole_alphabet() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let secret = secret_from_random(&bytes);
        for c in ALPHABET {
            assert!(secret.as_bytes().contains(c));
        }
        for b in 0..=255u8 {
            assert_eq!(in_alphabet(b), ALPHABET.contains(&b), "{b}");
        }
        let token = encode("x_", i64::MAX, &secret);
        assert_eq!(decode("x_", token.as_bytes()).unwrap().id, i64::MAX);
    }

    #[test]
    fn random_part_ending_in_digits_still_checks() {
        // random part "...0123" followed by its checksum: the split must be found
        let random: Vec<u8> = std::iter::repeat_n(b'z', 30).chain(*b"0123").collect();
        let mut secret = String::from_utf8(random.clone()).unwrap();
        secret.push_str(&crc32fast::hash(&random).to_string());
        assert!(checksum_matches(secret.as_bytes()));
    }

    #[test]
    fn refusals() {
        let (secret, token) = seed_vector();
        let id_part = &token[4..token.find('.').unwrap()];
        let secret_b64 = &token[token.find('.').unwrap() + 1..];
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let cases: Vec<(String, Refusal)> = vec![
            (token.replacen("oat_", "xat_", 1), Refusal::WrongPrefix),
            (format!("oat_{id_part}{secret_b64}"), Refusal::Malformed),
            (format!("oat_.{secret_b64}"), Refusal::BadId),
            (format!("oat_{}.{secret_b64}", b64("01")), Refusal::BadId),
            (format!("oat_{}.{secret_b64}", b64("0")), Refusal::BadId),
            (format!("oat_{}.{secret_b64}", b64("-1")), Refusal::BadId),
            (format!("oat_{}.{secret_b64}", b64("+1")), Refusal::BadId),
            (format!("oat_{}.{secret_b64}", b64(" 1")), Refusal::BadId),
            (
                format!("oat_{}.{secret_b64}", b64("9223372036854775808")),
                Refusal::BadId,
            ),
            (format!("oat_MQ==.{secret_b64}"), Refusal::BadId),
            // "MR" decodes to "1" too, but with non-zero trailing bits: not canonical
            (format!("oat_MR.{secret_b64}"), Refusal::BadId),
            (format!("oat_{id_part}.{secret_b64}="), Refusal::BadSecret),
            (
                format!("oat_{id_part}.{}", b64(&secret.replacen('A', "!", 1))),
                Refusal::BadSecret,
            ),
            (
                format!("oat_{id_part}.{}", b64(&secret.replacen('A', "B", 1))),
                Refusal::BadChecksum,
            ),
            (
                format!("oat_{id_part}.{}", b64("short1")),
                Refusal::BadChecksum,
            ),
            ("x".repeat(MAX_TOKEN_LEN + 1), Refusal::TooLong),
        ];
        for (bad, why) in cases {
            assert_eq!(decode("oat_", bad.as_bytes()), Err(why), "{bad}");
        }
    }

    /// Strictness the format relies on: no padding, no trailing bits, no
    /// other alphabet; and a buffer too small is a refusal, not a panic.
    #[test]
    fn base64url_is_strict() {
        let mut buffer = [0u8; 64];
        assert_eq!(decode_into(b"QUFB", &mut buffer), Some(&b"AAA"[..]));
        assert_eq!(decode_into(b"QUE", &mut buffer), Some(&b"AA"[..]));
        for bad in [&b"QUE="[..], b"QUF", b"QU+B", b"QU/B", b"Q", b"QUFB\n"] {
            assert_eq!(decode_into(bad, &mut buffer), None, "{bad:?}");
        }
        assert_eq!(decode_into(b"QUFBQUFB", &mut [0u8; 5]), None);
    }

    #[test]
    fn hash_comparison() {
        let h = hash_secret(b"abc");
        assert!(hashes_equal(&h, &h));
        for at in 0..64 {
            let mut other = h;
            other[at] ^= 1;
            assert!(!hashes_equal(&h, &other), "a difference at {at}");
        }
        assert!(!hashes_equal(&h, &h[..63]));
        assert!(!hashes_equal(&h, &[&h[..], b"0"].concat()));
    }

    /// xorshift64*: a reproducible stream, so a failure names its case.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A genuine token, bent one way or another.
    fn mutate(rng: &mut Rng, token: &str) -> Vec<u8> {
        const BYTES: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \0\xff";
        let mut bytes = token.as_bytes().to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(6) {
                0 if at < bytes.len() => bytes[at] = BYTES[rng.below(BYTES.len())],
                1 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
                2 => bytes.insert(at, BYTES[rng.below(BYTES.len())]),
                3 if at < bytes.len() => drop(bytes.remove(at)),
                4 => bytes.truncate(at),
                _ => {
                    let other = rng.below(bytes.len().max(1));
                    if at < bytes.len() && other < bytes.len() {
                        bytes.swap(at, other);
                    }
                }
            }
        }
        bytes
    }

    /// A million hostile inputs: random bytes and mutations of genuine tokens.
    /// Nothing panics, and nothing but the genuine secret decodes to its hash;
    /// a mutation may keep the secret and change only the id (refused later by
    /// the row's hash) — never the other way round.
    #[test]
    fn a_million_hostile_tokens() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted_mutants = 0;
        for round in 0..1_000_000u32 {
            if round % 4 == 0 {
                let len = rng.below(200);
                let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let with_prefix = [b"oat_".as_slice(), &junk].concat();
                assert!(decode("oat_", &junk).is_err() || junk.starts_with(b"oat_"));
                let _ = decode("oat_", &with_prefix);
                continue;
            }
            let random: Vec<u8> = (0..22 + rng.below(60)).map(|_| rng.next() as u8).collect();
            let secret = secret_from_random(&random);
            let id = 1 + (rng.next() >> 1) as i64 % 1_000_000_000;
            let token = encode("oat_", id, &secret);
            let hash = hash_secret(secret.as_bytes());
            let mutant = mutate(&mut rng, &token);
            if let Ok(decoded) = decode("oat_", &mutant) {
                if mutant != token.as_bytes() {
                    accepted_mutants += 1;
                }
                assert_eq!(
                    decoded.hash,
                    hash,
                    "a mutant decoded to another secret: {}",
                    String::from_utf8_lossy(&mutant)
                );
            }
        }
        // mutants that keep the secret are rare: a changed id that still decodes
        assert!(accepted_mutants < 10_000, "{accepted_mutants}");
    }
}
