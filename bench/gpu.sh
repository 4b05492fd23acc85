#!/usr/bin/env bash
# The GPU checks in one go, for a machine with a CUDA device (CI has none):
#   bash bench/gpu.sh OUT_DIR
# 1. the CUDA learner tests (tests/test_learner.py -k cuda; they skip without a GPU);
# 2. bench/throughput.py with the learner on CPU and CUDA (eager and torch.compile) at several batch
#    sizes, and 1/2/4/8 actors on Ray (THROUGHPUT_ARGS replaces these options);
# 3. the default CartPole run (`python launch.py`) with the learner on the GPU.
# Writes at most 8 files to OUT_DIR: the logs, the throughput JSON, the run's summary and learning curve.
set -u
out=${1:-gpu-out}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ nvidia-smi -L; nproc; $py -c "import torch, ray, gymnasium; print(torch.__version__, ray.__version__, gymnasium.__version__)"; } 2>&1 | tee "$out/machine.txt"
echo "== 1. CUDA learner tests"
timeout 180 $py -m pytest -q -rs tests/test_learner.py -k cuda 2>&1 | tee "$out/pytest.txt"
echo "== 2. throughput"
timeout 300 $py -m bench.throughput --seconds 4 --device cuda --out "$out/throughput-gpu.json" \
    ${THROUGHPUT_ARGS:---actors 1 2 4 8 --learner-batch-sizes 64 256 1024 4096 --learner-compile off on} \
    2>&1 | tee "$out/throughput.txt"
echo "== 3. default run, learner on the GPU"
run_root=$(mktemp -d)
timeout 240 $py launch.py --device cuda --no-dashboard --max-seconds ${LAUNCH_SECONDS:-180} --run-root "$run_root" --run-name gpu \
    > "$out/launch.txt" 2>&1
echo "launch.py exit $?"; tail -25 "$out/launch.txt"
cp "$run_root/gpu/summary.json" "$run_root/gpu/learning_curve.png" "$out/" 2>/dev/null
