import os

import numpy as np
import pytest

from pipekit_cycle import FourDVarNetConfig, load_params, save_params, schema
from pipekit_cycle.params import validate_params


def _params(config, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in schema(config).items()}


def test_schema_shapes_1d_and_2d():
    config = FourDVarNetConfig(state_shape=(40,), n_time=10, hidden_dim=6, prior_hidden_dim=5, kernel_size=3)
    shapes = schema(config)
    assert shapes["prior.conv_in.weight"] == (5, 10, 3)
    assert shapes["prior.conv_out.weight"] == (10, 10, 3)
    assert shapes["grad_mod.gates.weight"] == (24, 2 * 10 + 6, 3)
    assert shapes["grad_mod.gates.bias"] == (24,)
    assert shapes["grad_mod.conv_out.weight"] == (10, 6, 3)
    assert len(shapes) == 16
    shapes_2d = schema(config.replace(state_shape=(8, 8), kernel_size=5))
    assert shapes_2d["prior.bilin_21.weight"] == (5, 5, 5, 5)


def test_save_load_round_trip(tmp_path):
    config = FourDVarNetConfig(state_shape=(6,), n_time=3, hidden_dim=2, prior_hidden_dim=2)
    params = _params(config)
    path = tmp_path / "model.safetensors"
    save_params(path, params, config)
    loaded, loaded_config = load_params(path)
    assert loaded_config == config
    assert set(loaded) == set(params)
    for name in params:
        np.testing.assert_array_equal(loaded[name], params[name])
        assert loaded[name].dtype == np.float64
    save_params(tmp_path / "bare.safetensors", _params(config, np.float32))
    bare, bare_config = load_params(tmp_path / "bare.safetensors")
    assert bare_config is None and bare["prior.conv_in.bias"].dtype == np.float32


def test_invalid_params_never_reach_disk(tmp_path):
    config = FourDVarNetConfig(state_shape=(6,), n_time=3, hidden_dim=2, prior_hidden_dim=2)
    path = tmp_path / "model.safetensors"
    save_params(path, _params(config, seed=1), config)
    before = path.read_bytes()
    wrong_shape = _params(config)
    wrong_shape["grad_mod.gates.weight"] = np.zeros((1, 2, 3))
    with pytest.raises(ValueError, match="grad_mod.gates.weight.*shape"):
        save_params(path, wrong_shape, config)
    missing = _params(config)
    del missing["prior.conv_in.bias"]
    with pytest.raises(ValueError, match="missing \\['prior.conv_in.bias'\\]"):
        save_params(path, missing, config)
    with pytest.raises(TypeError, match="float32 or float64"):
        save_params(path, {**_params(config), "prior.conv_in.bias": np.zeros(2, dtype=np.int64)}, config)
    nonfinite = _params(config)
    nonfinite["prior.conv_in.bias"][0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        save_params(path, nonfinite, config)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    config = FourDVarNetConfig(state_shape=(6,), n_time=3, hidden_dim=2, prior_hidden_dim=2)
    path = tmp_path / "model.safetensors"
    save_params(path, _params(config, seed=1), config)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_params(path, _params(config, seed=2), config)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_load_validates_before_returning(tmp_path):
    config = FourDVarNetConfig(state_shape=(6,), n_time=3, hidden_dim=2, prior_hidden_dim=2)
    other = config.replace(hidden_dim=3)
    path = tmp_path / "model.safetensors"
    save_params(path, _params(other), other)
    # The file claims `config` but holds `other`'s shapes: rewrite its metadata.
    from safetensors.numpy import save_file

    save_file(_params(other), str(path), metadata={"pipekit_cycle.config": config.to_json()})
    with pytest.raises(ValueError, match="grad_mod.gates.weight"):
        load_params(path)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_params(corrupt)


def test_validate_params_rejects_mixed_dtypes():
    config = FourDVarNetConfig(state_shape=(6,), n_time=3, hidden_dim=2, prior_hidden_dim=2)
    params = _params(config)
    params["prior.conv_in.bias"] = params["prior.conv_in.bias"].astype(np.float32)
    with pytest.raises(TypeError, match="share one dtype"):
        validate_params(params, config)
