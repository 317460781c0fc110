"""MindSpore backend: model_zoo WarpCTC (``warpctc``) and the shared CRNN, on MindRecord."""
