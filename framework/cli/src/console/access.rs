//! Who may change things through the console: whoever shows the token
//! from configuration, once (a login form sets a session cookie), or with
//! every request (`Authorization: Bearer`, for scripts). Without a token,
//! or with `--read-only`, the console changes nothing.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use sha2::{Digest, Sha256};

/// The cookie a login sets.
pub(crate) const SESSION_COOKIE: &str = "annals_session";

/// The console's access rule.
pub(crate) struct Access {
    /// SHA-256 of the token; `None`: read-only.
    token: Option<[u8; 32]>,
    /// Sessions opened by a login in this process.
    sessions: Mutex<HashSet<String>>,
}

/// Why a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The console was started read-only (or without a token).
    ReadOnly,
    /// No valid session or token came with the request.
    NotSignedIn,
}

impl Access {
    /// Read-only when `token` is `None`.
    pub(crate) fn new(token: Option<&str>) -> Self {
        Access {
            token: token.map(digest),
            sessions: Mutex::new(HashSet::new()),
        }
    }

    /// Whether changes are possible at all.
    pub(crate) fn writable(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `candidate` is the token (compared as digests, so the time
    /// taken says nothing about the token).
    pub(crate) fn is_token(&self, candidate: &str) -> bool {
        self.token.is_some_and(|token| token == digest(candidate))
    }

    /// A new session for a correct token.
    pub(crate) fn open_session(&self) -> String {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(id.clone());
        }
        id
    }

    /// Whether the request may change something.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if !self.writable() {
            return Err(Refusal::ReadOnly);
        }
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if bearer.is_some_and(|token| self.is_token(token)) {
            return Ok(());
        }
        if self.signed_in(headers) {
            return Ok(());
        }
        Err(Refusal::NotSignedIn)
    }

    /// Whether the request carries a session this process opened.
    pub(crate) fn signed_in(&self, headers: &HeaderMap) -> bool {
        let Ok(sessions) = self.sessions.lock() else {
            return false;
        };
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == SESSION_COOKIE && sessions.contains(value))
    }
}

/// The `Set-Cookie` value of a session: not readable by scripts, not sent
/// with requests other sites start (no cross-site form posts).
pub(crate) fn session_cookie(session: &str) -> String {
    format!("{SESSION_COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/")
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_the_token_or_a_session_it_opened_may_change_things() {
        let access = Access::new(Some("s3cret"));
        let mut headers = HeaderMap::new();
        assert_eq!(access.check(&headers), Err(Refusal::NotSignedIn));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
        assert_eq!(access.check(&headers), Err(Refusal::NotSignedIn));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert_eq!(access.check(&headers), Ok(()));

        let session = access.open_session();
        let mut cookie = HeaderMap::new();
        cookie.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {SESSION_COOKIE}={session}")).expect("ascii"),
        );
        assert_eq!(access.check(&cookie), Ok(()));
        let mut forged = HeaderMap::new();
        forged.insert(
            COOKIE,
            HeaderValue::from_static("annals_session=0123456789abcdef"),
        );
        assert_eq!(access.check(&forged), Err(Refusal::NotSignedIn));
    }

    #[test]
    fn the_session_cookie_is_http_only_and_same_site_strict() {
        let cookie = session_cookie("abc");
        assert!(cookie.starts_with("annals_session=abc;"));
        assert!(cookie.contains("; HttpOnly"));
        assert!(cookie.contains("; SameSite=Strict"));
    }

    #[test]
    fn without_a_token_nothing_changes() {
        let access = Access::new(None);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(access.check(&headers), Err(Refusal::ReadOnly));
        assert!(!access.is_token(""));
    }
}
