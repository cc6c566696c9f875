//! `artifactstore upload` against a live server behind a proxy that cuts connections mid-chunk.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use artifactstore_digest::DualDigest;
use artifactstore_tests::{cli, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to `upstream` that resets whichever connection carries the byte at each of `cut_at` (counted over
/// everything sent upstream, whatever connections the client uses), in the middle of a request body.
async fn cutting_proxy(upstream: String, cut_at: Vec<usize>) -> (String, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let done = Arc::new(AtomicU32::new(0));
    let counter = done.clone();
    let forwarded = Arc::new(std::sync::Mutex::new(0usize));
    let cut_at = Arc::new(cut_at);
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(&upstream).await.unwrap();
            let (counter, forwarded, cut_at) = (counter.clone(), forwarded.clone(), cut_at.clone());
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut buffer = vec![0; 64 * 1024];
                loop {
                    let n = match client_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // Decide under the lock, so each threshold is crossed by exactly one connection.
                    let keep = {
                        let mut total = forwarded.lock().unwrap();
                        let before = *total;
                        let crossed = cut_at.iter().find(|&&at| before < at && at <= before + n).copied();
                        *total += crossed.map_or(n, |at| at - before);
                        crossed.map(|at| at - before)
                    };
                    if let Some(keep) = keep {
                        let _ = server_write.write_all(&buffer[..keep]).await;
                        counter.fetch_add(1, Ordering::SeqCst);
                        // Dropping both halves resets the connection in the middle of a request body.
                        down.abort();
                        return;
                    }
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = server_write.shutdown().await;
                let _ = down.await;
            });
        }
    });
    (address, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_resumes_after_cut_connections_and_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::sqlite().await;
    let mib = 1024 * 1024;
    // Cut twice: 2.5 MiB and 4.5 MiB into the traffic, each in the middle of a 1 MiB chunk.
    let (proxy, cuts) = cutting_proxy(app.address.clone(), vec![2 * mib + mib / 2, 4 * mib + mib / 2]).await;

    let data: Vec<u8> = (0..5 * mib + 12_345).map(|i| (i % 251) as u8 ^ (i / 4096) as u8).collect();
    let file = dir.path().join("model.bin");
    std::fs::write(&file, &data).unwrap();
    let other = dir.path().join("README.txt");
    std::fs::write(&other, b"read me").unwrap();
    let (file, other) = (file.to_str().unwrap(), other.to_str().unwrap());

    let proxy = format!("http://{proxy}");
    let args = ["upload", "--server", &proxy, "--chunk-size", "1048576", "--package", "ml/model@1.0.0", file, other];
    let output = cli!().run(&args).await;
    let (stdout, stderr) = (&output.stdout, &output.stderr);
    assert!(output.ok, "upload failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(cuts.load(Ordering::SeqCst), 2, "the proxy cut two connections\n{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");

    let digest = DualDigest::of(&data);
    assert!(stdout.contains(&format!("stored   {}", digest.blake3)), "{stdout}");
    assert!(stdout.contains("published ml/model@1.0.0"), "{stdout}");

    // The bytes on the server are the file's, and the package names both files.
    let got = app.get(&format!("/v1/blobs/{}", digest.sha256)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, data);
    let manifest = app.get_json("/v1/packages/ml/model/versions/1.0.0").await;
    let paths: Vec<&str> = manifest["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["README.txt", "model.bin"]);

    // A second run finds everything in place and changes nothing.
    let output = cli!().run(&["upload", "--server", &app.base, "--package", "ml/model@1.0.0", file, other]).await;
    let stdout = &output.stdout;
    assert!(output.ok, "{stdout}{}", output.stderr);
    assert!(stdout.contains(&format!("present  {}", digest.blake3)), "{stdout}");
    assert!(stdout.contains("unchanged ml/model@1.0.0"), "{stdout}");
}
