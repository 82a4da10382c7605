"""Model code the exporter copies into a Triton repository (python backend)."""
