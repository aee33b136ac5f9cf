//! Files through the real `rivulet` binary (docs/FILES.md): `send-file`, `files` and `fetch-file`
//! against a gateway; a send cut by kill -9 of the gateway resumes from what the restarted
//! gateway holds; bytes damaged on the gateway's disk meanwhile are caught by the SHA-256 and
//! never listed; limits and the `files` ACL say what is wrong.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{PATIENCE, Running, fails, ok, run};

/// Bytes that are not all the same (so that a shifted or damaged copy differs).
fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn gateway(dir: &Path, listen: &str, extra: &[&str]) -> (Running, String) {
    let mut args = vec!["gateway", "--listen", listen, "--data", "gw"];
    args.extend_from_slice(extra);
    let gateway = Running::spawn(&args, dir, &[]);
    let addr = format!("127.0.0.1:{}", gateway.listening_port());
    (gateway, addr)
}

fn status(addr: &str, dir: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&["status", "--gateway", addr], dir, &[])).expect("status is JSON")
}

#[test]
fn a_file_makes_the_round_trip_and_is_listed_with_its_hash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let bytes = content(3_000_000, 1);
    std::fs::write(dir.join("fw.bin"), &bytes).unwrap();
    let (_gateway, addr) = gateway(dir, "127.0.0.1:0", &[]);
    let sent = ok(&["send-file", "fw.bin", "--gateway", &addr], dir, &[]);
    assert!(sent.contains(&sha256_hex(&bytes)) && sent.contains("3000000 bytes"), "{sent}");
    let listed = ok(&["files", "--gateway", &addr], dir, &[]);
    assert_eq!(listed.split_whitespace().collect::<Vec<_>>(), [sha256_hex(&bytes).as_str(), "3000000", "fw.bin"]);
    // Kept as `sha256sum` writes it, beside the file.
    let recorded = std::fs::read_to_string(dir.join("gw/files/.sha256/fw.bin")).unwrap();
    assert_eq!(recorded, format!("{}  fw.bin\n", sha256_hex(&bytes)));
    ok(&["fetch-file", "fw.bin", "copy.bin", "--gateway", &addr], dir, &[]);
    assert!(std::fs::read(dir.join("copy.bin")).unwrap() == bytes, "the fetched copy is the file");
    // The same file again: the gateway holds it all, nothing is sent twice.
    ok(&["send-file", "fw.bin", "--gateway", &addr], dir, &[]);
    let files = &status(&addr, dir)["files"];
    assert_eq!(files["bytes_in"], 3_000_000, "{files}");
    assert_eq!(files["completed"], 1, "{files}");
    // Another file under the same name replaces it.
    let newer = content(1000, 2);
    std::fs::write(dir.join("fw2.bin"), &newer).unwrap();
    ok(&["send-file", "fw2.bin", "--as", "fw.bin", "--gateway", &addr], dir, &[]);
    let listed = ok(&["files", "--gateway", &addr], dir, &[]);
    assert!(listed.starts_with(&sha256_hex(&newer)) && listed.lines().count() == 1, "{listed}");
}

/// Starts a send of `bytes` in small chunks, kills the gateway with kill -9 once it holds part
/// of it, calls `meanwhile` with the partial file, restarts the gateway on the same port and
/// directory, and returns the sender's output, the gateway's status, its address and itself.
fn send_across_a_kill(
    dir: &Path,
    bytes: &[u8],
    meanwhile: impl FnOnce(&Path),
) -> (std::process::Output, serde_json::Value, String, Running) {
    std::fs::write(dir.join("big.bin"), bytes).unwrap();
    let (first, addr) = gateway(dir, "127.0.0.1:0", &[]);
    let sender = {
        let (dir, addr) = (dir.to_path_buf(), addr.clone());
        std::thread::spawn(move || {
            run(&["send-file", "big.bin", "--chunk", "4096", "--gateway", &addr, "--retry-for", "30"], &dir, &[])
        })
    };
    let partial: PathBuf = dir.join("gw/files/.partial/big.bin");
    let deadline = Instant::now() + PATIENCE;
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < bytes.len() as u64 / 8 {
        assert!(Instant::now() < deadline, "the upload did not start");
        assert!(!sender.is_finished(), "the send ended before the gateway was killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill();
    meanwhile(&partial);
    let (second, again) = gateway(dir, &addr, &[]);
    assert_eq!(again, addr);
    let output = sender.join().expect("the sender's thread");
    (output, status(&addr, dir), addr, second)
}

#[test]
fn a_send_cut_by_kill_9_resumes_where_the_restarted_gateway_left_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let bytes = content(24_000_000, 3);
    let (output, status, _, _gateway) = send_across_a_kill(dir, &bytes, |_| {});
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("bytes already: sending the rest"), "it resumed: {stderr}");
    let resent = status["files"]["bytes_in"].as_u64().unwrap();
    assert!(resent < bytes.len() as u64 * 7 / 8, "the restarted gateway took only the rest: {resent}");
    assert!(std::fs::read(dir.join("gw/files/big.bin")).unwrap() == bytes, "the whole file, once");
}

