//! Write-key extraction from `Authorization: Basic base64(writeKey:)`.

use base64::Engine as _;

/// The user part of a Basic `Authorization` header (Segment's write key, password empty), if it is one.
pub fn basic_auth_user(header: &str) -> Option<String> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
    (!user.is_empty()).then(|| user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(text: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(text))
    }

    #[test]
    fn reads_the_user_of_basic_auth() {
        assert_eq!(basic_auth_user(&basic("abc123:")).as_deref(), Some("abc123"));
        assert_eq!(basic_auth_user(&basic("abc123")).as_deref(), Some("abc123"));
        assert_eq!(basic_auth_user(&basic("abc123:ignored")).as_deref(), Some("abc123"));
        assert_eq!(basic_auth_user(&basic("abc").replace("Basic", "basic")).as_deref(), Some("abc"));
    }

    #[test]
    fn refuses_other_schemes_and_garbage() {
        assert_eq!(basic_auth_user("Bearer abc"), None);
        assert_eq!(basic_auth_user("Basic !!!"), None);
        assert_eq!(basic_auth_user(&basic(":")), None);
        assert_eq!(basic_auth_user(""), None);
    }
}
