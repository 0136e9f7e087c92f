//! The FTP listener: accepts control connections itself (so that it knows its address when
//! bound to port 0, bounds the sessions, and stops in order) and hands each to libunftp.
//!
//! # Backpressure
//! At most `ftp.max_connections` sessions run at once; the next connection waits in the
//! listen backlog until one ends. A session holds at most one file (`ftp.max_file_bytes`) in
//! memory while its reply waits for the store, whose bounded queue in turn holds the upload
//! back: nothing grows without bound.
//!
//! # Stopping
//! [`FtpServer::stop`]: the listener closes (no new session), the intake refuses new files
//! (451) and waits for the files in flight to be durable, whose 226 then goes out; sessions
//! get a short grace to end by themselves, then are closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libunftp::options::{FtpsRequired, PassiveHost};
use libunftp::ServerBuilder;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::FtpConfig;
use crate::metrics as m;

use super::auth::{DeviceAuthenticator, DeviceDetails};
use super::backend::{DropBox, LastRefusal, SiteReason};
use super::intake::Intake;
use super::lockout::Lockout;
use super::Error;

/// Keys the failed-login memory holds at most (a flood of addresses evicts the oldest).
const LOCKOUT_CAPACITY: usize = 100_000;

/// How long stopping sessions may take to end by themselves once their files are durable.
const SESSION_GRACE: Duration = Duration::from_secs(2);

/// A running FTP endpoint.
pub struct FtpServer {
    /// Where it listens (useful when configured with port 0).
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<JoinSet<()>>,
    intake: Arc<Intake>,
}

/// Binds `config.listen` and starts accepting sessions.
pub async fn start(config: &FtpConfig, intake: Arc<Intake>) -> Result<FtpServer, Error> {
    let tls = match &config.tls {
        Some(files) => Some(crate::security::tls::server_config(
            &files.cert,
            &files.key,
            &[],
        )?),
        None => None,
    };
    let listen = config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: listen,
        source,
    })?;
    let lockout = Lockout::new(
        config.failed_logins_max,
        config.failed_logins_block,
        config.failed_logins_block_by,
        LOCKOUT_CAPACITY,
    );
    let session = Session {
        config: config.clone(),
        tls,
        intake: intake.clone(),
        lockout: Arc::new(Mutex::new(lockout)),
    };
    // libunftp logs through `log` at info for every command; quantrac logs what matters.
    let stop = CancellationToken::new();
    let task = tokio::spawn(accept(listener, session, stop.clone()));
    tracing::info!(%addr, tls = config.tls.is_some(), require_tls = config.require_tls, "FTP endpoint listening");
    Ok(FtpServer {
        addr,
        stop,
        task,
        intake,
    })
}

/// What every session is built from.
struct Session {
    config: FtpConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    intake: Arc<Intake>,
    /// Failed logins, shared by every session.
    lockout: Arc<Mutex<Lockout>>,
}

impl Session {
    fn server(&self) -> Result<libunftp::Server<DropBox, super::auth::DeviceUser>, Error> {
        let devices = self.intake.devices().clone();
        // One per session (this builds one server per connection): `SITE REASON` tells the
        // last refusal of this session only.
        let last_refusal = LastRefusal::default();
        let backend = DropBox {
            intake: self.intake.clone(),
            max_file_bytes: self.config.max_file_bytes,
            last_refusal: last_refusal.clone(),
        };
        let mut builder = ServerBuilder::with_user_detail_provider(
            Box::new(move || backend.clone()),
            Arc::new(DeviceDetails(devices.clone())),
        )
        .authenticator(Arc::new(DeviceAuthenticator {
            devices,
            lockout: self.lockout.clone(),
        }))
        .greeting("quantrac Circular 10 receiver")
        .passive_ports(self.config.passive_port_first..=self.config.passive_port_last)
        .site_command("REASON", SiteReason(last_refusal))
        .idle_session_timeout(self.config.idle_timeout.as_secs().max(1));
        if let Some(address) = &self.config.passive_address {
            builder = builder.passive_host(PassiveHost::from(address.as_str()));
        }
        if let Some(tls) = &self.tls {
            builder = builder.ftps_manual::<std::path::PathBuf>(tls.clone());
            if self.config.require_tls {
                builder = builder.ftps_required(FtpsRequired::All, FtpsRequired::All);
            }
        }
        builder.build().map_err(|e| Error::Build(e.to_string()))
    }
}

async fn accept(listener: TcpListener, session: Session, stop: CancellationToken) -> JoinSet<()> {
    let permits = Arc::new(Semaphore::new(session.config.max_connections));
    let mut sessions = JoinSet::new();
    loop {
        while sessions.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "FTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Replies go out at once: with Nagle's algorithm, the 226 written right after the
        // 150 waited for the client's delayed ACK of the 150 (40 ms per file on Linux).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY on an FTP session");
        }
        let server = match session.server() {
            Ok(server) => server,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up an FTP session");
                continue;
            }
        };
        sessions.spawn(async move {
            let _permit = permit;
            metrics::gauge!(m::FTP_SESSIONS).increment(1.0);
            if let Err(e) = server.service(stream).await {
                tracing::debug!(%peer, error = %e, "FTP session ended with an error");
            }
            metrics::gauge!(m::FTP_SESSIONS).decrement(1.0);
        });
    }
    sessions
}

impl FtpServer {
    /// Stops in order: no new session, no new file, files in flight durable and answered,
    /// then the sessions are closed.
    pub async fn stop(self) -> Result<(), String> {
        self.stop.cancel();
        let mut sessions = self.task.await.map_err(|e| e.to_string())?;
        self.intake.close().await;
        let ended = tokio::time::timeout(SESSION_GRACE, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if ended.is_err() {
            tracing::info!(
                open = sessions.len(),
                "closing FTP sessions still open (their files are durable)"
            );
            sessions.shutdown().await;
        }
        Ok(())
    }
}
