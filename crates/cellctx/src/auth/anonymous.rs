//! [`AnonymousRoutes`]: the routes that may go without a credential.

use http::{Method, Uri};

use crate::error::ContextError;

/// One route that may go without a credential: a method (or any) and a path,
/// matched exactly or as a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonymousRoute {
    method: Option<Method>,
    path: String,
    prefix: bool,
}

impl AnonymousRoute {
    /// `method` (`None`: any) on exactly `path`.
    pub fn exact(method: Option<Method>, path: &str) -> Result<Self, ContextError> {
        Self::try_new(method, path, false)
    }

    /// `method` (`None`: any) on every path starting with `prefix` (end it with
    /// `/` to match whole segments: `/public/` matches `/public/a`, not `/publicity`).
    pub fn prefix(method: Option<Method>, prefix: &str) -> Result<Self, ContextError> {
        Self::try_new(method, prefix, true)
    }

    fn try_new(method: Option<Method>, path: &str, prefix: bool) -> Result<Self, ContextError> {
        if !path.starts_with('/') || !is_plain(path) {
            return Err(ContextError::InvalidAuthConfig(format!(
                "anonymous route {path:?}: must start with '/' and hold no dot segments, '//', '\\\\' or '%'"
            )));
        }
        Ok(AnonymousRoute { method, path: path.to_owned(), prefix })
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && if self.prefix { path.starts_with(&self.path) } else { path == self.path }
    }
}

/// The routes that may go without a credential (public reads), empty by default.
///
/// A request on one of them without a credential goes on anonymous: no user,
/// no tenant, no routing key (so a cell router serves it by its unkeyed
/// policy, the local cell by default) and the client's region hint, if any.
/// A request on one of them *with* a credential is authenticated as anywhere
/// else: a bad credential is still a 401 (Envoy's `allow_missing`).
///
/// A path holding a dot segment (`/.`, `/..`), an empty segment (`//`), a
/// backslash or a percent-encoded `.`, `/` or `\` never matches: what the
/// application's router would make of it is not what the allow-list says.
///
/// ```
/// use cellctx::auth::{AnonymousRoute, AnonymousRoutes};
/// use http::{Method, Uri};
///
/// let routes = AnonymousRoutes::new()
///     .with(AnonymousRoute::prefix(Some(Method::GET), "/public/").unwrap())
///     .with(AnonymousRoute::exact(None, "/healthz").unwrap());
/// assert!(routes.matches(&Method::GET, &Uri::from_static("/public/posts?page=2")));
/// assert!(!routes.matches(&Method::POST, &Uri::from_static("/public/posts")));
/// assert!(!routes.matches(&Method::GET, &Uri::from_static("/public/../admin")));
/// assert!(routes.matches(&Method::HEAD, &Uri::from_static("/healthz")));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnonymousRoutes {
    routes: Vec<AnonymousRoute>,
}

impl AnonymousRoutes {
    /// No anonymous routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route.
    pub fn with(mut self, route: AnonymousRoute) -> Self {
        self.routes.push(route);
        self
    }

    /// Whether a request with this method and URI may go without a credential.
    pub fn matches(&self, method: &Method, uri: &Uri) -> bool {
        let path = uri.path();
        !self.routes.is_empty() && is_plain(path) && self.routes.iter().any(|r| r.matches(method, path))
    }
}

/// No dot or empty segments, backslashes or encoded `.`, `/`, `\`.
fn is_plain(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    if lower.contains('\\') || lower.contains("//") || ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e)) {
        return false;
    }
    !lower.split('/').any(|seg| seg == "." || seg == "..")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn traversal_and_encoded_paths_never_match() {
        let routes = AnonymousRoutes::new().with(AnonymousRoute::prefix(None, "/public/").unwrap());
        for bad in ["/public/./x", "/public/../admin", "/public//x", "/public/%2e%2e/admin", "/public/a%2Fb", "/public/.."] {
            assert!(!routes.matches(&Method::GET, &bad.parse::<Uri>().unwrap()), "{bad}");
        }
        assert!(routes.matches(&Method::GET, &"/public/a.b/c".parse::<Uri>().unwrap()));
        assert!(AnonymousRoute::prefix(None, "public").is_err());
        assert!(AnonymousRoute::exact(None, "/a/../b").is_err());
    }
}
