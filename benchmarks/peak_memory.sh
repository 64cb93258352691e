#!/usr/bin/env bash
# Peak memory (maximum resident set size) of the heavy commands a user runs, on a CPU.
#
#   export PYTHONPATH=$PWD            # from the repository root, the project's venv active
#   bash benchmarks/peak_memory.sh [STEP ...]     # default: every step, one after the other
#   MEM_OUT=/tmp/mem-run bash benchmarks/peak_memory.sh export_onnx quantize_dynamic
#
# Each step runs alone under GNU time (`/usr/bin/time -f '%M KB max RSS, %e s'`). %M is the
# largest resident set of ONE process: the command's, or of a descendant it waited for,
# whichever is larger; it never adds processes up. Steps that run several processes at once
# (Ray, `kernels.aot --jobs 2`) are also sampled every 0.2 s: the sum over the live process
# tree of PSS (shared pages counted once) and of RSS, whose maxima are printed as `tree`.
# Every output goes under $MEM_OUT (default /tmp/mem-run), nothing into the checkout.
# Results: $MEM_OUT/STEP.time (one line), $MEM_OUT/STEP.log (the command's output),
# $MEM_OUT/STEP.tree (tree steps), and a summary line per step on stdout.
# Needs the demo checkpoints (`python -m models.demo_checkpoint [--modality depth]`).
set -u
W=${MEM_OUT:-/tmp/mem-run}
CKPT=checkpoints/gopt_demo_rgbt.pt
mkdir -p "$W"

# Sum of PSS / RSS (kB) over PID and its descendants, every 0.2 s, until PID ends; prints
# the peaks and the process count at the PSS peak.
SAMPLER='
import os, sys, time
root, out = int(sys.argv[1]), sys.argv[2]
def kids():
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p))
    tree, todo = [], [root]
    while todo:
        p = todo.pop(); tree.append(p); todo += children.get(p, [])
    return tree
def mem(pid):
    vals = {}
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            k, _, rest = line.partition(":")
            if k in ("Rss", "Pss"):
                vals[k] = int(rest.split()[0])
    except OSError:
        pass
    return vals.get("Pss", 0), vals.get("Rss", 0)
def name(pid):
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:60].strip()
    except OSError:
        return "?"
peak_pss = peak_rss = 0; top = []
while os.path.exists(f"/proc/{root}"):
    tree = kids(); m = [(*mem(p), p) for p in tree]
    pss, rss = sum(a for a, _, _ in m), sum(b for _, b, _ in m)
    if pss > peak_pss:
        peak_pss = pss
        top = [(a, name(p)) for a, _, p in sorted(m, reverse=True) if a]
    peak_rss = max(peak_rss, rss)
    time.sleep(0.2)
with open(out, "w") as f:
    f.write(f"tree peak PSS {peak_pss} KB, peak RSS sum {peak_rss} KB, {len(top)} processes at the PSS peak\n")
    f.writelines(f"  {a} KB PSS  {n}\n" for a, n in top[:5])
'

step() {  # step NAME TREE(0|1) COMMAND...
    local name=$1 tree=$2; shift 2
    echo "== $name: $*" >&2
    /usr/bin/time -o "$W/$name.time" -f '%M KB max RSS, %e s, exit %x' "$@" >"$W/$name.log" 2>&1 &
    local pid=$!
    if [ "$tree" = 1 ]; then python3 -c "$SAMPLER" "$pid" "$W/$name.tree" & fi
    wait "$pid"; wait
    echo "$name: $(tail -n 1 "$W/$name.time")$( [ "$tree" = 1 ] && echo "; $(head -n 1 "$W/$name.tree")")"
}

