"""HTTP names shared by gateway, replicas, bench and batch: route paths and header names, written once."""

from __future__ import annotations

# OpenAI routes (gateway and replicas).
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
# The two routes the gateway relays to a replica.
PROXIED_PATHS = (CHAT_PATH, COMPLETIONS_PATH)

# Operational routes (gateway and replicas: /health and /metrics; the rest are the gateway's).
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"
READINESS_PATH = "/readiness"
WORKERS_PATH = "/workers"
LOADS_PATH = "/get_loads"
# The live dashboard (page) and its JSON data.
DASHBOARD_PATH = "/dashboard"
DASHBOARD_DATA_PATH = "/dashboard/data"

# The replica that answered (on every proxied response, streams too).
WORKER_HEADER = "x-dpserve-worker"
# Session affinity key (else the body's `user`).
SESSION_HEADER = "x-session-id"
REQUEST_ID_HEADER = "x-request-id"
# How many dpserve gateways a request has passed through; past a small limit it is refused (508).
HOPS_HEADER = "x-dpserve-hops"
AUTHORIZATION_HEADER = "authorization"
RETRY_AFTER_HEADER = "retry-after"
# Client headers the gateway passes on to the replica (never Authorization: see gateway/proxy.py).
FORWARDED_HEADERS = (REQUEST_ID_HEADER, SESSION_HEADER)
