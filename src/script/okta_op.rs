//! The `okta::` functions' arguments: a user or group as a script gives it, into an [`OktaOp`]
//! (what an `okta` action stores) or the key a read asks for; and [`OktaGroup`], what the reads
//! return.
//!
//! A user is an Okta user id, a login/email, a `lookup_user` map (its `id`, else its `login`)
//! or an actor/target map of type `User` (its `id`, else its `alternateId`). A group is a
//! group id, a group name, a `UserGroup` target map or a map `okta::get_group` returned (its
//! `id`). Nothing here talks to Okta: the client resolves logins and names when it carries the
//! operation out.

use rhai::{Dynamic, ImmutableString, Map};
use serde::{Deserialize, Serialize};

/// Longest user or group reference accepted: Okta logins are at most 100 characters, ids 20;
/// a group name at most 255.
pub const MAX_OKTA_REF_LEN: usize = 1024;
/// Profile attributes one `update_profile` may set: Okta's profile schema has far fewer custom
/// attributes than this in practice.
pub const MAX_PROFILE_FIELDS: usize = 100;

/// What an `okta` action asks Okta to do. Serialized (`{"op": "suspend_user", "user": …}`) into
/// the action queue; `user` and `group` are kept as the script gave them and resolved to ids
/// when the operation is carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OktaOp {
    SuspendUser {
        user: String,
    },
    UnsuspendUser {
        user: String,
    },
    /// Never deletes: a user already `DEPROVISIONED` is left as it is (done).
    DeactivateUser {
        user: String,
    },
    ClearSessions {
        user: String,
    },
    ExpirePassword {
        user: String,
    },
    AddToGroup {
        user: String,
        group: GroupRef,
    },
    RemoveFromGroup {
        user: String,
        group: GroupRef,
    },
    /// A partial profile update: only these attributes change.
    UpdateProfile {
        user: String,
        profile: serde_json::Map<String, serde_json::Value>,
    },
}

/// A group by id, or by its exact name (resolved with `GET /api/v1/groups?q=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupRef {
    Id(String),
    Name(String),
}

impl GroupRef {
    /// The id or the name, as given.
    pub fn as_str(&self) -> &str {
        match self {
            GroupRef::Id(s) | GroupRef::Name(s) => s,
        }
    }
}

impl OktaOp {
    /// The function that records it (`suspend_user`), as scripts and dry runs name it.
    pub fn name(&self) -> &'static str {
        match self {
            OktaOp::SuspendUser { .. } => "suspend_user",
            OktaOp::UnsuspendUser { .. } => "unsuspend_user",
            OktaOp::DeactivateUser { .. } => "deactivate_user",
            OktaOp::ClearSessions { .. } => "clear_sessions",
            OktaOp::ExpirePassword { .. } => "expire_password",
            OktaOp::AddToGroup { .. } => "add_to_group",
            OktaOp::RemoveFromGroup { .. } => "remove_from_group",
            OktaOp::UpdateProfile { .. } => "update_profile",
        }
    }

    /// The user it acts on, as given.
    pub fn user(&self) -> &str {
        match self {
            OktaOp::SuspendUser { user }
            | OktaOp::UnsuspendUser { user }
            | OktaOp::DeactivateUser { user }
            | OktaOp::ClearSessions { user }
            | OktaOp::ExpirePassword { user }
            | OktaOp::AddToGroup { user, .. }
            | OktaOp::RemoveFromGroup { user, .. }
            | OktaOp::UpdateProfile { user, .. } => user,
        }
    }

    /// One line for dry runs and `engine actions`: `suspend_user jane@example.com`,
    /// `add_to_group jane@example.com → group "Admins"`.
    pub fn describe(&self) -> String {
        let base = format!("okta::{} {}", self.name(), self.user());
        match self {
            OktaOp::AddToGroup { group, .. } | OktaOp::RemoveFromGroup { group, .. } => match group
            {
                GroupRef::Id(id) => format!("{base} group {id}"),
                GroupRef::Name(n) => format!("{base} group {n:?}"),
            },
            OktaOp::UpdateProfile { profile, .. } => {
                let keys: Vec<&str> = profile.keys().map(String::as_str).collect();
                format!("{base} profile {{{}}}", keys.join(", "))
            }
            _ => base,
        }
    }

    /// The operation `function(user, …)` records, from the script's arguments (`extra`: the
    /// group or the profile map for the functions that take one).
    pub fn from_args(
        function: &str,
        user: &Dynamic,
        extra: Option<&Dynamic>,
    ) -> Result<OktaOp, String> {
        let u = user_ref(user).map_err(|e| format!("okta::{function}: {e}"))?;
        let need =
            |what: &str| extra.ok_or_else(|| format!("okta::{function}: {what} is required"));
        let op = match function {
            "suspend_user" => OktaOp::SuspendUser { user: u },
            "unsuspend_user" => OktaOp::UnsuspendUser { user: u },
            "deactivate_user" => OktaOp::DeactivateUser { user: u },
            "clear_sessions" => OktaOp::ClearSessions { user: u },
            "expire_password" => OktaOp::ExpirePassword { user: u },
            "add_to_group" | "remove_from_group" => {
                let group =
                    group_ref(need("the group")?).map_err(|e| format!("okta::{function}: {e}"))?;
                if function == "add_to_group" {
                    OktaOp::AddToGroup { user: u, group }
                } else {
                    OktaOp::RemoveFromGroup { user: u, group }
                }
            }
            "update_profile" => OktaOp::UpdateProfile {
                user: u,
                profile: profile(need("the profile map")?)
                    .map_err(|e| format!("okta::{function}: {e}"))?,
            },
            other => return Err(format!("okta::{other} is not an Okta operation")),
        };
        Ok(op)
    }
}

