#!/usr/bin/env bash
# Prove the GPU path on a CUDA machine in a few minutes (under 8 on one A100/H100): one
# PASS, FAIL or SKIP line per check, with its figures.
#
#   bash bench/gpu_check.sh                 # data from ../shared/data
#   bash bench/gpu_check.sh /path/to/data   # a folder holding fawiki/fawiki-sample-pages-articles.xml.bz2
#                                           # and fawiki/fawiki-bio-paragraphs.jsonl
#
#   (a) the CUDA tests: pytest -m cuda tests/test_cuda.py (bf16 against the CPU's fp32, KV cache, eval)
#   (b) 50 steps of train.py with torch.compile on a small config: the loss falls; tokens/s, MFU
#   (c) bench/bench_train.py at GPT-2-small shapes: tokens/s, MFU (measured and datasheet peak)
#   (d) resuming on CUDA: 20 steps straight = 10 steps, then 10 more from the checkpoint
#   (e) torchrun with two processes on two GPUs (SKIP with fewer)
#   (f) sample.py and eval.py on CUDA; eval's cross-entropy in bf16 matches the CPU's fp32
#
# Everything it writes goes to a temporary folder, removed at exit (compiler caches included).
# Exit status: 0 when no check failed (a machine without a GPU skips them all), 1 otherwise.

