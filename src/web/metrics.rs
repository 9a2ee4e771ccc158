//! `GET /metrics`: the daemon's state in the OpenMetrics text format
//! (which Prometheus reads), from `prometheus-client`, computed from the
//! spool at each scrape. Labels are list addresses, kinds and states only.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Web, blocking};

type Labels = Vec<(String, String)>;

fn label(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(crate) async fn metrics(State(web): State<Arc<Web>>) -> Response {
    let relays = web.relays.get();
    let text = blocking(move || {
        let mut registry = Registry::default();
        let family = |registry: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels, Gauge>::default();
            registry.register(name, help, f.clone());
            f
        };
        let deliveries = family(
            &mut registry,
            "embargo_relay_deliveries",
            "Deliveries by list, kind and state",
        );
        let embargoes = family(
            &mut registry,
            "embargo_relay_embargoes",
            "Embargoes by list and state",
        );
        let queue = family(
            &mut registry,
            "embargo_relay_queue_depth",
            "Deliveries not sent yet",
        );
        let overdue = family(
            &mut registry,
            "embargo_relay_pending_overdue_seconds",
            "How long the most overdue pending delivery has been due (0: none overdue)",
        );
        let release_overdue = family(
            &mut registry,
            "embargo_relay_release_overdue_seconds",
            "How long the most overdue public release has been due (0: none): a release later than its embargo time",
        );
        let next_release = family(
            &mut registry,
            "embargo_relay_next_release_seconds",
            "Seconds to the next embargo lift (absent: none held)",
        );
        let key_days = family(
            &mut registry,
            "embargo_relay_key_expiry_days_min",
            "Days until the soonest member key (OpenPGP or S/MIME) stops receiving",
        );
        let damaged = family(
            &mut registry,
            "embargo_relay_spool_damaged",
            "1 when the spool showed damage",
        );
        // Counted as it happens: one set for every list.
        if let Some(first) = relays.first() {
            registry.register(
                "embargo_relay_rejections",
                "Mails refused since the daemon started, by list and kind of reason",
                first.counters.rejections.clone(),
            );
            registry.register(
                "embargo_relay_release_lateness_seconds",
                "How long after its lift time each public release went out, by list",
                first.counters.release_lateness.clone(),
            );
        }
        for relay in relays {
            let now = relay.clock.now();
            let list = relay.config().list_address.clone();
            let tally = relay.spool.delivery_tally()?;
            for t in &tally {
                deliveries
                    .get_or_create(&label(&[
                        ("list", &list),
                        ("kind", &t.kind.to_string()),
                        ("state", &t.state.to_string()),
                    ]))
                    .set(t.count as i64);
            }
            let pending: Vec<_> = tally
                .iter()
                .filter(|t| t.state == crate::spool::DeliveryState::Pending)
                .collect();
            queue
                .get_or_create(&label(&[("list", &list)]))
                .set(pending.iter().map(|t| t.count as i64).sum());
            let most = pending
                .iter()
                .map(|t| (now - t.first_attempt).num_seconds().max(0))
                .max()
                .unwrap_or(0);
            overdue.get_or_create(&label(&[("list", &list)])).set(most);
            // From the embargo's lift time, not the retry's next attempt:
            // a release that keeps failing is late all along.
            let late = pending
                .iter()
                .filter(|t| t.kind == crate::spool::Kind::Release)
                .map(|t| (now - t.first_embargo).num_seconds().max(0))
                .max()
                .unwrap_or(0);
            release_overdue.get_or_create(&label(&[("list", &list)])).set(late);

            let held = relay.spool.embargoes()?;
            let mut by_state: std::collections::BTreeMap<String, i64> = Default::default();
            for e in &held {
                *by_state.entry(e.state(now).to_string()).or_default() += 1;
            }
            for (state, n) in by_state {
                embargoes
                    .get_or_create(&label(&[("list", &list), ("state", &state)]))
                    .set(n);
            }
            if let Some(next) = held
                .iter()
                .filter(|e| e.state(now) == "held")
                .map(|e| (e.until - now).num_seconds())
                .min()
            {
                next_release
                    .get_or_create(&label(&[("list", &list)]))
                    .set(next);
            }
            // A key that can no longer receive counts as expiring now.
            let soonest = relay
                .directory()
                .roster
                .members()
                .iter()
                .filter_map(|m| crate::keycheck::member_receives_until(m, now))
                .min();
            if let Some(t) = soonest {
                key_days
                    .get_or_create(&label(&[("list", &list)]))
                    .set((t - now).num_days());
            }
            damaged
                .get_or_create(&label(&[("list", &list)]))
                .set(i64::from(relay.spool.damaged()));
        }
        let mut out = String::new();
        encode(&mut out, &registry)?;
        Ok(out)
    })
    .await;
    match text {
        Ok(text) => {
            let mut r = text.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        Err(r) => r,
    }
}
