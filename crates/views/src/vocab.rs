//! The v1 event vocabulary: event types, subjects and payloads.

use artifactstore_cbor::Value;
use artifactstore_eventlog::{Event, NewEvent, SubjectKind};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

/// A blob was stored at its content address.
pub const FILE_INGESTED: &str = "v1.file.ingested";
/// A blob was removed by collection: no live version named it for longer than the grace time.
pub const FILE_REMOVED: &str = "v1.file.removed";
/// A package version was published.
pub const PACKAGE_CREATED: &str = "v1.package.created";
/// A package version was deleted.
pub const PACKAGE_DELETED: &str = "v1.package.deleted";
/// A package version's retention date was set or moved.
pub const RETENTION_EXTENDED: &str = "v1.retention.extended";
/// A legal or operational hold was put on a package version.
pub const RETENTION_HOLD_SET: &str = "v1.retention.hold_set";
/// A hold was lifted.
pub const RETENTION_HOLD_RELEASED: &str = "v1.retention.hold_released";
/// A package version's retention ran out.
pub const RETENTION_EXPIRED: &str = "v1.retention.expired";
/// A blob's bytes were placed at a storage location.
pub const STORAGE_PLACED: &str = "v1.storage.placed";
/// A blob's bytes moved to another location or tier.
pub const STORAGE_MOVED: &str = "v1.storage.moved";
/// A blob's bytes were removed from a location.
pub const STORAGE_REMOVED: &str = "v1.storage.removed";
/// A retention policy was made or changed.
pub const POLICY_SET: &str = "v1.policy.set";
/// A retention policy was removed.
pub const POLICY_REMOVED: &str = "v1.policy.removed";
/// A lifecycle run (expiry and collection) that changed something.
pub const SYSTEM_GC: &str = "v1.system.gc";
/// An OCI manifest was pushed to a repository.
pub const OCI_MANIFEST_PUSHED: &str = "v1.oci.manifest.pushed";
/// An OCI manifest was deleted from a repository.
pub const OCI_MANIFEST_DELETED: &str = "v1.oci.manifest.deleted";
/// An OCI tag was set to a manifest (made or moved).
pub const OCI_TAG_SET: &str = "v1.oci.tag.set";
/// An OCI tag was deleted.
pub const OCI_TAG_DELETED: &str = "v1.oci.tag.deleted";
/// A blob was deleted from one OCI repository: hidden there, kept for every other.
pub const OCI_BLOB_DELETED: &str = "v1.oci.blob.deleted";
/// A blob deleted from an OCI repository was pushed or mounted there again.
pub const OCI_BLOB_LINKED: &str = "v1.oci.blob.linked";

/// One blob or manifest an OCI manifest names: a config, a layer, or a child of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciReference {
    /// `sha256:<hex>`, as the manifest names it.
    pub digest: String,
    /// `blake3:<hex>` of the same bytes.
    pub blake3: String,
    /// Length in bytes.
    pub size: u64,
    /// The media type the manifest gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// Payload of `v1.oci.manifest.pushed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciManifestPushed {
    /// The repository.
    pub repository: String,
    /// `sha256:<hex>` of the manifest's bytes: its OCI name.
    pub digest: String,
    /// `blake3:<hex>` of the manifest's bytes: the blob that holds them.
    pub blake3: String,
    /// The manifest's media type.
    pub media_type: String,
    /// Length of the manifest in bytes.
    pub size: u64,
    /// The artifact type: the manifest's `artifactType`, else its config's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// `sha256:<hex>` of the manifest this one refers to (`subject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The manifest's annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    /// What it names, in manifest order: config then layers, or an index's manifests.
    pub references: Vec<OciReference>,
}

/// Payload of `v1.oci.manifest.deleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciManifestDeleted {
    /// The repository.
    pub repository: String,
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// Why, if not a client's request (for example "untagged").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Payload of `v1.oci.tag.set` (the digest it now names) and `v1.oci.tag.deleted` (the digest it named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciTagChange {
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// `sha256:<hex>` of the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Payload of `v1.oci.blob.deleted` and `v1.oci.blob.linked`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciBlobChange {
    /// The repository.
    pub repository: String,
    /// `blake3:<hex>`.
    pub blake3: String,
    /// `sha256:<hex>`.
    pub sha256: String,
}

/// The subject id of the manifest `digest` in `repository`.
pub fn oci_manifest_id(repository: &str, digest: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("artifactstore:oci_manifest:{repository}@{digest}").as_bytes())
}

/// The subject id of the tag `tag` of `repository`.
pub fn oci_tag_id(repository: &str, tag: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("artifactstore:oci_tag:{repository}:{tag}").as_bytes())
}

