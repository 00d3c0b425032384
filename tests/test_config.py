import copy

import pytest
import yaml

from neurosmk.config import ConfigError, load_schema, schema_keys, validate_config

from .conftest import REPO


def demo_cfg():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_demo_config_valid_and_defaults_filled():
    cfg = validate_config(demo_cfg())
    assert cfg["anat"]["biascorrect"]["shrink_factor"] == 4
    assert cfg["dwi"]["tensor"]["fit_method"] == "WLS"
    assert cfg["template"]["name"] == "MNI152NLin2009aSym"
    assert cfg["validate_inputs"] is True


def test_unknown_key_rejected_with_dotted_path():
    cfg = demo_cfg()
    cfg["dwi"]["denoise"]["patch_radiu"] = 3
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    msg = str(e.value)
    assert "dwi.denoise.patch_radiu" in msg and "patch_radius" in msg


def test_unknown_top_level_key_rejected():
    cfg = demo_cfg()
    cfg["outputdir"] = "x"
    with pytest.raises(ConfigError, match="unknown config key 'outputdir'"):
        validate_config(cfg)


def test_missing_required_and_bad_type():
    cfg = demo_cfg()
    del cfg["output_dir"]
    cfg["anat"]["register"]["seed"] = "abc"
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert "output_dir" in str(e.value)
    assert "anat.register.seed" in str(e.value)


def test_participant_label_pattern():
    cfg = demo_cfg()
    cfg["participant_label"] = ["01; rm -rf /"]
    with pytest.raises(ConfigError, match="participant_label"):
        validate_config(cfg)


def test_every_key_documented():
    schema = load_schema()
    keys = schema_keys(schema)
    assert len(keys) > 40
    for dotted, sub in keys:
        assert sub.get("description"), f"{dotted} lacks a description"
        assert "type" in sub, f"{dotted} lacks a type"
        if dotted not in ("bids_dir", "output_dir"):
            assert "default" in sub, f"{dotted} lacks a default"


def test_validation_does_not_mutate_input():
    cfg = demo_cfg()
    before = copy.deepcopy(cfg)
    validate_config(cfg)
    assert cfg == before


@pytest.mark.parametrize("method", ["mrtrix", "torch"])
def test_backend_option_choices_checked_at_start(method):
    """A fit method the chosen tensor backend lacks fails at start, naming key, value and method."""
    from neurosmk.backends import BackendError, check_methods

    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    base["dwi"]["tensor"].update(method=method, fit_method="NLLS")
    with pytest.raises(BackendError, match=rf"'dwi.tensor.fit_method': 'NLLS' is not available with method "
                                           rf"'{method}' \(choices: "):
        check_methods(validate_config(base), check_tools=False)
    base["dwi"]["tensor"]["fit_method"] = "OLS"
    assert check_methods(validate_config(base), check_tools=False)["dwi.tensor"] == method
    base["dwi"]["tensor"].update(method="dipy", fit_method="NLLS")  # DIPY has them all
    assert check_methods(validate_config(base), check_tools=False)["dwi.tensor"] == "dipy"
