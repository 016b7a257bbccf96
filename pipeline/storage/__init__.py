"""Storage: atomic writes, the locked run folder, the stage cache, features on disk and the model-file format."""

from .atomic import remove_stale_temporaries, save_npz_atomic, write_text_atomic
from .feature_store import ArrayFeatures, FeatureStore, RowSubset
from .model_io import ModelFileError
from .run_folder import RunFolder, RunFolderError
from .stage_cache import StageCache, stage_key

__all__ = ["ArrayFeatures", "FeatureStore", "RowSubset", "ModelFileError", "RunFolder", "RunFolderError", "StageCache", "remove_stale_temporaries",
           "save_npz_atomic", "stage_key", "write_text_atomic"]
