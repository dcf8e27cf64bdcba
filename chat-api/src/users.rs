//! Profiles: one's own, others', and search by username prefix.

use serde::{Deserialize, Serialize};

use crate::model::User;

crate::endpoints! {
    /// `GET /api/me`: the caller's profile.
    Me: GET "/api/me", () => User;
    /// `PATCH /api/me`: changes the fields given.
    UpdateMe: PATCH "/api/me", ProfileUpdate => User;
    /// `GET /api/users?q=PREFIX&limit=N&after=USERNAME`: users whose username starts
    /// with the prefix, in username order.
    SearchUsers: GET "/api/users", () => UserPage;
    /// `GET /api/users/{id}`: one user's profile.
    GetUser: GET "/api/users/{id}", () => User;
}

/// The body of [`UpdateMe`]: the fields to change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProfileUpdate {
    /// A new display name (1–64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub display_name: Option<String>,
    /// A new bio (at most 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub bio: Option<String>,
}

/// A page of users: the answer to [`SearchUsers`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UserPage {
    /// Users in username order.
    pub users: Vec<User>,
    /// Pass as `after` to get the next page; `None` on the last one.
    pub next: Option<String>,
}
