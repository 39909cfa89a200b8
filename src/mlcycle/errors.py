"""Every error a user can act on, in one place: each class carries its exit code (the CLI,
`mlcycle.cli.base.stage`) and its HTTP status (the API: `mlcycle.serve.core.refusal`, also
used by the app's one exception handler for an error a route raises).

| error | exit | HTTP |
| --- | --- | --- |
| MlcycleError, RejectedShareExceeded, SourceChanged, StoredValueError, TrainingError, CandidateRejected, ContractChanged | 1 | 500 |
| BadInput, SpecError, StructuralError, StoreAccessDenied, RegistryAccessDenied, Unservable | 2 | 400 |
| InvalidRequest (a request's values) | 2 | 422 |
| BodyTooLarge / UnsupportedMediaType / BodyTimeout / MethodNotAllowed | 2 | 413 / 415 / 408 / 405 |
| NotAuthenticated / NotAllowed | 2 | 401 / 403 |
| NoModelLoaded, ServerBusy, StoreUnavailable, TrackingUnavailable | 1 | 503 |
| ModelNotFound, NoReference, NoReport | 1 | 404 |
| UnknownVersion (a version the user named) | 2 | 404 |
| GateRefused | 1 | 500 |
| DatasetBusy | 1 | 409 |
"""

from __future__ import annotations

from typing import Any


class MlcycleError(Exception):
    """Base class for errors a user can act on."""

    exit_code = 1
    http_status = 500


class BadInput(MlcycleError):
    """Input that cannot be processed at all (a structural problem): exit code 2."""

    exit_code = 2
    http_status = 400


class SpecError(BadInput):
    """The dataset spec or a config file is invalid."""


class StructuralError(BadInput):
    """A file cannot be read as the spec says (unreadable, missing column, wrong delimiter)."""


class RejectedShareExceeded(MlcycleError):
    """More rows were rejected than the configured threshold allows."""


class SourceChanged(MlcycleError):
    """A source file's bytes changed while a run read it: the run fails, nothing read from
    the changed bytes is loaded."""


class DatasetBusy(MlcycleError):
    """Another live run holds the dataset's lease."""

    http_status = 409


class StoreUnavailable(MlcycleError):
    """The store cannot be reached after bounded retries."""

    http_status = 503


class StoreAccessDenied(BadInput):
    """The store refused the credentials or the operation: a configuration problem."""


class StoredValueError(MlcycleError):
    """A stored row holds a value its column's type (from the spec) cannot take."""


class TrainingError(MlcycleError):
    """Training cannot run on the data it was given."""


class TrackingUnavailable(MlcycleError):
    """The MLflow tracking server cannot be reached."""

    http_status = 503


class ModelNotFound(MlcycleError):
    """No model version matches the request."""

    http_status = 404


class UnknownVersion(ModelNotFound):
    """A version number the user named that the registered model does not have: bad input."""

    exit_code = 2


class GateRefused(MlcycleError):
    """`promote` without --force: the gate refuses the version (its evidence is shown)."""


class NoReference(ModelNotFound):
    """The model version has no reference profile (trained before monitoring existed)."""


class NoReport(ModelNotFound):
    """No monitoring report has been made for the served model yet."""


class RegistryAccessDenied(BadInput):
    """The MLflow tracking server refused the user the operation: a configuration problem."""


class Unservable(BadInput):
    """A model version the serving runtime cannot load (no ONNX graph in its bundle)."""


class CandidateRejected(MlcycleError):
    """A model version that loads but fails its self-check: it is never swapped in."""


class ContractChanged(CandidateRejected):
    """A model version whose inputs or labels differ from the served model's."""


# What the API refuses. Each carries the detail it answers with.


class InvalidRequest(BadInput):
    """A request's values break the column rules: one entry per bad field (its location,
    message and kind), answered as the 422 body."""

    http_status = 422

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


class BodyTooLarge(BadInput):
    http_status = 413


class UnsupportedMediaType(BadInput):
    http_status = 415


class BodyTimeout(BadInput):
    http_status = 408


class NotAuthenticated(BadInput):
    """No API key, or one that matches none."""

    http_status = 401


class NotAllowed(BadInput):
    """The API key lacks the role the route needs."""

    http_status = 403


class MethodNotAllowed(BadInput):
    http_status = 405


class NoModelLoaded(MlcycleError):
    http_status = 503


class ServerBusy(MlcycleError):
    """The server's budget (request bodies in memory) is spent: try again shortly."""

    http_status = 503
