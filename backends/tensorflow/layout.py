"""ShadowNet's layer layout as data, shared by the parameter formula (core side) and the Keras model
(worker side). Standard library only."""

KERNELS = (3, 3, 3, 3, 3, 3, 2)                        # conv1..conv7; conv7 has stride (2, 1)
CONV_BIAS = (True, True, False, False, False, False, False)  # upstream: only conv1 and conv2 have a bias
POOL_2X2_AFTER = (0, 1)                                # conv indices followed by MaxPool 2x2
POOL_TALL_AFTER = (3, 5)                               # MaxPool (2, 1): halves the height only
