# `make demo`: set everything up and run the main job on the embedded default.
# `make test`: set everything up, lint (ruff, configured in pyproject.toml) and run the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_CONFIG := scripts/demo.toml

.PHONY: setup demo test bench quality clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, as the local CPU wheel: a bare `torch` requirement pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/python benchmarks/corpora.py cwe data/cwe.jsonl
	rm -rf data/demo-index
	$(BIN)/vecguard index --config $(DEMO_CONFIG) data/cwe.jsonl
	@echo; echo '== a question of meaning: "a cookie that client-side javascript can read"'
	$(BIN)/vecguard search --config $(DEMO_CONFIG) "a cookie that client-side javascript can read" -k 5
	@echo; echo '== an exact identifier: "CVE-2014-3852"'
	$(BIN)/vecguard search --config $(DEMO_CONFIG) "CVE-2014-3852" -k 5
	@echo; $(BIN)/vecguard check --config $(DEMO_CONFIG)

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# Two workers, one test file each at a time (module fixtures build once): 8.8 min instead of 13.8 on 2 cores,
	# where one worker used 1.1 cores on average (subprocesses, servers and waits).
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: setup
	$(BIN)/python benchmarks/ingest_speed.py

quality: setup
	$(BIN)/python -m pip install --quiet -e '.[all,test,bench]'
	$(BIN)/python benchmarks/quality.py --backends faiss qdrant chroma $${QDRANT_URL:+qdrant-server}
	$(BIN)/python benchmarks/plots.py

clean:
	rm -rf $(VENV) data build *.egg-info
