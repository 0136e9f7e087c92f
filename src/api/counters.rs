//! `POST /stations/{id}/record-counter/reset` (admin): starts a station's record counter
//! again.
//!
//! A signed station's counter is trusted: after a logger is replaced (or its memory wiped) it
//! counts from 1 again, and every record it sends is refused as `replayed_record` (it cannot
//! be told from a replay). An admin who knows why resets the station's window: its next
//! record starts a new one. The reset is audited first (who, when, the station, the window it
//! had: nothing happens unaudited), then the window is forgotten in memory and in the store
//! (written through the store's writer like every other change, and waited for, so that a
//! restart does not bring it back).
//!
//! A record of the station being validated at the very moment of the reset may still save the
//! old window after it (it was judged before the reset); resetting again settles it.

use axum::extract::{RawQuery, State};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::auth::{blocking, need};
use super::params::Params;
use super::{ApiError, ApiResult, ApiState, PathId};
use crate::security::{Action, NewEntry, Principal, Role};
use crate::storage::WriteItem;

pub fn routes() -> Router<ApiState> {
    Router::new().route(
        "/stations/{id}/record-counter/reset",
        need(Role::Admin, post(reset)),
    )
}

async fn reset(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    PathId(id): PathId,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    Params::parse(q.as_deref())?.finish()?;
    let station = {
        let registry = state.registry.load();
        match registry.station(&id) {
            Some(s) => s.id.clone(),
            None => return Err(ApiError::unknown_station(&id)),
        }
    };
    let previous = state.sequences.lock().station(&station);
    let detail = match previous {
        Some((last_seq, missing)) => {
            format!("record counter reset; it was at seq {last_seq} with {missing} missing records")
        }
        None => "record counter reset; it had no window".to_owned(),
    };
    let entry = NewEntry {
        actor: who.actor(),
        action: Action::RecordCounterReset,
        target: station.to_string(),
        detail,
        address: who.address.map(|a| a.to_string()),
    };
    blocking(&state.guard.db, move |db| db.audit(&entry)).await?;

    state.sequences.lock().reset(&station);
    let (done, durable) = crate::ack::pair();
    state
        .store
        .write(WriteItem {
            record_window_reset: Some(station.clone()),
            done: Some(done),
            ..WriteItem::default()
        })
        .await?;
    if !durable.wait().await {
        return Err(ApiError::Unavailable {
            code: "store_unavailable",
            message: "the store closed before the reset was saved; it holds in memory only".into(),
        });
    }
    tracing::warn!(station = %station, by = %who.token_id, previous = ?previous,
        "record counter reset by an admin");
    let previous =
        previous.map(|(last_seq, missing)| json!({"last_seq": last_seq, "missing": missing}));
    Ok(Json(
        json!({"station": &*station, "reset": true, "previous": previous}),
    ))
}
