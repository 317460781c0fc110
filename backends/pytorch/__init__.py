"""PyTorch backend: the reference CRNN (crnn.pytorch / CRNN_Chinese_Characters_Rec) on LMDB data."""
