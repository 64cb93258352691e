"""Turn an AOT output folder (``python -m kernels.aot``: cubins, PTX, manifest.json) into the
sources that embed it in libgopt_kernels: an assembler file that ``.incbin``s every image
and a C table of the builds (``native/src/variants.h``).

    python native/embed_kernels.py AOT_DIR OUT_DIR [--ptx-arch 80]
    python native/embed_kernels.py --compile [kernels.aot arguments]

The second form runs ``python -m kernels.aot`` for CMake: builds the AOT step rejects (a
tile over a target's shared memory) are reported and left out of the library, which then
answers GOPT_NO_KERNEL_FOR_ARCH for them; any other failure fails the build.

Every build's cubin is embedded; the builds of ``--ptx-arch`` also embed their PTX
(NUL-terminated, as ``cuModuleLoadData`` wants it) for GPUs newer than any cubin. The
files are checked against the manifest's SHA-256 before they are embedded. CMake runs it
at build time with the project's Python.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path



def _project_files_module():
    """runtime/files.py alone (the runtime package itself imports numpy and OpenCV)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "runtime" / "files.py"
    spec = importlib.util.spec_from_file_location("gopt_build_files", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


write_text_atomic = _project_files_module().write_text_atomic

KERNELS = {"group_merge": "GOPT_K_GROUP_MERGE", "group_merge_epilogue": "GOPT_K_GROUP_MERGE_EPILOGUE",
           "prompt_inject": "GOPT_K_PROMPT_INJECT"}
DTYPES = {"fp32": 0, "fp16": 1, "bf16": 2}
PARAMS = re.findall(r"GOPT_P_(\w+)", (Path(__file__).parent / "src" / "variants.h").read_text())
_GRID = re.compile(r"^[BS0-9+\-*/() ,cdiv]+$")


class ManifestError(ValueError):
    pass


def param_type(t: str) -> str:
    if t.startswith("*"):
        return "GOPT_T_PTR"
    return {"i32": "GOPT_T_I32", "fp32": "GOPT_T_F32"}.get(t) or _bad(f"parameter type {t!r}")


def _bad(msg: str):
    raise ManifestError(f"manifest: {msg} is not supported by this launcher")


def grid_c(expr: str) -> str:
    """A grid expression of the manifest (in B and S, ``cdiv``, integer ``/``) as C."""
    expr = str(expr)
    if not _GRID.match(expr) or re.search(r"[a-z]", expr.replace("cdiv", "")):
        _bad(f"grid expression {expr!r}")
    return expr.replace("cdiv", "gopt_cdiv")


def read_image(folder: Path, name: str, sha: str) -> Path:
    path = folder / name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha:
        raise ManifestError(f"{path}: SHA-256 {digest} differs from the manifest's {sha}")
    return path.resolve()


def generate(aot_dir: Path, out_dir: Path, ptx_arch: str) -> int:
    manifest = json.loads((aot_dir / "manifest.json").read_text())
    if manifest.get("format") != 1:
        raise ManifestError(f"{aot_dir}/manifest.json: format {manifest.get('format')!r}, this launcher reads 1")
    asm, table, grids, arrays = [], [], {}, []
    images = 0
    for i, b in enumerate(manifest["builds"]):
        if b["kernel"] not in KERNELS:
            _bad(f"kernel {b['kernel']!r}")
        names = [p["name"] for p in b["signature"]]
        unknown = [n for n in names if n not in PARAMS]
        if unknown:
            _bad(f"parameters {unknown} of {b['kernel']}")
        arrays.append(f"static const unsigned char params_{i}[] = {{{', '.join('GOPT_P_' + n for n in names)}}};\n"
                      f"static const unsigned char types_{i}[] = "
                      f"{{{', '.join(param_type(p['type']) for p in b['signature'])}}};")
        grid = tuple(grid_c(g) for g in b["grid"])
        if grid not in grids:
            grids[grid] = f"grid_{len(grids)}"
        c = b["constexprs"]
        kinds = [("cubin", False)] + ([("ptx", True)] if b["arch"] == ptx_arch else [])
        for kind, is_ptx in kinds:
            path = read_image(aot_dir, b[kind], b[f"{kind}_sha256"])
            sym = f"gopt_image_{images}"
            images += 1
            asm.append(f'    .global {sym}\n    .hidden {sym}\n    .balign 16\n{sym}:\n    .incbin "{path}"\n'
                       + ("    .byte 0\n" if is_ptx else ""))
            arrays.append(f"extern const unsigned char {sym}[];")
            size = path.stat().st_size + int(is_ptx)
            table.append(
                f"    {{{KERNELS[b['kernel']]}, {DTYPES[b['dtype']]}, {int(b['capability'])}, "
                f"{int(b['arch'].endswith('a'))}, {int(is_ptx)}, {int(c['DP'])}, {int(c['C_PAD'])}, "
                f"{int(c['FUSED_EPILOGUE']) if 'FUSED_EPILOGUE' in c else -1}, "
                f"{int(c.get('TOKENS_PER_PROG', 0)) if b['kernel'] == 'group_merge' else 0}, "
                f"\"{b['arch']}\", \"{b['name']}\", {sym}, {size}, {int(b['block'][0])}, {int(b['shared_bytes'])}, "
                f"{grids[grid]}, {len(names)}, params_{i}, types_{i}}},")
    grid_fns = [f"static void {name}(int64_t B, int64_t S, unsigned int g[3]) {{\n"
                f"    (void)B, (void)S;\n"
                + "".join(f"    g[{k}] = (unsigned int)({e});\n" for k, e in enumerate(expr)) + "}"
                for expr, name in grids.items()]
    source = "\n".join([
        f"/* Generated by native/embed_kernels.py from {aot_dir.resolve() / 'manifest.json'} "
        f"--ptx-arch={ptx_arch}; do not edit. */",
        '#include "variants.h"', "",
        "static inline int64_t gopt_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }", "",
        *grid_fns, "", *arrays, "",
        "const gopt_variant gopt_variants[] = {", *table, "    {0}", "};",
        f"const int gopt_variant_count = {len(table)};", ""])
    out_dir.mkdir(parents=True, exist_ok=True)
    write(out_dir / "gopt_images.S", "    .section .rodata\n" + "".join(asm)
          + '    .section .note.GNU-stack,"",@progbits\n')
    write(out_dir / "gopt_variants.c", source)
    return len(table)


def write(path: Path, text: str) -> None:
    """Only when the text changed (no needless rebuilds)."""
    if not (path.exists() and path.read_text() == text):
        write_text_atomic(path, text)


def compile_kernels(aot_args: list[str]) -> int:
    """``python -m kernels.aot``; 0 when it wrote a manifest (rejected builds are warnings)."""
    out = Path(aot_args[aot_args.index("--out") + 1]) if "--out" in aot_args else Path("build/aot")
    manifest = out / "manifest.json"
    if manifest.exists():
        manifest.unlink()  # a stale manifest must not pass for this run's
    rc = subprocess.run([sys.executable, "-m", "kernels.aot", *aot_args]).returncode
    if rc not in (0, 1) or not manifest.exists():
        print(f"embed_kernels: python -m kernels.aot failed (exit {rc})", file=sys.stderr)
        return rc or 1
    for record in json.loads(manifest.read_text()).get("rejected", []):
        print(f"embed_kernels: warning: not embedded: {record['kernel']} sm_{record['arch']} {record['dtype']} "
              f"{record['constexprs']}: {record['problem']}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--compile"]:
        return compile_kernels(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("aot_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--ptx-arch", default="80", help="the builds whose PTX is embedded too (default 80)")
    args = ap.parse_args(argv)
    try:
        n = generate(args.aot_dir, args.out_dir, args.ptx_arch)
    except (ManifestError, OSError, KeyError, json.JSONDecodeError) as e:
        print(f"embed_kernels: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"embed_kernels: {n} images from {args.aot_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
