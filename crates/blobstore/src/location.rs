//! Where a blob store lives, as a URL: `file:///PATH` or `s3://BUCKET/PREFIX`.

use std::path::PathBuf;

use crate::Error;

/// The configured home of the blobs.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on the local filesystem.
    File(PathBuf),
    /// A bucket (and key prefix) on an S3-compatible service; endpoint, region and credentials come from the
    /// usual `AWS_*` environment variables.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix inside the bucket, without leading or trailing `/`; may be empty.
        prefix: String,
    },
}

impl Location {
    /// Parses `file:///PATH`, `s3://BUCKET[/PREFIX]`, or a plain filesystem path.
    pub fn parse(url: &str) -> Result<Location, Error> {
        let bad = |why: &str| Error::BadLocation { url: url.to_owned(), why: why.to_owned() };
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(bad("it names no directory"));
            }
            Ok(Location::File(PathBuf::from(path)))
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("it names no bucket"));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|segment| segment == "." || segment == "..") {
                return Err(bad("the prefix may not hold `.` or `..` segments"));
            }
            Ok(Location::S3 { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
        } else if url.contains("://") {
            Err(bad("use file:///PATH or s3://BUCKET/PREFIX"))
        } else if url.is_empty() {
            Err(bad("it is empty"))
        } else {
            Ok(Location::File(PathBuf::from(url)))
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "file://{}", path.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!(Location::parse("file:///srv/blobs").unwrap(), Location::File("/srv/blobs".into()));
        assert_eq!(Location::parse("./data/blobs").unwrap(), Location::File("./data/blobs".into()));
        let s3 = Location::parse("s3://bucket/a/b/").unwrap();
        assert_eq!(s3, Location::S3 { bucket: "bucket".into(), prefix: "a/b".into() });
        assert_eq!(s3.to_string(), "s3://bucket/a/b");
        assert_eq!(Location::parse("s3://bucket").unwrap().to_string(), "s3://bucket");
        for bad in ["file://", "s3://", "s3:///x", "ftp://x", "", "s3://b/../x"] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }
}
