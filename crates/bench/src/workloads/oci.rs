//! Workload i: both servers over the same OCI distribution protocol, with the same client code and concurrency:
//! 4 KiB blob pushes (16 clients), large blobs pushed in chunks (2 clients), manifest `PUT` and `GET` by tag
//! (16 clients), and pulls of the same blobs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use bytes::Bytes;
use reqwest::StatusCode;

use super::{median, order, start, Bins};
use crate::push::{self, Blob, Client, REPOSITORY};
use crate::report::{percentile, Report, Row};
use crate::{Sizes, MIB};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// One server's figures for one round.
#[derive(Debug, Default)]
struct Round {
    small: f64,
    large: f64,
    put: f64,
    get: f64,
    pull_small: f64,
    pull_large: f64,
    put_latencies: Vec<Duration>,
}

pub(crate) async fn workload_i(report: &mut Report, sizes: &Sizes, bins: Bins<'_>, work: &Path) -> anyhow::Result<()> {
    let small: Arc<Vec<Blob>> = Arc::new((0..sizes.b_blobs as u64).map(|n| Blob::random(n, 4096)).collect());
    let large: Arc<Vec<Blob>> =
        Arc::new((0..sizes.a_blobs as u64).map(|n| Blob::random(1 << 20 | n, sizes.a_blob)).collect());
    let manifests: Arc<Vec<Bytes>> = Arc::new(
        (0..sizes.i_manifests).map(|n| manifest(&small[n % small.len()], &small[(n + 1) % small.len()], n)).collect(),
    );
    let mut rounds: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    for round in 0..sizes.repeats {
        for kind in order(round) {
            let server = start(kind, bins, &work.join(format!("i-{}-{round}", kind.name()))).await?;
            let client = Client::oci(kind, &server.base)?;
            let mut r = Round {
                small: push::push_all(&client, small.clone(), 16, 4096).await?.per_second(),
                ..Round::default()
            };
            r.large = push::push_all(&client, large.clone(), 2, sizes.a_chunk).await?.mib_per_second();
            let all = manifests.clone();
            let (took, latencies) = push::concurrently(&client, manifests.len(), 16, move |client, i| {
                let body = all[i].clone();
                async move { put_manifest(&client, i, body).await }
            })
            .await?;
            r.put = manifests.len() as f64 / took.as_secs_f64();
            r.put_latencies = latencies;
            let all = manifests.clone();
            let (took, _) = push::concurrently(&client, manifests.len(), 16, move |client, i| {
                let body = all[i].clone();
                async move { get_manifest(&client, i, &body).await }
            })
            .await?;
            r.get = manifests.len() as f64 / took.as_secs_f64();
            r.pull_small = push::download_all(&client, small.clone(), 16, 1).await?.per_second();
            r.pull_large = push::download_all(&client, large.clone(), 2, 1).await?.mib_per_second();
            eprintln!(
                "i: {}: 4 KiB push {:.0}/s, large push {:.0} MiB/s, manifest PUT {:.0}/s, GET {:.0}/s, pulls {:.0}/s \
                 and {:.0} MiB/s",
                kind.name(),
                r.small,
                r.large,
                r.put,
                r.get,
                r.pull_small,
                r.pull_large
            );
            rounds[kind as usize].push(r);
        }
    }
    let pick = |f: fn(&Round) -> f64| rounds.each_ref().map(|rs| median(rs.iter().map(f).collect()));
    let of = |n: usize| format!("(OCI protocol for both, median of {})", n);
    let small_rate = pick(|r| r.small);
    report.push(
        Row::compare(
            "i",
            &format!("4 KiB blob pushes, 16 clients {}", of(sizes.repeats)),
            small_rate[0],
            small_rate[1],
            "blobs/s",
            5.0,
        )
        .with_floor(1500.0),
    );
    let large_rate = pick(|r| r.large);
    report.push(
        Row::compare(
            "i",
            &format!(
                "{} MiB pushes in {} MiB chunks, 2 clients {}",
                sizes.a_blob / MIB,
                sizes.a_chunk / MIB,
                of(sizes.repeats)
            ),
            large_rate[0],
            large_rate[1],
            "MiB/s",
            1.5,
        )
        .with_floor(300.0),
    );
    let put = pick(|r| r.put);
    let p99 = rounds.each_ref().map(|rs| {
        let mut all: Vec<Duration> = rs.iter().flat_map(|r| r.put_latencies.iter().copied()).collect();
        percentile(&mut all, 0.99)
    });
    report.push(
        Row::compare(
            "i",
            &format!("manifest PUT by tag, 16 clients {}", of(sizes.repeats)),
            put[0],
            put[1],
            "manifests/s",
            3.0,
        )
        .with_note(format!("p99 {} ms vs {} ms", p99[0].as_millis(), p99[1].as_millis())),
    );
    let get = pick(|r| r.get);
    report.push(Row::compare(
        "i",
        &format!("manifest GET by tag, 16 clients {}", of(sizes.repeats)),
        get[0],
        get[1],
        "manifests/s",
        3.0,
    ));
    let pull_small = pick(|r| r.pull_small);
    report.push(Row::compare(
        "i",
        &format!("4 KiB blob pulls, 16 clients {}", of(sizes.repeats)),
        pull_small[0],
        pull_small[1],
        "blobs/s",
        1.0,
    ));
    let pull_large = pick(|r| r.pull_large);
    report.push(Row::compare(
        "i",
        &format!("{} MiB blob pulls, 2 clients {}", sizes.a_blob / MIB, of(sizes.repeats)),
        pull_large[0],
        pull_large[1],
        "MiB/s",
        1.0,
    ));
    Ok(())
}

/// An image manifest naming `config` and `layer`, made unique by an annotation.
fn manifest(config: &Blob, layer: &Blob, n: usize) -> Bytes {
    let descriptor = |media_type: &str, blob: &Blob| serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{}", blob.sha256), "size": blob.bytes.len()});
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
        "annotations": {"org.example.build": n.to_string()},
    });
    Bytes::from(serde_json::to_vec(&body).expect("a manifest"))
}

fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

async fn put_manifest(client: &Client, n: usize, body: Bytes) -> anyhow::Result<()> {
    let digest = digest_of(&body);
    let response = client
        .http
        .put(format!("{}/v2/{REPOSITORY}/manifests/t{n}", client.base))
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answered = response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).unwrap_or_default();
    ensure!(
        status == StatusCode::CREATED && answered == digest,
        "{}: manifest PUT: {status}, digest {answered}",
        client.kind.name()
    );
    Ok(())
}

async fn get_manifest(client: &Client, n: usize, body: &Bytes) -> anyhow::Result<()> {
    let response = client
        .http
        .get(format!("{}/v2/{REPOSITORY}/manifests/t{n}", client.base))
        .header("accept", OCI_MANIFEST)
        .send()
        .await?;
    let status = response.status();
    let got = response.bytes().await?;
    ensure!(status == StatusCode::OK && got == *body, "{}: manifest GET: {status}, other bytes", client.kind.name());
    Ok(())
}
