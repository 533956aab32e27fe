"""Optimisation of trained model versions: ONNX export, ONNX Runtime int8 quantisation (dynamic
and static) and magnitude pruning, each measured (size, latency, test-set metric) against its
parent and registered as a new version by the `optimize` job (see `optimize.job`)."""
