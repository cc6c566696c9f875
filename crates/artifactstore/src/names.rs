//! The shapes of package names, versions and file paths, checked exactly as the contract states them.

/// The longest package name, in bytes.
pub const MAX_NAME: usize = 255;
/// The longest version, in bytes.
pub const MAX_VERSION: usize = 128;
/// The longest file path inside a package, in bytes.
pub const MAX_PATH: usize = 1024;
/// A name segment the URL layout reserves: `/v1/packages/{name}/versions/{version}` must split one way only.
pub const RESERVED_SEGMENT: &str = "versions";

/// A package name: lowercase `[a-z0-9][a-z0-9._-]*` segments joined by `/`, at most 255 bytes.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a package name has 1 to {MAX_NAME} bytes"));
    }
    for segment in name.split('/') {
        let mut bytes = segment.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if !first_ok || !rest_ok {
            return Err(format!(
                "package name `{}`: each `/`-separated segment is [a-z0-9][a-z0-9._-]*",
                name.escape_debug()
            ));
        }
        if segment == RESERVED_SEGMENT {
            return Err(format!(
                "package name `{name}`: the segment `{RESERVED_SEGMENT}` is reserved by the URL layout"
            ));
        }
    }
    Ok(())
}

/// A version: `[A-Za-z0-9][A-Za-z0-9._+-]*`, at most 128 bytes.
pub fn check_version(version: &str) -> Result<(), String> {
    let mut bytes = version.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if !first_ok || !rest_ok || version.len() > MAX_VERSION {
        return Err(format!(
            "version `{}`: [A-Za-z0-9][A-Za-z0-9._+-]*, at most {MAX_VERSION} bytes",
            version.escape_debug()
        ));
    }
    Ok(())
}

/// A file path inside a package: relative, `/`-separated, no empty, `.` or `..` segments, no NUL or other control
/// characters, no format characters (bidirectional overrides, zero-width and invisible ones), no separators but the
/// plain space (no line or paragraph separators, no other spaces), no backslash, at most 1024 bytes.
pub fn check_path(path: &str) -> Result<(), String> {
    let shown = path.escape_debug();
    if path.is_empty() || path.len() > MAX_PATH {
        return Err(format!("path `{shown}`: a path has 1 to {MAX_PATH} bytes"));
    }
    if path.starts_with('/') {
        return Err(format!("path `{shown}`: paths are relative, no leading `/`"));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!("path `{shown}`: no NUL, control characters or backslashes"));
    }
    if let Some(c) = path.chars().find(|&c| invisible(c)) {
        return Err(format!(
            "path `{shown}`: no format or separator characters other than the space (U+{:04X} is one)",
            u32::from(c)
        ));
    }
    if path.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return Err(format!("path `{shown}`: no empty, `.` or `..` segments"));
    }
    Ok(())
}

/// A token's package-name prefix: `""` (every package), a package name (which covers itself and the names under it),
/// or a package name followed by `/` (which covers the names under it).
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    match prefix {
        "" => Ok(()),
        p => check_name(p.strip_suffix('/').unwrap_or(p)).map_err(|err| {
            format!("prefix `{}` is not a package name, with or without a final `/`: {err}", p.escape_debug())
        }),
    }
}

/// Whether `prefix` covers the package `name`, matching whole `/`-separated segments: `team` covers `team` and
/// `team/app`, not `teamevil`.
pub fn covers(prefix: &str, name: &str) -> bool {
    match prefix.strip_suffix('/') {
        _ if prefix.is_empty() => true,
        Some(_) => name.starts_with(prefix),
        None => name.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
    }
}

/// Whether `c` is a format character (Unicode category Cf) or a separator (Z*) other than the space.
fn invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};
    c != ' '
        && (c.general_category() == GeneralCategory::Format
            || c.general_category_group() == GeneralCategoryGroup::Separator)
}

/// The longest media type, in bytes.
pub const MAX_MEDIA_TYPE: usize = 255;

