//! Security of the API, end to end on a real quantrac: tokens and roles (401 vs 403, every
//! role against every endpoint), revocation, rate limits, size and cost limits, the audit
//! log, TLS, the token command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{authorized, Broker, Service, Site};
use quantrac::security::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// One endpoint, the least role that may call it, and what an allowed call answers.
struct Endpoint {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    least: Role,
    allowed: u16,
}

fn endpoint(method: Method, path: &'static str, least: Role, allowed: u16) -> Endpoint {
    Endpoint {
        method,
        path,
        body: None,
        least,
        allowed,
    }
}

/// The contract of docs/security.md, written out independently of the code's route table.
fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    use Role::*;
    let mut create = endpoint(M::POST, "/api/v1/tokens", Admin, 201);
    create.body = Some(json!({"name": "made by the role test", "role": "viewer"}));
    let mut ack = endpoint(M::POST, "/api/v1/alerts/999999/ack", Inspector, 404);
    ack.body = Some(json!({"note": "checking"}));
    vec![
        endpoint(M::GET, "/api/v1/zones", Viewer, 200),
        endpoint(M::GET, "/api/v1/stations", Viewer, 200),
        endpoint(M::GET, "/api/v1/stations/DN-AMATA-WW01", Viewer, 200),
        endpoint(M::GET, "/api/v1/stations/DN-AMATA-WW01/latest", Viewer, 200),
        endpoint(
            M::GET,
            "/api/v1/readings?station=DN-AMATA-WW01",
            Viewer,
            200,
        ),
        endpoint(M::GET, "/api/v1/alerts", Viewer, 200),
        endpoint(M::GET, "/api/v1/alerts/999999", Viewer, 404),
        endpoint(M::GET, "/api/v1/alerts/stream", Viewer, 200),
        endpoint(M::GET, "/api/v1/me", Viewer, 200),
        endpoint(M::GET, "/metrics", Viewer, 200),
        endpoint(M::GET, "/api/v1/quarantine", Analyst, 200),
        endpoint(M::GET, "/api/v1/quarantine/999999/payload", Analyst, 404),
        ack,
        endpoint(M::GET, "/api/v1/alerts/webhooks", Admin, 200),
        endpoint(M::GET, "/api/v1/tokens", Admin, 200),
        create,
        endpoint(M::DELETE, "/api/v1/tokens/0123456789ab", Admin, 404),
        endpoint(M::GET, "/api/v1/audit", Admin, 200),
        endpoint(M::POST, "/api/v1/registry/reload", Admin, 200),
        endpoint(
            M::POST,
            "/api/v1/stations/DN-AMATA-WW01/record-counter/reset",
            Admin,
            200,
        ),
    ]
}

