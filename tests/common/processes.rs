//! Processes the fault tests run beside quantrac: a Mosquitto of their own, and quantrac
//! itself as a child process (`quantrac serve`), observed from outside.

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
        let dir = tempfile::tempdir().unwrap();
        let port = quantrac::mqtt::free_local_addr().unwrap().port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_inflight_messages 1000\nmax_queued_messages 0\nautosave_interval 1\n",
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
