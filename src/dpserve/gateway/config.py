"""GatewayConfig: every flag of `dpserve router` (policy, health, breaker, retries, admission)."""

from __future__ import annotations

from dataclasses import dataclass

from dpserve.config import DEFAULT_GATEWAY_PORT, DEFAULT_HOST, ConfigError, nested, option, require
from dpserve.gateway.admission.config import AdmissionConfig
from dpserve.gateway.aliases import parse_aliases
from dpserve.gateway.migration.config import MigrationConfig
from dpserve.gateway.policies.config import PolicyConfig


@dataclass(frozen=True)
class HealthConfig:
    """Active health checks (`GET /health`) and load polling (`GET /metrics`) of each replica."""

    health_check_interval_s: float = option(1.0, "seconds between health probes of each replica")
    health_check_timeout_s: float = option(1.0, "a health probe slower than this counts as a failure")
    health_failure_threshold: int = option(2, "consecutive failed probes before a replica is marked down")
    health_success_threshold: int = option(1, "consecutive good probes before a down replica is back up")
    load_poll_interval_s: float = option(0.5, "seconds between polls of each replica's /metrics")

    def __post_init__(self) -> None:
        require(self.health_check_interval_s > 0, "--health-check-interval-s must be > 0")
        require(self.health_check_timeout_s > 0, "--health-check-timeout-s must be > 0")
        require(self.health_failure_threshold >= 1, "--health-failure-threshold must be >= 1")
        require(self.health_success_threshold >= 1, "--health-success-threshold must be >= 1")
        require(self.load_poll_interval_s > 0, "--load-poll-interval-s must be > 0")


@dataclass(frozen=True)
class BreakerConfig:
    """Per-replica circuit breaker: closed → open → half-open → closed."""

    breaker_failure_threshold: int = option(5, "consecutive failures that open a replica's circuit")
    breaker_success_threshold: int = option(2, "successful trials in half-open that close the circuit")
    breaker_cooldown_s: float = option(5.0, "seconds an open circuit waits before half-open trials")
    breaker_half_open_max_requests: int = option(1, "trial requests in flight at once while half-open")

    def __post_init__(self) -> None:
        require(self.breaker_failure_threshold >= 1, "--breaker-failure-threshold must be >= 1")
        require(self.breaker_success_threshold >= 1, "--breaker-success-threshold must be >= 1")
        require(self.breaker_cooldown_s >= 0, "--breaker-cooldown-s must be >= 0")
        require(self.breaker_half_open_max_requests >= 1, "--breaker-half-open-max-requests must be >= 1")


@dataclass(frozen=True)
class RetryConfig:
    """Retries before the first byte reached the client, and the request's time limits."""

    max_retries: int = option(3, "retries of one request on another replica (connect error, timeout "
                                 "before the first byte, 429/502/503/504)")
    retry_backoff_base_s: float = option(
        0.01, "first retry's backoff ceiling; doubles per retry, with jitter")
    retry_backoff_max_s: float = option(0.5, "largest backoff between retries, seconds")
    request_timeout_s: float = option(1800.0, "overall limit of one request (504 when exceeded)")
    first_byte_timeout_s: float = option(
        300.0, "limit until the replica's response starts (headers, and the first chunk of a stream)")
    connect_timeout_s: float = option(2.0, "limit for opening a connection to a replica")
    prewarm_connections: int = option(
        4, "keep-alive connections opened to a replica when it comes up, so its first burst of "
           "requests does not wait for connection set-up (0 = off)")

    def __post_init__(self) -> None:
        require(self.max_retries >= 0, "--max-retries must be >= 0")
        require(0 <= self.retry_backoff_base_s <= self.retry_backoff_max_s,
                "need 0 <= --retry-backoff-base-s <= --retry-backoff-max-s")
        require(self.request_timeout_s > 0, "--request-timeout-s must be > 0")
        require(self.first_byte_timeout_s > 0, "--first-byte-timeout-s must be > 0")
        require(self.connect_timeout_s > 0, "--connect-timeout-s must be > 0")
        require(self.prewarm_connections >= 0, "--prewarm-connections must be >= 0")


@dataclass(frozen=True)
class ClientLimits:
    """What clients may make the gateway hold. Memory for requests stays under about
    max_buffered_request_bytes × 2 (a body is joined once) + max_connections × 64 KiB (request heads):
    ~1 GiB with the defaults, whatever clients send (README, Security)."""

    max_request_bytes: int = option(
        16 * 1024 * 1024, "largest request body, after gzip/deflate decoding (413 beyond; an announced "
                          "Content-Length over it is refused before the body is read). 16 MiB holds a "
                          "1M-token prompt as text, or a few base64 images; a body of 64 KiB or more "
                          "may hold at most 65,536 '{'/'[', 131,072 '\"' and 262,144 ',' bytes (400 "
                          "beyond; so token ids up to 262,144). `dpserve serve` gives its builtin and "
                          "sim replicas the same limit")
    max_buffered_request_bytes: int = option(
        256 * 1024 * 1024, "request body bytes all connections together may hold at once, while they "
                           "arrive and while their requests are served (503 + Retry-After beyond)")
    max_connections: int = option(
        4096, "client connections held at once (each may hold a 64 KiB request head); more are "
              "answered 503 and closed")
    header_timeout_s: float = option(
        10.0, "a request's headers must arrive within this many seconds of its first byte (408 and close); "
              "empty lines on an idle connection start this deadline too (then it is closed)")
    body_timeout_s: float = option(
        60.0, "a request's body must arrive within this many seconds after its headers (408 and close)")
    keepalive_timeout_s: float = option(
        75.0, "an idle client connection (between requests) is closed after this many seconds")

    def __post_init__(self) -> None:
        require(self.max_request_bytes >= 1024, "--max-request-bytes must be >= 1024")
        require(self.max_buffered_request_bytes >= self.max_request_bytes,
                "--max-buffered-request-bytes must be >= --max-request-bytes")
        require(self.max_connections >= 1, "--max-connections must be >= 1")
        require(self.header_timeout_s > 0, "--header-timeout-s must be > 0")
        require(self.body_timeout_s > 0, "--body-timeout-s must be > 0")
        require(self.keepalive_timeout_s > 0, "--keepalive-timeout-s must be > 0")


