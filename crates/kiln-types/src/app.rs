//! Apps and their owners at the seams: an [`AppId`] and an [`OwnerKey`] are
//! parsed once at the HTTP edge and stay typed down to the SQL, and the
//! builder API's JSON shapes ([`AppSummary`], [`AppList`], [`RenameApp`]) are
//! written here once for the server, `kiln chat` and docs/openapi.json.
//!
//! The owner key is a credential (whoever sends it owns the apps), so it has
//! no `Display`, its `Debug` is redacted, and what the store keeps and the
//! logs show is its SHA-256 ([`OwnerKey::owner_id`], [`OwnerKey::log_tag`]):
//! a copy of the database or a log line names owners without letting anyone
//! act as them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An app id: 128 random bits as 32 lowercase hex digits. The app is the
/// durable thing (its versions, conversation and name); sandboxes come and go.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid app id: expected 32 lowercase hex digits (the appId of a session event or GET /api/apps)")]
pub struct AppIdError;

impl AppId {
    /// A fresh random id.
    pub fn random() -> AppId {
        AppId(hex::encode(rand::random::<[u8; 16]>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AppId {
    type Err = AppIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(AppId(s.to_owned()))
        } else {
            Err(AppIdError)
        }
    }
}

impl TryFrom<String> for AppId {
    type Error = AppIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AppId> for String {
    fn from(a: AppId) -> String {
        a.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppId({})", self.0)
    }
}

/// The owner credential the builder sends in `X-Kiln-Key`: a canonical UUID
/// (the browser's `crypto.randomUUID()`). No `Display`, a redacted `Debug`,
/// never serialized: it cannot end up in a log line or a JSON answer by
/// accident.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OwnerKey(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "send your owner key in the X-Kiln-Key header: a UUID like 3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b \
     (from crypto.randomUUID()); it never goes in a URL"
)]
pub struct OwnerKeyError;

/// The header that carries an [`OwnerKey`].
pub const OWNER_HEADER: &str = "x-kiln-key";

impl OwnerKey {
    /// What the store keeps: the key's SHA-256, hex. It names the owner
    /// without being usable as the credential.
    pub fn owner_id(&self) -> OwnerId {
        OwnerId(hex::encode(Sha256::digest(self.0.as_bytes())))
    }

    /// A short tag for log lines (the first 8 hex digits of the SHA-256).
    pub fn log_tag(&self) -> String {
        self.owner_id().0[..8].to_owned()
    }

    /// The key itself, for clients that send it (`kiln chat`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for OwnerKey {
    type Err = OwnerKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if crate::session::is_uuid(s) { Ok(OwnerKey(s.to_ascii_lowercase())) } else { Err(OwnerKeyError) }
    }
}

impl fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerKey(sha256:{}…)", self.log_tag())
    }
}

/// An owner as the store knows it: the SHA-256 of its key, hex.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct OwnerId(String);

impl OwnerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds an id read back from the store.
    pub fn from_stored(s: String) -> OwnerId {
        OwnerId(s)
    }
}

/// Longest app name (characters).
pub const MAX_APP_NAME: usize = 120;

/// One app in the caller's list (`GET /api/apps`); times are ms since the epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSummary {
    pub id: AppId,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// A turn (or a restore) is running for this app right now.
    pub running: bool,
}

/// `GET /api/apps`: the caller's apps, most recently updated first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppList {
    pub apps: Vec<AppSummary>,
}

/// `PATCH /api/apps/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameApp {
    pub name: String,
}

/// A name from a first prompt: its first line, at most 60 characters, cut
/// at a word boundary when there is one.
pub fn name_from_prompt(prompt: &str) -> String {
    let line: String = prompt.trim().lines().next().unwrap_or("").chars().filter(|c| !c.is_control()).collect();
    let line = line.trim();
    if line.chars().count() <= 60 {
        return if line.is_empty() { "Untitled app".to_owned() } else { line.to_owned() };
    }
    let cut: String = line.chars().take(60).collect();
    let at_word = match cut.rfind(char::is_whitespace) {
        Some(i) if i >= 20 => &cut[..i],
        _ => cut.as_str(),
    };
    format!("{}…", at_word.trim_end_matches(|c: char| c.is_whitespace() || c.is_ascii_punctuation()))
}

/// A rename's name, trimmed; an error says what to send.
pub fn valid_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("name is empty: send {\"name\": \"…\"} with some text".into());
    }
    if name.chars().count() > MAX_APP_NAME {
        return Err(format!("name is {} characters; the limit is {MAX_APP_NAME}", name.chars().count()));
    }
    if name.chars().any(char::is_control) {
        return Err("name must be one line without control characters".into());
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_are_32_lowercase_hex_digits() {
        let a = AppId::random();
        assert_eq!(a.as_str().parse::<AppId>().unwrap(), a);
        for bad in ["", "x", "0123456789ABCDEF0123456789abcdef", "../0123456789abcdef0123456789abc", &"a".repeat(33)] {
            assert!(bad.parse::<AppId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_owner_key_never_prints_itself() {
        let k: OwnerKey = "3F2B8C1E-9A4D-4E6F-8B2A-1C3D5E7F9A0B".parse().unwrap();
        assert_eq!(k.expose(), "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b");
        let shown = format!("{k:?} {} {}", k.log_tag(), k.owner_id().as_str());
        assert!(!shown.contains("3f2b8c1e") && !shown.contains("9a0b"), "{shown}");
        assert_eq!(k.owner_id().as_str().len(), 64);
        assert!("nope".parse::<OwnerKey>().unwrap_err().to_string().contains("X-Kiln-Key"));
    }

    #[test]
    fn names_come_from_the_first_prompt_cut_at_a_word() {
        assert_eq!(name_from_prompt("  A todo app  "), "A todo app");
        assert_eq!(name_from_prompt(""), "Untitled app");
        let long = "Make a habit tracker with streaks, reminders and a calendar view for every single month";
        let n = name_from_prompt(long);
        assert!(n.chars().count() <= 61 && n.ends_with('…') && long.starts_with(n.trim_end_matches('…')), "{n}");
        assert!(!n.trim_end_matches('…').ends_with(' '));
        assert!(valid_name("   ").is_err() && valid_name(&"x".repeat(121)).is_err() && valid_name("a\nb").is_err());
        assert_eq!(valid_name(" Habits ").unwrap(), "Habits");
    }
}
