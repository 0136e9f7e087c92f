//! Processes the fault tests run beside quantrac: a Mosquitto of their own, and quantrac
//! itself as a child process (`quantrac serve`), observed from outside.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Mosquitto of the test's own, on a free port, with the production settings of
/// docs/configuration.md, and persistence in a temporary directory.
pub struct PrivateMosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl PrivateMosquitto {
    pub fn start() -> PrivateMosquitto {
        Self::start_with(true)
    }

    /// As [`PrivateMosquitto::start`], without persistence: a restart forgets every session.
    pub fn start_without_persistence() -> PrivateMosquitto {
        Self::start_with(false)
    }

    fn start_with(persistence: bool) -> PrivateMosquitto {
        let dir = tempfile::tempdir().unwrap();
        // Mosquitto started as root drops to the `mosquitto` user, which must be able to
        // write its persistence there: without it a restart forgets every session (and the
        // fault matrix's broker restart lost acknowledged messages).
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let port = quantrac::mqtt::free_local_addr().unwrap().port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence {persistence}\npersistence_location {}/\nmax_inflight_messages 1000\nmax_queued_messages 0\nautosave_interval 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Self::spawn(&conf);
        let mut m = PrivateMosquitto { port, dir, child };
        m.wait_listening();
        m
    }

    fn spawn(conf: &Path) -> Child {
        Command::new("mosquitto")
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (.ci/run installs it)")
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private mosquitto did not start"
            );
            // A process we just spawned: nothing to wait on but its port.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops it cleanly (SIGTERM: it saves its sessions) and starts it again.
    pub fn restart(&mut self) {
        terminate(&self.child);
        let _ = self.child.wait();
        self.child = Self::spawn(&self.dir.path().join("mosquitto.conf"));
        self.wait_listening();
    }
}

impl Drop for PrivateMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

pub async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "quantrac did not become ready");
        // Another process: its readiness is only visible through its API.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The API of a quantrac process, with a viewer token of its own.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    /// The API at `base` of a quantrac process keeping its data in `data`.
    pub fn for_data(data: &Path, base: &str) -> Api {
        let db = quantrac::security::SecurityDb::open(&data.join("security.db")).unwrap();
        let (token, _) = db
            .create_token("faults", quantrac::security::Role::Viewer, "test", None)
            .unwrap();
        Api {
            base: base.to_owned(),
            http: super::authorized(&token),
        }
    }

    /// The times of every reading of `station`'s `param` stored in `[from, to)`, page by
    /// page, and the rows the pages returned (more than the times if one was stored twice).
    pub async fn stored_times(
        &self,
        station: &str,
        param: &str,
        from: i64,
        to: i64,
    ) -> (HashSet<i64>, usize) {
        let mut times = HashSet::new();
        let mut rows = 0;
        let mut cursor: Option<String> = None;
        let mut errors = 0;
        loop {
            let mut url = format!(
                "{}/api/v1/readings?station={station}&param={param}&from={from}&to={to}&limit=10000",
                self.base
            );
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let body: serde_json::Value = self
                .http
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let Some(readings) = body["readings"].as_array() else {
                // Seen twice on QuestDB right after SIGCONT with three fault-matrix cells at once
                // (not reproduced alone): said, and the page asked again, bounded.
                eprintln!("the readings API answered {body}; asking again");
                errors += 1;
                assert!(errors < 20, "the readings API keeps failing: {body}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            for r in readings {
                let at = chrono::DateTime::parse_from_rfc3339(r["ts"].as_str().unwrap()).unwrap();
                times.insert(at.timestamp_millis());
                rows += 1;
            }
            match body["next_cursor"].as_str() {
                Some(next) if body["has_more"] == true => cursor = Some(next.to_owned()),
                _ => return (times, rows),
            }
        }
    }
}

/// A `quantrac serve` child process whose log is read as it comes (a pipe nobody reads fills
/// up, and the log would lose its lines).
pub struct Served {
    pub child: Child,
    log: std::thread::JoinHandle<String>,
}

impl Served {
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }

    /// Waits for the process to end; its exit status and its whole log.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        (status, self.log.join().unwrap())
    }
}

pub fn serve_command(data: &Path, api: &str, prefix: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quantrac"));
    command
        .arg("serve")
        .env("QUANTRAC_STORAGE__PATH", data)
        .env("QUANTRAC_API__LISTEN", api)
        .env("QUANTRAC_MQTT__CLIENT_ID", format!("quantrac-{prefix}"))
        .env("QUANTRAC_MQTT__TOPIC_PREFIX", prefix)
        .env("QUANTRAC_REGISTRY__SEEDS", super::seeds())
        .env("QUANTRAC_LOG__LEVEL", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

pub fn spawn(mut command: Command) -> Served {
    let mut child = command.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    Served { child, log }
}