/// A media type as RFC 6838 writes one (`type/subtype`, each `[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*`, at most 127 bytes),
/// with parameters as RFC 9110 writes them (`; name=value`, the value a token or a quoted string of visible
/// characters), at most 255 bytes. Nothing else: no control characters, no line breaks, nothing outside ASCII.
pub fn check_media_type(text: &str) -> Result<(), String> {
    let refused = || {
        format!("media type `{}` is not `type/subtype` with optional `; name=value` parameters", text.escape_debug())
    };
    if text.is_empty() || text.len() > MAX_MEDIA_TYPE {
        return Err(format!("a media type has 1 to {MAX_MEDIA_TYPE} bytes"));
    }
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or_default();
    let (kind, subtype) = essence.split_once('/').ok_or_else(refused)?;
    if !restricted_name(kind) || !restricted_name(subtype) {
        return Err(refused());
    }
    for parameter in parts {
        // Spaces only before a parameter: RFC 9110 also allows tabs there, but a media type here has no control
        // characters at all.
        let (name, value) = parameter.trim_start_matches(' ').split_once('=').ok_or_else(refused)?;
        let quoted = value.len() >= 2
            && value.starts_with('"')
            && value.ends_with('"')
            && value[1..value.len() - 1]
                .bytes()
                .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\');
        if !token(name) || !(token(value) || quoted) {
            return Err(refused());
        }
    }
    Ok(())
}

/// RFC 6838's `restricted-name`.
fn restricted_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= 127
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
}

/// RFC 9110's `token`.
fn token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_whole_segments() {
        assert!(covers("", "anything/at/all"));
        assert!(covers("team", "team") && covers("team", "team/app") && covers("team/app", "team/app/x"));
        assert!(!covers("team", "teamevil") && !covers("team", "teamevil/x") && !covers("team", "tea"));
        assert!(covers("team/", "team/app") && !covers("team/", "team"));
        for ok in ["", "team", "team/", "team/app", "a.b/c-d/"] {
            assert!(check_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["/", "Team", "team//", "team/*", "*", " team", "team/versions/"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn media_types() {
        for ok in [
            "text/plain",
            "application/vnd.oci.image.manifest.v1+json",
            "text/plain; charset=utf-8",
            "text/plain;charset=\"utf-8\"",
            "application/x-tar",
            "model/gltf-binary",
        ] {
            assert!(check_media_type(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "text",
            "text/",
            "/plain",
            "text/plain\r\nX-Evil: 1",
            "text/plain\0",
            "text/pl ain",
            "tëxt/plain",
            "text/plain; charset",
            "text/plain; =x",
            "text/plain; a=\"b\"c\"",
            // Found by the `headers` fuzz target: a tab before a parameter.
            "plicatioj/n; \t+1set=uati$$otf-8",
            "text/plain;\tcharset=utf-8",
            &"x/".repeat(200),
        ] {
            assert!(check_media_type(bad).is_err(), "{}", bad.escape_debug());
        }
    }

    #[test]
    fn invisible_characters_are_refused_in_paths() {
        for bad in ["a\u{202E}b", "a\u{200B}b", "\u{FEFF}a", "a\u{2028}b", "a\u{2029}b", "a\u{00A0}b", "a\u{00AD}b"] {
            assert!(check_path(bad).is_err(), "{}", bad.escape_unicode());
        }
        for ok in ["my model.bin", "dir/é.txt", "日本/ファイル"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "team/app", "a.b_c-d/0", "x".repeat(255).as_str()] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "-a", "a//b", "/a", "a/", "a b", "a/../b", "a/.x", "a/versions", "é", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        for ok in ["1", "1.0.0-rc.1+build.5", "v2_beta"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".1", "-1", "1/2", "1 2", "1\0", &"1".repeat(129)] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        for ok in ["a", "bin/tool", "a/b.c/d e", "...", "ünï/cödé"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a/", "a\0b", "a\\b", "a\nb", "."] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }
}
