//! The Circular 10 file endpoints through clients nobody here wrote: `curl -T`, Python's
//! `ftplib` (plain and explicit FTPS), and a watched directory written by "another server".
//! The data is checked through the HTTP API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{FixedOffset, TimeZone};
use common::processes::wait_ready;
use common::{Broker, Service, Site};
use quantrac::config::Config;

const ST: &str = "DN-AMATA-WW01";
const OTHER: &str = "BN-VSIP-WW01";
const USER: &str = "logger-amata";
const PASSWORD: &str = "s3cret-amata";

/// The shipped seeds plus a devices.toml: `logger-amata` owns DN-AMATA-WW01 only.
fn seeds_with_devices(dir: &Path) -> PathBuf {
    let seeds = dir.join("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    for entry in std::fs::read_dir(common::seeds()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, seeds.join(path.file_name().unwrap())).unwrap();
    }
    let hash = quantrac::mqtt::devices::hash_password(PASSWORD).unwrap();
    std::fs::write(
        seeds.join("devices.toml"),
        format!("[[device]]\nusername = \"{USER}\"\npassword_hash = \"{hash}\"\nstations = [\"{ST}\"]\n"),
    )
    .unwrap();
    seeds
}

/// `YYYYMMDDhhmmss` in Vietnam local time.
fn local(ms: i64) -> String {
    let vn = FixedOffset::east_opt(7 * 3600).unwrap();
    vn.timestamp_millis_opt(ms)
        .unwrap()
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// A Circular 10 file for `name_station` (`DN_AMATA_WW01`) at `ms`: COD and pH.
fn tt10(dir: &Path, name_station: &str, ms: i64, cod: f64) -> PathBuf {
    let t = local(ms);
    let path = dir.join(format!("{name_station}_{t}.txt"));
    std::fs::write(
        &path,
        format!("COD\t{cod}\tmg/L\t{t}\t00\r\npH\t7.2\tpH\t{t}\t00\r\n"),
    )
    .unwrap();
    path
}

fn ftp_site(label: &str) -> (Site, Config) {
    let mut site = Site::new(Broker::Embedded, label);
    site.seeds = Some(seeds_with_devices(site.dir.path()));
    let mut c = site.config();
    c.ftp.enabled = true;
    c.ftp.listen = "127.0.0.1:0".parse().unwrap();
    c.ftp.passive_port_first = 40000;
    c.ftp.passive_port_last = 48999;
    (site, c)
}

async fn start(label: &str) -> (Site, Service, u16) {
    let (site, config) = ftp_site(label);
    let service = Service::start(config).await;
    let port = service.running.ftp_addr.unwrap().port();
    (site, service, port)
}

/// Runs the ftplib client; its output lines as (name, reply).
async fn ftplib(port: u16, user: &str, password: &str, extra: &[String]) -> Vec<(String, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ftp_client.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args([
            "--port",
            &port.to_string(),
            "--user",
            user,
            "--password",
            password,
        ])
        .args(extra);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

fn paths(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|p| p.display().to_string()).collect()
}

/// `curl -T`: exit status and verbose log.
async fn curl_upload(port: u16, file: &Path, user: &str, password: &str) -> (bool, String) {
    let url = format!("ftp://{user}:{password}@127.0.0.1:{port}/");
    let file = file.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "-v", "--max-time", "30", "-T"])
            .arg(&file)
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// How many readings of `param` the API has for `station` in `[from, to)`.
async fn count(
    base: &str,
    http: &reqwest::Client,
    station: &str,
    param: &str,
    from: i64,
    to: i64,
) -> u64 {
    let url = format!(
        "{base}/api/v1/readings?station={station}&param={param}&from={from}&to={to}&bucket=1d&agg=count"
    );
    let Ok(response) = http.get(url).send().await else {
        return 0;
    };
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["series"][0]["points"]
        .as_array()
        .map_or(0, |p| p.iter().filter_map(|p| p["count"].as_u64()).sum())
}