run() {
    case $1 in
    demo)              step demo 0 python demo.py --checkpoint "$W/demo/gopt_demo_rgbt.pt" --out "$W/demo/out" ;;
    export_onnx)       step export_onnx 0 python -m export.onnx $CKPT -o "$W/gopt_demo_rgbt.onnx" ;;
    export_onnx_fused) step export_onnx_fused 0 python -m export.onnx $CKPT --fused-kernels -o "$W/gopt_demo_rgbt.fused.onnx" ;;
    export_onnx_uint8) step export_onnx_uint8 0 python -m export.onnx $CKPT --uint8-input -o "$W/gopt_demo_rgbt.frames.onnx" ;;
    quantize_dynamic)  step quantize_dynamic 0 python -m export.quantize "$W/gopt_demo_rgbt.onnx" --int8 -o "$W/gopt_demo_rgbt.int8.onnx" ;;
    quantize_static)   step quantize_static 0 python -m export.quantize "$W/gopt_demo_rgbt.onnx" --int8 --target tensorrt -o "$W/gopt_demo_rgbt.int8.qdq.onnx" ;;
    simcmf_checkpoint) step simcmf_checkpoint 0 python -m models.demo_simcmf -o "$W/simcmf" ;;
    simcmf_export)     step simcmf_export 0 python -m export.onnx "$W/simcmf/simcmf_rgbt_lora_untrained.pth" \
                           --base "$W/simcmf/sam_vit_b_random.pth" -o "$W/simcmf/simcmf_rgbt" ;;
    simcmf_export_separately) step simcmf_export_separately 0 python -m export.onnx "$W/simcmf/simcmf_rgbt_lora_untrained.pth" \
                           --base "$W/simcmf/sam_vit_b_random.pth" -o "$W/simcmf/simcmf_rgbt_sep" --check-separately ;;
    runtime_onnx)      mkdir -p "$W/mfnet" && cp data/samples/mfnet_*.png "$W/mfnet/"
                       step runtime_onnx 0 python -m runtime "$W/gopt_demo_rgbt.onnx" --rgb "$W/mfnet" --out "$W/overlays_onnx" ;;
    runtime_torch)     mkdir -p "$W/mfnet" && cp data/samples/mfnet_*.png "$W/mfnet/"
                       step runtime_torch 0 python -m runtime $CKPT --rgb "$W/mfnet" --out "$W/overlays_torch" --device cpu ;;
    runtime_batch)     mkdir -p "$W/mfnet" && cp data/samples/mfnet_*.png "$W/mfnet/"
                       step runtime_batch 1 python -m runtime.batch "$W/gopt_demo_rgbt.onnx" --rgb "$W/mfnet" --out "$W/seg" --overwrite ;;
    latency)           step latency 0 python benchmarks/latency.py "$W/gopt_demo_rgbt.onnx" --quick --work-dir "$W/latency" --json "$W/latency.json" ;;
    accuracy)          mkdir -p "$W/acc/mfnet/images" "$W/acc/mfnet/labels" && cp data/samples/mfnet_*.png "$W/acc/mfnet/images/"
                       python -m runtime $CKPT --rgb "$W/acc/mfnet/images" --out "$W/acc/pred" --device cpu --quiet >"$W/accuracy_labels.log" 2>&1
                       for f in "$W"/acc/pred/*_labels.png; do cp "$f" "$W/acc/mfnet/labels/$(basename "$f" _labels.png).png"; done
                       ls "$W/acc/mfnet/images" | sed 's/\.png$//' >"$W/acc/mfnet/test.txt"
                       step accuracy 0 python -m benchmarks.accuracy $CKPT --data "$W/acc/mfnet" --backend torch,onnxruntime \
                           --precision fp32,int8 --work-dir "$W/acc/work" --json "$W/acc/accuracy.json" ;;
    kernels_aot)       rm -rf "$W/aot" "$W/triton-cache"
                       TRITON_CACHE_DIR="$W/triton-cache" step kernels_aot 1 python -m kernels.aot --arch 87 --dtype fp32,fp16 \
                           --groups 16,32 --jobs 2 --out "$W/aot" ;;
    *) echo "unknown step: $1" >&2; return 2 ;;
    esac
}

STEPS=${*:-demo export_onnx export_onnx_fused export_onnx_uint8 quantize_dynamic quantize_static simcmf_checkpoint
           simcmf_export simcmf_export_separately runtime_onnx runtime_torch runtime_batch latency accuracy kernels_aot}
uptime; free -g
for s in $STEPS; do run "$s"; done
