//! Who is calling and what they may do. One policy decides every call:
//!
//! - [`identity`]: the caller's identity, from its client certificate (mTLS) or its bearer
//!   token (JWT), never from a request body ([`Caller`]);
//! - [`layer`]: the tower layer in front of every gRPC service that authenticates the call,
//!   checks the method's [`Permission`] against the role table of `[auth.roles]`, puts the
//!   [`Caller`] into the request, and refuses (`UNAUTHENTICATED`, `PERMISSION_DENIED`) with an
//!   audit record and a metric;
//! - this file: the permissions and which method needs which ([`need_of`]), the role
//!   table ([`Policy`]), and the hall scope every handler asks of [`Access`] (a window reaches
//!   only its own hall's cases), which audits each read of personal data and each refusal;
//! - [`tls`]: the listeners' TLS material, loaded and checked at start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tonic::Status;
use tracing::warn;

use crate::config::{AuthConfig, Scope};
use crate::store::{AccessRecord, Store};

pub mod identity;
pub mod layer;
pub mod tls;

pub use identity::{Authenticator, IdentityError};
pub use layer::{PolicyLayer, identify, identify_parts};

/// An authenticated caller, put into each request's extensions by [`PolicyLayer`].
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

impl Caller {
    /// The identity of every caller of a gateway started with `[development] plaintext`.
    pub fn development() -> Caller {
        Caller {
            name: "development".into(),
            role: DEVELOPMENT_ROLE.into(),
            hall: None,
            window: None,
        }
    }
}

/// The role of [`Caller::development`]: every permission, every hall.
pub const DEVELOPMENT_ROLE: &str = "development";

/// What a call may do. The names are those of `[auth.roles]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// `PreCheck`.
    Check,
    /// `Submit`.
    Submit,
    /// `GetCase`, `ListCases`, `WatchCase`, `ListNotAccepted`: a case (or a submission not
    /// accepted) with its applicant's personal data.
    Read,
    /// `WindowFeed`.
    Feed,
    /// `Supplement`.
    Supplement,
    /// `Deliver`.
    Deliver,
    /// `Evaluate` (好差评).
    Evaluate,
    /// `AdminService` reads and server reflection.
    AdminRead,
    /// Dead-letter replay and purge, closing a rectification.
    AdminWrite,
    /// One field of an applicant's personal data shown unmasked in the operations console
    /// (each time audited).
    Unmask,
    /// `HotlineService`: the 12345 hotline's work orders (a progress answer is a read of
    /// personal data, audited; `crate::hotline`).
    HotlineOrders,
    /// `AdminService/ReplyComplaint`: closing a 12345 complaint with the reply sent back.
    HotlineReply,
}

impl Permission {
    pub const ALL: [Permission; 12] = [
        Permission::Check,
        Permission::Submit,
        Permission::Read,
        Permission::Feed,
        Permission::Supplement,
        Permission::Deliver,
        Permission::Evaluate,
        Permission::AdminRead,
        Permission::AdminWrite,
        Permission::Unmask,
        Permission::HotlineOrders,
        Permission::HotlineReply,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::Check => "cases.check",
            Permission::Submit => "cases.submit",
            Permission::Read => "cases.read",
            Permission::Feed => "cases.feed",
            Permission::Supplement => "cases.supplement",
            Permission::Deliver => "cases.deliver",
            Permission::Evaluate => "cases.evaluate",
            Permission::AdminRead => "admin.read",
            Permission::AdminWrite => "admin.write",
            Permission::Unmask => "cases.unmask",
            Permission::HotlineOrders => "hotline.orders",
            Permission::HotlineReply => "hotline.reply",
        }
    }

    fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// What a gRPC path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The health checks: open to probes, no identity.
    Nothing,
    /// An identity whose role has this permission.
    Permission(Permission),
    /// A path the gateway does not serve: an identity, then `UNIMPLEMENTED`.
    Identity,
    /// A page of the operations console (`/console…`), which identifies its caller itself
    /// (the same identities, plus a signed-in token in a cookie) and answers in HTML
    /// ([`crate::console`]).
    Page,
    /// A page of the public item guide (`/guide…`): no identity, and never personal data
    /// ([`crate::guide`]).
    Public,
}

