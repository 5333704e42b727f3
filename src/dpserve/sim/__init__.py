"""`dpserve sim`: a simulated replica — continuous-batching time model, real prefix cache, faults."""
