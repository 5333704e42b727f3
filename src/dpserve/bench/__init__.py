"""`dpserve bench`: a load generator and latency/throughput report for OpenAI-compatible servers."""
