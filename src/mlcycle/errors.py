"""Domain exceptions. The CLI maps them to exit codes, the API to HTTP statuses."""


class MlcycleError(Exception):
    """Base class for errors a user can act on."""

    exit_code = 1


class BadInput(MlcycleError):
    """Input that cannot be processed at all (a structural problem): exit code 2."""

    exit_code = 2


class SpecError(BadInput):
    """The dataset spec or a config file is invalid."""


class StructuralError(BadInput):
    """A file cannot be read as the spec says (unreadable, missing column, wrong delimiter)."""


class RejectedShareExceeded(MlcycleError):
    """More rows were rejected than the configured threshold allows."""


class StoreUnavailable(MlcycleError):
    """The store cannot be reached after bounded retries."""


class StoreAccessDenied(BadInput):
    """The store refused the credentials or the operation: a configuration problem."""


class TrainingError(MlcycleError):
    """Training cannot run on the data it was given."""


class TrackingUnavailable(MlcycleError):
    """The MLflow tracking server cannot be reached."""


class ModelNotFound(MlcycleError):
    """No model version matches the request."""


class RegistryAccessDenied(BadInput):
    """The MLflow tracking server refused the user the operation: a configuration problem."""


class SourceChanged(MlcycleError):
    """A source file's bytes changed while a run read it: the run fails, nothing read from
    the changed bytes is loaded."""


class Unservable(BadInput):
    """A model version the serving runtime cannot load (no ONNX graph in its bundle)."""
