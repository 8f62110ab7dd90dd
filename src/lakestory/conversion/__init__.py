"""ONNX export, int8 quantization (dynamic and static), parity, the report and the gate."""

from lakestory.conversion.build import FILES, REPORT_HTML, REPORT_JSON, convert
from lakestory.conversion.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    ParityError,
    check_parity,
    export_onnx,
    inference_session,
    onnx_probabilities,
    quantize_int8,
    quantize_int8_static,
    torch_probabilities,
)
from lakestory.conversion.report import (
    ARTIFACTS,
    INT8_DYNAMIC,
    INT8_STATIC,
    ONNX_FP32,
    TORCH_FP32,
    ConversionReport,
    Figures,
    Gate,
    choose_champion,
)

__all__ = [
    "ARTIFACTS",
    "FILES",
    "INPUT_NAME",
    "INT8_DYNAMIC",
    "INT8_STATIC",
    "ONNX_FP32",
    "OUTPUT_NAME",
    "REPORT_HTML",
    "REPORT_JSON",
    "TORCH_FP32",
    "ConversionReport",
    "Figures",
    "Gate",
    "ParityError",
    "check_parity",
    "choose_champion",
    "convert",
    "export_onnx",
    "inference_session",
    "onnx_probabilities",
    "quantize_int8",
    "quantize_int8_static",
    "torch_probabilities",
]
