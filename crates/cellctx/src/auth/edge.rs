//! [`EdgeAuth`]: authentication as the edge layer runs it.

use std::fmt;
use std::sync::Arc;

use super::{AnonymousRoutes, Authenticator, Identity, RequestHead};
use crate::error::AuthFailure;

/// What an edge [`CellContextLayer`](crate::CellContextLayer) authenticates
/// with: an [`Authenticator`] and the [`AnonymousRoutes`].
///
/// See [`CellContextLayer::with_authentication`](crate::CellContextLayer::with_authentication)
/// for what the layer does with the outcome.
#[derive(Clone)]
pub struct EdgeAuth {
    authenticator: Arc<dyn Authenticator>,
    anonymous: AnonymousRoutes,
}

impl EdgeAuth {
    /// Authenticates every request with `authenticator`; no anonymous routes.
    pub fn new(authenticator: impl Authenticator) -> Self {
        EdgeAuth { authenticator: Arc::new(authenticator), anonymous: AnonymousRoutes::new() }
    }

    /// These routes may go without a credential.
    pub fn with_anonymous(mut self, routes: AnonymousRoutes) -> Self {
        self.anonymous = routes;
        self
    }

    /// The identity of the request, `None` for an anonymous request on an
    /// anonymous route, or why it is refused.
    pub fn authenticate(&self, head: &RequestHead<'_>) -> Result<Option<Identity>, AuthFailure> {
        match self.authenticator.authenticate(head)? {
            Some(identity) => Ok(Some(identity)),
            None if self.anonymous.matches(head.method, head.uri) => Ok(None),
            None => Err(AuthFailure::Missing),
        }
    }
}

impl fmt::Debug for EdgeAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeAuth").field("anonymous", &self.anonymous).finish_non_exhaustive()
    }
}
