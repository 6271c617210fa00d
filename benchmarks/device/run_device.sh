#!/usr/bin/env bash
# The GPU benchmark runs, as made through the device tool (repo root, $OUT set, wheels in .whl,
# the detector ONNX in .carry/). Usage: bash benchmarks/device/run_device.sh PART  (micro | bench | sweeps | mvit | appearance | appearance-bench | appearance-paced)
# Nothing is pip-installed there: the repo is put on the path as the lart_stream namespace by a link.
# PART mvit / mvitspeed: the MViTv2-L appearance backbone (benchmarks/device/mvit_timing.py / mvit_speed.py), no wheels or carry.
set -uo pipefail
export PYTHONUNBUFFERED=1
if [ "${1:-micro}" != mvit ] && [ "${1:-micro}" != mvitspeed ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
fi
mkdir -p /tmp/ns && ln -sfn "$PWD" /tmp/ns/lart_stream
export PYTHONPATH=/tmp/ns:/tmp/site
DET=.carry/yolov8_fall.onnx
COMMON=(--model-size official --detector "$DET" --person-classes 0,1 --source tests/data/pedestrians.mp4 --size 1920x1080)
quiet() { grep -v "^WARNING\|^=\+$\|RANDOM\|meaningless\|UserWarning\|x = x\[pos_axes"; }
case "${1:-micro}" in
  micro)
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    timeout 200 python3 benchmarks/device/hmr2_timing.py --out "$OUT/hmr2_timing.json" 2>&1 | tee "$OUT/hmr2.log" | quiet | tail -45
    timeout 280 python3 benchmarks/device/lart_timing.py --out "$OUT/lart_timing.json" 2>&1 | tee "$OUT/lart.log" | quiet | grep -i "stage\|wrote" ;;
  bench)
    timeout 560 python3 -m lart_stream.realtime.cli bench "${COMMON[@]}" --sweep people,overlap,baselines --frames 150 --warmup 20 \
      --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log" | quiet | tail -40 ;;
  mvit)
    timeout 290 python3 benchmarks/device/mvit_timing.py --out "$OUT/mvit_timing.json" 2>&1 | tee "$OUT/mvit.log" | tail -60 ;;
  mvitspeed)
    timeout 250 python3 benchmarks/device/mvit_speed.py --out "$OUT/mvit_speed.json" 2>&1 | tee "$OUT/mvit_speed.log" | tail -60 ;;
  appearance)
    timeout 290 python3 benchmarks/device/appearance_stage.py --out "$OUT/appearance_stage.json" 2>&1 \
      | tee "$OUT/appearance.log" | quiet | tail -20 ;;
  appearance-bench)  # end to end at 5 people: the MViTv2-L stage off / on (K = 6) / on in 4 slices
    timeout 235 python3 -m lart_stream.realtime.cli bench "${COMMON[@]}" --people 5 --sweep appearance \
      --appearance-size official --appearance-every 6 --frames 150 --warmup 20 --out "$OUT/appearance_bench" 2>&1 \
      | tee "$OUT/appearance_bench.log" | quiet | tail -30 ;;
  appearance-paced)  # a 30 fps camera, 5 people: the MViTv2-L stage off / on (K = 6) / on in 4 slices
    timeout 200 python3 -m lart_stream.realtime.cli bench "${COMMON[@]}" --people 5 --sweep appearance --rate 30 \
      --appearance-size official --appearance-every 6 --frames 240 --warmup 30 --out "$OUT/appearance_paced" 2>&1 \
      | tee "$OUT/appearance_paced.log" | quiet | tail -30 ;;
  sweeps)
    timeout 560 python3 -m lart_stream.realtime.cli bench "${COMMON[@]}" --sweep window,backend,size --frames 100 --warmup 15 \
      --out "$OUT/sweeps" 2>&1 | tee "$OUT/sweeps.log" | quiet | tail -40 ;;
esac
