//! The bulk import of the scenario: tenants, their roles and users, decided
//! by the aggregates themselves (every invariant applies) on fresh states
//! and committed one tenant at a time in a few large transactions.

use std::collections::BTreeSet;

use annals::prelude::*;
use annals::{Handle, UnitOfWork};
use anyhow::{Context, Result};
use iam_domain::IamError;
use iam_domain::registration::{EmailClaim, EmailKeys};
use iam_domain::role::{DefineRole, GrantPermission, RevokePermission, Role};
use iam_domain::tenant::{ActiveTenant, CreateTenant, RenameTenant, Tenant};
use iam_domain::user::{AssignRole, ChangeEmail, DeactivateUser, RegisterUser, RevokeRole, User};

use crate::service::Caller;

/// The roles every tenant gets, with their first permissions.
pub const ROLES: [(&str, &[&str]); 6] = [
    (
        "admin",
        &["tenant.manage", "users.read", "users.write", "roles.manage"],
    ),
    ("auditor", &["audit.read", "users.read"]),
    ("support", &["users.read", "tickets.read", "tickets.write"]),
    (
        "developer",
        &["repos.read", "repos.write", "deploy.staging"],
    ),
    ("billing", &["invoices.read", "invoices.write"]),
    ("viewer", &["users.read"]),
];

/// The roles of user `u` (besides the churn): user 0 is the admin.
pub fn base_roles(u: usize) -> &'static [&'static str] {
    if u == 0 {
        return &["admin"];
    }
    match u % 7 {
        0 => &["viewer"],
        1 => &["support"],
        2 | 3 => &["developer"],
        4 => &["developer", "support"],
        5 => &["auditor"],
        _ => &["billing", "viewer"],
    }
}

/// Whether user `u` is deactivated at the end of the import.
pub fn deactivated(u: usize) -> bool {
    u % 25 == 24
}

/// `t001`.
pub fn tenant_id(n: usize) -> String {
    format!("t{n:03}")
}

/// `t001-u0042`.
pub fn user_id(tenant: &str, u: usize) -> String {
    format!("{tenant}-u{u:04}")
}

/// `t001-admin`.
pub fn role_id(tenant: &str, role: &str) -> String {
    format!("{tenant}-{role}")
}

const NAMES: [&str; 10] = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
];

/// Decides `command` on `state` and applies the events, keeping them.
fn decide<A, C>(state: &mut A, command: &C, out: &mut Vec<A::Event>) -> Result<()>
where
    A: Aggregate + Handle<C, Error = IamError>,
{
    let events = state
        .handle(command)
        .map_err(|refused| anyhow::anyhow!("the import was refused: {refused}"))?;
    for event in &events {
        state.apply_event(event);
    }
    out.extend(events);
    Ok(())
}

/// How many events one tenant's import appends at most per transaction.
const EVENTS_PER_TRANSACTION: usize = 2_000;