/// The subject id of the blob `blake3` as `repository` sees it.
pub fn oci_blob_id(repository: &str, blake3: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("artifactstore:oci_blob:{repository}@{blake3}").as_bytes())
}

/// Which OCI event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciEvent {
    /// `v1.oci.manifest.pushed`.
    ManifestPushed(OciManifestPushed),
    /// `v1.oci.manifest.deleted`.
    ManifestDeleted(OciManifestDeleted),
    /// `v1.oci.tag.set`.
    TagSet(OciTagChange),
    /// `v1.oci.tag.deleted`.
    TagDeleted(OciTagChange),
    /// `v1.oci.blob.deleted`.
    BlobDeleted(OciBlobChange),
    /// `v1.oci.blob.linked`.
    BlobLinked(OciBlobChange),
}

/// Payload of `v1.system.gc`: what one run changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRun {
    /// Package versions expired.
    pub expired: u64,
    /// OCI manifests deleted because nothing kept them alive.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub untagged: u64,
    /// Blobs removed.
    pub removed: u64,
    /// Bytes of the removed blobs.
    pub bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The subject id of a blob: the UUIDv5 (URL namespace) of its `blake3:<hex>` digest string, the same on every instance.
pub fn file_id(blake3: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, blake3.as_bytes())
}

/// Payload of `v1.file.ingested`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIngested {
    /// `blake3:<hex>`.
    pub blake3: String,
    /// `sha256:<hex>`.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
    /// The media type the uploader declared, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// Payload of `v1.file.removed`: the blob, and why collection removed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRemoved {
    /// `blake3:<hex>`.
    pub blake3: String,
    /// `sha256:<hex>`.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
    /// Why, in words (for example "unreferenced since 2026-12-01T10:00:00Z").
    pub reason: String,
}

/// One file of a package version, as the manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFile {
    /// Relative path inside the package.
    pub path: String,
    /// `blake3:<hex>`.
    pub blake3: String,
    /// `sha256:<hex>`.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
    /// The media type, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// Payload of `v1.package.created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageCreated {
    /// Package name.
    pub name: String,
    /// Version string.
    pub version: String,
    /// The files, in manifest order.
    pub files: Vec<PackageFile>,
    /// Free metadata: a CBOR map.
    pub metadata: Value,
}

/// Payload of `v1.package.deleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageDeleted {
    /// Package name.
    pub name: String,
    /// Version string.
    pub version: String,
    /// Why, if the deleter said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Payload of every `v1.retention.*` event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionChange {
    /// The package version's id, as a hyphenated UUID string.
    pub package_id: String,
    /// Keep until this RFC 3339 time (for `extended`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Why, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `expired`: the version's package name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For `expired`: the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// For `expired`: the policy that let it go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// For `expired`: the policy's rule that let it go, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// Payload of every `v1.storage.*` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageChange {
    /// `blake3:<hex>` of the blob.
    pub blake3: String,
    /// Where the bytes are (after a move: where they are now).
    pub location: String,
    /// The storage tier of that location.
    pub tier: String,
    /// For `moved`: where the bytes were before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Payload of `v1.policy.set` (the policy as it now is) and `v1.policy.removed` (as it was).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChange {
    /// The policy's name; its subject id is `policy_id(name)`.
    pub name: String,
    /// The package-name prefix it governs.
    pub prefix: String,
    /// It keeps each package's this many newest versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u64>,
    /// It keeps versions created less than this many days ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u64>,
}

/// The subject id of the retention policy named `name`.
pub fn policy_id(name: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("artifactstore:policy:{name}").as_bytes())
}

/// Which policy event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// `v1.policy.set`.
    Set,
    /// `v1.policy.removed`.
    Removed,
}

/// Which retention event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionKind {
    /// `v1.retention.extended`.
    Extended,
    /// `v1.retention.hold_set`.
    HoldSet,
    /// `v1.retention.hold_released`.
    HoldReleased,
    /// `v1.retention.expired`.
    Expired,
}

/// Which storage event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    /// `v1.storage.placed`.
    Placed,
    /// `v1.storage.moved`.
    Moved,
    /// `v1.storage.removed`.
    Removed,
}

