# beam-phash: the two commands of the quick start are `make test` and `make run`.
# Everything is installed into .venv at the repo root; nothing outside it is needed but
# python3 (>= 3.11), a Rust toolchain (cargo) and a C compiler.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export PYTHONDONTWRITEBYTECODE := 1
# The maturin build backend runs the `maturin` binary from PATH.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: test run install build cargo-test pytest bench wheel flink-job-server clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Installs the Python dependencies (once per change of pyproject.toml) ...
$(VENV)/.deps: pyproject.toml | $(PY)
	$(PIP) install -q "maturin>=1.7,<2"
	$(PIP) install -q -e '.[test]'
	touch $@

# ... and rebuilds the Rust extension (incremental) every time, so edits are never stale.
build: $(VENV)/.deps
	$(PIP) install -q --no-build-isolation --no-deps -e .

install: build

cargo-test:
	cargo test --workspace

pytest: build
	$(PY) -m pytest

test: cargo-test pytest

run: build
	$(PY) -m pipelines.dedup_images --output out/dedup

bench: build
	$(PY) benchmarks/bench_hash.py tests/data

wheel: $(VENV)/.deps
	$(VENV)/bin/maturin build --release --out dist

# Beam's portable Flink job server, assembled by Maven from Maven Central (see its pom.xml).
flink-job-server:
	mvn -B -q -f deploy/flink-job-server/pom.xml package

clean:
	rm -rf $(VENV) target dist build beam_phash/*.so deploy/flink-job-server/target
