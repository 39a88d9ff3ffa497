//! Container-level serde attributes on events and aggregates: they follow
//! the derives the macros add, so `#[serde(default)]` and
//! `#[serde(deny_unknown_fields)]` compile and take effect.

use annals::prelude::*;

#[annals::event(name = "ui.profile.updated")]
#[serde(default, deny_unknown_fields)]
pub struct ProfileUpdated {
    pub display_name: String,
    pub locale: String,
}

impl Default for ProfileUpdated {
    fn default() -> Self {
        ProfileUpdated { display_name: "anonymous".into(), locale: "en".into() }
    }
}

#[annals::aggregate(name = "profile", events(ProfileUpdated))]
#[serde(default)]
#[derive(Default)]
pub struct Profile {
    pub name: String,
}

impl Apply<ProfileUpdated> for Profile {
    fn apply(&mut self, event: &ProfileUpdated) {
        self.name = event.display_name.clone();
    }
}

fn main() {
    let partial: ProfileUpdated = serde_json::from_str(r#"{"locale":"fr"}"#).expect("defaults fill the rest");
    assert_eq!((partial.display_name.as_str(), partial.locale.as_str()), ("anonymous", "fr"));
    assert!(serde_json::from_str::<ProfileUpdated>(r#"{"nickname":"x"}"#).is_err());
    let restored: Profile = serde_json::from_str("{}").expect("an empty snapshot restores");
    assert_eq!(restored.name, "");
}
