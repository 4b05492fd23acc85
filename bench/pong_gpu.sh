#!/usr/bin/env bash
# Atari Pong on one machine with a GPU and 16 cores, inside one 10-minute device call (issue 19):
#   bash bench/pong_gpu.sh [OUT_DIR]          # OUT_DIR: default $OUT, else ./pong-gpu-out
#   SMOKE=1 bash bench/pong_gpu.sh /tmp/pong  # the same steps on CPU with tiny settings, ~90 s
# Needs only the project's requirements (pip install -r requirements.txt -r requirements-envs.txt);
# if ale-py or OpenCV is missing it tries that install once, within INSTALL_S seconds.
# 1. the CUDA learner tests (tests/test_learner.py -k cuda), at most TESTS_S seconds;
# 2. `launch.py --preset atari-pong` with the learner on the GPU (torch.compile and bf16 where the
#    GPU has it: --compile auto, --precision auto) and 12 actors on the other cores, for what is
#    left of BUDGET_S after the tests, less FINISH_S for the end (the last greedy evaluation,
#    export, plot) and START_S for Ray and the first chunk;
# 3. bench/run_report.py: env frames/s, learner updates/s, the greedy evaluations.
# Writes to OUT_DIR: machine.txt, pytest.txt, launch.txt, summary.json, learning_curve.png,
# metrics.jsonl, report.json; prints the report at the end.
#
# Settings beyond the preset (flags here, not preset changes: nothing of them is measured on a GPU
# yet). bench/throughput.py on the 2-core machine (docs/benchmarks.md, 2026-12-02) measured one
# Pong actor (8 envs, its conv inference on its own core) at ~45-55% of ALE's ~1,000 agent
# steps/s per core, and the replay shards decoding 0.6 MB sequences as a real cost, so 12 actors
# (16 cores less the learner, 2 shards and the driver with its evaluations) give ~6k agent
# steps/s. At the preset's replay ratio of 3.2 sampled sequences per inserted one (stride 10),
# a batch of 32 would need ~60 updates/s, more than a launch-bound compiled update of that size
# gives (H100: ~11 ms an update at B = 64 for CartPole), so the batch goes to 128 (the same ratio:
# 4x fewer, 4x larger updates, ~15 a second), and replay to 20,000 sequences over 2 shards
# (~12 GB of frames, ~200k agent steps, ~30 s of play) so that it is not only the last 5 s.
# Evaluations: from the start (the preset waits for a training return of 15), 4 greedy episodes
# every 400k agent steps, 8 at the end, 2 sampled.
set -u
out=${1:-${OUT:-pong-gpu-out}}
py=${PYTHON:-python3}
budget=${BUDGET_S:-570}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
start=$SECONDS

if [ -n "${SMOKE:-}" ]; then
    budget=${BUDGET_S:-85}; finish_s=${FINISH_S:-20}; start_s=${START_S:-15}
    run_flags=(--device cpu --num-cpus 2 --num-actors 1 --envs-per-actor 2 --batch-size 8 --min-replay 8
               --replay-capacity 200 --num-replay-shards 1 --starts-per-sequence 2 --eval-every-env-steps 1500 --eval-screen-episodes 1
               --eval-episodes 1 --sampled-eval-episodes 1 --eval-min-train-return -21 --checkpoint-every-s 1000)
else
    finish_s=${FINISH_S:-100}; start_s=${START_S:-25}
    run_flags=(--device cuda --compile auto --precision auto --num-actors 12 --batch-size 128
               --replay-capacity 20000 --num-replay-shards 2 --eval-every-env-steps 400000
               --eval-screen-episodes 4 --eval-episodes 8 --sampled-eval-episodes 2 --eval-min-train-return -21)
fi

{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; echo "cores: $(nproc)"; uptime
  $py -c "import torch, ray, gymnasium; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ray', ray.__version__, 'gymnasium', gymnasium.__version__)"
} 2>&1 | tee "$out/machine.txt"
if ! $py -c "import ale_py, cv2" 2>/dev/null; then
    echo "== ale-py or OpenCV missing: pip install -r requirements.txt -r requirements-envs.txt"
    timeout "${INSTALL_S:-120}" $py -m pip install -q -r requirements.txt -r requirements-envs.txt \
        || { echo "pong_gpu.sh: the install failed; install requirements-envs.txt first" >&2; exit 2; }
fi

echo "== 1. CUDA learner tests"
if [ -n "${SMOKE:-}" ]; then
    echo "skipped (SMOKE)" | tee "$out/pytest.txt"
else
    timeout "${TESTS_S:-80}" $py -m pytest -q -rs tests/test_learner.py -k cuda 2>&1 | tail -8 | tee "$out/pytest.txt"
fi

run_s=$(( budget - (SECONDS - start) - finish_s - start_s ))
if [ "$run_s" -lt 10 ]; then
    echo "pong_gpu.sh: only ${run_s} s left for the run (BUDGET_S=$budget); allowed: a budget that leaves >= 10 s" >&2
    exit 2
fi
echo "== 2. atari-pong for ${run_s} s (${run_flags[*]})"
run_root=$(mktemp -d)
timeout $(( run_s + finish_s + start_s + 20 )) $py launch.py --preset atari-pong --no-dashboard \
    --max-seconds "$run_s" --run-root "$run_root" --run-name pong "${run_flags[@]}" > "$out/launch.txt" 2>&1
status=$?
echo "launch.py exit $status"; tail -6 "$out/launch.txt"
cp "$run_root/pong/summary.json" "$run_root/pong/learning_curve.png" "$run_root/pong/metrics.jsonl" "$out/" 2>/dev/null

echo "== 3. report"
$py -m bench.run_report "$run_root/pong" --out "$out/report.json"
report_status=$?
rm -rf "$run_root"
echo "pong_gpu.sh: ${SECONDS}s in all; files in $out"
[ "$status" -eq 0 ] && [ "$report_status" -eq 0 ]
