"""The layer layout of the shared ``crnn`` (docs/architectures.md), as data every backend builds from.

Standard library only (imported by workers and by the core's parameter-count formula).
"""

KERNELS = (3, 3, 3, 3, 3, 3, 2)       # square kernel size of convs 0..6, stride 1, with bias
PADDINGS = (1, 1, 1, 1, 1, 1, 0)
BATCH_NORM_AFTER = (2, 4, 6)          # conv indices followed by BatchNorm
POOL_2X2_AFTER = (0, 1)               # MaxPool 2x2, stride 2
POOL_TALL_AFTER = (3, 5)              # MaxPool 2x2, stride (2, 1), padding (0, 1): halves the height only
