//! The replay property test's generator and model: lanes of random steps that each stand for a valid event in the
//! lane's own names and blobs, and a plain in-memory model of what the views must hold after them.

use std::collections::{BTreeMap, BTreeSet};

use artifactstore_cbor::Value;
use artifactstore_digest::DualDigest;
use artifactstore_views::vocab::{
    FileIngested, FileRemoved, OciBlobChange, OciEvent, OciManifestDeleted, OciManifestPushed, OciReference,
    OciTagChange, PackageCreated, PackageDeleted, PackageFile, PolicyChange, PolicyKind, RetentionChange,
    RetentionKind, StorageChange, StorageKind,
};
use artifactstore_views::{RegistryEvent, ViewsDump};
use proptest::prelude::*;
use uuid::Uuid;

/// One step a lane may take; indexes pick among what the lane has made so far.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Ingest {
        seed: u16,
        media: bool,
    },
    Publish {
        files: Vec<prop::sample::Index>,
        version: u8,
        meta: u8,
    },
    Delete(prop::sample::Index),
    Extend {
        package: prop::sample::Index,
        days: u16,
    },
    Hold {
        package: prop::sample::Index,
        set: bool,
    },
    Expire(prop::sample::Index),
    Place {
        file: prop::sample::Index,
        location: u8,
        tier: u8,
    },
    Move {
        file: prop::sample::Index,
        location: u8,
    },
    Remove(prop::sample::Index),
    /// A unit that records a valid event and then fails: nothing of it may remain.
    Abandon {
        seed: u16,
    },
    /// Makes or changes one of the lane's four policies.
    SetPolicy {
        policy: u8,
        keep_last: Option<u8>,
        keep_days: Option<u16>,
    },
    RemovePolicy(prop::sample::Index),
    /// Removes one of the lane's blobs that no live version names (as collection does).
    Collect(prop::sample::Index),
    /// Pushes an OCI manifest held by one of the lane's blobs, naming others (and maybe a subject).
    OciPush {
        manifest: prop::sample::Index,
        refs: Vec<prop::sample::Index>,
        subject: Option<prop::sample::Index>,
    },
    /// Sets one of three tags to one of the lane's manifests.
    OciTag {
        manifest: prop::sample::Index,
        tag: u8,
    },
    /// Deletes one of the lane's tags.
    OciUntag(prop::sample::Index),
    /// Deletes one of the lane's manifests that no tag names.
    OciDelete(prop::sample::Index),
    /// Hides a blob from the lane's repository, or shows a hidden one again.
    OciHide {
        file: prop::sample::Index,
        hide: bool,
    },
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        3 => (any::<u16>(), any::<bool>()).prop_map(|(seed, media)| Op::Ingest { seed, media }),
        3 => (prop::collection::vec(index(), 0..4), any::<u8>(), any::<u8>())
            .prop_map(|(files, version, meta)| Op::Publish { files, version, meta }),
        1 => index().prop_map(Op::Delete),
        1 => (index(), any::<u16>()).prop_map(|(package, days)| Op::Extend { package, days }),
        1 => (index(), any::<bool>()).prop_map(|(package, set)| Op::Hold { package, set }),
        1 => index().prop_map(Op::Expire),
        1 => (index(), 0..3u8, 0..3u8).prop_map(|(file, location, tier)| Op::Place { file, location, tier }),
        1 => (index(), 0..3u8).prop_map(|(file, location)| Op::Move { file, location }),
        1 => index().prop_map(Op::Remove),
        1 => any::<u16>().prop_map(|seed| Op::Abandon { seed }),
        1 => (0..4u8, any::<Option<u8>>(), any::<Option<u16>>())
            .prop_map(|(policy, keep_last, keep_days)| Op::SetPolicy { policy, keep_last, keep_days }),
        1 => index().prop_map(Op::RemovePolicy),
        2 => index().prop_map(Op::Collect),
        2 => (index(), prop::collection::vec(index(), 0..3), any::<Option<prop::sample::Index>>())
            .prop_map(|(manifest, refs, subject)| Op::OciPush { manifest, refs, subject }),
        1 => (index(), 0..3u8).prop_map(|(manifest, tag)| Op::OciTag { manifest, tag }),
        1 => index().prop_map(Op::OciUntag),
        1 => index().prop_map(Op::OciDelete),
        1 => (index(), any::<bool>()).prop_map(|(file, hide)| Op::OciHide { file, hide }),
    ]
}