async fn quarantine(s: &Service, reason: &str) -> Vec<serde_json::Value> {
    let body: serde_json::Value = s
        .http
        .get(format!("{}/api/v1/quarantine?reason={reason}", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["entries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploaded_with_curl_is_stored_and_readable_through_the_api() {
    let (site, s, port) = start("ftp-curl").await;
    let t = common::recent_minute(30);
    let file = tt10(site.dir.path(), "DN_AMATA_WW01", t, 71.5);
    let (ok, log) = curl_upload(port, &file, USER, PASSWORD).await;
    assert!(ok, "{log}");
    assert!(log.contains("226"), "{log}");
    // The 226 came after the commit: the readings are there at once.
    assert_eq!(count(&s.base, &s.http, ST, "COD", t, t + 60_000).await, 1);
    assert_eq!(count(&s.base, &s.http, ST, "pH", t, t + 60_000).await, 1);
    let latest: serde_json::Value = s
        .http
        .get(format!("{}/api/v1/stations/{ST}/latest", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(latest.to_string().contains("71.5"), "{latest}");
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sent_twice_with_ftplib_into_a_station_folder_is_stored_once() {
    let (site, s, port) = start("ftp-twice").await;
    let t = common::recent_minute(40);
    let file = tt10(site.dir.path(), "DN_AMATA_WW01", t, 42.0);
    let mut args = vec!["--dir".to_owned(), "DN-AMATA-WW01".to_owned()];
    args.extend(paths(&[file.clone(), file.clone()]));
    let out = ftplib(port, USER, PASSWORD, &args).await;
    assert_eq!(
        out[0],
        ("list".to_owned(), "0 entries".to_owned()),
        "{out:?}"
    );
    let replies: Vec<&str> = out[1..].iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(replies.len(), 2, "{out:?}");
    assert!(replies.iter().all(|r| r.starts_with("226")), "{out:?}");
    assert_eq!(count(&s.base, &s.http, ST, "COD", t, t + 60_000).await, 1);
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_gets_a_5xx_reply_and_a_quarantine_entry_with_the_whole_file_kept() {
    let (site, s, port) = start("ftp-bad").await;
    let t = local(common::recent_minute(10));
    let garbage = site.dir.path().join(format!("DN_AMATA_WW01_{t}.txt"));
    let body = "this is not\ta Circular 10 file\r\nnor is this line\r\n";
    std::fs::write(&garbage, body).unwrap();
    let badname = site.dir.path().join("report.txt");
    std::fs::write(&badname, "COD\t1\tmg/L\t20260101000000\t00\n").unwrap();
    let unknown = tt10(
        site.dir.path(),
        "DN_AMATA_NOPE",
        common::recent_minute(10),
        1.0,
    );
    let out = ftplib(port, USER, PASSWORD, &paths(&[garbage, badname, unknown])).await;
    let reply = |i: usize| out[i].1.clone();
    assert!(reply(0).starts_with("551"), "{out:?}");
    assert!(reply(1).starts_with("553"), "{out:?}");
    assert!(reply(2).starts_with("553"), "{out:?}");

    let malformed = quarantine(&s, "malformed_payload").await;
    let whole = malformed
        .iter()
        .find(|e| e["payload_excerpt"] == body)
        .unwrap_or_else(|| panic!("no entry holds the whole file: {malformed:?}"));
    assert!(
        whole["detail"].as_str().unwrap().starts_with("line "),
        "{whole}"
    );
    assert_eq!(whole["total"], 2, "both lines, in one entry: {whole}");
    let url = whole["payload"]["url"].as_str().unwrap();
    let kept = s
        .http
        .get(format!("{}{url}", s.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&kept[..], body.as_bytes(), "the whole file, byte for byte");
    assert!(malformed
        .iter()
        .any(|e| e["topic"] == format!("ftp:{USER}/report.txt")));
    assert_eq!(quarantine(&s, "unknown_station").await.len(), 1);
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_and_curl_fails() {
    let (site, s, port) = start("ftp-pass").await;
    let out = ftplib(port, USER, "wrong", &[]).await;
    assert_eq!(out[0].0, "login");
    assert!(out[0].1.starts_with("530"), "{out:?}");
    let file = tt10(
        site.dir.path(),
        "DN_AMATA_WW01",
        common::recent_minute(5),
        1.0,
    );
    let (ok, log) = curl_upload(port, &file, "nobody", PASSWORD).await;
    assert!(!ok && log.contains("530"), "{log}");
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_uploading_for_a_station_it_does_not_own_is_refused_and_quarantined() {
    let (site, s, port) = start("ftp-acl").await;
    let t = common::recent_minute(20);
    let file = tt10(site.dir.path(), "BN_VSIP_WW01", t, 10.0);
    let (ok, log) = curl_upload(port, &file, USER, PASSWORD).await;
    assert!(!ok && log.contains("550"), "{log}");
    assert_eq!(
        count(&s.base, &s.http, OTHER, "COD", t, t + 60_000).await,
        0
    );
    let entries = quarantine(&s, "not_authorized").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0]["payload_excerpt"]
        .as_str()
        .unwrap()
        .starts_with("COD\t10"));
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_larger_than_the_limit_is_refused_with_552() {
    let (site, mut config) = ftp_site("ftp-large");
    config.ftp.max_file_bytes = 1000;
    let s = Service::start(config).await;
    let port = s.running.ftp_addr.unwrap().port();
    let t = common::recent_minute(20);
    let path = site
        .dir
        .path()
        .join(format!("DN_AMATA_WW01_{}.txt", local(t)));
    let line = format!("COD\t1\tmg/L\t{}\t00\r\n", local(t));
    std::fs::write(&path, line.repeat(200)).unwrap();
    let out = ftplib(port, USER, PASSWORD, &paths(&[path])).await;
    assert!(out[0].1.starts_with("552"), "{out:?}");
    assert_eq!(quarantine(&s, "too_large").await.len(), 1);
    s.running.stop().await;
}

/// An FTPS site (TLS required) with a fresh self-signed certificate; its path.
fn ftps_site(label: &str) -> (Site, Config, PathBuf) {
    let (site, mut config) = ftp_site(label);
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (
        site.dir.path().join("cert.pem"),
        site.dir.path().join("key.pem"),
    );
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    config.ftp.tls = Some(quantrac::config::TlsFiles {
        cert: cert_path.clone(),
        key: key_path,
    });
    config.ftp.require_tls = true;
    (site, config, cert_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_explicit_ftps_is_stored() {
    let (site, config, cert_path) = ftps_site("ftps");
    let s = Service::start(config).await;
    let port = s.running.ftp_addr.unwrap().port();
    let t = common::recent_minute(50);
    let file = tt10(site.dir.path(), "DN_AMATA_WW01", t, 33.0);

    // Cleartext is refused when TLS is required.
    let plain = ftplib(port, USER, PASSWORD, &paths(std::slice::from_ref(&file))).await;
    assert_eq!(plain[0].0, "login", "{plain:?}");
    let mut args = vec![
        "--tls".to_owned(),
        "--cafile".to_owned(),
        cert_path.display().to_string(),
    ];
    args.extend(paths(&[file]));
    let out = ftplib(port, USER, PASSWORD, &args).await;
    assert!(out[0].1.starts_with("226"), "{out:?}");
    assert_eq!(count(&s.base, &s.http, ST, "COD", t, t + 60_000).await, 1);
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_connection_that_fails_its_tls_handshake_leaves_the_server_serving_others() {
    let (site, config, cert_path) = ftps_site("ftps-garbage");
    let s = Service::start(config).await;
    let port = s.running.ftp_addr.unwrap().port();
    let tls = vec![
        "--tls".to_owned(),
        "--cafile".to_owned(),
        cert_path.display().to_string(),
    ];
    let t = common::recent_minute(45);
    let name = format!("DN_AMATA_WW01_{}.txt", local(t));
    let mut args = tls.clone();
    args.extend(["--garbage-data".to_owned(), name]);
    let out = ftplib(port, USER, PASSWORD, &args).await;
    let garbage = &out.iter().find(|(n, _)| n == "garbage").unwrap().1;
    eprintln!("the session whose data connection sent garbage: {garbage}");
    assert!(garbage.starts_with("150"), "{out:?}");
    assert!(!garbage.contains("226"), "{out:?}");

    // The endpoint still serves: another logger's upload over FTPS is stored.
    let file = tt10(site.dir.path(), "DN_AMATA_WW01", t, 21.0);
    let mut args = tls;
    args.extend(paths(&[file]));
    let out = ftplib(port, USER, PASSWORD, &args).await;
    assert!(out[0].1.starts_with("226"), "{out:?}");
    assert_eq!(count(&s.base, &s.http, ST, "COD", t, t + 60_000).await, 1);
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_reason_tells_why_the_last_upload_of_the_session_was_refused() {
    let (site, s, port) = start("ftp-reason").await;
    let t = local(common::recent_minute(10));
    let garbage = site.dir.path().join(format!("DN_AMATA_WW01_{t}.txt"));
    std::fs::write(&garbage, "this is not\ta Circular 10 file\r\n").unwrap();
    let send = |files: &[PathBuf]| {
        let mut args = vec!["--send".to_owned(), "SITE REASON".to_owned()];
        args.extend(paths(files));
        args
    };
    let out = ftplib(port, USER, PASSWORD, &send(&[garbage])).await;
    assert!(out[0].1.starts_with("551"), "{out:?}");
    let reason = &out[1];
    assert_eq!(reason.0, "SITE REASON");
    let expected = format!(
        "200 DN_AMATA_WW01_{t}.txt: unusable: no usable reading: malformed_payload: line 1: expected 5"
    );
    assert!(reason.1.starts_with(&expected), "{out:?}");

    let unknown = tt10(
        site.dir.path(),
        "DN_AMATA_NOPE",
        common::recent_minute(10),
        1.0,
    );
    let out = ftplib(port, USER, PASSWORD, &send(&[unknown])).await;
    assert!(out[0].1.starts_with("553"), "{out:?}");
    assert!(
        out[1]
            .1
            .contains(": unknown_station: unknown station: neither `DN-AMATA-NOPE`"),
        "{out:?}"
    );

    // Another session has refused nothing.
    let out = ftplib(port, USER, PASSWORD, &send(&[])).await;
    assert_eq!(
        out[0].1, "200 no upload of this session was refused",
        "{out:?}"
    );
    s.running.stop().await;
}

/// The port of a PASV (`227 ... (h1,h2,h3,h4,p1,p2)`) or EPSV (`229 ... (|||port|)`) reply.
fn passive_port(reply: &str) -> u16 {
    let inner = reply
        .split_once('(')
        .unwrap()
        .1
        .trim_end_matches(['.', ')']);
    if let Some(port) = inner.strip_prefix("|||") {
        return port.trim_end_matches('|').parse().unwrap();
    }
    let n: Vec<u16> = inner.split(',').map(|x| x.parse().unwrap()).collect();
    n[4] * 256 + n[5]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasv_announces_the_configured_passive_address_and_a_port_of_the_range() {
    let (_site, mut config) = ftp_site("ftp-pasv");
    config.ftp.passive_address = Some("203.0.113.7".to_owned());
    config.ftp.passive_port_first = 41000;
    config.ftp.passive_port_last = 41999;
    let s = Service::start(config).await;
    let port = s.running.ftp_addr.unwrap().port();
    let args = ["--send", "PASV", "--send", "EPSV"].map(str::to_owned);
    let out = ftplib(port, USER, PASSWORD, &args).await;
    let (pasv, epsv) = (&out[0].1, &out[1].1);
    assert!(
        pasv.starts_with("227 Entering Passive Mode (203,0,113,7,"),
        "{out:?}"
    );
    assert!(epsv.starts_with("229"), "{out:?}");
    for reply in [pasv, epsv] {
        let p = passive_port(reply);
        assert!((41000..=41999).contains(&p), "{reply}");
    }
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_repeated_wrong_passwords_the_right_one_is_refused_until_the_block_ends() {
    let (_site, mut config) = ftp_site("ftp-lockout");
    // Long enough that the three failures (a Python process each, a password hash each, on
    // a machine busy with other tests) fall within it.
    let block = Duration::from_secs(6);
    config.ftp.failed_logins_max = 3;
    config.ftp.failed_logins_block = block;
    let s = Service::start(config).await;
    let port = s.running.ftp_addr.unwrap().port();
    let login = |password: &'static str| async move {
        let out = ftplib(
            port,
            USER,
            password,
            &["--send".to_owned(), "NOOP".to_owned()],
        )
        .await;
        out[0].clone()
    };
    for _ in 0..2 {
        assert!(login("wrong").await.1.starts_with("530"));
    }
    // Below the threshold the right password still works (and forgets the failures).
    assert_eq!(login(PASSWORD).await.0, "NOOP");
    for _ in 0..3 {
        assert!(login("wrong").await.1.starts_with("530"));
    }
    let blocked_at = Instant::now();
    let refused = login(PASSWORD).await;
    assert_eq!(refused.0, "login", "the right password got in: {refused:?}");
    assert!(refused.1.starts_with("530"), "{refused:?}");

    // The block ends by itself: wait for it (bounded), trying the right password.
    let deadline = blocked_at + block * 3;
    loop {
        let (name, reply) = login(PASSWORD).await;
        if name == "NOOP" {
            break;
        }
        assert!(Instant::now() < deadline, "still blocked: {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(blocked_at.elapsed() >= block - Duration::from_millis(500));
    s.running.stop().await;
}

/// `quantrac serve` as a child process with the FTP endpoint on `ftp`.
fn serve(data: &Path, seeds: &Path, api: &str, ftp: &str, mqtt: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_quantrac"))
        .arg("serve")
        .env("QUANTRAC_STORAGE__PATH", data)
        .env("QUANTRAC_API__LISTEN", api)
        .env("QUANTRAC_REGISTRY__SEEDS", seeds)
        .env("QUANTRAC_MQTT__ENDPOINT__LISTEN", mqtt)
        .env("QUANTRAC_FTP__ENABLED", "true")
        .env("QUANTRAC_FTP__LISTEN", ftp)
        .env("QUANTRAC_FTP__PASSIVE_PORT_FIRST", "40000")
        .env("QUANTRAC_FTP__PASSIVE_PORT_LAST", "48999")
        .env("QUANTRAC_LOG__LEVEL", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_an_upload_flood_loses_no_file_that_got_its_226() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = seeds_with_devices(dir.path());
    let data = dir.path().join("data");
    let free = || quantrac::mqtt::free_local_addr().unwrap().to_string();
    let (api, ftp, mqtt) = (free(), free(), free());
    let base = format!("http://{api}");
    let mut quantrac = serve(&data, &seeds, &api, &ftp, &mqtt);
    wait_ready(&base).await;

    const N: i64 = 2000;
    let t0 = common::recent_minute(N + 60);
    let files_dir = dir.path().join("outbox");
    std::fs::create_dir_all(&files_dir).unwrap();
    let list: Vec<String> = (0..N)
        .map(|i| {
            tt10(&files_dir, "DN_AMATA_WW01", t0 + i * 60_000, i as f64)
                .display()
                .to_string()
        })
        .collect();
    let list_file = dir.path().join("files.txt");
    std::fs::write(&list_file, list.join("\n")).unwrap();
    let acks = dir.path().join("acks.txt");
    let port = ftp.rsplit(':').next().unwrap().to_owned();
    let mut client = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ftp_client.py"))
        .args(["--port", &port, "--user", USER, "--password", PASSWORD])
        .arg("--acks")
        .arg(&acks)
        .arg("--files-from")
        .arg(&list_file)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // Kill once a part of the flood is confirmed: the client's ack file is its only signal.
    let acked = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked(&acks).lines().count() < 300 {
        assert!(Instant::now() < deadline, "the flood did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    quantrac.kill().unwrap();
    let _ = quantrac.wait();
    let status = tokio::task::spawn_blocking(move || client.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    let confirmed: Vec<String> = acked(&acks).lines().map(str::to_owned).collect();
    eprintln!(
        "SIGKILL after {} of {N} files got their 226",
        confirmed.len()
    );
    assert!(
        confirmed.len() < N as usize,
        "the kill came after the whole flood"
    );

    let mut quantrac = serve(&data, &seeds, &api, &ftp, &mqtt);
    wait_ready(&base).await;
    let db = quantrac::security::SecurityDb::open(&data.join("security.db")).unwrap();
    let (token, _) = db
        .create_token("ftp", quantrac::security::Role::Viewer, "test", None)
        .unwrap();
    let http = common::authorized(&token);
    // Every confirmed file: both its readings, at its own time.
    let url = format!(
        "{base}/api/v1/readings?station={ST}&param=COD&from={t0}&to={}&limit=10000",
        t0 + N * 60_000
    );
    let body: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
    let stored: std::collections::HashSet<String> = body["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let ms = chrono::DateTime::parse_from_rfc3339(r["ts"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
            format!("DN_AMATA_WW01_{}.txt", local(ms))
        })
        .collect();
    let lost: Vec<&String> = confirmed.iter().filter(|f| !stored.contains(*f)).collect();
    assert!(
        lost.is_empty(),
        "{} confirmed files lost: {lost:?}",
        lost.len()
    );
    let ph = count(&base, &http, ST, "pH", t0, t0 + N * 60_000).await;
    assert!(
        ph >= confirmed.len() as u64,
        "pH: {ph} < {}",
        confirmed.len()
    );
    quantrac.kill().unwrap();
    let _ = quantrac.wait();
}

fn dir_site(label: &str) -> (Site, Config, PathBuf) {
    let (site, _) = ftp_site(label);
    let (c, root) = dir_config(&site);
    (site, c, root)
}

/// A configuration watching `incoming/` in the site's directory (new ports each call).
fn dir_config(site: &Site) -> (Config, PathBuf) {
    let mut c = site.config();
    let root = site.dir.path().join("incoming");
    c.ingest_dir.enabled = true;
    c.ingest_dir.path = root.clone();
    c.ingest_dir.poll_interval = Duration::from_millis(50);
    c.ingest_dir.settle = Duration::from_millis(100);
    (c, root)
}

/// Waits (bounded) for `path` to exist: the watcher's moves are its only visible signal.
async fn wait_exists(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_written_into_the_watched_directory_are_ingested_and_moved_to_done_or_rejected() {
    let (_site, config, root) = dir_site("dir");
    let s = Service::start(config).await;
    let station_dir = root.join("DN");
    std::fs::create_dir_all(&station_dir).unwrap();
    let t = common::recent_minute(15);
    let good = tt10(&station_dir, "DN_AMATA_WW01", t, 12.5);
    let name = good.file_name().unwrap().to_owned();
    let bad = station_dir.join("notes.txt");
    std::fs::write(&bad, "COD\t1\tmg/L\t20260101000000\t00\n").unwrap();
    let partial = station_dir.join("DN_AMATA_WW01_20260101000000.txt.part");
    std::fs::write(&partial, "COD\t1").unwrap();

    wait_exists(&root.join("done/DN").join(&name)).await;
    wait_exists(&root.join("rejected/DN/notes.txt.reason")).await;
    wait_exists(&root.join("rejected/DN/notes.txt")).await;
    assert_eq!(count(&s.base, &s.http, ST, "COD", t, t + 60_000).await, 1);
    let reason = std::fs::read_to_string(root.join("rejected/DN/notes.txt.reason")).unwrap();
    assert!(reason.starts_with("file_name\n"), "{reason}");
    assert!(!good.exists() && !bad.exists());
    assert!(partial.exists(), "a name not ending in .txt is left alone");
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_left_in_processing_by_a_crash_is_finished_on_restart_and_stored_once() {
    let (site, config, root) = dir_site("dir-crash");
    let s = Service::start(config).await;
    let t = common::recent_minute(25);
    let first = tt10(&root, "DN_AMATA_WW01", t, 5.0);
    let name = first.file_name().unwrap().to_owned();
    wait_exists(&root.join("done").join(&name)).await;
    s.running.stop().await;

    // A crash after the store had the first file but before it left processing/, and one
    // after the second file was taken but before it was ingested.
    std::fs::rename(
        root.join("done").join(&name),
        root.join("processing").join(&name),
    )
    .unwrap();
    let second = tt10(site.dir.path(), "DN_AMATA_WW01", t + 60_000, 6.0);
    let second_name = second.file_name().unwrap().to_owned();
    std::fs::rename(&second, root.join("processing").join(&second_name)).unwrap();

    let s = Service::start(dir_config(&site).0).await;
    wait_exists(&root.join("done").join(&name)).await;
    wait_exists(&root.join("done").join(&second_name)).await;
    assert_eq!(
        count(&s.base, &s.http, ST, "COD", t, t + 120_000).await,
        2,
        "each file's reading once"
    );
    assert_eq!(
        std::fs::read_dir(root.join("processing")).unwrap().count(),
        0
    );
    s.running.stop().await;
}