/// An event the views understand, with its typed payload.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryEvent {
    /// `v1.file.ingested`.
    FileIngested(FileIngested),
    /// `v1.file.removed`.
    FileRemoved(FileRemoved),
    /// `v1.package.created`; the package id is the event's subject.
    PackageCreated {
        /// The new version's id (a UUIDv7).
        package_id: Uuid,
        /// The manifest.
        payload: PackageCreated,
    },
    /// `v1.package.deleted`.
    PackageDeleted {
        /// The deleted version's id.
        package_id: Uuid,
        /// Name, version and reason.
        payload: PackageDeleted,
    },
    /// `v1.retention.*`.
    Retention {
        /// Which retention event.
        kind: RetentionKind,
        /// Its payload.
        payload: RetentionChange,
    },
    /// `v1.storage.*`.
    Storage {
        /// Which storage event.
        kind: StorageKind,
        /// Its payload.
        payload: StorageChange,
    },
    /// `v1.policy.*`.
    Policy {
        /// Which policy event.
        kind: PolicyKind,
        /// Its payload.
        payload: PolicyChange,
    },
    /// `v1.oci.*`.
    Oci(OciEvent),
    /// `v1.system.gc`; the views keep nothing of it.
    SystemGc {
        /// The run's id (a UUIDv7), the event's subject.
        run_id: Uuid,
        /// What the run changed.
        payload: GcRun,
    },
}

