"""`dpserve serve`: co-launch data-parallel replicas behind the in-process gateway, supervised."""
