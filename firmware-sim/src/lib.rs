//! Simulated station gateways (data loggers) that publish quantrac v1 telemetry over MQTT.
//!
//! The crate behaves like independent device firmware: it implements the wire contract of
//! `docs/telemetry.md` on its own and never depends on the quantrac service, so that a change
//! on either side that breaks the contract breaks a test. The service uses it as a library
//! (its `demo` command and its tests) and as the `firmware-sim` binary.
//!
//! # Layout
//! Data flows one way, from the seed files to the broker:
//!
//! - [`fleet`]: reads `seeds/stations.toml` and `seeds/limits.csv` into the stations a
//!   gateway impersonates, with the limit in force today for each parameter.
//! - [`record`]: the logical record ([`Record`], [`Reading`], [`Status`]).
//! - [`sign`]: record signatures (HMAC-SHA256 over the documented canonical form).
//! - [`encode`](mod@encode): the three encodings (JSON, bincode, tt10), byte for byte as documented, and
//!   the topic names.
//! - [`signal`]: the deterministic signal model and the [`Simulator`] that decides what each
//!   station measures and sends (episodes, calibrations, faults, dropouts, duplicates). No I/O.
//! - [`publish`]: the MQTT [`Publisher`] (rumqttc, QoS 1, acknowledgements counted).
//! - [`run`](mod@run): the long-running simulation ([`run()`]) and the throughput [`flood`].
//! - [`load`](mod@load): the load tool that measures a running quantrac from outside, and
//!   the broker's own ceiling; [`fleet::generate`] writes large seed sets for it.

pub mod encode;
pub mod fleet;
pub mod load;
pub mod publish;
pub mod record;
pub mod run;
pub mod scenario;
pub mod sign;
pub mod signal;
mod vntime;

pub use encode::{encode, status_topic, telemetry_topic, Encoding};
pub use fleet::{Fleet, ParamSpec, StationSpec};
pub use publish::{BrokerOptions, Publisher};
pub use record::{Reading, Record, Status};
pub use run::{flood, play, run, EncodingChoice, RunOptions, RunReport};
pub use scenario::Scenario;
pub use signal::{Outgoing, SimConfig, Simulator};