#[test]
fn bytes_damaged_meanwhile_fail_the_hash_and_are_never_listed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let bytes = content(24_000_000, 4);
    let (output, status, addr, _gateway) = send_across_a_kill(dir, &bytes, |partial| {
        let mut held = std::fs::read(partial).unwrap();
        held[100] ^= 0x40;
        std::fs::write(partial, held).unwrap();
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a damaged file is no success: {stderr}");
    assert!(stderr.contains("hash mismatch") && stderr.contains(&sha256_hex(&bytes)), "{stderr}");
    assert_eq!(status["files"]["mismatched"], 1, "{status}");
    assert_eq!(status["files"]["completed"], 0, "{status}");
    assert_eq!(ok(&["files", "--gateway", &addr], dir, &[]), "", "nothing half-written is listed");
    assert!(!dir.join("gw/files/.partial/big.bin").exists() && !dir.join("gw/files/big.bin").exists());
    // Sent again, it starts over and arrives whole.
    ok(&["send-file", "big.bin", "--gateway", &addr], dir, &[]);
    assert!(std::fs::read(dir.join("gw/files/big.bin")).unwrap() == bytes);
}

#[test]
fn limits_access_and_missing_files_say_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let made = run(&["credential", "reader", "--files", "read"], dir, &[]);
    assert!(made.status.success());
    let stderr = String::from_utf8_lossy(&made.stderr);
    let token = stderr.split_whitespace().find(|w| w.len() == 64).expect("a token").to_string();
    let entry = String::from_utf8_lossy(&made.stdout).into_owned();
    assert!(entry.contains("files = \"read\""), "{entry}");
    let writer = run(&["credential", "writer"], dir, &[]);
    let writer_token =
        String::from_utf8_lossy(&writer.stderr).split_whitespace().find(|w| w.len() == 64).unwrap().to_string();
    let config = format!("[files]\nmax_file_mb = 1\n\n{entry}\n{}", String::from_utf8_lossy(&writer.stdout));
    std::fs::write(dir.join("gateway.toml"), config).unwrap();
    let (_gateway, addr) = gateway(dir, "127.0.0.1:0", &["--config", "gateway.toml"]);
    std::fs::write(dir.join("small.bin"), content(1000, 5)).unwrap();
    std::fs::write(dir.join("large.bin"), content(1_500_000, 6)).unwrap();
    let as_reader = ["--gateway", &addr, "--name", "reader", "--token", &token];
    let as_writer = ["--gateway", &addr, "--name", "writer", "--token", &writer_token];
    let with = |command: &[&'static str], login: &[&str]| -> Vec<String> {
        command.iter().chain(login).map(|s| s.to_string()).collect()
    };

    let denied = fails(&strs(&with(&["send-file", "small.bin"], &as_reader)), dir, &[]);
    assert!(denied.contains("may not send files"), "{denied}");
    let too_large = fails(&strs(&with(&["send-file", "large.bin"], &as_writer)), dir, &[]);
    assert!(too_large.contains("1500000 bytes") && too_large.contains("at most 1048576"), "{too_large}");
    ok(&strs(&with(&["send-file", "small.bin"], &as_writer)), dir, &[]);
    let listed = ok(&strs(&with(&["files"], &as_reader)), dir, &[]);
    assert!(listed.contains("small.bin"), "a reader may list: {listed}");
    ok(&strs(&with(&["fetch-file", "small.bin", "copy.bin"], &as_reader)), dir, &[]);
    let missing = fails(&strs(&with(&["fetch-file", "nothing.bin"], &as_reader)), dir, &[]);
    assert!(missing.contains("holds no file \"nothing.bin\""), "{missing}");
    let bad = fails(&strs(&with(&["send-file", "small.bin", "--as", "../x"], &as_writer)), dir, &[]);
    assert!(bad.contains("a file name is"), "{bad}");
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
