"""``blindfast deblur``: restore a photo given its blur (a kernel, a PSF grid, or a registered blind method).

The solvers are :mod:`blindfast.restore`'s; a blind method plugs in through
:func:`blindfast.restore.registry.register_method` and is offered as ``--method NAME`` without a change here.
With ``--sr F`` the photo is a low-resolution one: the kernel (``--kernel``, or the 1x1 ``--psf-grid`` that
``psf-estimate --sr F`` writes) is that of :class:`blindfast.physics.BlurDownsample` (blur, then one pixel in F
kept) and CG restores the photo at F times its size.
The output keeps the input's bit depth and is written atomically; a report ``<out stem>.report.json`` beside it
holds the solver, settings, times and, with ``--reference``, PSNR / SSIM.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import pkgutil
import time

from blindfast.arg_types import positive_float, positive_int, read_npy
from blindfast.cli.common import CommandError, add_command, print_table

SOLVERS = ("wiener", "cg", "pnp", "diffpir")
DEFAULT_SOLVER = "cg"
PADDING = "reflect"      # photos continue past their edges; reflection is the closest of the operator's paddings
DEFAULT_PRIOR = "pixel_tiny"
DEFAULT_DENOISE_TILE = 128


def _load_array(path: str, option: str, ndim: tuple[int, ...], layout: str):
    import numpy as np
    import torch

    array = read_npy(path, option)
    if array.ndim not in ndim or not np.issubdtype(array.dtype, np.floating):
        raise CommandError(f"{option} {path}: expected a float array of shape {layout}, got {array.dtype} "
                           f"{array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _blur(args: argparse.Namespace, y):
    """What restores y: a MethodResult from --kernel, --psf-grid or --method."""
    from blindfast.physics import Blur, SpaceVaryingBlur
    from blindfast.restore.registry import MethodResult, registered_methods

    if args.method is not None:
        methods = registered_methods()
        if args.method not in methods:
            available = ", ".join(sorted(methods)) or "none is registered yet"
            raise CommandError(f"--method: expected one of the registered blind methods ({available}), got "
                               f"{args.method!r}")
        method = methods[args.method]
        for option in ("kernel", "psf_grid"):
            if getattr(args, option) is not None and option not in method.reads:
                reads = " or ".join(f"--{o.replace('_', '-')}" for o in method.reads) or "no blur option"
                raise CommandError(f"--method {method.name} reads {reads}, got --{option.replace('_', '-')}")
        if method.restores and (args.solver is not None or args.tile is not None):
            given = "--solver" if args.solver is not None else "--tile"
            raise CommandError(f"--method {method.name} restores the photo itself: expected no {given}, got one")
        result = method.run(y, args)
        if (result.restored is not None) != method.restores:
            raise ValueError(f"--method {method.name} is registered with restores={method.restores} but returned "
                             f"{'a photo' if result.restored is not None else 'an operator'}")
        return result
    if args.kernel is not None:
        kernel = _load_array(args.kernel, "--kernel", (2, 3), "(kh, kw) or (C, kh, kw)")
        kernel = kernel[None, None] if kernel.dim() == 2 else kernel[None]
        return MethodResult(Blur(padding=PADDING), {"kernel": kernel})
    if args.psf_grid is not None:
        grid = _load_array(args.psf_grid, "--psf-grid", (4, 5, 6), "(Gy, Gx, kh, kw), (C, Gy, Gx, kh, kw) or "
                                                                   "(1, C, Gy, Gx, kh, kw)")
        if grid.dim() == 6 and grid.shape[0] != 1:
            raise CommandError(f"--psf-grid {args.psf_grid}: a 6-d grid must be (1, C, Gy, Gx, kh, kw), got "
                               f"{tuple(grid.shape)}")
        grid = grid[None, None] if grid.dim() == 4 else grid[None] if grid.dim() == 5 else grid
        return MethodResult(SpaceVaryingBlur(padding=PADDING), {"psf_grid": grid})
    raise CommandError("expected the blur: one of --kernel, --psf-grid or --method, got none of them")


def _super_resolution(args: argparse.Namespace, blur):
    """--sr F: the kernel of --kernel, or of a 1x1 --psf-grid (psf-estimate --sr's output), as that of
    BlurDownsample(F), restored by CG (Wiener needs a blur, the tiles and the priors' solvers keep the size)."""
    from blindfast.physics import BlurDownsample
    from blindfast.restore.registry import MethodResult

    if args.method is not None:
        raise CommandError(f"--sr restores with a kernel: expected --kernel or --psf-grid, got --method {args.method}")
    if args.solver not in (None, "cg"):
        raise CommandError(f"--sr restores by --solver cg, got --solver {args.solver}")
    if args.tile is not None:
        raise CommandError("--sr restores the whole photo: expected no --tile, got one")
    kernel = blur.params.get("kernel")
    if kernel is None:
        grid = blur.params["psf_grid"]
        if tuple(grid.shape[2:4]) != (1, 1):
            raise CommandError(f"--sr needs one kernel: expected a 1x1 --psf-grid (psf-estimate --sr), got a "
                               f"{grid.shape[2]}x{grid.shape[3]} grid")
        kernel = grid[:, :, 0, 0]
    return MethodResult(BlurDownsample(args.sr, PADDING), {"kernel": kernel})


def _solver(args: argparse.Namespace, op, sigma: float, lam: float):
    """solve(y, params) -> x for the chosen solver and settings."""
    from blindfast.models import load_prior
    from blindfast.physics import Blur
    from blindfast.restore import PriorDenoiser, cg_tikhonov, diffpir, pnp_hqs, wiener
    from blindfast.restore.diffpir import DIFFPIR_STEPS
    from blindfast.restore.pnp_hqs import PNP_ITERS

    if args.solver == "wiener":
        if not isinstance(op, Blur):
            raise CommandError("--solver wiener needs a uniform kernel (--kernel), got a space-varying blur: use "
                               "--solver cg, pnp or diffpir")
        return lambda y, params: wiener(y, op, params, lam=lam, regulariser="gradient")
    if args.solver == "cg":
        return lambda y, params: cg_tikhonov(y, op, params, lam=lam, iters=args.iters or 30,
                                             progress=not args.quiet and args.tile is None)
    denoiser = PriorDenoiser(load_prior(args.prior), tile=DEFAULT_DENOISE_TILE)
    if args.solver == "pnp":
        return lambda y, params: pnp_hqs(y, op, params, denoiser, sigma=sigma, iters=args.iters or PNP_ITERS,
                                         progress=not args.quiet and args.tile is None)
    import torch

    generator = torch.Generator().manual_seed(args.seed)
    return lambda y, params: diffpir(y, op, params, denoiser, sigma=sigma, steps=args.iters or DIFFPIR_STEPS,
                                     generator=generator, progress=not args.quiet and args.tile is None)


def _tiled(solve, y, op, params, tile: int, quiet: bool):
    from tqdm import tqdm

    from blindfast.data import tile_slices
    from blindfast.restore import restore_tiled

    kernel = params.get("kernel", params.get("psf_grid"))
    overlap = min(max(kernel.shape[-2:]), tile // 2)
    if tile < max(kernel.shape[-2:]):   # checked here too, so the bar is not drawn for nothing
        raise CommandError(f"--tile must be at least the kernel size {max(kernel.shape[-2:])}, got {tile}")
    bar = tqdm(total=len(tile_slices(y.shape[-2:], tile, overlap)), desc="tiles", disable=quiet, leave=False)

    def solve_tile(y_tile, tile_params):
        result = solve(y_tile, tile_params)
        bar.update()
        return result

    try:
        return restore_tiled(solve_tile, y, op, params, tile=tile, overlap=overlap)
    finally:
        bar.close()


def _scores(x, reference) -> dict:
    from blindfast.metrics import psnr, ssim

    return {"psnr": float(psnr(x.clamp(0, 1), reference)), "ssim": float(ssim(x.clamp(0, 1), reference))}


def run(args: argparse.Namespace) -> int:
    import torch

    from blindfast.atomic_file import save_atomic
    from blindfast.cli.image_io import check_output_path, read_photo, write_photo
    from blindfast.restore.noise_level import estimate_noise_std, tikhonov_weight
    from blindfast.restore.validation import check_blur_params

    start = time.perf_counter()
    y, bits = read_photo(args.input)
    out = check_output_path(args.out, bits)
    factor = args.sr or 1
    reference = None
    if args.reference is not None:
        reference, _ = read_photo(args.reference)
        expected = (y.shape[1], factor * y.shape[2], factor * y.shape[3])
        if tuple(reference.shape[1:]) != expected:
            raise CommandError(f"--reference {args.reference}: expected the {'input' if factor == 1 else 'restored'}"
                               f" shape {expected} (C, H, W), got {tuple(reference.shape[1:])}")
    read_s = time.perf_counter() - start

    method_start = time.perf_counter()
    blur = _blur(args, y)
    if args.sr is not None:
        blur = _super_resolution(args, blur)
    method_s = time.perf_counter() - method_start
    sigma = lam = None
    solve_start = time.perf_counter()
    if blur.restored is None:
        args.solver = args.solver or DEFAULT_SOLVER
        check_blur_params(blur.op, blur.params, y)
        sigma = (blur.noise_std if blur.noise_std is not None else args.sigma if args.sigma is not None
                 else estimate_noise_std(y))
        sigma = max(sigma, 1e-4)     # a noise-free file still has quantisation noise; sigma 0 would mean no prior
        lam = args.lam if args.lam is not None else tikhonov_weight(sigma)
        solve = _solver(args, blur.op, sigma, lam)
        with torch.no_grad():
            restored = (solve(y, blur.params) if args.tile is None
                        else _tiled(solve, y, blur.op, blur.params, args.tile, args.quiet))
    elif blur.restored.shape != y.shape:
        raise ValueError(f"--method {args.method} restored a photo of shape {tuple(blur.restored.shape)}, expected "
                         f"the input's {tuple(y.shape)}")
    else:
        restored = blur.restored
    solve_s = time.perf_counter() - solve_start

    write_start = time.perf_counter()
    write_photo(out, restored, bits)
    for suffix, write in blur.outputs.items():
        save_atomic(out.with_name(out.stem + suffix), write)
    report = {
        "input": str(args.input), "output": str(out), "height": y.shape[-2], "width": y.shape[-1],
        "channels": y.shape[1], "bits": bits, "solver": args.solver, "method": args.method, "sr_factor": factor,
        "operator": "kernel" if args.kernel else "psf_grid" if args.psf_grid else args.method,
        "settings": {"sigma": sigma, "sigma_estimated": args.sigma is None and blur.noise_std is None,
                     "sigma_from_method": blur.noise_std is not None, "lam": lam, "iters": args.iters,
                     "steps": args.steps, "tile": args.tile, "padding": PADDING,
                     "prior": args.prior if args.solver in ("pnp", "diffpir") else None, "seed": args.seed},
        "threads": torch.get_num_threads(),
    }
    if blur.report:
        report["method_report"] = dict(blur.report)
    if reference is not None:
        if factor == 1:   # a low-resolution input has no score against the high-resolution reference
            report["measurement"] = _scores(y, reference)
        report["restored"] = _scores(restored, reference)
    report["times"] = {"read_s": read_s, "method_s": method_s, "solve_s": solve_s,
                       "write_s": time.perf_counter() - write_start, "total_s": time.perf_counter() - start}
    report_path = out.with_name(out.stem + ".report.json")
    save_atomic(report_path, lambda f: f.write(json.dumps(report, indent=2).encode()))
    rows = [("method", args.method)] if args.method else []
    if blur.restored is None:
        rows += [("solver", args.solver), ("sigma", f"{sigma:.4g}")]
    rows += [("method time", f"{method_s:.2f} s")] if args.method else []
    rows += [("solve", f"{solve_s:.2f} s")]
    rows += [("wrote", out.with_name(out.stem + suffix)) for suffix in blur.outputs]
    if reference is not None and factor == 1:
        rows += [("PSNR", f"{report['measurement']['psnr']:.2f} -> {report['restored']['psnr']:.2f} dB"),
                 ("SSIM", f"{report['measurement']['ssim']:.3f} -> {report['restored']['ssim']:.3f}")]
    elif reference is not None:
        rows += [("PSNR", f"{report['restored']['psnr']:.2f} dB"), ("SSIM", f"{report['restored']['ssim']:.3f}")]
    print_table(rows + [("wrote", out), ("report", report_path)])
    return 0


# installed packages add methods under this entry-point group
ENTRY_POINT_GROUP = "blindfast.deblur_methods"


def load_methods() -> dict:
    """Import every ``blindfast.methods`` subpackage and every :data:`ENTRY_POINT_GROUP` entry point, so each
    registers itself (:func:`blindfast.restore.registry.register_method`); returns the registered methods by name.
    Here, not in ``blindfast.restore``: the methods sit above restore, the command above them."""
    from blindfast.restore.registry import registered_methods

    try:
        package = importlib.import_module("blindfast.methods")
    except ModuleNotFoundError:
        package = None
    if package is not None:
        for module in pkgutil.iter_modules(package.__path__, prefix="blindfast.methods."):
            importlib.import_module(module.name)
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()
    return registered_methods()


def register(commands: argparse._SubParsersAction) -> None:
    methods = load_methods()
    deblur = add_command(commands, "deblur", run, help="restore a photo given its blur: a kernel, a PSF grid, or a "
                                                       "blind method")
    deblur.add_argument("--input", required=True, help="the blurred photo (.png, .jpg, .tif; 8 or 16 bit, grey or "
                                                       "RGB)")
    deblur.add_argument("--out", required=True, help="the restored photo, written with the input's bit depth; the "
                                                     "report goes beside it as <stem>.report.json")
    blur = deblur.add_mutually_exclusive_group()
    blur.add_argument("--kernel", help="a uniform blur kernel: .npy of shape (kh, kw) or (C, kh, kw)")
    blur.add_argument("--psf-grid", help="a lens's PSF grid: .npy of shape (Gy, Gx, kh, kw), (C, Gy, Gx, kh, kw) or "
                                         "psf-estimate's (1, C, Gy, Gx, kh, kw), nodes on the corner pixels "
                                         "(blindfast.ops.sv_conv)")
    deblur.add_argument("--sr", type=positive_int, default=None, metavar="F",
                        help="super-resolution by F: the kernel (--kernel, or psf-estimate --sr's 1x1 --psf-grid) "
                             "blurs before one pixel in F is kept; CG restores at F times the input's size")
    deblur.add_argument("--method", help="a blind method that estimates the blur, or restores with what it learned "
                                         "(it may read --kernel / --psf-grid)" + (
                            f" ({', '.join(sorted(methods))})" if methods else " (none is installed yet)"))
    deblur.add_argument("--solver", default=None, choices=SOLVERS, help="wiener (uniform kernels), cg (Tikhonov), "
                                                                        "pnp (DPIR with the prior), diffpir "
                                                                        f"(default: {DEFAULT_SOLVER}; not with a "
                                                                        "method that restores the photo itself)")
    deblur.add_argument("--sigma", type=positive_float, default=None, help="the noise std in [0, 1] units (default: "
                                                                  "estimated from the photo)")
    deblur.add_argument("--lam", type=positive_float, default=None, help="Tikhonov weight of wiener / cg (default: "
                                                                "(sigma / 0.1)^2)")
    deblur.add_argument("--iters", type=positive_int, default=None, help="iterations (default: cg 30, pnp 16, diffpir 20)")
    deblur.add_argument("--steps", type=positive_int, default=None, help="sampler steps of a diffusion-based blind "
                                                                    "method (default: the method's)")
    deblur.add_argument("--tile", type=positive_int, default=None, help="restore on blended tiles of this side (bounded "
                                                               "memory; at least the kernel size)")
    deblur.add_argument("--prior", default=DEFAULT_PRIOR, help="a shipped prior's name or a folder holding one, for "
                                                               "pnp / diffpir (default: %(default)s)")
    deblur.add_argument("--reference", default=None, help="the sharp photo: the report gets PSNR / SSIM")
    deblur.add_argument("--seed", type=int, default=0, help="seeds diffpir's noise and a diffusion-based blind "
                                                            "method's sampler (default: %(default)s)")
    deblur.add_argument("--quiet", action="store_true", help="no progress bar")
    for method in methods.values():
        if method.add_arguments is not None:
            method.add_arguments(deblur.add_argument_group(f"--method {method.name}"))
