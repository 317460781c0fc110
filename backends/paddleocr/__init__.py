"""PaddleOCR backend: ppocr's CRNN-MobileNetV3 (``crnn_mobilenetv3``) and the shared CRNN on paddle,
speaking PaddleOCR's formats (SimpleDataSet, config YAML, .pdparams checkpoints, inference model)."""
