"""Configuration loading, overrides and validation (pipeline/config.py)."""

import pytest

from pipeline.config import ConfigError, check_against_images, defaults, load_config


def write(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_complete():
    config = load_config()
    assert config == defaults()


def test_file_and_overrides_merge_over_defaults(tmp_path):
    path = write(tmp_path, "patches:\n  size: 6\n  count: 300\n")
    config = load_config(path, ["patches.count=500", "output.group=false", "output.tol=1e-4"], data_root="/data")
    assert config["output"]["tol"] == 1e-4
    assert config["patches"]["size"] == 6
    assert config["patches"]["count"] == 500
    assert config["output"]["group"] is False
    assert config["data"]["root"] == "/data"
    assert config["patches"]["eps"] == defaults()["patches"]["eps"]


def test_unknown_keys_get_a_suggestion_and_all_problems_are_listed(tmp_path):
    path = write(tmp_path, "patches:\n  cuont: 10\n  eps: -1\nfeatures:\n  pooling: median\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, ["output.bta=0.1"])
    message = str(error.value)
    assert "unknown key patches.cuont (did you mean patches.count?)" in message
    assert "unknown key output.bta (did you mean output.beta?)" in message
    assert "patches.eps must be a float in the range (0.0, inf), got -1" in message
    assert "features.pooling must be a str among" in message and "median" in message


def test_wrong_types_choices_and_ranges_are_reported_together():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["patches.count=ten", "features.pooling=median", "output.group=1"])
    problems = error.value.problems
    assert any("patches.count must be an int in the range [2, inf)" in p and "'ten'" in p for p in problems)
    assert any("features.pooling must be a str among" in p for p in problems)
    assert any("output.group must be an instance of 'bool'" in p for p in problems)
    with pytest.raises(ConfigError) as error:
        load_config(None, ["patches.eps=-0.5", "patches.count=1", "output.mode=lasso"])
    problems = error.value.problems
    assert any("patches.eps must be a float in the range (0.0, inf)" in p for p in problems)
    assert any("patches.count must be an int in the range [2, inf)" in p for p in problems)
    with pytest.raises(ConfigError, match=r"mode='lasso' needs tau"):
        load_config(None, ["output.mode=lasso"])
    with pytest.raises(ConfigError, match=r"features.threshold must be a float in the range \[0.0, inf\)"):
        load_config(None, ["features.threshold=-1"])


@pytest.mark.parametrize("setting", ["output.beta=inf", "patches.eps=inf", "patches.zca_eps=inf",
                                     "filters.hull_tol=inf", "features.threshold=inf", "output.tol=nan",
                                     "seed=-1", "patches.eps=0"])
def test_impossible_values_are_refused_up_front(setting):
    """Infinite penalties and regularisers, a negative seed and a zero normalisation floor (flat patches
    would divide by zero at prediction) are refused before any work."""
    with pytest.raises(ConfigError, match=setting.split("=")[0].replace(".", r"\.") + " must be"):
        load_config(None, [setting])


def test_numbers_in_yaml_files_read_as_in_overrides(tmp_path):
    """YAML 1.1 reads 1e-4 (no dot) as a string; a key that takes a number reads it as one."""
    config = load_config(write(tmp_path, "output:\n  tol: 1e-4\ndata:\n  root: 1e3\n"))
    assert config["output"]["tol"] == 1e-4
    assert config["data"]["root"] == "1e3"  # a key that takes text keeps it


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["patches.count"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_checks_against_the_images():
    config = load_config(None, ["patches.size=9"])
    assert "larger than the images" in check_against_images(config, (8, 8, 1), 10)[0]
    config = load_config(None, ["patches.size=2", "patches.count=100"])
    assert "exceeds the 98 distinct patch positions" in check_against_images(config, (8, 8, 1), 2)[0]
    config = load_config(None, ["patches.size=5", "features.grid=5"])
    assert "finer than the response map" in check_against_images(config, (8, 8, 1), 10)[0]


def test_cuda_without_a_gpu_is_refused_before_any_work():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the cuda config is valid here")
    with pytest.raises(ConfigError, match="features.device is cuda but torch finds no CUDA device"):
        load_config(overrides=["features.device=cuda"])
    with pytest.raises(ConfigError, match="backprop.device is cuda but torch finds no CUDA device"):
        load_config(overrides=["model=backprop", "backprop.device=cuda"])


def test_model_choice_and_model_sections_are_validated():
    assert load_config(overrides=["model=cutting_plane"])["model"] == "cutting_plane"
    with pytest.raises(ConfigError) as error:
        load_config(overrides=["model=svm", "backprop.n_hidden=0", "cutting_plane.max_rounds=0",
                               "closed_form.beta=-1", "backprop.hiden=3"])
    problems = error.value.problems
    assert any(p.startswith("model must be a str among") and "'cutting_plane'" in p and "'svm'" in p
               for p in problems)
    assert any("backprop.n_hidden must be an int in the range [1, inf)" in p for p in problems)
    assert any("cutting_plane.max_rounds must be an int in the range [1, inf)" in p for p in problems)
    assert any("closed_form.beta must be a float in the range [0.0, inf)" in p for p in problems)
    assert any("unknown key backprop.hiden (did you mean backprop.n_hidden?)" in p for p in problems)


def test_config_keys_are_the_estimators_parameters():
    """Every key's default is its estimator's own default: the config holds no copy of them."""
    from features import ConvReLUPool
    from pipeline import L1OutputLayer

    config = defaults()
    assert config["output"] == {name: value for name, value in L1OutputLayer().get_params().items()
                                if name not in ("warm_start", "verbose")}
    assert config["patches"]["size"] == ConvReLUPool().patch_size
    assert config["features"]["pooling"] == ConvReLUPool().pooling


def test_unreadable_config_files_and_override_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="is a folder: give a YAML file"):
        load_config(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes("seed: 1 # caf\xe9".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text .* save it as UTF-8 YAML"):
        load_config(tmp_path / "latin1.yaml")
    with pytest.raises(ConfigError, match=r"--set 'patches.count=\[': the value is not valid YAML"):
        load_config(None, ["patches.count=[", "seed=1"])
