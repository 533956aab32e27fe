"""Serving: runtimes per artifact kind, the dynamic batcher, replicas, and the served-model directory."""
