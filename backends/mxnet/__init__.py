"""MXNet backend: apache/mxnet example/ctc's LSTM-OCR (``lstm_ctc``) and the shared CRNN, on RecordIO."""
