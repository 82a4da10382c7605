"""tvision: CLI, embedded Triton server launcher, validation and benchmarks."""
