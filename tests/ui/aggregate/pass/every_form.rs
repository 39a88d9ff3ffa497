//! `#[aggregate]` with one enum of events, with several struct events (and a
//! renamed generated enum), with defaults and with every option.

use annals::{Aggregate, Apply, Handle};

#[annals::event]
pub enum AccountEvent {
    #[event(name = "bank.account.opened")]
    Opened { owner: String },
    #[event(name = "bank.account.closed")]
    Closed,
}

#[annals::aggregate(events(AccountEvent))]
#[derive(Default)]
pub struct BankAccount {
    owner: String,
    open: bool,
}

impl Apply<AccountEvent> for BankAccount {
    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => {
                self.owner = owner.clone();
                self.open = true;
            }
            AccountEvent::Closed => self.open = false,
        }
    }
}

#[annals::event(name = "iam.role.defined")]
pub struct RoleDefined {
    pub name: String,
}

#[annals::event(name = "iam.role.permission_granted")]
pub struct PermissionGranted {
    pub permission: String,
}

pub mod events {
    #[annals::event(name = "iam.role.retired")]
    pub struct RoleRetired;
}

#[annals::aggregate(
    name = "role",
    events(RoleDefined, PermissionGranted, events::RoleRetired),
    snapshot_every = 100,
    snapshot_version = 4,
    event_enum = RoleChange
)]
#[derive(Default)]
pub struct Role {
    permissions: Vec<String>,
    retired: bool,
}

impl Apply<RoleDefined> for Role {
    fn apply(&mut self, _: &RoleDefined) {}
}

impl Apply<PermissionGranted> for Role {
    fn apply(&mut self, event: &PermissionGranted) {
        self.permissions.push(event.permission.clone());
    }
}

impl Apply<events::RoleRetired> for Role {
    fn apply(&mut self, _: &events::RoleRetired) {
        self.retired = true;
    }
}

pub struct Grant(pub String);

impl Handle<Grant> for Role {
    type Error = std::convert::Infallible;
    fn handle(&self, Grant(permission): &Grant) -> Result<Vec<RoleChange>, Self::Error> {
        Ok(vec![PermissionGranted { permission: permission.clone() }.into()])
    }
}

fn main() {
    assert_eq!(BankAccount::NAME, "bank_account");
    assert_eq!(BankAccount::SNAPSHOT_VERSION, 1);
    assert_eq!(Role::NAME, "role");
    assert_eq!((Role::SNAPSHOT_EVERY, Role::SNAPSHOT_VERSION), (Some(100), 4));
    assert_eq!(
        <RoleChange as annals::Event>::EVENT_TYPES,
        ["iam.role.defined", "iam.role.permission_granted", "iam.role.retired"]
    );
    let mut role = Role::default();
    for event in role.handle(&Grant("users.read".into())).unwrap_or_default() {
        role.apply_event(&event);
    }
    role.apply_event(&RoleChange::RoleRetired(events::RoleRetired));
    assert_eq!(role.permissions, ["users.read"]);
    assert!(role.retired);
}
