"""Measurement code (above ``nas`` in the layers of docs/architecture.md): the attention benchmark
(:mod:`~dcsnas.bench.attention`, ``dcsnas bench attention``), the model profiler (:mod:`~dcsnas.bench.model`:
parameters, FLOPs, latency, peak memory, training throughput) and peak memory of a block of code
(:mod:`~dcsnas.bench.memory`)."""