/// What a lane has made, and the model of what the views must hold.
#[derive(Default)]
pub(crate) struct Lane {
    id: usize,
    files: Vec<FileIngested>,
    packages: Vec<(Uuid, String, String)>,
    placed: BTreeMap<(String, String), String>,
    policies: BTreeMap<String, String>,
    /// The files of each live version.
    version_files: BTreeMap<Uuid, Vec<String>>,
    /// Blobs collection removed (and not ingested again since).
    removed: BTreeSet<String>,
    /// Live OCI manifests: digest, own blob, the blobs they name.
    manifests: Vec<(String, String, Vec<String>)>,
    /// OCI tags and the digest each names.
    tags: BTreeMap<String, String>,
    /// Blobs hidden from the lane's repository.
    hidden: BTreeSet<String>,
}

/// A policy as the model keeps it: prefix, keep_last, keep_days.
pub(crate) type ModelPolicy = (String, Option<u64>, Option<u64>);

#[derive(Default, Debug, PartialEq, Eq)]
pub(crate) struct Model {
    files: BTreeSet<String>,
    packages: BTreeSet<(String, String)>,
    holds: BTreeSet<(String, String)>,
    expired: BTreeSet<(String, String)>,
    storage: BTreeSet<(String, String, String)>,
    policies: BTreeMap<String, ModelPolicy>,
    /// Live blobs with the number of live version files naming each.
    refs: BTreeMap<String, i64>,
    removed: BTreeSet<String>,
    /// OCI manifests (repository, digest), tags (repository, tag, digest), hidden blobs (repository, blake3).
    manifests: BTreeSet<(String, String)>,
    tags: BTreeSet<(String, String, String)>,
    hidden: BTreeSet<(String, String)>,
}

pub(crate) fn blob(lane: usize, seed: u16, media: bool) -> FileIngested {
    let digests = DualDigest::of(format!("lane {lane} blob {seed}").as_bytes());
    FileIngested {
        blake3: digests.blake3.to_string(),
        sha256: digests.sha256.to_string(),
        size: digests.size,
        media_type: media.then(|| "application/octet-stream".to_owned()),
    }
}

impl Lane {
    /// A lane with nothing made yet.
    pub(crate) fn new(id: usize) -> Lane {
        Lane { id, ..Lane::default() }
    }

