"""TensorFlow backend: MaybeShewill-CV/CRNN_Tensorflow's ShadowNet (``shadownet``) and the shared CRNN,
in TF2/Keras, on TFRecords with the upstream feature layout."""
