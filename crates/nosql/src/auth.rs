//! Who is calling, and the access rule every call follows (mirrors Go
//! `common/access_util.go`): the caller needs some tag (Resolve or any other) on every ancestor
//! of the object and the call's tag on the object itself.
//!
//! Refusals are honest without leaking: a caller who cannot see the object (no tag on it, or on
//! some ancestor) gets the error for a missing object (`nosql.no_exist`), so it cannot learn
//! what exists; a caller who sees it and lacks the call's tag gets `nosql.no_access`.
//!
//! No object can be locked forever: Admin on the service is Admin on everything below it,
//! reached whatever the lists on the way say ([`Walk::manage`]). Admin only lets a caller read
//! and replace permissions and destroy objects, so this grants no access to rows.

use syncbase_wire::{Permissions, Tag};

use crate::error::{Error, Result};

/// An authenticated caller, named by its certificate chain (`alice:laptop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    name: String,
}

impl Caller {
    /// A caller named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// The full name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root of the name (`alice` for `alice:laptop`): objects it creates without explicit
    /// permissions grant every tag to this root.
    pub fn root(&self) -> &str {
        self.name.split(':').next().unwrap_or(&self.name)
    }

    /// The permissions an object created by this caller gets by default.
    pub fn default_permissions(&self) -> Permissions {
        Permissions::all_tags_to(self.root())
    }
}

/// What a call needs on an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any tag: enough to resolve through it or to ask whether it exists.
    Any,
    /// This tag.
    Tag(Tag),
}

/// Checks `need` on an object with `permissions`; `what` names it in the error. The caller has
/// already passed every ancestor.
pub(crate) fn check(
    caller: &Caller,
    permissions: &Permissions,
    need: Need,
    what: impl std::fmt::Display,
) -> Result<()> {
    if !permissions.grants_any(caller.name()) {
        return Err(Error::no_exist(what));
    }
    match need {
        Need::Any => Ok(()),
        Need::Tag(tag) if permissions.grants(tag, caller.name()) => Ok(()),
        Need::Tag(tag) => Err(Error::no_access(what, tag)),
    }
}

/// One call's way from the service down to its object: the caller, and whether it goes as an
/// admin of the service managing what is below, whom no list on the way stops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk<'c> {
    caller: &'c Caller,
    as_service_admin: bool,
}

impl<'c> Walk<'c> {
    /// Who walks.
    pub(crate) fn caller(&self) -> &'c Caller {
        self.caller
    }

    /// A call on data or children: every list on the way applies.
    pub(crate) fn new(caller: &'c Caller) -> Self {
        Self {
            caller,
            as_service_admin: false,
        }
    }

    /// A call that needs Admin on its object (reading or replacing permissions, destroying):
    /// an admin of the service, whose permissions are `service`, passes every check on the way.
    pub(crate) fn manage(caller: &'c Caller, service: &Permissions) -> Self {
        Self {
            caller,
            as_service_admin: service.grants(Tag::Admin, caller.name()),
        }
    }

    /// Sync's own access to a database it serves (no client caller): no list on the way stops
    /// it; what a peer may read is checked separately, against the peer's name.
    pub(crate) fn internal(caller: &'c Caller) -> Self {
        Self {
            caller,
            as_service_admin: true,
        }
    }

    /// Checks `need` on one object of the way ([`Need::Any`] on an ancestor).
    pub(crate) fn check(
        &self,
        permissions: &Permissions,
        need: Need,
        what: impl std::fmt::Display,
    ) -> Result<()> {
        if self.as_service_admin {
            return Ok(());
        }
        check(self.caller, permissions, need, what)
    }
}
