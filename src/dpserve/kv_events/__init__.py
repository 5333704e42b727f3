"""KV-cache events in vLLM's wire format: what a replica caches, published over ZMQ, indexed by gateways.

Replica side: `block_hash` (the chained block key the engine and the gateway share), `wire`
(events ↔ msgpack in vLLM 0.32's layout), `config` (`--kv-events-config`, vLLM's shape),
`publisher` (PUB socket + ROUTER replay, a background thread). Gateway side lives in
`dpserve.gateway.kv_events`.
"""
