//! Default names derived from Rust identifiers at expansion time (never from
//! `std::any::type_name`, which is not stable).

/// `UserAccount` → `user_account`.
pub(crate) fn snake_case(ident: &str) -> String {
    let mut out = String::with_capacity(ident.len() + 4);
    let chars: Vec<char> = ident.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let after_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let before_lower = i > 0
                && chars.get(i + 1).is_some_and(|n| n.is_lowercase())
                && chars[i - 1].is_uppercase();
            if after_lower || before_lower {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

/// Checks an event type name with the runtime's rules.
pub(crate) fn event_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("an event name may not be empty".to_owned())
    } else if name.len() > 128 {
        Some(format!(
            "an event name may be at most 128 bytes; this one is {}",
            name.len()
        ))
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("an event name may not contain whitespace or control characters".to_owned())
    } else {
        None
    }
}

/// A type as a person would write it (`Vec<String>`, not `Vec < String >`).
pub(crate) fn type_text(ty: &syn::Type) -> String {
    quote::quote!(#ty)
        .to_string()
        .replace(" < ", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" :: ", "::")
        .replace("& ", "&")
        .replace(" ,", ",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_splits_words_and_acronyms() {
        assert_eq!(snake_case("User"), "user");
        assert_eq!(snake_case("UserAccount"), "user_account");
        assert_eq!(snake_case("HTTPRequest"), "http_request");
        assert_eq!(snake_case("Tenant2Fa"), "tenant2_fa");
        assert_eq!(snake_case("already_snake"), "already_snake");
    }

    #[test]
    fn event_names_follow_the_runtime_rules() {
        assert!(event_name_problem("iam.user.registered").is_none());
        assert!(event_name_problem("").is_some());
        assert!(event_name_problem("has space").is_some());
        assert!(event_name_problem(&"x".repeat(129)).is_some());
    }
}