/// What the gRPC `path` needs: the one list of the methods the gateway serves (metrics count
/// any other path as `other`, [`crate::observe`]).
pub fn need_of(path: &str) -> Need {
    use Permission::*;
    if path == "/console" || path.starts_with("/console/") {
        return Need::Page;
    }
    if path == "/guide" || path.starts_with("/guide/") {
        return Need::Public;
    }
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Need::Identity;
    };
    Need::Permission(match (service, method) {
        ("grpc.health.v1.Health", "Check" | "Watch" | "List") => return Need::Nothing,
        ("yichuang.v1.CaseService", "PreCheck") => Check,
        ("yichuang.v1.CaseService", "Submit") => Submit,
        ("yichuang.v1.CaseService", "GetCase" | "ListCases" | "WatchCase" | "ListNotAccepted") => {
            Read
        }
        ("yichuang.v1.CaseService", "WindowFeed") => Feed,
        ("yichuang.v1.CaseService", "Supplement") => Supplement,
        ("yichuang.v1.CaseService", "Deliver") => Deliver,
        ("yichuang.v1.CaseService", "Evaluate") => Evaluate,
        ("yichuang.v1.HotlineService", "Progress" | "Complain" | "Consult") => HotlineOrders,
        (
            "yichuang.v1.AdminService",
            "Status" | "OnTimeRates" | "ListDeadLetters" | "ShowDeadLetter" | "AccessLog"
            | "HotlineOrders",
        ) => AdminRead,
        (
            "yichuang.v1.AdminService",
            "ReplayDeadLetters" | "PurgeDeadLetters" | "CloseRectification",
        ) => AdminWrite,
        ("yichuang.v1.AdminService", "ReplyComplaint") => HotlineReply,
        (
            "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection",
            "ServerReflectionInfo",
        ) => AdminRead,
        _ => return Need::Identity,
    })
}

/// The label every path the gateway does not serve is counted and recorded under.
pub const OTHER: &str = "other";

/// `/pkg.Service/Method` → (`Service` short name, `Method`); (`other`, `other`) for a path the
/// gateway does not serve, so that a client trying paths cannot mint metric series without
/// bound ([`crate::observe`]).
pub fn method_of(path: &str) -> (String, String) {
    match need_of(path) {
        Need::Identity => return (OTHER.to_string(), OTHER.to_string()),
        // Every page counts as one: its path carries case numbers and ids.
        Need::Page => return ("Console".to_string(), "page".to_string()),
        // Likewise every guide page (its path carries an item code anyone can type).
        Need::Public => return ("Guide".to_string(), "page".to_string()),
        Need::Nothing | Need::Permission(_) => {}
    }
    let trimmed = path.trim_start_matches('/');
    let (service, method) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    let short = service.rsplit('.').next().unwrap_or(service);
    (short.to_string(), method.to_string())
}

/// `Service/Method`, the name audit records use; `other` for a path the gateway does not serve.
pub fn method_name(path: &str) -> String {
    match method_of(path) {
        (service, _) if service == OTHER => OTHER.to_string(),
        (service, method) => format!("{service}/{method}"),
    }
}

/// A role as the policy holds it.
#[derive(Debug, Clone)]
pub struct Role {
    pub permissions: BTreeSet<Permission>,
    pub scope: Scope,
}

/// The role → permission table of `[auth.roles]`.
#[derive(Debug, Clone)]
pub struct Policy {
    roles: BTreeMap<String, Role>,
}

