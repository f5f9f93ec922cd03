"""Exporting the zoo's models for serving without PyTorch: ONNX per-modality encoders (`onnx`)."""
