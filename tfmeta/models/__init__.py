from tfmeta.models.batch_norm import MetaBatchNorm, normalization_reference
from tfmeta.models.conv import ConvNet, conv4, mlp
from tfmeta.models.leo import LEOModel, LEOParameters, leo_model, linear_classifier
from tfmeta.models.resnet import resnet12

__all__ = [
    "ConvNet",
    "LEOModel",
    "LEOParameters",
    "MetaBatchNorm",
    "conv4",
    "leo_model",
    "linear_classifier",
    "mlp",
    "normalization_reference",
    "resnet12",
]