/// Whether `s` has the shape of an Okta object id with this prefix (`00u` users, `00g`
/// groups): 20 characters, letters and digits. Okta ids are opaque; this shape is what every
/// org's ids have, and anything else is taken as a login or a name.
pub fn looks_like_okta_id(s: &str, prefix: &str) -> bool {
    s.len() == 20 && s.starts_with(prefix) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn text(v: &Dynamic) -> Option<String> {
    v.read_lock::<ImmutableString>()
        .map(|s| s.trim().to_string())
}

fn field(m: &Map, key: &str) -> Option<String> {
    m.get(key).and_then(text).filter(|s| !s.is_empty())
}

fn checked(s: String, what: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err(format!("the {what} is an empty string"));
    }
    if s.len() > MAX_OKTA_REF_LEN {
        return Err(format!(
            "the {what} is {} bytes long (at most {MAX_OKTA_REF_LEN})",
            s.len()
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("the {what} contains a control character"));
    }
    Ok(s)
}

/// A user argument: an id, a login, a `lookup_user` map or an actor/target map of a user.
pub fn user_ref(v: &Dynamic) -> Result<String, String> {
    if let Some(s) = text(v) {
        return checked(s, "user");
    }
    if let Some(m) = v.read_lock::<Map>() {
        if let Some(kind) = field(&m, "type") {
            if kind != "User" {
                return Err(format!(
                    "the user is an actor/target map of type {kind:?}, not \"User\" (pick the user with okta::target(event, \"User\"))"
                ));
            }
            let key = field(&m, "id").or_else(|| field(&m, "alternateId"));
            return key
                .ok_or_else(|| "the user map has neither `id` nor `alternateId`".to_string())
                .and_then(|s| checked(s, "user"));
        }
        let key = field(&m, "id").or_else(|| field(&m, "login"));
        return key
            .ok_or_else(|| "the user map has neither `id` nor `login` (expected a user from lookup_user or an actor/target map)".to_string())
            .and_then(|s| checked(s, "user"));
    }
    if v.is_unit() {
        return Err(
            "the user is () (did lookup_user find nobody, or the event have no such target?)"
                .to_string(),
        );
    }
    Err(format!(
        "the user must be an Okta user id, a login, a lookup_user map or an actor/target map, not {}",
        v.type_name()
    ))
}

/// A group argument: an id (`00g…`), a name, a `UserGroup` target map or a group map.
pub fn group_ref(v: &Dynamic) -> Result<GroupRef, String> {
    if let Some(s) = text(v) {
        let s = checked(s, "group")?;
        return Ok(if looks_like_okta_id(&s, "00g") {
            GroupRef::Id(s)
        } else {
            GroupRef::Name(s)
        });
    }
    if let Some(m) = v.read_lock::<Map>() {
        if let Some(kind) = field(&m, "type")
            && kind != "UserGroup"
            && !kind.ends_with("_GROUP")
        {
            return Err(format!(
                "the group is a target map of type {kind:?}, not \"UserGroup\" (pick it with okta::target(event, \"UserGroup\"))"
            ));
        }
        if let Some(id) = field(&m, "id") {
            return checked(id, "group").map(GroupRef::Id);
        }
        return match field(&m, "name").or_else(|| field(&m, "displayName")) {
            Some(n) => checked(n, "group").map(GroupRef::Name),
            None => Err("the group map has no `id`".to_string()),
        };
    }
    if v.is_unit() {
        return Err("the group is () (did okta::get_group find nothing, or the event have no UserGroup target?)".to_string());
    }
    Err(format!(
        "the group must be a group id, a group name or a UserGroup map, not {}",
        v.type_name()
    ))
}

/// `update_profile`'s map: attribute → value (anything JSON can hold), at least one.
fn profile(v: &Dynamic) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let Some(m) = v.read_lock::<Map>() else {
        return Err(format!(
            "the profile must be a map of attributes, e.g. #{{ title: \"Analyst\" }}, not {}",
            v.type_name()
        ));
    };
    if m.is_empty() {
        return Err("the profile map is empty: name the attributes to change".to_string());
    }
    if m.len() > MAX_PROFILE_FIELDS {
        return Err(format!(
            "the profile map has {} attributes (at most {MAX_PROFILE_FIELDS})",
            m.len()
        ));
    }
    let mut out = serde_json::Map::new();
    for (k, v) in m.iter() {
        if k.trim().is_empty() {
            return Err("the profile map has an empty attribute name".to_string());
        }
        if k.as_str() == "login" {
            return Err(
                "update_profile does not change `login` (Okta's sign-in name): change it in Okta"
                    .to_string(),
            );
        }
        let json: serde_json::Value =
            rhai::serde::from_dynamic(v).map_err(|e| format!("profile attribute `{k}`: {e}"))?;
        out.insert(k.to_string(), json);
    }
    Ok(out)
}

