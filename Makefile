# mlcycle: `make help` lists the targets. Everything runs in the project virtualenv
# ($(VENV)), made on first use: nothing is installed into the system Python.
ROOT := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
PYTHON ?= python3
VENV ?= $(ROOT).venv
PY := $(VENV)/bin/python
MLCYCLE := $(PY) -m mlcycle.cli
ROWS ?= 1000
EXTRAS ?= etl,train,serve,stream,dask,boost,dev
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.DEFAULT_GOAL := help
.PHONY: help venv install setup run all etl preprocess train promote rollback inference serve monitor stream publish kafka-start kafka-stop \
        test test-unit test-local test-tools lint docs lint-tools lint-deploy image image-smoke up down check-env \
        demo-data ferretdb ferretdb-start ferretdb-stop benchmark benchmark-serve benchmark-monitor benchmark-stream benchmark-scale benchmark-train benchmark-install benchmark-page simulate-year clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): $(ROOT)pyproject.toml $(ROOT)constraints.txt
	@bash $(ROOT)scripts/venv.sh "$(PYTHON)" "$(VENV)" "$(EXTRAS)"
	@touch $@

venv install: $(STAMP) ## Make .venv and install mlcycle with its extras (pinned by constraints.txt)

setup: install ## install + .env from .env.example + demo data, only if data/raw holds no data file
	@test -f .env || cp $(ROOT).env.example .env
	@$(MLCYCLE) demo-data --rows $(ROWS) --if-empty

run: setup all inference ## The whole pipeline on the embedded default: setup, etl, train, then serve

all: etl train ## etl then train

demo-data: install ## Write a synthetic loan table to data/raw (ROWS=1000)
	$(MLCYCLE) demo-data --rows $(ROWS)

etl: install ## Extract, validate and load data/raw into the store
	$(MLCYCLE) etl

preprocess: install ## Pull the newest labelled snapshot from the store and print its profile
	$(MLCYCLE) preprocess

train: install ## Train, evaluate, log to MLflow, register; promote if the quality gate passes
	$(MLCYCLE) train

promote: install ## Point the champion alias at VERSION (make promote VERSION=3 REASON="...")
	$(MLCYCLE) promote $(VERSION) $(if $(REASON),--force --reason "$(REASON)")

rollback: install ## Point the champion alias back at the previous champion
	$(MLCYCLE) rollback

monitor: install ## Drift and realized performance of the served model (SINCE=24h, HTML=monitoring.html, RETRAIN=1)
	$(MLCYCLE) monitor $(if $(SINCE),--since $(SINCE)) $(if $(HTML),--html $(HTML)) $(if $(RETRAIN),--retrain)

inference serve: install ## Serve the champion model over HTTP (POST /predict)
	$(MLCYCLE) serve

check-env: install ## Check settings, store, MLflow and dependencies
	$(MLCYCLE) doctor

stream: install ## Consume the Kafka topic into the store (TOPIC=, KAFKA_BOOTSTRAP_SERVERS=; SIGTERM/Ctrl-C stops)
	$(MLCYCLE) stream $(if $(TOPIC),--topic $(TOPIC))

publish: install ## Send a file's records to the topic (make publish FILE=data/raw/loan.csv TOPIC=)
	$(MLCYCLE) publish $(FILE) $(if $(TOPIC),--topic $(TOPIC))

kafka-start: ## Start Apache Kafka (KRaft, official jars via Maven) on 127.0.0.1:9092
	bash $(ROOT)scripts/kafka.sh start 9092

kafka-stop: ## Stop the broker started by kafka-start
	bash $(ROOT)scripts/kafka.sh stop

ferretdb: ## Build FerretDB (MongoDB wire protocol on SQLite) once, for integration tests
	bash $(ROOT)scripts/ferretdb.sh build

ferretdb-start: ## Start FerretDB on 127.0.0.1:27018 (export MONGO_URI=mongodb://127.0.0.1:27018/)
	bash $(ROOT)scripts/ferretdb.sh start 27018

