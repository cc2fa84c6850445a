"""The export formats and their file suffixes: plain data, so ``fvt export --help`` and a bad
``--format`` answer without importing torch (fvt.evaluation.export does the exporting)."""

FORMATS = ("onnx", "openvino", "tensorrt", "coreml", "torchscript", "safetensors", "timm-folder")
# the suffix fvt recognises an export by ("" for a folder)
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "tensorrt": ".engine", "coreml": ".mlpackage",
          "torchscript": ".pt", "safetensors": ".safetensors", "timm-folder": ""}
