//! The key that tags bare upload sessions' ids (ADR 0022).
//!
//! A session opened without declarations writes no row until its first bytes: its id is a UUIDv7 (whose timestamp is
//! the session's opening) and a tag, a keyed BLAKE3 hash of the UUID and the subject that opened it. Any instance
//! sharing the database holds the same key, so any of them can tell a session it never saw from a made-up id.

use std::fmt;

use anyhow::Context as _;
use artifactstore_db::{execute, fetch_one, Database};
use uuid::Uuid;

/// The name of the key's row in `instance_keys`.
const NAME: &str = "upload-sessions";
/// Bytes of the tag kept in the id (128 bits, written as 32 hex digits).
const TAG_BYTES: usize = 16;
/// Separates the UUID from the tag in a bare session's id.
const SEPARATOR: char = '.';

/// The instance's key for bare sessions' ids.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// Reads the key from the database, first making it if no instance has yet: every instance on one database ends
    /// up with the key the first one stored.
    pub async fn load_or_create(db: &Database) -> anyhow::Result<SessionKey> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|err| anyhow::anyhow!("draw a key for upload sessions: {err}"))?;
        let mut tx = db.begin_write().await.context("store the upload sessions' key")?;
        execute!(
            &mut tx,
            "INSERT INTO instance_keys (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            NAME,
            fresh.to_vec()
        )
        .context("store the upload sessions' key")?;
        let (stored,): (Vec<u8>,) =
            fetch_one!(&mut tx, (Vec<u8>,), "SELECT key FROM instance_keys WHERE name = $1", NAME)
                .context("read the upload sessions' key")?;
        tx.commit().await.context("store the upload sessions' key")?;
        let key = <[u8; 32]>::try_from(stored.as_slice())
            .map_err(|_| anyhow::anyhow!("the stored upload sessions' key has {} bytes, not 32", stored.len()))?;
        Ok(SessionKey(key))
    }

    /// A key for tests and tools that open no database.
    pub fn from_bytes(key: [u8; 32]) -> SessionKey {
        SessionKey(key)
    }

    fn tag(&self, id: Uuid, actor: &str) -> [u8; TAG_BYTES] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(b"artifactstore bare upload session v1\0");
        hasher.update(id.as_bytes());
        hasher.update(actor.as_bytes());
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_BYTES]);
        tag
    }

    /// The id of a bare session `id` opened by `actor`.
    pub fn sign(&self, id: Uuid, actor: &str) -> String {
        format!("{id}{SEPARATOR}{}", hex::encode(self.tag(id, actor)))
    }

    /// Reads a session id: `(uuid, false)` for a plain UUID (a session with a row from its start), `(uuid, true)` for
    /// a bare session's id whose tag is right for `actor`, `None` for anything else (malformed, made up, or another
    /// subject's).
    pub fn read(&self, text: &str, actor: &str) -> Option<(Uuid, bool)> {
        let Some((uuid, _)) = text.split_once(SEPARATOR) else {
            return Uuid::parse_str(text).ok().map(|id| (id, false));
        };
        let id = Uuid::parse_str(uuid).ok()?;
        // Only the id as it was made reads back (lowercase, hyphenated), compared in constant time so the answer's
        // timing tells nothing of the right tag.
        let expected = self.sign(id, actor);
        if expected.len() != text.len() {
            return None;
        }
        let differ = expected.bytes().zip(text.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (differ == 0).then_some((id, true))
    }
}

/// When a UUIDv7 was made, in Unix milliseconds (`None` for other versions).
pub fn opened_ms(id: Uuid) -> Option<i64> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    i64::try_from(secs).ok()?.checked_mul(1000)?.checked_add(i64::from(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_only_for_their_subject_and_unaltered() {
        let key = SessionKey::from_bytes([7; 32]);
        let id = Uuid::now_v7();
        let signed = key.sign(id, "ci");
        assert_eq!(key.read(&signed, "ci"), Some((id, true)));
        assert_eq!(key.read(&signed, "someone-else"), None);
        assert_eq!(SessionKey::from_bytes([8; 32]).read(&signed, "ci"), None, "another instance's key");
        let mut altered = signed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(key.read(std::str::from_utf8(&altered).unwrap(), "ci"), None);
        assert_eq!(key.read(&signed[..signed.len() - 2], "ci"), None, "a short tag");
        assert_eq!(key.read(&format!("{signed}00"), "ci"), None, "a long tag");
        assert_eq!(key.read(&id.to_string(), "ci"), Some((id, false)), "a plain UUID is a session with a row");
        assert_eq!(key.read("not-a-session", "ci"), None);
        assert_eq!(key.read(&format!("{id}.{}", "zz".repeat(16)), "ci"), None);
        assert_eq!(key.read(&signed.to_uppercase(), "ci"), None, "only the id as it was made");
        let (_, tag) = signed.split_once('.').unwrap();
        assert_eq!(key.read(&format!("{}.{tag}", id.simple()), "ci"), None, "only the id as it was made");
    }

    #[test]
    fn a_v7_id_tells_when_it_was_made() {
        let before = chrono::Utc::now().timestamp_millis();
        let made = opened_ms(Uuid::now_v7()).unwrap();
        let after = chrono::Utc::now().timestamp_millis();
        assert!(before <= made && made <= after, "{before} <= {made} <= {after}");
        assert_eq!(opened_ms(Uuid::new_v4()), None);
    }
}
