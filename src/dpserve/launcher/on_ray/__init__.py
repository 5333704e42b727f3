"""`--ray`: replicas placed on a Ray cluster (imports Ray only when used)."""
