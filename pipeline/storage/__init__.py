"""Storage: atomic writes, the stage cache, features on disk and the model-file format."""

from .atomic import remove_stale_temporaries, save_npz_atomic, write_text_atomic
from .feature_store import ArrayFeatures, FeatureStore
from .model_io import ModelFileError
from .stage_cache import StageCache, stage_key

__all__ = ["ArrayFeatures", "FeatureStore", "ModelFileError", "StageCache", "remove_stale_temporaries",
           "save_npz_atomic", "stage_key", "write_text_atomic"]
