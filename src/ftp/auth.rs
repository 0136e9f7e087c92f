//! FTP logins: the devices of `devices.toml` (the same credentials and per-station rights as
//! MQTT, checked by [`crate::mqtt::devices`]), reloaded with the seeds.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal, UserDetail, UserDetailError,
    UserDetailProvider,
};

use crate::metrics as m;
use crate::mqtt::devices::Device;

use super::intake::SharedDevices;
use super::lockout::Lockout;

/// A logged-in data logger.
#[derive(Debug, Clone)]
pub struct DeviceUser(pub Device);

impl fmt::Display for DeviceUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.username)
    }
}

impl UserDetail for DeviceUser {}

/// Checks a USER/PASS pair against the current device list, unless failed logins blocked
/// that user or address ([`Lockout`], shared by every session).
#[derive(Debug)]
pub struct DeviceAuthenticator {
    pub devices: SharedDevices,
    pub lockout: Arc<Mutex<Lockout>>,
}

#[async_trait]
impl Authenticator for DeviceAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let address = creds.source_ip;
        let shown = crate::text::escape(username);
        if let Err(blocked) = self.lockout.lock().check(address, username, Instant::now()) {
            // Not even checked: a guesser learns nothing, and costs no password hash.
            metrics::counter!(m::FTP_LOGINS_BLOCKED_TOTAL).increment(1);
            tracing::info!(username = %shown, %address, remaining = ?blocked.remaining,
                "FTP login refused: blocked after failed logins");
            return Err(AuthenticationError::BadPassword);
        }
        let password = creds.password.as_deref().unwrap_or_default();
        match self.devices.load().authenticate(username, password) {
            Some(device) => {
                self.lockout.lock().succeeded(address, username);
                Ok(Principal {
                    username: device.username.clone(),
                })
            }
            None => {
                metrics::counter!(m::FTP_LOGINS_REFUSED_TOTAL).increment(1);
                tracing::warn!(username = %shown, %address, "FTP login refused");
                if self
                    .lockout
                    .lock()
                    .failed(address, username, Instant::now())
                {
                    tracing::warn!(username = %shown, %address,
                        "FTP logins blocked after repeated failures (ftp.failed_logins_max)");
                }
                Err(AuthenticationError::BadPassword)
            }
        }
    }
}

/// The device behind an authenticated name.
#[derive(Debug)]
pub struct DeviceDetails(pub SharedDevices);

#[async_trait]
impl UserDetailProvider for DeviceDetails {
    type User = DeviceUser;

    async fn provide_user_detail(
        &self,
        principal: &Principal,
    ) -> Result<DeviceUser, UserDetailError> {
        self.0
            .load()
            .get(&principal.username)
            .map(|d| DeviceUser(d.clone()))
            .ok_or_else(|| UserDetailError::UserNotFound {
                username: principal.username.clone(),
            })
    }
}
