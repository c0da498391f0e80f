//! Session keys: the browser's `crypto.randomUUID()`, kept in localStorage.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A session key in canonical UUID form (`8-4-4-4-12` hex digits). It is the
/// only credential of an anonymous session, so anything else is refused
/// rather than normalized.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionKey(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid session key: expected a UUID like 3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b (from crypto.randomUUID())")]
pub struct SessionKeyError;

impl SessionKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A UUID in its canonical 8-4-4-4-12 hex form (what `crypto.randomUUID()`
/// makes): the shape of session and owner keys.
pub(crate) fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5 && groups.iter().zip(lens).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl FromStr for SessionKey {
    type Err = SessionKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if is_uuid(s) { Ok(SessionKey(s.to_ascii_lowercase())) } else { Err(SessionKeyError) }
    }
}

impl TryFrom<String> for SessionKey {
    type Error = SessionKeyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SessionKey> for String {
    fn from(k: SessionKey) -> String {
        k.0
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_uuids_are_session_keys() {
        assert!("3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b".parse::<SessionKey>().is_ok());
        assert_eq!(
            "3F2B8C1E-9A4D-4E6F-8B2A-1C3D5E7F9A0B".parse::<SessionKey>().unwrap().as_str(),
            "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b"
        );
        for bad in [
            "",
            "x",
            "3f2b8c1e9a4d4e6f8b2a1c3d5e7f9a0b",
            "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0",
            "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0g",
            "../../etc/passwd",
        ] {
            assert!(bad.parse::<SessionKey>().is_err(), "{bad:?}");
        }
    }
}
