"""DDM's presets: the uniform variant keeps each preset's step 1 and swaps the lens stages for an anisotropic
Gaussian (CPU presets) or a free kernel (paper); bad names and settings are refused."""

import pytest

from blindfast.methods.ddm.matching import MatchingConfig, Stage
from blindfast.methods.ddm.presets import PRESETS, preset


@pytest.mark.parametrize("name", PRESETS)
def test_uniform_variant_keeps_step1_and_the_patch(name):
    grid, uniform = preset(name, 3), preset(name, 3, uniform=True)
    assert uniform.step1 == grid.step1 and uniform.patch == grid.patch and uniform.name == grid.name
    assert uniform.step2.seed == 3
    assert all(stage.kind in ("gaussian", "kernel") for stage in uniform.step2.stages)
    assert any(stage.kind == "lens" for stage in grid.step2.stages) or name == "paper"


def test_cpu_uniform_presets_fit_one_anisotropic_gaussian():
    steps = {}
    for name in ("demo", "quality"):
        stages = preset(name, uniform=True).step2.stages
        assert [stage.kind for stage in stages] == ["gaussian"]
        steps[name] = stages[0].steps
    assert steps == {"demo": 600, "quality": 2000}


def test_paper_uniform_is_the_motion_experiment():
    step2 = preset("paper", uniform=True).step2
    assert step2.stages == (Stage("kernel", 32_960, 4e-5),)       # 1030 Ki patches in batches of 32
    assert (step2.reference, step2.lr_aux, step2.learn_noise, step2.batch) == ("frozen", 1e-5, False, 32)


@pytest.mark.parametrize("call, message", [
    (lambda: preset("fast", uniform=True), r"preset must be one of \('demo', 'quality', 'paper'\), got 'fast'"),
    (lambda: Stage("motion", 5, 0.1), r"stage kind must be one of \('lens', 'grid', 'gaussian', 'kernel', "
                                      r"'linear'\), got 'motion'"),
    (lambda: MatchingConfig(stages=(Stage("kernel", 5, 0.1),), sparsity_fraction=-0.1),
     r"sparsity_fraction must be a finite number >= 0, got -0.1"),
])
def test_bad_settings(call, message):
    with pytest.raises(ValueError, match=message):
        call()
