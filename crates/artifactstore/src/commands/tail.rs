//! `artifactstore tail`: follow the event feed by long-polling, printing each event once, in order.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use reqwest::StatusCode;
use serde_json::Value;

use crate::cli::TailArgs;

/// How long each long-poll may be held by the server.
const WAIT_SECS: u64 = 30;

pub(crate) async fn run(args: &TailArgs) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(WAIT_SECS + 30))
        .build()
        .context("build the HTTP client")?;
    let base = args.client.server.trim_end_matches('/');
    let mut since = args.since;
    let mut log_id: Option<String> = None;
    let mut failures = 0u32;
    let stdout = std::io::stdout();
    loop {
        let mut request = http.get(format!("{base}/v1/events")).query(&[("since", since.to_string())]);
        request = request.query(&[("limit", "1000")]);
        if !args.exit_at_head {
            request = request.query(&[("wait", WAIT_SECS.to_string())]);
        }
        if let Some(event_type) = &args.event_type {
            request = request.query(&[("type", event_type)]);
        }
        if let Some(log_id) = &log_id {
            request = request.query(&[("log_id", log_id)]);
        }
        if let Some(token) = &args.client.token {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                failures += 1;
                if failures > 10 {
                    bail!("giving up after {failures} failed requests: {err:#}");
                }
                eprintln!("feed request failed ({err:#}); retrying from {since}");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(failures.min(10)))).await;
                continue;
            }
        };
        if response.status() == StatusCode::GONE {
            let problem: Value = response.json().await.unwrap_or(Value::Null);
            bail!(
                "the cursor {since} is no longer valid: {} (restart from the head with --since, after checking what \
                 was missed)",
                problem["detail"].as_str().unwrap_or("cursor expired")
            );
        }
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            bail!("the feed answered {status}: {body}");
        }
        failures = 0;
        let page: Value = response.json().await.context("read a feed page")?;
        log_id = page["log_id"].as_str().map(str::to_owned);
        let mut out = stdout.lock();
        for event in page["events"].as_array().into_iter().flatten() {
            if args.json {
                writeln!(out, "{event}")?;
            } else {
                writeln!(
                    out,
                    "{:>8}  {}  {:<28} {}/{}  {}",
                    event["sequence"],
                    event["created_at"].as_str().unwrap_or(""),
                    event["event_type"].as_str().unwrap_or(""),
                    event["subject_kind"].as_str().unwrap_or(""),
                    event["subject_id"].as_str().unwrap_or("-"),
                    event["actor"].as_str().unwrap_or(""),
                )?;
            }
        }
        out.flush()?;
        drop(out);
        since = page["next"].as_u64().context("a feed page without `next`")?;
        if args.exit_at_head && since >= page["head"].as_u64().unwrap_or(0) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}
