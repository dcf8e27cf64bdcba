//! Rules for user-supplied account fields.

use super::error::ApiError;

/// Usernames: 3–32 of `a-z 0-9 _ . -`, letters in either case (stored lower-cased,
/// so uniqueness ignores case).
pub fn username(raw: &str) -> Result<String, ApiError> {
    let lower = raw.to_ascii_lowercase();
    let ok_chars = lower
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if !(3..=32).contains(&lower.len()) || !ok_chars {
        return Err(ApiError::invalid(
            "invalid_username",
            "usernames are 3 to 32 characters of a-z, 0-9, '_', '.' and '-'",
        ));
    }
    Ok(lower)
}

/// Passwords: at least 8 characters and at most 1024 bytes of UTF-8 (the byte bound
/// caps the input to hashing), anything else allowed.
pub fn password(raw: &str) -> Result<(), ApiError> {
    if raw.chars().count() < 8 || raw.len() > 1024 {
        return Err(ApiError::invalid(
            "invalid_password",
            "passwords are at least 8 characters and at most 1024 bytes long",
        ));
    }
    Ok(())
}

/// Characters that must not appear in names shown to other users: control
/// characters (including NUL) and the bidirectional overrides and isolates that let a
/// name display as something else.
fn is_forbidden_in_name(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// Display names: 1–64 characters after trimming, no control or bidi override
/// characters.
pub fn display_name(raw: &str) -> Result<String, ApiError> {
    let trimmed = raw.trim();
    let count = trimmed.chars().count();
    if count == 0 || count > 64 {
        return Err(ApiError::invalid(
            "invalid_display_name",
            "display names are 1 to 64 characters",
        ));
    }
    if trimmed.chars().any(is_forbidden_in_name) {
        return Err(ApiError::invalid(
            "invalid_display_name",
            "display names may not contain control or bidirectional override characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// Bios: at most 500 characters; line breaks and tabs allowed, other control and bidi
/// override characters not.
pub fn bio(raw: &str) -> Result<String, ApiError> {
    if raw.chars().count() > 500 {
        return Err(ApiError::invalid(
            "invalid_bio",
            "bios are at most 500 characters",
        ));
    }
    if raw
        .chars()
        .any(|c| c != '\n' && c != '\t' && is_forbidden_in_name(c))
    {
        return Err(ApiError::invalid(
            "invalid_bio",
            "bios may not contain control or bidirectional override characters",
        ));
    }
    Ok(raw.to_owned())
}

/// Group titles: 1–100 characters after trimming, same character rules as names.
pub fn title(raw: &str) -> Result<String, ApiError> {
    let trimmed = raw.trim();
    let count = trimmed.chars().count();
    if count == 0 || count > 100 || trimmed.chars().any(is_forbidden_in_name) {
        return Err(ApiError::invalid(
            "invalid_title",
            "titles are 1 to 100 characters without control or bidirectional override characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// A device's name: up to 64 characters (may be empty), no control or bidirectional
/// override characters; surrounding whitespace is dropped.
pub fn device_name(raw: &str) -> Result<String, ApiError> {
    let trimmed = raw.trim();
    if trimmed.chars().count() > 64 || trimmed.chars().any(is_forbidden_in_name) {
        return Err(ApiError::invalid(
            "invalid_device_name",
            "device names are at most 64 characters without control or bidirectional override characters",
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(username("Alice_01").ok().as_deref(), Some("alice_01"));
        for bad in [
            "ab",
            "a".repeat(33).as_str(),
            "al ice",
            "alïce",
            "al'ice",
            "bob;--",
            "ab\0c",
            "",
        ] {
            assert!(username(bad).is_err(), "{bad:?}");
        }
        assert!(username(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn names_keep_emoji_and_refuse_controls() {
        assert_eq!(
            display_name("  Zoë 🦀👩‍👩‍👧  ").ok().as_deref(),
            Some("Zoë 🦀👩‍👩‍👧")
        );
        assert_eq!(
            display_name("Robert'); DROP TABLE users;--")
                .ok()
                .as_deref(),
            Some("Robert'); DROP TABLE users;--")
        );
        for bad in [
            "",
            "   ",
            "a\0b",
            "evil\u{202E}gnp.exe",
            "x\u{2066}y",
            "tab\there",
            &"x".repeat(65),
        ] {
            assert!(display_name(bad).is_err(), "{bad:?}");
        }
        assert!(bio("line one\nline two\ttab").is_ok());
        assert!(bio("nul\0").is_err());
        assert!(title("Team 🚀").is_ok());
        assert!(title("").is_err());
    }

    #[test]
    fn passwords() {
        assert!(password("12345678").is_ok());
        assert!(password("1234567").is_err());
        assert!(password(&"p".repeat(1025)).is_err());
        assert!(password(&"é".repeat(512)).is_ok());
        assert!(password(&"é".repeat(513)).is_err(), "1026 bytes");
        assert!(
            password("🔑🔑🔑🔑🔑🔑🔑").is_err(),
            "7 characters, 28 bytes"
        );
    }
}