impl Policy {
    /// The table of `config`; an unknown permission name is refused, naming the role.
    pub fn new(config: &AuthConfig) -> Result<Policy, String> {
        let mut roles = BTreeMap::new();
        for (name, role) in &config.roles {
            if name == DEVELOPMENT_ROLE {
                return Err(format!(
                    "[auth.roles.{name}]: the name {DEVELOPMENT_ROLE:?} is reserved for [development] plaintext"
                ));
            }
            let mut permissions = BTreeSet::new();
            for p in &role.permissions {
                permissions.insert(Permission::parse(p).ok_or_else(|| {
                    format!(
                        "[auth.roles.{name}] permissions: unknown permission {p:?}; known: {}",
                        Permission::ALL.map(Permission::name).join(", ")
                    )
                })?);
            }
            roles.insert(
                name.clone(),
                Role {
                    permissions,
                    scope: role.scope,
                },
            );
        }
        roles.insert(
            DEVELOPMENT_ROLE.into(),
            Role {
                permissions: Permission::ALL.into_iter().collect(),
                scope: Scope::All,
            },
        );
        Ok(Policy { roles })
    }

    /// Whether `caller` may do what `permission` names: `Ok` or the refusal.
    pub fn allows(&self, caller: &Caller, permission: Permission) -> Result<(), Refusal> {
        let role = self.roles.get(&caller.role).ok_or_else(|| {
            Refusal::Unauthenticated(format!(
                "role {:?} is not in [auth.roles]; ask the gateway's operators to give {} a known role",
                caller.role, caller.name
            ))
        })?;
        if role.scope == Scope::Hall && caller.hall.is_none() {
            return Err(Refusal::Unauthenticated(format!(
                "{} has role {:?}, which is limited to a hall, but its identity names none; issue its certificate or token with a hall",
                caller.name, caller.role
            )));
        }
        if !role.permissions.contains(&permission) {
            return Err(Refusal::Denied(format!(
                "{} (role {}) may not {}: the role lacks the permission",
                caller.name,
                caller.role,
                permission.name()
            )));
        }
        Ok(())
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No identity, or one that cannot be used.
    Unauthenticated(String),
    /// An identity that may not do this.
    Denied(String),
}

impl Refusal {
    pub fn status(&self) -> Status {
        match self {
            Refusal::Unauthenticated(m) => Status::unauthenticated(m.clone()),
            Refusal::Denied(m) => Status::permission_denied(m.clone()),
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Refusal::Unauthenticated(m) | Refusal::Denied(m) => m,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated(_) => "unauthenticated",
            Refusal::Denied(_) => "denied",
        }
    }
}

/// Writes audit records and counts refusals. Shared by the policy layer and the handlers.
#[derive(Clone)]
pub struct Auditor {
    store: Store,
}

impl Auditor {
    pub fn new(store: Store) -> Auditor {
        Auditor { store }
    }

    /// Records a refusal and counts it; the refusal is answered whether or not the record
    /// could be written (a failure to write is logged).
    pub async fn refused(
        &self,
        caller: Option<&Caller>,
        method: &str,
        target: &str,
        refusal: &Refusal,
    ) {
        crate::metrics::meters()
            .auth_refusals
            .get_or_create(&crate::metrics::RefusalLabels {
                method: method.to_string(),
                reason: refusal.label().to_string(),
            })
            .inc();
        let record = self.record(caller, method, "refused", target, refusal.reason());
        warn!(
            target: "audit",
            caller = %record.caller,
            role = %record.role,
            hall = %record.hall,
            method = %method,
            target_ = %record.target,
            reason = %record.reason,
            "call refused"
        );
        if let Err(e) = self.store.record_access(record).await {
            warn!(error = %e, method = %method, "the audit record of a refused call could not be written");
        }
    }

    /// Records that `caller` read the cases `target` names. Fails closed: when the record
    /// cannot be written, the caller gets `UNAVAILABLE` and not the data.
    pub async fn read(&self, caller: &Caller, method: &str, target: String) -> Result<(), Status> {
        let record = self.record(Some(caller), method, "read", &target, "");
        self.store.record_access(record).await.map_err(|e| {
            warn!(error = %e, method = %method, "the audit record of a read could not be written; nothing returned");
            Status::unavailable(
                "the audit record of this read could not be written, so nothing is returned; retry later",
            )
        })
    }