async fn call(http: &reqwest::Client, svc: &Service, e: &Endpoint) -> (u16, Value) {
    let mut request = http.request(e.method.clone(), format!("{}{}", svc.base, e.path));
    if let Some(body) = &e.body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    // The event stream never ends: its status and headers are the answer.
    if e.path.ends_with("/stream") && status == 200 {
        return (status, Value::Null);
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_role_may_call_exactly_the_endpoints_of_its_level_and_below() {
    let site = Site::new(Broker::Embedded, "roles");
    let svc = site.start().await;
    let anonymous = reqwest::Client::new();
    let clients: Vec<(Role, reqwest::Client)> = Role::ALL
        .into_iter()
        .map(|r| (r, svc.client_with_role(r)))
        .collect();
    for e in endpoints() {
        let (status, body) = call(&anonymous, &svc, &e).await;
        assert_eq!(
            status, 401,
            "{} {} without a token: {body}",
            e.method, e.path
        );
        assert_eq!(body["error"]["code"], "unauthenticated");
        for (role, http) in &clients {
            let (status, body) = call(http, &svc, &e).await;
            if role.allows(e.least) {
                assert_eq!(
                    status, e.allowed,
                    "{role} on {} {}: {body}",
                    e.method, e.path
                );
            } else {
                assert_eq!(status, 403, "{role} on {} {}: {body}", e.method, e.path);
                assert_eq!(body["error"]["code"], "forbidden");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains(e.least.as_str()), "{message}");
            }
        }
    }
    for probe in ["/healthz", "/readyz"] {
        let status = anonymous
            .get(format!("{}{probe}", svc.base))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{probe} needs no token");
    }
    svc.stop().await;
}

#[tokio::test]
async fn unauthenticated_answers_say_bearer_and_never_why() {
    let site = Site::new(Broker::Embedded, "authn");
    let svc = site.start().await;
    let url = format!("{}/api/v1/stations", svc.base);
    let (revoked, info) = svc
        .running
        .security()
        .create_token("soon revoked", Role::Viewer, "test", None)
        .unwrap();
    let mut wrong_secret = svc.token.clone();
    wrong_secret.push('x');
    let attempts = [
        None,
        Some("Basic dXNlcjpwYXNz".to_owned()),
        Some("Bearer not-a-token".to_owned()),
        Some("Bearer qt_0123456789ab_unknown".to_owned()),
        Some(format!("Bearer {wrong_secret}")),
    ];
    let mut bodies = Vec::new();
    for header in attempts {
        let mut request = reqwest::Client::new().get(&url);
        if let Some(h) = header {
            request = request.header("authorization", h);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"quantrac\""
        );
        bodies.push(response.text().await.unwrap());
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "every failure looks the same: {bodies:?}");

    let http = authorized(&revoked);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    let response = svc
        .http
        .delete(format!("{}/api/v1/tokens/{}", svc.base, info.id))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        http.get(&url).send().await.unwrap().status(),
        401,
        "a revoked token stops working at the next request"
    );
    svc.stop().await;
}

