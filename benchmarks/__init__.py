"""Benchmark scripts: throughput, learning curves against sb3_contrib.TRPO, the paper's ablations."""
