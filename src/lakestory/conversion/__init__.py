"""ONNX export, int8 quantization, parity and the conversion report."""

from lakestory.conversion.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    ConversionReport,
    convert,
    export_onnx,
    onnx_probabilities,
)

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ConversionReport",
    "convert",
    "export_onnx",
    "onnx_probabilities",
]
