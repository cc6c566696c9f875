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
/// characters, no backslash, at most 1024 bytes.
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
    if path.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return Err(format!("path `{shown}`: no empty, `.` or `..` segments"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
