"""`make bench`: Herald's throughput and latency, each measured against a same-run baseline."""
