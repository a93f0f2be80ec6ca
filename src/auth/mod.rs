//! Who is calling and what they may do: the caller's identity, taken from its client
//! certificate or bearer token and never from a request body ([`Caller`]).

/// An authenticated caller, put into each request's extensions by the gateway's policy layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its name: the certificate's common name or the token's `sub`.
    pub name: String,
    /// Its role, a key of `[auth.roles]`.
    pub role: String,
    /// The hall it belongs to; `None` for a role that reaches every hall.
    pub hall: Option<String>,
    /// Its window within the hall, when it is one window's system.
    pub window: Option<String>,
}
