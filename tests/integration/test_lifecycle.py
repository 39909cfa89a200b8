"""A model's life over several versions, on the embedded tracking store (real MLflow, no
server): every decision measured one way, recorded with its cause, and reversible.

Each test reproduces a contradiction an operator met: the same two models judged
differently by `train` and `promote`; a retrain on unchanged data registered (and
promoted); a rollback that could only go back one step and left no record.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlcycle import decisions, registry
from mlcycle.cli import app
from mlcycle.config import Settings, get_settings
from mlcycle.datagen import generate
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store
from mlcycle.train.config import ModelConfig, TrainConfig, load_train_config
from mlcycle.train.snapshot import load_snapshot
from mlcycle.train.train import run_train
from tests.data import CONFIG_PATH, SPEC_PATH

FOREST = ModelConfig(kind="random_forest", params={"n_estimators": 30, "max_depth": 4})
BOOSTED = ModelConfig(kind="hist_gradient_boosting", params={"max_iter": 30})


@pytest.fixture
def settings() -> Settings:
    return get_settings()


@pytest.fixture
def cfg() -> TrainConfig:
    return load_train_config(CONFIG_PATH)


@pytest.fixture
def store(spec: DatasetSpec, synthetic_loan_dir: Path) -> Store:
    from mlcycle.store.embedded import EmbeddedStore

    path = get_settings().embedded_store_path
    path.parent.mkdir(parents=True, exist_ok=True)
    store = EmbeddedStore(path)
    run_etl(spec, synthetic_loan_dir, store)
    return store


def cli(*args: str) -> tuple[int, str, str]:
    extra = ["--config", str(CONFIG_PATH)] if args[0] == "promote" else []
    result = CliRunner().invoke(app, [*args, "--spec", str(SPEC_PATH), *extra])
    return result.exit_code, result.stdout, result.stderr


def kind(cfg: TrainConfig, model: ModelConfig) -> TrainConfig:
    return cfg.model_copy(update={"model": model})


def test_train_and_promote_judge_the_same_two_versions_alike(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store
) -> None:
    run_train(settings, spec, cfg, store)
    second = run_train(settings, spec, kind(cfg, FOREST), store)
    at_train = second.evaluation
    assert at_train is not None and at_train["set"]["rows"] > 0
    assert len(at_train["set"]["hash"]) == 64 and at_train["champion"]
    client = registry.connect(settings)
    if second.champion_after == second.version:  # put v1 back, then ask promote about v2
        registry.rollback(client, spec.registered_model)
    code, _, err = cli("promote", str(second.version))
    assert (code == 0) is second.decision["promote"], err
    asked = decisions.history(client, spec.registered_model)[-1]
    assert asked.by == "promote" and asked.candidate == second.version
    assert asked.action == ("promote" if second.decision["promote"] else "refuse")
    # the same rows, the same numbers for both models, the same verdict
    assert asked.evaluation is not None
    assert asked.evaluation["set"] == at_train["set"]
    assert asked.evaluation["candidate"] == at_train["candidate"]
    assert asked.evaluation["champion"] == at_train["champion"]
    assert asked.reason.endswith(second.decision["reason"])


def test_promote_refuses_what_the_gate_refused_and_records_it(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store, tmp_path: Path
) -> None:
    import yaml

    run_train(settings, spec, cfg, store)
    strict = kind(cfg, FOREST).model_copy(
        update={"gate": cfg.gate.model_copy(update={"min_lift": 0.9})}
    )
    refused_at_train = run_train(settings, spec, strict, store)
    assert refused_at_train.decision["promote"] is False
    config = tmp_path / "strict.yaml"
    config.write_text(yaml.safe_dump(strict.model_dump(mode="json")))
    result = CliRunner().invoke(
        app,
        [
            "promote",
            str(refused_at_train.version),
            "--spec",
            str(SPEC_PATH),
            "--config",
            str(config),
        ],
    )
    assert result.exit_code == 1, result.stderr
    assert "does not beat the majority-class baseline" in result.stderr
    client = registry.connect(settings)
    refused = decisions.history(client, spec.registered_model)[-1]
    assert (refused.action, refused.before, refused.after) == ("refuse", "1", "1")
    assert refused.reason == refused_at_train.decision["reason"]
    assert registry.champion(client, spec.registered_model).version == "1"


def test_a_retrain_on_unchanged_data_registers_nothing(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store
) -> None:
    first = run_train(settings, spec, cfg, store)
    again = run_train(settings, spec, cfg, store)
    assert again.skipped and f"v{first.version} is this model already" in again.skipped
    assert again.version is None and again.champion_after == first.version
    client = registry.connect(settings)
    assert [r.version for r in registry.versions(client, spec.registered_model)] == ["1"]
    skip = decisions.history(client, spec.registered_model)[-1]
    assert skip.action == "skip" and skip.before == skip.after == "1"
    # asked for, it is trained and registered, and reproduces the metrics
    forced = run_train(settings, spec, cfg, store, again=True)
    assert forced.version == "2" and forced.metrics == first.metrics
    assert forced.evaluation and forced.evaluation["champion"] == first.metrics


def test_monitor_retrain_trains_only_on_new_labelled_rows(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store, tmp_path: Path
) -> None:
    run_train(settings, spec, cfg, store)
    other = kind(cfg, FOREST)  # even another config: the rows are what a retrain needs
    skipped = run_train(settings, spec, other, store, by="monitor --retrain", new_data_only=True)
    assert skipped.skipped and skipped.skipped.startswith("no new labelled data")
    client = registry.connect(settings)
    assert decisions.history(client, spec.registered_model)[-1].by == "monitor --retrain"
    more = tmp_path / "more"
    more.mkdir()
    generate(spec, 300, seed=77).to_csv(more / "more.csv", index=False)
    run_etl(spec, more, store)
    trained = run_train(settings, spec, other, store, by="monitor --retrain", new_data_only=True)
    assert trained.skipped is None and trained.version == "2"


def test_the_hold_out_stays_put_as_rows_arrive(
    spec: DatasetSpec, cfg: TrainConfig, store: Store, tmp_path: Path
) -> None:
    before = load_snapshot(store, spec)
    held_before = {
        i for i, p in zip(before.ids, before.positions, strict=True) if p < cfg.test_size
    }
    more = tmp_path / "more"
    more.mkdir()
    generate(spec, 400, seed=78).to_csv(more / "more.csv", index=False)
    run_etl(spec, more, store)
    after = load_snapshot(store, spec)
    held_after = {i for i, p in zip(after.ids, after.positions, strict=True) if p < cfg.test_size}
    assert held_before < held_after  # every old hold-out row stays; new ones join
    new = set(after.ids) - set(before.ids)
    assert held_after - held_before <= new
    share = len(held_after) / len(after.ids)
    assert abs(share - cfg.test_size) < 0.06
    assert before.evaluation_set(0.2).hash != after.evaluation_set(0.2).hash
    again = load_snapshot(store, spec).evaluation_set(0.2)
    assert again.hash == after.evaluation_set(0.2).hash
    assert np.array_equal(again.y, after.evaluation_set(0.2).y)


def test_history_keeps_every_change_and_rollback_walks_back(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store
) -> None:
    for model in (cfg.model, FOREST, BOOSTED):
        run_train(settings, spec, kind(cfg, model), store)
    client = registry.connect(settings)
    name = spec.registered_model
    for version in ("2", "3"):  # whatever the gate said: by hand, with a reason
        if registry.champion(client, name).version != version:
            code, _, err = cli("promote", version, "--force", "--reason", f"drill {version}")
            assert code == 0, err
    assert registry.champion(client, name).version == "3"
    code, out, err = cli("rollback", "--json")
    assert code == 0, err
    assert json.loads(out) == {"champion": "2", "previous": "3", "changed": True}
    code, out, _ = cli("rollback")
    assert code == 0 and "v1 (rolled back from v2)" in out
    code, _, err = cli("rollback")
    assert code == 1 and "first champion" in err
    code, out, err = cli("rollback", "--to", "3", "--reason", "v1 was worse after all")
    assert code == 0, err
    code, _, err = cli("rollback", "--to", "99")
    assert code == 2 and "no version 99" in err
    events = decisions.history(client, name)
    moved = [e for e in events if e.moved]
    assert [(e.before, e.after) for e in moved][-3:] == [("3", "2"), ("2", "1"), ("1", "3")]
    assert all(e.reason and e.by and e.user and e.at for e in moved)
    assert moved[-1].reason == "v1 was worse after all"
    # the alias and the record agree at every step
    assert decisions.served_stack(events)[-1] == registry.champion(client, name).version
    code, out, _ = cli("models", "--json")
    listed = {v["version"]: v for v in json.loads(out)["versions"]}
    assert listed["3"]["aliases"] == ["champion"] and listed["1"]["aliases"] == []
    assert all(v["servable"] and v["eval_rows"] and v["data_hash"] for v in listed.values())
    assert {"gate", "reason", "metrics", "run_id", "rows"} <= set(listed["2"])


def test_promote_of_an_unknown_version_is_bad_input(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store
) -> None:
    run_train(settings, spec, cfg, store)
    code, _, err = cli("promote", "99")
    assert code == 2 and "no version 99" in err


def two_versions_v1_champion(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store
) -> tuple[object, str]:
    """v1 (logistic) and v2 (forest) registered, v1 the champion whatever the gate said."""
    run_train(settings, spec, cfg, store)
    run_train(settings, spec, kind(cfg, FOREST), store, again=True)
    client = registry.connect(settings)
    name = spec.registered_model
    if registry.champion(client, name).version == "2":
        registry.rollback(client, name)
    return client, name


def test_a_challenger_is_set_with_evidence_and_retired_when_it_becomes_champion(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store
) -> None:
    client, name = two_versions_v1_champion(settings, spec, cfg, store)
    code, _, err = cli("promote", "1", "--as", "challenger")
    assert code == 2 and "is the champion" in err
    code, out, err = cli("promote", "2", "--as", "challenger", "--json")
    assert code == 0, err
    assert json.loads(out)["challenger"] == "2"
    assert registry.holder(client, name, registry.CHALLENGER).version == "2"
    assert registry.champion(client, name).version == "1"  # the champion still answers
    shadow = decisions.history(client, name)[-1]
    assert (shadow.alias, shadow.before, shadow.after) == ("challenger", None, "2")
    assert shadow.evaluation and shadow.evaluation["champion"] and shadow.evaluation["set"]["rows"]
    code, _, err = cli("promote", "2", "--force", "--reason", "proven in shadow")
    assert code == 0, err
    assert registry.champion(client, name).version == "2"
    assert registry.holder(client, name, registry.CHALLENGER) is None  # never both
    dropped = decisions.history(client, name)[-1]
    assert (dropped.action, dropped.alias, dropped.before) == ("drop", "challenger", "2")
    code, _, err = cli("promote", "2", "--as", "deputy")
    assert code == 2 and "--as must be one of" in err


def test_the_challenger_policy_acts_on_live_evidence_and_records_it(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store
) -> None:
    from mlcycle.gate import GateConfig
    from mlcycle.monitor.config import ChallengerPolicy
    from mlcycle.train.promote import POLICY, challenger_policy

    client, name = two_versions_v1_champion(settings, spec, cfg, store)
    assert cli("promote", "2", "--as", "challenger")[0] == 0
    live = {"alias": "challenger", "version": "2", "paired": 400, "metric": "roc_auc"}
    worse = {**live, "verdict": "worse", "reason": "roc_auc 0.61 vs 0.70 on 400 paired rows"}
    better = {**live, "verdict": "better", "reason": "roc_auc 0.80 vs 0.70 on 400 paired rows"}

    def acting(gate: GateConfig | None = None) -> TrainConfig:
        policy = ChallengerPolicy(promote_when_better=True, drop_when_worse=True)
        monitor = cfg.monitor.model_copy(update={"challenger": policy})
        return cfg.model_copy(update={"monitor": monitor, "gate": gate or cfg.gate})

    before = len(decisions.history(client, name))
    assert challenger_policy(client, store, spec, cfg, worse) is None  # policy off: nothing
    assert challenger_policy(client, store, spec, acting(), {**worse, "version": "1"}) is None
    assert len(decisions.history(client, name)) == before  # stale evidence moves nothing
    assert challenger_policy(client, store, spec, acting(), worse) == {
        "action": "drop",
        "version": "2",
        "reason": worse["reason"],
    }
    assert registry.holder(client, name, registry.CHALLENGER) is None
    dropped = decisions.history(client, name)[-1]
    assert (dropped.action, dropped.by, dropped.before) == ("drop", POLICY, "2")
    assert dropped.evaluation == worse and dropped.reason == worse["reason"]

    assert cli("promote", "2", "--as", "challenger")[0] == 0
    strict = GateConfig(min_lift=0.99)  # no model beats the baseline by that much
    refused = challenger_policy(client, store, spec, acting(strict), better)
    assert refused is not None and refused["action"] == "refused"
    assert registry.champion(client, name).version == "1"
    said = decisions.history(client, name)[-1]
    assert (said.action, said.by, said.candidate) == ("refuse", POLICY, "2")
    assert said.evaluation and said.evaluation["live"] == better and said.evaluation["set"]
    lenient = GateConfig(tolerance=1.0)
    done = challenger_policy(client, store, spec, acting(lenient), better)
    assert done == {"action": "promote", "version": "2", "reason": better["reason"]}
    assert registry.champion(client, name).version == "2"
    assert registry.holder(client, name, registry.CHALLENGER) is None
    moved = [e for e in decisions.history(client, name) if e.alias == "champion"][-1]
    assert (moved.action, moved.by, moved.before, moved.after) == ("promote", POLICY, "1", "2")
    assert moved.reason.startswith(better["reason"]) and moved.evaluation["live"] == better
    retired = decisions.history(client, name)[-1]
    assert (retired.action, retired.alias, retired.by) == ("drop", "challenger", POLICY)


def test_the_rollback_policy_weighs_both_champions_on_the_same_matured_rows(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store
) -> None:
    from mlcycle.monitor.config import RollbackPolicy
    from mlcycle.train.promote import ROLLBACK_POLICY, rollback_policy

    client, name = two_versions_v1_champion(settings, spec, cfg, store)
    assert cli("promote", "2", "--force", "--reason", "try the forest")[0] == 0
    ids = load_snapshot(store, spec).ids
    matured = set(ids)

    def acting(margin: float) -> TrainConfig:
        policy = RollbackPolicy(enabled=True, min_matured=10, margin=margin)
        return cfg.model_copy(
            update={"monitor": cfg.monitor.model_copy(update={"rollback": policy})}
        )

    why = "realized ROC AUC 0.61 is 0.12 below validation 0.73"
    assert rollback_policy(client, store, spec, cfg, matured, why) is None  # off by default
    few = rollback_policy(client, store, spec, acting(0.0), set(ids[:5]), why)
    assert few is not None and few["action"] == "none" and "at least 10" in few["reason"]
    before = len(decisions.history(client, name))
    kept = rollback_policy(client, store, spec, acting(1.0), matured, why)
    assert kept is not None and kept["action"] == "kept", kept
    assert registry.champion(client, name).version == "2"
    assert len(decisions.history(client, name)) == before
    again = rollback_policy(client, store, spec, acting(1.0), matured, why)
    assert again is not None and (again["champion"], again["previous"]) == (
        kept["champion"],
        kept["previous"],
    )  # the same two models on the same rows: the same numbers
    done = rollback_policy(client, store, spec, acting(-1.0), matured, why)
    assert done is not None and (done["action"], done["from"], done["to"]) == ("rollback", "2", "1")
    assert done["set"] == kept["set"] and 10 <= done["set"]["rows"] < len(ids)
    assert registry.champion(client, name).version == "1"
    event = decisions.history(client, name)[-1]
    assert (event.action, event.by, event.before, event.after) == (
        "rollback",
        ROLLBACK_POLICY,
        "2",
        "1",
    )
    assert why in event.reason and event.evaluation is not None
    assert event.evaluation["set"]["hash"] == kept["set"]["hash"]
    assert event.evaluation["champion"] == kept["champion"]


def test_the_gate_can_send_a_passing_candidate_to_the_shadow_first(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store
) -> None:
    from mlcycle.gate import GateConfig

    first = run_train(settings, spec, cfg, store)
    assert first.decision["alias"] == "champion"
    shadow_first = kind(cfg, FOREST).model_copy(
        update={"gate": GateConfig(tolerance=1.0, on_pass="challenger")}
    )
    second = run_train(settings, spec, shadow_first, store, again=True)
    assert second.decision["promote"] and second.decision["alias"] == "challenger"
    client = registry.connect(settings)
    name = spec.registered_model
    assert registry.champion(client, name).version == first.version == second.champion_after
    assert registry.holder(client, name, registry.CHALLENGER).version == second.version
    event = decisions.history(client, name)[-1]
    assert (event.alias, event.after, event.by) == ("challenger", second.version, "train")
    assert "gate.on_pass: challenger" in event.reason and event.evaluation["set"]["rows"]
