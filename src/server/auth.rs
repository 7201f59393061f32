//! Bearer token access control.
//!
//! With a token set, every `/v1` route (and any path without a route)
//! requires `Authorization: Bearer <token>`; `/metrics`, `/healthz` and
//! `/readyz` require it only with `protect_metrics`. A missing or wrong
//! token gets 401 with `WWW-Authenticate: Bearer` and a JSON error.
//!
//! The token never leaves this module in readable form: [`AuthToken`] has
//! no `Display`, its `Debug` prints `<redacted>`, and errors about it name
//! the flag, never the value.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::errors::ApiError;
use super::routes::AppState;

/// Minimum token length, in bytes. A shorter token could be guessed by
/// sending requests.
///
/// # Example
///
/// ```
/// use keywheel::server::{AuthToken, MIN_TOKEN_BYTES};
///
/// assert_eq!(MIN_TOKEN_BYTES, 16);
/// assert!(AuthToken::new(&"a".repeat(MIN_TOKEN_BYTES)).is_ok());
/// assert!(AuthToken::new(&"a".repeat(MIN_TOKEN_BYTES - 1)).is_err());
/// ```
pub const MIN_TOKEN_BYTES: usize = 16;

/// Maximum token length, in bytes, well under any header size limit.
///
/// # Example
///
/// ```
/// use keywheel::server::{AuthToken, MAX_TOKEN_BYTES};
///
/// assert_eq!(MAX_TOKEN_BYTES, 4096);
/// assert!(AuthToken::new(&"a".repeat(MAX_TOKEN_BYTES)).is_ok());
/// assert!(AuthToken::new(&"a".repeat(MAX_TOKEN_BYTES + 1)).is_err());
/// ```
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The routes that `protect_metrics` covers. Without it they stay open, so
/// scrapers and load balancer health checks need no token.
const OPEN_ROUTES: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// A bearer token that clients must present.
///
/// It keeps only what a comparison needs in memory besides the text: the
/// SHA-256 digest. `Debug` redacts it, and there is no `Display`.
///
/// # Example
///
/// ```
/// use keywheel::server::AuthToken;
///
/// let token = AuthToken::new("s3cret-token-0123456789").expect("a valid token");
/// assert_eq!(format!("{token:?}"), "AuthToken(<redacted>)");
/// assert!(token.matches("s3cret-token-0123456789"));
/// assert!(!token.matches("s3cret-token-012345678"));
/// ```
#[derive(Clone)]
pub struct AuthToken {
    digest: [u8; 32],
}

impl AuthToken {
    /// Checks and stores a token: [`MIN_TOKEN_BYTES`] to [`MAX_TOKEN_BYTES`]
    /// characters of the bearer token alphabet of RFC 6750 (letters,
    /// digits, `-._~+/`, with `=` only at the end).
    ///
    /// # Errors
    ///
    /// A message that states the rule. It never contains the token.
    ///
    /// # Example
    ///
    /// See the example on [`AuthToken`].
    pub fn new(token: &str) -> Result<AuthToken, String> {
        check_token(token)?;
        Ok(AuthToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Reads a token from the first line of a file; a trailing newline
    /// (`\n` or `\r\n`) is removed.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is empty, or contains an invalid token. The
    /// message names the file, never its content.
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::server::AuthToken;
    ///
    /// let path = std::env::temp_dir().join(format!("keywheel-token-{}", std::process::id()));
    /// std::fs::write(&path, "s3cret-token-0123456789\r\n").unwrap();
    /// let token = AuthToken::from_file(&path).expect("a valid token file");
    /// std::fs::remove_file(&path).unwrap();
    ///
    /// assert!(token.matches("s3cret-token-0123456789"));
    /// ```
    pub fn from_file(path: &Path) -> anyhow::Result<AuthToken> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the auth token file {}", path.display()))?;
        let token = text
            .strip_suffix('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
            .unwrap_or(&text);
        if token.is_empty() {
            anyhow::bail!(
                "the auth token file {} is empty: write the token into it, or remove --auth-token-file",
                path.display()
            );
        }
        AuthToken::new(token).map_err(|rule| {
            anyhow::anyhow!(
                "invalid token in the auth token file {}: {rule}",
                path.display()
            )
        })
    }

    /// Returns true if `presented` is this token. The time taken does not
    /// depend on where the two differ nor on the presented length, because
    /// the comparison runs over fixed-size digests in constant time.
    ///
    /// # Example
    ///
    /// See the example on [`AuthToken`].
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&digest).into()
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

impl PartialEq for AuthToken {
    fn eq(&self, other: &Self) -> bool {
        self.digest.ct_eq(&other.digest).into()
    }
}

impl Eq for AuthToken {}

/// The text of `--auth-token` as given, before it is checked. `Debug`
/// redacts it, so printing the parsed flags never shows the token.
///
/// # Example
///
/// ```
/// use keywheel::server::{AuthToken, TokenText};
///
/// let text: TokenText = "s3cret-token-0123456789".parse().unwrap();
/// assert_eq!(format!("{text:?}"), "TokenText(<redacted>)");
/// assert_eq!(text.expose(), "s3cret-token-0123456789");
/// assert!(AuthToken::new(text.expose()).is_ok());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TokenText(String);

impl TokenText {
    /// Returns the token text, for building an [`AuthToken`].
    ///
    /// # Example
    ///
    /// See the example on [`TokenText`].
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenText(<redacted>)")
    }
}

impl std::str::FromStr for TokenText {
    type Err = std::convert::Infallible;

