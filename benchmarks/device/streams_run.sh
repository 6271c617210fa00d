#!/usr/bin/env bash
# Many streams per GPU (issue 17): official sizes, 1080p, causal LART, paced 30 fps sources, the real
# detector ONNX timed in the detect stage. Run from the repo root with $OUT set, wheels in .whl and the
# detector in .carry/ (as run_device.sh). Each part stays under 4 minutes.
#   nvidia-h200:     bash benchmarks/device/streams_run.sh many     # ONE call, < 9 min: 8 streams x 5 people with
#                      --inflight 1 and 2 (per-tick stage and lift-part times), the largest stream count for 5
#                      people (inflight 2, from 8 up), then 1 and 10 people as far as the time goes
#                    bash benchmarks/device/streams_run.sh many3    # ONE call, < 5 min: 8 streams x 5 people with
#                      --inflight 2 and 3 (frames uploaded once per tick, shared by detector and lifter), then the
#                      largest stream count for 5 people with the better of the two, from 5 (max 10)
#                    bash benchmarks/device/streams_run.sh one8     # 8 streams x 5 people (the target point)
#                    bash benchmarks/device/streams_run.sh one8-nodet  # the same without the detector (it runs per
#                                                                      frame, not batched: what it costs per stream)
#                    bash benchmarks/device/streams_run.sh sweep1   # largest stream count, 1 person/stream
#                    bash benchmarks/device/streams_run.sh sweep5   # ... 5 people/stream
#                    bash benchmarks/device/streams_run.sh sweep10  # ... 10 people/stream
#   nvidia-h200-x2:  bash benchmarks/device/streams_run.sh two16    # 16 streams x 5 people on --gpus 0,1
#                    bash benchmarks/device/streams_run.sh sweep5x2 # largest count on two GPUs, one address
#   anywhere:        bash benchmarks/device/streams_run.sh cpu-smoke
set -uo pipefail
export PYTHONUNBUFFERED=1
if [ "${1:-}" != cpu-smoke ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
fi
mkdir -p /tmp/ns && ln -sfn "$PWD" /tmp/ns/lart_stream
export PYTHONPATH=/tmp/ns:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
DET=.carry/yolov8_fall.onnx
[ -f "$DET" ] && DETARGS=(--detector "$DET" --person-classes 0,1) || DETARGS=(--detector none)
COMMON=(--model-size official --size 1920x1080 --mode causal --rate 30 --source tests/data/pedestrians.mp4 "${DETARGS[@]}")
bench() { timeout "${LIMIT:-235}" python3 -m lart_stream.realtime.cli bench "$@" 2>&1 | tee -a "$OUT/streams.log" |
          grep -v "^WARNING\|^=\+$\|RANDOM\|meaningless\|UserWarning\|normalised"; }
case "${1:-one8}" in
  many)     nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
            LIMIT=320 bench --streams 8 --people 5 --inflight 1,2 --lift-parts --streams-first --sweep 5 \
              --sweep-start 8 --sweep-max 16 --frames 150 "${COMMON[@]}" --out "$OUT/h200/many5"
            LIMIT=190 bench --streams 1 --inflight 2 --lift-parts --sweep 10,1 --sweep-start 4 --sweep-max 32 \
              --frames 120 --warmup 10 "${COMMON[@]}" --out "$OUT/h200/many1-10" ;;
  many3)    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
            LIMIT=285 bench --streams 8 --people 5 --inflight 2,3 --lift-parts --streams-first --sweep 5 \
              --sweep-start 5 --sweep-max 10 --frames 120 --warmup 10 "${COMMON[@]}" --out "$OUT/h200/many3" ;;
  one8)     nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
            bench --streams 8 --people 5 --frames 300 "${COMMON[@]}" --out "$OUT/h200/streams8x5" ;;
  one8-nodet) bench --streams 8 --people 5 --frames 300 "${COMMON[@]}" --detector none --out "$OUT/h200/streams8x5-nodet" ;;
  sweep1)   bench --streams 1 --sweep 1 --sweep-start 8 --sweep-max 64 --frames 150 "${COMMON[@]}" --out "$OUT/h200/sweep1" ;;
  sweep5)   bench --streams 1 --sweep 5 --sweep-start 4 --sweep-max 32 --frames 150 "${COMMON[@]}" --out "$OUT/h200/sweep5" ;;
  sweep10)  bench --streams 1 --sweep 10 --sweep-start 2 --sweep-max 16 --frames 150 "${COMMON[@]}" --out "$OUT/h200/sweep10" ;;
  two16)    nvidia-smi --query-gpu=name --format=csv,noheader
            bench --streams 16 --people 5 --frames 300 --gpus 0,1 "${COMMON[@]}" --out "$OUT/h200-x2/streams16x5" ;;
  sweep5x2) bench --streams 1 --sweep 5 --sweep-start 8 --sweep-max 64 --frames 150 --gpus 0,1 "${COMMON[@]}" \
              --out "$OUT/h200-x2/sweep5" ;;
  cpu-smoke) bench --streams 2 --people 2 --rate 10 --frames 10 --warmup 2 --size 320x240 --model-size tiny \
              --detector none --inflight 1,2,3 --lift-parts --out "$OUT/cpu-smoke" &&
             bench --streams 2 --people 1 --rate 10 --frames 8 --warmup 2 --size 160x120 --model-size tiny \
              --detector none --inflight 2,3 --sweep 1 --sweep-start 2 --sweep-max 2 --streams-first \
              --out "$OUT/cpu-smoke-sweep" &&
             bench --streams 2 --people 1 --rate 5 --frames 6 --warmup 2 --size 160x120 --model-size tiny \
              --detector none --gpus cpu,cpu --out "$OUT/cpu-smoke-x2" ;;
  *) echo "unknown part $1" >&2; exit 2 ;;
esac