set -u
DATA=${1:-$(dirname "$0")/../../shared/data}
case $DATA in /*) ;; *) DATA=$PWD/$DATA ;; esac  # the argument is relative to where it was typed
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
export TORCHINDUCTOR_CACHE_DIR=$TMP/cache/inductor TRITON_HOME=$TMP/cache TRITON_CACHE_DIR=$TMP/cache/triton
export CUDA_CACHE_PATH=$TMP/cache/nv PYTORCH_KERNEL_CACHE_PATH=$TMP/cache/torch XDG_CACHE_HOME=$TMP/cache
FAILED=0

report() {  # report STATUS NAME DETAIL
    printf '%-4s %-32s %s\n' "$1" "$2" "$3"
    if [ "$1" = FAIL ]; then FAILED=1; fi
}

fail_with_log() {  # fail_with_log NAME LOGFILE: FAIL with the log's last lines below it
    report FAIL "$1" "(last lines of its output follow)"
    tail -n 15 "$2" | sed 's/^/     | /'
}

run() {  # run SECONDS LOGFILE COMMAND...: run with a time limit, output to LOGFILE
    local limit=$1 log=$2
    shift 2
    timeout "$limit" "$@" >"$log" 2>&1
}

SMALL=(config/fawiki_small.py "--data_dir=$TMP/data" --device=cuda --max_minutes=0 --log_interval=5)

GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null)
if [ -z "$GPUS" ] || [ "$GPUS" = 0 ]; then
    reason="no CUDA GPU: torch.cuda.is_available() is False here (torch $("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null))"
    for name in "(a) pytest -m cuda" "(b) train 50 steps, compile" "(c) bench_train GPT-2 small" \
                "(d) resume equality" "(e) torchrun, 2 GPUs" "(f) sample.py and eval.py"; do
        report SKIP "$name" "$reason"
    done
    exit 0
fi
echo "GPU: $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0), "x", torch.cuda.device_count(), "| torch", torch.__version__)')"

# (a) the CUDA tests
if run 240 "$TMP/a.log" "$PYTHON" -m pytest -q -p no:cacheprovider --basetemp="$TMP/pytest" -m cuda tests/test_cuda.py; then
    report PASS "(a) pytest -m cuda" "$(tail -n 1 "$TMP/a.log")"
else
    fail_with_log "(a) pytest -m cuda" "$TMP/a.log"
fi

# (c) needs no data: random tokens at GPT-2-small shapes, through the real train.py loop
if run 240 "$TMP/c.log" "$PYTHON" bench/bench_train.py --device=cuda --n_layer=12 --n_head=12 --n_embd=768 \
        --block_size=1024 --batch_size=16 --vocab_size=32768 --steps=10 --warmup_steps=3 \
        --compile_modes="[True]" --results_dir="$TMP/bench"; then
    report PASS "(c) bench_train GPT-2 small" "$("$PYTHON" - "$TMP/bench/throughput-cuda.json" <<'EOF'
import json, sys
row = json.load(open(sys.argv[1]))["rows"][0]
sheet = f", {100 * row['mfu_datasheet']:.1f}% of the datasheet peak" if row["mfu_datasheet"] else ""
print(f"{row['dtype']}, compile: {row['tokens_per_s']:,.0f} tokens/s, {row['step_ms']:,.0f} ms/step, "
      f"MFU {100 * row['mfu']:.1f}% of a measured {row['peak_flops'] / 1e12:,.0f} TFLOP/s{sheet}, "
      f"{row['peak_mem_mib']:,.0f} MiB")
EOF
)"
else
    fail_with_log "(c) bench_train GPT-2 small" "$TMP/c.log"
fi

# the small real data set for the rest
DUMP=$DATA/fawiki/fawiki-sample-pages-articles.xml.bz2
PARAGRAPHS=$DATA/fawiki/fawiki-bio-paragraphs.jsonl
if [ ! -f "$DUMP" ] || [ ! -f "$PARAGRAPHS" ]; then
    for name in "(b) train 50 steps, compile" "(d) resume equality" "(e) torchrun, 2 GPUs" "(f) sample.py and eval.py"; do
        report SKIP "$name" "no data: $DUMP or $PARAGRAPHS is missing (give the data folder as the argument)"
    done
    exit $FAILED
fi
if ! run 180 "$TMP/prepare.log" "$PYTHON" prepare.py "$DUMP" "$PARAGRAPHS" --out_dir="$TMP/data" --vocab_size=1024 --num_proc=4; then
    fail_with_log "prepare.py (for b, d, e, f)" "$TMP/prepare.log"
    exit 1
fi

# (b) 50 steps with torch.compile: the loss must fall
steps_summary() {  # steps_summary OUT_DIR: "first -> last loss, tokens/s, MFU" from log.jsonl; fails if the loss did not fall
    "$PYTHON" - "$1/log.jsonl" <<'EOF'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
steps = [r for r in records if "loss" in r]
first, last = steps[0], steps[-1]
sheet = f" ({100 * last['mfu_datasheet']:.1f}% of the datasheet peak)" if last.get("mfu_datasheet") else ""
print(f"{records[0]['dtype']}: loss {first['loss']:.3f} (step {first['iter']}) -> {last['loss']:.3f} "
      f"(step {last['iter']}), {last['tokens_per_s']:,.0f} tokens/s, MFU {100 * last['mfu']:.1f}%{sheet}")
sys.exit(0 if last["loss"] < first["loss"] - 0.3 else 1)
EOF
}
if run 240 "$TMP/b.log" "$PYTHON" train.py "${SMALL[@]}" --out_dir="$TMP/b" --compile=True --max_iters=50 \
        --eval_interval=50 --warmup_iters=10 && summary=$(steps_summary "$TMP/b"); then
    report PASS "(b) train 50 steps, compile" "$summary"
else
    fail_with_log "(b) train 50 steps, compile" "$TMP/b.log"
fi

summary=""
# (d) resume: the losses of steps 11-20 must match. Not bit for bit: some CUDA kernels (the
# embedding's backward) add in a varying order, so allow 0.2%.
RESUME=("${SMALL[@]}" --compile=False --dropout=0.1 --lr_decay_iters=20 --eval_interval=10
        --always_save_checkpoint=True --sample_tokens=0 --log_interval=1)
if run 120 "$TMP/d.log" "$PYTHON" train.py "${RESUME[@]}" --out_dir="$TMP/d-straight" --max_iters=20 &&
   run 120 "$TMP/d.log" "$PYTHON" train.py "${RESUME[@]}" --out_dir="$TMP/d-resumed" --max_iters=10 &&
   run 120 "$TMP/d.log" "$PYTHON" train.py "${RESUME[@]}" --out_dir="$TMP/d-resumed" --max_iters=20 --init_from=resume &&
   summary=$("$PYTHON" - "$TMP/d-straight/log.jsonl" "$TMP/d-resumed/log.jsonl" <<'EOF'
import json, sys
straight, resumed = ({r["iter"]: r["loss"] for r in map(json.loads, open(path)) if "loss" in r} for path in sys.argv[1:])
worst = max(abs(resumed[i] - straight[i]) / straight[i] for i in range(11, 21))
print(f"steps 11-20: largest relative difference {worst:.1e} (step 20: {straight[20]:.4f} straight, {resumed[20]:.4f} resumed)")
sys.exit(0 if worst < 2e-3 else 1)
EOF
); then
    report PASS "(d) resume equality" "$summary"
else
    report FAIL "(d) resume equality" "${summary:-}"
    tail -n 15 "$TMP/d.log" | sed 's/^/     | /'
fi

summary=""
# (e) two processes, DDP over nccl, compiled
if [ "$GPUS" -lt 2 ]; then
    report SKIP "(e) torchrun, 2 GPUs" "only $GPUS GPU here"
elif run 300 "$TMP/e.log" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 train.py "${SMALL[@]}" \
        --out_dir="$TMP/e" --compile=True --gradient_accumulation_steps=2 --max_iters=30 --eval_interval=30 &&
     grep -q "2 process(es)" "$TMP/e.log" && summary=$(steps_summary "$TMP/e"); then
    report PASS "(e) torchrun, 2 GPUs" "$summary"
else
    fail_with_log "(e) torchrun, 2 GPUs" "$TMP/e.log"
fi

summary=""
# (f) sample.py and eval.py on the checkpoint of (b); eval on the CPU too, in fp32
if [ ! -f "$TMP/b/ckpt.pt" ]; then
    report SKIP "(f) sample.py and eval.py" "no checkpoint: (b) failed"
elif run 120 "$TMP/f.log" "$PYTHON" sample.py --out_dir="$TMP/b" --device=cuda --start="ایران" --max_new_tokens=30 --seed=1 &&
     grep -q "ایران" "$TMP/f.log" &&
     run 120 "$TMP/f.log" "$PYTHON" eval.py --out_dir="$TMP/b" --data="$TMP/data/val.bin" --device=cuda \
        --report="$TMP/eval-cuda.json" --max_tokens=20000 --rouge_docs=2 &&
     run 120 "$TMP/f.log" "$PYTHON" eval.py --out_dir="$TMP/b" --data="$TMP/data/val.bin" --device=cpu \
        --report="$TMP/eval-cpu.json" --max_tokens=20000 --rouge_docs=0 &&
     summary=$("$PYTHON" - "$TMP/eval-cuda.json" "$TMP/eval-cpu.json" <<'EOF'
import json, sys
cuda, cpu = (json.load(open(path))["results"] for path in sys.argv[1:])
difference = abs(cuda["cross_entropy"] - cpu["cross_entropy"])
print(f"sample written; eval cross-entropy {cuda['cross_entropy']:.4f} (CUDA, bf16) vs {cpu['cross_entropy']:.4f} "
      f"(CPU, fp32), bits per byte {cuda['bits_per_byte']:.3f}")
sys.exit(0 if difference < 0.03 else 1)  # nats; the bound of tests/test_cuda.py
EOF
); then
    report PASS "(f) sample.py and eval.py" "$summary"
else
    report FAIL "(f) sample.py and eval.py" "${summary:-}"
    tail -n 15 "$TMP/f.log" | sed 's/^/     | /'
fi

exit $FAILED
