"""Ahead-of-time compilation of the fused kernels (kernels/aot.py) and the tile table
(kernels/tiles.py), on a machine without a GPU: Triton compiles for an explicit target and
ptxas ships in the triton wheel. Whether the cubins run and match the references needs a
GPU (tests/test_kernels.py runs them there)."""
import hashlib
import json
import re

import pytest

pytest.importorskip("triton", reason="Triton is not installed")
pytest.importorskip("triton.backends.nvidia.compiler", reason="Triton has no NVIDIA backend here")

from kernels import aot, tiles  # noqa: E402


def test_every_kernel_target_dtype_and_group_count_has_a_tile():
    for kernel in tiles.KERNELS:
        for arch in tiles.ARCHS:
            for dtype in tiles.DTYPES:
                for c_pad in (16, 32, 64, 128, 256):
                    tile = tiles.lookup(kernel, arch, dtype, c_pad)
                    assert tile.num_warps in (1, 2, 4, 8, 16) and tile.num_stages >= 1
                    for name, value in tiles.tile_constexprs(tile, c_pad).items():
                        assert value >= 16 and value & (value - 1) == 0, (kernel, arch, dtype, c_pad, name)
    with pytest.raises(ValueError, match="no prompt_inject tile"):
        tiles.lookup("prompt_inject", "90a", "fp16", 512)
    with pytest.raises(ValueError, match="unknown target"):
        tiles.lookup("prompt_inject", "75", "fp16", 16)


def test_capabilities_map_to_table_targets():
    assert tiles.arch_of_capability(8, 0) == "80"
    assert tiles.arch_of_capability(8, 7) == "87"
    assert tiles.arch_of_capability(8, 9) == "89"
    assert tiles.arch_of_capability(9, 0) == "90a"
    assert tiles.arch_of_capability(10, 0) == "100a"
    assert tiles.arch_of_capability(12, 0) == "120a"
    with pytest.raises(ValueError, match="compute capability >= 8.0"):
        tiles.arch_of_capability(7, 5)


def test_plan_builds_the_merge_variants_its_token_range_needs():
    """The fused merge (one program covers all S tokens) only where some S of the range needs
    it: the default range starts at 0 tokens (dynamic shapes, short token sets), so always."""
    def kinds(**kw):
        return sorted((j["kernel"], j["constexprs"].get("FUSED_EPILOGUE")) for j in aot.plan(["90a"], ["fp16"], **kw))

    split_only = [("group_merge", False), ("group_merge_epilogue", None), ("prompt_inject", None)]
    assert kinds(groups=[9]) == sorted(split_only + [("group_merge", True)])
    assert kinds(groups=[9], tokens=(196, 4096)) == split_only
    assert kinds(groups=[9], tokens=(49, 4096)) == sorted(split_only + [("group_merge", True)])
    assert kinds(groups=[9], tokens=(16, 64)) == [("group_merge", True), ("prompt_inject", None)]
    merge = aot.plan(["90a"], ["fp16"], groups=[9])[0]
    assert merge["constexprs"]["C_PAD"] == 16 and merge["constexprs"]["DP"] == 32


def test_extra_sets_add_narrower_builds_once():
    """--extra ARCHS:DTYPES:GROUPS[:KERNELS]: one more target for one dtype, without the cross
    product; a build already in the sweep is planned once."""
    jobs = aot.plan_all(["80"], ["fp32", "fp16"], [9], extra=[(["86", "80"], ["fp32"], [9], ["group_merge"])])
    stems = [aot.build_stem(j) for j in jobs]
    assert len(stems) == len(set(stems)) == 8 + 2
    assert {s for s in stems if "sm86" in s} == {f"group_merge_sm86_fp32_d32_c16_{k}" for k in ("fused", "split")}
    assert aot.main(["--extra", "86:fp32"]) == 2