    /// The event an op stands for in this lane's state, if it is valid there.
    pub(crate) fn event_for(&mut self, op: &Op) -> Option<RegistryEvent> {
        let tiers = ["hot", "warm", "cold"];
        Some(match op {
            Op::Ingest { seed, media } => {
                let file = blob(self.id, *seed, *media);
                if self.removed.remove(&file.blake3) {
                    // Removed bytes, ingested again.
                    return Some(RegistryEvent::FileIngested(file));
                }
                if self.files.iter().any(|f| f.blake3 == file.blake3) {
                    return None;
                }
                self.files.push(file.clone());
                RegistryEvent::FileIngested(file)
            }
            Op::Publish { files, version, meta } => {
                let name = format!("lane{}/pkg", self.id);
                let version = format!("1.{version}.0");
                if self.packages.iter().any(|(_, n, v)| *n == name && *v == version) {
                    return None;
                }
                let mut chosen: Vec<&FileIngested> = Vec::new();
                if !self.files.is_empty() {
                    for i in files {
                        let f = &self.files[i.index(self.files.len())];
                        if !self.removed.contains(&f.blake3) && !chosen.iter().any(|c| c.blake3 == f.blake3) {
                            chosen.push(f);
                        }
                    }
                }
                let files = chosen
                    .iter()
                    .enumerate()
                    .map(|(i, f)| PackageFile {
                        path: format!("dir/file{i}.bin"),
                        blake3: f.blake3.clone(),
                        sha256: f.sha256.clone(),
                        size: f.size,
                        media_type: f.media_type.clone(),
                    })
                    .collect();
                let metadata = Value::Map(vec![
                    (Value::Text("z".into()), Value::Integer((*meta).into())),
                    (Value::Text("a".into()), Value::Array(vec![Value::Bool(true), Value::Float(0.5)])),
                ]);
                let package_id = Uuid::now_v7();
                self.packages.push((package_id, name.clone(), version.clone()));
                self.version_files.insert(package_id, chosen.iter().map(|f| f.blake3.clone()).collect());
                RegistryEvent::PackageCreated { package_id, payload: PackageCreated { name, version, files, metadata } }
            }
            Op::Delete(i) => {
                if self.packages.is_empty() {
                    return None;
                }
                let (package_id, name, version) = self.packages.remove(i.index(self.packages.len()));
                self.version_files.remove(&package_id);
                RegistryEvent::PackageDeleted { package_id, payload: PackageDeleted { name, version, reason: None } }
            }
            Op::Extend { package, days } => self.retention(package, RetentionKind::Extended, Some(*days))?,
            Op::Hold { package, set } => {
                self.retention(package, if *set { RetentionKind::HoldSet } else { RetentionKind::HoldReleased }, None)?
            }
            Op::Expire(package) => self.retention(package, RetentionKind::Expired, None)?,
            Op::Place { file, location, tier } => {
                let f = self.pick_file(file)?;
                let location = format!("disk{location}");
                self.placed.insert((f.clone(), location.clone()), tiers[*tier as usize].to_owned());
                RegistryEvent::Storage {
                    kind: StorageKind::Placed,
                    payload: StorageChange { blake3: f, location, tier: tiers[*tier as usize].into(), from: None },
                }
            }
            Op::Move { file, location } => {
                let f = self.pick_file(file)?;
                let from = self.placed.keys().find(|(b, _)| *b == f).map(|(_, l)| l.clone())?;
                let to = format!("archive{location}");
                self.placed.remove(&(f.clone(), from.clone()));
                self.placed.insert((f.clone(), to.clone()), "cold".into());
                RegistryEvent::Storage {
                    kind: StorageKind::Moved,
                    payload: StorageChange { blake3: f, location: to, tier: "cold".into(), from: Some(from) },
                }
            }
            Op::Remove(file) => {
                let f = self.pick_file(file)?;
                let location = self.placed.keys().find(|(b, _)| *b == f).map(|(_, l)| l.clone())?;
                let tier = self.placed.remove(&(f.clone(), location.clone()))?;
                RegistryEvent::Storage {
                    kind: StorageKind::Removed,
                    payload: StorageChange { blake3: f, location, tier, from: None },
                }
            }
            Op::Abandon { .. } => return None,
            Op::SetPolicy { policy, keep_last, keep_days } => {
                let name = format!("lane{}-p{policy}", self.id);
                let prefix = format!("lane{}/", self.id);
                self.policies.insert(name.clone(), prefix.clone());
                RegistryEvent::Policy {
                    kind: PolicyKind::Set,
                    payload: PolicyChange {
                        name,
                        prefix,
                        keep_last: keep_last.map(u64::from),
                        keep_days: keep_days.map(u64::from),
                    },
                }
            }
            Op::Collect(i) => {
                let mut named: BTreeSet<&String> = self.version_files.values().flatten().collect();
                for (_, own, refs) in &self.manifests {
                    named.insert(own);
                    named.extend(refs);
                }
                let free: Vec<&FileIngested> = self
                    .files
                    .iter()
                    .filter(|f| !self.removed.contains(&f.blake3) && !named.contains(&f.blake3))
                    .collect();
                if free.is_empty() {
                    return None;
                }
                let f = free[i.index(free.len())].clone();
                self.removed.insert(f.blake3.clone());
                self.placed.retain(|(b, _), _| *b != f.blake3);
                RegistryEvent::FileRemoved(FileRemoved {
                    blake3: f.blake3,
                    sha256: f.sha256,
                    size: f.size,
                    reason: "unreferenced".into(),
                })
            }
            Op::OciPush { manifest, refs, subject } => {
                let repository = format!("lane{}/img", self.id);
                let own = self.live_file(manifest)?;
                if self.manifests.iter().any(|(d, _, _)| *d == own.sha256) {
                    return None;
                }
                let mut references = Vec::new();
                for i in refs {
                    let f = self.live_file(i)?;
                    references.push(OciReference {
                        digest: f.sha256,
                        blake3: f.blake3,
                        size: f.size,
                        media_type: None,
                    });
                }
                let subject = subject.as_ref().and_then(|i| self.live_file(i)).map(|f| f.sha256);
                let named = references.iter().map(|r| r.blake3.clone()).collect();
                self.manifests.push((own.sha256.clone(), own.blake3.clone(), named));
                RegistryEvent::Oci(OciEvent::ManifestPushed(OciManifestPushed {
                    repository,
                    digest: own.sha256,
                    blake3: own.blake3,
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    size: own.size,
                    artifact_type: Some("application/x.test".into()),
                    subject,
                    annotations: Some([("k".to_owned(), format!("{}", self.id))].into()),
                    references,
                }))
            }
            Op::OciTag { manifest, tag } => {
                if self.manifests.is_empty() {
                    return None;
                }
                let digest = self.manifests[manifest.index(self.manifests.len())].0.clone();
                let tag = format!("t{tag}");
                self.tags.insert(tag.clone(), digest.clone());
                let repository = format!("lane{}/img", self.id);
                RegistryEvent::Oci(OciEvent::TagSet(OciTagChange { repository, tag, digest: Some(digest) }))
            }
            Op::OciUntag(i) => {
                let tag = self.tags.keys().nth(i.index(self.tags.len().max(1)))?.clone();
                let digest = self.tags.remove(&tag);
                let repository = format!("lane{}/img", self.id);
                RegistryEvent::Oci(OciEvent::TagDeleted(OciTagChange { repository, tag, digest }))
            }
            Op::OciDelete(i) => {
                let untagged: Vec<usize> = (0..self.manifests.len())
                    .filter(|&m| !self.tags.values().any(|d| *d == self.manifests[m].0))
                    .collect();
                let m = *untagged.get(i.index(untagged.len().max(1)))?;
                let (digest, _, _) = self.manifests.remove(m);
                let repository = format!("lane{}/img", self.id);
                RegistryEvent::Oci(OciEvent::ManifestDeleted(OciManifestDeleted { repository, digest, reason: None }))
            }
            Op::OciHide { file, hide } => {
                let f = self.live_file(file)?;
                let change =
                    OciBlobChange { repository: format!("lane{}/img", self.id), blake3: f.blake3, sha256: f.sha256 };
                if *hide {
                    self.hidden.insert(change.blake3.clone());
                    RegistryEvent::Oci(OciEvent::BlobDeleted(change))
                } else {
                    self.hidden.remove(&change.blake3);
                    RegistryEvent::Oci(OciEvent::BlobLinked(change))
                }
            }
            Op::RemovePolicy(i) => {
                let name = self.policies.keys().nth(i.index(self.policies.len().max(1)))?.clone();
                let prefix = self.policies.remove(&name)?;
                RegistryEvent::Policy {
                    kind: PolicyKind::Removed,
                    payload: PolicyChange { name, prefix, keep_last: None, keep_days: None },
                }
            }
        })
    }