    /// [`Auditor::read`] with a note of why (e.g. the 12345 work order the read answered),
    /// recorded as the record's reason.
    pub async fn read_noting(
        &self,
        caller: &Caller,
        method: &str,
        target: String,
        note: &str,
    ) -> Result<(), Status> {
        let record = self.record(Some(caller), method, "read", &target, note);
        self.store.record_access(record).await.map_err(|e| {
            warn!(error = %e, method = %method, "the audit record of a read could not be written; nothing returned");
            Status::unavailable(
                "the audit record of this read could not be written, so nothing is returned; retry later",
            )
        })
    }

    fn record(
        &self,
        caller: Option<&Caller>,
        method: &str,
        outcome: &str,
        target: &str,
        reason: &str,
    ) -> AccessRecord {
        AccessRecord {
            at_ms: chrono::Utc::now().timestamp_millis(),
            caller: caller.map_or("-".into(), |c| c.name.clone()),
            role: caller.map_or("-".into(), |c| c.role.clone()),
            hall: caller.and_then(|c| c.hall.clone()).unwrap_or_default(),
            method: method.to_string(),
            outcome: outcome.to_string(),
            target: crate::privacy::mask_free_text(target),
            reason: crate::privacy::mask_free_text(reason),
        }
    }
}

/// A call's caller and the checks of its hall scope, every one audited when it refuses.
/// Handlers take it from the request with [`Access::of`].
pub struct Access {
    pub caller: Caller,
    method: String,
    auditor: Auditor,
}

impl Access {
    /// The access of a request that passed [`PolicyLayer`]. A request that did not (a handler
    /// called outside the server) has no caller and is refused.
    pub fn of<T>(
        request: &tonic::Request<T>,
        auditor: &Auditor,
        method: &str,
    ) -> Result<Access, Status> {
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no authenticated caller: the call did not pass the gateway's policy layer",
                )
            })?;
        Ok(Access {
            caller,
            method: method.to_string(),
            auditor: auditor.clone(),
        })
    }

    /// The hall a call acts in. A body naming no hall acts in the caller's own; one naming
    /// another hall than the caller's is refused. A caller over every hall gets what it named
    /// (`None` when it named none).
    pub async fn hall(&self, named: &str) -> Result<Option<String>, Status> {
        let named = named.trim();
        match &self.caller.hall {
            None => Ok(Some(named.to_string()).filter(|h| !h.is_empty())),
            Some(own) if named.is_empty() || named == own => Ok(Some(own.clone())),
            Some(own) => Err(self
                .refuse(
                    &format!("hallCode {named}"),
                    format!(
                        "hallCode: {named} is not the hall of {} ({own}); a window acts only in its own hall",
                        self.caller.name
                    ),
                )
                .await),
        }
    }

    /// The window a call acts at, for a caller that is one window's system: a body naming no
    /// window acts at the caller's; one naming another window is refused.
    pub async fn window(&self, named: &str) -> Result<Option<String>, Status> {
        let named = named.trim();
        match &self.caller.window {
            None => Ok(Some(named.to_string()).filter(|w| !w.is_empty())),
            Some(own) if named.is_empty() || named == own => Ok(Some(own.clone())),
            Some(own) => Err(self
                .refuse(
                    &format!("windowCode {named}"),
                    format!(
                        "windowCode: {named} is not the window of {} ({own})",
                        self.caller.name
                    ),
                )
                .await),
        }
    }

    /// Whether the caller reaches the case accepted in `hall`.
    pub async fn case(&self, case_number: &str, hall: &str) -> Result<(), Status> {
        match &self.caller.hall {
            Some(own) if own != hall => Err(self
                .refuse(
                    case_number,
                    format!(
                        "caseNumber: case {case_number} belongs to another hall than {own}, the hall of {}; a window reaches only its own hall's cases",
                        self.caller.name
                    ),
                )
                .await),
            _ => Ok(()),
        }
    }

    /// Records that the caller read the cases named in `target` (fails closed).
    pub async fn read(&self, target: String) -> Result<(), Status> {
        self.auditor.read(&self.caller, &self.method, target).await
    }

    async fn refuse(&self, target: &str, reason: String) -> Status {
        let refusal = Refusal::Denied(reason);
        self.auditor
            .refused(Some(&self.caller), &self.method, target, &refusal)
            .await;
        refusal.status()
    }
}

