//! Real OCI clients against the service: skopeo copies an image into artifactstore, from there into Debian's
//! `docker-registry` (the reference implementation) and back, keeping every digest; oras-py pushes an artifact and
//! a referrer, which the referrers API then lists.
//!
//! The clients come from the OCI acceptance kit that `.ci/run` sets up (`OCI_KIT_DIR`; skopeo and docker-registry
//! from Debian). Where they are missing the tests say so loudly and pass, except with `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use artifactstore_digest::DualDigest;
use artifactstore_tests::{free_port, TestApp};
use serde_json::json;

/// `name` on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

/// Whether a test can have what it needs; without it, a loud skip, or a failure under `CI=true`.
fn have(what: &str, found: bool) -> bool {
    if !found {
        let message = format!("{what} is not available: run the OCI acceptance kit's setup.sh and set OCI_KIT_DIR");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true: {message}");
        }
        eprintln!("\n!!! SKIPPED: {message}\n");
    }
    found
}

/// Runs a command to completion off the async runtime; panics with its output when it fails.
async fn run(mut command: Command) -> String {
    let shown = format!("{command:?}");
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("start the command");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{shown} failed: {text}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Debian's `docker-registry` on a free port, with its data in `dir`; killed on drop.
struct Reference(Child, String);

impl Reference {
    async fn start(dir: &Path) -> Reference {
        let port = free_port();
        let config = dir.join("config.yml");
        let data = dir.join("data");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    \
                 enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                data.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        // Owned at once, so it is killed and waited for whatever happens next.
        let reference = Reference(child, format!("127.0.0.1:{port}"));
        for _ in 0..100 {
            if reqwest::get(format!("http://{}/v2/", reference.1)).await.is_ok_and(|r| r.status() == 200) {
                return reference;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("docker-registry did not start");
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes an OCI image layout with one image (a config and two layers) tagged `v1`; returns its manifest's digest.
fn write_layout(dir: &Path) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = DualDigest::of(bytes).sha256;
        std::fs::write(blobs.join(digest.hex()), bytes).unwrap();
        json!({"digest": digest.to_string(), "size": bytes.len()})
    };
    let descriptor = |media_type: &str, bytes: &[u8]| {
        let mut d = put(bytes);
        d["mediaType"] = json!(media_type);
        d
    };
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layers: Vec<Vec<u8>> = (0..2u8).map(|i| (0..300_000u32).map(|n| (n as u8) ^ i).collect()).collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    }))
    .unwrap();
    let mut entry = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "v1"});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [entry]})).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    DualDigest::of(&manifest).sha256.to_string()
}

fn skopeo() -> Command {
    let mut command = Command::new("skopeo");
    command.arg("--insecure-policy");
    command
}

/// The digest of the manifest at `reference`, as skopeo reads its raw bytes.
async fn remote_digest(reference: &str) -> String {
    let mut command = skopeo();
    command.args(["inspect", "--tls-verify=false", "--raw", reference]);
    let raw = {
        let shown = format!("{command:?}");
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
        assert!(output.status.success(), "{shown}: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    };
    DualDigest::of(&raw).sha256.to_string()
}

async fn copy(from: &str, to: &str) {
    let mut command = skopeo();
    command.args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests", from, to]);
    run(command).await;
}

#[tokio::test]
async fn skopeo_copies_between_artifactstore_and_the_reference_registry_keeping_digests() {
    if !have("skopeo and docker-registry", on_path("skopeo").is_some() && on_path("docker-registry").is_some()) {
        return;
    }
    let app = TestApp::sqlite().await;
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let digest = write_layout(&layout);
    let reference = Reference::start(work.path()).await;
    let (ours, theirs) = (&app.address, &reference.1);

    copy(&format!("oci:{}:v1", layout.display()), &format!("docker://{ours}/clients/img:v1")).await;
    assert_eq!(remote_digest(&format!("docker://{ours}/clients/img:v1")).await, digest);
    copy(&format!("docker://{ours}/clients/img:v1"), &format!("docker://{theirs}/clients/img:v1")).await;
    assert_eq!(remote_digest(&format!("docker://{theirs}/clients/img:v1")).await, digest);
    copy(&format!("docker://{theirs}/clients/img:v1"), &format!("docker://{ours}/clients/back:v2")).await;
    assert_eq!(remote_digest(&format!("docker://{ours}/clients/back:v2")).await, digest);

    // What skopeo pushed is registry state: the tag's event, and the manifest's blob by its BLAKE3 digest.
    let events = app.get_json("/v1/events?type=v1.oci.tag.set").await["events"].as_array().unwrap().clone();
    let tags: Vec<String> =
        events.iter().map(|e| format!("{}:{}", e["payload"]["repository"], e["payload"]["tag"])).collect();
    assert_eq!(tags, ["\"clients/img\":\"v1\"", "\"clients/back\":\"v2\""]);
    let pulled = app.get(&format!("/v2/clients/back/manifests/{digest}")).await;
    let blake3 = DualDigest::of(&pulled.body).blake3;
    assert_eq!(app.get(&format!("/v1/blobs/{blake3}")).await.body, pulled.body);
    let differences = artifactstore_views::verify(&app.log, |_, _| {}).await.unwrap();
    assert!(differences.is_empty(), "{differences:?}");
}

#[tokio::test]
async fn an_oras_artifact_and_its_referrer_are_found_through_the_referrers_api() {
    let python = std::env::var_os("OCI_KIT_DIR").map(|kit| PathBuf::from(kit).join("build/venv/bin/python"));
    let Some(python) = python.filter(|p| p.is_file()) else {
        have("oras-py (the OCI acceptance kit's venv, OCI_KIT_DIR)", false);
        return;
    };
    let app = TestApp::sqlite().await;
    let work = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/oras_referrer.py");
    let mut command = Command::new(python);
    command.arg(script).arg(&app.address).arg("clients/model").arg(work.path());
    let printed = run(command).await;
    let lines: Vec<&str> = printed.lines().collect();
    let [subject, referrer] = lines[..] else { panic!("the script printed {printed}") };
    let listed = app.get_json(&format!("/v2/clients/model/referrers/{subject}")).await;
    let digests: Vec<&str> =
        listed["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap()).collect();
    assert_eq!(digests, [referrer], "{listed}");
    let pushed = app.get_json("/v1/events?type=v1.oci.manifest.pushed").await["events"].as_array().unwrap().clone();
    assert_eq!(pushed.last().unwrap()["payload"]["subject"], subject);
}