def test_one_build_writes_a_complete_manifest_record(tmp_path):
    """The smallest build (the merge epilogue, ~2 s): every field a native launcher needs, the
    parameter list as long as the PTX entry's, files and hashes that match."""
    manifest = aot.run(["90a"], ["fp16"], tmp_path, groups=[9], kernels=["group_merge_epilogue"])
    assert manifest["format"] == aot.FORMAT and not manifest["rejected"]
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["builds"] == manifest["builds"]
    assert on_disk["tiles"] == tiles.as_json()
    record = next(r for r in manifest["builds"] if r["kernel"] == "group_merge_epilogue")
    assert record["name"] == "_group_merge_epilogue_kernel"
    assert record["arch"] == "90a" and record["capability"] == 90 and record["dtype"] == "fp16"
    assert record["grid"] == ["B", "1", "1"] and record["block"] == [record["num_warps"] * 32, 1, 1]
    ptx = (tmp_path / record["ptx"]).read_text()
    cubin = (tmp_path / record["cubin"]).read_bytes()
    assert hashlib.sha256(ptx.encode()).hexdigest() == record["ptx_sha256"]
    assert hashlib.sha256(cubin).hexdigest() == record["cubin_sha256"]
    assert cubin[:4] == b"\x7fELF"
    assert re.search(r"^\.target sm_90a", ptx, re.MULTILINE)
    entry = re.search(rf"\.entry {record['name']}\((.*?)\)", ptx, re.DOTALL).group(1)
    params = re.findall(r"\.param \.(\w+)", entry)
    assert len(params) == len(record["signature"])
    widths = {"u64": "*", "u32": "i32", "f32": "fp32"}
    for (ptx_type, sig) in zip(params, record["signature"]):
        assert sig["type"].startswith(widths[ptx_type]) or (ptx_type == "u32" and sig["type"] == "i32")
    assert record["signature"][-2:] == aot.SCRATCH
    for key in ("registers", "spill_store_bytes", "spill_load_bytes", "shared_bytes", "tf32_mma"):
        assert isinstance(record[key], int)
    assert 0 < record["shared_bytes"] <= record["shared_limit"] == tiles.SHARED_LIMIT["90a"]


def test_cli_rejects_unknown_targets(capsys):
    assert aot.main(["--arch", "75"]) == 2
    assert "--arch must be among" in capsys.readouterr().err


VIT_B_GROUPS = [9, 40, 150]  # MFNet, NYUDv2, ADE20K class counts: C_PAD 16, 64, 256
# The fp32 inject kernel runs at the 255-register cap, and how much ptxas spills there depends
# on the Triton release (C_PAD >= 64: 24-32 B with 3.6, none with 3.7.1, 80-88 B on sm_90a with
# 3.9); the 16-bit builds, the ones GPUs run, spill nothing with any of them.
FP32_SPILL_BYTES = 128


@pytest.mark.slow
def test_vit_b_builds_fit_the_robot_and_server_targets(tmp_path, monkeypatch):
    """Every ViT-B build (d = 32; C = 9, 40, 150; fp32 / fp16 / bf16; 72) for Jetson Orin (sm_87) and
    H100 (sm_90a), compiled from scratch: within the target's shared memory, no spills in 16-bit
    builds (fp32 at most FP32_SPILL_BYTES; the one-program merge of short token sets at most 1 KiB),
    no TF32 products, and at batch 1, S = 1200 (480x640) enough programs to spread over the GPU."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))  # nothing reused from earlier runs
    manifest = aot.run(["87", "90a"], ["fp32", "fp16", "bf16"], tmp_path / "aot", groups=VIT_B_GROUPS, jobs=2)
    assert not manifest["rejected"], [(aot.build_stem(r), r["problem"]) for r in manifest["rejected"]]
    builds = manifest["builds"]
    assert len(builds) == len(aot.plan(["87", "90a"], ["fp32", "fp16", "bf16"], groups=VIT_B_GROUPS)) == 72
    for r in builds:
        what = aot.build_stem(r)
        assert r["shared_bytes"] <= tiles.SHARED_LIMIT[r["arch"]], what
        assert r["tf32_mma"] == 0, what
        spills = r["spill_store_bytes"] + r["spill_load_bytes"]
        if r["constexprs"].get("FUSED_EPILOGUE"):
            # one program per sample, for short token sets only (S <= TOKENS_PER_PROG): the
            # epilogue in the same program spills at C_PAD >= 64, as it does under the Python dispatch
            assert spills <= 1024, f"{what}: {spills} B of spills"
            continue
        assert spills <= (0 if r["dtype"] != "fp32" else FP32_SPILL_BYTES), f"{what}: {spills} B of spills"
        programs = aot.grid_size(r, B=1, S=1200)
        least = {"group_merge": 10, "group_merge_epilogue": 1, "prompt_inject": 32}[r["kernel"]]
        assert programs >= least, f"{what}: {programs} programs at batch 1"


def test_blackwell_fp32_products_stay_fp32(tmp_path):
    """sm_100a: Triton lowers fp32 products of >= 64 rows with a 16-bit-upcast operand to TF32
    tensor cores; the kernels keep every such product at <= 32 rows, so the PTX has no TF32
    instruction (the C = 40 fp16 inject and epilogue builds, where it did)."""
    manifest = aot.run(["100a"], ["fp16"], tmp_path, groups=[40], kernels=["prompt_inject", "group_merge_epilogue"],
                       jobs=2)
    assert not manifest["rejected"], [(aot.build_stem(r), r["problem"]) for r in manifest["rejected"]]
    assert [r["tf32_mma"] for r in manifest["builds"]] == [0, 0]
