"""Field and bench tools: virtual board, flashing, provisioning, image builder, benchmarks."""
