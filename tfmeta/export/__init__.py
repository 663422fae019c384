"""SavedModel export for TF Serving: signatures that adapt to a support set, versioned layout."""

from tfmeta.export.layout import (
    LayoutError,
    existing_versions,
    next_version,
    write_version,
)
from tfmeta.export.limits import ServingLimits
from tfmeta.export.models_config import (
    ModelsConfigError,
    read_models_config,
    write_models_config,
)
from tfmeta.export.saved_model import (
    DEFAULT_SIGNATURE,
    METADATA_FILE,
    METADATA_SIGNATURE,
    ExportedVersion,
    ServingModule,
    export_learner,
)
from tfmeta.export.signatures import PREPROCESSINGS, ImagePreprocessing

__all__ = [
    "DEFAULT_SIGNATURE",
    "METADATA_FILE",
    "METADATA_SIGNATURE",
    "PREPROCESSINGS",
    "ExportedVersion",
    "ImagePreprocessing",
    "LayoutError",
    "ModelsConfigError",
    "ServingLimits",
    "ServingModule",
    "existing_versions",
    "export_learner",
    "next_version",
    "read_models_config",
    "write_models_config",
    "write_version",
]
