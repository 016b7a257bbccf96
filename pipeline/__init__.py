"""convexrf's pipeline: the Convex-RF classifier, its read-out, the Table-1 baselines, storage, reports and the job."""

from .classifier import ConvexRFClassifier
from .config import ConfigError, load_config
from .job import train
from .model_files import load_model, save_model
from .readout import L1OutputLayer, ridge_readout
from .storage import FeatureStore, ModelFileError, RunFolderError

__all__ = ["ConfigError", "ConvexRFClassifier", "FeatureStore", "L1OutputLayer", "ModelFileError", "load_config",
           "load_model", "ridge_readout", "RunFolderError", "save_model", "train"]
