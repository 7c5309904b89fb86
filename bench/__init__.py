"""``make bench``: opsync's cost (Connect requests, latency, memory) on the project's local parts."""
