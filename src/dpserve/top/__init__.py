"""`dpserve top`: the dashboard's per-replica table, live in a terminal (reads `GET /dashboard/data`)."""