ferretdb-stop: ## Stop the FerretDB started by ferretdb-start
	bash $(ROOT)scripts/ferretdb.sh stop

test-tools: install ## Everything the tests need beside Python: FerretDB, Kafka jars, validators, Chromium
	@bash $(ROOT)scripts/ferretdb.sh build
	@bash $(ROOT)scripts/kafka.sh fetch
	@PYTHON=$(PY) bash $(ROOT)scripts/install-lint-tools.sh

PYTEST_WORKERS ?= 3
test: test-tools ## All tests, 0 skipped: real FerretDB, mlflow server, Kafka, Dask, uvicorn, Chromium
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=20

test-unit: install ## The fast loop: unit tests that need nothing beside Python and are not slow (under a minute)
	$(PY) -m pytest -m "not server and not integration and not e2e and not slow" -n auto -q

test-local: install ## Every test that needs no server (also the integration, e2e and slow ones that run in-process)
	$(PY) -m pytest -m "not server" -n auto -q

lint: install docs ## ruff + mypy + the docs site (mkdocs build --strict)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m mypy

docs: install ## Build the documentation site into site/ (mkdocs-material, --strict)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -q

lint-tools: install ## Install the offline validators for lint-deploy (PyPI, Go, npm, Debian)
	PYTHON=$(PY) bash $(ROOT)scripts/install-lint-tools.sh

lint-deploy: lint-tools ## Validate Dockerfile, compose, Kubernetes overlays, workflows and /metrics offline
	PYTHON=$(PY) PATH="$(abspath $(VENV))/bin:$$PATH" bash $(ROOT)scripts/lint-deploy.sh

image: install ## Build the serve and pipeline images here with podman (offline, from a wheelhouse)
	PYTHON=$(PY) bash $(ROOT)scripts/image.sh build

image-smoke: install ## Build the images, run the serving container and get a prediction from it
	PYTHON=$(PY) bash $(ROOT)scripts/image.sh smoke

up: ## docker compose: MongoDB, MLflow, etl -> train -> serve (needs a Docker engine and .env)
	docker compose -f deploy/compose.yaml --env-file .env up -d --build

down: ## Stop the compose stack (volumes are kept)
	docker compose -f deploy/compose.yaml --env-file .env down

benchmark: install ## Print the ETL benchmark table (1,000,000 rows; takes minutes); each benchmark saves benchmarks/results/<name>.json
	$(PY) benchmarks/etl.py

benchmark-serve: install ## Print the serving benchmark table (needs wrk)
	$(PY) benchmarks/serve.py

benchmark-stream: install ## Print the streaming benchmark (1,000,000 records through a real Kafka broker)
	@bash $(ROOT)scripts/ferretdb.sh build
	@bash $(ROOT)scripts/kafka.sh fetch
	$(PY) benchmarks/stream.py

benchmark-scale: install ## Print the scale-out benchmark (5,000,000 rows: ETL and 5-fold CV, local vs Dask)
	$(PY) benchmarks/scale.py

benchmark-monitor: install ## Print the monitoring benchmark (1,000,000 logged predictions)
	$(PY) benchmarks/monitor.py

benchmark-train: install ## Print each model kind's scores on the loan table and its ONNX parity
	$(PY) benchmarks/train.py

benchmark-install: install ## Time `make install` from empty package caches, with uv and with pip alone
	$(PY) benchmarks/install.py

simulate-year: install ## Play a drifting year through the real commands; prints the timeline, draws docs/img/year.png
	$(PY) benchmarks/year.py

benchmark-page: install ## Render docs/benchmarks.md from what the benchmarks saved (benchmarks/results)
	$(PY) benchmarks/render.py

clean: ## Remove caches, build output and local data (data/, mlruns/); keeps .venv and the FerretDB build
	rm -rf data mlruns mlartifacts build dist .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
