"""dpserve: data-parallel LLM inference — N model replicas behind one cache-aware gateway."""

__version__ = "0.1.0"