    /// Accepts any text. The check comes later, in
    /// [`AuthToken::new`], whose errors do not quote the value as a
    /// command-line parser's would.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(TokenText(text.to_string()))
    }
}

fn check_token(token: &str) -> Result<(), String> {
    let rule = format!(
        "a token is {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES} characters from A-Z, a-z, 0-9 and - . _ ~ + /, optionally ending in ="
    );
    if token.len() < MIN_TOKEN_BYTES || token.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "the token is {} bytes long, but {rule}",
            token.len()
        ));
    }
    let body = token.trim_end_matches('=');
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || b"-._~+/".contains(&byte);
    if body.is_empty() || !body.bytes().all(allowed) {
        return Err(format!(
            "the token has a character that is not allowed: {rule}"
        ));
    }
    Ok(())
}

/// The access rule of a server: its token, if any, and whether the
/// metrics and health routes need it too.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    pub(crate) token: Option<AuthToken>,
    pub(crate) protect_metrics: bool,
}

impl Access {
    fn requires_token(&self, path: &str) -> bool {
        self.token.is_some() && (self.protect_metrics || !OPEN_ROUTES.contains(&path))
    }
}

/// Rejects a request with 401 unless it carries the bearer token, where
/// the path requires one.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let access = state.access();
    if !access.requires_token(request.uri().path()) {
        return next.run(request).await;
    }
    let Some(token) = &access.token else {
        return next.run(request).await;
    };

    match bearer(request.headers().get(header::AUTHORIZATION)) {
        Some(presented) if token.matches(presented) => next.run(request).await,
        Some(_) => unauthorized(
            "invalid bearer token: the token in the Authorization header is not the server's",
            r#"Bearer realm="keywheel", error="invalid_token""#,
        ),
        None => unauthorized(
            "missing bearer token: send the header Authorization: Bearer <token>",
            r#"Bearer realm="keywheel""#,
        ),
    }
}

/// Returns the token of an `Authorization: Bearer <token>` header. The
/// scheme is case-insensitive, as for every HTTP authentication scheme.
fn bearer(value: Option<&HeaderValue>) -> Option<&str> {
    let text = value?.to_str().ok()?;
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(token.trim_matches(' '))
}

fn unauthorized(message: &'static str, challenge: &'static str) -> Response {
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        field: Some(Cow::Borrowed("authorization")),
        message: message.to_string(),
    }
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "test-token-0123456789abcdef";

    #[test]
    fn token_rule_rejects_short_and_odd_tokens() {
        for bad in [
            "short",
            "with space 0123456789",
            "tab\t0123456789abcdef",
            "================",
        ] {
            let error = AuthToken::new(bad).expect_err(bad);
            assert!(
                !error.contains(bad),
                "the message quotes the token: {error}"
            );
        }
        assert!(
            AuthToken::new("YWJjZGVmZ2hpamtsbW5vcA==").is_ok(),
            "base64 with padding"
        );
    }

    #[test]
    fn debug_never_shows_token() {
        let token = AuthToken::new(TOKEN).expect("valid token");
        let access = Access {
            token: Some(token),
            protect_metrics: false,
        };

        let shown = format!("{access:?}");
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn bearer_header_is_parsed() {
        let header = |text: &'static str| HeaderValue::from_static(text);

        assert_eq!(bearer(Some(&header("Bearer abc"))), Some("abc"));
        assert_eq!(bearer(Some(&header("bearer  abc"))), Some("abc"));
        assert_eq!(bearer(Some(&header("Basic abc"))), None);
        assert_eq!(bearer(Some(&header("Bearer"))), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn open_routes_need_token_only_when_protected() {
        let token = AuthToken::new(TOKEN).ok();
        let open = Access {
            token: token.clone(),
            protect_metrics: false,
        };
        let protected = Access {
            token,
            protect_metrics: true,
        };

        assert!(!open.requires_token("/metrics"));
        assert!(open.requires_token("/v1/keys/a"));
        assert!(open.requires_token("/unknown"));
        assert!(protected.requires_token("/healthz"));
    }

    #[test]
    fn token_file_trims_one_newline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("token");

        std::fs::write(&path, format!("{TOKEN}\r\n")).expect("write");
        let token = AuthToken::from_file(&path).expect("token with CRLF");
        assert!(token.matches(TOKEN));

        std::fs::write(&path, "").expect("write");
        let error = format!("{:#}", AuthToken::from_file(&path).unwrap_err());
        assert!(error.contains("is empty"), "{error}");

        std::fs::write(&path, "\n").expect("write");
        let error = format!("{:#}", AuthToken::from_file(&path).unwrap_err());
        assert!(error.contains("is empty"), "{error}");
    }
}
