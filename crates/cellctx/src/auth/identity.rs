//! [`Identity`]: who a verified credential says the request is from.

use crate::cell_id::CellId;
use crate::context::validate_token;
use crate::error::InvalidValue;
use crate::token::Token;

/// Who a verified credential says the request is from.
///
/// At the edge it decides the context: `user` becomes the authenticated user
/// (`X-Auth-User`) and the routing key (`X-User-ID`), `tenant` the tenant, and
/// `home_region`, when registered, the region hint (the client's own hint is
/// then dropped). A `region_pinned` user (compliance) never routes by a
/// client's hint, with or without a home region. Handlers find it as a request
/// extension `Arc<Identity>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The user (a token).
    pub user: Token,
    /// The tenant, if the credential names one.
    pub tenant: Option<Token>,
    /// The user's registered home region, if any.
    pub home_region: Option<CellId>,
    /// Whether the user's region is pinned by compliance (never chosen by a client hint).
    pub region_pinned: bool,
}

impl Identity {
    /// An identity for `user` (validated as a token: 1 to 128 visible ASCII
    /// bytes without spaces, `,` or `;`), no tenant, no home region.
    pub fn try_new(user: &str) -> Result<Self, InvalidValue> {
        Ok(Identity { user: token(user)?, tenant: None, home_region: None, region_pinned: false })
    }

    /// Sets the tenant (validated as a token).
    pub fn with_tenant(mut self, tenant: &str) -> Result<Self, InvalidValue> {
        self.tenant = Some(token(tenant)?);
        Ok(self)
    }

    /// Sets the registered home region.
    pub fn with_home_region(mut self, region: CellId) -> Self {
        self.home_region = Some(region);
        self
    }

    /// Marks the user's region as pinned by compliance.
    pub fn with_region_pinned(mut self, pinned: bool) -> Self {
        self.region_pinned = pinned;
        self
    }
}

fn token(s: &str) -> Result<Token, InvalidValue> {
    validate_token(s)?;
    Ok(Token::new(s)?.marked(Token::TOKEN))
}