@dataclass(frozen=True)
class GatewayConfig:
    """`dpserve router`: where it listens, which replicas, and how it routes and recovers."""

    host: str = option(DEFAULT_HOST, "address the gateway listens on")
    port: int = option(DEFAULT_GATEWAY_PORT, "port the gateway listens on (0 = any free port)")
    worker_urls: tuple[str, ...] = option((), "replica base URLs (more can be added with POST /workers)",
                                          metavar="URL")
    worker_weights: tuple[float, ...] = option(
        (), "weights of --worker-urls, in order (default 1 each); a weight-2 replica takes twice the "
            "share in load-based policies; at most 100", metavar="W")
    drain_timeout_s: float = option(30.0, "DELETE /workers/{id}: seconds to wait for its in-flight requests")
    shutdown_grace_s: float = option(30.0, "on SIGTERM: seconds to let in-flight requests finish")
    model_aliases: tuple[str, ...] = option(
        (), "client-facing model names, ALIAS=SERVED_NAME each: routed to the replicas serving "
            "SERVED_NAME, answered under ALIAS, listed by /v1/models", metavar="ALIAS=NAME")
    admin_key: str | None = option(
        None, "require `Authorization: Bearer KEY` on POST/DELETE /workers and on GET /workers, "
              "/get_loads, /metrics, /dashboard/data. Without it, workers can be changed only from this host "
              "(loopback), and not at all when --api-keys is set", metavar="KEY")
    replica_api_key: str | None = option(
        None, "sent to every replica as `Authorization: Bearer KEY` (vLLM's --api-key); a client's own "
              "Authorization is never forwarded", metavar="KEY")
    worker_kv_events: tuple[str, ...] = option(
        (), "where each of --worker-urls publishes KV events (policy precise_prefix), in order: "
            "PUB_ENDPOINT[,REPLAY_ENDPOINT] (e.g. tcp://127.0.0.1:5557,tcp://127.0.0.1:5558, as set "
            "by the replica's --kv-events-config), or - for none", metavar="SPEC")
    allow_heterogeneous: bool = option(
        False, "let replicas that serve one model name differently (root, max_model_len, dtype, "
               "quantization, KV-cache dtype, TP/PP where published) serve it together; by default "
               "such a worker is refused, with the reason in /workers")
    routing: PolicyConfig = nested(PolicyConfig)
    health: HealthConfig = nested(HealthConfig)
    breaker: BreakerConfig = nested(BreakerConfig)
    retry: RetryConfig = nested(RetryConfig)
    admission: AdmissionConfig = nested(AdmissionConfig)
    migration: MigrationConfig = nested(MigrationConfig)
    limits: ClientLimits = nested(ClientLimits)

    def __post_init__(self) -> None:
        require(0 <= self.port <= 65535, f"--port must be 0..65535, got {self.port}")
        require(not self.worker_weights or len(self.worker_weights) == len(self.worker_urls),
                "--worker-weights needs one weight per --worker-urls entry")
        require(len({u.rstrip("/") for u in self.worker_urls}) == len(self.worker_urls),
                "--worker-urls lists the same URL twice")
        # here: worker.py imports this module's siblings
        from dpserve.gateway.worker import check_worker_url, check_worker_weight

        for url in self.worker_urls:
            try:
                check_worker_url(url)
            except ValueError as exc:
                raise ConfigError(f"--worker-urls: {exc}") from exc
        for weight in self.worker_weights:
            try:
                check_worker_weight(weight)
            except ValueError as exc:
                raise ConfigError(f"--worker-weights: {exc}") from exc
        try:
            parse_aliases(self.model_aliases)
        except ValueError as exc:
            raise ConfigError(f"--model-aliases: {exc}") from exc
        require(not self.worker_kv_events or len(self.worker_kv_events) == len(self.worker_urls),
                "--worker-kv-events needs one entry per --worker-urls entry (- for none)")
        from dpserve.gateway.kv_events.endpoint import parse_endpoint_spec

        for spec in self.worker_kv_events:
            try:
                parse_endpoint_spec(spec)
            except ValueError as exc:
                raise ConfigError(f"--worker-kv-events: {exc}") from exc
        require(self.drain_timeout_s >= 0, "--drain-timeout-s must be >= 0")
        require(self.shutdown_grace_s >= 0, "--shutdown-grace-s must be >= 0")

    def weight_of(self, index: int) -> float:
        return self.worker_weights[index] if self.worker_weights else 1.0