/// Imports tenant number `n` with `users` users; returns the events
/// appended. `progress` is called after each user.
pub async fn import_tenant(
    store: &dyn EventStore,
    keys: &EmailKeys,
    n: usize,
    users: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    let tenant = tenant_id(n);
    let caller = Caller::new(format!("importer@{tenant}"));
    let metadata = caller.metadata(&tenant);
    let mut work = UnitOfWork::new();
    let mut pending = 0usize;
    let mut appended = 0u64;

    let mut state = Tenant::default();
    let mut events = Vec::new();
    let name = format!("{} {}", NAMES[n % NAMES.len()], n);
    decide(
        &mut state,
        &CreateTenant {
            id: tenant.clone(),
            name: name.clone(),
        },
        &mut events,
    )?;
    if n.is_multiple_of(10) {
        decide(
            &mut state,
            &RenameTenant(format!("{name} Holdings")),
            &mut events,
        )?;
    }
    pending += events.len();
    work.append::<Tenant>(&tenant, ExpectedVersion::NoStream, &events, &metadata)?;
    let active = state.active(&tenant).map_err(|e| anyhow::anyhow!("{e}"))?;

    let mut roles = std::collections::HashMap::new();
    for (name, permissions) in ROLES {
        let id = role_id(&tenant, name);
        let mut role = Role::default();
        let mut events = Vec::new();
        let define = DefineRole {
            tenant: active.clone(),
            name: name.to_owned(),
            permissions: permissions
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<BTreeSet<_>>(),
        };
        decide(&mut role, &define, &mut events)?;
        // Some churn, as roles evolve: a report permission comes and goes,
        // an export permission stays.
        let area = permissions[0].split('.').next().unwrap_or("data");
        for (permission, grant) in [
            ("reports.read".to_owned(), true),
            (format!("{area}.export"), true),
            ("reports.read".to_owned(), false),
        ] {
            if grant {
                decide(
                    &mut role,
                    &GrantPermission {
                        tenant: active.clone(),
                        permission,
                    },
                    &mut events,
                )?;
            } else {
                decide(
                    &mut role,
                    &RevokePermission {
                        tenant: active.clone(),
                        permission,
                    },
                    &mut events,
                )?;
            }
        }
        pending += events.len();
        work.append::<Role>(&id, ExpectedVersion::NoStream, &events, &metadata)?;
        roles.insert(
            name,
            role.reference(&id).map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }

    for u in 0..users {
        let id = user_id(&tenant, u);
        let mut user = User::default();
        let mut events = Vec::new();
        let register = RegisterUser {
            tenant: active.clone(),
            user_id: id.clone(),
            email: claim(keys, &active, &format!("user{u}@{tenant}.example"))?,
            display_name: format!("User {u} of {name}"),
        };
        decide(&mut user, &register, &mut events)?;
        let assign = |role: &str| AssignRole {
            tenant: active.clone(),
            role: roles[role].clone(),
        };
        let revoke = |role: &str| RevokeRole {
            tenant: active.clone(),
            role: role_id(&tenant, role),
        };
        // Everyone starts as a viewer; then gets their roles, and loses the
        // viewer role unless it is one of theirs.
        decide(&mut user, &assign("viewer"), &mut events)?;
        for role in base_roles(u) {
            decide(&mut user, &assign(role), &mut events)?;
        }
        if !base_roles(u).contains(&"viewer") {
            decide(&mut user, &revoke("viewer"), &mut events)?;
        }
        // Temporary access, granted and taken back three times (on-call).
        let temporary = if base_roles(u).contains(&"support") {
            "billing"
        } else {
            "support"
        };
        if !base_roles(u).contains(&temporary) {
            for _ in 0..3 {
                decide(&mut user, &assign(temporary), &mut events)?;
                decide(&mut user, &revoke(temporary), &mut events)?;
            }
        }
        if u % 2 == 0 {
            let change = ChangeEmail {
                tenant: active.clone(),
                user_id: id.clone(),
                email: claim(keys, &active, &format!("u{u}.new@{tenant}.example"))?,
            };
            decide(&mut user, &change, &mut events)?;
        }
        if deactivated(u) {
            decide(
                &mut user,
                &DeactivateUser {
                    tenant: active.clone(),
                },
                &mut events,
            )?;
        }
        pending += events.len();
        work.append::<User>(&id, ExpectedVersion::NoStream, &events, &metadata)?;
        if pending >= EVENTS_PER_TRANSACTION {
            appended += commit(store, std::mem::take(&mut work), &tenant).await?;
            pending = 0;
        }
        progress(1);
    }
    appended += commit(store, work, &tenant).await?;
    Ok(appended)
}

/// The claim of a generated address, which is always valid.
fn claim(keys: &EmailKeys, tenant: &ActiveTenant, email: &str) -> Result<EmailClaim> {
    keys.claim(tenant, email)
        .map_err(|error| anyhow::anyhow!("{email}: {error}"))
}

async fn commit(store: &dyn EventStore, work: UnitOfWork, tenant: &str) -> Result<u64> {
    let results = work
        .commit(store)
        .await
        .with_context(|| format!("cannot import tenant {tenant}"))?;
    Ok(results
        .iter()
        .map(|result| result.last_version + 1 - result.first_version)
        .sum())
}
