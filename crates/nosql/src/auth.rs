//! Who is calling, and the access rule every call follows (mirrors Go
//! `common/access_util.go`): the caller needs some tag (Resolve or any other) on every ancestor
//! of the object and the call's tag on the object itself. A caller refused anywhere gets the
//! same error as for a missing object, so it cannot learn what exists.

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

/// Checks `need` on an object with `permissions`; `what` names it in the error.
pub(crate) fn check(
    caller: &Caller,
    permissions: &Permissions,
    need: Need,
    what: impl std::fmt::Display,
) -> Result<()> {
    let allowed = match need {
        Need::Any => permissions.grants_any(caller.name()),
        Need::Tag(tag) => permissions.grants(tag, caller.name()),
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::no_exist(what))
    }
}
