"""Mutation testing of the kernels: does the op test suite notice a wrong operator, index offset or loop bound?

One mutant at a time, a single token of a kernel source is changed in place (and always restored): an arithmetic
operator flipped (+ <-> -, * -> +), a comparison moved (< <-> <=, > <-> >=), an integer constant nudged by one, an
index offset flipped. C++ mutants are built as one -march=native module into build-mutant/ and loaded through
$BLINDFAST_C_PATH; Triton mutants run through the interpreter (beside the unmutated C++ build). A mutant is killed
when its op's tests fail (or crash, or run past the time limit). Sites are drawn with a seeded RNG from every candidate in the file, so a run is
reproducible and a larger --per-file samples more.

Run (from the repository root, clean tree):
    python scripts/mutation_test.py --per-file 8 --out outputs/mutation.json
Survivors are listed with their diff: each needs a test or a reason.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import tokenize
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each kernel source and the tests that exercise it (a -k filter keeps a C++ mutant's run short).
TARGETS = {
    "csrc/sv_conv.cpp": ["tests/ops/test_sv_conv.py", "-k", "float64 or dot_product or grad"],
    "csrc/padding.h": ["tests/ops/test_sv_conv.py", "-k", "float64"],
    "csrc/flow.cpp": ["tests/ops/test_flow.py"],
    "csrc/hqs.cpp": ["tests/ops/test_hqs.py"],
    "csrc/info_nce.cpp": ["tests/ops/test_info_nce.py"],
    "csrc/simd_math.h": ["tests/ops/test_info_nce.py", "-k", "simd_exp or float64"],
    "csrc/patchify.cpp": ["tests/ops/test_patchify.py"],
    "triton_kernels/sv_conv.py": ["tests/ops/test_sv_conv_triton.py"],
    "triton_kernels/flow.py": ["tests/ops/test_flow_triton.py"],
    "triton_kernels/hqs.py": ["tests/ops/test_hqs_triton.py"],
    "triton_kernels/info_nce.py": ["tests/ops/test_info_nce_triton.py"],
    "triton_kernels/patchify.py": ["tests/ops/test_patchify_triton.py"],
}
# (pattern, replacement) over one token; the lookarounds keep ++, +=, ->, <<, <=, // and pointer/unary uses out.
MUTATIONS = [
    (re.compile(r"(?<=[\w)\]] )\+(?= [\w(])"), "-"),
    (re.compile(r"(?<=[\w)\]] )-(?= [\w(])"), "+"),
    (re.compile(r"(?<=[\w)\]] )\*(?= [\w(])"), "+"),
    (re.compile(r"(?<=[\w)\]] )<(?= [\w(])"), "<="),
    (re.compile(r"(?<=[\w)\]] )<=(?= [\w(])"), "<"),
    (re.compile(r"(?<=[\w)\]] )>(?= [\w(])"), ">="),
    (re.compile(r"(?<=[\w)\]] )>=(?= [\w(])"), ">"),
    (re.compile(r"(?<=[+\-] )1(?![\w.])"), "2"),
    (re.compile(r"(?<=[+\-] )1(?![\w.])"), "0"),
]
COMMENT = {".py": "#", ".cpp": "//", ".h": "//"}


@dataclass
class Mutant:
    file: str
    line: int
    before: str
    after: str
    status: str = ""
    seconds: float = 0.0


def prose_lines(path: Path) -> set[int]:
    """Line numbers inside Python strings spanning lines (docstrings) or C++ block comments: text, not code."""
    text = path.read_text()
    lines = set()
    if path.suffix == ".py":
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.STRING:
                lines.update(range(token.start[0], token.end[0] + 1))
    else:
        for match in re.finditer(r"/\*.*?\*/", text, flags=re.S):
            first = text.count("\n", 0, match.start()) + 1
            lines.update(range(first, first + match.group().count("\n") + 1))
    return lines


def candidates(path: Path) -> list[Mutant]:
    """Every single-token mutation of the file's code lines (comments, docstrings, includes, pragmas and asserts
    skipped)."""
    comment = COMMENT[path.suffix]
    prose = prose_lines(path)
    found = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        code = line.split(comment, 1)[0]
        stripped = code.strip()
        if not stripped or number in prose or stripped.startswith(("#", "import", "from", "assert", "raise")) \
                or '"' in code:
            continue
        for pattern, replacement in MUTATIONS:
            for match in pattern.finditer(code):
                mutated = code[:match.start()] + replacement + code[match.end():]
                found.append(Mutant(str(path.relative_to(ROOT)), number, line, mutated + line[len(code):]))
    return found


def apply(mutant: Mutant) -> str:
    """Writes the mutant; returns the original text to restore."""
    path = ROOT / mutant.file
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    ending = lines[mutant.line - 1][len(lines[mutant.line - 1].rstrip("\n")):]
    lines[mutant.line - 1] = mutant.after + ending
    path.write_text("".join(lines))
    return original


def build_native(build_dir: Path) -> Path | None:
    """The -march=native module of the current sources, or None when the mutant does not compile."""
    pybind11_dir = subprocess.check_output([sys.executable, "-m", "pybind11", "--cmakedir"], text=True).strip()
    if not (build_dir / "build.ninja").exists():
        # no link-time optimisation: a mutant relinks in seconds instead of re-optimising the whole module
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                        "-DBLINDFAST_NATIVE=ON", "-DCMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF",
                        f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11_dir}"],
                       check=True, stdout=subprocess.DEVNULL)
    built = subprocess.run(["cmake", "--build", str(build_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return next(build_dir.glob("_C_native*.so")) if built.returncode == 0 else None


def run_tests(test_args: list[str], module: Path, timeout: float) -> str:
    env = dict(os.environ, TRITON_INTERPRET="1", BLINDFAST_C_PATH=str(module))
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *test_args],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed (timeout)"
    if result.returncode == 0:
        return "survived"
    return "killed" if result.returncode == 1 else f"killed (exit {result.returncode})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-file", type=int, default=8, help="mutants drawn per source file (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--files", nargs="*", default=sorted(TARGETS), help="sources to mutate (default: all)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's test run")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "mutation.json")
    args = parser.parse_args(argv)
    if args.per_file < 1:
        parser.error(f"--per-file must be a positive integer, got {args.per_file}")
    unknown = sorted(set(args.files) - set(TARGETS))
    if unknown:
        parser.error(f"--files must name kernel sources among {sorted(TARGETS)}, got {unknown}")
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *args.files], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    if dirty:
        parser.error(f"the sources to mutate must be committed (they are changed in place), got changes:\n{dirty}")

    # a kill ends the run through SystemExit, so the finally below restores the mutated file
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    rng = random.Random(args.seed)
    build_dir = ROOT / "build-mutant"
    clean_module = build_native(build_dir)  # the unmutated C++ under the Triton mutants' tests
    results = []
    # Triton sources first, beside the clean build; then the C++ ones, each mutant rebuilt from the last
    for file in sorted(args.files, key=lambda f: f.startswith("csrc/")):
        pool = candidates(ROOT / file)
        for mutant in rng.sample(pool, min(args.per_file, len(pool))):
            start = time.perf_counter()
            original = apply(mutant)
            try:
                module = build_native(build_dir) if file.startswith("csrc/") else clean_module
                if module is None:
                    mutant.status = "killed (does not compile)"
                else:
                    mutant.status = run_tests(TARGETS[file], module, args.timeout)
            finally:
                (ROOT / file).write_text(original)
            mutant.seconds = round(time.perf_counter() - start, 1)
            results.append(mutant)
            print(f"{mutant.status:28s} {file}:{mutant.line}: {mutant.before.strip()}  ->  {mutant.after.strip()}",
                  flush=True)

    if any(file.startswith("csrc/") for file in args.files):
        build_native(build_dir)  # leave the build matching the restored sources
    killed = sum(r.status.startswith("killed") for r in results)
    summary = {"mutants": len(results), "killed": killed, "kill_rate": round(killed / max(len(results), 1), 3),
               "seed": args.seed, "per_file": args.per_file, "results": [asdict(r) for r in results]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"{killed}/{len(results)} killed ({summary['kill_rate']:.0%}); details in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
