"""tvision exporter: model specs, PyTorch -> ONNX with validation, Triton repositories."""
