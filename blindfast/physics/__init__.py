"""Forward models of imaging physics: synthetic lenses whose PSF grids feed :func:`blindfast.ops.sv_conv`."""

from blindfast.physics.lens import lens_psf_grid

__all__ = ["lens_psf_grid"]