    /// One of the lane's blobs, if it is live.
    fn live_file(&self, i: &prop::sample::Index) -> Option<FileIngested> {
        let f = self.files.get(i.index(self.files.len().max(1)))?;
        (!self.removed.contains(&f.blake3)).then(|| f.clone())
    }

    fn pick_file(&self, i: &prop::sample::Index) -> Option<String> {
        let f = self.files.get(i.index(self.files.len().max(1)))?.blake3.clone();
        (!self.removed.contains(&f)).then_some(f)
    }

    fn retention(&self, i: &prop::sample::Index, kind: RetentionKind, days: Option<u16>) -> Option<RegistryEvent> {
        if self.packages.is_empty() {
            return None;
        }
        let (id, _, _) = &self.packages[i.index(self.packages.len())];
        let until = days.map(|d| (chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(i64::from(d))).to_rfc3339());
        Some(RegistryEvent::Retention {
            kind,
            payload: RetentionChange {
                package_id: id.to_string(),
                until,
                reason: Some(format!("{kind:?}")),
                ..RetentionChange::default()
            },
        })
    }
}

/// The model's projection of a dump.
pub(crate) fn project(dump: &ViewsDump) -> Model {
    let by_id: BTreeMap<Uuid, (String, String)> =
        dump.packages.iter().map(|p| (p.package_id, (p.name.clone(), p.version.clone()))).collect();
    Model {
        files: dump.files.iter().filter(|f| !f.is_removed()).map(|f| f.blake3.clone()).collect(),
        refs: dump.files.iter().filter(|f| !f.is_removed()).map(|f| (f.blake3.clone(), f.refs)).collect(),
        removed: dump.files.iter().filter(|f| f.is_removed()).map(|f| f.blake3.clone()).collect(),
        packages: by_id.values().cloned().collect(),
        holds: dump.retention.iter().filter(|r| r.hold).map(|r| by_id[&r.package_id].clone()).collect(),
        expired: dump.retention.iter().filter(|r| r.expired).map(|r| by_id[&r.package_id].clone()).collect(),
        storage: dump.storage.iter().map(|s| (s.blake3.clone(), s.location.clone(), s.tier.clone())).collect(),
        policies: dump
            .policies
            .iter()
            .map(|p| {
                let count = |n: Option<i64>| n.map(|n| u64::try_from(n).unwrap());
                (p.name.clone(), (p.prefix.clone(), count(p.keep_last), count(p.keep_days)))
            })
            .collect(),
        manifests: dump.oci_manifests.iter().map(|m| (m.repository.clone(), m.digest.clone())).collect(),
        tags: dump.oci_tags.iter().map(|t| (t.repository.clone(), t.tag.clone(), t.digest.clone())).collect(),
        hidden: dump.oci_blobs_deleted.iter().map(|h| (h.repository.clone(), h.blake3.clone())).collect(),
    }
}

