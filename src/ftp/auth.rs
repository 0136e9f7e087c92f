//! FTP logins: the devices of `devices.toml` (the same credentials and per-station rights as
//! MQTT, checked by [`crate::mqtt::devices`]), reloaded with the seeds.

use std::fmt;

use async_trait::async_trait;
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal, UserDetail, UserDetailError,
    UserDetailProvider,
};

use crate::metrics as m;
use crate::mqtt::devices::Device;

use super::intake::SharedDevices;

/// A logged-in data logger.
#[derive(Debug, Clone)]
pub struct DeviceUser(pub Device);

impl fmt::Display for DeviceUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.username)
    }
}

impl UserDetail for DeviceUser {}

/// Checks a USER/PASS pair against the current device list.
#[derive(Debug)]
pub struct DeviceAuthenticator(pub SharedDevices);

#[async_trait]
impl Authenticator for DeviceAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let password = creds.password.as_deref().unwrap_or_default();
        match self.0.load().authenticate(username, password) {
            Some(device) => Ok(Principal {
                username: device.username.clone(),
            }),
            None => {
                metrics::counter!(m::FTP_LOGINS_REFUSED_TOTAL).increment(1);
                tracing::warn!(username, address = %creds.source_ip, "FTP login refused");
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