#[tokio::test]
async fn a_token_made_through_the_api_is_shown_once_and_works_with_its_role() {
    let site = Site::new(Broker::Embedded, "mint");
    let svc = site.start().await;
    let response = svc
        .http
        .post(format!("{}/api/v1/tokens", svc.base))
        .json(&json!({"name": "inspector on duty", "role": "inspector", "expires_in": "8h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let made: Value = response.json().await.unwrap();
    let token = made["token"].as_str().unwrap();
    let me: Value = authorized(token)
        .get(format!("{}/api/v1/me", svc.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "inspector");
    assert_eq!(me["name"], "inspector on duty");
    let list = svc.ok("/api/v1/tokens").await;
    let listed = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == made["id"])
        .unwrap();
    assert!(
        listed.get("token").is_none(),
        "never listed again: {listed}"
    );
    assert!(!list.to_string().contains(token));
    assert_eq!(listed["expires_at"], made["expires_at"]);
    assert!(made["expires_at"].is_string(), "{made}");
    assert!(listed["last_used_at"].is_string(), "used once: {listed}");

    for bad in [
        json!({"name": "x", "role": "root"}),
        json!({"name": "x", "role": "viewer", "expires_in": "soon"}),
        json!({"name": "x", "role": "viewer", "expires_in": "0s"}),
    ] {
        let refused = svc
            .http
            .post(format!("{}/api/v1/tokens", svc.base))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{bad}");
    }
    svc.stop().await;
}

#[tokio::test]
async fn the_audit_log_records_tokens_reloads_and_failure_bursts_in_an_intact_chain() {
    let site = Site::new(Broker::Embedded, "audit");
    let mut config = site.config();
    config.security.auth_failure_burst = 3;
    let svc = Service::start(config).await;
    let (_, info) = svc
        .running
        .security()
        .create_token("to revoke", Role::Viewer, "test", None)
        .unwrap();
    svc.http
        .delete(format!("{}/api/v1/tokens/{}", svc.base, info.id))
        .send()
        .await
        .unwrap();
    let reload = svc
        .http
        .post(format!("{}/api/v1/registry/reload", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);
    for _ in 0..3 {
        reqwest::Client::new()
            .get(format!("{}/api/v1/zones", svc.base))
            .bearer_auth("qt_0123456789ab_guess")
            .send()
            .await
            .unwrap();
    }
    let audit = svc.ok("/api/v1/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "token_created",
        "token_revoked",
        "registry_reloaded",
        "auth_failure_burst",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    let revoked = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "token_revoked")
        .unwrap();
    assert!(revoked["actor"].as_str().unwrap().contains("test harness"));
    assert_eq!(revoked["address"], "127.0.0.1");
    assert_eq!(audit["chain"]["broken_at"], Value::Null);
    assert_eq!(audit["chain"]["entries"], actions.len());
    svc.stop().await;
}

#[tokio::test]
async fn a_token_over_its_rate_is_answered_429_with_retry_after() {
    let site = Site::new(Broker::Embedded, "rate");
    let mut config = site.config();
    config.api.rate_limit.per_token_per_second = 1;
    config.api.rate_limit.per_token_burst = 5;
    let svc = Service::start(config).await;
    let viewer = svc.client_with_role(Role::Viewer);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = viewer
            .get(format!("{}/api/v1/zones", svc.base))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let wait: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(wait <= 1, "one request a second: {wait}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
        }
    }
    assert_eq!(&statuses[..5], [200; 5], "the burst passes");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    // Another token has a bucket of its own.
    let other = svc.client_with_role(Role::Viewer);
    let status = other
        .get(format!("{}/api/v1/zones", svc.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    svc.stop().await;
}

#[tokio::test]
async fn one_address_guessing_tokens_is_slowed_down_before_authentication() {
    let site = Site::new(Broker::Embedded, "guess");
    let mut config = site.config();
    config.api.rate_limit.per_address_per_second = 1;
    config.api.rate_limit.per_address_burst = 4;
    let svc = Service::start(config).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let status = reqwest::Client::new()
            .get(format!("{}/api/v1/zones", svc.base))
            .bearer_auth(format!("qt_0123456789ab_guess{i}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        statuses.push(status);
    }
    assert_eq!(&statuses[..4], [401; 4]);
    assert!(statuses[4..].contains(&429), "{statuses:?}");
    svc.stop().await;
}

#[tokio::test]
async fn oversized_heads_and_costly_queries_are_refused_before_the_store_is_asked() {
    let site = Site::new(Broker::Embedded, "limits");
    let mut config = site.config();
    config.api.max_query_cost = 30;
    let svc = Service::start(config).await;
    let huge = "x".repeat(20_000);
    let status = svc
        .http
        .get(format!("{}/api/v1/zones", svc.base))
        .header("x-padding", huge)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 431);

    // DN-AMATA-WW01 has more than 3 parameters: 10 days of all of them cost over 30.
    let (status, body) = svc
        .get("/api/v1/readings?station=DN-AMATA-WW01&from=2026-01-01&to=2026-01-11&bucket=1d")
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "query_too_costly");
    let (status, body) = svc
        .get("/api/v1/readings?station=DN-AMATA-WW01&param=COD&from=2026-01-01&to=2026-01-11&bucket=1d")
        .await;
    assert_eq!(status, 200, "one series for 10 days is within: {body}");
    svc.stop().await;
}

#[tokio::test]
async fn metrics_need_a_token_on_the_api_but_not_on_their_own_listener() {
    let site = Site::new(Broker::Embedded, "metrics");
    let mut config = site.config();
    let metrics_addr = quantrac::mqtt::free_local_addr().unwrap();
    config.api.metrics_listen = Some(metrics_addr);
    let svc = Service::start(config).await;
    let anonymous = reqwest::Client::new();
    let on_api = anonymous
        .get(format!("{}/metrics", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status(), 401);
    let own = anonymous
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert!(own.text().await.unwrap().contains("quantrac_"));
    let elsewhere = anonymous
        .get(format!("http://{metrics_addr}/api/v1/zones"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        elsewhere.status(),
        404,
        "the metrics listener serves only /metrics"
    );
    svc.stop().await;
}

#[tokio::test]
async fn the_api_speaks_https_when_given_a_certificate() {
    let site = Site::new(Broker::Embedded, "tls");
    let generated = rcgen::generate_simple_self_signed(vec!["quantrac.test".into()]).unwrap();
    let cert = site.dir.path().join("cert.pem");
    let key = site.dir.path().join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let mut config = site.config();
    config.api.tls = Some(quantrac::config::TlsFiles {
        cert: cert.clone(),
        key,
    });
    let svc = Service::start(config).await;
    let addr = svc.running.api_addr;
    let trusted = common::authorized_builder(&svc.token)
        .add_root_certificate(
            reqwest::Certificate::from_pem(generated.cert.pem().as_bytes()).unwrap(),
        )
        .resolve("quantrac.test", addr)
        .build()
        .unwrap();
    let response = trusted
        .get(format!(
            "https://quantrac.test:{}/api/v1/zones",
            addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.map_or(true, |r| r.status() != 200),
        "plain HTTP is not served on the TLS port"
    );
    svc.stop().await;
}

#[test]
fn the_token_command_creates_lists_and_revokes_tokens_in_the_configured_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("security.db");
    let config = dir.path().join("quantrac.toml");
    std::fs::write(&config, format!("[security]\ndb = \"{}\"\n", db.display())).unwrap();
    let quantrac = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_quantrac"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let token = quantrac(&[
        "token",
        "create",
        "--role",
        "analyst",
        "--name",
        "monthly report",
        "--expires-in",
        "30days",
    ]);
    let token = token.trim();
    let store = quantrac::security::SecurityDb::open(&db).unwrap();
    let who = store.authenticate(token).unwrap().unwrap();
    assert_eq!(who.role, Role::Analyst);
    let expires = store.tokens().unwrap()[0].expires_at.unwrap();
    let days =
        (expires.as_millis() - quantrac::telemetry::Timestamp::now().as_millis()) / 86_400_000;
    assert_eq!(days, 29, "30 days from now, less the moments since");
    let list = quantrac(&["token", "list"]);
    assert!(
        list.contains(&who.token_id) && list.contains("monthly report"),
        "{list}"
    );
    assert!(!list.contains(token), "secrets are never listed");
    quantrac(&["token", "revoke", &who.token_id]);
    assert!(store.authenticate(token).unwrap().is_err());
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_quantrac"))
        .args([
            "token", "create", "--role", "root", "--name", "x", "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

/// A site on the device endpoint with one device, `gw-amata`, for DN-AMATA-WW01 only, and
/// no anonymous access.
fn site_with_a_device(label: &str, password: &str) -> (Site, quantrac::config::Config) {
    let mut site = Site::new(Broker::Embedded, label);
    let seeds = site.dir.path().join("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    for file in ["zones.toml", "limits.csv", "rules.toml", "stations.toml"] {
        std::fs::copy(common::seeds().join(file), seeds.join(file)).unwrap();
    }
    let hash = quantrac::mqtt::devices::hash_password(password).unwrap();
    std::fs::write(
        seeds.join("devices.toml"),
        format!(
            "[[device]]\nusername = \"gw-amata\"\npassword_hash = \"{hash}\"\nstations = [\"DN-AMATA-WW01\"]\n"
        ),
    )
    .unwrap();
    site.seeds = Some(seeds);
    let mut config = site.config();
    config.mqtt.endpoint.allow_anonymous = false;
    (site, config)
}

fn device(svc: &Service, url: String, password: Option<&str>) -> firmware_sim::BrokerOptions {
    let mut options = firmware_sim::BrokerOptions::new(url, common::unique("gw"));
    let prefix = &svc.running.config().mqtt.topic_prefix;
    options.topic_prefix = Some(prefix.clone()).filter(|p| !p.is_empty());
    if let Some(password) = password {
        options.username = Some("gw-amata".into());
        options.password = Some(password.into());
    }
    options
}

/// The sum of a metric's samples with `label` in quantrac's /metrics.
async fn metric(svc: &Service, name: &str, label: &str) -> f64 {
    let text = svc.metrics_text().await;
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (bounded) until the guard has counted a refusal for `reason`: its counter is the only
/// outside sign of one.
async fn wait_refused(svc: &Service, reason: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(svc, "quantrac_mqtt_refused_total", reason).await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a `{reason}` refusal is counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn wrong_mqtt_credentials_and_anonymous_clients_are_refused_by_the_device_endpoint() {
    let (_site, config) = site_with_a_device("mqtt-auth", "s3cret-from-the-cli");
    let svc = Service::start(config).await;
    let url = svc.broker_url();
    for password in [None, Some("wrong")] {
        let refused = firmware_sim::Publisher::connect(device(&svc, url.clone(), password)).await;
        assert!(
            matches!(refused, Err(firmware_sim::publish::Error::Refused(_))),
            "{password:?}: {refused:?}"
        );
    }
    let gw = firmware_sim::Publisher::connect(device(&svc, url, Some("s3cret-from-the-cli")))
        .await
        .expect("the device's own credentials are accepted");
    let rec = common::record(
        "DN-AMATA-WW01",
        common::recent_minute(3),
        1,
        &[("COD", 50.0, "mg/L")],
    );
    gw.publish_records(
        "DN-AMATA",
        "DN-AMATA-WW01",
        firmware_sim::Encoding::Json,
        &[rec],
    )
    .await
    .unwrap();
    gw.wait_acked().await.unwrap();
    svc.wait_processed(1).await;
    // Counted (the counters are process-wide: other tests here may add to them).
    for reason in ["anonymous", "bad_credentials"] {
        assert!(
            metric(&svc, "quantrac_mqtt_refused_total", reason).await >= 1.0,
            "{reason} refusals are counted"
        );
    }
    svc.stop().await;
}

#[tokio::test]
async fn a_device_publishing_under_another_station_is_cut_off_and_nothing_of_it_is_stored() {
    let (_site, config) = site_with_a_device("mqtt-acl", "pw-acl");
    let svc = Service::start(config).await;
    let gw = firmware_sim::Publisher::connect(device(&svc, svc.broker_url(), Some("pw-acl")))
        .await
        .unwrap();
    let ts = common::recent_minute(4);
    let foreign = common::record("DN-AMATA-ST01", ts, 1, &[("SO2", 50.0, "mg/Nm3")]);
    gw.publish_records(
        "DN-AMATA",
        "DN-AMATA-ST01",
        firmware_sim::Encoding::Json,
        &[foreign],
    )
    .await
    .unwrap();
    wait_refused(&svc, "publish_not_allowed").await;
    assert_eq!(svc.running.ingest().received(), 0, "quantrac never saw it");
    let (status, body) = svc
        .get(&format!(
            "/api/v1/readings?station=DN-AMATA-ST01&from={}",
            ts - 60_000
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["readings"].as_array().unwrap().len(), 0);
    // Its own station still works, on a new connection.
    let gw = firmware_sim::Publisher::connect(device(&svc, svc.broker_url(), Some("pw-acl")))
        .await
        .unwrap();
    let own = common::record("DN-AMATA-WW01", ts, 1, &[("COD", 50.0, "mg/L")]);
    gw.publish_records(
        "DN-AMATA",
        "DN-AMATA-WW01",
        firmware_sim::Encoding::Json,
        &[own],
    )
    .await
    .unwrap();
    gw.wait_acked().await.unwrap();
    svc.wait_processed(1).await;
    svc.stop().await;
}

#[tokio::test]
async fn a_reload_of_the_devices_cuts_a_rotated_password_and_admits_the_new_one() {
    let (site, config) = site_with_a_device("mqtt-reload", "pw-before");
    let svc = Service::start(config).await;
    let old = firmware_sim::Publisher::connect(device(&svc, svc.broker_url(), Some("pw-before")))
        .await
        .unwrap();
    let hash = quantrac::mqtt::devices::hash_password("pw-after").unwrap();
    std::fs::write(
        site.dir.path().join("seeds/devices.toml"),
        format!(
            "[[device]]\nusername = \"gw-amata\"\npassword_hash = \"{hash}\"\nstations = [\"DN-AMATA-WW01\"]\n"
        ),
    )
    .unwrap();
    let answer: Value = svc
        .http
        .post(format!("{}/api/v1/registry/reload", svc.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        answer["registry"].as_str().unwrap().contains("1 devices"),
        "{answer}"
    );

    // The connection opened with the old password ends at its next packet, unforwarded.
    let ts = common::recent_minute(5);
    let rec = common::record("DN-AMATA-WW01", ts, 1, &[("COD", 50.0, "mg/L")]);
    old.publish_records(
        "DN-AMATA",
        "DN-AMATA-WW01",
        firmware_sim::Encoding::Json,
        std::slice::from_ref(&rec),
    )
    .await
    .unwrap();
    wait_refused(&svc, "revoked").await;
    assert_eq!(svc.running.ingest().received(), 0, "quantrac never saw it");

    let refused =
        firmware_sim::Publisher::connect(device(&svc, svc.broker_url(), Some("pw-before"))).await;
    assert!(
        matches!(refused, Err(firmware_sim::publish::Error::Refused(_))),
        "{refused:?}"
    );
    let new = firmware_sim::Publisher::connect(device(&svc, svc.broker_url(), Some("pw-after")))
        .await
        .expect("the new password is accepted without a restart");
    new.publish_records(
        "DN-AMATA",
        "DN-AMATA-WW01",
        firmware_sim::Encoding::Json,
        &[rec],
    )
    .await
    .unwrap();
    new.wait_acked().await.unwrap();
    svc.wait_processed(1).await;
    svc.stop().await;
}

#[tokio::test]
async fn devices_can_publish_over_mqtts_on_the_device_endpoint() {
    let (site, mut config) = site_with_a_device("mqtts", "pw-tls");
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = site.dir.path().join("broker-cert.pem");
    let key = site.dir.path().join("broker-key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let tls_addr = quantrac::mqtt::free_local_addr().unwrap();
    config.mqtt.endpoint.tls_listen = Some(tls_addr);
    config.mqtt.endpoint.tls = Some(quantrac::config::TlsFiles {
        cert: cert.clone(),
        key,
    });
    let svc = Service::start(config).await;
    let mut options = device(
        &svc,
        format!("mqtts://localhost:{}", tls_addr.port()),
        Some("pw-tls"),
    );
    options.ca_file = Some(cert);
    let gw = firmware_sim::Publisher::connect(options)
        .await
        .expect("mqtts works");
    let rec = common::record(
        "DN-AMATA-WW01",
        common::recent_minute(6),
        1,
        &[("COD", 50.0, "mg/L")],
    );
    gw.publish_records(
        "DN-AMATA",
        "DN-AMATA-WW01",
        firmware_sim::Encoding::Bincode,
        &[rec],
    )
    .await
    .unwrap();
    gw.wait_acked().await.unwrap();
    svc.wait_processed(1).await;
    svc.stop().await;
}

/// POSTs `body` (raw JSON text) to `path` with the admin token: status and JSON body.
async fn post_raw(svc: &Service, path: &str, body: &str) -> (u16, Value) {
    let response = svc
        .http
        .post(format!("{}{path}", svc.base))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn token_names_and_ack_notes_with_control_characters_are_refused_with_400() {
    let site = Site::new(Broker::Embedded, "ctrl");
    let svc = site.start().await;
    let forged = "ops\n2026-11-30T00:00:00Z  INFO quantrac: forged \u{1b}[2J";
    let (status, body) = post_raw(
        &svc,
        "/api/v1/tokens",
        &json!({"name": forged, "role": "viewer"}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "control_characters", "{body}");
    // The body is checked before the alert is looked up: no alert is needed.
    for ack in [
        json!({"note": forged}),
        json!({"by": "Nguyen\rVan A", "note": "ok"}),
        json!({"note": "right to left \u{202e}evil"}),
    ] {
        let (status, body) = post_raw(&svc, "/api/v1/alerts/999999/ack", &ack.to_string()).await;
        assert_eq!(status, 400, "{ack}: {body}");
        assert_eq!(body["error"]["code"], "control_characters", "{body}");
    }
    let (status, body) = post_raw(
        &svc,
        "/api/v1/alerts/999999/ack",
        &json!({"note": "team on the way, ETA 20'"}).to_string(),
    )
    .await;
    assert_eq!(status, 404, "a clean note passes the check: {body}");
    svc.stop().await;
}

#[tokio::test]
async fn json_arrays_and_scalars_are_refused_where_an_object_is_expected() {
    let site = Site::new(Broker::Embedded, "objects");
    let svc = site.start().await;
    let before = svc.ok("/api/v1/tokens").await["tokens"]
        .as_array()
        .unwrap()
        .len();
    for (path, body) in [
        ("/api/v1/tokens", r#"["b","viewer"]"#),
        ("/api/v1/tokens", "[]"),
        ("/api/v1/tokens", "42"),
        ("/api/v1/tokens", r#""viewer""#),
        ("/api/v1/alerts/999999/ack", "[]"),
        ("/api/v1/alerts/999999/ack", r#"["someone","note"]"#),
        ("/api/v1/alerts/999999/ack", "null"),
    ] {
        let (status, answer) = post_raw(&svc, path, body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_body", "{answer}");
    }
    let after = svc.ok("/api/v1/tokens").await["tokens"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "no token was made");
    svc.stop().await;
}

#[tokio::test]
async fn token_expiries_are_bounded_to_ten_years_and_shown_in_rfc3339() {
    let site = Site::new(Broker::Embedded, "expiry");
    let svc = site.start().await;
    for absurd in ["99999999999999d", "3654d", "20years"] {
        let (status, body) = post_raw(
            &svc,
            "/api/v1/tokens",
            &json!({"name": "far", "role": "viewer", "expires_in": absurd}).to_string(),
        )
        .await;
        assert_eq!(status, 400, "{absurd}: {body}");
    }
    let (status, made) = post_raw(
        &svc,
        "/api/v1/tokens",
        &json!({"name": "long", "role": "viewer", "expires_in": "3650d"}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let expires = made["expires_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(expires).is_ok(),
        "{expires}"
    );
    svc.stop().await;
}

#[tokio::test]
async fn a_rate_limited_answer_never_says_retry_after_zero() {
    let site = Site::new(Broker::Embedded, "retry");
    let mut config = site.config();
    // A token refills every 100 ms: governor would say `Retry-After: 0`.
    config.api.rate_limit.per_token_per_second = 10;
    config.api.rate_limit.per_token_burst = 1;
    let svc = Service::start(config).await;
    let viewer = svc.client_with_role(Role::Viewer);
    let mut limited = None;
    for _ in 0..20 {
        let response = viewer
            .get(format!("{}/api/v1/zones", svc.base))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("one request over the rate");
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1, "Retry-After: {wait}");
    svc.stop().await;
}

#[tokio::test]
async fn oversized_bodies_and_heads_are_answered_413_and_431_in_the_json_shape() {
    let site = Site::new(Broker::Embedded, "sizes");
    let svc = site.start().await;
    let limit = svc.running.config().api.max_body_bytes;
    let big = json!({"name": "x".repeat(limit), "role": "viewer"}).to_string();
    let response = svc
        .http
        .post(format!("{}/api/v1/tokens", svc.base))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large", "{body}");

    // The same body chunked, without a Content-Length: 413 too, not 400.
    let (status, body) = raw_request(
        &svc,
        &format!(
            "POST /api/v1/tokens HTTP/1.1\r\nHost: quantrac\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {:x}\r\n{big}\r\n0\r\n\r\n",
            svc.token,
            big.len()
        ),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "body_too_large", "{body}");

    let response = svc
        .http
        .get(format!("{}/api/v1/zones", svc.base))
        .header("x-padding", "x".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "head_too_large", "{body}");
    svc.stop().await;
}

/// Sends `request` as is over a new connection: the status and the body as JSON.
async fn raw_request(svc: &Service, request: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(svc.running.api_addr)
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // The server may answer and close before reading everything: keep what came.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .map(|b| {
            // Possibly chunked: the JSON object is between the first `{` and the last `}`.
            match (b.find('{'), b.rfind('}')) {
                (Some(s), Some(e)) => serde_json::from_str(&b[s..=e]).unwrap_or(Value::Null),
                _ => Value::Null,
            }
        })
        .unwrap_or(Value::Null);
    (status, body)
}

#[test]
fn quantrac_token_list_shows_control_characters_of_old_token_names_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("security.db");
    let config = dir.path().join("quantrac.toml");
    std::fs::write(&config, format!("[security]\ndb = \"{}\"\n", db.display())).unwrap();
    let store = quantrac::security::SecurityDb::open(&db).unwrap();
    store
        .create_token("placeholder", Role::Viewer, "test", None)
        .unwrap();
    // Made before names were checked: written straight into the database.
    let forged = "ops\nabcdef012345  admin  forged line \u{1b}[2J";
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE tokens SET name = ?1", [forged])
        .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_quantrac"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = run(&["token", "list"]);
    assert!(out.status.success());
    let list = String::from_utf8(out.stdout).unwrap();
    assert_eq!(list.lines().count(), 2, "a header and one token: {list}");
    assert!(!list.contains('\u{1b}'), "{list}");
    assert!(list.contains("ops\\nabcdef012345"), "{list}");
    let refused = run(&[
        "token",
        "create",
        "--role",
        "viewer",
        "--name",
        "a\u{1b}[31mb",
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("control characters"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn check_config_refuses_a_device_given_a_station_not_in_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = dir.path().join("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    for file in ["zones.toml", "limits.csv", "rules.toml", "stations.toml"] {
        std::fs::copy(common::seeds().join(file), seeds.join(file)).unwrap();
    }
    let hash = quantrac::mqtt::devices::hash_password("secret password").unwrap();
    let device = |station: &str| {
        format!(
            "[[device]]\nusername = \"gw-amata\"\npassword_hash = \"{hash}\"\nstations = [\"{station}\"]\n"
        )
    };
    let config = dir.path().join("quantrac.toml");
    std::fs::write(
        &config,
        format!("[registry]\nseeds = \"{}\"\n", seeds.display()),
    )
    .unwrap();
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_quantrac"))
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    std::fs::write(seeds.join("devices.toml"), device("DN-AMATA-WW01")).unwrap();
    let known = check();
    assert!(
        known.status.success(),
        "{}",
        String::from_utf8_lossy(&known.stderr)
    );
    std::fs::write(seeds.join("devices.toml"), device("DN-NOWHERE-01")).unwrap();
    let unknown = check();
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("DN-NOWHERE-01") && stderr.contains("not in the registry"),
        "{stderr}"
    );
}
