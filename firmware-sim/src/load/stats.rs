//! Latency percentiles and what the load tool reads of quantrac from outside: its
//! Prometheus metrics and its readings API.

use serde::Serialize;

use super::Error;

/// Latency percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many samples.
    pub samples: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `ms` (all zero when empty).
    pub fn of(mut ms: Vec<f64>) -> Percentiles {
        ms.sort_by(f64::total_cmp);
        let Some(&max) = ms.last() else {
            return Percentiles::default();
        };
        let at = |p: f64| {
            let rank = (p * ms.len() as f64).ceil() as usize;
            ms[rank.clamp(1, ms.len()) - 1]
        };
        Percentiles {
            samples: ms.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max,
        }
    }
}

/// quantrac's HTTP API, as the load tool uses it.
#[derive(Debug, Clone)]
pub struct Quantrac {
    http: reqwest::Client,
    api: String,
}

impl Quantrac {
    /// `api` is the base URL, e.g. `http://127.0.0.1:8080`; `token` is sent as the bearer
    /// token of every request.
    pub fn new(api: &str, token: Option<&str>) -> Result<Quantrac, Error> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Error::Api("the API token holds characters a header cannot".into()))?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .map_err(|e| Error::Api(format!("cannot build the HTTP client: {e}")))?;
        Ok(Quantrac {
            http,
            api: api.trim_end_matches('/').to_owned(),
        })
    }

    /// Readings quantrac has stored since it started (`quantrac_store_readings_total`).
    pub async fn stored(&self) -> Result<f64, Error> {
        Ok(self
            .metric("quantrac_store_readings_total")
            .await?
            .unwrap_or(0.0))
    }

    /// The sum of every sample of metric `name` in `/metrics` (all label sets), or `None`
    /// when quantrac does not report it.
    pub async fn metric(&self, name: &str) -> Result<Option<f64>, Error> {
        let text = self
            .get(&format!("{}/metrics", self.api))
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| Error::Api(format!("GET /metrics: {e}")))?
            .text()
            .await
            .map_err(|e| Error::Api(format!("GET /metrics: {e}")))?;
        Ok(sum_of(&text, name))
    }

    /// GET `url`, waiting out quantrac's rate limit (429 with `Retry-After`, in seconds) a
    /// bounded number of times rather than failing the measurement. Run the load against a
    /// quantrac whose `api.rate_limit` allows the polling (perf.py does), or the waits show
    /// in the latencies.
    async fn get(&self, url: &str) -> reqwest::Result<reqwest::Response> {
        const ATTEMPTS: u32 = 30;
        let mut attempt = 1;
        loop {
            let response = self.http.get(url).send().await?;
            if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS || attempt == ATTEMPTS {
                return Ok(response);
            }
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 5);
            tracing::warn!(
                wait,
                "quantrac's API rate limit reached; waiting as it asks"
            );
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            attempt += 1;
        }
    }

    /// Whether the reading `(station, param, ts_ms)` is stored, by the readings API.
    pub async fn is_stored(&self, station: &str, param: &str, ts_ms: i64) -> bool {
        let url = format!(
            "{}/api/v1/readings?station={station}&param={param}&from={ts_ms}&to={}",
            self.api,
            ts_ms + 1
        );
        match self.get(&url).await {
            Ok(response) => response
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|body| body["readings"].as_array().is_some_and(|a| !a.is_empty())),
            Err(_) => false,
        }
    }
}

/// Sums the samples of `name` in a Prometheus text exposition.
fn sum_of(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: `name value` or `name{labels} value`.
        let value = if rest.starts_with('{') {
            rest.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).rev().map(f64::from).collect());
        assert_eq!(
            (p.samples, p.p50, p.p95, p.p99, p.max),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::of(vec![]), Percentiles::default());
        assert_eq!(Percentiles::of(vec![7.0]).p99, 7.0);
    }

    #[test]
    fn a_metric_is_summed_over_its_label_sets_and_not_confused_with_longer_names() {
        let text = "# TYPE quantrac_x counter\nquantrac_x{a=\"1\"} 2\nquantrac_x{a=\"2\"} 3.5\nquantrac_x_total 100\nquantrac_y 1\n";
        assert_eq!(sum_of(text, "quantrac_x"), Some(5.5));
        assert_eq!(sum_of(text, "quantrac_y"), Some(1.0));
        assert_eq!(sum_of(text, "quantrac_z"), None);
    }
}
