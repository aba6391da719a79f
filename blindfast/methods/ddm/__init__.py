"""DDM, diffusion distribution matching (Meanti et al. 2025): a camera's blur learned from unpaired photos.

Step 1 (:mod:`~blindfast.methods.ddm.corrupted_prior`): a flow prior of the blurry patches, located in the frame.
Step 2 (:mod:`~blindfast.methods.ddm.matching`): the operator fitted so that blurred sharp patches match it.
Step 3: :mod:`blindfast.restore` with the learned grid (``blindfast deblur --method ddm --psf-grid ...``).
Super-resolution (``psf-estimate --sr 2``): the operator blurs, then decimates
(:mod:`~blindfast.methods.ddm.sr_operator`).
:func:`estimate_psf` runs steps 1-2 with a preset; :func:`~blindfast.methods.ddm.demo.run_demo` is the main job.
"""

from blindfast.methods.ddm.estimate import OUTPUT_FILES, estimate_psf
from blindfast.methods.ddm.photos import PhotoSet
from blindfast.methods.ddm.presets import PRESETS, preset
from blindfast.methods.ddm import deblur_method  # noqa: F401  (registers --method ddm)

__all__ = ["estimate_psf", "PhotoSet", "preset", "PRESETS", "OUTPUT_FILES"]
