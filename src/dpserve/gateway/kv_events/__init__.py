"""The gateway's side of KV events: subscriptions to each replica's publisher, the block index they
feed, and the request's block keys computed as the engine computes them (off the event loop)."""