/// Folds the events the lanes committed into the model, in commit order.
pub(crate) fn model_of(events: &[RegistryEvent]) -> Model {
    let mut m = Model::default();
    let mut names: BTreeMap<Uuid, (String, String)> = BTreeMap::new();
    let mut files_of: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    let mut manifest_blobs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for e in events {
        match e {
            RegistryEvent::FileIngested(f) => {
                m.files.insert(f.blake3.clone());
                m.removed.remove(&f.blake3);
                m.refs.entry(f.blake3.clone()).or_insert(0);
            }
            RegistryEvent::FileRemoved(f) => {
                assert!(m.files.remove(&f.blake3));
                assert_eq!(m.refs.remove(&f.blake3), Some(0));
                m.removed.insert(f.blake3.clone());
                m.storage.retain(|(b, _, _)| *b != f.blake3);
            }
            RegistryEvent::PackageCreated { package_id, payload } => {
                let key = (payload.name.clone(), payload.version.clone());
                names.insert(*package_id, key.clone());
                files_of.insert(*package_id, payload.files.iter().map(|f| f.blake3.clone()).collect());
                for file in &payload.files {
                    *m.refs.get_mut(&file.blake3).unwrap() += 1;
                }
                m.packages.insert(key);
            }
            RegistryEvent::PackageDeleted { package_id, .. } => {
                for blake3 in files_of.remove(package_id).unwrap() {
                    *m.refs.get_mut(&blake3).unwrap() -= 1;
                }
                let key = names.remove(package_id).unwrap();
                m.packages.remove(&key);
                m.holds.remove(&key);
                m.expired.remove(&key);
            }
            RegistryEvent::Retention { kind, payload } => {
                let key = names[&Uuid::parse_str(&payload.package_id).unwrap()].clone();
                match kind {
                    RetentionKind::HoldSet => {
                        m.holds.insert(key);
                    }
                    RetentionKind::HoldReleased => {
                        m.holds.remove(&key);
                    }
                    RetentionKind::Expired => {
                        m.expired.insert(key);
                    }
                    RetentionKind::Extended => {}
                }
            }
            RegistryEvent::Storage { kind, payload } => {
                if let Some(from) = &payload.from {
                    m.storage.retain(|(b, l, _)| !(*b == payload.blake3 && l == from));
                }
                m.storage.retain(|(b, l, _)| !(*b == payload.blake3 && *l == payload.location));
                if *kind != StorageKind::Removed {
                    m.storage.insert((payload.blake3.clone(), payload.location.clone(), payload.tier.clone()));
                }
            }
            RegistryEvent::Policy { kind: PolicyKind::Set, payload } => {
                let policy = (payload.prefix.clone(), payload.keep_last, payload.keep_days);
                m.policies.insert(payload.name.clone(), policy);
            }
            RegistryEvent::Policy { kind: PolicyKind::Removed, payload } => {
                m.policies.remove(&payload.name);
            }
            RegistryEvent::SystemGc { .. } => {}
            RegistryEvent::Oci(OciEvent::ManifestPushed(p)) => {
                let key = (p.repository.clone(), p.digest.clone());
                let mut held = vec![p.blake3.clone()];
                held.extend(p.references.iter().map(|r| r.blake3.clone()));
                for blake3 in &held {
                    *m.refs.get_mut(blake3).unwrap() += 1;
                }
                manifest_blobs.insert(key.clone(), held);
                m.manifests.insert(key);
            }
            RegistryEvent::Oci(OciEvent::ManifestDeleted(p)) => {
                let key = (p.repository.clone(), p.digest.clone());
                for blake3 in manifest_blobs.remove(&key).unwrap() {
                    *m.refs.get_mut(&blake3).unwrap() -= 1;
                }
                assert!(m.manifests.remove(&key));
            }
            RegistryEvent::Oci(OciEvent::TagSet(p)) => {
                m.tags.retain(|(r, t, _)| !(*r == p.repository && *t == p.tag));
                m.tags.insert((p.repository.clone(), p.tag.clone(), p.digest.clone().unwrap()));
            }
            RegistryEvent::Oci(OciEvent::TagDeleted(p)) => {
                m.tags.retain(|(r, t, _)| !(*r == p.repository && *t == p.tag));
            }
            RegistryEvent::Oci(OciEvent::BlobDeleted(p)) => {
                m.hidden.insert((p.repository.clone(), p.blake3.clone()));
            }
            RegistryEvent::Oci(OciEvent::BlobLinked(p)) => {
                m.hidden.remove(&(p.repository.clone(), p.blake3.clone()));
            }
        }
    }
    m
}