/// A group as `okta::user_groups` and `okta::get_group` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OktaGroup {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// `OKTA_GROUP`, `APP_GROUP` or `BUILT_IN`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

impl OktaGroup {
    /// `#{ id, name, description, type }`, every key present (`()` when unknown).
    pub fn to_dynamic(&self) -> Dynamic {
        let opt = |v: &Option<String>| v.clone().map_or(Dynamic::UNIT, Dynamic::from);
        let mut m = Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("name".into(), self.name.clone().into());
        m.insert("description".into(), opt(&self.description));
        m.insert("type".into(), opt(&self.kind));
        Dynamic::from_map(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Dynamic)]) -> Dynamic {
        let m: Map = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect();
        Dynamic::from_map(m)
    }

    fn s(v: &str) -> Dynamic {
        v.into()
    }

    #[test]
    fn users_come_as_ids_logins_lookup_maps_and_target_maps() {
        assert_eq!(
            user_ref(&s(" 00u1abcdefghijklmno ")).unwrap(),
            "00u1abcdefghijklmno"
        );
        assert_eq!(
            user_ref(&s("jane@example.com")).unwrap(),
            "jane@example.com"
        );
        let looked_up = map(&[("id", s("00u1")), ("login", s("jane@example.com"))]);
        assert_eq!(user_ref(&looked_up).unwrap(), "00u1");
        let no_id = map(&[("id", Dynamic::UNIT), ("login", s("jane@example.com"))]);
        assert_eq!(user_ref(&no_id).unwrap(), "jane@example.com");
        let target = map(&[
            ("type", s("User")),
            ("id", s("00u2")),
            ("alternateId", s("x@y")),
        ]);
        assert_eq!(user_ref(&target).unwrap(), "00u2");
        let actor = map(&[("type", s("User")), ("alternateId", s("x@y.z"))]);
        assert_eq!(user_ref(&actor).unwrap(), "x@y.z");
    }

    #[test]
    fn bad_users_say_what_is_wrong() {
        let err = user_ref(&Dynamic::UNIT).unwrap_err();
        assert!(err.contains("is ()"), "{err}");
        let app = map(&[("type", s("AppInstance")), ("id", s("0oa1"))]);
        assert!(user_ref(&app).unwrap_err().contains("AppInstance"));
        assert!(user_ref(&s("  ")).unwrap_err().contains("empty"));
        assert!(user_ref(&s("a\nb")).unwrap_err().contains("control"));
        assert!(
            user_ref(&Dynamic::from(5_i64))
                .unwrap_err()
                .contains("not i64")
        );
        let long = "x".repeat(MAX_OKTA_REF_LEN + 1);
        assert!(user_ref(&s(&long)).unwrap_err().contains("at most"));
        assert!(user_ref(&map(&[])).unwrap_err().contains("neither"));
    }

    #[test]
    fn groups_come_as_ids_names_and_maps() {
        assert_eq!(
            group_ref(&s("00g1abcdefghijklmno0")).unwrap(),
            GroupRef::Id("00g1abcdefghijklmno0".into())
        );
        assert_eq!(
            group_ref(&s("Admins")).unwrap(),
            GroupRef::Name("Admins".into())
        );
        let target = map(&[
            ("type", s("UserGroup")),
            ("id", s("00g9")),
            ("displayName", s("Admins")),
        ]);
        assert_eq!(group_ref(&target).unwrap(), GroupRef::Id("00g9".into()));
        let read = map(&[
            ("id", s("00g8")),
            ("name", s("Ops")),
            ("type", s("OKTA_GROUP")),
        ]);
        assert_eq!(group_ref(&read).unwrap(), GroupRef::Id("00g8".into()));
        let user = map(&[("type", s("User")), ("id", s("00u1"))]);
        assert!(group_ref(&user).unwrap_err().contains("UserGroup"));
        assert!(group_ref(&Dynamic::UNIT).unwrap_err().contains("is ()"));
    }

    #[test]
    fn ops_are_built_from_arguments_and_round_trip_through_json() {
        let op =
            OktaOp::from_args("add_to_group", &s("jane@example.com"), Some(&s("Admins"))).unwrap();
        assert_eq!(
            op,
            OktaOp::AddToGroup {
                user: "jane@example.com".into(),
                group: GroupRef::Name("Admins".into())
            }
        );
        let json = serde_json::to_string(&op).unwrap();
        assert_eq!(
            json,
            r#"{"op":"add_to_group","user":"jane@example.com","group":{"name":"Admins"}}"#
        );
        assert_eq!(serde_json::from_str::<OktaOp>(&json).unwrap(), op);
        assert_eq!(
            op.describe(),
            "okta::add_to_group jane@example.com group \"Admins\""
        );

        let prof = map(&[("title", s("Analyst")), ("level", Dynamic::from(3_i64))]);
        let op = OktaOp::from_args("update_profile", &s("00u1"), Some(&prof)).unwrap();
        let OktaOp::UpdateProfile { profile, .. } = &op else {
            panic!("{op:?}")
        };
        assert_eq!(profile["title"], "Analyst");
        assert_eq!(profile["level"], 3);
        let suspend = OktaOp::from_args("suspend_user", &s("00u1"), None).unwrap();
        assert_eq!(
            serde_json::to_value(&suspend).unwrap(),
            serde_json::json!({"op": "suspend_user", "user": "00u1"})
        );
    }

    #[test]
    fn bad_operation_arguments_are_refused() {
        let e = OktaOp::from_args("add_to_group", &s("u"), None).unwrap_err();
        assert!(e.contains("group is required"), "{e}");
        let e = OktaOp::from_args("update_profile", &s("u"), Some(&map(&[]))).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = OktaOp::from_args("update_profile", &s("u"), Some(&s("x"))).unwrap_err();
        assert!(e.contains("must be a map"), "{e}");
        let login = map(&[("login", s("new@example.com"))]);
        let e = OktaOp::from_args("update_profile", &s("u"), Some(&login)).unwrap_err();
        assert!(e.contains("login"), "{e}");
        let e = OktaOp::from_args("suspend_user", &Dynamic::UNIT, None).unwrap_err();
        assert!(e.starts_with("okta::suspend_user: the user is ()"), "{e}");
        assert!(OktaOp::from_args("delete_user", &s("u"), None).is_err());
    }
}
