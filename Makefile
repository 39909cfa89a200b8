# mlcycle: `make help` lists the targets.
PYTHON ?= python3
MLCYCLE ?= $(PYTHON) -m mlcycle.cli
PIP_FLAGS ?= -q
ROWS ?= 1000

.DEFAULT_GOAL := help
.PHONY: help install setup run all etl preprocess train promote rollback inference serve \
        test test-unit lint lint-tools lint-deploy image image-smoke up down check-env demo-data ferretdb \
        ferretdb-start ferretdb-stop benchmark benchmark-serve clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

install: ## Install mlcycle with training, serving and dev extras (pinned by constraints.txt)
	$(PYTHON) -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[etl,train,serve,dev]"

setup: install ## install + .env from .env.example + synthetic demo data if data/raw is empty
	@test -f .env || cp .env.example .env
	@ls data/raw/*.csv data/raw/*.json* data/raw/*.parquet >/dev/null 2>&1 || $(MLCYCLE) demo-data --rows $(ROWS)

run: setup all inference ## The whole pipeline on the embedded default: setup, etl, train, then serve

all: etl train ## etl then train

demo-data: ## Write a synthetic loan table to data/raw (ROWS=1000)
	$(MLCYCLE) demo-data --rows $(ROWS)

etl: ## Extract, validate and load data/raw into the store
	$(MLCYCLE) etl

preprocess: ## Pull the newest labelled snapshot from the store and print its profile
	$(MLCYCLE) preprocess

train: ## Train, evaluate, log to MLflow, register; promote if the quality gate passes
	$(MLCYCLE) train

promote: ## Point the champion alias at VERSION (make promote VERSION=3)
	$(MLCYCLE) promote $(VERSION)

rollback: ## Point the champion alias back at the previous champion
	$(MLCYCLE) rollback

inference serve: ## Serve the champion model over HTTP (POST /predict)
	$(MLCYCLE) serve

check-env: ## Check settings, store, MLflow and dependencies
	$(MLCYCLE) doctor

ferretdb: ## Build FerretDB (MongoDB wire protocol on SQLite) once, for integration tests
	bash scripts/ferretdb.sh build

ferretdb-start: ## Start FerretDB on 127.0.0.1:27018 (export MONGO_URI=mongodb://127.0.0.1:27018/)
	bash scripts/ferretdb.sh start 27018

ferretdb-stop: ## Stop the FerretDB started by ferretdb-start
	bash scripts/ferretdb.sh stop

test: ## All tests: unit, integration (real FerretDB, mlflow server, uvicorn) and e2e
	$(PYTHON) -m pytest

test-unit: ## Fast tests only
	$(PYTHON) -m pytest tests/unit

lint: ## ruff + mypy
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m ruff format --check src tests benchmarks
	$(PYTHON) -m mypy

lint-tools: ## Install the offline validators for lint-deploy (PyPI, Go, npm, Debian)
	bash scripts/install-lint-tools.sh

lint-deploy: ## Validate Dockerfile, compose, Kubernetes overlays, workflows and /metrics offline
	bash scripts/lint-deploy.sh

image: ## Build the serve and pipeline images here with podman (offline, from a wheelhouse)
	bash scripts/image.sh build

image-smoke: ## Build the images, run the serving container and get a prediction from it
	bash scripts/image.sh smoke

up: ## docker compose: MongoDB, MLflow, etl -> train -> serve (needs a Docker engine and .env)
	docker compose -f deploy/compose.yaml --env-file .env up -d --build

down: ## Stop the compose stack (volumes are kept)
	docker compose -f deploy/compose.yaml --env-file .env down

benchmark: ## Print the ETL benchmark table (1,000,000 rows; takes minutes)
	$(PYTHON) benchmarks/etl.py

benchmark-serve: ## Print the serving benchmark table (needs wrk)
	$(PYTHON) benchmarks/serve.py

clean: ## Remove caches, build output and local data (data/, mlruns/); keeps the FerretDB build
	rm -rf data mlruns mlartifacts build dist .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
