//! Prometheus metrics: one struct owning a private registry.
//!
//! The rule this module keeps: label values are bounded (matched route templates, configured
//! registry names, fixed outcome words), never crate names, paths or tokens.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    /// HTTP requests served, by matched route and status code.
    pub requests: IntCounterVec,
    /// HTTP request latency until the response head is ready, by matched route.
    pub request_seconds: HistogramVec,
    /// Body bytes sent to clients, by kind (index, crate, other).
    pub bytes_served: IntCounterVec,
    /// Cache lookups by registry, kind (index, crate), tier answering (memory, disk, upstream) and result
    /// (hit, miss, stale, revalidated, negative).
    pub cache_results: IntCounterVec,
    /// Requests to upstreams, by registry, kind and outcome (ok, not_modified, not_found,
    /// status_4xx, status_5xx, timeout, connect, body, invalid, cancelled).
    pub upstream_requests: IntCounterVec,
    /// Upstream request latency, by registry and kind.
    pub upstream_seconds: HistogramVec,
    /// Retries of upstream requests, by registry and kind.
    pub upstream_retries: IntCounterVec,
    /// Crate files from upstream whose SHA-256 did not match the index, by registry.
    pub checksum_failures: IntCounterVec,
    /// Bookkeeping records that could not be read (treated as misses), by registry.
    pub unreadable_records: IntCounterVec,
    /// Files answered from memory that could not be stored afterwards, by registry.
    pub store_failures: IntCounterVec,
    /// Requests that waited for another request's upstream fetch instead of making their own.
    pub coalesced_waiters: IntCounterVec,
    /// Files held in each tier, by tier (memory, disk) and kind (index, crate, all).
    pub cache_entries: IntGaugeVec,
    /// Bytes held in each tier, by tier (memory, disk) and kind (index, crate, all).
    pub cache_bytes: IntGaugeVec,
    /// Upstream fetches under way (with the disk writes after them), by registry and kind.
    pub fetches_in_flight: IntGaugeVec,
    /// HTTP requests by protocol version (HTTP/1.1, HTTP/2.0).
    pub http_versions: IntCounterVec,
    /// Plain connections by how they opened: `h2c-upgrade` (the first request asked for HTTP/2
    /// and got it) or `as-is` (HTTP/1.1, or HTTP/2 with prior knowledge).
    pub plain_connections: IntCounterVec,
    /// TLS handshakes by result (ok, error, timeout) and negotiated ALPN (h2, http/1.1, none).
    pub tls_handshakes: IntCounterVec,
    /// Reloads of the TLS certificate by result (ok, error).
    pub tls_reloads: IntCounterVec,
    /// When the TLS certificate in use expires, in seconds since the epoch (exported only
    /// with TLS on).
    pub tls_cert_not_after: IntGauge,
    /// The version of cratedock running (the value is always 1).
    pub build_info: IntGaugeVec,
    /// Auth decisions by result (allowed, denied) and reason (ok, no_token, malformed,
    /// unknown, expired, revoked, disabled, insufficient).
    pub auth_decisions: IntCounterVec,
    /// Publishes to private registries, by registry, result (ok, refused) and reason (ok,
    /// frame, json, name, version, tarball, manifest, license, dependency, upstream_name,
    /// permission, owner, duplicate, too_large, unavailable, store, ...).
    pub publishes: IntCounterVec,
    /// Yanks and unyanks in private registries, by registry and action (yank, unyank).
    pub yanks: IntCounterVec,
    /// Bytes of crate files held by each private registry.
    pub private_bytes: IntGaugeVec,
    /// `cache.disk_max_bytes` (0: no limit).
    pub cache_disk_limit: IntGauge,
    /// Files evicted from the disk cache, by registry and kind (index, crate).
    pub cache_evictions: IntCounterVec,
    /// Bytes evicted from the disk cache, by registry.
    pub cache_evicted_bytes: IntCounterVec,
    /// Failed writes to the data folder, by area (cache, registry, metadata).
    pub disk_write_errors: IntCounterVec,
    /// 1 while writes to the data folder succeed, 0 after one failed until one succeeds.
    pub disk_writable: IntGauge,
    /// Response bodies that ended before their last byte once streaming had begun, by kind
    /// (index, crate) and cause (upstream, disk, checksum, timeout, too_large).
    pub responses_cut_short: IntCounterVec,
    /// Advisories in the database in use (0: none loaded).
    pub advisories_loaded: IntGauge,
    /// Seconds since the advisory database was last known current.
    pub advisory_db_age_seconds: IntGauge,
    /// 1 while the advisory database is older than `advisories.max_age_ms`.
    pub advisory_db_stale: IntGauge,
    /// Refreshes of the advisory database, by outcome (updated, not_modified, reloaded, failed).
    pub advisory_refreshes: IntCounterVec,
    /// Policy decisions, by registry, policy (advisory, license, curated) and action (deny,
    /// warn).
    pub policy_decisions: IntCounterVec,
    /// 1 while a mirror is offline, by registry.
    pub mirror_offline: IntGaugeVec,
    /// Prefetch jobs, by registry and outcome (ok, failed: some file failed).
    pub prefetch_jobs: IntCounterVec,
    /// Files a prefetch went through, by registry and outcome (fetched, cached, failed).
    pub prefetch_files: IntCounterVec,
    /// Bytes a prefetch fetched, by registry.
    pub prefetch_bytes: IntCounterVec,
    /// Files an import sent, by registry, kind (crate, index) and outcome (added, unchanged).
    pub imported_files: IntCounterVec,
    /// Every series name this registry can export (with the `cratedock_` prefix).
    names: Vec<String>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("cratedock".into()), None).expect("a static prefix is valid");
        let names = std::cell::RefCell::new(Vec::<String>::new());
        let named = |c: &dyn prometheus::core::Collector| {
            let mut n = names.borrow_mut();
            n.extend(c.desc().iter().map(|d| format!("cratedock_{}", d.fq_name)));
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            named(&c);
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        // CPU time, resident memory, open and maximum file descriptors, threads, start time.
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            named(&process);
            registry.register(Box::new(process)).expect("unique metric");
        }
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            named(&g);
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let plain_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            named(&g);
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("valid metric");
            named(&h);
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        Self {
            requests: counter(
                "http_requests_total",
                "HTTP requests served, by matched route and status code.",
                &["route", "status"],
            ),
            request_seconds: histogram(
                "http_request_duration_seconds",
                "HTTP request latency until the response head is ready, by matched route.",
                &["route"],
            ),
            bytes_served: counter(
                "bytes_served_total",
                "Body bytes sent to clients, by kind.",
                &["kind"],
            ),
            cache_results: counter(
                "cache_results_total",
                "Cache lookups by registry, kind, answering tier and result (hit, miss, stale, revalidated, negative).",
                &["registry", "kind", "tier", "result"],
            ),
            upstream_requests: counter(
                "upstream_requests_total",
                "Requests to upstream registries, by registry, kind and outcome.",
                &["registry", "kind", "outcome"],
            ),
            upstream_seconds: histogram(
                "upstream_request_duration_seconds",
                "Upstream request latency, by registry and kind.",
                &["registry", "kind"],
            ),
            upstream_retries: counter(
                "upstream_retries_total",
                "Retries of upstream requests, by registry and kind.",
                &["registry", "kind"],
            ),
            unreadable_records: counter(
                "unreadable_records_total",
                "Bookkeeping records that could not be read and were treated as misses, by registry.",
                &["registry"],
            ),
            store_failures: counter(
                "store_failures_total",
                "Files answered from memory that could not be stored afterwards, by registry.",
                &["registry"],
            ),
            checksum_failures: counter(
                "checksum_failures_total",
                "Crate files from upstream whose SHA-256 did not match the index, by registry.",
                &["registry"],
            ),
            coalesced_waiters: counter(
                "coalesced_waiters_total",
                "Requests that waited for another request's upstream fetch, by kind.",
                &["kind"],
            ),
            cache_entries: gauge(
                "cache_entries",
                "Files held in each cache tier, by tier and kind.",
                &["tier", "kind"],
            ),
            cache_bytes: gauge(
                "cache_bytes",
                "Bytes held in each cache tier, by tier and kind.",
                &["tier", "kind"],
            ),
            fetches_in_flight: gauge(
                "fetches_in_flight",
                "Upstream fetches under way, with the disk writes after them, by registry and kind.",
                &["registry", "kind"],
            ),
            http_versions: counter(
                "http_requests_by_version_total",
                "HTTP requests by protocol version.",
                &["version"],
            ),
            plain_connections: counter(
                "plain_connections_total",
                "Connections to the plain listener, by how they opened (h2c-upgrade, as-is).",
                &["opening"],
            ),
            tls_handshakes: counter(
                "tls_handshakes_total",
                "TLS handshakes by result and negotiated ALPN protocol.",
                &["result", "alpn"],
            ),
            tls_reloads: counter(
                "tls_certificate_reloads_total",
                "Reloads of the TLS certificate by result.",
                &["result"],
            ),
            auth_decisions: counter(
                "auth_decisions_total",
                "Auth decisions on requests to registries that require auth and to the admin API, by result and reason.",
                &["result", "reason"],
            ),
            publishes: counter(
                "publishes_total",
                "Publishes to private registries, by registry, result and reason.",
                &["registry", "result", "reason"],
            ),
            yanks: counter(
                "yanks_total",
                "Yanks and unyanks in private registries, by registry and action.",
                &["registry", "action"],
            ),
            private_bytes: gauge(
                "private_crate_bytes",
                "Bytes of crate files held by each private registry.",
                &["registry"],
            ),
            cache_disk_limit: {
                let g = IntGauge::new(
                    "cache_disk_limit_bytes",
                    "cache.disk_max_bytes: the disk limit of mirror files (0: none).",
                )
                .expect("valid metric");
                named(&g);
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
            cache_evictions: counter(
                "cache_evictions_total",
                "Files evicted from the disk cache, by registry and kind.",
                &["registry", "kind"],
            ),
            cache_evicted_bytes: counter(
                "cache_evicted_bytes_total",
                "Bytes evicted from the disk cache, by registry.",
                &["registry"],
            ),
            disk_write_errors: counter(
                "disk_write_errors_total",
                "Failed writes to the data folder, by area (cache, registry, metadata).",
                &["area"],
            ),
            disk_writable: {
                let g = IntGauge::new(
                    "disk_writable",
                    "1 while writes to the data folder succeed; 0 after a failed one, until one succeeds.",
                )
                .expect("valid metric");
                g.set(1);
                named(&g);
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
            responses_cut_short: counter(
                "responses_cut_short_total",
                "Response bodies that ended before their last byte after streaming began, by kind and cause.",
                &["kind", "cause"],
            ),
            advisories_loaded: plain_gauge(
                "advisories_loaded",
                "Advisories in the advisory database in use (0: none loaded).",
            ),
            advisory_db_age_seconds: plain_gauge(
                "advisory_db_age_seconds",
                "Seconds since the advisory database was last fetched, confirmed unchanged, or changed on disk.",
            ),
            advisory_db_stale: plain_gauge(
                "advisory_db_stale",
                "1 while the advisory database is older than advisories.max_age_ms.",
            ),
            advisory_refreshes: counter(
                "advisory_refreshes_total",
                "Refreshes of the advisory database, by outcome (updated, not_modified, reloaded, failed).",
                &["outcome"],
            ),
            policy_decisions: counter(
                "policy_decisions_total",
                "Supply-chain policy decisions, by registry, policy (advisory, license, curated) and action (deny, warn).",
                &["registry", "policy", "action"],
            ),
            mirror_offline: gauge(
                "mirror_offline",
                "1 while a mirror is offline (it never contacts its upstream), by registry.",
                &["registry"],
            ),
            prefetch_jobs: counter(
                "prefetch_jobs_total",
                "Prefetch jobs, by registry and outcome (ok, failed: some file failed).",
                &["registry", "outcome"],
            ),
            prefetch_files: counter(
                "prefetch_files_total",
                "Crate files a prefetch went through, by registry and outcome (fetched, cached, failed).",
                &["registry", "outcome"],
            ),
            prefetch_bytes: counter(
                "prefetch_bytes_total",
                "Bytes of crate files a prefetch fetched, by registry.",
                &["registry"],
            ),
            imported_files: counter(
                "imported_files_total",
                "Files an import sent, by registry, kind (crate, index) and outcome (added, unchanged).",
                &["registry", "kind", "outcome"],
            ),
            // Exported once TLS is on (see `tls_in_use`): without TLS there is no certificate.
            tls_cert_not_after: {
                let g = IntGauge::new(
                    "tls_certificate_not_after_timestamp_seconds",
                    "When the TLS certificate in use expires, in seconds since the epoch.",
                )
                .expect("valid metric");
                named(&g);
                g
            },
            build_info: {
                let g = gauge(
                    "build_info",
                    "Always 1; its label is the version of cratedock running.",
                    &["version"],
                );
                g.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
                g
            },
            registry,
            names: names.take(),
        }
    }

    /// Every series name cratedock can export (histograms without their `_bucket`, `_sum`
    /// and `_count` suffixes).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Exports the TLS certificate's expiry (called when the HTTPS listener is set up).
    pub fn tls_in_use(&self) {
        // Registered once; a second HTTPS setup (tests) finds it there.
        let _ = self
            .registry
            .register(Box::new(self.tls_cert_not_after.clone()));
    }

    /// Notes how a write to the data folder in `area` went.
    pub fn disk_write(&self, area: &str, ok: bool) {
        if ok {
            self.disk_writable.set(1);
        } else {
            self.disk_write_errors.with_label_values(&[area]).inc();
            self.disk_writable.set(0);
        }
    }

    /// Lookups of `registry` answered without fetching the file from the upstream (every
    /// result but `miss`), and all its lookups, since start.
    pub fn cache_hits(&self, registry: &str) -> (u64, u64) {
        use prometheus::core::Collector;
        let (mut hits, mut all) = (0, 0);
        for family in self.cache_results.collect() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                };
                if label("registry").as_deref() != Some(registry) {
                    continue;
                }
                let n = m.get_counter().get_value() as u64;
                all += n;
                if label("result").as_deref() != Some("miss") {
                    hits += n;
                }
            }
        }
        (hits, all)
    }

    pub fn cache(&self, registry: &str, kind: &str, tier: &str, result: &str) {
        self.cache_results
            .with_label_values(&[registry, kind, tier, result])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
