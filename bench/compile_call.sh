#!/usr/bin/env bash
# One GPU call for issue 19's torch.compile rows not measured on 2026-12-08: DPO, full fine-tuning, QLoRA's memory.
# usage (on the GPU machine, after the wheel install line): bash bench/compile_call.sh OUT SECONDS
out=$1; total=${2:-400}; start=$(date +%s)
left() { echo $((total - $(date +%s) + start)); }
export THROUGHPUT_STEPS=8 THROUGHPUT_RUN_TIMEOUT_S=150
run() { timeout "$(left)" python3 bench/throughput.py run --out "$out" --budget-s "$1" "${@:2}" 2>&1 | grep '^{\|budget' | cut -c1-300; }
run 60 --models qwen3-8b --only qwen3-8b:sft:qlora --ways app_ckpt_compile
[ "$(left)" -gt 100 ] && run 10 --models qwen3-0.6b --only qwen3-0.6b:dpo:lora --ways app_ckpt_compile_hf
[ "$(left)" -gt 100 ] && run 10 --models 1b --only 1b:sft:full:2048 --ways app_ckpt_compile_hf
# QLoRA compiled took 17.9 GiB against 9.3 eager on 2026-12-08; if it still does, measure bitsandbytes out of the graph
python3 -c "import json,sys; r=[json.loads(l) for l in open('$out/throughput.jsonl') if 'qwen3-8b' in l][-1]; sys.exit(r['nvml_peak_gib'] < 12)" \
  && [ "$(left)" -gt 100 ] && run 10 --models qwen3-8b --only qwen3-8b:sft:qlora --ways app_ckpt_compile_eager4
for f in /tmp/tw_tp/*/*compile*/stderr; do echo "== $f"; grep -v -i warn "$f" | tail -12; done > "$out/compile_stderr.txt" 2>&1