/// The policy, the authenticator and the auditor, built once at start.
#[derive(Clone)]
pub struct Guard {
    pub policy: Arc<Policy>,
    pub authenticator: Arc<Authenticator>,
    pub auditor: Auditor,
    /// `[development] plaintext`: every caller is [`Caller::development`] unless it brings a
    /// token.
    pub development: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: &str, hall: Option<&str>) -> Caller {
        Caller {
            name: "c".into(),
            role: role.into(),
            hall: hall.map(str::to_string),
            window: None,
        }
    }

    #[test]
    fn every_served_method_needs_a_permission_and_health_needs_none() {
        assert_eq!(need_of("/grpc.health.v1.Health/Check"), Need::Nothing);
        assert_eq!(
            need_of("/yichuang.v1.CaseService/Submit"),
            Need::Permission(Permission::Submit)
        );
        assert_eq!(
            need_of("/yichuang.v1.AdminService/PurgeDeadLetters"),
            Need::Permission(Permission::AdminWrite)
        );
        assert_eq!(need_of("/x.Y/Z"), Need::Identity);
        assert_eq!(need_of("/guide"), Need::Public);
        assert_eq!(need_of("/guide/QY-SL/qr.svg"), Need::Public);
        assert_eq!(need_of("/guidex"), Need::Identity);
        assert_eq!(method_name("/x.Y/Z"), "other");
        assert_eq!(
            method_name("/yichuang.v1.CaseService/GetCase"),
            "CaseService/GetCase"
        );
    }

    #[test]
    fn the_shipped_roles_allow_what_each_user_does_and_nothing_more() {
        let policy = Policy::new(&AuthConfig::default()).unwrap();
        let window = caller("window", Some("640100-DT01"));
        assert!(policy.allows(&window, Permission::Submit).is_ok());
        assert!(matches!(
            policy.allows(&window, Permission::AdminRead),
            Err(Refusal::Denied(_))
        ));
        let platform = caller("platform", None);
        assert!(policy.allows(&platform, Permission::Feed).is_ok());
        assert!(matches!(
            policy.allows(&platform, Permission::Submit),
            Err(Refusal::Denied(_))
        ));
        // The 12345 hotline asks about any hall's case, and reads no case otherwise.
        let hotline = caller("hotline", None);
        assert!(policy.allows(&hotline, Permission::HotlineOrders).is_ok());
        assert!(matches!(
            policy.allows(&hotline, Permission::Read),
            Err(Refusal::Denied(_))
        ));
        assert!(matches!(
            policy.allows(&window, Permission::HotlineOrders),
            Err(Refusal::Denied(_))
        ));
        assert_eq!(
            need_of("/yichuang.v1.HotlineService/Progress"),
            Need::Permission(Permission::HotlineOrders)
        );
        // A hall-scoped role whose identity names no hall would reach every hall: refused.
        assert!(matches!(
            policy.allows(&caller("window", None), Permission::Read),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            policy.allows(&caller("nobody", None), Permission::Read),
            Err(Refusal::Unauthenticated(_))
        ));
    }

    #[test]
    fn an_unknown_permission_in_the_config_is_refused_naming_the_role() {
        let mut config = AuthConfig::default();
        config
            .roles
            .get_mut("window")
            .unwrap()
            .permissions
            .push("cases.everything".into());
        let e = Policy::new(&config).unwrap_err();
        assert!(
            e.contains("[auth.roles.window]") && e.contains("cases.everything"),
            "{e}"
        );
    }
}
