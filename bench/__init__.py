"""`make bench`: throughput of our training loop against a naive one (see bench/run.py)."""
