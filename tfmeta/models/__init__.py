from tfmeta.models.batch_norm import MetaBatchNorm, normalization_reference
from tfmeta.models.conv import conv4, mlp

__all__ = ["MetaBatchNorm", "conv4", "mlp", "normalization_reference"]
