//! Unique namespaces: every test gets its own prefix for AMQP names and Redis
//! keys (`t` + 12 hex characters), so tests run in parallel without sharing state.

/// A fresh namespace such as `t3f9a0c41b7de`.
pub fn unique() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}", &id[..12])
}

/// A random token or secret-like string with a recognisable prefix.
pub fn random_token(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    #[test]
    fn namespaces_are_valid_and_distinct() {
        let a = super::unique();
        let b = super::unique();
        assert_ne!(a, b);
        assert_eq!(a.len(), 13);
        assert!(a.starts_with('t'));
        assert!(a[1..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