impl RegistryEvent {
    /// The event type this event is logged as.
    pub fn event_type(&self) -> &'static str {
        match self {
            RegistryEvent::FileIngested(_) => FILE_INGESTED,
            RegistryEvent::FileRemoved(_) => FILE_REMOVED,
            RegistryEvent::PackageCreated { .. } => PACKAGE_CREATED,
            RegistryEvent::PackageDeleted { .. } => PACKAGE_DELETED,
            RegistryEvent::Retention { kind, .. } => match kind {
                RetentionKind::Extended => RETENTION_EXTENDED,
                RetentionKind::HoldSet => RETENTION_HOLD_SET,
                RetentionKind::HoldReleased => RETENTION_HOLD_RELEASED,
                RetentionKind::Expired => RETENTION_EXPIRED,
            },
            RegistryEvent::Storage { kind, .. } => match kind {
                StorageKind::Placed => STORAGE_PLACED,
                StorageKind::Moved => STORAGE_MOVED,
                StorageKind::Removed => STORAGE_REMOVED,
            },
            RegistryEvent::Policy { kind, .. } => match kind {
                PolicyKind::Set => POLICY_SET,
                PolicyKind::Removed => POLICY_REMOVED,
            },
            RegistryEvent::SystemGc { .. } => SYSTEM_GC,
            RegistryEvent::Oci(oci) => match oci {
                OciEvent::ManifestPushed(_) => OCI_MANIFEST_PUSHED,
                OciEvent::ManifestDeleted(_) => OCI_MANIFEST_DELETED,
                OciEvent::TagSet(_) => OCI_TAG_SET,
                OciEvent::TagDeleted(_) => OCI_TAG_DELETED,
                OciEvent::BlobDeleted(_) => OCI_BLOB_DELETED,
                OciEvent::BlobLinked(_) => OCI_BLOB_LINKED,
            },
        }
    }

    /// What the event is about.
    pub fn subject(&self) -> Result<(SubjectKind, Uuid), Error> {
        Ok(match self {
            RegistryEvent::FileIngested(p) => (SubjectKind::File, file_id(&p.blake3)),
            RegistryEvent::FileRemoved(p) => (SubjectKind::File, file_id(&p.blake3)),
            RegistryEvent::PackageCreated { package_id, .. } | RegistryEvent::PackageDeleted { package_id, .. } => {
                (SubjectKind::Package, *package_id)
            }
            RegistryEvent::Retention { payload, .. } => {
                (SubjectKind::Retention, parse_uuid(self, &payload.package_id)?)
            }
            RegistryEvent::Storage { payload, .. } => (SubjectKind::Storage, file_id(&payload.blake3)),
            RegistryEvent::Policy { payload, .. } => (SubjectKind::Policy, policy_id(&payload.name)),
            RegistryEvent::SystemGc { run_id, .. } => (SubjectKind::System, *run_id),
            RegistryEvent::Oci(oci) => match oci {
                OciEvent::ManifestPushed(p) => (SubjectKind::OciManifest, oci_manifest_id(&p.repository, &p.digest)),
                OciEvent::ManifestDeleted(p) => (SubjectKind::OciManifest, oci_manifest_id(&p.repository, &p.digest)),
                OciEvent::TagSet(p) | OciEvent::TagDeleted(p) => {
                    (SubjectKind::OciTag, oci_tag_id(&p.repository, &p.tag))
                }
                OciEvent::BlobDeleted(p) | OciEvent::BlobLinked(p) => {
                    (SubjectKind::OciBlob, oci_blob_id(&p.repository, &p.blake3))
                }
            },
        })
    }

    /// The event as the log takes it, caused by `actor`.
    pub fn to_new_event(&self, actor: &str) -> Result<NewEvent, Error> {
        let payload = match self {
            RegistryEvent::FileIngested(p) => encode(self, p),
            RegistryEvent::FileRemoved(p) => encode(self, p),
            RegistryEvent::PackageCreated { payload, .. } => {
                if !matches!(payload.metadata, Value::Map(_)) {
                    return Err(bad_payload(self.event_type(), 0, "metadata must be a map"));
                }
                encode(self, payload)
            }
            RegistryEvent::PackageDeleted { payload, .. } => encode(self, payload),
            RegistryEvent::Retention { payload, .. } => encode(self, payload),
            RegistryEvent::Storage { payload, .. } => encode(self, payload),
            RegistryEvent::Policy { payload, .. } => encode(self, payload),
            RegistryEvent::SystemGc { payload, .. } => encode(self, payload),
            RegistryEvent::Oci(oci) => match oci {
                OciEvent::ManifestPushed(p) => encode(self, p),
                OciEvent::ManifestDeleted(p) => encode(self, p),
                OciEvent::TagSet(p) | OciEvent::TagDeleted(p) => encode(self, p),
                OciEvent::BlobDeleted(p) | OciEvent::BlobLinked(p) => encode(self, p),
            },
        }?;
        let (subject_kind, subject_id) = self.subject()?;
        Ok(NewEvent {
            event_type: self.event_type().to_owned(),
            subject_kind,
            subject_id: Some(subject_id),
            actor: actor.to_owned(),
            payload,
        })
    }

    /// The typed form of a stored event; `None` for types the views do not interpret.
    pub fn from_event(event: &Event) -> Result<Option<RegistryEvent>, Error> {
        let subject = || {
            event
                .subject_id
                .ok_or_else(|| bad_payload(&event.event_type, event.sequence, "the event has no subject id"))
        };
        let retention = |kind| decode(event).map(|payload| RegistryEvent::Retention { kind, payload });
        let storage = |kind| decode(event).map(|payload| RegistryEvent::Storage { kind, payload });
        let policy = |kind| decode(event).map(|payload| RegistryEvent::Policy { kind, payload });
        let typed = match event.event_type.as_str() {
            FILE_INGESTED => RegistryEvent::FileIngested(decode(event)?),
            FILE_REMOVED => RegistryEvent::FileRemoved(decode(event)?),
            PACKAGE_CREATED => RegistryEvent::PackageCreated { package_id: subject()?, payload: decode(event)? },
            PACKAGE_DELETED => RegistryEvent::PackageDeleted { package_id: subject()?, payload: decode(event)? },
            RETENTION_EXTENDED => retention(RetentionKind::Extended)?,
            RETENTION_HOLD_SET => retention(RetentionKind::HoldSet)?,
            RETENTION_HOLD_RELEASED => retention(RetentionKind::HoldReleased)?,
            RETENTION_EXPIRED => retention(RetentionKind::Expired)?,
            STORAGE_PLACED => storage(StorageKind::Placed)?,
            STORAGE_MOVED => storage(StorageKind::Moved)?,
            STORAGE_REMOVED => storage(StorageKind::Removed)?,
            POLICY_SET => policy(PolicyKind::Set)?,
            POLICY_REMOVED => policy(PolicyKind::Removed)?,
            SYSTEM_GC => RegistryEvent::SystemGc { run_id: subject()?, payload: decode(event)? },
            OCI_MANIFEST_PUSHED => RegistryEvent::Oci(OciEvent::ManifestPushed(decode(event)?)),
            OCI_MANIFEST_DELETED => RegistryEvent::Oci(OciEvent::ManifestDeleted(decode(event)?)),
            OCI_TAG_SET => RegistryEvent::Oci(OciEvent::TagSet(decode(event)?)),
            OCI_TAG_DELETED => RegistryEvent::Oci(OciEvent::TagDeleted(decode(event)?)),
            OCI_BLOB_DELETED => RegistryEvent::Oci(OciEvent::BlobDeleted(decode(event)?)),
            OCI_BLOB_LINKED => RegistryEvent::Oci(OciEvent::BlobLinked(decode(event)?)),
            _ => return Ok(None),
        };
        Ok(Some(typed))
    }
}

fn encode<T: Serialize>(event: &RegistryEvent, payload: &T) -> Result<Vec<u8>, Error> {
    artifactstore_cbor::to_vec(payload).map_err(|err| bad_payload(event.event_type(), 0, &err.to_string()))
}

fn decode<T: DeserializeOwned>(event: &Event) -> Result<T, Error> {
    artifactstore_cbor::from_slice(&event.payload)
        .map_err(|err| bad_payload(&event.event_type, event.sequence, &err.to_string()))
}

fn parse_uuid(event: &RegistryEvent, text: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(text).map_err(|err| bad_payload(event.event_type(), 0, &format!("package_id: {err}")))
}

pub(crate) fn bad_payload(event_type: &str, sequence: u64, reason: &str) -> Error {
    Error::BadPayload { sequence, event_type: event_type.to_owned(), reason: reason.to_owned() }
}
