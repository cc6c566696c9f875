//! What a token limited to some package-name prefixes reads on the calls that name no package (ADR 0034): the
//! events, blobs, packages and policies of its prefixes, and its own uploads.

use std::collections::HashMap;

use artifactstore_cbor::Value as Cbor;
use artifactstore_eventlog::{Event, EventLog, Filter, SubjectKind};
use artifactstore_views::{queries, FileRow};
use uuid::Uuid;

use crate::auth::Caller;
use crate::problem::ApiError;
use crate::server::AppState;

/// Package names looked up for retention events, kept for one feed response or stream, up to this many.
const NAMES_KEPT: usize = 10_000;

/// The events one caller may see.
#[derive(Debug)]
pub(crate) struct ReadScope {
    /// `None` when the caller reads every package.
    caller: Option<Caller>,
    /// The package name of each package id a retention event named, or `None` when the log has none.
    names: HashMap<Uuid, Option<String>>,
}

impl ReadScope {
    /// The scope of `caller`.
    pub(crate) fn of(caller: Caller) -> ReadScope {
        let caller = (!caller.reads_everything()).then_some(caller);
        ReadScope { caller, names: HashMap::new() }
    }

    /// Whether the caller sees every event.
    pub(crate) fn is_everything(&self) -> bool {
        self.caller.is_none()
    }

    /// Whether the caller may see `event`:
    ///
    /// - package, retention and OCI events when their package or repository is under its prefixes;
    /// - policy events when the policy's prefix is;
    /// - file events it caused (its own uploads);
    /// - storage and system events never.
    pub(crate) async fn sees(&mut self, log: &EventLog, event: &Event) -> Result<bool, ApiError> {
        let Some(caller) = &self.caller else { return Ok(true) };
        // The name the event concerns, which the caller's prefixes must cover.
        let name = match event.subject_kind {
            SubjectKind::Package => payload_text(event, "name"),
            SubjectKind::OciManifest | SubjectKind::OciTag | SubjectKind::OciBlob => payload_text(event, "repository"),
            SubjectKind::Policy => payload_text(event, "prefix"),
            SubjectKind::File => return Ok(event.actor == caller.actor()),
            SubjectKind::Storage | SubjectKind::System => return Ok(false),
            SubjectKind::Retention => match (payload_text(event, "name"), event.subject_id) {
                (Some(name), _) => Some(name),
                (None, Some(id)) => self.package_name(log, id).await?,
                (None, None) => None,
            },
        };
        Ok(name.is_some_and(|name| self.caller.as_ref().is_some_and(|caller| caller.may_read(&name))))
    }

    /// `events` less those the caller may not see.
    pub(crate) async fn retain(&mut self, log: &EventLog, events: Vec<Event>) -> Result<Vec<Event>, ApiError> {
        if self.is_everything() {
            return Ok(events);
        }
        let mut kept = Vec::with_capacity(events.len());
        for event in events {
            if self.sees(log, &event).await? {
                kept.push(event);
            }
        }
        Ok(kept)
    }

    /// The name of the package version `id`, from the first event of its subject.
    async fn package_name(&mut self, log: &EventLog, id: Uuid) -> Result<Option<String>, ApiError> {
        if let Some(name) = self.names.get(&id) {
            return Ok(name.clone());
        }
        let filter = Filter { event_type: None, subject_kind: Some("package".to_owned()), subject_id: Some(id) };
        let first = log.read(0, log.head().sequence, 1, &filter).await?;
        let name = first.first().and_then(|event| payload_text(event, "name"));
        if self.names.len() >= NAMES_KEPT {
            self.names.clear();
        }
        self.names.insert(id, name.clone());
        Ok(name)
    }
}

/// The text member `key` of an event's payload map.
fn payload_text(event: &Event, key: &str) -> Option<String> {
    match artifactstore_cbor::decode_value(&event.payload).ok()? {
        Cbor::Map(entries) => entries.into_iter().find_map(|(k, v)| match (k, v) {
            (Cbor::Text(k), Cbor::Text(v)) if k == key => Some(v),
            _ => None,
        }),
        _ => None,
    }
}

/// Whether `caller` may read the blob `row`: it reads every package, a live package version under its prefixes
/// names the blob, a manifest of the OCI `repository` it reads through names it, or its subject uploaded it.
pub(crate) async fn may_read_blob(
    state: &AppState,
    caller: &Caller,
    repository: Option<&str>,
    row: &FileRow,
) -> Result<bool, ApiError> {
    if caller.reads_everything() {
        return Ok(true);
    }
    {
        let mut conn = state.instance.db.acquire().await?;
        if let Some(repository) = repository.filter(|r| caller.may_read(r)) {
            if artifactstore_views::oci::repository_names_blob(&mut conn, repository, &row.blake3).await? {
                return Ok(true);
            }
        }
        let names = queries::packages_naming(&mut conn, &row.blake3).await?;
        if names.iter().any(|name| caller.may_read(name)) {
            return Ok(true);
        }
    }
    let history = state.instance.log.get_many(&row.history()).await?;
    Ok(history
        .iter()
        .any(|event| event.event_type == artifactstore_views::vocab::FILE_INGESTED && event.actor == caller.actor()))
}
