//! `GET /metrics` in the Prometheus text format: what the daemon counts
//! as it goes (create, start and other operations by stage and outcome,
//! as histograms fed by `core::operation`'s observer) and what it reads
//! at each scrape (VMs by state, the TAP pool, image and snapshot disk
//! use, DNS queries).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    operation: String,
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds from 10 ms to about 3 minutes.
fn buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// What a scrape reads from the daemon's state.
#[derive(Debug, Default)]
pub struct Scrape {
    pub vms_by_state: Vec<(String, i64)>,
    pub pool_idle: Option<i64>,
    pub image_bytes: Vec<(String, i64)>,
    pub snapshot_bytes: Vec<(String, i64)>,
    pub dns_queries: Option<u64>,
    pub refused_connections: u64,
}

pub struct Metrics {
    stages: Histograms<StageLabels>,
    operations: Histograms<OperationLabels>,
}

impl Metrics {
    /// The process's metrics (one daemon per process; tests that start
    /// several share them), counting every operation from the first call.
    pub fn global() -> Arc<Metrics> {
        static GLOBAL: std::sync::OnceLock<Arc<Metrics>> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(Metrics::start).clone()
    }

    fn start() -> Arc<Metrics> {
        let metrics = Arc::new(Metrics {
            stages: Family::new_with_constructor(buckets as fn() -> Histogram),
            operations: Family::new_with_constructor(buckets as fn() -> Histogram),
        });
        let seen = metrics.clone();
        banger_core::operation::observe_with(Arc::new(
            move |operation: &'static str, stage: Option<&str>, took: Duration, failed: bool| {
                seen.observe(operation, stage, took, failed)
            },
        ));
        metrics
    }

    fn observe(&self, operation: &str, stage: Option<&str>, took: Duration, failed: bool) {
        let seconds = took.as_secs_f64();
        match stage {
            Some(stage) => self
                .stages
                .get_or_create(&StageLabels {
                    operation: operation.to_string(),
                    stage: stage.to_string(),
                })
                .observe(seconds),
            None => self
                .operations
                .get_or_create(&OperationLabels {
                    operation: operation.to_string(),
                    outcome: if failed { "failed" } else { "done" }.to_string(),
                })
                .observe(seconds),
        }
    }

    /// The text exposition of everything, with `scrape`'s readings.
    pub fn render(&self, scrape: &Scrape) -> String {
        let mut registry = Registry::with_prefix("banger");
        registry.register(
            "operation_duration_seconds",
            "Wall time of operations (vm.create, vm.start, image.pull, ...) by outcome",
            self.operations.clone(),
        );
        registry.register(
            "stage_duration_seconds",
            "Wall time of each named stage of an operation",
            self.stages.clone(),
        );
        let states = Family::<StateLabels, Gauge>::default();
        for (state, count) in &scrape.vms_by_state {
            states
                .get_or_create(&StateLabels {
                    state: state.clone(),
                })
                .set(*count);
        }
        registry.register("vms", "VMs by state", states);
        let named = |values: &[(String, i64)]| {
            let family = Family::<NameLabels, Gauge>::default();
            for (name, value) in values {
                family
                    .get_or_create(&NameLabels { name: name.clone() })
                    .set(*value);
            }
            family
        };
        registry.register(
            "image_bytes",
            "Bytes of each image's files",
            named(&scrape.image_bytes),
        );
        registry.register(
            "snapshot_bytes",
            "Bytes each snapshot's files hold on disk",
            named(&scrape.snapshot_bytes),
        );
        if let Some(idle) = scrape.pool_idle {
            let gauge = Gauge::<i64>::default();
            gauge.set(idle);
            registry.register(
                "tap_pool_idle",
                "Idle TAP devices ready for the next VM",
                gauge,
            );
        }
        if let Some(queries) = scrape.dns_queries {
            let counter = Counter::<u64>::default();
            counter.inc_by(queries);
            registry.register(
                "dns_queries",
                "DNS queries from guests served since start",
                counter,
            );
        }
        let refused = Counter::<u64>::default();
        refused.inc_by(scrape.refused_connections);
        registry.register(
            "port_connections_refused",
            "Connections to published ports closed at once: past a VM's or the daemon's bound",
            refused,
        );
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}
