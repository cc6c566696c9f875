//! What a pushed manifest says: its media type, what it names, its subject, artifact type and annotations; and the
//! checks a manifest passes before anything is stored.

use std::collections::BTreeMap;

use artifactstore_digest::{Algorithm, Digest};
use serde::Deserialize;

use super::OciError;

/// The largest manifest taken, as other registries take.
pub(crate) const MAX_MANIFEST: usize = 4 * 1024 * 1024;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type pushed here.
pub(crate) const MEDIA_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// A descriptor as a manifest gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
    #[serde(default)]
    urls: Vec<String>,
}

/// The fields of a manifest or an index this registry reads; the rest is kept, byte for byte, in the blob.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// A descriptor, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub(crate) media_type: Option<String>,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

/// A manifest, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) media_type: String,
    pub(crate) artifact_type: Option<String>,
    /// Blobs it names that must be in the store: an image manifest's config and layers (but foreign layers).
    pub(crate) blobs: Vec<Descriptor>,
    /// Manifests it names that must be in the repository: an index's.
    pub(crate) children: Vec<Descriptor>,
    pub(crate) subject: Option<Descriptor>,
    pub(crate) annotations: Option<BTreeMap<String, String>>,
}

fn invalid(message: impl Into<String>) -> OciError {
    OciError::new(400, "MANIFEST_INVALID", message)
}

/// The media type part of a `Content-Type` value, lowercased, without parameters.
pub(crate) fn essence(value: &str) -> String {
    value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Parses and checks `bytes`, pushed with `content_type`.
pub(crate) fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, OciError> {
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|err| invalid(format!("the manifest is not a JSON object of the right shape: {err}")))?;
    if raw.schema_version != Some(2) {
        return Err(invalid("`schemaVersion` must be 2"));
    }
    let header = content_type.map(essence).filter(|t| MEDIA_TYPES.contains(&t.as_str()));
    let media_type = match (&raw.media_type, &header) {
        (Some(body), Some(header)) if body != header => {
            return Err(invalid(format!("`mediaType` is `{body}` but the request's Content-Type is `{header}`")))
        }
        (Some(body), _) => body.clone(),
        (None, Some(header)) => header.clone(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    if !MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(invalid(format!(
            "media type `{}` is not a manifest this registry takes",
            media_type.escape_debug()
        )));
    }
    let index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
    let subject = raw.subject.map(|d| descriptor(d, "subject")).transpose()?;
    let (blobs, children, artifact_type) = if index {
        if raw.config.is_some() || raw.layers.is_some() {
            return Err(invalid("an index has `manifests`, not `config` or `layers`"));
        }
        let manifests = raw.manifests.ok_or_else(|| invalid("an index needs `manifests`"))?;
        let children = manifests.into_iter().map(|d| descriptor(d, "manifests[]")).collect::<Result<Vec<_>, _>>()?;
        (Vec::new(), children, raw.artifact_type)
    } else {
        if raw.manifests.is_some() {
            return Err(invalid("an image manifest has `config` and `layers`, not `manifests`"));
        }
        let config = raw.config.ok_or_else(|| invalid("an image manifest needs `config`"))?;
        let config_type = config.media_type.clone();
        let mut blobs = vec![descriptor(config, "config")?];
        for layer in raw.layers.unwrap_or_default() {
            let foreign = !layer.urls.is_empty();
            let layer = descriptor(layer, "layers[]")?;
            if !foreign {
                blobs.push(layer);
            }
        }
        (blobs, Vec::new(), raw.artifact_type.or(config_type))
    };
    Ok(Parsed { media_type, artifact_type, blobs, children, subject, annotations: raw.annotations })
}

fn descriptor(raw: RawDescriptor, field: &str) -> Result<Descriptor, OciError> {
    let digest: Digest =
        raw.digest.parse().map_err(|err| invalid(format!("{field}: digest `{}`: {err}", raw.digest)))?;
    if digest.algorithm() != Algorithm::Sha256 {
        return Err(invalid(format!("{field}: an OCI descriptor names its content by `sha256:`")));
    }
    let size = u64::try_from(raw.size).map_err(|_| invalid(format!("{field}: size must not be negative")))?;
    Ok(Descriptor { media_type: raw.media_type, digest, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn image_manifests_name_their_config_and_layers() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/x.cfg","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"l","digest":"{D2}","size":5}},{{"mediaType":"f","digest":"{D2}","size":5,"urls":["http://x"]}}],
            "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":9}},"annotations":{{"a":"b"}}}}"#
        );
        let parsed = parse(body.as_bytes(), None).unwrap();
        assert_eq!(parsed.media_type, OCI_MANIFEST);
        assert_eq!(parsed.blobs.len(), 2, "config and the one layer that is not foreign");
        assert_eq!(parsed.artifact_type.as_deref(), Some("application/x.cfg"));
        assert_eq!(parsed.subject.unwrap().digest.to_string(), D2);
        assert_eq!(parsed.annotations.unwrap()["a"], "b");
        assert!(parse(body.as_bytes(), Some(OCI_MANIFEST)).unwrap().children.is_empty());
    }

    #[test]
    fn indexes_name_manifests() {
        let body =
            format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":3}}]}}"#);
        let parsed = parse(body.as_bytes(), Some(&format!("{OCI_INDEX}; charset=utf-8"))).unwrap();
        assert_eq!(parsed.media_type, OCI_INDEX);
        assert_eq!(parsed.children.len(), 1);
        assert_eq!(parse(body.as_bytes(), None).unwrap().media_type, OCI_INDEX, "inferred");
    }

    #[test]
    fn bad_manifests_are_refused() {
        let cfg = format!(r#""config":{{"mediaType":"c","digest":"{D1}","size":2}},"layers":[]"#);
        for body in [
            "not json".to_owned(),
            "[]".to_owned(),
            format!(r#"{{"schemaVersion":1,{cfg}}}"#),
            format!(r#"{{"schemaVersion":2,"mediaType":"text/plain",{cfg}}}"#),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}",{cfg}}}"#),
            r#"{"schemaVersion":2,"layers":[]}"#.to_owned(),
            r#"{"schemaVersion":2,"config":{"digest":"sha256:xyz","size":1},"layers":[]}"#.to_owned(),
            format!(r#"{{"schemaVersion":2,"config":{{"digest":"{D1}","size":-1}},"layers":[]}}"#),
        ] {
            assert_eq!(parse(body.as_bytes(), None).unwrap_err().code(), "MANIFEST_INVALID", "{body}");
        }
        let body = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",{cfg}}}"#);
        assert!(parse(body.as_bytes(), Some(DOCKER_MANIFEST)).is_err(), "body and header disagree");
        assert!(parse(body.as_bytes(), Some("application/octet-stream")).is_ok(), "a generic header is no claim");
    }
}
